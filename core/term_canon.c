/* term_canon.c: the general path of cnb_term_canonical: decodes any valid ETF
 * of one term and writes the bytes term_to_binary(T, [{minor_version, 2},
 * deterministic]) gives on OTP 25. Iterative (an explicit frame stack), so the
 * C stack use does not depend on the nesting of the input.
 * Tests: tests/unit/test_term.c, tests/integration/term_prop_tests.erl. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strtod_l, newlocale */
#endif
#include "term_int.h"

#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

enum { C_TUPLE, C_LIST, C_MAP, C_FUN };

typedef struct cframe {
    uint8_t kind;
    uint8_t all_bytes; /* C_LIST: every element so far came out as SMALL_INTEGER_EXT */
    uint8_t in_tail;   /* C_LIST: an improper tail is being written */
    uint8_t has_item;  /* C_LIST: an element was started at item_start */
    uint64_t remaining; /* items left in the current input segment */
    uint64_t count;     /* C_LIST: elements written; C_MAP: pairs */
    size_t out_start;   /* output offset of the header (C_FUN: of the Size field) */
    size_t item_start;
    size_t base; /* C_MAP: index of its first item offset in offs */
} cframe_t;

#define C_INLINE_FRAMES 32

typedef struct canon {
    const uint8_t *end;
    cnb__obuf_t *o;
    const cnb__term_limits_t *lim;
    const cnb_allocator_t *alloc;
    cframe_t *st;
    size_t cap, top;
    size_t *offs; /* output offsets of every key and value start of open maps */
    size_t noffs, offs_cap;
    cframe_t inl[C_INLINE_FRAMES];
} canon_t;

/* ---- small writers -------------------------------------------------------- */

static inline uint8_t *wr(cnb__obuf_t *o, size_t n)
{
    uint8_t *w = o->buf + o->len;
    o->len += n;
    return w;
}

/* Integers in any of the four encodings, as sign and little-endian magnitude
 * without high zero bytes. */
typedef struct intval {
    int neg;
    const uint8_t *dig;
    size_t n;
    uint8_t tmp[8];
} intval_t;

/* Reads an integer term at p. Returns its encoded length, or a negative code. */
static ssize_t read_int(const uint8_t *p, const uint8_t *end, intval_t *v)
{
    size_t avail = (size_t)(end - p), len;
    if (avail < 1)
        return CNB_ETRUNC;
    v->neg = 0;
    switch (p[0]) {
    case CNB__TAG_SMALL_INTEGER:
        if (avail < 2)
            return CNB_ETRUNC;
        v->tmp[0] = p[1];
        v->dig = v->tmp;
        v->n = 1;
        len = 2;
        break;
    case CNB__TAG_INTEGER: {
        if (avail < 5)
            return CNB_ETRUNC;
        int32_t s = (int32_t)cnb__get32(p + 1);
        uint32_t m = s < 0 ? 0u - (uint32_t)s : (uint32_t)s;
        v->neg = s < 0;
        for (int i = 0; i < 4; i++)
            v->tmp[i] = (uint8_t)(m >> (8 * i));
        v->dig = v->tmp;
        v->n = 4;
        len = 5;
        break;
    }
    case CNB__TAG_SMALL_BIG:
        if (avail < 3)
            return CNB_ETRUNC;
        v->n = p[1];
        v->neg = p[2] != 0;
        v->dig = p + 3;
        if (avail - 3 < v->n)
            return CNB_ETRUNC;
        len = 3 + v->n;
        break;
    case CNB__TAG_LARGE_BIG:
        if (avail < 6)
            return CNB_ETRUNC;
        v->n = cnb__get32(p + 1);
        v->neg = p[5] != 0;
        v->dig = p + 6;
        if (avail - 6 < v->n)
            return CNB_ETRUNC;
        len = 6 + v->n;
        break;
    default:
        return CNB_EMALFORMED;
    }
    while (v->n && v->dig[v->n - 1] == 0)
        v->n--;
    if (v->n == 0)
        v->neg = 0;
    return (ssize_t)len;
}

static uint64_t intval_mag64(const intval_t *v)
{
    uint64_t m = 0;
    for (size_t i = v->n; i-- > 0;)
        m = m << 8 | v->dig[i];
    return m;
}

/* OTP's is_small() on a 64-bit emulator: -2^59 <= v < 2^59. */
static int intval_is_small(const intval_t *v)
{
    if (v->n > 8)
        return 0;
    uint64_t m = intval_mag64(v);
    return v->neg ? m <= (UINT64_C(1) << 59) : m < (UINT64_C(1) << 59);
}

