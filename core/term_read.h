/* term_read.h: the one reader of the external term format (ETF): its tags,
 * spelled once, and cnb__term_head, which reads the next term's header with
 * every bound checked (inline, defined below). core/term_*.c, cnode/etf_check.c and nif/cnr_term.c
 * walk terms with it and keep only their own policy. A core-private header:
 * cnode/ and nif/ include it as "../core/term_read.h" (arrows cnode -> core,
 * nif -> core). Tests: tests/unit/test_term_read.c, tests/fuzz/fuzz_read.c. */
#ifndef CNB_TERM_READ_H
#define CNB_TERM_READ_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cnb_bytes.h"
#include "cnb_common.h"

/* External term format tags (erts erl_ext_dist.html). */
enum cnb__etf_tag {
    CNB__TAG_NEW_FLOAT = 70,
    CNB__TAG_BIT_BINARY = 77,
    CNB__TAG_COMPRESSED = 80,
    CNB__TAG_ATOM_CACHE_REF = 82,
    CNB__TAG_NEW_PID = 88,
    CNB__TAG_NEW_PORT = 89,
    CNB__TAG_NEWER_REFERENCE = 90,
    CNB__TAG_SMALL_INTEGER = 97,
    CNB__TAG_INTEGER = 98,
    CNB__TAG_FLOAT = 99,
    CNB__TAG_ATOM = 100,
    CNB__TAG_REFERENCE = 101,
    CNB__TAG_PORT = 102,
    CNB__TAG_PID = 103,
    CNB__TAG_SMALL_TUPLE = 104,
    CNB__TAG_LARGE_TUPLE = 105,
    CNB__TAG_NIL = 106,
    CNB__TAG_STRING = 107,
    CNB__TAG_LIST = 108,
    CNB__TAG_BINARY = 109,
    CNB__TAG_SMALL_BIG = 110,
    CNB__TAG_LARGE_BIG = 111,
    CNB__TAG_NEW_FUN = 112,
    CNB__TAG_EXPORT = 113,
    CNB__TAG_NEW_REFERENCE = 114,
    CNB__TAG_SMALL_ATOM = 115,
    CNB__TAG_MAP = 116,
    CNB__TAG_FUN = 117, /* FUN_EXT, gone in OTP 23: not read */
    CNB__TAG_ATOM_UTF8 = 118,
    CNB__TAG_SMALL_ATOM_UTF8 = 119,
    CNB__TAG_V4_PORT = 120,
    CNB__TAG_VERSION = 131,
};

/* A reference holds 1..5 words in OTP 25 (ei's erlang_ref holds 5). */
#define CNB__MAX_REF_WORDS 5u

/* NEW_FUN_EXT's fixed fields: tag, Size(4), Arity(1), Uniq(16), Index(4),
 * NumFree(4). Size counts itself and everything after it. */
#define CNB__FUN_HDR 30u
#define CNB__FUN_INDEX_AT 22u
#define CNB__FUN_NUMFREE_AT 26u

/* What cnb__term_head found at p. The term's own bytes are [p, p + size);
 * its children (if any) follow at p + size, one term after another. */
typedef struct cnb__term_head {
    uint8_t tag;
    uint8_t hdr;       /* bytes of the tag and its fixed fields (length, count,
                        * a big's sign, a bitstring's bit count); a pid's,
                        * port's or reference's node atom starts at p + hdr */
    size_t size;       /* bytes of this term, its children excluded */
    uint64_t n;        /* its length or count field: bytes (atoms, STRING,
                        * BINARY, BIT_BINARY, big digits), elements (tuples,
                        * LIST), pairs (MAP), words (references: REFERENCE is
                        * 1), free variables (NEW_FUN); 0 for the others */
    uint64_t children; /* terms that follow and belong to it: a tuple's
                        * elements; a LIST's elements and its tail (n + 1); a
                        * MAP's keys and values (2n); EXPORT's module,
                        * function, arity (3); NEW_FUN's module, OldIndex,
                        * OldUniq, pid and free variables (4 + n) */
    const uint8_t *data; /* the term's own data: an atom's text, STRING,
                          * BINARY, BIT_BINARY and big bytes, a float's 8
                          * (or 31) bytes, an integer's, a pid's, port's or
                          * reference's fields after the node atom */
} cnb__term_head_t;


