/* term_valid.c: the fast path of cnb_term_canonical: decides, in one pass and
 * without writing anything, whether a term is already in canonical form (then
 * the caller just copies it). Its policy sits on core's term reader
 * (term_read.h). Tests: tests/unit/test_term.c, tests/fuzz/. */
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

/* 1 if the atom whose header is h is in canonical form: UTF-8 of at most 255
 * characters, SMALL_ATOM_UTF8_EXT up to 255 bytes, ATOM_UTF8_EXT beyond. */
CNB__ALWAYS_INLINE int canon_atom(const cnb__term_head_t *h)
{
    size_t n = (size_t)h->n;
    const uint8_t *s = h->data;
    if (h->tag != CNB__TAG_SMALL_ATOM_UTF8 && (h->tag != CNB__TAG_ATOM_UTF8 || n <= 255))
        return 0;
    if (!cnb__term_is_ascii(s, n)) {
        long chars = cnb__term_utf8_chars(s, n);
        return chars >= 0 && (unsigned long)chars <= CNB__MAX_ATOM_CHARS;
    }
    return n <= CNB__MAX_ATOM_CHARS;
}

/* Returns the length of a canonical atom at p (tag included) or 0 if there is
 * none. */
static size_t canon_atom_len(const uint8_t *p, const uint8_t *end)
{
    cnb__term_head_t h;
    if (cnb__term_head(p, end, &h) || !canon_atom(&h))
        return 0;
    return h.size;
}

/* 1 if the integer whose header h was read at p is in canonical form (the
 * smallest of SMALL_INTEGER, INTEGER, SMALL_BIG, LARGE_BIG; no high zero
 * digits); then *fits says whether it fits a 64-bit signed integer, stored in
 * *val. 0 if it is not (or not an integer). */
CNB__ALWAYS_INLINE int canon_int(const uint8_t *p, const cnb__term_head_t *h, int64_t *val, int *fits)
{
    *fits = 1;
    switch (h->tag) {
    case CNB__TAG_SMALL_INTEGER:
        *val = p[1];
        return 1;
    case CNB__TAG_INTEGER: {
        int32_t v = (int32_t)cnb__get32(p + 1);
        *val = v;
        return v < 0 || v > 255;
    }
    case CNB__TAG_SMALL_BIG:
    case CNB__TAG_LARGE_BIG: {
        size_t n = (size_t)h->n;
        int neg = p[h->hdr - 1];
        if (n == 0 || neg > 1 || h->data[n - 1] == 0)
            return 0;
        if (h->tag == CNB__TAG_LARGE_BIG && n <= 255) /* would have been SMALL_BIG_EXT */
            return 0;
        *fits = 0;
        if (n > 8)
            return 1;
        uint64_t m = 0;
        for (size_t i = n; i-- > 0;)
            m = m << 8 | h->data[i];
        if (neg ? m <= UINT64_C(0x80000000) : m <= 0x7fffffff) /* would have been INTEGER_EXT */
            return 0;
        if (neg ? m > (UINT64_C(1) << 63) : m > (uint64_t)INT64_MAX)
            return 1;
        *fits = 1;
        *val = neg ? (int64_t)(0 - m) : (int64_t)m;
        return 1;
    }
    default:
        return 0;
    }
}

/* Returns the length of a canonical integer at p whose value fits a 64-bit
 * signed integer, storing the value, or 0 if there is none. */
