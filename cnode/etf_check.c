/* etf_check.c: see etf_check.h. The wire's policy on top of core's term reader
 * (core/term_read.h). Tests: tests/unit/test_frame.c, tests/fuzz/fuzz_read.c. */
#include "etf_check.h"

#include "buf.h"
#include "../core/term_read.h"

/* ei decodes an atom into a buffer of MAXATOMLEN_UTF8 (255 * 4 + 1) bytes;
 * Erlang atoms hold at most 255 characters. */
#define ATOM_MAX_LATIN1 255u
#define ATOM_MAX_UTF8 1020u

/* An atom of this tag and n bytes (cnb__term_head's n) is no longer than ei
 * decodes. */
static int atom_fits(uint8_t tag, uint64_t n)
{
    return n <= (cnb__term_atom_is_latin1(tag) ? ATOM_MAX_LATIN1 : ATOM_MAX_UTF8);
}

/* The node atom of a pid, port or reference whose header h was read at
 * term (the reader has checked it is an atom inside the term). */
static int node_fits(const cnb__term_head_t *h, const uint8_t *term)
{
    const uint8_t *text;
    size_t n = cnb__term_node_text(term + h->hdr, &text);
    return atom_fits(term[h->hdr], n);
}

enum want { W_ATOM, W_INT, W_SMALL_INT, W_PID };

static int is_wanted(enum want w, uint8_t tag)
{
    switch (w) {
    case W_ATOM:
        return cnb__term_is_atom_tag(tag);
    case W_INT: /* what ei_decode_long reads in a fun */
        return tag == CNB__TAG_SMALL_INTEGER || tag == CNB__TAG_INTEGER;
    case W_SMALL_INT:
        return tag == CNB__TAG_SMALL_INTEGER;
    default:
        return tag == CNB__TAG_NEW_PID || tag == CNB__TAG_PID;
    }
}

/* Skips one term of the type w (a field of EXPORT_EXT or NEW_FUN_EXT) at
 * p[*i], within [p, p+len). Returns 0 or a negative code. */
static int skip_typed(const uint8_t *p, size_t len, size_t *i, enum want w)
{
    cnb__term_head_t h;
    int rc;
    if (*i >= len)
        return CNB_ETRUNC;
    if (!is_wanted(w, p[*i]))
        return CNB_EMALFORMED;
    if ((rc = cnb__term_head(p + *i, p + len, &h)))
        return rc;
    if (w == W_ATOM && !atom_fits(h.tag, h.n))
        return CNB_EMALFORMED;
    if (w == W_PID && !node_fits(&h, p + *i))
        return CNB_EMALFORMED;
    *i += h.size;
    return 0;
}

/* The policy of the wire on one term whose header h was read at p[i]: sets
 * *children (terms nested in it, read next) and *end (a fun: where its free
 * variables must end) and returns 0, or a negative code. */