/* 1 if the term's children can fit in what follows it (each takes at least
 * one byte), else 0. */
static inline int cnb__term_children_fit(const cnb__term_head_t *h, const uint8_t *p,
                                         const uint8_t *end)
{
    return h->children <= (uint64_t)(end - p) - h->size;
}

static inline int cnb__term_is_atom_tag(uint8_t tag)
{
    return tag == CNB__TAG_ATOM || tag == CNB__TAG_SMALL_ATOM || tag == CNB__TAG_ATOM_UTF8 ||
           tag == CNB__TAG_SMALL_ATOM_UTF8;
}

/* Latin-1 atom encodings (the others are UTF-8). */
static inline int cnb__term_atom_is_latin1(uint8_t tag)
{
    return tag == CNB__TAG_ATOM || tag == CNB__TAG_SMALL_ATOM;
}

/* 1 if [s, s + n) (an atom's text) is all ASCII: eight bytes at a time (the
 * last eight again), or two overlapping reads of four for 4..7 bytes. */
static inline int cnb__term_is_ascii(const uint8_t *s, size_t n)
{
    uint64_t acc = 0, w8;
    uint32_t a, b;
    if (n >= 8) {
        for (size_t i = 0; i + 8 <= n; i += 8) {
            memcpy(&w8, s + i, 8);
            acc |= w8;
        }
        memcpy(&w8, s + n - 8, 8);
        acc |= w8;
    } else if (n >= 4) {
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        acc = a | b;
    } else {
        for (size_t i = 0; i < n; i++)
            acc |= s[i];
    }
    return !(acc & UINT64_C(0x8080808080808080));
}

/* ---- the reader ---------------------------------------------------------- */

/* The reader is inlined into each walk: it is called for every term, and
 * each caller switches on the tag again, which the compiler folds. */
#define CNB__ALWAYS_INLINE static inline __attribute__((always_inline))

/* Reads the node atom of a pid, port or reference at q: its length in *size.
 * Returns 0, CNB_ETRUNC or CNB_EMALFORMED (not an atom). */
CNB__ALWAYS_INLINE int cnb__term_node_atom(const uint8_t *q, const uint8_t *end, size_t *size)
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

/* The text of the node atom at q of a pid, port or reference whose header
 * the reader has read (so the atom is known to be whole): its bytes at *s,
 * the count returned. */
static inline size_t cnb__term_node_text(const uint8_t *q, const uint8_t **s)
{
    if (q[0] == CNB__TAG_SMALL_ATOM || q[0] == CNB__TAG_SMALL_ATOM_UTF8) {
        *s = q + 2;
        return q[1];
    }
    *s = q + 3;
    return cnb__get16(q + 1);
}

/* The bytes after the node atom of a pid, port or old reference: id, serial,
 * creation; id, creation; or word, creation (old creations take 1 byte). */
static inline size_t cnb__term_id_size(uint8_t tag)
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

/* Fills *h for a term of the tag tag, hdr header bytes, a node atom of node
 * bytes and own bytes after it, once [p, p + hdr + node) is known to be
 * inside avail. The tag is a constant at every call, so that a caller's own
 * switch on h->tag right after the reader's folds into it. */
CNB__ALWAYS_INLINE int cnb__term_done(const uint8_t *p, size_t avail, cnb__term_head_t *h,
                                      uint8_t tag, size_t hdr, size_t node, size_t own,
                                      uint64_t n, uint64_t children)
{
    if (avail - hdr - node < own)
        return CNB_ETRUNC;
    h->tag = tag;
    h->hdr = (uint8_t)hdr;
    h->n = n;
    h->children = children;
    h->data = p + hdr + node;
    h->size = hdr + node + own;
    return 0;
}