static size_t canon_int64(const uint8_t *p, const uint8_t *end, int64_t *val)
{
    cnb__term_head_t h;
    int fits;
    if (cnb__term_head(p, end, &h) || !canon_int(p, &h, val, &fits) || !fits)
        return 0;
    return h.size;
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

/* Returns the length of a canonical pid (NEW_PID_EXT) at p, or 0. */
static size_t canon_pid_len(const uint8_t *p, const uint8_t *end)
{
    cnb__term_head_t h;
    if (cnb__term_head(p, end, &h) || h.tag != CNB__TAG_NEW_PID || !canon_atom_len(p + h.hdr, end))
        return 0;
    return h.size;
}

/* Reads the fields of the NEW_FUN_EXT whose header h is at *pp, up to its
 * free variables: module, OldIndex, OldUniq (smalls) and the creator pid,
 * each canonical. Sets *pp past them and *fun_end to where the Size field
 * says the fun ends. Returns 1, or 0 if the fun is not canonical. */
static int fun_fields(const uint8_t **pp, const uint8_t *end, const cnb__term_head_t *h,
                      const uint8_t **fun_end)
{
    const uint8_t *p = *pp;
    size_t size = cnb__get32(p + 1), n;
    int64_t v;
    if (size > (size_t)(end - p) - 1)
        return 0;
    *fun_end = p + 1 + size;
    p += h->size;
    if (!(n = canon_atom_len(p, end)))
        return 0;
    p += n;
    for (int i = 0; i < 2; i++) { /* OldIndex, OldUniq */
        if (!(n = canon_int64(p, end, &v)) || !is_small(v))
            return 0;
        p += n;
    }
    if (!(n = canon_pid_len(p, end)))
        return 0;
    *pp = p + n;
    return 1;
}

/* What walk does next with a term whose header head_ok has checked. */
enum { H_NOT, H_LEAF, H_OPEN, H_EXPORT, H_FUN };

/* Checks the term whose header h was read at p as far as its own bytes go
 * (its children are checked as they come). Returns H_NOT if it is not
 * canonical; H_LEAF for a term without children; H_OPEN for a tuple, list or
 * map with items; H_EXPORT and H_FUN, whose fields walk reads. fix: NULL, or
 * a writable alias of h->data where a -0.0 is rewritten to 0.0 (counted in
 * *fixed). */
CNB__ALWAYS_INLINE int head_ok(const uint8_t *p, const uint8_t *end, const cnb__term_head_t *h, uint8_t *fix,
                   size_t *fixed)
{
    switch (h->tag) {
    case CNB__TAG_SMALL_INTEGER:
    case CNB__TAG_BINARY:
    case CNB__TAG_NIL:
        break;
    case CNB__TAG_SMALL_TUPLE:
        return h->n ? H_OPEN : H_LEAF;
    case CNB__TAG_EXPORT:
        return H_EXPORT;
    case CNB__TAG_NEW_FUN:
        return H_FUN;
    case CNB__TAG_INTEGER:
    case CNB__TAG_SMALL_BIG:
    case CNB__TAG_LARGE_BIG: {
        int64_t v;
        int fits;
        if (!canon_int(p, h, &v, &fits))
            return H_NOT;
        break;
    }
    case CNB__TAG_NEW_FLOAT:
        if (!cnb__float_bits_ok(cnb__get64(h->data)))
            return H_NOT;
        if (fix && cnb__get64(h->data) == CNB__NEG_ZERO_BITS) {
            memset(fix, 0, 8);
            (*fixed)++;
        }
        break;
    case CNB__TAG_SMALL_ATOM_UTF8:
    case CNB__TAG_ATOM_UTF8:
        if (!canon_atom(h))
            return H_NOT;
        break;
    case CNB__TAG_LARGE_TUPLE:
        return h->n <= 255 ? H_NOT : H_OPEN;
    case CNB__TAG_STRING:
        if (h->n == 0)
            return H_NOT;
        break;
    case CNB__TAG_LIST:
        if (h->n == 0 || h->n > (size_t)(end - p) - h->size) /* every element takes a byte */
            return H_NOT;
        return H_OPEN;
    case CNB__TAG_BIT_BINARY: {
        unsigned bits = p[5];
        if (h->n == 0 || bits == 0 || bits > 7)
            return H_NOT;
        if (h->data[h->n - 1] & (0xffu >> bits)) /* unused low bits must be zero */
            return H_NOT;
        break;
    }
    case CNB__TAG_MAP:
        if (h->n > ((size_t)(end - p) - h->size) / 2)
            return H_NOT;
        return h->n ? H_OPEN : H_LEAF;
    case CNB__TAG_NEW_PID:
        if (!canon_pid_len(p, end))
            return H_NOT;
        break;
    case CNB__TAG_NEW_PORT:
        if (!canon_atom_len(p + h->hdr, end) || cnb__get32(h->data) > CNB__NEW_PORT_ID_MAX)
            return H_NOT;
        break;
    case CNB__TAG_V4_PORT:
        if (!canon_atom_len(p + h->hdr, end) || cnb__get64(h->data) <= CNB__NEW_PORT_ID_MAX)
            return H_NOT;
        break;
    case CNB__TAG_NEWER_REFERENCE:
        if (h->n == 0 || !canon_atom_len(p + h->hdr, end))
            return H_NOT;
        break;
    default:
        /* Old or non-canonical encodings. */
        return H_NOT;
    }
    return H_LEAF;
}

/* Returns the length of a canonical EXPORT_EXT at p, or 0. */
static size_t export_len(const uint8_t *p, const uint8_t *end)
{
    size_t n, m, k;
    int64_t ar;
    if (!(n = canon_atom_len(p + 1, end)) || !(m = canon_atom_len(p + 1 + n, end)))
        return 0;
    if (!(k = canon_int64(p + 1 + n + m, end, &ar)) || ar < 0 || ar > CNB__MAX_ARITY)
        return 0;
    return 1 + n + m + k;
}

/* An item of the map f ended at p: after a key, checks that it comes after
 * the previous key. Returns 1, 0 if the map is not canonical, CNB_ENOMEM. */
static int map_item_done(vframe_t *f, const uint8_t *p, const cnb_allocator_t *alloc)
{
    if (!(f->count & 1)) {
        f->cur_k = p;
        return 1;
    }
    if (f->prev_k) {
        int order, tie;
        int r = cnb__term_cmp(f->prev_k, (size_t)(f->prev_e - f->prev_k), f->cur_k,
                              (size_t)(p - f->cur_k), 1, alloc, &order, &tie);
        if (r < 0)
            return r == CNB_ENOMEM ? r : 0;
        /* Strictly ascending; keys equal in term order only in a large map,
         * shorter reference first (see term_canon.c key_cmp). */
        if (order > 0 || (order == 0 && (tie >= 0 || f->npairs <= CNB__FLATMAP_MAX)))
            return 0;
    }
    f->prev_k = f->cur_k;
    f->prev_e = p;
    return 1;
}

/* Sets up the frame f for the items of the tuple, list or map whose header
 * is h. */
static void open_frame(vframe_t *f, const cnb__term_head_t *h)
{
    f->remaining = h->n;
    switch (h->tag) {
    case CNB__TAG_LIST:
        f->kind = V_LIST;
        f->count = h->n;
        f->all_bytes = 1;
        f->in_tail = 0;
        break;
    case CNB__TAG_MAP:
        f->kind = V_MAP;
        f->remaining = h->children;
        f->npairs = h->n;
        f->count = 0;
        f->prev_k = NULL;
        break;
    default:
        f->kind = V_TUPLE;
    }
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
    cnb__term_head_t h;
    int ret = 0, r;
    size_t n;

parse:
    if (cnb__term_head(p, end, &h))
        goto out;
    switch (head_ok(p, end, &h, fix ? fix + (h.data - start) : NULL, fixed)) {
    case H_LEAF:
        p += h.size;
        goto next;
    case H_EXPORT:
        if (!(n = export_len(p, end)))
            goto out;
        p += n;
        goto next;
    case H_FUN: {
        const uint8_t *fun_end;
        if (!fun_fields(&p, end, &h, &fun_end))
            goto out;
        if ((r = push(&st, &cap, &top, inl, max_depth, alloc)) <= 0) {
            ret = r;
            goto out;
        }
        f = &st[top - 1];
        f->kind = V_FUN;
        f->remaining = h.n;
        f->fun_end = fun_end;
        goto next;
    }
    case H_OPEN:
        break;
    default:
        goto out;
    }
    p += h.size;
    if ((r = push(&st, &cap, &top, inl, max_depth, alloc)) <= 0) {
        ret = r;
        goto out;
    }
    open_frame(&st[top - 1], &h);
    goto next;

next:
    if (top == 0) {
        ret = (p == end);
        goto out;
    }
    f = &st[top - 1];
    switch (f->kind) {
    case V_MAP:
        if ((r = map_item_done(f, p, alloc)) <= 0) {
            ret = r;
            goto out;
        }
        if (f->remaining) {
            f->remaining--;
            f->count++;
            goto parse;
        }
        break;
    case V_TUPLE:
    case V_FUN:
        if (f->remaining) {
            f->remaining--;
            goto parse;
        }
        if (f->kind == V_FUN && p != f->fun_end)
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
