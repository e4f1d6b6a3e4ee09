/* etf_check.c: see etf_check.h. Tests: tests/unit/test_frame.c. */
#include "etf_check.h"

#include "buf.h"

/* ei decodes an atom into a buffer of MAXATOMLEN_UTF8 (255 * 4 + 1) bytes;
 * Erlang atoms hold at most 255 characters. */
#define ATOM_MAX_LATIN1 255u
#define ATOM_MAX_UTF8 1020u

/* Skips an atom term at p[*i]; 0 or a negative code. */
static int skip_atom(const uint8_t *p, size_t len, size_t *i)
{
    if (*i >= len)
        return CNB_ETRUNC;
    uint8_t tag = p[(*i)++];
    size_t n;
    if (tag == 100 || tag == 118) { /* ATOM, ATOM_UTF8: 2-byte length */
        if (len - *i < 2)
            return CNB_ETRUNC;
        n = cnb__get16(p + *i);
        *i += 2;
    } else if (tag == 115 || tag == 119) { /* SMALL_ATOM(_UTF8): 1-byte length */
        if (len - *i < 1)
            return CNB_ETRUNC;
        n = p[(*i)++];
    } else {
        return CNB_EMALFORMED;
    }
    if (n > ((tag == 118 || tag == 119) ? ATOM_MAX_UTF8 : ATOM_MAX_LATIN1))
        return CNB_EMALFORMED;
    if (len - *i < n)
        return CNB_ETRUNC;
    *i += n;
    return 0;
}

/* Skips SMALL_INTEGER or INTEGER (what ei_decode_long reads in a fun). */
static int skip_int(const uint8_t *p, size_t len, size_t *i)
{
    if (*i >= len)
        return CNB_ETRUNC;
    size_t k = p[*i] == 97 ? 1 : p[*i] == 98 ? 4 : 0;
    if (!k)
        return CNB_EMALFORMED;
    if (len - *i - 1 < k)
        return CNB_ETRUNC;
    *i += 1 + k;
    return 0;
}

/* Skips a pid (NEW_PID or PID). */
static int skip_pid(const uint8_t *p, size_t len, size_t *i)
{
    if (*i >= len)
        return CNB_ETRUNC;
    uint8_t tag = p[(*i)++];
    if (tag != 88 && tag != 103)
        return CNB_EMALFORMED;
    int rc = skip_atom(p, len, i);
    if (rc)
        return rc;
    size_t k = tag == 88 ? 12 : 9; /* id, serial, creation (4 or 1) */
    if (len - *i < k)
        return CNB_ETRUNC;
    *i += k;
    return 0;
}

/* One open container: terms still to read in it and, for a fun, where its
 * free variables must end (0: no such check). */
typedef struct frame {
    uint64_t left;
    size_t end;
} frame_t;

