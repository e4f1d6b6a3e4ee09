/* term_canon_emit.c: the writers of the canonicaliser (term_canon.c): each
 * leaf term, EXPORT_EXT and a fun's fixed fields read with core's term reader
 * (term_read.h) and written as term_to_binary(T, [{minor_version, 2},
 * deterministic]) writes them on OTP 25.
 * Tests: tests/unit/test_term.c, tests/integration/term_prop_tests.erl. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strtod_l, newlocale */
#endif
#include "term_int.h"

#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

static inline uint8_t *wr(cnb__obuf_t *o, size_t n)
{
    uint8_t *w = o->buf + o->len;
    o->len += n;
    return w;
}

/* Integers in any of the four encodings (term_int.h). */
typedef cnb__intval_t intval_t;

static int is_int_tag(uint8_t tag)
{
    return tag == CNB__TAG_SMALL_INTEGER || tag == CNB__TAG_INTEGER ||
           tag == CNB__TAG_SMALL_BIG || tag == CNB__TAG_LARGE_BIG;
}

/* Reads an integer term at p into *v and its encoded length into *len.
 * Returns 0 or a negative code (CNB_EMALFORMED for another type, before any
 * length is looked at). */
static int read_int(const uint8_t *p, const uint8_t *end, intval_t *v, size_t *len)
{
    cnb__term_head_t h;
    int r;
    if (p < end && !is_int_tag(p[0]))
        return CNB_EMALFORMED;
    if ((r = cnb__term_head(p, end, &h)))
        return r;
    cnb__intval_of(p, &h, v);
    *len = h.size;
    return 0;
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

int cnb__canon_atom(cnb__obuf_t *o, const cnb__term_head_t *h)
{
    size_t n = (size_t)h->n, outn;
    int latin1 = cnb__term_atom_is_latin1(h->tag), r;
    const uint8_t *s = h->data;
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
    return 0;
}

/* Reads an atom at *pp (CNB_EMALFORMED for another type, before any length
 * is looked at), writes it, advances *pp. */
static int emit_atom(cnb__obuf_t *o, const uint8_t **pp, const uint8_t *end)
{
    cnb__term_head_t h;
    int r;
    if (*pp < end && !cnb__term_is_atom_tag(**pp))
        return CNB_EMALFORMED;
    if ((r = cnb__term_head(*pp, end, &h)) || (r = cnb__canon_atom(o, &h)))
        return r;
    *pp += h.size;
    return 0;
}

/* The creation of an old (1 byte, 0..3) or new (4 bytes) pid/port/ref at q
 * (inside the term: the reader checked its bounds). */
static int read_creation(const uint8_t *q, int tiny, uint32_t *cre)
{
    if (!tiny) {
        *cre = cnb__get32(q);
        return 0;
    }
    if (q[0] > CNB__TINY_CREATION_MAX)
        return CNB_EMALFORMED;
    *cre = q[0];
    return 0;
}

/* PID_EXT or NEW_PID_EXT at *pp, written as NEW_PID_EXT. */
static int emit_pid(cnb__obuf_t *o, const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp, *node;
    cnb__term_head_t h;
    uint32_t cre;
    int r;
    if ((r = cnb__term_head(p, end, &h)))
        return r;
    if ((r = cnb__obuf_reserve(o, 1)))
        return r;
    *wr(o, 1) = CNB__TAG_NEW_PID;
    node = p + h.hdr;
    if ((r = emit_atom(o, &node, end)))
        return r;
    if ((r = read_creation(h.data + 8, h.tag == CNB__TAG_PID, &cre)))
        return r;
    if ((r = cnb__obuf_reserve(o, 12)))
        return r;
    uint8_t *w = wr(o, 12);
    memcpy(w, h.data, 8); /* id, serial */
    cnb__put32(w + 8, cre);
    *pp = p + h.size;
    return 0;
}

/* PORT_EXT, NEW_PORT_EXT or V4_PORT_EXT at *pp (header h), written as
 * NEW_PORT_EXT, or V4_PORT_EXT for an id beyond 28 bits. */
static int emit_port(cnb__obuf_t *o, const uint8_t **pp, const cnb__term_head_t *h)
{
    const uint8_t *p = *pp, *node = p + h->hdr;
    size_t idlen = h->tag == CNB__TAG_V4_PORT ? 8 : 4;
    uint64_t id = idlen == 8 ? cnb__get64(h->data) : cnb__get32(h->data);
    uint32_t cre;
    int r;
    size_t tag_at = o->len;
    if ((r = cnb__obuf_reserve(o, 1)))
        return r;
    wr(o, 1);
    if ((r = emit_atom(o, &node, p + h->size)))
        return r;
    if ((r = read_creation(h->data + idlen, h->tag == CNB__TAG_PORT, &cre)))
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
    *pp = p + h->size;
    return 0;
}

/* REFERENCE_EXT, NEW_REFERENCE_EXT or NEWER_REFERENCE_EXT at *pp (header h),
 * written as NEWER_REFERENCE_EXT. */
static int emit_ref(cnb__obuf_t *o, const uint8_t **pp, const cnb__term_head_t *h)
{
    const uint8_t *p = *pp, *node = p + h->hdr, *ids;
    size_t words = (size_t)h->n;
    uint32_t cre;
    int r;
    /* OTP 25 reads a word past a 0-word reference, so no valid input has
     * one. */
    if (words == 0)
        return CNB_EMALFORMED;
    if ((r = cnb__obuf_reserve(o, 3)))
        return r;
    uint8_t *w = wr(o, 3);
    w[0] = CNB__TAG_NEWER_REFERENCE;
    cnb__put16(w + 1, (uint32_t)words);
    if ((r = emit_atom(o, &node, p + h->size)))
        return r;
    if (h->tag == CNB__TAG_REFERENCE) { /* word, then a tiny creation */
        ids = h->data;
        r = read_creation(h->data + 4, 1, &cre);
    } else { /* creation, then the words */
        int tiny = h->tag == CNB__TAG_NEW_REFERENCE;
        ids = h->data + (tiny ? 1 : 4);
        r = read_creation(h->data, tiny, &cre);
    }
    if (r)
        return r;
    /* The old encodings carry an 18-bit first word; OTP 25 rejects more. */
    if (h->tag != CNB__TAG_NEWER_REFERENCE && cnb__get32(ids) >= CNB__OLD_REF_WORD0_LIMIT)
        return CNB_EMALFORMED;
    if ((r = cnb__obuf_reserve(o, 4 + 4 * words)))
        return r;
    w = wr(o, 4 + 4 * words);
    cnb__put32(w, cre);
    memcpy(w + 4, ids, 4 * words);
    *pp = p + h->size;
    return 0;
}

/* Where binary_to_term reads a whole term and then checks its type (export
 * arity, a fun's OldIndex, OldUniq and creator pid), a LIST_EXT of no elements
 * in front stands for its tail, the value itself. */
static int skip_empty_lists(const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp;
    while (p < end && p[0] == CNB__TAG_LIST) {
        cnb__term_head_t h;
        int r = cnb__term_head(p, end, &h);
        if (r)
            return r;
        if (h.n != 0)
            break;
        p += h.size;
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

/* Skips the digits at buf[*i]; 0 if there is none. */
static int skip_digits(const char *buf, size_t *i)
{
    if (!is_digit(buf[*i]))
        return 0;
    while (is_digit(buf[*i]))
        (*i)++;
    return 1;
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
    if (!skip_digits(buf, &i))
        return CNB_EMALFORMED;
    if (buf[i] != '.' && buf[i] != ',')
        return CNB_EMALFORMED;
    buf[i++] = '.';
    if (!skip_digits(buf, &i))
        return CNB_EMALFORMED;
    if (buf[i] == 'e' || buf[i] == 'E') {
        i++;
        if (buf[i] == '+' || buf[i] == '-')
            i++;
        if (!skip_digits(buf, &i))
            return CNB_EMALFORMED;
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


/* ---- the entry points ---------------------------------------------------- */

int cnb__canon_leaf(cnb__obuf_t *o, const uint8_t **pp, const uint8_t *end,
                    const cnb__term_head_t *h)
{
    const uint8_t *p = *pp;
    size_t n = (size_t)h->n;
    uint8_t *w;
    int r;
    switch (h->tag) {
    case CNB__TAG_SMALL_INTEGER:
    case CNB__TAG_INTEGER:
    case CNB__TAG_SMALL_BIG:
    case CNB__TAG_LARGE_BIG: {
        intval_t v;
        cnb__intval_of(p, h, &v);
        if ((r = emit_int(o, &v)))
            return r;
        break;
    }
    case CNB__TAG_NEW_FLOAT:
        if (!cnb__float_bits_ok(cnb__get64(h->data)))
            return CNB_EMALFORMED;
        if ((r = cnb__obuf_reserve(o, 9)))
            return r;
        memcpy(wr(o, 9), p, 9);
        break;
    case CNB__TAG_FLOAT: {
        double d;
        uint64_t bits;
        if ((r = parse_float_ext(h->data, &d)))
            return r;
        memcpy(&bits, &d, 8);
        if ((r = cnb__obuf_reserve(o, 9)))
            return r;
        w = wr(o, 9);
        w[0] = CNB__TAG_NEW_FLOAT;
        cnb__put64(w + 1, bits);
        break;
    }
    case CNB__TAG_ATOM:
    case CNB__TAG_SMALL_ATOM:
    case CNB__TAG_ATOM_UTF8:
    case CNB__TAG_SMALL_ATOM_UTF8:
        if ((r = cnb__canon_atom(o, h)))
            return r;
        break;
    case CNB__TAG_NIL:
    case CNB__TAG_STRING: /* "" is [] */
    case CNB__TAG_BINARY:
        if (n == 0 && h->tag != CNB__TAG_BINARY) {
            if ((r = cnb__obuf_reserve(o, 1)))
                return r;
            *wr(o, 1) = CNB__TAG_NIL;
        } else {
            if ((r = cnb__obuf_reserve(o, h->size)))
                return r;
            memcpy(wr(o, h->size), p, h->size);
        }
        break;
    case CNB__TAG_BIT_BINARY: {
        unsigned bits = p[5];
        if ((bits == 0) != (n == 0) || bits > 8)
            return CNB_EMALFORMED;
        if ((r = cnb__obuf_reserve(o, 6 + n)))
            return r;
        if (bits == 8 || n == 0) {
            w = wr(o, 5 + n);
            w[0] = CNB__TAG_BINARY;
            cnb__put32(w + 1, (uint32_t)n);
            memcpy(w + 5, h->data, n);
        } else {
            w = wr(o, 6 + n);
            memcpy(w, p, 6 + n);
            w[5 + n] &= (uint8_t)(0xffu << (8 - bits));
        }
        break;
    }
    case CNB__TAG_PID:
    case CNB__TAG_NEW_PID:
        return emit_pid(o, pp, end);
    case CNB__TAG_PORT:
    case CNB__TAG_NEW_PORT:
    case CNB__TAG_V4_PORT:
        return emit_port(o, pp, h);
    case CNB__TAG_REFERENCE:
    case CNB__TAG_NEW_REFERENCE:
    case CNB__TAG_NEWER_REFERENCE:
        return emit_ref(o, pp, h);
    default:
        return CNB_EMALFORMED;
    }
    *pp = p + h->size;
    return 0;
}

int cnb__canon_export(cnb__obuf_t *o, const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp + 1;
    intval_t v;
    size_t len;
    int r;
    if ((r = cnb__obuf_reserve(o, 1)))
        return r;
    *wr(o, 1) = CNB__TAG_EXPORT;
    if ((r = emit_atom(o, &p, end)) || (r = emit_atom(o, &p, end)))
        return r;
    if ((r = skip_empty_lists(&p, end)))
        return r;
    if ((r = read_int(p, end, &v, &len)))
        return r;
    /* OTP 25 takes any non-negative small and keeps its low 32 bits. An
     * arity past 255 (no function has one) is refused: OTP 25 and 29 make
     * a fun of arity 0 from it, and OTP 27.3's VM crashes when it encodes
     * that fun (term_prop_tests, edge_cases). */
    if (v.neg || !intval_is_small(&v))
        return CNB_EMALFORMED;
    uint32_t arity = (uint32_t)intval_mag64(&v);
    if (arity > CNB__MAX_ARITY)
        return CNB_EMALFORMED;
    intval_t a = {0, NULL, 4, {0}};
    for (int i = 0; i < 4; i++)
        a.tmp[i] = (uint8_t)(arity >> (8 * i));
    a.dig = a.tmp;
    while (a.n && a.dig[a.n - 1] == 0)
        a.n--;
    if ((r = emit_int(o, &a)))
        return r;
    *pp = p + len;
    return 0;
}

int cnb__canon_fun(cnb__obuf_t *o, const uint8_t **pp, const uint8_t *end,
                   const cnb__term_head_t *h, size_t *size_at)
{
    const uint8_t *p = *pp;
    int r;
    if ((r = cnb__obuf_reserve(o, CNB__FUN_HDR)))
        return r;
    *size_at = o->len + 1;
    /* tag, Size (patched once the free variables are written), Arity, Uniq,
     * Index, NumFree */
    memcpy(wr(o, CNB__FUN_HDR), p, CNB__FUN_HDR);
    p += h->size;
    if ((r = emit_atom(o, &p, end)))
        return r;
    for (int i = 0; i < 2; i++) { /* OldIndex, OldUniq */
        intval_t v;
        size_t len;
        if ((r = skip_empty_lists(&p, end)) || (r = read_int(p, end, &v, &len)))
            return r;
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
    if (h->n > (size_t)(end - p)) /* every free variable takes a byte */
        return CNB_ETRUNC;
    *pp = p;
    return 0;
}
