/* fuzz_dispatch.c: libFuzzer target for control-message decoding, the path
 * from a distribution packet body to the runtime (cnode/dist_decode.c, the
 * pure step of cnode/dispatch.c), driven without a live peer. The first input
 * byte picks the form (bit 0: pass-through, each term with its 131 version
 * byte; else 131/68-style, none); the rest is the body. Checks, beyond ASan's:
 * a body accepted has a control term and payload that ei_skip_term (the
 * recursive decoder handlers use) reads whole and to the same length, and
 * any term the skipper accepts is one ei_skip_term reads to the same length.
 * Seeds: real control messages made by erl (scripts/run-fuzz). Run with
 * `make fuzz` or `make fuzz-quick`. Findings became tests in
 * tests/unit/test_frame.c.
 * fuzz-sources: cnode/dist_decode.c cnode/etf_check.c
 * fuzz-seeds: ctrl
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ei.h>

#include "dist_decode.h"
#include "etf_check.h"

/* ei_skip_term over the term t[0..n) (no version byte) must succeed and
 * consume exactly n bytes; t is copied to an exact-size buffer so that ASan
 * sees any read past it. */
static void ei_agrees(const uint8_t *t, size_t n)
{
    char *c = malloc(n + 1);
    if (!c)
        return;
    c[0] = (char)131;
    memcpy(c + 1, t, n);
    int i = 1;
    if (ei_skip_term(c, &i) != 0 || (size_t)i != n + 1)
        abort(); /* etf_check accepted a term ei does not read whole */
    free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        ei_init();
        init = 1;
    }
    if (size < 1)
        return 0;
    int versioned = data[0] & 1;
    size_t n = size - 1;
    /* An exact-size copy of the body: reads past it are ASan reports. */
    uint8_t *body = malloc(n ? n : 1);
    if (!body)
        return 0;
    memcpy(body, data + 1, n);

    long k = cnb__etf_skip(body, n);
    if (k > (long)n)
        abort();
    if (k > 0)
        ei_agrees(body, (size_t)k);

    cnb_decoded_t d;
    if (cnb__dist_decode(body, n, versioned, &d) == 0) {
        const cnb_msg_t *m = &d.msg;
        if (!m->ctrl || m->ctrl_len == 0)
            abort();
        ei_agrees((const uint8_t *)m->ctrl, m->ctrl_len);
        if (m->payload) {
            if (m->payload_len < 2 || (uint8_t)m->payload[0] != 131)
                abort();
            ei_agrees((const uint8_t *)m->payload + 1, m->payload_len - 1);
        }
        if (d.kind != CNB_DEC_SIGNAL && d.kind != CNB_DEC_SPAWN && d.kind != CNB_DEC_SPAWN_REPLY &&
            d.kind != CNB_DEC_IGNORED)
            abort();
        cnb__dist_decoded_free(&d);
    }
    free(body);
    return 0;
}
