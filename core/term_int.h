/* term_int.h: internals shared by the files of core/term (term.c, term_canon.c,
 * term_valid.c, term_compare.c, term_hash.c); the tags and the
 * header reader are in term_read.h. Not a public header.
 * Tests: tests/unit/test_term.c, tests/integration/term_prop_tests.erl. */
#ifndef CNB_TERM_INT_H
#define CNB_TERM_INT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cnb_bytes.h"
#include "cnb_term.h"
#include "term_read.h"


/* Facts about OTP 25 that the canonical form depends on. */
#define CNB__MAX_ATOM_CHARS 255u       /* characters, not bytes */
#define CNB__MAX_STRING_EXT 65535u     /* longest list term_to_binary writes as STRING_EXT */
#define CNB__OLD_REF_WORD0_LIMIT (1u << 18) /* first word of REFERENCE_EXT/NEW_REFERENCE_EXT */
#define CNB__TINY_CREATION_MAX 3u      /* 1-byte creations of the old pid/port/ref tags */
#define CNB__NEW_PORT_ID_MAX 0x0fffffffu /* larger port ids are written as V4_PORT_EXT */
#define CNB__MAX_ARITY 255u             /* EXPORT_EXT arities above it are refused */

#define CNB__DEFAULT_MAX_DEPTH 1000u
#define CNB__DEFAULT_MAX_SIZE ((size_t)64 << 20)
#define CNB__DEFAULT_MAX_DECOMPRESSED ((size_t)64 << 20)

/* Limits with defaults filled in. */
typedef struct cnb__term_limits {
    size_t max_depth;
    size_t max_size;
    size_t max_decompressed;
    const cnb_allocator_t *alloc;
} cnb__term_limits_t;


/* Checks that [s, s+n) is UTF-8 as erts accepts it for atoms (shortest forms,
 * no surrogates, nothing above U+10FFFF). Returns the number of characters, or
 * -1 if it is not valid. */
long cnb__term_utf8_chars(const uint8_t *s, size_t n);

/* The byte length of a NEW_FLOAT_EXT payload that is a finite double
 * (binary_to_term rejects NaN and infinities). */
#define CNB__NEG_ZERO_BITS UINT64_C(0x8000000000000000) /* -0.0 */

static inline int cnb__float_bits_ok(uint64_t bits)
{
    return ((bits >> 52) & 0x7ff) != 0x7ff;
}

/* An integer as sign and little-endian magnitude without high zero bytes;
 * dig points into the term or into tmp. */
typedef struct cnb__intval {
    int neg;
    const uint8_t *dig;
    size_t n;
    uint8_t tmp[8];
} cnb__intval_t;

static inline void cnb__intval_from_u32(cnb__intval_t *v, int neg, uint32_t m)
{
    v->neg = neg && m != 0;
    for (int i = 0; i < 4; i++)
        v->tmp[i] = (uint8_t)(m >> (8 * i));
    v->dig = v->tmp;
    v->n = 4;
    while (v->n && v->dig[v->n - 1] == 0)
        v->n--;
}

/* The integer (SMALL_INTEGER, INTEGER, SMALL_BIG or LARGE_BIG) whose header
 * h was read at p. */
static inline void cnb__intval_of(const uint8_t *p, const cnb__term_head_t *h, cnb__intval_t *v)
{
    if (h->tag == CNB__TAG_SMALL_INTEGER) {
        cnb__intval_from_u32(v, 0, p[1]);
    } else if (h->tag == CNB__TAG_INTEGER) {
        int32_t s = (int32_t)cnb__get32(p + 1);
        cnb__intval_from_u32(v, s < 0, s < 0 ? 0u - (uint32_t)s : (uint32_t)s);
    } else { /* a big: sign byte, then little-endian digits */
        v->n = (size_t)h->n;
        v->neg = p[h->hdr - 1] != 0;
        v->dig = h->data;
        while (v->n && v->dig[v->n - 1] == 0)
            v->n--;
        if (v->n == 0)
            v->neg = 0;
    }
}

/* Fills in defaults for a NULL opts or zero fields. */
void cnb__term_limits(const cnb_term_opts_t *opts, cnb__term_limits_t *lim);

/* Returns 1 if [p, end) holds exactly one term (no 131 byte) that is already in
 * canonical form and nests no deeper than max_depth; 0 if it is not (it may
 * still be valid: cnb__term_canon_slow decides); CNB_ENOMEM if the frame
 * stack could not grow. Never reads outside [p, end). */
