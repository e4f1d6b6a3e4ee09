/* conn_io.c: a connection's bytes on the I/O thread: frames routed to the
 * live connection of their node (or held while one is made), written in
 * batches through the transport (TCP or TLS, transport.c); input read with
 * a per-turn budget, through the handshake, then
 * framed, reassembled from fragments and handed up decoded (cnb__deliver_up).
 * Tests: tests/unit/test_frame.c, tests/integration/dist_tests.erl,
 * hostile_terms_tests.erl, bench/bench_dist.c. */
#include "auth_limit.h"
#include "conn_policy.h"
#include "etf_check.h"
#include "loop_int.h"
#include "transport.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define READ_CHUNK 65536
#define READ_BUDGET (1u << 20) /* bytes per connection per loop turn: fairness */
#define IOV_BATCH 256

void cnb__conn_push(cnb_conn_t *c, cnb_chunk_t *ch)
{
    cnb__chunk_append(&c->wq_head, &c->wq_tail, ch);
    c->wq_bytes += ch->len - ch->off;
    c->wq_count++;
}

/* c is up (found by cnb__conn_find). */
void cnb__conn_enqueue(cnb_node_t *n, cnb_conn_t *c, cnb_chunk_t *ch)
{
    cnb__conn_push(c, ch);
    cnb__conn_flush_soon(n, c);
}

void cnb__route(cnb_node_t *n, cnb_chunk_t *ch)
{
    if (!strcmp(ch->dest, n->name)) {
        /* To ourselves: dispatch locally, as the network would. */
        cnb__deliver_up(n, NULL, ch->data + 7, ch->len - 7, 0);
        free(ch);
        return;
    }
    cnb_conn_t *c = cnb__conn_find(n, ch->dest);
    if (c) {
        cnb__conn_enqueue(n, c, ch);
        return;
    }
    /* Not connected: the message waits in the peer's hold, whichever attempt
     * to it wins (ours, or theirs racing ours) carries it. */
    char spec[CNB_NAME_MAX], alive[CNB_NAME_MAX], host[CNB_NAME_MAX], name[CNB_NAME_MAX];
    unsigned port;
    snprintf(spec, sizeof(spec), "%s", ch->dest);
    if (cnb__parse_peer(spec, alive, host, &port, name)) {
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
     * to a node being connected costs no scan of the connections each. When
     * the peer's own attempt to us is under way, the hold waits for it (the
     * hold timer dials when it does not come up: conn_policy.c). */
    cnb_hold_t *h = cnb__hold_push(n, name, spec, ch);
    if (h && h->count == 1 && !h->retry_at) {
        cnb_conn_t *a = cnb__conn_attempt(n, name, NULL, 0);
        if (!a)
            cnb__connect_out(n, spec);
        else if (!a->initiator)
            cnb__log(n, CNB_LOG_DEBUG, "message for %s waits for its attempt to connect here",
                     name);
    }
}

/* After a write on c returned rc (< 0): 0 when the socket is full or TLS
 * waits for input (the right event armed), -1 when c was closed. */
static int write_failed(cnb_node_t *n, cnb_conn_t *c, ssize_t rc, const char *why)
{
    if (rc == CNB_TX_AGAIN) {
        if (!c->tx_wr_wants_in && !c->want_out)
            cnb__conn_events(n, c, 1);
        return 0;
    }
    cnb__conn_close(n, c, CNB_LOG_WARNING, why);
    return -1;
}

