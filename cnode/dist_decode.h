/* dist_decode.h: the pure first step of handling an incoming distribution
 * message: checks the control term and the payload (whole, and no deeper
 * than CNB_ETF_MAX_DEPTH) and decodes the control tuple into a cnb_msg_t.
 * No node, no sockets, no side effects: dispatch.c applies the node's policy
 * to the result. Tests: tests/unit/test_frame.c, tests/fuzz/fuzz_dispatch.c,
 * tests/integration/hostile_terms_tests.erl. */
#ifndef CNB_DIST_DECODE_H
#define CNB_DIST_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "cnode_bridge.h"

enum cnb_decoded_kind {
    CNB_DEC_SIGNAL = 1, /* msg is filled: a signal for a process */
    CNB_DEC_SPAWN,      /* SPAWN_REQUEST: msg.ctrl and msg.payload are set */
    CNB_DEC_SPAWN_REPLY, /* SPAWN_REPLY: msg.ctrl is set */
    CNB_DEC_IGNORED     /* a well-formed control message we do not act on */
};

typedef struct cnb_decoded {
    int kind;           /* enum cnb_decoded_kind */
    long raw_op;        /* the operation as sent (before normalising _TT etc.) */
    int reason_replaced; /* an exit reason deeper than the limit was replaced
                          * by the atom term_too_deep */
    cnb_msg_t msg;      /* msg.peer is left NULL for the caller to set */
    uint8_t *owned;     /* a payload copy msg.payload may point into */
} cnb_decoded_t;

/* Decodes one message body (control term, then an optional payload term;
 * versioned: each term starts with 131, as after a pass-through 112 header;
 * else none does, as after 131/68). On success returns 0 and fills *d, whose
 * pointers point into body or into d->owned (release with
 * cnb__dist_decoded_free). Errors, after which *d holds nothing to free:
 * CNB_EDEPTH (the control term, or a message or spawn argument payload, is
 * nested deeper than CNB_ETF_MAX_DEPTH: the message is to be dropped),
 * CNB_EMALFORMED (not two whole terms, or a control tuple of the wrong
 * shape), CNB_ETOOBIG (longer than ei's int indexes reach), CNB_ENOMEM.
 * An exit reason (EXIT, EXIT2, DOWN) deeper than the limit does not fail the
 * message: the reason is replaced by the atom term_too_deep and
 * reason_replaced is set, so that the signal still takes effect. */
int cnb__dist_decode(const uint8_t *body, size_t len, int versioned, cnb_decoded_t *d);

void cnb__dist_decoded_free(cnb_decoded_t *d);

#endif
