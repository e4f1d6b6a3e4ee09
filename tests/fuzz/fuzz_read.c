/* fuzz_read.c: libFuzzer target for core/term_read.h (cnb__term_head, the one
 * reader of the external term format) and the skippers built on it. Any input
 * must give a header inside the input or CNB_ETRUNC/CNB_EMALFORMED; the header
 * must not depend on bytes past the term's own; the wire-side check
 * (cnode/etf_check.c) and core's cnb_term_canonical must agree with the
 * reader's walk on where the term ends. Run with `make fuzz`
 * (scripts/run-fuzz fuzz_read).
 * fuzz-sources: cnode/etf_check.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/term_int.h"
#include "fuzz_check.h"
#include "etf_check.h"


/* Checks the header at p and that it is the same on exactly its own bytes. */
static void check_head(const uint8_t *p, const uint8_t *end)
{
    cnb__term_head_t h, g;
    int r = cnb__term_head(p, end, &h);
    CHECK(r == 0 || r == CNB_ETRUNC || r == CNB_EMALFORMED);
    if (r)
        return;
    CHECK(h.tag == p[0] && h.hdr >= 1 && h.hdr <= h.size && h.size <= (size_t)(end - p));
    CHECK(h.data >= p + h.hdr && h.data <= p + h.size);
    switch (h.tag) {
    case CNB__TAG_SMALL_ATOM:
    case CNB__TAG_SMALL_ATOM_UTF8:
    case CNB__TAG_ATOM:
    case CNB__TAG_ATOM_UTF8:
    case CNB__TAG_STRING:
    case CNB__TAG_BINARY:
    case CNB__TAG_BIT_BINARY:
    case CNB__TAG_SMALL_BIG:
    case CNB__TAG_LARGE_BIG:
        CHECK(h.data + h.n == p + h.size);
        break;
    case CNB__TAG_NEW_REFERENCE:
    case CNB__TAG_NEWER_REFERENCE:
        CHECK(h.n <= CNB__MAX_REF_WORDS);
        break;
    default:
        break;
    }
    /* Copied to the heap so ASan sees any read past the term's own bytes. */
    uint8_t *own = malloc(h.size);
    CHECK(own);
    memcpy(own, p, h.size);
    CHECK(cnb__term_head(own, own + h.size, &g) == 0);
    CHECK(g.tag == h.tag && g.hdr == h.hdr && g.size == h.size && g.n == h.n &&
          g.children == h.children && g.data - own == h.data - p);
    CHECK(cnb__term_head(own, own + h.size - 1, &g) == CNB_ETRUNC);
    free(own);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *end = data + size, *next = NULL;
    /* Every header along the reader's own walk. */
    uint64_t remaining = 1;
    for (const uint8_t *p = data; remaining && p < end;) {
        cnb__term_head_t h;
        check_head(p, end);
        if (cnb__term_head(p, end, &h))
            break;
        remaining += h.children - 1;
        p += h.size;
    }

    int rs = cnb__term_skip(data, end, &next);
    CHECK(rs == 0 || rs == CNB_ETRUNC || rs == CNB_EMALFORMED);
    if (rs == 0)
        CHECK(next > data && next <= end);

    /* The wire-side check accepts a subset of layouts: where it does, the
     * reader's walk ends at the same byte. */
    long k = cnb__etf_skip(data, size);
    CHECK(k <= (long)size);
    if (k >= 0) {
        CHECK(rs == 0 && next == data + k);
    }

    /* A term cnb_term_canonical takes whole (not compressed, no version byte)
     * has the reader's layout, ending at the end of the input. */
    if (size && data[0] != CNB__TAG_VERSION && data[0] != CNB__TAG_COMPRESSED) {
        cnb_term_opts_t opts = {64, 1 << 20, 1 << 20, NULL};
        if (cnb_term_canonical(data, size, NULL, 0, &opts) >= 0)
            CHECK(rs == 0 && next == end);
    }
    return 0;
}
