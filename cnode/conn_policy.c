/* conn_policy.c: who may carry traffic for a peer while connections to it are
 * being set up, after ERTS (net_kernel/dist_util): an incoming attempt is
 * answered nok when our own attempt to that node is running and our name is
 * the greater one, ok_simultaneous when theirs is, alive when an authenticated
 * connection exists (it is replaced only when the new one proves the cookie).
 * Messages wait in the peer's hold (conn_hold.c) until one attempt wins.
 * Tests: tests/integration/simultaneous_tests.erl, hostile_conn_tests.erl. */
#include "conn_policy.h"
#include "tls.h"

#include <string.h>

/* After a nok, the peer's own attempt should reach us within a round trip or
 * two; when it does not come, we dial again this often (up to net_setuptime). */
#define NOK_RETRY_MS 100

/* Messages for a peer whose own attempt to us is being set up wait for that
 * attempt (as net_kernel's pending connections do) instead of racing it with
 * one of ours: were we to dial, the peer would answer ok_simultaneous (its
 * name the smaller) and kill its attempt after we had already taken it as up
 * and written the messages to it. An attempt that never comes up (a client
 * without the cookie squatting the name) holds them this long at most; then
 * we dial all the same. */
#define THEIR_ATTEMPT_WAIT_MS 1000

cnb_conn_t *cnb__conn_attempt(cnb_node_t *n, const char *peer, const cnb_conn_t *except,
                              int outgoing_only)
{
    for (cnb_conn_t *c = n->conns; c; c = c->next)
        if (c != except && c->attempt && c->state != C_UP && c->state != C_CLOSING &&
            (c->initiator || !outgoing_only) && !strcmp(c->peer, peer))
            return c;
    return NULL;
}

const char *cnb__conn_accept_status(cnb_node_t *n, cnb_conn_t *c)
{
    const char *peer = c->hs.peer_name;
    /* TLS: a client certificate proves a host, the name claims one; they
     * must agree, or any holder of a valid certificate could pose as any
     * node. */
    if (c->ssl && !cnb__tls_peer_host_ok(n->tls, c->ssl, strchr(peer, '@') + 1, c->hs.err,
                                         sizeof(c->hs.err)))
        return "not_allowed";
    int peer_long = strchr(strchr(peer, '@') + 1, '.') != NULL;
    if (!n->longnames && peer_long) {
        snprintf(c->hs.err, sizeof(c->hs.err),
                 "%s is a long-name node and this is a short-name node: they do not mix", peer);
        return "not_allowed";
    }
    if (!strcmp(peer, n->name)) {
        snprintf(c->hs.err, sizeof(c->hs.err), "a node calling itself %s connected", peer);
        return "not_allowed";
    }
    const char *status = "ok";
    if (cnb__conn_find(n, peer)) {
        /* The live connection stays until this one proves the cookie and the
         * initiator says the old one is dead (answers true). */
        status = "alive";
    } else if (cnb__conn_attempt(n, peer, c, 1)) {
        /* Simultaneous connect: the greater name's attempt wins. Ours is not
         * closed when theirs wins: the peer refuses it with nok, and until one
         * of them completes, messages wait in the hold. */
        int ours = strcmp(n->name, peer) > 0;
        cnb__log(n, CNB_LOG_DEBUG, "simultaneous connect with %s: %s wins", peer,
                 ours ? "ours (answered nok)" : "theirs (answered ok_simultaneous)");
        if (ours) {
            snprintf(c->hs.err, sizeof(c->hs.err), "simultaneous connect from %s: ours wins",
                     peer);
            return "nok";
        }
        status = "ok_simultaneous";
    }
    c->attempt = 1;
    return status;
}

void cnb__conn_won(cnb_node_t *n, cnb_conn_t *c)
{
    if (c->initiator && !strcmp(c->hs.status, "ok_simultaneous"))
        cnb__log(n, CNB_LOG_DEBUG,
                 "simultaneous connect with %s: ours wins (they answered ok_simultaneous)",
                 c->peer);
    size_t moved = cnb__hold_move_to(n, c);
    if (moved)
        cnb__log(n, CNB_LOG_DEBUG, "%zu held message(s) for %s go out on the connection %s it",
                 moved, c->peer, c->initiator ? "to" : "from");
    cnb_conn_t *x;
    while ((x = cnb__conn_attempt(n, c->peer, c, 1)))
        cnb__conn_close(n, x, CNB_LOG_DEBUG, "another connection to the node won");
}

