/* loop.c: the I/O thread. One epoll loop owns every socket: it accepts, connects
 * out on demand (epmd lookup, then TCP), drives handshakes, reads and frames
 * packets, writes queued frames in batches, sends and checks ticks.
 * Tests: tests/integration/dist_*_tests.erl. */
#include "conn_policy.h"
#include "node_int.h"
#include "auth_limit.h"
#include "etf_check.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#define READ_CHUNK 65536
#define READ_BUDGET (1u << 20) /* bytes per connection per loop turn: fairness */
#define IOV_BATCH 256
#define TIMER_MS 100

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

static void set_events(cnb_node_t *n, cnb_conn_t *c, int want_out)
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
        close(c->ev.fd);
        c->ev.fd = -1;
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

static cnb_conn_t *conn_new(cnb_node_t *n, int fd)
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

static void epoll_add(cnb_node_t *n, cnb_conn_t *c, uint32_t events)
{
    struct epoll_event e = {.events = events, .data.ptr = c};
    epoll_ctl(n->epfd, EPOLL_CTL_ADD, c->ev.fd, &e);
    c->want_out = (events & EPOLLOUT) != 0;
}

static void addr_text(const struct sockaddr *sa, char *out, size_t cap)
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

static void do_accept(cnb_node_t *n)
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
        cnb_conn_t *c = conn_new(n, fd);
        if (!c) {
            close(fd);
            continue;
        }
        addr_text((struct sockaddr *)&ss, c->addr_text, sizeof(c->addr_text));
        c->state = C_HANDSHAKE;
        cnb__hs_init(&c->hs, CNB_HS_ACCEPTOR, 2, n->name, CNB_DFLAGS_OURS, n->creation,
                     n->cookie, cnb__random32(), NULL);
        epoll_add(n, c, EPOLLIN);
        cnb__log(n, CNB_LOG_DEBUG, "accepted a connection from %s", c->addr_text);
    }
}

/* ---------------------------------------------------------------- connecting out */

/* Splits "alive@host[:port]" (or alive@[v6]:port). Returns 0 or CNB_EINVAL. */
static int parse_peer(const char *spec, char *alive, char *host, unsigned *port, char *name)
{
    const char *at = strchr(spec, '@');
    if (!at || at == spec || (size_t)(at - spec) >= CNB_NAME_MAX || !at[1])
        return CNB_EINVAL;
    memcpy(alive, spec, (size_t)(at - spec));
    alive[at - spec] = 0;
    const char *h = at + 1;
    *port = 0;
    char tmp[CNB_NAME_MAX];
    if (*h == '[') {
        const char *end = strchr(h, ']');
        if (!end || (size_t)(end - h - 1) >= CNB_NAME_MAX)
            return CNB_EINVAL;
        memcpy(tmp, h + 1, (size_t)(end - h - 1));
        tmp[end - h - 1] = 0;
        if (end[1] == ':')
            *port = (unsigned)strtoul(end + 2, NULL, 10);
    } else {
        const char *colon = strchr(h, ':');
        if (colon && !strchr(colon + 1, ':')) {
            if ((size_t)(colon - h) >= CNB_NAME_MAX)
                return CNB_EINVAL;
            memcpy(tmp, h, (size_t)(colon - h));
            tmp[colon - h] = 0;
            *port = (unsigned)strtoul(colon + 1, NULL, 10);
        } else {
            snprintf(tmp, sizeof(tmp), "%s", h);
        }
    }
    if (!tmp[0] || *port > 65535)
        return CNB_EINVAL;
    snprintf(host, CNB_NAME_MAX, "%s", tmp);
    if (strlen(alive) + 1 + strlen(host) >= CNB_NAME_MAX)
        return CNB_EINVAL;
    snprintf(name, CNB_NAME_MAX, "%s@%s", alive, host);
    return 0;
}

