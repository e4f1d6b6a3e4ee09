/* conn_policy.h: the connection lifecycle rules of the I/O thread -- who may
 * carry traffic for a peer, what an incoming attempt is answered when others
 * to that peer exist (ERTS's nok / ok_simultaneous / alive), and the messages
 * held for a peer while no authenticated connection to it exists.
 * Tests: tests/integration/simultaneous_tests.erl, hostile_conn_tests.erl. */
#ifndef CNB_CONN_POLICY_H
#define CNB_CONN_POLICY_H

#include "node_int.h"

/* Messages for one peer, held while it has no authenticated connection and
 * handed, in order, to whichever connection to it completes first. */
typedef struct cnb_hold {
    struct cnb_hold *next;
    char peer[CNB_NAME_MAX]; /* name@host */
    char spec[CNB_NAME_MAX]; /* as first sent to: name@host[:port], to dial again */
    cnb_chunk_t *head, *tail;
    size_t bytes, count;
    size_t dropped;   /* refused because the hold was full */
    int64_t since;    /* ms: when the hold was made */
    int64_t retry_at; /* ms: dial again then (after a nok), 0 = not scheduled */
} cnb_hold_t;

/* conn_hold.c */
cnb_hold_t *cnb__hold_find(cnb_node_t *n, const char *peer);
/* Appends ch (ownership passes) to the hold of peer (name@host), made when
 * missing; spec is how the sender named it (name@host[:port]). Returns the
 * hold, or NULL when ch was dropped (hold full: logged; out of memory). */
cnb_hold_t *cnb__hold_push(cnb_node_t *n, const char *peer, const char *spec, cnb_chunk_t *ch);
/* Moves everything held for c->peer in front of c's write queue and forgets
 * the hold; the caller makes sure c gets flushed. Returns the number of
 * messages moved. */
size_t cnb__hold_move_to(cnb_node_t *n, cnb_conn_t *c);
/* Frees peer's hold with one warning naming why when it held messages.
 * Returns 1 when there was a hold, else 0. */
int cnb__hold_drop(cnb_node_t *n, const char *peer, const char *why);
void cnb__hold_free_all(cnb_node_t *n);

/* conn_policy.c */
/* A set-up attempt for peer other than except (outgoing ones only when
 * outgoing_only), or NULL. */
cnb_conn_t *cnb__conn_attempt(cnb_node_t *n, const char *peer, const cnb_conn_t *except,
                              int outgoing_only);
/* The acceptor's status once the initiator's name is known: "ok",
 * "ok_simultaneous", "nok", "alive" or "not_allowed" (c->hs.err says why).
 * Marks c as an attempt unless it is refused. Never touches live connections. */
const char *cnb__conn_accept_status(cnb_node_t *n, cnb_conn_t *c);
/* c just came up: hands it what was held for its peer and closes our other
 * outgoing attempts to that peer (this connection won). */
void cnb__conn_won(cnb_node_t *n, cnb_conn_t *c);
/* c, an attempt that never came up, is closing: keep the hold for another
 * attempt, schedule a new one after a nok, dial when it was the peer's
 * attempt the hold waited for, or give up (drop + nodedown). */
void cnb__conn_attempt_ended(cnb_node_t *n, cnb_conn_t *c);
/* No connection to peer can be made: drops what is held for it and tells
 * the runtime and the user (nodedown). */
void cnb__conn_give_up(cnb_node_t *n, const char *peer, const char *why);
/* Runs every timer tick: dials again for holds refused by nok, dials for holds
 * that waited THEIR_ATTEMPT_WAIT_MS on the peer's own attempt (or that no
 * attempt carries), and gives up on holds older than net_setuptime that no
 * attempt of ours carries. */
void cnb__hold_timers(cnb_node_t *n);

#endif /* CNB_CONN_POLICY_H */