static int check_one(const uint8_t *p, size_t len, size_t i, const cnb__term_head_t *h,
                     uint64_t *children, size_t *end, size_t *next)
{
    const uint8_t *t = p + i;
    size_t j = i + h->size;
    *children = 0;
    *end = 0;
    switch (h->tag) {
    case CNB__TAG_ATOM:
    case CNB__TAG_SMALL_ATOM:
    case CNB__TAG_ATOM_UTF8:
    case CNB__TAG_SMALL_ATOM_UTF8:
        if (!atom_fits(h->tag, h->n))
            return CNB_EMALFORMED;
        break;
    case CNB__TAG_NEW_PID:
    case CNB__TAG_PID:
    case CNB__TAG_NEW_PORT:
    case CNB__TAG_PORT:
    case CNB__TAG_V4_PORT:
    case CNB__TAG_REFERENCE:
    case CNB__TAG_NEW_REFERENCE:
    case CNB__TAG_NEWER_REFERENCE:
        if (!node_fits(h, t))
            return CNB_EMALFORMED;
        break;
    case CNB__TAG_SMALL_TUPLE:
    case CNB__TAG_LARGE_TUPLE:
    case CNB__TAG_LIST:
    case CNB__TAG_MAP:
        *children = h->children;
        break;
    case CNB__TAG_BIT_BINARY:
        if (t[5] < 1 || t[5] > 8 || h->n == 0)
            return CNB_EMALFORMED;
        break;
    case CNB__TAG_NEW_FUN: {
        /* Size counts itself and everything after: module, OldIndex,
         * OldUniq, pid, then NumFree free variables. */
        size_t n = cnb__get32(t + 1);
        if (n < CNB__FUN_HDR - 1)
            return CNB_EMALFORMED;
        if (len - i - 1 < n)
            return CNB_ETRUNC;
        *end = i + 1 + n;
        /* Within the fun's own bytes, so a bad inner length cannot take us
         * past them. */
        if (skip_typed(p, *end, &j, W_ATOM) || skip_typed(p, *end, &j, W_INT) ||
            skip_typed(p, *end, &j, W_INT) || skip_typed(p, *end, &j, W_PID))
            return CNB_EMALFORMED;
        *children = h->n;
        if (h->n == 0 && j != *end)
            return CNB_EMALFORMED;
        break;
    }
    case CNB__TAG_EXPORT: { /* module, function, arity (read here, typed) */
        int rc;
        if ((rc = skip_typed(p, len, &j, W_ATOM)) || (rc = skip_typed(p, len, &j, W_ATOM)) ||
            (rc = skip_typed(p, len, &j, W_SMALL_INT)))
            return rc;
        break;
    }
    default:
        break;
    }
    *next = j;
    return 0;
}

/* One open container: terms still to read in it and, for a fun, where its
 * free variables must end (0: no such check). */
typedef struct frame {
    uint64_t left;
    size_t end;
} frame_t;

#define FAIL(code)    \
    do {              \
        ret = (code); \
        goto out;     \
    } while (0)

long cnb__etf_skip_limit(const uint8_t *p, size_t len, unsigned max_depth)
{
    frame_t inline_stack[32];
    frame_t *st = inline_stack;
    size_t cap = sizeof(inline_stack) / sizeof(inline_stack[0]);
    size_t sp = 0;
    size_t i = 0;
    uint64_t pending = 1; /* terms still to read, over all open containers */
    long ret;
    int rc;
    if (max_depth < 1)
        return CNB_EDEPTH;
    st[sp++] = (frame_t){.left = 1, .end = 0};
    while (sp > 0) {
        frame_t *top = &st[sp - 1];
        if (top->left == 0) {
            if (top->end && i != top->end)
                FAIL(CNB_EMALFORMED);
            sp--;
            continue;
        }
        if (pending > len - i) /* every term takes at least one byte */
            FAIL(i >= len ? CNB_ETRUNC : CNB_EMALFORMED);
        top->left--;
        pending--;
        uint64_t children = 0; /* terms nested in this one, read next */
        size_t end = 0;
        if (i >= len)
            FAIL(CNB_ETRUNC);
        /* Atom cache references, compressed terms, old funs and a version
         * byte the reader refuses; old floats (NEW_FLOATS is mandatory) the
         * wire does. */
        if (p[i] == CNB__TAG_FLOAT)
            FAIL(CNB_EMALFORMED);
        cnb__term_head_t h;
        if ((rc = cnb__term_head(p + i, p + len, &h)) ||
            (rc = check_one(p, len, i, &h, &children, &end, &i)))
            FAIL(rc);
        if (children == 0)
            continue;
        if (pending + children > len - i) /* as above: a byte per term */
            FAIL(i >= len ? CNB_ETRUNC : CNB_EMALFORMED);
        if (sp >= max_depth)
            FAIL(CNB_EDEPTH);
        if (sp == cap) {
            size_t ncap = cap * 2;
            frame_t *ns = malloc(ncap * sizeof(*ns));
            if (!ns)
                FAIL(CNB_ENOMEM);
            memcpy(ns, st, sp * sizeof(*st));
            if (st != inline_stack)
                free(st);
            st = ns;
            cap = ncap;
        }
        st[sp++] = (frame_t){.left = children, .end = end};
        pending += children;
    }
    ret = (long)i;
out:
    if (st != inline_stack)
        free(st);
    return ret;
}

long cnb__etf_skip(const uint8_t *p, size_t len)
{
    return cnb__etf_skip_limit(p, len, CNB_ETF_MAX_DEPTH);
}