/* Starts a non-blocking TCP connect to host:port. Returns the fd or -1. */
static int tcp_connect(cnb_node_t *n, const char *host, unsigned port, char *text, size_t cap)
{
    struct addrinfo hints, *res = NULL, *ai;
    char ps[8];
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = n->opts.ipv6 ? AF_UNSPEC : AF_INET;
    snprintf(ps, sizeof(ps), "%u", port);
    /* Note: getaddrinfo blocks; node hosts are normally in /etc/hosts or DNS
     * answers fast. A slow resolver delays only this loop turn. */
    int gr = getaddrinfo(host, ps, &hints, &res);
    if (gr != 0 || !res) {
        cnb__log(n, CNB_LOG_WARNING, "cannot resolve host %s: %s", host,
                 gr ? gai_strerror(gr) : "no address");
        if (res)
            freeaddrinfo(res);
        return -1;
    }
    ai = res;
    if (n->opts.ipv6) /* prefer IPv6 when asked */
        for (struct addrinfo *x = res; x; x = x->ai_next)
            if (x->ai_family == AF_INET6) {
                ai = x;
                break;
            }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        addr_text(ai->ai_addr, text, cap);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            cnb__log(n, CNB_LOG_WARNING, "connect to %s: %s", text, strerror(errno));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

static void start_node_connect(cnb_node_t *n, cnb_conn_t *c)
{
    int fd = tcp_connect(n, c->host, c->port, c->addr_text, sizeof(c->addr_text));
    if (fd < 0) {
        conn_close(n, c, CNB_LOG_WARNING, "cannot connect");
        return;
    }
    c->ev.fd = fd;
    c->state = C_CONNECTING;
    epoll_add(n, c, EPOLLIN | EPOLLOUT);
}

/* Creates an outgoing attempt for peer spec (see node_int.h). It is not in the
 * hash: sends wait in the peer's hold (conn_hold.c) until a connection to the
 * peer is authenticated. */
cnb_conn_t *cnb__connect_out(cnb_node_t *n, const char *spec)
{
    char alive[CNB_NAME_MAX], host[CNB_NAME_MAX], name[CNB_NAME_MAX];
    unsigned port;
    if (parse_peer(spec, alive, host, &port, name)) {
        cnb__log(n, CNB_LOG_WARNING, "bad node name '%s'", spec);
        cnb__conn_give_up(n, spec, "bad node name");
        return NULL;
    }
    cnb_conn_t *c = cnb__conn_find(n, name);
    if (!c)
        c = cnb__conn_attempt(n, name, NULL, 1);
    if (c)
        return c;
    if (!strcmp(name, n->name)) {
        cnb__conn_give_up(n, name, "that is this node's own name");
        return NULL;
    }
    if (!port && n->opts.no_epmd) {
        cnb__log(n, CNB_LOG_WARNING, "no epmd: cannot reach %s without a port (name@host:port)",
                 spec);
        cnb__conn_give_up(n, name, "no port to reach it without epmd");
        return NULL;
    }
    if (n->longnames != (strchr(host, '.') != NULL || strchr(host, ':') != NULL)) {
        /* Erlang's rule: -name and -sname nodes do not mix. Long-name hosts
         * that are plain words (e.g. "localhost") are let through. */
        if (!n->longnames) {
            cnb__log(n, CNB_LOG_WARNING,
                     "not connecting to %s: a short-name node cannot reach a long-name node", name);
            cnb__conn_give_up(n, name, "name types do not mix");
            return NULL;
        }
    }
    c = conn_new(n, -1);
    if (!c) {
        cnb__conn_give_up(n, name, "out of memory");
        return NULL;
    }
    c->initiator = 1;
    c->attempt = 1;
    snprintf(c->peer, sizeof(c->peer), "%s", name);
    snprintf(c->alive, sizeof(c->alive), "%s", alive);
    snprintf(c->host, sizeof(c->host), "%s", host);
    c->port = port;
    cnb__log(n, CNB_LOG_DEBUG, "connecting to %s", name);
    if (port) {
        start_node_connect(n, c);
    } else {
        int fd = tcp_connect(n, host, (unsigned)cnb__epmd_tcp_port(), c->addr_text,
                             sizeof(c->addr_text));
        if (fd < 0) {
            conn_close(n, c, CNB_LOG_WARNING, "cannot reach epmd on the peer's host");
            return NULL;
        }
        c->ev.fd = fd;
        c->state = C_EPMD_CONNECTING;
        epoll_add(n, c, EPOLLIN | EPOLLOUT);
    }
    return c->ev.fd >= 0 ? c : NULL;
}

/* ---------------------------------------------------------------- output */

static void push_chunk(cnb_conn_t *c, cnb_chunk_t *ch)
{
    cnb__chunk_append(&c->wq_head, &c->wq_tail, ch);
    c->wq_bytes += ch->len - ch->off;
    c->wq_count++;
}

/* c is up (found by cnb__conn_find). */
void cnb__conn_enqueue(cnb_node_t *n, cnb_conn_t *c, cnb_chunk_t *ch)
{
    push_chunk(c, ch);
    mark_dirty(n, c);
}

void cnb__route(cnb_node_t *n, cnb_chunk_t *ch)
{
    if (!strcmp(ch->peer, n->name)) {
        /* To ourselves: dispatch locally, as the network would. */
        cnb__deliver_up(n, NULL, ch->data + 7, ch->len - 7, 0);
        free(ch);
        return;
    }
    cnb_conn_t *c = cnb__conn_find(n, ch->peer);
    if (c) {
        cnb__conn_enqueue(n, c, ch);
        return;
    }
    /* Not connected: the message waits in the peer's hold, whichever attempt
     * to it wins (ours, or theirs racing ours) carries it. */
    char spec[CNB_NAME_MAX], alive[CNB_NAME_MAX], host[CNB_NAME_MAX], name[CNB_NAME_MAX];
    unsigned port;
    snprintf(spec, sizeof(spec), "%s", ch->peer);
    if (parse_peer(spec, alive, host, &port, name)) {
        cnb__log(n, CNB_LOG_DEBUG, "no route to %s: message dropped", spec);
        free(ch);
        cnb__conn_give_up(n, spec, "bad node name");
        return;
    }
    if ((c = cnb__conn_find(n, name))) {
        cnb__conn_enqueue(n, c, ch);
        return;
    }
    /* Only a new hold needs an attempt: from then on, an attempt that ends
     * without winning passes the hold on (conn_policy.c), so a burst of sends
     * to a node being connected costs no scan of the connections each. */
    cnb_hold_t *h = cnb__hold_push(n, name, spec, ch);
    if (h && h->count == 1 && !h->retry_at && !cnb__conn_attempt(n, name, NULL, 1))
        cnb__connect_out(n, spec);
}

/* Writes handshake bytes, then (once up) queued frames with one sendmsg per
 * batch. Returns 0, or -1 when the connection was closed. */
static int flush(cnb_node_t *n, cnb_conn_t *c)
{
    if (c->ev.fd < 0)
        return -1;
    while (c->hsout.len > c->hsout.off) {
        ssize_t w = send(c->ev.fd, c->hsout.data + c->hsout.off, c->hsout.len - c->hsout.off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_events(n, c, 1);
                return 0;
            }
            if (errno == EINTR)
                continue;
            conn_close(n, c, CNB_LOG_WARNING, strerror(errno));
            return -1;
        }
        c->hsout.off += (size_t)w;
        c->t_tx = n->now;
    }
    c->hsout.len = c->hsout.off = 0;
    if (c->state == C_CLOSING) {
        conn_close(n, c, CNB_LOG_INFO, c->hs.err[0] ? c->hs.err : "refused");
        return -1;
    }
    if (c->state != C_UP)
        return 0;
    while (c->wq_head) {
        struct iovec iov[IOV_BATCH];
        int cnt = 0;
        for (cnb_chunk_t *ch = c->wq_head; ch && cnt < IOV_BATCH; ch = ch->next, cnt++) {
            iov[cnt].iov_base = ch->data + ch->off;
            iov[cnt].iov_len = ch->len - ch->off;
        }
        struct msghdr mh;
        memset(&mh, 0, sizeof(mh));
        mh.msg_iov = iov;
        mh.msg_iovlen = (size_t)cnt;
        ssize_t w = sendmsg(c->ev.fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!c->want_out)
                    set_events(n, c, 1);
                return 0;
            }
            if (errno == EINTR)
                continue;
            conn_close(n, c, CNB_LOG_WARNING, strerror(errno));
            return -1;
        }
        c->t_tx = n->now;
        size_t left = (size_t)w;
        while (left && c->wq_head) {
            cnb_chunk_t *ch = c->wq_head;
            size_t rem = ch->len - ch->off;
            if (left >= rem) {
                left -= rem;
                c->wq_head = ch->next;
                if (!c->wq_head)
                    c->wq_tail = NULL;
                c->wq_bytes -= rem;
                c->wq_count--;
                free(ch);
            } else {
                ch->off += left;
                c->wq_bytes -= left;
                left = 0;
            }
        }
    }
    if (c->want_out)
        set_events(n, c, 0);
    return 0;
}

