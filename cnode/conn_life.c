/* conn_life.c: a connection's life on the I/O thread: the table of
 * authenticated connections (found by peer name), accepting, coming up
 * (winning over other attempts, conn_policy.c) and closing (the layer above
 * told nodedown for a live one). Freed at the end of a loop turn.
 * Tests: tests/integration/dist_tests.erl, hostile_conn_tests.erl,
 * tests/unit/test_conn_race.c. */
#include "auth_limit.h"
#include "conn_policy.h"
#include "loop_int.h"
#include "tls.h"
#include "transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

static unsigned bucket(const char *name)
{
    uint32_t h = 2166136261u;
    for (; *name; name++)
        h = (h ^ (uint8_t)*name) * 16777619u;
    return h % CNB_HASH_BUCKETS;
}

cnb_conn_t *cnb__conn_find(cnb_node_t *n, const char *peer)
{
    for (cnb_conn_t *c = n->hash[bucket(peer)]; c; c = c->hnext)
        if (!strcmp(c->peer, peer))
            return c;
    return NULL;
}

static void hash_add(cnb_node_t *n, cnb_conn_t *c)
{
    if (c->in_hash)
        return;
    unsigned b = bucket(c->peer);
    c->hnext = n->hash[b];
    n->hash[b] = c;
    c->in_hash = 1;
}

static void hash_del(cnb_node_t *n, cnb_conn_t *c)
{
    if (!c->in_hash)
        return;
    for (cnb_conn_t **pp = &n->hash[bucket(c->peer)]; *pp; pp = &(*pp)->hnext)
        if (*pp == c) {
            *pp = c->hnext;
            break;
        }
    c->in_hash = 0;
}

void cnb__conn_events(cnb_node_t *n, cnb_conn_t *c, int want_out)
{
    if (c->ev.fd < 0)
        return;
    struct epoll_event e = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(n->epfd, EPOLL_CTL_MOD, c->ev.fd, &e);
    c->want_out = want_out;
}

static void mark_dirty(cnb_node_t *n, cnb_conn_t *c)
{
    if (c->dirty)
        return;
    c->dirty = 1;
    c->dnext = n->dirty;
    n->dirty = c;
}

static void free_wq(cnb_conn_t *c)
{
    cnb__chunks_free(c->wq_head);
    c->wq_head = c->wq_tail = NULL;
    c->wq_bytes = c->wq_count = 0;
}

/* Closes a connection now; the struct is freed at the end of the loop turn. */
static void conn_close(cnb_node_t *n, cnb_conn_t *c, int level, const char *why)
{
    if (c->closed)
        return;
    c->closed = 1;
    if (why)
        cnb__log(n, level, "connection %s %s%s closed: %s", c->initiator ? "to" : "from",
                 c->peer[0] ? c->peer : c->addr_text, c->was_up ? "" : " (not up)", why);
    if (c->ev.fd >= 0) {
        epoll_ctl(n->epfd, EPOLL_CTL_DEL, c->ev.fd, NULL);
        cnb__tx_end(c);
        close(c->ev.fd);
        c->ev.fd = -1;
    }
    if (c->reread)
        for (cnb_conn_t **pp = &n->reread; *pp; pp = &(*pp)->rnext)
            if (*pp == c) {
                *pp = c->rnext;
                break;
            }
    free_wq(c);
    cnb__frag_clear(&c->frags);
    int live = c->in_hash; /* only authenticated connections are in the hash */
    hash_del(n, c);
    for (cnb_conn_t **pp = &n->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    c->next = n->graveyard;
    n->graveyard = c;
    if (c->was_up)
        cnb__peers_set(n, c->peer, 0, 0);
    if (live) {
        if (n->upper.nodedown)
            n->upper.nodedown(n, c->peer);
        if (n->opts.on_node)
            n->opts.on_node(n, c->peer, 0, n->opts.user);
    } else if (c->attempt) {
        cnb__conn_attempt_ended(n, c);
    }
}

void cnb__conn_close(cnb_node_t *n, cnb_conn_t *c, int level, const char *why)
{
    conn_close(n, c, level, why);
}

void cnb__conn_flush_soon(cnb_node_t *n, cnb_conn_t *c)
{
    mark_dirty(n, c);
}

cnb_conn_t *cnb__conn_new(cnb_node_t *n, int fd)
{
    cnb_conn_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->ev.kind = EV_CONN;
    c->ev.fd = fd;
    c->t_start = c->t_rx = c->t_tx = n->now;
    c->next = n->conns;
    n->conns = c;
    return c;
}

void cnb__conn_epoll_add(cnb_node_t *n, cnb_conn_t *c, uint32_t events)
{
    struct epoll_event e = {.events = events, .data.ptr = c};
    epoll_ctl(n->epfd, EPOLL_CTL_ADD, c->ev.fd, &e);
    c->want_out = (events & EPOLLOUT) != 0;
}

void cnb__addr_text(const struct sockaddr *sa, char *out, size_t cap)
{
    char h[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, h, sizeof(h));
        port = ntohs(a->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, h, sizeof(h));
        port = ntohs(a->sin6_port);
    }
    snprintf(out, cap, "%s:%u", h, port);
}

