/* frame.h: connected-mode framing (4-byte length packets, ticks), distribution
 * headers (pass-through 112, normal 131/68, fragments 131/69 and 131/70) and
 * reassembly of fragmented messages. Pure functions, no sockets.
 * Tests: tests/unit/test_frame.c. */
#ifndef CNB_FRAME_H
#define CNB_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Looks for one complete packet at the front of buf. Returns the bytes it
 * occupies (4 + payload) and sets *pkt and *pkt_len (pkt_len 0 is a tick), 0 when
 * more bytes are needed, or CNB_ETOOBIG when the announced length exceeds max. */
long cnb__frame_next(const uint8_t *buf, size_t len, size_t max, const uint8_t **pkt,
                     size_t *pkt_len);

enum cnb_pkt_kind {
    CNB_PKT_PASS = 1,       /* 112: terms each with a 131 version byte */
    CNB_PKT_HDR = 2,        /* 131 68: terms without version bytes */
    CNB_PKT_FRAG_START = 3, /* 131 69: first fragment */
    CNB_PKT_FRAG_CONT = 4   /* 131 70: later fragment */
};

typedef struct cnb_dist_pkt {
    int kind;
    uint64_t seq;  /* fragments: sequence id */
    uint64_t frag; /* fragments: counts down to 1 (the last) */
    const uint8_t *body; /* control message (+ payload), or fragment data */
    size_t body_len;
} cnb_dist_pkt_t;

/* Classifies one non-empty packet. Returns 0, or CNB_EPROTO for an unknown
 * header or one that carries atom-cache references (we never negotiate
 * DIST_HDR_ATOM_CACHE, so a peer may not send them). */
int cnb__dist_parse(const uint8_t *p, size_t n, cnb_dist_pkt_t *out);

/* Reassembly of fragmented messages on one connection. Incomplete sequences
 * are bounded per connection (their count and the bytes they hold together)
 * and in time (a sequence that gets no fragment for a while); the loop closes
 * the connection when a bound is passed, since dropping a sequence would lose
 * a message on a connection that stays up (Erlang only loses messages with
 * the connection). */
typedef struct cnb_frag {
    struct cnb_frag *next;
    uint64_t seq;
    uint64_t expect; /* fragment id expected next */
    int64_t t_last;  /* ms: when its last fragment arrived */
    cnb_buf_t data;
} cnb_frag_t;

typedef struct cnb_frags {
    cnb_frag_t *head;
    size_t count; /* incomplete sequences */
    size_t bytes; /* bytes they hold together */
} cnb_frags_t;

typedef struct cnb_frag_limits {
    size_t max_message;   /* one reassembled message */
    size_t max_bytes;     /* all incomplete sequences of the connection together */
    size_t max_sequences; /* incomplete sequences at once */
    int64_t timeout_ms;   /* a sequence with no fragment for this long is stalled */
} cnb_frag_limits_t;

/* Incomplete sequences at once on one connection, by default. ERTS starts one
 * per message being sent in fragments (each sending process has at most one
 * at a time), so this is far above what a peer needs. */
#define CNB_FRAG_MAX_SEQUENCES 1024

/* Adds a fragment that arrived at time now (ms). When the message is complete
 * returns 1 and hands over *msg (malloc'd; the body of a 131/68-style message:
 * terms without version bytes; caller frees) and *msg_len. Returns 0 when more
 * fragments are due, or an error after which the connection is to be closed
 * (cnb__frag_why says why): CNB_ETOOBIG (the message would pass max_message;
 * the sequence is dropped), CNB_ENOSPC (the connection's incomplete sequences
 * would hold more than max_bytes), CNB_EBUSY (a new sequence past
 * max_sequences), CNB_EPROTO (an out-of-order or unknown fragment; the
 * sequence is dropped), CNB_ENOMEM. */
int cnb__frag_add(cnb_frags_t *t, const cnb_dist_pkt_t *pkt, const cnb_frag_limits_t *lim,
                  int64_t now, uint8_t **msg, size_t *msg_len);

/* Returns how many incomplete sequences got no fragment for lim->timeout_ms
 * or longer at time now; when some did, writes one line saying so, with the
 * figures, into why (cap bytes). Frees nothing. */
size_t cnb__frag_stalled(const cnb_frags_t *t, const cnb_frag_limits_t *lim, int64_t now,
                         char *why, size_t cap);

/* Writes into buf (cap bytes) one line saying why rc, an error of
 * cnb__frag_add, ends the connection, with the figures; returns buf. */
const char *cnb__frag_why(int rc, const cnb_frags_t *t, const cnb_frag_limits_t *lim,
                          char *buf, size_t cap);

/* Frees every partial message. */
void cnb__frag_clear(cnb_frags_t *t);

#endif /* CNB_FRAME_H */