/* ---------------------------------------------------------------- input */

/* c has completed the handshake and no other live connection to its peer
 * exists: it becomes the peer's connection and carries what was held. */
static void conn_up(cnb_node_t *n, cnb_conn_t *c)
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

/* Bounds on a connection's incomplete fragmented messages: together no more
 * than one largest message, and none stalled for a tick period (during
 * which the connection itself was seen alive). */
static cnb_frag_limits_t frag_limits(const cnb_node_t *n)
{
    cnb_frag_limits_t lim = {.max_message = n->opts.max_message,
                             .max_bytes = n->opts.max_message,
                             .max_sequences = CNB_FRAG_MAX_SEQUENCES,
                             .timeout_ms = (int64_t)n->opts.net_ticktime * 1000};
    return lim;
}

void cnb__deliver_up(cnb_node_t *n, cnb_conn_t *c, const uint8_t *body, size_t len,
                     int versioned)
{
    const char *peer = c ? c->peer : n->name;
    cnb_decoded_t d;
    int rc = cnb__dist_decode(body, len, versioned, &d);
    if (rc == CNB_EDEPTH) {
        cnb__log(n, CNB_LOG_WARNING,
                 "message from %s (%zu bytes) nested deeper than %u levels: dropped", peer, len,
                 CNB_ETF_MAX_DEPTH);
    } else if (rc == CNB_ETOOBIG) {
        cnb__log(n, CNB_LOG_WARNING,
                 "message from %s of %zu bytes is past what ei can index (2 GiB): dropped", peer,
                 len);
    } else if (rc == CNB_ENOMEM) {
        cnb__log(n, CNB_LOG_ERROR, "out of memory decoding a message from %s: dropped", peer);
    } else if (rc) {
        cnb__log(n, CNB_LOG_WARNING, "malformed control message from %s (%zu bytes): dropped",
                 peer, len);
    } else {
        d.msg.peer = peer;
        if (n->upper.message)
            n->upper.message(n, &d, len, c != NULL);
        cnb__dist_decoded_free(&d);
    }
}