/* ---------------------------------------------------------------- accepting */

void cnb__accept(cnb_node_t *n)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        memset(&ss, 0, sizeof(ss));
        int fd = accept4(n->listen_ev.fd, (struct sockaddr *)&ss, &sl,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (cnb__accept_failed(n, errno))
                return;
            continue;
        }
        if (cnb__auth_accept(n, (struct sockaddr *)&ss)) { /* in its back-off */
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        cnb_conn_t *c = cnb__conn_new(n, fd);
        if (!c) {
            close(fd);
            continue;
        }
        cnb__addr_text((struct sockaddr *)&ss, c->addr_text, sizeof(c->addr_text));
        cnb__conn_epoll_add(n, c, EPOLLIN);
        if (n->tls) {
            c->state = C_TLS;
            if (!(c->ssl = cnb__tls_ssl(n, n->tls, fd, 1, NULL, NULL)))
                cnb__conn_close(n, c, CNB_LOG_ERROR, "cannot start TLS");
        } else {
            cnb__conn_hs_begin(n, c);
        }
        cnb__log(n, CNB_LOG_DEBUG, "accepted a connection from %s", c->addr_text);
    }
}

/* ---------------------------------------------------------------- handshakes */

void cnb__conn_hs_begin(cnb_node_t *n, cnb_conn_t *c)
{
    c->state = C_HANDSHAKE;
    /* Inside TLS every handshake packet has a 4-byte length (inet_tls_dist
     * runs the whole connection with {packet, 4}); on TCP 2 bytes. */
    /* PUBLISHED: a visible node (opts.visible), in nodes() on every peer. */
    uint64_t flags = CNB_DFLAGS_OURS | (n->opts.visible ? CNB_DFLAG_PUBLISHED : 0);
    cnb__hs_init(&c->hs, c->initiator ? CNB_HS_INITIATOR : CNB_HS_ACCEPTOR, c->ssl ? 4 : 2,
                 n->name, flags, n->creation, n->cookie, cnb__random32(),
                 c->initiator ? c->peer : NULL);
    if (c->initiator) {
        cnb__hs_start(&c->hs, &c->hsout);
        cnb__conn_flush(n, c);
    }
}

void cnb__conn_tls_step(cnb_node_t *n, cnb_conn_t *c)
{
    char why[300] = "";
    int r = cnb__tx_handshake(c, why, sizeof(why));
    if (r < 0) {
        cnb__conn_close(n, c, CNB_LOG_WARNING, why);
        return;
    }
    if (r == 0) {
        if (c->tx_want_out != c->want_out)
            cnb__conn_events(n, c, c->tx_want_out);
        return;
    }
    char d[120];
    cnb__tls_describe(c->ssl, d, sizeof(d));
    cnb__log(n, CNB_LOG_DEBUG, "TLS up %s %s (%s)", c->initiator ? "to" : "from",
             c->initiator ? c->peer : c->addr_text, d);
    if (c->want_out)
        cnb__conn_events(n, c, 0);
    cnb__conn_hs_begin(n, c);
    /* The peer's first packet may have come with its last TLS flight: OpenSSL
     * holds it and epoll will not say so. */
    if (c->ev.fd >= 0 && !c->closed)
        cnb__conn_readable(n, c);
}

/* ---------------------------------------------------------------- input */

/* c has completed the handshake and no other live connection to its peer
 * exists: it becomes the peer's connection and carries what was held. */
void cnb__conn_up(cnb_node_t *n, cnb_conn_t *c)
{
    c->state = C_UP;
    c->was_up = 1;
    hash_add(n, c);
    cnb__conn_won(n, c);
    c->peer_flags = c->hs.peer_flags;
    c->peer_creation = c->hs.peer_creation;
    c->t_rx = c->t_tx = n->now;
    cnb__peers_set(n, c->peer, c->peer_flags, 1);
    cnb__log(n, CNB_LOG_INFO, "connected %s %s (%s)", c->initiator ? "to" : "from", c->peer,
             c->addr_text);
    if (n->opts.on_node)
        n->opts.on_node(n, c->peer, 1, n->opts.user);
    mark_dirty(n, c);
}

void cnb__conn_bury(cnb_node_t *n)
{
    while (n->graveyard) {
        cnb_conn_t *c = n->graveyard;
        n->graveyard = c->next;
        cnb__buf_free(&c->rbuf);
        cnb__buf_free(&c->hsout);
        free(c);
    }
}
