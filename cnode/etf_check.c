/* etf_check.c: see etf_check.h. Tests: tests/unit/test_frame.c. */
#include "etf_check.h"

#include "buf.h"

/* Skips an atom term at p[*i]; 0 or a negative code. */
static int skip_atom(const uint8_t *p, size_t len, size_t *i)
{
    if (*i >= len)
        return CNB_ETRUNC;
    uint8_t tag = p[(*i)++];
    size_t n;
    if (tag == 100 || tag == 118) {
        if (len - *i < 2)
            return CNB_ETRUNC;
        n = cnb__get16(p + *i);
        *i += 2;
    } else if (tag == 115 || tag == 119) {
        if (len - *i < 1)
            return CNB_ETRUNC;
        n = p[(*i)++];
    } else {
        return CNB_EMALFORMED;
    }
    if (len - *i < n)
        return CNB_ETRUNC;
    *i += n;
    return 0;
}

/* Skips a PID or NEW_PID term at p[*i], within [0, len). */
static int skip_pid(const uint8_t *p, size_t len, size_t *i)
{
    if (*i >= len || (p[*i] != 88 && p[*i] != 103))
        return CNB_EMALFORMED;
    size_t k = p[(*i)++] == 88 ? 12 : 9;
    int rc = skip_atom(p, len, i);
    if (rc)
        return rc;
    if (len - *i < k)
        return CNB_ETRUNC;
    *i += k;
    return 0;
}

/* Skips a SMALL_INTEGER or INTEGER term at p[*i], within [0, len). */
static int skip_int(const uint8_t *p, size_t len, size_t *i)
{
    if (*i >= len || (p[*i] != 97 && p[*i] != 98))
        return CNB_EMALFORMED;
    size_t k = p[(*i)++] == 97 ? 1 : 4;
    if (len - *i < k)
        return CNB_ETRUNC;
    *i += k;
    return 0;
}

/* The fixed part of a NEW_FUN after its Size (at p[*i]): Arity, Uniq, Index,
 * NumFree, Module, OldIndex, OldUniq, Pid, all before `end` (where Size says
 * the fun ends), since ei decodes them without looking at Size. */
static int skip_fun_head(const uint8_t *p, size_t end, size_t *i, uint32_t *nfree)
{
    if (end - *i < 1 + 16 + 4 + 4)
        return CNB_EMALFORMED;
    *nfree = cnb__get32(p + *i + 1 + 16 + 4);
    *i += 1 + 16 + 4 + 4;
    int rc;
    if ((rc = skip_atom(p, end, i)) || (rc = skip_int(p, end, i)) || (rc = skip_int(p, end, i)) ||
        (rc = skip_pid(p, end, i)))
        return rc == CNB_ETRUNC ? CNB_EMALFORMED : rc; /* the fun's own Size is too small */
    return 0;
}

/* Funs whose free variables hold funs, nested deeper than this, are refused:
 * checking that each one's variables end where its Size says needs a stack. */
#define FUN_DEPTH 64

#define NEED(k)                     \
    do {                            \
        if (len - i < (size_t)(k))  \
            return CNB_ETRUNC;      \
    } while (0)

long cnb__etf_skip(const uint8_t *p, size_t len)
{
    size_t i = 0;
    uint64_t pending = 1; /* terms still to skip */
    /* Open funs: where each ends, and `pending` once its variables are done. */
    struct {
        size_t end;
        uint64_t level;
    } funs[FUN_DEPTH];
    int nfuns = 0;
    for (;;) {
        while (nfuns > 0 && pending == funs[nfuns - 1].level) {
            if (i != funs[nfuns - 1].end)
                return CNB_EMALFORMED;
            nfuns--;
        }
        if (pending == 0)
            break;
        if (pending > len - i) /* every term takes at least one byte */
            return i >= len ? CNB_ETRUNC : CNB_EMALFORMED;
        pending--;
        NEED(1);
        uint8_t tag = p[i++];
        int rc;
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
        case 99: /* FLOAT */
            NEED(31);
            i += 31;
            break;
        case 100:
        case 115:
        case 118:
        case 119:
            i--;
            if ((rc = skip_atom(p, len, &i)))
                return rc;
            break;
        case 88: /* NEW_PID: node, id, serial, creation */
        case 103: /* PID: node, id, serial, creation(1) */
            if ((rc = skip_atom(p, len, &i)))
                return rc;
            NEED(tag == 88 ? 12 : 9);
            i += tag == 88 ? 12 : 9;
            break;
        case 89:  /* NEW_PORT */
        case 102: /* PORT */
        case 120: /* V4_PORT */
            if ((rc = skip_atom(p, len, &i)))
                return rc;
            {
                size_t k = tag == 89 ? 8 : tag == 102 ? 5 : 12;
                NEED(k);
                i += k;
            }
            break;
        case 101: /* REFERENCE: node, id(4), creation(1) */
            if ((rc = skip_atom(p, len, &i)))
                return rc;
            NEED(5);
            i += 5;
            break;
        case 90:  /* NEWER_REFERENCE: Len(2) node creation(4) ids */
        case 114: /* NEW_REFERENCE: Len(2) node creation(1) ids */
        {
            NEED(2);
            size_t words = cnb__get16(p + i);
            i += 2;
            if (words > 5)
                return CNB_EMALFORMED;
            if ((rc = skip_atom(p, len, &i)))
                return rc;
            size_t k = (tag == 90 ? 4 : 1) + 4 * words;
            NEED(k);
            i += k;
            break;
        }
        case 104: /* SMALL_TUPLE */
            NEED(1);
            pending += p[i++];
            break;
        case 105: /* LARGE_TUPLE */
            NEED(4);
            pending += cnb__get32(p + i);
            i += 4;
            break;
        case 116: /* MAP */
            NEED(4);
            pending += 2 * (uint64_t)cnb__get32(p + i);
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
            pending += (uint64_t)cnb__get32(p + i) + 1;
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
                return CNB_EMALFORMED;
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
        case 112: /* NEW_FUN: Size counts itself and everything after */
        {
            NEED(4);
            size_t n = cnb__get32(p + i);
            if (n < 4 + 1 + 16 + 4 + 4)
                return CNB_EMALFORMED;
            NEED(n);
            if (nfuns == FUN_DEPTH)
                return CNB_EMALFORMED;
            size_t end = i + n;
            uint32_t nfree;
            i += 4;
            if ((rc = skip_fun_head(p, end, &i, &nfree)))
                return rc;
            /* The free variables follow, as terms, up to exactly `end`. */
            funs[nfuns].end = end;
            funs[nfuns].level = pending;
            nfuns++;
            pending += nfree;
            break;
        }
        case 113: /* EXPORT: module, function, arity */
            pending += 3;
            break;
        default: /* 82 atom cache ref, 80 compressed, 131 version, unknown */
            return CNB_EMALFORMED;
        }
    }
    return (long)i;
}