/* Returns -1 when the packet made us close the connection. */
static int handle_packet(cnb_node_t *n, cnb_conn_t *c, const uint8_t *p, size_t len)
{
    cnb_dist_pkt_t pkt;
    int rc = cnb__dist_parse(p, len, &pkt);
    if (rc) {
        cnb__log(n, CNB_LOG_WARNING, "malformed distribution packet from %s (%zu bytes): dropped",
                 c->peer, len);
        return 0;
    }
    if (pkt.kind == CNB_PKT_PASS) {
        cnb__deliver_up(n, c, pkt.body, pkt.body_len, 1);
    } else if (pkt.kind == CNB_PKT_HDR) {
        cnb__deliver_up(n, c, pkt.body, pkt.body_len, 0);
    } else {
        uint8_t *msg = NULL;
        size_t mlen = 0;
        cnb_frag_limits_t lim = frag_limits(n);
        rc = cnb__frag_add(&c->frags, &pkt, &lim, n->now, &msg, &mlen);
        if (rc == 1) {
            cnb__deliver_up(n, c, msg, mlen, 0);
            free(msg);
        } else if (rc < 0) {
            char why[200];
            conn_close(n, c, CNB_LOG_ERROR, cnb__frag_why(rc, &c->frags, &lim, why, sizeof(why)));
            return -1;
        }
    }
    return 0;
}

