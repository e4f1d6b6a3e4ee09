/* fuzz_term.c: libFuzzer target for core/term (cnb_term.h). Any input must give
 * canonical bytes or an error code, within small limits; canonical bytes must
 * be a fixed point (and pass the fast path), and hash and compare must work on
 * them. Built and run by scripts/run-fuzz (clang -fsanitize=fuzzer,...). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnb_term.h"
#include "../../core/term_int.h"
#include "fuzz_check.h"


static int known_error(ssize_t r)
{
    return r == CNB_EMALFORMED || r == CNB_ETRUNC || r == CNB_EDEPTH || r == CNB_ETOOBIG ||
           r == CNB_EZLIB || r == CNB_ENOMEM;
}

/* The canonical form of the previous input, to compare against. */
static uint8_t *prev;
static size_t prev_len;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cnb_term_opts_t opts = {64, 1 << 20, 1 << 20, NULL};
    ssize_t n = cnb_term_canonical(data, size, NULL, 0, &opts);
    if (n < 0) {
        CHECK(known_error(n));
        void *o = (void *)1;
        size_t on = 1;
        CHECK(cnb_term_canonical_alloc(data, size, &o, &on, &opts) == n && o == NULL);
        return 0;
    }
    CHECK(n >= 2 && (size_t)n <= opts.max_size);

    uint8_t *out = malloc((size_t)n);
    CHECK(out);
    CHECK(cnb_term_canonical(data, size, out, (size_t)n, &opts) == n);
    CHECK(out[0] == CNB__TAG_VERSION);
    CHECK(cnb_term_canonical(data, size, out, (size_t)n - 1, &opts) == CNB_ENOSPC);
    CHECK(cnb_term_canonical(data, size, out, (size_t)n, &opts) == n);

    void *a;
    size_t an;
    CHECK(cnb_term_canonical_alloc(data, size, &a, &an, &opts) == 0);
    CHECK(an == (size_t)n && memcmp(a, out, an) == 0);
    free(a);

    /* A fixed point, recognised by the fast path, and the general path
     * agrees with it. */
    CHECK(cnb__term_is_canonical(out + 1, out + n, opts.max_depth, NULL) == 1);
    uint8_t *again = malloc((size_t)n);
    CHECK(again);
    CHECK(cnb_term_canonical(out, (size_t)n, again, (size_t)n, &opts) == n);
    CHECK(memcmp(again, out, (size_t)n) == 0);
    CHECK(cnb_term_canonical(out + 1, (size_t)n - 1, again, (size_t)n, &opts) == n);
    CHECK(memcmp(again, out, (size_t)n) == 0);
    cnb__term_limits_t lim;
    cnb__term_limits(&opts, &lim);
    cnb__obuf_t o = {again, 0, (size_t)n, 0, SIZE_MAX, NULL};
    CHECK(cnb__term_canon_slow(out + 1, out + n, &lim, &o) == 0);
    CHECK(o.len == (size_t)n - 1 && memcmp(o.buf, out + 1, o.len) == 0);
    if (o.owned)
        free(o.buf);
    free(again);

    CHECK(cnb_term_hash(out, (size_t)n) == cnb_term_hash(out + 1, (size_t)n - 1));

    /* cnb_term_zero_sign: the rewritten bytes are still canonical, equal in
     * term order, and a second pass finds nothing; on raw input it fails
     * cleanly or rewrites. */
    uint8_t *z = malloc((size_t)n);
    CHECK(z);
    memcpy(z, out, (size_t)n);
    CHECK(cnb_term_zero_sign(z, (size_t)n) >= 0);
    CHECK(cnb__term_is_canonical(z + 1, z + n, opts.max_depth, NULL) == 1);
    int zorder = 9;
    CHECK(cnb_term_compare(z, (size_t)n, out, (size_t)n, &zorder) == 0 && zorder == 0);
    CHECK(cnb_term_zero_sign(z, (size_t)n) == 0);
    free(z);
    if (size) {
        uint8_t *raw = malloc(size);
        CHECK(raw);
        memcpy(raw, data, size);
        ssize_t zr = cnb_term_zero_sign(raw, size);
        CHECK(zr >= 0 || zr == CNB_EINVAL || known_error(zr));
        free(raw);
    }

    int order = 9, back = 9;
    CHECK(cnb_term_compare(out, (size_t)n, out + 1, (size_t)n - 1, &order) == 0 && order == 0);
    if (prev) {
        CHECK(cnb_term_compare(out, (size_t)n, prev, prev_len, &order) == 0);
        CHECK(cnb_term_compare(prev, prev_len, out, (size_t)n, &back) == 0);
        CHECK(order == -back);
        if (prev_len == (size_t)n && memcmp(prev, out, (size_t)n) == 0)
            CHECK(order == 0);
        free(prev);
    }
    prev = out;
    prev_len = (size_t)n;
    return 0;
}