int cnb__conn_flush(cnb_node_t *n, cnb_conn_t *c)
{
    if (c->ev.fd < 0)
        return -1;
    char why[300] = "";
    /* Handshake bytes, and TLS bytes staged earlier (cnb__tx_backlog). */
    while (c->hsout.len > c->hsout.off || cnb__tx_backlog(c)) {
        struct iovec iov = {.iov_base = c->hsout.data + c->hsout.off,
                            .iov_len = c->hsout.len - c->hsout.off};
        ssize_t w = cnb__tx_writev(c, &iov, iov.iov_len ? 1 : 0, why, sizeof(why));
        if (w < 0)
            return write_failed(n, c, w, why);
        c->hsout.off += (size_t)w;
        c->t_tx = n->now;
    }
    c->hsout.len = c->hsout.off = 0;
    if (c->state == C_CLOSING) {
        cnb__conn_close(n, c, CNB_LOG_INFO, c->hs.err[0] ? c->hs.err : "refused");
        return -1;
    }
    if (c->state != C_UP)
        return 0;
    while (c->wq_head || cnb__tx_backlog(c)) {
        struct iovec iov[IOV_BATCH];
        int cnt = 0;
        for (cnb_chunk_t *ch = c->wq_head; ch && cnt < IOV_BATCH; ch = ch->next, cnt++) {
            iov[cnt].iov_base = ch->data + ch->off;
            iov[cnt].iov_len = ch->len - ch->off;
        }
        ssize_t w = cnb__tx_writev(c, iov, cnt, why, sizeof(why));
        if (w < 0)
            return write_failed(n, c, w, why);
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
    if (c->want_out && !c->tx_rd_wants_out)
        cnb__conn_events(n, c, 0);
    return 0;
}

/* Bounds on a connection's incomplete fragmented messages: together no more
 * than one largest message, and none stalled for a tick period (during
 * which the connection itself was seen alive). */
cnb_frag_limits_t cnb__frag_limits(const cnb_node_t *n)
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
        cnb_frag_limits_t lim = cnb__frag_limits(n);
        rc = cnb__frag_add(&c->frags, &pkt, &lim, n->now, &msg, &mlen);
        if (rc == 1) {
            cnb__deliver_up(n, c, msg, mlen, 0);
            free(msg);
        } else if (rc < 0) {
            char why[200];
            cnb__conn_close(n, c, CNB_LOG_ERROR, cnb__frag_why(rc, &c->frags, &lim, why, sizeof(why)));
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
        if (c->state == C_EPMD_WAIT)
            return cnb__epmd_reply_in(n, c);
        if (c->state == C_HANDSHAKE) {
            if (!c->ssl && !c->hs_seen && avail >= 2 && (in[0] == 0x16 || in[0] == 0x15) &&
                in[1] == 0x03) {
                /* A TLS record (handshake or alert) where a 2-byte length
                 * should be: the peer runs inet_tls_dist. */
                cnb__conn_close(n, c, CNB_LOG_WARNING,
                                "handshake failed: the peer speaks TLS distribution and this "
                                "node runs plain TCP (no --tls-cert)");
                return -1;
            }
            size_t used = 0;
            int rc = cnb__hs_input(&c->hs, in, avail, &used, &c->hsout);
            if (!c->initiator)
                rc = cnb__auth_filter(n, &c->hs, c->ev.fd, rc); /* cookie back-off */
            b->off += used;
            if (used)
                c->hs_seen = 1;
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
                cnb__conn_close(n, c, lvl, why);
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
                    cnb__conn_close(n, old, CNB_LOG_INFO, "the peer reconnected (old link dead)");
                } else if (old) {
                    cnb__conn_close(n, c, CNB_LOG_WARNING, "a connection to this node is already up");
                    return -1;
                }
                cnb__conn_up(n, c);
            }
            if (c->state == C_HANDSHAKE || c->state == C_CLOSING || c->state == C_UP)
                cnb__conn_flush_soon(n, c);
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
                cnb__conn_close(n, c, CNB_LOG_ERROR, why);
                return -1;
            }
            b->off += (size_t)used;
            if (plen > 0 && handle_packet(n, c, pkt, plen) < 0)
                return -1;
            continue;
        }
        /* Bytes in any other state are a protocol violation. */
        cnb__conn_close(n, c, CNB_LOG_WARNING, "unexpected bytes");
        return -1;
    }
    cnb__buf_compact(b);
    return 0;
}

void cnb__conn_readable(cnb_node_t *n, cnb_conn_t *c)
{
    if (c->state == C_TLS) {
        cnb__conn_tls_step(n, c);
        return;
    }
    if (c->tx_wr_wants_in) { /* a TLS write waited for input */
        c->tx_wr_wants_in = 0;
        cnb__conn_flush_soon(n, c);
    }
    size_t total = 0;
    char why[300] = "";
    while (c->ev.fd >= 0 && total < READ_BUDGET) {
        if (cnb__buf_reserve(&c->rbuf, READ_CHUNK)) {
            cnb__conn_close(n, c, CNB_LOG_ERROR, "out of memory");
            return;
        }
        size_t room = c->rbuf.cap - c->rbuf.len;
        ssize_t r = cnb__tx_read(c, c->rbuf.data + c->rbuf.len, room, why, sizeof(why));
        if (r == CNB_TX_EOF) {
            char eof[400];
            if (c->state == C_HANDSHAKE)
                snprintf(eof, sizeof(eof), "closed by peer during the handshake: %s%s",
                         c->hs.err[0] ? c->hs.err : cnb__hs_phase(&c->hs),
                         !c->ssl && !c->hs_seen && c->initiator
                             ? " (if it runs TLS distribution, give this node --tls-cert)"
                             : "");
            else
                snprintf(eof, sizeof(eof), "closed by peer");
            cnb__conn_close(n, c, c->was_up ? CNB_LOG_INFO : CNB_LOG_WARNING, eof);
            return;
        }
        if (r == CNB_TX_AGAIN) {
            if (c->tx_rd_wants_out && !c->want_out)
                cnb__conn_events(n, c, 1);
            return;
        }
        if (r < 0) {
            cnb__conn_close(n, c, CNB_LOG_WARNING, why);
            return;
        }
        c->rbuf.len += (size_t)r;
        total += (size_t)r;
        c->t_rx = n->now;
        n->rx_hot = 1;
        if (process_input(n, c) < 0)
            return;
        /* A short read from TCP took all the socket held: epoll (level
         * triggered) reports what comes next; asking again now would cost
         * a system call to hear EAGAIN. */
        if (!c->ssl && (size_t)r < room)
            return;
    }
    /* Out of budget with input OpenSSL already holds: epoll will not report
     * it, so the loop reads c again next turn without waiting. */
    if (c->ev.fd >= 0 && cnb__tx_pending(c) && !c->reread) {
        c->reread = 1;
        c->rnext = n->reread;
        n->reread = c;
    }
}