/* Consumes what rbuf holds. Returns -1 when the connection was closed. */
static int process_input(cnb_node_t *n, cnb_conn_t *c)
{
    cnb_buf_t *b = &c->rbuf;
    while (b->len > b->off && c->ev.fd >= 0) {
        const uint8_t *in = b->data + b->off;
        size_t avail = b->len - b->off;
        if (c->state == C_EPMD_WAIT) {
            int port = cnb__epmd_port_reply(in, avail);
            if (port == 0)
                return 0;
            close(c->ev.fd);
            epoll_ctl(n->epfd, EPOLL_CTL_DEL, c->ev.fd, NULL);
            c->ev.fd = -1;
            b->len = b->off = 0;
            if (port < 0) {
                conn_close(n, c, CNB_LOG_WARNING,
                           port == CNB_ENOENT ? "the node is not registered in epmd"
                                              : "bad reply from epmd");
                return -1;
            }
            c->port = (unsigned)port;
            start_node_connect(n, c);
            return c->ev.fd >= 0 ? 0 : -1;
        }
        if (c->state == C_HANDSHAKE) {
            size_t used = 0;
            int rc = cnb__hs_input(&c->hs, in, avail, &used, &c->hsout);
            if (!c->initiator)
                rc = cnb__auth_filter(n, &c->hs, c->ev.fd, rc); /* cookie back-off */
            b->off += used;
            if (rc == CNB_HS_MORE)
                break;
            if (rc < 0) {
                int lvl = rc == CNB_ECOOKIE ? CNB_LOG_ERROR : CNB_LOG_WARNING;
                if (rc == CNB_ECLOSED && c->initiator && !strcmp(c->hs.status, "nok")) {
                    c->refused_nok = 1; /* a simultaneous connect: theirs wins */
                    lvl = CNB_LOG_DEBUG;
                }
                char why[300];
                snprintf(why, sizeof(why), "handshake failed: %s", c->hs.err);
                if (!c->peer[0] && c->hs.peer_name[0])
                    snprintf(c->peer, sizeof(c->peer), "%s", c->hs.peer_name);
                conn_close(n, c, lvl, why);
                return -1;
            }
            if (rc == CNB_HS_NAME_RECEIVED) {
                snprintf(c->peer, sizeof(c->peer), "%s", c->hs.peer_name);
                const char *st = cnb__conn_accept_status(n, c);
                cnb__hs_status(&c->hs, st, &c->hsout);
                if (!strcmp(st, "nok") || !strcmp(st, "not_allowed")) {
                    c->state = C_CLOSING;
                    if (strcmp(st, "nok"))
                        cnb__log(n, CNB_LOG_WARNING, "refused %s: %s", c->peer, c->hs.err);
                }
            } else if (rc == CNB_HS_DONE) {
                /* Authenticated only now. A live connection to the same node is
                 * replaced only when this one was told alive and the peer
                 * said the old one is dead (ERTS's up_pending). */
                cnb_conn_t *old = cnb__conn_find(n, c->peer);
                if (old && cnb__hs_replaces_old(&c->hs)) {
                    conn_close(n, old, CNB_LOG_INFO, "the peer reconnected (old link dead)");
                } else if (old) {
                    conn_close(n, c, CNB_LOG_WARNING, "a connection to this node is already up");
                    return -1;
                }
                conn_up(n, c);
            }
            if (c->state == C_HANDSHAKE || c->state == C_CLOSING || c->state == C_UP)
                mark_dirty(n, c);
            continue;
        }
        if (c->state == C_UP) {
            const uint8_t *pkt;
            size_t plen;
            long used = cnb__frame_next(in, avail, n->opts.max_message, &pkt, &plen);
            if (used == 0)
                break;
            if (used < 0) {
                char why[120];
                snprintf(why, sizeof(why),
                         "incoming message of %u bytes exceeds the limit of %zu bytes",
                         cnb__get32(in), n->opts.max_message);
                conn_close(n, c, CNB_LOG_ERROR, why);
                return -1;
            }
            b->off += (size_t)used;
            if (plen > 0 && handle_packet(n, c, pkt, plen) < 0)
                return -1;
            continue;
        }
        /* Bytes in any other state are a protocol violation. */
        conn_close(n, c, CNB_LOG_WARNING, "unexpected bytes");
        return -1;
    }
    cnb__buf_compact(b);
    return 0;
}