void cnb__conn_give_up(cnb_node_t *n, const char *peer, const char *why)
{
    cnb__hold_drop(n, peer, why);
    if (n->upper.nodedown) /* links, monitors, calls: noconnection */
        n->upper.nodedown(n, peer);
    if (n->opts.on_node)
        n->opts.on_node(n, peer, 0, n->opts.user);
}

void cnb__conn_attempt_ended(cnb_node_t *n, cnb_conn_t *c)
{
    const char *peer = c->peer;
    if (!peer[0] || atomic_load(&n->stopping))
        return;
    cnb_conn_t *up = cnb__conn_find(n, peer);
    cnb_hold_t *h = cnb__hold_find(n, peer);
    if (up) {
        if (h && cnb__hold_move_to(n, up))
            cnb__conn_flush_soon(n, up);
        return;
    }
    if (cnb__conn_attempt(n, peer, c, 0))
        return; /* another attempt carries the hold */
    int64_t setup = (int64_t)n->opts.net_setuptime * 1000;
    if (c->refused_nok) {
        cnb__log(n, CNB_LOG_DEBUG,
                 "simultaneous connect with %s: theirs wins (they answered nok); %zu message(s) "
                 "wait for it",
                 peer, h ? h->count : 0);
        if (!h)
            return; /* nothing waits; their attempt brings the connection */
        if (n->now - h->since < setup) {
            h->retry_at = n->now + NOK_RETRY_MS;
            return;
        }
    } else if (!c->initiator && h && n->now - h->since < setup) {
        /* Their attempt, which the hold waited for, failed: ours now. */
        cnb__log(n, CNB_LOG_DEBUG, "%s's attempt to connect failed: dialing it for %zu message(s)",
                 peer, h->count);
        cnb__connect_out(n, h->spec); /* gives up itself when it cannot */
        return;
    }
    if (h || c->initiator)
        cnb__conn_give_up(n, peer, "no connection could be made");
}

void cnb__hold_timers(cnb_node_t *n)
{
    int64_t setup = (int64_t)n->opts.net_setuptime * 1000;
    for (cnb_hold_t *h = n->holds, *nx; h; h = nx) {
        nx = h->next;
        cnb_conn_t *up = cnb__conn_find(n, h->peer);
        if (up) {
            if (cnb__hold_move_to(n, up))
                cnb__conn_flush_soon(n, up);
            continue;
        }
        if (cnb__conn_attempt(n, h->peer, NULL, 1))
            continue; /* ours carries it */
        int64_t age = n->now - h->since;
        if (age < setup) {
            if (h->retry_at) {
                if (n->now >= h->retry_at) {
                    h->retry_at = 0;
                    cnb__log(n, CNB_LOG_DEBUG,
                             "%s refused us and has not connected: dialing again", h->peer);
                    cnb__connect_out(n, h->spec); /* gives up itself when it cannot */
                }
                continue;
            }
            if (!cnb__conn_attempt(n, h->peer, NULL, 0)) {
                cnb__log(n, CNB_LOG_DEBUG, "no attempt to connect to %s is under way: dialing it",
                         h->peer);
                cnb__connect_out(n, h->spec);
            } else if (age >= THEIR_ATTEMPT_WAIT_MS) {
                cnb__log(n, CNB_LOG_DEBUG,
                         "%s's attempt to connect has not come up in %lld ms: dialing it",
                         h->peer, (long long)age);
                cnb__connect_out(n, h->spec);
            }
            continue;
        }
        char peer[CNB_NAME_MAX];
        snprintf(peer, sizeof(peer), "%s", h->peer);
        cnb__conn_give_up(n, peer, "no connection was made within net_setuptime");
    }
}