static int emit_int(cnb__obuf_t *o, const intval_t *v)
{
    int r;
    if (v->n <= 4) {
        uint64_t m = intval_mag64(v);
        if (!v->neg && m <= 255) {
            if ((r = cnb__obuf_reserve(o, 2)))
                return r;
            uint8_t *w = wr(o, 2);
            w[0] = CNB__TAG_SMALL_INTEGER;
            w[1] = (uint8_t)m;
            return 0;
        }
        if (v->neg ? m <= UINT64_C(0x80000000) : m <= 0x7fffffff) {
            if ((r = cnb__obuf_reserve(o, 5)))
                return r;
            uint8_t *w = wr(o, 5);
            w[0] = CNB__TAG_INTEGER;
            cnb__put32(w + 1, v->neg ? (uint32_t)(0 - m) : (uint32_t)m);
            return 0;
        }
    }
    if (v->n <= 255) {
        if ((r = cnb__obuf_reserve(o, 3 + v->n)))
            return r;
        uint8_t *w = wr(o, 3 + v->n);
        w[0] = CNB__TAG_SMALL_BIG;
        w[1] = (uint8_t)v->n;
        w[2] = (uint8_t)v->neg;
        memcpy(w + 3, v->dig, v->n);
        return 0;
    }
    if (v->n > UINT32_MAX)
        return CNB_ETOOBIG;
    if ((r = cnb__obuf_reserve(o, 6 + v->n)))
        return r;
    uint8_t *w = wr(o, 6 + v->n);
    w[0] = CNB__TAG_LARGE_BIG;
    cnb__put32(w + 1, (uint32_t)v->n);
    w[5] = (uint8_t)v->neg;
    memcpy(w + 6, v->dig, v->n);
    return 0;
}

/* Reads an atom in any of the four encodings at *pp and writes it as
 * SMALL_ATOM_UTF8_EXT (or ATOM_UTF8_EXT beyond 255 bytes). */
static int emit_atom(cnb__obuf_t *o, const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp;
    size_t avail = (size_t)(end - p), n, hdr, outn;
    int latin1, r;
    if (avail < 1)
        return CNB_ETRUNC;
    switch (p[0]) {
    case CNB__TAG_ATOM:
    case CNB__TAG_ATOM_UTF8:
        if (avail < 3)
            return CNB_ETRUNC;
        n = cnb__get16(p + 1);
        hdr = 3;
        break;
    case CNB__TAG_SMALL_ATOM:
    case CNB__TAG_SMALL_ATOM_UTF8:
        if (avail < 2)
            return CNB_ETRUNC;
        n = p[1];
        hdr = 2;
        break;
    default:
        return CNB_EMALFORMED;
    }
    latin1 = p[0] == CNB__TAG_ATOM || p[0] == CNB__TAG_SMALL_ATOM;
    if (avail - hdr < n)
        return CNB_ETRUNC;
    const uint8_t *s = p + hdr;
    if (latin1) {
        if (n > CNB__MAX_ATOM_CHARS)
            return CNB_EMALFORMED;
        outn = n;
        for (size_t i = 0; i < n; i++)
            outn += s[i] >> 7;
    } else {
        long chars = cnb__term_utf8_chars(s, n);
        if (chars < 0 || (unsigned long)chars > CNB__MAX_ATOM_CHARS)
            return CNB_EMALFORMED;
        outn = n;
    }
    if ((r = cnb__obuf_reserve(o, 3 + outn)))
        return r;
    uint8_t *w;
    if (outn <= 255) {
        w = wr(o, 2 + outn);
        w[0] = CNB__TAG_SMALL_ATOM_UTF8;
        w[1] = (uint8_t)outn;
        w += 2;
    } else {
        w = wr(o, 3 + outn);
        w[0] = CNB__TAG_ATOM_UTF8;
        cnb__put16(w + 1, (uint32_t)outn);
        w += 3;
    }
    if (latin1 && outn != n) {
        for (size_t i = 0; i < n; i++) {
            if (s[i] < 0x80) {
                *w++ = s[i];
            } else {
                *w++ = (uint8_t)(0xc0 | s[i] >> 6);
                *w++ = (uint8_t)(0x80 | (s[i] & 0x3f));
            }
        }
    } else {
        memcpy(w, s, n);
    }
    *pp = p + hdr + n;
    return 0;
}