/* What a count or length field counts. */
enum { CNB__COUNT_BYTES, CNB__COUNT_TERMS, CNB__COUNT_LIST, CNB__COUNT_PAIRS };

/* A term of hdr header bytes whose count or length field (width 1, 2 or 4
 * bytes) follows its tag: own bytes, elements, a list's elements and tail,
 * or a map's pairs. */
CNB__ALWAYS_INLINE int cnb__term_counted(const uint8_t *p, size_t avail, cnb__term_head_t *h,
                                         uint8_t tag, size_t hdr, int width, int what)
{
    uint64_t n;
    if (avail < hdr)
        return CNB_ETRUNC;
    n = width == 1 ? p[1] : width == 2 ? cnb__get16(p + 1) : cnb__get32(p + 1);
    switch (what) {
    case CNB__COUNT_BYTES:
        return cnb__term_done(p, avail, h, tag, hdr, 0, (size_t)n, n, 0);
    case CNB__COUNT_TERMS:
        return cnb__term_done(p, avail, h, tag, hdr, 0, 0, n, n);
    case CNB__COUNT_LIST:
        return cnb__term_done(p, avail, h, tag, hdr, 0, 0, n, n + 1);
    default:
        return cnb__term_done(p, avail, h, tag, hdr, 0, 0, n, 2 * n);
    }
}

/* A pid, port or reference: hdr header bytes, the node atom, own bytes. */
CNB__ALWAYS_INLINE int cnb__term_ids(const uint8_t *p, const uint8_t *end, cnb__term_head_t *h,
                                     uint8_t tag, size_t hdr, size_t own, uint64_t words)
{
    size_t node;
    int r = cnb__term_node_atom(p + hdr, end, &node);
    return r ? r : cnb__term_done(p, (size_t)(end - p), h, tag, hdr, node, own, words, 0);
}

/* A NEW_REFERENCE or NEWER_REFERENCE: count, node, creation (1 or 4 bytes),
 * words. */
CNB__ALWAYS_INLINE int cnb__term_ref(const uint8_t *p, const uint8_t *end, cnb__term_head_t *h,
                                     uint8_t tag, size_t creation)
{
    size_t n;
    if ((size_t)(end - p) < 3)
        return CNB_ETRUNC;
    n = cnb__get16(p + 1);
    if (n > CNB__MAX_REF_WORDS)
        return CNB_EMALFORMED;
    return cnb__term_ids(p, end, h, tag, 3, creation + 4 * n, n);
}

/* One case of cnb__term_head: a term of fixed size (tag and own bytes) with
 * children fixed in number; a term with a count or length field. */
#define CNB__HEAD_FIXED(T, own, children) \
    case T:                               \
        return cnb__term_done(p, avail, h, T, 1, 0, own, 0, children)
#define CNB__HEAD_COUNTED(T, hdr, width, what) \
    case T:                                    \
        return cnb__term_counted(p, avail, h, T, hdr, width, what)
#define CNB__HEAD_IDS(T)                                          \
    case T:                                                       \
        return cnb__term_ids(p, end, h, T, 1, cnb__term_id_size(T), \
                             T == CNB__TAG_REFERENCE)

/* Reads the header of the term at p, with every field it needs inside
 * [p, end): the tag, the length and count fields and the own bytes they
 * announce (for a pid, port or reference also the node atom, which must be
 * an atom, and the fields after it). It does not check that the children fit,
 * nor any value (atom text, creation, float bits, NEW_FUN's Size): that is
 * the caller's policy. Returns 0 and fills *h; CNB_ETRUNC if the term's own
 * bytes run past end (end <= p included); CNB_EMALFORMED for a tag it does
 * not read (COMPRESSED, ATOM_CACHE_REF, VERSION, FUN_EXT, unknown), a node
 * that is not an atom, or a reference of more than CNB__MAX_REF_WORDS words.
 * On an error *h is meaningless. Inline: the canonicaliser, the canonical
 * check and term order call it for every term, and each caller switches on
 * the tag again, which the compiler folds into this switch (every case
 * stores a constant tag). */