static void handle_readable(cnb_node_t *n, cnb_conn_t *c)
{
    size_t total = 0;
    while (c->ev.fd >= 0 && total < READ_BUDGET) {
        if (cnb__buf_reserve(&c->rbuf, READ_CHUNK)) {
            conn_close(n, c, CNB_LOG_ERROR, "out of memory");
            return;
        }
        ssize_t r = read(c->ev.fd, c->rbuf.data + c->rbuf.len, c->rbuf.cap - c->rbuf.len);
        if (r == 0) {
            char why[160];
            if (c->state == C_HANDSHAKE)
                snprintf(why, sizeof(why), "closed by peer during the handshake: %s",
                         c->hs.err[0] ? c->hs.err : cnb__hs_phase(&c->hs));
            else
                snprintf(why, sizeof(why), "closed by peer");
            conn_close(n, c, c->was_up ? CNB_LOG_INFO : CNB_LOG_WARNING, why);
            return;
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                conn_close(n, c, CNB_LOG_WARNING, strerror(errno));
            return;
        }
        c->rbuf.len += (size_t)r;
        total += (size_t)r;
        c->t_rx = n->now;
        if (process_input(n, c) < 0)
            return;
    }
}

static void handle_writable(cnb_node_t *n, cnb_conn_t *c)
{
    if (c->state == C_EPMD_CONNECTING || c->state == C_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(c->ev.fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            char why[160];
            snprintf(why, sizeof(why), "%s %s: %s",
                     c->state == C_EPMD_CONNECTING ? "cannot reach epmd at" : "cannot connect to",
                     c->addr_text, strerror(err));
            conn_close(n, c, CNB_LOG_WARNING, why);
            return;
        }
        if (c->state == C_EPMD_CONNECTING) {
            uint8_t req[CNB_NAME_MAX + 4];
            int len = cnb__epmd_port_request(c->alive, req, sizeof(req));
            if (len < 0 || send(c->ev.fd, req, (size_t)len, MSG_NOSIGNAL) != len) {
                conn_close(n, c, CNB_LOG_WARNING, "cannot query epmd");
                return;
            }
            c->state = C_EPMD_WAIT;
            set_events(n, c, 0);
            return;
        }
        c->state = C_HANDSHAKE;
        cnb__hs_init(&c->hs, CNB_HS_INITIATOR, 2, n->name, CNB_DFLAGS_OURS, n->creation,
                     n->cookie, cnb__random32(), c->peer);
        cnb__hs_start(&c->hs, &c->hsout);
        set_events(n, c, 0);
        flush(n, c);
        return;
    }
    flush(n, c);
}

/* ---------------------------------------------------------------- timers */

static void timers(cnb_node_t *n)
{
    int64_t tick = (int64_t)n->opts.net_ticktime * 1000 / 4;
    int64_t dead = (int64_t)n->opts.net_ticktime * 1000;
    int64_t setup = (int64_t)n->opts.net_setuptime * 1000;
    for (cnb_conn_t *c = n->conns, *nx; c; c = nx) {
        nx = c->next;
        if (c->state == C_UP) {
            if (n->now - c->t_rx > dead) {
                char why[96];
                snprintf(why, sizeof(why), "no ticks or data for %lld ms: peer considered down",
                         (long long)(n->now - c->t_rx));
                conn_close(n, c, CNB_LOG_WARNING, why);
                continue;
            }
            if (c->frags.count) {
                char why[200];
                cnb_frag_limits_t lim = frag_limits(n);
                if (cnb__frag_stalled(&c->frags, &lim, n->now, why, sizeof(why))) {
                    conn_close(n, c, CNB_LOG_ERROR, why);
                    continue;
                }
            }
            if (n->now - c->t_tx >= tick && !c->wq_head) {
                cnb_chunk_t *ch = malloc(sizeof(*ch) + 4);
                if (ch) {
                    ch->off = 0;
                    ch->len = 4;
                    ch->kind = CHUNK_DATA;
                    memset(ch->data, 0, 4);
                    push_chunk(c, ch);
                    mark_dirty(n, c);
                }
            }
        } else if (n->now - c->t_start > setup) {
            conn_close(n, c, CNB_LOG_WARNING, "connection setup timed out (net_setuptime)");
        }
    }
}