/* Reads the creation of an old (1 byte, 0..3) or new (4 bytes) pid/port/ref. */
static int read_creation(const uint8_t **pp, const uint8_t *end, int tiny, uint32_t *cre)
{
    const uint8_t *p = *pp;
    if ((size_t)(end - p) < (tiny ? 1u : 4u))
        return CNB_ETRUNC;
    if (tiny) {
        if (p[0] > CNB__TINY_CREATION_MAX)
            return CNB_EMALFORMED;
        *cre = p[0];
        *pp = p + 1;
    } else {
        *cre = cnb__get32(p);
        *pp = p + 4;
    }
    return 0;
}

/* PID_EXT or NEW_PID_EXT at *pp, written as NEW_PID_EXT. */
static int emit_pid(cnb__obuf_t *o, const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp;
    int tiny = p[0] == CNB__TAG_PID, r;
    uint32_t cre;
    p++;
    if ((r = cnb__obuf_reserve(o, 1)))
        return r;
    *wr(o, 1) = CNB__TAG_NEW_PID;
    if ((r = emit_atom(o, &p, end)))
        return r;
    if ((size_t)(end - p) < 8)
        return CNB_ETRUNC;
    const uint8_t *ids = p;
    p += 8;
    if ((r = read_creation(&p, end, tiny, &cre)))
        return r;
    if ((r = cnb__obuf_reserve(o, 12)))
        return r;
    uint8_t *w = wr(o, 12);
    memcpy(w, ids, 8);
    cnb__put32(w + 8, cre);
    *pp = p;
    return 0;
}

static int emit_port(cnb__obuf_t *o, const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp;
    uint8_t tag = p[0];
    uint64_t id;
    uint32_t cre;
    int r;
    p++;
    size_t tag_at = o->len;
    if ((r = cnb__obuf_reserve(o, 1)))
        return r;
    wr(o, 1);
    if ((r = emit_atom(o, &p, end)))
        return r;
    size_t idlen = tag == CNB__TAG_V4_PORT ? 8 : 4;
    if ((size_t)(end - p) < idlen)
        return CNB_ETRUNC;
    id = idlen == 8 ? cnb__get64(p) : cnb__get32(p);
    p += idlen;
    if ((r = read_creation(&p, end, tag == CNB__TAG_PORT, &cre)))
        return r;
    if ((r = cnb__obuf_reserve(o, 12)))
        return r;
    if (id <= CNB__NEW_PORT_ID_MAX) {
        o->buf[tag_at] = CNB__TAG_NEW_PORT;
        uint8_t *w = wr(o, 8);
        cnb__put32(w, (uint32_t)id);
        cnb__put32(w + 4, cre);
    } else {
        o->buf[tag_at] = CNB__TAG_V4_PORT;
        uint8_t *w = wr(o, 12);
        cnb__put64(w, id);
        cnb__put32(w + 8, cre);
    }
    *pp = p;
    return 0;
}

static int emit_ref(cnb__obuf_t *o, const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp;
    uint8_t tag = p[0];
    size_t words;
    uint32_t cre;
    int r;
    p++;
    if (tag == CNB__TAG_REFERENCE) {
        words = 1;
    } else {
        if ((size_t)(end - p) < 2)
            return CNB_ETRUNC;
        words = cnb__get16(p);
        p += 2;
        /* OTP 25 reads a word past a 0-word reference, so no valid input has
         * one. */
        if (words > CNB__MAX_REF_WORDS || words == 0)
            return CNB_EMALFORMED;
    }
    if ((r = cnb__obuf_reserve(o, 3)))
        return r;
    uint8_t *w = wr(o, 3);
    w[0] = CNB__TAG_NEWER_REFERENCE;
    cnb__put16(w + 1, (uint32_t)words);
    if ((r = emit_atom(o, &p, end)))
        return r;
    const uint8_t *ids;
    if (tag == CNB__TAG_REFERENCE) {
        if ((size_t)(end - p) < 4)
            return CNB_ETRUNC;
        ids = p;
        p += 4;
        if ((r = read_creation(&p, end, 1, &cre)))
            return r;
    } else {
        if ((r = read_creation(&p, end, tag == CNB__TAG_NEW_REFERENCE, &cre)))
            return r;
        if ((size_t)(end - p) < 4 * words)
            return CNB_ETRUNC;
        ids = p;
        p += 4 * words;
    }
    /* The old encodings carry an 18-bit first word; OTP 25 rejects more. */
    if (tag != CNB__TAG_NEWER_REFERENCE && cnb__get32(ids) >= CNB__OLD_REF_WORD0_LIMIT)
        return CNB_EMALFORMED;
    if ((r = cnb__obuf_reserve(o, 4 + 4 * words)))
        return r;
    w = wr(o, 4 + 4 * words);
    cnb__put32(w, cre);
    memcpy(w + 4, ids, 4 * words);
    *pp = p;
    return 0;
}

