/* fuzz_dist.c: libFuzzer target for the distribution layer's parsers, the code
 * that reads bytes from untrusted peers: the handshake state machine (as
 * acceptor and as initiator), connected-mode framing, distribution headers,
 * fragment reassembly and the bounds-checked term skipper. The first input
 * byte picks the part. Run with `make fuzz` (scripts/run-fuzz).
 * fuzz-sources: cnode/handshake.c cnode/frame.c cnode/etf_check.c
 * fuzz-libs: -lcrypto
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "etf_check.h"
#include "frame.h"
#include "handshake.h"

static void feed_handshake(int role, const uint8_t *d, size_t n)
{
    cnb_hs_t hs;
    cnb_buf_t out = {0};
    cnb__hs_init(&hs, role, (n && (d[0] & 1)) ? 4 : 2, "fuzz@host", CNB_DFLAGS_OURS, 7, "cookie",
                 12345, role == CNB_HS_INITIATOR ? "peer@host" : NULL);
    if (role == CNB_HS_INITIATOR)
        cnb__hs_start(&hs, &out);
    size_t off = 0;
    for (int guard = 0; guard < 64 && off <= n; guard++) {
        size_t used = 0;
        int r = cnb__hs_input(&hs, d + off, n - off, &used, &out);
        if (used > n - off)
            abort(); /* consumed more than it was given */
        off += used;
        if (r == CNB_HS_NAME_RECEIVED)
            cnb__hs_status(&hs, (n & 2) ? "alive" : "ok", &out);
        if (r < 0 || r == CNB_HS_DONE || used == 0)
            break;
    }
    cnb__buf_free(&out);
}

static void feed_frames(const uint8_t *d, size_t n)
{
    cnb_frags_t frags = {0};
    /* Small limits, so that every bound is reached within max_len. */
    cnb_frag_limits_t lim = {.max_message = 4096, .max_bytes = 8192, .max_sequences = 8,
                             .timeout_ms = 3};
    size_t off = 0;
    int64_t now = 0;
    while (off < n) {
        const uint8_t *pkt;
        size_t plen;
        long used = cnb__frame_next(d + off, n - off, 1 << 20, &pkt, &plen);
        if (used <= 0)
            break;
        off += (size_t)used;
        cnb_dist_pkt_t p;
        if (!plen || cnb__dist_parse(pkt, plen, &p))
            continue;
        if (p.kind == CNB_PKT_FRAG_START || p.kind == CNB_PKT_FRAG_CONT) {
            uint8_t *msg = NULL;
            size_t mlen = 0;
            int r = cnb__frag_add(&frags, &p, &lim, now++, &msg, &mlen);
            if (r == 1) {
                (void)cnb__etf_skip(msg, mlen);
                free(msg);
            } else if (r < 0) {
                char why[200];
                (void)cnb__frag_why(r, &frags, &lim, why, sizeof(why));
            }
            if (frags.bytes > lim.max_bytes || frags.count > lim.max_sequences)
                abort(); /* a bound did not hold */
            char why[200];
            (void)cnb__frag_stalled(&frags, &lim, now, why, sizeof(why));
        } else {
            (void)cnb__etf_skip(p.body, p.body_len);
        }
    }
    cnb__frag_clear(&frags);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0: {
        long k = cnb__etf_skip(d, n);
        if (k > (long)n)
            abort();
        break;
    }
    case 1:
        feed_handshake(CNB_HS_ACCEPTOR, d, n);
        break;
    case 2:
        feed_handshake(CNB_HS_INITIATOR, d, n);
        break;
    default:
        feed_frames(d, n);
        break;
    }
    return 0;
}
