/* conn_out.c: connecting out on the I/O thread: a peer name parsed, epmd
 * asked for its port (PORT_PLEASE2) unless given, a non-blocking TCP connect,
 * TLS when the node runs it, then the handshake as initiator; and the keep-connected peers, redialled
 * with back-off. Tests: tests/integration/dist_tests.erl,
 * simultaneous_tests.erl, tests/unit/test_conn_race.c. */
#include "conn_policy.h"
#include "loop_int.h"
#include "tls.h"

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

/* Splits "alive@host[:port]" (or alive@[v6]:port). Returns 0 or CNB_EINVAL. */
int cnb__parse_peer(const char *spec, char *alive, char *host, unsigned *port, char *name)
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
        cnb__addr_text(ai->ai_addr, text, cap);
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
        cnb__conn_close(n, c, CNB_LOG_WARNING, "cannot connect");
        return;
    }
    c->ev.fd = fd;
    c->state = C_CONNECTING;
    cnb__conn_epoll_add(n, c, EPOLLIN | EPOLLOUT);
}

int cnb__epmd_reply_in(cnb_node_t *n, cnb_conn_t *c)
{
    cnb_buf_t *b = &c->rbuf;
    int port = cnb__epmd_port_reply(b->data + b->off, b->len - b->off);
    if (port == 0)
        return 0;
    close(c->ev.fd);
    epoll_ctl(n->epfd, EPOLL_CTL_DEL, c->ev.fd, NULL);
    c->ev.fd = -1;
    b->len = b->off = 0;
    if (port < 0) {
        cnb__conn_close(n, c, CNB_LOG_WARNING,
                        port == CNB_ENOENT ? "the node is not registered in epmd"
                                           : "bad reply from epmd");
        return -1;
    }
    c->port = (unsigned)port;
    start_node_connect(n, c);
    return c->ev.fd >= 0 ? 0 : -1;
}

/* Creates an outgoing attempt for peer spec (see node_int.h). It is not in the
 * hash: sends wait in the peer's hold (conn_hold.c) until a connection to the
 * peer is authenticated. */
cnb_conn_t *cnb__connect_out(cnb_node_t *n, const char *spec)
{
    char alive[CNB_NAME_MAX], host[CNB_NAME_MAX], name[CNB_NAME_MAX];
    unsigned port;
    if (cnb__parse_peer(spec, alive, host, &port, name)) {
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
    c = cnb__conn_new(n, -1);
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
            cnb__conn_close(n, c, CNB_LOG_WARNING, "cannot reach epmd on the peer's host");
            return NULL;
        }
        c->ev.fd = fd;
        c->state = C_EPMD_CONNECTING;
        cnb__conn_epoll_add(n, c, EPOLLIN | EPOLLOUT);
    }
    return c->ev.fd >= 0 ? c : NULL;
}

void cnb__conn_writable(cnb_node_t *n, cnb_conn_t *c)
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
            cnb__conn_close(n, c, CNB_LOG_WARNING, why);
            return;
        }
        if (c->state == C_EPMD_CONNECTING) {
            uint8_t req[CNB_NAME_MAX + 4];
            int len = cnb__epmd_port_request(c->alive, req, sizeof(req));
            if (len < 0 || send(c->ev.fd, req, (size_t)len, MSG_NOSIGNAL) != len) {
                cnb__conn_close(n, c, CNB_LOG_WARNING, "cannot query epmd");
                return;
            }
            c->state = C_EPMD_WAIT;
            cnb__conn_events(n, c, 0);
            return;
        }
        cnb__conn_events(n, c, 0);
        if (n->tls) {
            /* TLS first, with SNI and the certificate checked against
             * the host of the name we dial. */
            c->state = C_TLS;
            if (!(c->ssl = cnb__tls_ssl(n, n->tls, c->ev.fd, 0, c->host, c->peer))) {
                cnb__conn_close(n, c, CNB_LOG_ERROR, "cannot start TLS");
                return;
            }
            cnb__conn_tls_step(n, c);
            return;
        }
        cnb__conn_hs_begin(n, c);
        return;
    }
    if (c->state == C_TLS) {
        cnb__conn_tls_step(n, c);
        return;
    }
    cnb__conn_flush(n, c);
    if (c->ev.fd >= 0 && c->tx_rd_wants_out) { /* a TLS read waited for this */
        c->tx_rd_wants_out = 0;
        cnb__conn_readable(n, c);
    }
}

/* Keep-connected peers: tried at once, then whenever not up, with back-off. */
void cnb__keep_add(cnb_node_t *n, const char *spec)
{
    char alive[CNB_NAME_MAX], host[CNB_NAME_MAX], name[CNB_NAME_MAX];
    unsigned port;
    if (n->nkeep == CNB_MAX_KEEP || cnb__parse_peer(spec, alive, host, &port, name))
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

void cnb__keep_check(cnb_node_t *n)
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