/* Where binary_to_term reads a whole term and then checks its type (export
 * arity, a fun's OldIndex, OldUniq and creator pid), a LIST_EXT of no elements
 * in front stands for its tail, the value itself. */
static int skip_empty_lists(const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp;
    while (p < end && p[0] == CNB__TAG_LIST) {
        if ((size_t)(end - p) < 5)
            return CNB_ETRUNC;
        if (cnb__get32(p + 1) != 0)
            break;
        p += 5;
    }
    *pp = p;
    return 0;
}

/* ---- FLOAT_EXT ----------------------------------------------------------- */

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void make_c_locale(void)
{
    c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

static int is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* Parses the 31-byte FLOAT_EXT text the way erts does: the text ends at the
 * first NUL; [+-]digits(.|,)digits[(e|E)[+-]digits]; overflow is an error,
 * underflow gives the rounded (possibly zero) value. erts reads on past 31
 * bytes without a NUL (into whatever follows), so that is an error here. */
static int parse_float_ext(const uint8_t *s, double *out)
{
    char buf[32];
    size_t n = 0, i = 0;
    while (n < 31 && s[n]) {
        buf[n] = (char)s[n];
        n++;
    }
    if (n == 31)
        return CNB_EMALFORMED;
    buf[n] = '\0';
    if (buf[i] == '+' || buf[i] == '-')
        i++;
    if (!is_digit(buf[i]))
        return CNB_EMALFORMED;
    while (is_digit(buf[i]))
        i++;
    if (buf[i] != '.' && buf[i] != ',')
        return CNB_EMALFORMED;
    buf[i++] = '.';
    if (!is_digit(buf[i]))
        return CNB_EMALFORMED;
    while (is_digit(buf[i]))
        i++;
    if (buf[i] == 'e' || buf[i] == 'E') {
        i++;
        if (buf[i] == '+' || buf[i] == '-')
            i++;
        if (!is_digit(buf[i]))
            return CNB_EMALFORMED;
        while (is_digit(buf[i]))
            i++;
    }
    if (buf[i] != '\0')
        return CNB_EMALFORMED;
    pthread_once(&c_locale_once, make_c_locale);
    char *stop;
    double d = c_locale ? strtod_l(buf, &stop, c_locale) : strtod(buf, &stop);
    if (stop != buf + i || !isfinite(d))
        return CNB_EMALFORMED;
    *out = d;
    return 0;
}

/* ---- frames, maps and lists ---------------------------------------------- */

static int push(canon_t *c, uint8_t kind, uint64_t remaining)
{
    if (c->top >= c->lim->max_depth)
        return CNB_EDEPTH;
    if (c->top == c->cap) {
        void *st = c->st;
        if (cnb__stack_grow(&st, &c->cap, c->inl, sizeof(*c->st), c->alloc))
            return CNB_ENOMEM;
        c->st = st;
    }
    cframe_t *f = &c->st[c->top++];
    memset(f, 0, sizeof(*f));
    f->kind = kind;
    f->remaining = remaining;
    f->out_start = c->o->len;
    return 0;
}

static int push_off(canon_t *c, size_t off)
{
    if (c->noffs == c->offs_cap) {
        size_t ncap = c->offs_cap ? c->offs_cap * 2 : 64;
        size_t *n = cnb_realloc(c->alloc, c->offs, ncap * sizeof(*n));
        if (!n)
            return CNB_ENOMEM;
        c->offs = n;
        c->offs_cap = ncap;
    }
    c->offs[c->noffs++] = off;
    return 0;
}

typedef struct keysort {
    const uint8_t *buf;
    const size_t *offs; /* key i is [offs[2i], offs[2i+1]) */
    const cnb_allocator_t *alloc;
    int err;
    int saw_equal; /* two keys that are one key to OTP 25 */
    int saw_tie;   /* two keys equal in term order, distinct only in a large map */
} keysort_t;

/* Map key order; keys equal in it but different as terms (see
 * cnb__term_cmp's tie) come in a fixed order, shorter reference first. OTP 25
 * writes such keys in hash order, which this cannot reproduce. */
static int key_cmp(keysort_t *ks, size_t i, size_t j)
{
    int order = 0, tie = 0, r;
    r = cnb__term_cmp(ks->buf + ks->offs[2 * i], ks->offs[2 * i + 1] - ks->offs[2 * i],
                      ks->buf + ks->offs[2 * j], ks->offs[2 * j + 1] - ks->offs[2 * j], 1,
                      ks->alloc, &order, &tie);
    if (r < 0 && !ks->err)
        ks->err = r;
    if (order == 0) {
        if (tie == 0)
            ks->saw_equal = 1;
        else
            ks->saw_tie = 1;
        order = tie;
    }
    return order;
}

/* Bottom-up merge sort of idx[0..n) by key; tmp has room for n. Any two keys
 * that end up next to each other were compared, so an equal pair (a duplicate
 * key) always sets saw_equal. */
static size_t *merge_sort(keysort_t *ks, size_t *idx, size_t *tmp, size_t n)
{
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n;
            size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t a = lo, b = mid, k = lo;
            while (a < mid && b < hi)
                tmp[k++] = key_cmp(ks, idx[b], idx[a]) < 0 ? idx[b++] : idx[a++];
            while (a < mid)
                tmp[k++] = idx[a++];
            while (b < hi)
                tmp[k++] = idx[b++];
        }
        size_t *sw = idx;
        idx = tmp;
        tmp = sw;
    }
    return idx;
}