#define NEED(k)                          \
    do {                                 \
        if (len - i < (size_t)(k)) {     \
            ret = CNB_ETRUNC;            \
            goto out;                    \
        }                                \
    } while (0)
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
        NEED(1);
        uint8_t tag = p[i++];
        switch (tag) {
        case 97: /* SMALL_INTEGER */
            NEED(1);
            i += 1;
            break;
        case 98: /* INTEGER */
            NEED(4);
            i += 4;
            break;
        case 70: /* NEW_FLOAT */
            NEED(8);
            i += 8;
            break;
        case 100:
        case 115:
        case 118:
        case 119:
            i--;
            if ((rc = skip_atom(p, len, &i)))
                FAIL(rc);
            break;
        case 88:  /* NEW_PID: node, id, serial, creation */
        case 103: /* PID: node, id, serial, creation(1) */
            i--;
            if ((rc = skip_pid(p, len, &i)))
                FAIL(rc);
            break;
        case 89:  /* NEW_PORT */
        case 102: /* PORT */
        case 120: /* V4_PORT */
            if ((rc = skip_atom(p, len, &i)))
                FAIL(rc);
            {
                size_t k = tag == 89 ? 8 : tag == 102 ? 5 : 12;
                NEED(k);
                i += k;
            }
            break;
        case 101: /* REFERENCE: node, id(4), creation(1) */
            if ((rc = skip_atom(p, len, &i)))
                FAIL(rc);
            NEED(5);
            i += 5;
            break;
        case 90:  /* NEWER_REFERENCE: Len(2) node creation(4) ids */
        case 114: /* NEW_REFERENCE: Len(2) node creation(1) ids */
        {
            NEED(2);
            size_t words = cnb__get16(p + i);
            i += 2;
            if (words > 5) /* ei's erlang_ref holds 5 */
                FAIL(CNB_EMALFORMED);
            if ((rc = skip_atom(p, len, &i)))
                FAIL(rc);
            size_t k = (tag == 90 ? 4 : 1) + 4 * words;
            NEED(k);
            i += k;
            break;
        }
        case 104: /* SMALL_TUPLE */
            NEED(1);
            children = p[i++];
            break;
        case 105: /* LARGE_TUPLE */
            NEED(4);
            children = cnb__get32(p + i);
            i += 4;
            break;
        case 116: /* MAP */
            NEED(4);
            children = 2 * (uint64_t)cnb__get32(p + i);
            i += 4;
            break;
        case 106: /* NIL */
            break;
        case 107: /* STRING */
        {
            NEED(2);
            size_t n = cnb__get16(p + i);
            i += 2;
            NEED(n);
            i += n;
            break;
        }
        case 108: /* LIST: elements and tail */
            NEED(4);
            children = (uint64_t)cnb__get32(p + i) + 1;
            i += 4;
            break;
        case 109: /* BINARY */
        {
            NEED(4);
            size_t n = cnb__get32(p + i);
            i += 4;
            NEED(n);
            i += n;
            break;
        }
        case 77: /* BIT_BINARY */
        {
            NEED(5);
            size_t n = cnb__get32(p + i);
            uint8_t bits = p[i + 4];
            i += 5;
            if (bits < 1 || bits > 8 || n == 0)
                FAIL(CNB_EMALFORMED);
            NEED(n);
            i += n;
            break;
        }
        case 110: /* SMALL_BIG */
        {
            NEED(2);
            size_t n = p[i];
            i += 2;
            NEED(n);
            i += n;
            break;
        }
        case 111: /* LARGE_BIG */
        {
            NEED(5);
            size_t n = cnb__get32(p + i);
            i += 5;
            NEED(n);
            i += n;
            break;
        }
        case 112: /* NEW_FUN: Size (counts itself and everything after),
                   * Arity, Uniq(16), Index, NumFree, Module, OldIndex,
                   * OldUniq, Pid, then NumFree free variables */
        {
            NEED(4 + 1 + 16 + 4 + 4);
            size_t n = cnb__get32(p + i);
            if (n < 4 + 1 + 16 + 4 + 4)
                FAIL(CNB_EMALFORMED);
            NEED(n);
            end = i + n;
            children = cnb__get32(p + i + 4 + 1 + 16 + 4);
            i += 4 + 1 + 16 + 4 + 4;
            /* Within the fun's own bytes, so a bad inner length cannot take
             * us past them. */
            if (skip_atom(p, end, &i) || skip_int(p, end, &i) || skip_int(p, end, &i) ||
                skip_pid(p, end, &i))
                FAIL(CNB_EMALFORMED);
            if (children == 0 && i != end)
                FAIL(CNB_EMALFORMED);
            break;
        }
        case 113: /* EXPORT: module, function, arity (read here, typed) */
            if ((rc = skip_atom(p, len, &i)) || (rc = skip_atom(p, len, &i)))
                FAIL(rc);
            NEED(2);
            if (p[i] != 97)
                FAIL(CNB_EMALFORMED);
            i += 2;
            break;
        default: /* 82 atom cache ref, 80 compressed, 99 old float, 117 old
                  * fun, 131 version, unknown */
            FAIL(CNB_EMALFORMED);
        }
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
