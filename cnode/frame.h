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

/* Reassembly of fragmented messages on one connection. */
typedef struct cnb_frag {
    struct cnb_frag *next;
    uint64_t seq;
    uint64_t expect; /* fragment id expected next */
    cnb_buf_t data;
} cnb_frag_t;

typedef struct cnb_frags {
    cnb_frag_t *head;
    size_t count;
} cnb_frags_t;

#define CNB_FRAG_MAX_SEQUENCES 4096

/* Adds a fragment. When the message is complete returns 1 and hands over
 * *msg (malloc'd; the body of a 131/68-style message: terms without version
 * bytes; caller frees) and *msg_len. Returns 0 when more fragments are due,
 * CNB_ETOOBIG when the message would pass max (the sequence is dropped),
 * CNB_EPROTO for an out-of-order or unknown fragment, CNB_ENOMEM. */
int cnb__frag_add(cnb_frags_t *t, const cnb_dist_pkt_t *pkt, size_t max, uint8_t **msg,
                  size_t *msg_len);

/* Frees every partial message. */
void cnb__frag_clear(cnb_frags_t *t);

#endif /* CNB_FRAME_H */