/* All pairs of the map on top are written; put them in key order. */
static int finish_map(canon_t *c, cframe_t *f)
{
    cnb__obuf_t *o = c->o;
    size_t n = f->count, *offs = c->offs + f->base, i;
    keysort_t ks = {o->buf, offs, c->alloc, 0, 0, 0};
    int sorted = 1, r = 0;
    size_t *idx = NULL;
    uint8_t *copy = NULL;

    for (i = 1; i < n && sorted; i++) {
        int order = key_cmp(&ks, i - 1, i);
        if (ks.err)
            return ks.err;
        if (order > 0)
            sorted = 0;
    }
    /* Duplicate keys: binary_to_term rejects them. */
    if (ks.saw_equal || (ks.saw_tie && n <= CNB__FLATMAP_MAX))
        return CNB_EMALFORMED;
    if (!sorted) {
        if (n > SIZE_MAX / (2 * sizeof(size_t)))
            return CNB_ENOMEM;
        idx = cnb_alloc(c->alloc, 2 * n * sizeof(size_t));
        if (!idx)
            return CNB_ENOMEM;
        for (i = 0; i < n; i++)
            idx[i] = i;
        size_t *res = merge_sort(&ks, idx, idx + n, n);
        if (ks.err) {
            r = ks.err;
            goto out;
        }
        if (ks.saw_equal || (ks.saw_tie && n <= CNB__FLATMAP_MAX)) {
            r = CNB_EMALFORMED;
            goto out;
        }
        size_t body = offs[0], blen = o->len - body;
        copy = cnb_alloc(c->alloc, blen);
        if (!copy) {
            r = CNB_ENOMEM;
            goto out;
        }
        memcpy(copy, o->buf + body, blen);
        uint8_t *w = o->buf + body;
        for (i = 0; i < n; i++) {
            size_t k = res[i];
            size_t s = offs[2 * k], e = k + 1 < n ? offs[2 * k + 2] : o->len;
            memcpy(w, copy + (s - body), e - s);
            w += e - s;
        }
    }
out:
    cnb_free(c->alloc, idx);
    cnb_free(c->alloc, copy);
    c->noffs = f->base;
    return r;
}

/* The list on top is complete: patch its count, fold it to STRING_EXT, or
 * drop the header of an empty prefix (LIST_EXT of 0 elements is its tail). */
static int finish_list(canon_t *c, cframe_t *f, int proper)
{
    cnb__obuf_t *o = c->o;
    size_t s = f->out_start, n;
    uint8_t *b = o->buf;
    int r;
    if (f->count > UINT32_MAX)
        return CNB_ETOOBIG;
    n = (size_t)f->count;
    if (n == 0) {
        if (proper) {
            o->len = s;
            b[o->len++] = CNB__TAG_NIL;
        } else {
            memmove(b + s, b + s + 5, o->len - s - 5);
            o->len -= 5;
        }
        return 0;
    }
    if (proper && f->all_bytes && n <= CNB__MAX_STRING_EXT) {
        b[s] = CNB__TAG_STRING;
        cnb__put16(b + s + 1, (uint32_t)n);
        for (size_t i = 0; i < n; i++)
            b[s + 3 + i] = b[s + 5 + 2 * i + 1];
        o->len = s + 3 + n;
        return 0;
    }
    cnb__put32(b + s + 1, (uint32_t)n);
    if (proper) {
        if ((r = cnb__obuf_reserve(o, 1)))
            return r;
        o->buf[o->len++] = CNB__TAG_NIL;
    }
    return 0;
}

