/* term_valid.c: the fast path of cnb_term_canonical: decides, in one pass and
 * without writing anything, whether a term is already in canonical form (then
 * the caller just copies it). Tests: tests/unit/test_term.c, tests/fuzz/. */
#include "term_int.h"

enum { V_TUPLE, V_LIST, V_MAP, V_FUN };

typedef struct vframe {
    uint8_t kind;
    uint8_t all_bytes; /* V_LIST: every element so far is a SMALL_INTEGER_EXT */
    uint8_t in_tail;   /* V_LIST: the elements are done, the tail is being read */
    uint64_t remaining;
    uint64_t count;         /* V_LIST: elements; V_MAP: items read (2 per pair) */
    uint64_t npairs;        /* V_MAP */
    const uint8_t *prev_k;  /* V_MAP: previous key [prev_k, prev_e) */
    const uint8_t *prev_e;
    const uint8_t *cur_k;   /* V_MAP: start of the key being read */
    const uint8_t *fun_end; /* V_FUN: where the Size field says the fun ends */
} vframe_t;

#define V_INLINE_FRAMES 32

/* Returns the length of a canonical atom at p (tag included) or 0 if there is
 * none. */
static size_t canon_atom_len(const uint8_t *p, const uint8_t *end)
{
    size_t avail = (size_t)(end - p), n, hdr;
    if (avail < 2)
        return 0;
    if (p[0] == CNB__TAG_SMALL_ATOM_UTF8) {
        n = p[1];
        hdr = 2;
    } else if (p[0] == CNB__TAG_ATOM_UTF8) {
        if (avail < 3)
            return 0;
        n = cnb__get16(p + 1);
        hdr = 3;
        if (n <= 255) /* would have been SMALL_ATOM_UTF8_EXT */
            return 0;
    } else {
        return 0;
    }
    if (avail - hdr < n)
        return 0;
    const uint8_t *s = p + hdr;
    size_t i = 0;
    /* ASCII fast path, eight bytes at a time. */
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & UINT64_C(0x8080808080808080))
            break;
    }
    for (; i < n; i++)
        if (s[i] & 0x80)
            break;
    if (i < n) {
        long chars = cnb__term_utf8_chars(s, n);
        if (chars < 0 || (unsigned long)chars > CNB__MAX_ATOM_CHARS)
            return 0;
    } else if (n > CNB__MAX_ATOM_CHARS) {
        return 0;
    }
    return hdr + n;
}

/* Returns the length of a canonical integer at p whose value fits a 64-bit
 * signed integer, storing the value, or 0 if there is none. */
static size_t canon_int64(const uint8_t *p, const uint8_t *end, int64_t *val)
{
    size_t avail = (size_t)(end - p);
    if (avail < 2)
        return 0;
    switch (p[0]) {
    case CNB__TAG_SMALL_INTEGER:
        *val = p[1];
        return 2;
    case CNB__TAG_INTEGER: {
        if (avail < 5)
            return 0;
        int32_t v = (int32_t)cnb__get32(p + 1);
        if (v >= 0 && v <= 255)
            return 0;
        *val = v;
        return 5;
    }
    case CNB__TAG_SMALL_BIG: {
        size_t n = p[1];
        if (avail < 3 || avail - 3 < n || n == 0 || n > 8 || p[2] > 1 || p[2 + n] == 0)
            return 0;
        uint64_t m = 0;
        for (size_t i = n; i-- > 0;)
            m = m << 8 | p[3 + i];
        int neg = p[2];
        if (neg ? m <= UINT64_C(0x80000000) : m <= 0x7fffffff)
            return 0;
        if (neg ? m > (UINT64_C(1) << 63) : m > (uint64_t)INT64_MAX)
            return 0;
        *val = neg ? (int64_t)(0 - m) : (int64_t)m;
        return 3 + n;
    }
    default:
        return 0;
    }
}

/* OTP's is_small() on a 64-bit emulator: -2^59 <= v < 2^59. */
static int is_small(int64_t v)
{
    return v >= -(INT64_C(1) << 59) && v < (INT64_C(1) << 59);
}

static int push(vframe_t **st, size_t *cap, size_t *top, vframe_t *inl, size_t max_depth,
                const cnb_allocator_t *alloc)
{
    size_t depth = *top + 1; /* frames after the push */
    if (depth > max_depth)
        return 0;
    if (depth > *cap) {
        void *s = *st;
        if (cnb__stack_grow(&s, cap, inl, sizeof(**st), alloc))
            return CNB_ENOMEM;
        *st = s;
    }
    *top = depth;
    return 1;
}

/* The walk of cnb__term_is_canonical. fix: NULL, or a writable alias of the
 * bytes at p, where every -0.0 found is rewritten to 0.0 (*fixed counts them). */