int cnb__term_is_canonical(const uint8_t *p, const uint8_t *end, size_t max_depth,
                           const cnb_allocator_t *alloc);

/* Rewrites every -0.0 of the canonical term [p, p + len) (no 131 byte) as 0.0.
 * Returns how many, CNB_EINVAL if the term is not canonical, CNB_ENOMEM. */
ssize_t cnb__term_fix_negzero(uint8_t *p, size_t len);

/* A growable output buffer. It may start on memory it does not own (the
 * caller's out buffer or a stack array); it moves to allocator memory when it
 * must grow. hard_limit bounds its length (CNB_ETOOBIG beyond it). */
typedef struct cnb__obuf {
    uint8_t *buf;
    size_t len;
    size_t cap;
    int owned;
    size_t hard_limit;
    const cnb_allocator_t *alloc;
} cnb__obuf_t;

/* Doubles a frame stack of *cap elements of elem bytes that starts on the
 * caller's inline array `inl` and moves to allocator memory when it must grow
 * (later growth reallocates). Returns 0 or CNB_ENOMEM (*st unchanged). */
int cnb__stack_grow(void **st, size_t *cap, void *inl, size_t elem,
                    const cnb_allocator_t *alloc);

/* Makes room for n more bytes. Returns 0, CNB_ETOOBIG or CNB_ENOMEM. */
int cnb__obuf_grow(cnb__obuf_t *o, size_t n);

static inline int cnb__obuf_reserve(cnb__obuf_t *o, size_t n)
{
    if (o->cap - o->len >= n)
        return 0;
    return cnb__obuf_grow(o, n);
}

/* Appends the canonical form of the one term in [p, end) (no 131 byte) to o.
 * Returns 0 or a negative CNB_E* code; on error o->len is meaningless. */
int cnb__term_canon_slow(const uint8_t *p, const uint8_t *end, const cnb__term_limits_t *lim,
                         cnb__obuf_t *o);

/* The writers of the general path (term_canon_emit.c). Each returns 0 or a
 * negative CNB_E* code and, on success, advances *pp past what it read. */

/* Writes the canonical form of the leaf term (no children) whose header h
 * was read at *pp. */
int cnb__canon_leaf(cnb__obuf_t *o, const uint8_t **pp, const uint8_t *end,
                    const cnb__term_head_t *h);

/* Writes the atom whose header is h (any of the four encodings) as
 * SMALL_ATOM_UTF8_EXT (or ATOM_UTF8_EXT beyond 255 bytes). */
int cnb__canon_atom(cnb__obuf_t *o, const cnb__term_head_t *h);

/* Writes EXPORT_EXT at *pp: module, function, arity (typed, read here). */
int cnb__canon_export(cnb__obuf_t *o, const uint8_t **pp, const uint8_t *end);

/* Writes the fixed fields, module, OldIndex, OldUniq and creator pid of the
 * NEW_FUN_EXT whose header h was read at *pp, leaving *pp at its first free
 * variable; *size_at is the output offset of its Size field, to be patched
 * once the free variables are written. */
int cnb__canon_fun(cnb__obuf_t *o, const uint8_t **pp, const uint8_t *end,
                   const cnb__term_head_t *h, size_t *size_at);

/* Sets *next to the end of the canonical term that starts at p. Returns 0 or
 * CNB_EMALFORMED/CNB_ETRUNC. Iterative: any depth. */
int cnb__term_skip(const uint8_t *p, const uint8_t *end, const uint8_t **next);

/* Compares two canonical terms (no 131 byte). exact != 0: map key order
 * (integers before floats, 1 and 1.0 differ); exact == 0: Erlang `<`/`==`.
 * Sets *order to -1, 0 or 1. If tie is not NULL it gets, for terms that
 * compare equal, -1 or 1 when they still differ in a reference's count of
 * trailing zero words (OTP 25 orders #Ref<N.7> and #Ref<N.7.0.0> equal but
 * keeps both as keys of a large map), else 0. Returns 0, CNB_ENOMEM (stack
 * growth with alloc), or CNB_EMALFORMED/CNB_ETRUNC for malformed input. */
int cnb__term_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen, int exact,
                  const cnb_allocator_t *alloc, int *order, int *tie);

/* Maps up to this many pairs are "flatmaps" in OTP 25; larger ones are hash
 * maps, which reject fewer keys as duplicates. */
#define CNB__FLATMAP_MAX 32u

#endif /* CNB_TERM_INT_H */