/* ---- the main loop ------------------------------------------------------- */

static int run(canon_t *c, const uint8_t *p)
{
    const uint8_t *end = c->end;
    cnb__obuf_t *o = c->o;
    cframe_t *f;
    size_t avail, n;
    uint8_t *w;
    int r;

parse:
    avail = (size_t)(end - p);
    if (avail < 1)
        return CNB_ETRUNC;
    switch (p[0]) {
    case CNB__TAG_SMALL_INTEGER:
    case CNB__TAG_INTEGER:
    case CNB__TAG_SMALL_BIG:
    case CNB__TAG_LARGE_BIG: {
        intval_t v;
        ssize_t len = read_int(p, end, &v);
        if (len < 0)
            return (int)len;
        if ((r = emit_int(o, &v)))
            return r;
        p += len;
        goto next;
    }
    case CNB__TAG_NEW_FLOAT:
        if (avail < 9)
            return CNB_ETRUNC;
        if (!cnb__float_bits_ok(cnb__get64(p + 1)))
            return CNB_EMALFORMED;
        if ((r = cnb__obuf_reserve(o, 9)))
            return r;
        memcpy(wr(o, 9), p, 9);
        p += 9;
        goto next;
    case CNB__TAG_FLOAT: {
        double d;
        uint64_t bits;
        if (avail < 32)
            return CNB_ETRUNC;
        if ((r = parse_float_ext(p + 1, &d)))
            return r;
        memcpy(&bits, &d, 8);
        if ((r = cnb__obuf_reserve(o, 9)))
            return r;
        w = wr(o, 9);
        w[0] = CNB__TAG_NEW_FLOAT;
        cnb__put64(w + 1, bits);
        p += 32;
        goto next;
    }
    case CNB__TAG_ATOM:
    case CNB__TAG_SMALL_ATOM:
    case CNB__TAG_ATOM_UTF8:
    case CNB__TAG_SMALL_ATOM_UTF8:
        if ((r = emit_atom(o, &p, end)))
            return r;
        goto next;
    case CNB__TAG_SMALL_TUPLE:
    case CNB__TAG_LARGE_TUPLE: {
        size_t hl = p[0] == CNB__TAG_SMALL_TUPLE ? 2 : 5;
        if (avail < hl)
            return CNB_ETRUNC;
        n = hl == 2 ? p[1] : cnb__get32(p + 1);
        p += hl;
        if ((r = cnb__obuf_reserve(o, 5)))
            return r;
        if (n <= 255) {
            w = wr(o, 2);
            w[0] = CNB__TAG_SMALL_TUPLE;
            w[1] = (uint8_t)n;
        } else {
            w = wr(o, 5);
            w[0] = CNB__TAG_LARGE_TUPLE;
            cnb__put32(w + 1, (uint32_t)n);
        }
        if (n == 0)
            goto next;
        if (n > avail - hl)
            return CNB_ETRUNC; /* every element takes at least one byte */
        if ((r = push(c, C_TUPLE, n)))
            return r;
        goto next;
    }
    case CNB__TAG_NIL:
        if ((r = cnb__obuf_reserve(o, 1)))
            return r;
        *wr(o, 1) = CNB__TAG_NIL;
        p++;
        goto next;
    case CNB__TAG_STRING:
        if (avail < 3)
            return CNB_ETRUNC;
        n = cnb__get16(p + 1);
        if (avail - 3 < n)
            return CNB_ETRUNC;
        if (n == 0) {
            if ((r = cnb__obuf_reserve(o, 1)))
                return r;
            *wr(o, 1) = CNB__TAG_NIL;
        } else {
            if ((r = cnb__obuf_reserve(o, 3 + n)))
                return r;
            memcpy(wr(o, 3 + n), p, 3 + n);
        }
        p += 3 + n;
        goto next;
    case CNB__TAG_LIST:
        if (avail < 5)
            return CNB_ETRUNC;
        n = cnb__get32(p + 1);
        p += 5;
        if (n > avail - 5)
            return CNB_ETRUNC;
        if ((r = push(c, C_LIST, n)))
            return r;
        f = &c->st[c->top - 1];
        f->all_bytes = 1;
        if ((r = cnb__obuf_reserve(o, 5)))
            return r;
        w = wr(o, 5);
        w[0] = CNB__TAG_LIST; /* count patched by finish_list */
        goto next;
    case CNB__TAG_BINARY:
        if (avail < 5)
            return CNB_ETRUNC;
        n = cnb__get32(p + 1);
        if (avail - 5 < n)
            return CNB_ETRUNC;
        if ((r = cnb__obuf_reserve(o, 5 + n)))
            return r;
        memcpy(wr(o, 5 + n), p, 5 + n);
        p += 5 + n;
        goto next;
    case CNB__TAG_BIT_BINARY: {
        if (avail < 6)
            return CNB_ETRUNC;
        n = cnb__get32(p + 1);
        unsigned bits = p[5];
        if ((bits == 0) != (n == 0) || bits > 8)
            return CNB_EMALFORMED;
        if (avail - 6 < n)
            return CNB_ETRUNC;
        if ((r = cnb__obuf_reserve(o, 6 + n)))
            return r;
        if (bits == 8 || n == 0) {
            w = wr(o, 5 + n);
            w[0] = CNB__TAG_BINARY;
            cnb__put32(w + 1, (uint32_t)n);
            memcpy(w + 5, p + 6, n);
        } else {
            w = wr(o, 6 + n);
            memcpy(w, p, 6 + n);
            w[5 + n] &= (uint8_t)(0xffu << (8 - bits));
        }
        p += 6 + n;
        goto next;
    }
    case CNB__TAG_MAP:
        if (avail < 5)
            return CNB_ETRUNC;
        n = cnb__get32(p + 1);
        if ((r = cnb__obuf_reserve(o, 5)))
            return r;
        memcpy(wr(o, 5), p, 5);
        p += 5;
        if (n == 0)
            goto next;
        if (n > (avail - 5) / 2)
            return CNB_ETRUNC;
        if ((r = push(c, C_MAP, (uint64_t)n * 2)))
            return r;
        f = &c->st[c->top - 1];
        f->count = n;
        f->base = c->noffs;
        goto next;
    case CNB__TAG_PID:
    case CNB__TAG_NEW_PID:
        if ((r = emit_pid(o, &p, end)))
            return r;
        goto next;
    case CNB__TAG_PORT:
    case CNB__TAG_NEW_PORT:
    case CNB__TAG_V4_PORT:
        if ((r = emit_port(o, &p, end)))
            return r;
        goto next;
    case CNB__TAG_REFERENCE:
    case CNB__TAG_NEW_REFERENCE:
    case CNB__TAG_NEWER_REFERENCE:
        if ((r = emit_ref(o, &p, end)))
            return r;
        goto next;
    case CNB__TAG_EXPORT: {
        intval_t v;
        ssize_t len;
        if ((r = cnb__obuf_reserve(o, 1)))
            return r;
        *wr(o, 1) = CNB__TAG_EXPORT;
        p++;
        if ((r = emit_atom(o, &p, end)) || (r = emit_atom(o, &p, end)))
            return r;
        if ((r = skip_empty_lists(&p, end)))
            return r;
        if ((len = read_int(p, end, &v)) < 0)
            return (int)len;
        /* OTP 25 takes any non-negative small and keeps its low 32 bits. */
        if (v.neg || !intval_is_small(&v))
            return CNB_EMALFORMED;
        uint32_t arity = (uint32_t)intval_mag64(&v);
        intval_t a = {0, NULL, 4, {0}};
        for (int i = 0; i < 4; i++)
            a.tmp[i] = (uint8_t)(arity >> (8 * i));
        a.dig = a.tmp;
        while (a.n && a.dig[a.n - 1] == 0)
            a.n--;
        if ((r = emit_int(o, &a)))
            return r;
        p += len;
        goto next;
    }
    case CNB__TAG_NEW_FUN: {
        if (avail < 30)
            return CNB_ETRUNC;
        uint32_t nfree = cnb__get32(p + 26);
        if ((r = cnb__obuf_reserve(o, 30)))
            return r;
        size_t size_at = o->len + 1;
        w = wr(o, 30);
        memcpy(w, p, 30); /* tag, Size (patched later), Arity, Uniq, Index, NumFree */
        p += 30;
        if ((r = emit_atom(o, &p, end)))
            return r;
        for (int i = 0; i < 2; i++) { /* OldIndex, OldUniq */
            intval_t v;
            if ((r = skip_empty_lists(&p, end)))
                return r;
            ssize_t len = read_int(p, end, &v);
            if (len < 0)
                return (int)len;
            if (!intval_is_small(&v))
                return CNB_EMALFORMED;
            if ((r = emit_int(o, &v)))
                return r;
            p += len;
        }
        if ((r = skip_empty_lists(&p, end)))
            return r;
        if (p >= end)
            return CNB_ETRUNC;
        if (p[0] != CNB__TAG_PID && p[0] != CNB__TAG_NEW_PID)
            return CNB_EMALFORMED;
        if ((r = emit_pid(o, &p, end)))
            return r;
        if (nfree > (size_t)(end - p))
            return CNB_ETRUNC;
        if ((r = push(c, C_FUN, nfree)))
            return r;
        c->st[c->top - 1].out_start = size_at;
        goto next;
    }
    default:
        /* ATOM_CACHE_REF, distribution headers, a nested compressed term, a
         * version byte inside a term, FUN_EXT (gone in OTP 23), unknown tags. */
        return CNB_EMALFORMED;
    }

next:
    if (c->top == 0)
        return p == end ? 0 : CNB_EMALFORMED;
    f = &c->st[c->top - 1];
    switch (f->kind) {
    case C_TUPLE:
        if (f->remaining) {
            f->remaining--;
            goto parse;
        }
        break;
    case C_MAP:
        if (f->remaining) {
            f->remaining--;
            if ((r = push_off(c, o->len)))
                return r;
            goto parse;
        }
        if ((r = finish_map(c, f)))
            return r;
        break;
    case C_FUN:
        if (f->remaining) {
            f->remaining--;
            goto parse;
        }
        if (o->len - f->out_start > UINT32_MAX)
            return CNB_ETOOBIG;
        cnb__put32(o->buf + f->out_start, (uint32_t)(o->len - f->out_start));
        break;
    case C_LIST:
        if (f->has_item) {
            if (o->len - f->item_start != 2 || o->buf[f->item_start] != CNB__TAG_SMALL_INTEGER)
                f->all_bytes = 0;
            f->has_item = 0;
        }
        if (f->in_tail) {
            if ((r = finish_list(c, f, 0)))
                return r;
            break;
        }
        if (f->remaining) {
            f->remaining--;
            f->count++;
            f->has_item = 1;
            f->item_start = o->len;
            goto parse;
        }
        if (p >= end)
            return CNB_ETRUNC;
        if (p[0] == CNB__TAG_LIST) {
            /* A list whose tail is a list: one longer list. */
            if ((size_t)(end - p) < 5)
                return CNB_ETRUNC;
            n = cnb__get32(p + 1);
            p += 5;
            if (n > (size_t)(end - p))
                return CNB_ETRUNC;
            f->remaining = n;
            goto next;
        }
        if (p[0] == CNB__TAG_STRING) {
            if ((size_t)(end - p) < 3)
                return CNB_ETRUNC;
            n = cnb__get16(p + 1);
            if ((size_t)(end - p) - 3 < n)
                return CNB_ETRUNC;
            if ((r = cnb__obuf_reserve(o, 2 * n)))
                return r;
            w = wr(o, 2 * n);
            for (size_t i = 0; i < n; i++) {
                w[2 * i] = CNB__TAG_SMALL_INTEGER;
                w[2 * i + 1] = p[3 + i];
            }
            f->count += n;
            p += 3 + n;
            if ((r = finish_list(c, f, 1)))
                return r;
            break;
        }
        if (p[0] == CNB__TAG_NIL) {
            p++;
            if ((r = finish_list(c, f, 1)))
                return r;
            break;
        }
        f->in_tail = 1;
        goto parse;
    }
    c->top--;
    goto next;
}

int cnb__term_canon_slow(const uint8_t *p, const uint8_t *end, const cnb__term_limits_t *lim,
                         cnb__obuf_t *o)
{
    canon_t c;
    int r;
    c.end = end;
    c.o = o;
    c.lim = lim;
    c.alloc = lim->alloc;
    c.st = c.inl;
    c.cap = C_INLINE_FRAMES;
    c.top = 0;
    c.offs = NULL;
    c.noffs = c.offs_cap = 0;
    r = run(&c, p);
    if (c.st != c.inl)
        cnb_free(c.alloc, c.st);
    cnb_free(c.alloc, c.offs);
    return r;
}