static int walk(const uint8_t *p, const uint8_t *end, size_t max_depth,
                const cnb_allocator_t *alloc, uint8_t *fix, size_t *fixed)
{
    const uint8_t *const start = p;
    vframe_t inl[V_INLINE_FRAMES];
    vframe_t *st = inl, *f;
    size_t cap = V_INLINE_FRAMES, top = 0; /* top: number of frames in use */
    int ret = 0, r;
    size_t n, avail;

parse:
    avail = (size_t)(end - p);
    if (avail < 1)
        goto out;
    switch (p[0]) {
    case CNB__TAG_SMALL_INTEGER:
        if (avail < 2)
            goto out;
        p += 2;
        goto next;
    case CNB__TAG_INTEGER:
    case CNB__TAG_SMALL_BIG: {
        int64_t v;
        if (p[0] == CNB__TAG_SMALL_BIG && avail >= 2 && p[1] > 4) {
            n = p[1];
            goto big;
        }
        if (!(n = canon_int64(p, end, &v)))
            goto out;
        p += n;
        goto next;
    }
    case CNB__TAG_LARGE_BIG:
        if (avail < 6)
            goto out;
        n = cnb__get32(p + 1);
        if (n <= 255)
            goto out;
        p += 3; /* make the layout look like SMALL_BIG_EXT for the shared checks */
        avail -= 3;
    big:
        if (avail < 3 || avail - 3 < n || p[2] > 1 || p[2 + n] == 0)
            goto out;
        p += 3 + n;
        goto next;
    case CNB__TAG_NEW_FLOAT:
        if (avail < 9 || !cnb__float_bits_ok(cnb__get64(p + 1)))
            goto out;
        if (fix && cnb__get64(p + 1) == CNB__NEG_ZERO_BITS) {
            memset(fix + (p - start) + 1, 0, 8);
            (*fixed)++;
        }
        p += 9;
        goto next;
    case CNB__TAG_SMALL_ATOM_UTF8:
    case CNB__TAG_ATOM_UTF8:
        if (!(n = canon_atom_len(p, end)))
            goto out;
        p += n;
        goto next;
    case CNB__TAG_SMALL_TUPLE:
        if (avail < 2)
            goto out;
        n = p[1];
        p += 2;
        goto tuple;
    case CNB__TAG_LARGE_TUPLE:
        if (avail < 5)
            goto out;
        n = cnb__get32(p + 1);
        if (n <= 255)
            goto out;
        p += 5;
    tuple:
        if (n == 0)
            goto next;
        if ((r = push(&st, &cap, &top, inl, max_depth, alloc)) <= 0) {
            ret = r;
            goto out;
        }
        f = &st[top - 1];
        f->kind = V_TUPLE;
        f->remaining = n;
        goto next;
    case CNB__TAG_NIL:
        p += 1;
        goto next;
    case CNB__TAG_STRING:
        if (avail < 3)
            goto out;
        n = cnb__get16(p + 1);
        if (n == 0 || avail - 3 < n)
            goto out;
        p += 3 + n;
        goto next;
    case CNB__TAG_LIST:
        if (avail < 5)
            goto out;
        n = cnb__get32(p + 1);
        if (n == 0 || n > avail - 5) /* every element takes at least one byte */
            goto out;
        p += 5;
        if ((r = push(&st, &cap, &top, inl, max_depth, alloc)) <= 0) {
            ret = r;
            goto out;
        }
        f = &st[top - 1];
        f->kind = V_LIST;
        f->remaining = n;
        f->count = n;
        f->all_bytes = 1;
        f->in_tail = 0;
        goto next;
    case CNB__TAG_BINARY:
        if (avail < 5 || avail - 5 < (n = cnb__get32(p + 1)))
            goto out;
        p += 5 + n;
        goto next;
    case CNB__TAG_BIT_BINARY: {
        if (avail < 6)
            goto out;
        n = cnb__get32(p + 1);
        unsigned bits = p[5];
        if (n == 0 || bits == 0 || bits > 7 || avail - 6 < n)
            goto out;
        if (p[5 + n] & (0xffu >> bits)) /* unused low bits must be zero */
            goto out;
        p += 6 + n;
        goto next;
    }
    case CNB__TAG_MAP:
        if (avail < 5)
            goto out;
        n = cnb__get32(p + 1);
        p += 5;
        if (n == 0)
            goto next;
        if (n > (avail - 5) / 2)
            goto out;
        if ((r = push(&st, &cap, &top, inl, max_depth, alloc)) <= 0) {
            ret = r;
            goto out;
        }
        f = &st[top - 1];
        f->kind = V_MAP;
        f->remaining = (uint64_t)n * 2;
        f->npairs = n;
        f->count = 0;
        f->prev_k = NULL;
        goto next;
    case CNB__TAG_NEW_PID:
        if (!(n = canon_atom_len(p + 1, end)) || (size_t)(end - (p + 1 + n)) < 12)
            goto out;
        p += 1 + n + 12;
        goto next;
    case CNB__TAG_NEW_PORT:
        if (!(n = canon_atom_len(p + 1, end)) || (size_t)(end - (p + 1 + n)) < 8)
            goto out;
        if (cnb__get32(p + 1 + n) > CNB__NEW_PORT_ID_MAX)
            goto out;
        p += 1 + n + 8;
        goto next;
    case CNB__TAG_V4_PORT:
        if (!(n = canon_atom_len(p + 1, end)) || (size_t)(end - (p + 1 + n)) < 12)
            goto out;
        if (cnb__get64(p + 1 + n) <= CNB__NEW_PORT_ID_MAX)
            goto out;
        p += 1 + n + 12;
        goto next;
    case CNB__TAG_NEWER_REFERENCE: {
        if (avail < 3)
            goto out;
        size_t words = cnb__get16(p + 1);
        if (words == 0 || words > CNB__MAX_REF_WORDS || !(n = canon_atom_len(p + 3, end)) ||
            (size_t)(end - (p + 3 + n)) < 4 + 4 * words)
            goto out;
        p += 3 + n + 4 + 4 * words;
        goto next;
    }
    case CNB__TAG_EXPORT: {
        size_t m;
        int64_t ar;
        if (!(n = canon_atom_len(p + 1, end)) || !(m = canon_atom_len(p + 1 + n, end)))
            goto out;
        p += 1 + n + m;
        if (!(n = canon_int64(p, end, &ar)) || ar < 0 || ar > (int64_t)UINT32_MAX)
            goto out;
        p += n;
        goto next;
    }
    case CNB__TAG_NEW_FUN: {
        int64_t v;
        if (avail < 30)
            goto out;
        size_t size = cnb__get32(p + 1);
        if (size > avail - 1)
            goto out;
        const uint8_t *fun_end = p + 1 + size;
        uint32_t nfree = cnb__get32(p + 26);
        p += 30;
        if (!(n = canon_atom_len(p, end)))
            goto out;
        p += n;
        for (int i = 0; i < 2; i++) { /* OldIndex, OldUniq */
            if (!(n = canon_int64(p, end, &v)) || !is_small(v))
                goto out;
            p += n;
        }
        if ((size_t)(end - p) < 1 || p[0] != CNB__TAG_NEW_PID)
            goto out;
        if (!(n = canon_atom_len(p + 1, end)) || (size_t)(end - (p + 1 + n)) < 12)
            goto out;
        p += 1 + n + 12;
        if ((r = push(&st, &cap, &top, inl, max_depth, alloc)) <= 0) {
            ret = r;
            goto out;
        }
        f = &st[top - 1];
        f->kind = V_FUN;
        f->remaining = nfree;
        f->fun_end = fun_end;
        goto next;
    }
    default:
        /* Old or non-canonical encodings, compressed terms, and invalid tags. */
        goto out;
    }

next:
    if (top == 0) {
        ret = (p == end);
        goto out;
    }
    f = &st[top - 1];
    switch (f->kind) {
    case V_TUPLE:
        if (f->remaining) {
            f->remaining--;
            goto parse;
        }
        break;
    case V_MAP:
        if (f->count & 1) {
            /* A key just ended at p. */
            if (f->prev_k) {
                int order, tie;
                r = cnb__term_cmp(f->prev_k, (size_t)(f->prev_e - f->prev_k), f->cur_k,
                                  (size_t)(p - f->cur_k), 1, alloc, &order, &tie);
                if (r < 0) {
                    ret = r == CNB_ENOMEM ? r : 0;
                    goto out;
                }
                /* Strictly ascending; keys equal in term order only in a large
                 * map, shorter reference first (see term_canon.c key_cmp). */
                if (order > 0 || (order == 0 && (tie >= 0 || f->npairs <= CNB__FLATMAP_MAX)))
                    goto out;
            }
            f->prev_k = f->cur_k;
            f->prev_e = p;
        } else {
            f->cur_k = p;
        }
        if (f->remaining) {
            f->remaining--;
            f->count++;
            goto parse;
        }
        break;
    case V_FUN:
        if (f->remaining) {
            f->remaining--;
            goto parse;
        }
        if (p != f->fun_end)
            goto out;
        break;
    case V_LIST:
        if (f->in_tail)
            break;
        if (f->remaining) {
            f->remaining--;
            if (p < end && p[0] != CNB__TAG_SMALL_INTEGER)
                f->all_bytes = 0;
            goto parse;
        }
        if (p >= end)
            goto out;
        if (p[0] == CNB__TAG_NIL) {
            /* A proper list of bytes must have been a STRING_EXT. */
            if (f->all_bytes && f->count <= CNB__MAX_STRING_EXT)
                goto out;
            p++;
            break;
        }
        if (p[0] == CNB__TAG_LIST || p[0] == CNB__TAG_STRING)
            goto out;
        f->in_tail = 1;
        goto parse;
    }
    top--;
    goto next;

out:
    if (st != inl)
        cnb_free(alloc, st);
    return ret;
}

int cnb__term_is_canonical(const uint8_t *p, const uint8_t *end, size_t max_depth,
                           const cnb_allocator_t *alloc)
{
    return walk(p, end, max_depth, alloc, NULL, NULL);
}

ssize_t cnb__term_fix_negzero(uint8_t *p, size_t len)
{
    size_t fixed = 0;
    int r = walk(p, p + len, SIZE_MAX, NULL, p, &fixed);
    if (r < 0)
        return r;
    return r ? (ssize_t)fixed : CNB_EINVAL;
}