/* ---------------------------------------------------------------- the loop */

/* Keep-connected peers: tried at once, then whenever not up, with back-off. */
static void keep_add(cnb_node_t *n, const char *spec)
{
    char alive[CNB_NAME_MAX], host[CNB_NAME_MAX], name[CNB_NAME_MAX];
    unsigned port;
    if (n->nkeep == CNB_MAX_KEEP || parse_peer(spec, alive, host, &port, name))
        return;
    for (int i = 0; i < n->nkeep; i++)
        if (!strcmp(n->keep[i].node, name))
            return;
    pthread_mutex_lock(&n->peers_mu);
    cnb_keep_t *k = &n->keep[n->nkeep];
    snprintf(k->name, sizeof(k->name), "%s", spec);
    snprintf(k->node, sizeof(k->node), "%s", name);
    k->backoff = 200;
    k->next_try = 0;
    n->nkeep++;
    pthread_mutex_unlock(&n->peers_mu);
}

static void keep_check(cnb_node_t *n)
{
    for (int i = 0; i < n->nkeep; i++) {
        cnb_keep_t *k = &n->keep[i];
        /* Only a live connection or our own attempt counts: a pending
         * incoming one claiming the name (perhaps without the cookie) must
         * not stop us from reconnecting. */
        if (cnb__conn_find(n, k->node)) {
            k->backoff = 200;
            continue;
        }
        if (cnb__conn_attempt(n, k->node, NULL, 1))
            continue;
        if (n->now < k->next_try)
            continue;
        k->next_try = n->now + k->backoff;
        if (k->backoff < 10000)
            k->backoff *= 2;
        if (!cnb__connect_out(n, k->name))
            cnb__log(n, CNB_LOG_DEBUG, "cannot reach %s; next try in %lld ms", k->node,
                     (long long)k->backoff);
    }
}

static void drain_inbox(cnb_node_t *n)
{
    uint64_t v;
    ssize_t r = read(n->wake_ev.fd, &v, sizeof(v));
    (void)r;
    pthread_mutex_lock(&n->inbox_mu);
    cnb_chunk_t *ch = n->inbox_head;
    n->inbox_head = n->inbox_tail = NULL;
    n->inbox_signalled = 0;
    pthread_mutex_unlock(&n->inbox_mu);
    while (ch) {
        cnb_chunk_t *nx = ch->next;
        if (ch->kind == CHUNK_CONNECT) { /* control: connect request */
            cnb__connect_out(n, ch->peer); /* tells nodedown itself when it cannot */
            free(ch);
        } else if (ch->kind == CHUNK_KEEP) {
            keep_add(n, ch->peer);
            free(ch);
        } else if (ch->kind == CHUNK_DISCONNECT) { /* control: disconnect request */
            cnb_conn_t *c = cnb__conn_find(n, ch->peer);
            if (!c)
                c = cnb__conn_attempt(n, ch->peer, NULL, 1);
            if (c)
                conn_close(n, c, CNB_LOG_INFO, "disconnected on request");
            free(ch);
        } else {
            cnb__route(n, ch);
        }
        ch = nx;
    }
}

static void bury(cnb_node_t *n)
{
    while (n->graveyard) {
        cnb_conn_t *c = n->graveyard;
        n->graveyard = c->next;
        cnb__buf_free(&c->rbuf);
        cnb__buf_free(&c->hsout);
        free(c);
    }
}

