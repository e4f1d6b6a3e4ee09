/* cnb_term.h: canonical external term format (ETF), a stable hash and Erlang term
 * order on canonical bytes. Implementation: core/term*.c. Tests:
 * tests/unit/test_term.c, tests/integration/term_prop_tests.erl, tests/fuzz/. */
#ifndef CNB_TERM_H
#define CNB_TERM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cnb_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bounds on decoding. A zero field means "use the default". */
typedef struct cnb_term_opts {
    size_t max_depth;        /* nesting of tuples/lists/maps/funs; default 1000 */
    size_t max_size;         /* canonical output bytes; default 64 MiB */
    size_t max_decompressed; /* inflated size of a compressed term; default 64 MiB */
    const cnb_allocator_t *alloc; /* scratch memory (inflating); NULL: malloc */
} cnb_term_opts_t;

/* Turns any valid ETF of one term (with or without the leading 131 version byte,
 * zlib-compressed (tag 80) or not) into the canonical bytes: exactly what
 * term_to_binary(T, [{minor_version, 2}, deterministic]) gives on OTP 25 for the
 * same term, including the leading 131. The input must hold exactly one term
 * (trailing bytes are CNB_EMALFORMED).
 *
 * out == NULL: size-only mode, returns the canonical length and writes nothing.
 * Otherwise writes at most out_cap bytes and returns the length written, or
 * CNB_ENOSPC when out_cap is too small (nothing meaningful is in out then).
 * opts may be NULL (defaults). Errors: CNB_EMALFORMED, CNB_ETRUNC, CNB_EDEPTH,
 * CNB_ETOOBIG, CNB_EZLIB, CNB_ENOMEM, CNB_EINVAL. Never reads past in+len. */
ssize_t cnb_term_canonical(const void *in, size_t len, void *out, size_t out_cap,
                           const cnb_term_opts_t *opts);

/* Like cnb_term_canonical, but allocates the output with opts->alloc (malloc if
 * NULL); on success *out is owned by the caller (free with the same allocator)
 * and *out_len is its length. Returns 0 or a negative CNB_E* code (*out is NULL
 * then). */
int cnb_term_canonical_alloc(const void *in, size_t len, void **out, size_t *out_len,
                             const cnb_term_opts_t *opts);

/* Rewrites, in place, every -0.0 in canonical bytes (with or without the leading
 * 131) as 0.0. On OTP 25 -0.0 =:= 0.0 (ETS, maps and Elixir's Registry take them
 * for one key) while term_to_binary, and so cnb_term_canonical, keeps the sign:
 * bytes made equal by this function are equal exactly when the terms are =:=.
 * Returns how many floats were rewritten, or CNB_EINVAL for a valid term not in
 * canonical form, the decoding error of malformed bytes, CNB_ETRUNC if empty,
 * CNB_ENOMEM. */
ssize_t cnb_term_zero_sign(void *canon, size_t len);

/* A 64-bit hash of canonical bytes (with or without the leading 131: both give
 * the same value). Stable across processes, builds and machines (fixed algorithm,
 * byte-order independent). Equal terms (=:=) give equal canonical bytes, hence
 * equal hashes, once -0.0 is made 0.0 (cnb_term_zero_sign). */
uint64_t cnb_term_hash(const void *canon, size_t len);

/* Erlang term order (as `<` and `==` on OTP 25) on two canonical byte strings
 * (with or without the leading 131). Sets *order to -1, 0 or 1. Note that 1 and
 * 1.0 compare equal here (0), as with `==`, though their canonical bytes differ.
 * Returns 0, or a negative CNB_E* code if either input is not valid canonical
 * ETF. */
int cnb_term_compare(const void *a, size_t alen, const void *b, size_t blen, int *order);

#ifdef __cplusplus
}
#endif
#endif /* CNB_TERM_H */