CNB__ALWAYS_INLINE int cnb__term_head(const uint8_t *p, const uint8_t *end, cnb__term_head_t *h)
{
    size_t avail = (size_t)(end - p), n;
    if (p >= end)
        return CNB_ETRUNC;
    switch (p[0]) {
        CNB__HEAD_FIXED(CNB__TAG_SMALL_INTEGER, 1, 0);
        CNB__HEAD_FIXED(CNB__TAG_INTEGER, 4, 0);
        CNB__HEAD_FIXED(CNB__TAG_NEW_FLOAT, 8, 0);
        CNB__HEAD_FIXED(CNB__TAG_FLOAT, 31, 0);
        CNB__HEAD_FIXED(CNB__TAG_NIL, 0, 0);
        CNB__HEAD_FIXED(CNB__TAG_EXPORT, 0, 3);
        CNB__HEAD_COUNTED(CNB__TAG_SMALL_ATOM, 2, 1, CNB__COUNT_BYTES);
        CNB__HEAD_COUNTED(CNB__TAG_SMALL_ATOM_UTF8, 2, 1, CNB__COUNT_BYTES);
        CNB__HEAD_COUNTED(CNB__TAG_SMALL_TUPLE, 2, 1, CNB__COUNT_TERMS);
        CNB__HEAD_COUNTED(CNB__TAG_SMALL_BIG, 3, 1, CNB__COUNT_BYTES); /* length, sign */
        CNB__HEAD_COUNTED(CNB__TAG_ATOM, 3, 2, CNB__COUNT_BYTES);
        CNB__HEAD_COUNTED(CNB__TAG_ATOM_UTF8, 3, 2, CNB__COUNT_BYTES);
        CNB__HEAD_COUNTED(CNB__TAG_STRING, 3, 2, CNB__COUNT_BYTES);
        CNB__HEAD_COUNTED(CNB__TAG_LARGE_TUPLE, 5, 4, CNB__COUNT_TERMS);
        CNB__HEAD_COUNTED(CNB__TAG_LIST, 5, 4, CNB__COUNT_LIST);
        CNB__HEAD_COUNTED(CNB__TAG_MAP, 5, 4, CNB__COUNT_PAIRS);
        CNB__HEAD_COUNTED(CNB__TAG_BINARY, 5, 4, CNB__COUNT_BYTES);
        CNB__HEAD_COUNTED(CNB__TAG_BIT_BINARY, 6, 4, CNB__COUNT_BYTES); /* length, bits */
        CNB__HEAD_COUNTED(CNB__TAG_LARGE_BIG, 6, 4, CNB__COUNT_BYTES);  /* length, sign */
        CNB__HEAD_IDS(CNB__TAG_PID);
        CNB__HEAD_IDS(CNB__TAG_NEW_PID);
        CNB__HEAD_IDS(CNB__TAG_PORT);
        CNB__HEAD_IDS(CNB__TAG_NEW_PORT);
        CNB__HEAD_IDS(CNB__TAG_V4_PORT);
        CNB__HEAD_IDS(CNB__TAG_REFERENCE);
    case CNB__TAG_NEW_REFERENCE:
        return cnb__term_ref(p, end, h, CNB__TAG_NEW_REFERENCE, 1);
    case CNB__TAG_NEWER_REFERENCE:
        return cnb__term_ref(p, end, h, CNB__TAG_NEWER_REFERENCE, 4);
    case CNB__TAG_NEW_FUN:
        if (avail < CNB__FUN_HDR)
            return CNB_ETRUNC;
        n = cnb__get32(p + CNB__FUN_NUMFREE_AT);
        return cnb__term_done(p, avail, h, CNB__TAG_NEW_FUN, CNB__FUN_HDR, 0, 0, n,
                              4 + (uint64_t)n);
    default:
        return CNB_EMALFORMED;
    }
}

#undef CNB__HEAD_FIXED
#undef CNB__HEAD_COUNTED
#undef CNB__HEAD_IDS

#endif /* CNB_TERM_READ_H */
