/* term_read.c: cnb__term_head, the one bounds-checked reader of an external
 * term format header (see term_read.h). Tests: tests/unit/test_term_read.c,
 * tests/fuzz/fuzz_read.c. */
#include "term_read.h"

/* Reads the node atom of a pid, port or reference at q: its length in *size.
 * Returns 0, CNB_ETRUNC or CNB_EMALFORMED (not an atom). */
static int node_atom(const uint8_t *q, const uint8_t *end, size_t *size)
{
    size_t avail = (size_t)(end - q);
    if (avail < 1)
        return CNB_ETRUNC;
    if (!cnb__term_is_atom_tag(q[0]))
        return CNB_EMALFORMED;
    if (q[0] == CNB__TAG_SMALL_ATOM || q[0] == CNB__TAG_SMALL_ATOM_UTF8) {
        if (avail < 2)
            return CNB_ETRUNC;
        *size = 2 + (size_t)q[1];
    } else {
        if (avail < 3)
            return CNB_ETRUNC;
        *size = 3 + (size_t)cnb__get16(q + 1);
    }
    return avail < *size ? CNB_ETRUNC : 0;
}

/* The bytes after the node atom of a pid, port or old reference: id, serial,
 * creation; id, creation; or word, creation (old creations take 1 byte). */
static size_t id_size(uint8_t tag)
{
    switch (tag) {
    case CNB__TAG_PID:
        return 9;
    case CNB__TAG_NEW_PID:
    case CNB__TAG_V4_PORT:
        return 12;
    case CNB__TAG_NEW_PORT:
        return 8;
    default: /* PORT, REFERENCE */
        return 5;
    }
}

int cnb__term_head(const uint8_t *p, const uint8_t *end, cnb__term_head_t *h)
{
    size_t avail, hdr, own = 0, node = 0;
    int id_fields = 0; /* pid, port, reference: a node atom, then `own` bytes */
    int r;
    if (p >= end)
        return CNB_ETRUNC;
    avail = (size_t)(end - p);
    h->tag = p[0];
    h->n = 0;
    h->children = 0;
    switch (p[0]) {
    case CNB__TAG_SMALL_INTEGER:
        hdr = 1;
        own = 1;
        break;
    case CNB__TAG_INTEGER:
        hdr = 1;
        own = 4;
        break;
    case CNB__TAG_NEW_FLOAT:
        hdr = 1;
        own = 8;
        break;
    case CNB__TAG_FLOAT:
        hdr = 1;
        own = 31;
        break;
    case CNB__TAG_NIL:
        hdr = 1;
        break;
    case CNB__TAG_EXPORT:
        hdr = 1;
        h->children = 3;
        break;
    case CNB__TAG_SMALL_ATOM:
    case CNB__TAG_SMALL_ATOM_UTF8:
    case CNB__TAG_SMALL_TUPLE:
    case CNB__TAG_SMALL_BIG:
        hdr = p[0] == CNB__TAG_SMALL_BIG ? 3 : 2;
        if (avail < hdr)
            return CNB_ETRUNC;
        h->n = p[1];
        if (p[0] == CNB__TAG_SMALL_TUPLE)
            h->children = h->n;
        else
            own = p[1];
        break;
    case CNB__TAG_ATOM:
    case CNB__TAG_ATOM_UTF8:
    case CNB__TAG_STRING:
        hdr = 3;
        if (avail < hdr)
            return CNB_ETRUNC;
        h->n = own = cnb__get16(p + 1);
        break;
    case CNB__TAG_LARGE_TUPLE:
    case CNB__TAG_LIST:
    case CNB__TAG_MAP:
    case CNB__TAG_BINARY:
    case CNB__TAG_BIT_BINARY:
    case CNB__TAG_LARGE_BIG:
        hdr = p[0] == CNB__TAG_BIT_BINARY || p[0] == CNB__TAG_LARGE_BIG ? 6 : 5;
        if (avail < hdr)
            return CNB_ETRUNC;
        h->n = cnb__get32(p + 1);
        if (p[0] == CNB__TAG_LARGE_TUPLE)
            h->children = h->n;
        else if (p[0] == CNB__TAG_LIST)
            h->children = h->n + 1;
        else if (p[0] == CNB__TAG_MAP)
            h->children = 2 * h->n;
        else
            own = (size_t)h->n;
        break;
    case CNB__TAG_NEW_FUN:
        hdr = CNB__FUN_HDR;
        if (avail < hdr)
            return CNB_ETRUNC;
        h->n = cnb__get32(p + CNB__FUN_NUMFREE_AT);
        h->children = 4 + h->n;
        break;
    case CNB__TAG_PID:
    case CNB__TAG_NEW_PID:
    case CNB__TAG_PORT:
    case CNB__TAG_NEW_PORT:
    case CNB__TAG_V4_PORT:
    case CNB__TAG_REFERENCE:
        hdr = 1;
        id_fields = 1;
        own = id_size(p[0]);
        h->n = p[0] == CNB__TAG_REFERENCE;
        break;
    case CNB__TAG_NEW_REFERENCE:
    case CNB__TAG_NEWER_REFERENCE:
        hdr = 3;
        if (avail < hdr)
            return CNB_ETRUNC;
        h->n = cnb__get16(p + 1);
        if (h->n > CNB__MAX_REF_WORDS)
            return CNB_EMALFORMED;
        id_fields = 1;
        own = (p[0] == CNB__TAG_NEW_REFERENCE ? 1 : 4) + 4 * (size_t)h->n; /* creation, words */
        break;
    default:
        return CNB_EMALFORMED;
    }
    if (avail < hdr)
        return CNB_ETRUNC;
    if (id_fields && (r = node_atom(p + hdr, end, &node)))
        return r;
    if (avail - hdr - node < own)
        return CNB_ETRUNC;
    h->hdr = (uint8_t)hdr;
    h->data = p + hdr + node;
    h->size = hdr + node + own;
    return 0;
}