void *cnb__loop(void *arg)
{
    cnb_node_t *n = arg;
    struct epoll_event evs[64];
    int64_t next_timer = cnb__now_ms() + TIMER_MS;
    n->now = cnb__now_ms();
    drain_inbox(n); /* whatever was sent before the loop ran */
    while (!atomic_load(&n->stopping)) {
        n->now = cnb__now_ms();
        int timeout = (int)(next_timer - n->now);
        if (timeout < 0)
            timeout = 0;
        int k = epoll_wait(n->epfd, evs, 64, n->dirty ? 0 : timeout);
        n->now = cnb__now_ms();
        for (int i = 0; i < k; i++) {
            cnb_ev_t *ev = evs[i].data.ptr;
            if (ev->kind == EV_LISTEN) {
                do_accept(n);
            } else if (ev->kind == EV_WAKE) {
                drain_inbox(n);
            } else {
                cnb_conn_t *c = (cnb_conn_t *)ev;
                if (c->ev.fd < 0)
                    continue;
                if (evs[i].events & (EPOLLOUT))
                    handle_writable(n, c);
                if (c->ev.fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                    if (c->state == C_EPMD_CONNECTING || c->state == C_CONNECTING)
                        handle_writable(n, c); /* reports the connect error */
                    else
                        handle_readable(n, c);
                }
            }
        }
        if (n->now >= next_timer) {
            timers(n);
            cnb__hold_timers(n);
            cnb__accept_guard_tick(n);
            keep_check(n);
            cnb__log_tick(); /* reports lines the logger held back */
            next_timer = n->now + TIMER_MS;
        }
        while (n->dirty) {
            cnb_conn_t *c = n->dirty;
            n->dirty = c->dnext;
            c->dirty = 0;
            if (c->ev.fd >= 0)
                flush(n, c);
        }
        bury(n);
    }
    /* Shutting down: a last best-effort flush, then close everything. */
    drain_inbox(n);
    for (cnb_conn_t *c = n->conns; c; c = c->next)
        if (c->state == C_UP && c->ev.fd >= 0)
            flush(n, c);
    while (n->conns)
        conn_close(n, n->conns, CNB_LOG_DEBUG, "node stopping");
    n->dirty = NULL;
    bury(n);
    cnb__hold_free_all(n);
    return NULL;
}

/* ---------------------------------------------------------------- requests */

static int control_request(cnb_node_t *n, const char *peer, int kind)
{
    if (!peer || strlen(peer) >= CNB_NAME_MAX)
        return CNB_EINVAL;
    cnb_chunk_t *ch = malloc(sizeof(*ch));
    if (!ch)
        return CNB_ENOMEM;
    ch->next = NULL;
    ch->len = ch->off = 0;
    ch->kind = kind;
    snprintf(ch->peer, sizeof(ch->peer), "%s", peer);
    if (n->thread_started && pthread_equal(pthread_self(), n->thread)) {
        /* Called from a callback on the I/O thread: act now. */
        pthread_mutex_lock(&n->inbox_mu);
        ch->next = n->inbox_head;
        n->inbox_head = ch;
        if (!n->inbox_tail)
            n->inbox_tail = ch;
        pthread_mutex_unlock(&n->inbox_mu);
        uint64_t one = 1;
        ssize_t w = write(n->wake_ev.fd, &one, sizeof(one));
        (void)w;
        return 0;
    }
    return cnb__submit(n, ch);
}

int cnb_node_connect(cnb_node_t *n, const char *peer)
{
    if (!peer || !strchr(peer, '@'))
        return CNB_EINVAL;
    return control_request(n, peer, CHUNK_CONNECT);
}

int cnb_node_keep_connected(cnb_node_t *n, const char *peer)
{
    if (!peer || !strchr(peer, '@'))
        return CNB_EINVAL;
    return control_request(n, peer, CHUNK_KEEP);
}

int cnb_node_anchors(cnb_node_t *n, char (*out)[MAXATOMLEN_UTF8], int max)
{
    pthread_mutex_lock(&n->peers_mu);
    int cnt = n->nkeep;
    for (int i = 0; i < cnt && i < max; i++)
        snprintf(out[i], MAXATOMLEN_UTF8, "%s", n->keep[i].node);
    pthread_mutex_unlock(&n->peers_mu);
    return cnt;
}

int cnb_node_disconnect(cnb_node_t *n, const char *peer)
{
    return control_request(n, peer, CHUNK_DISCONNECT);
}
