/* term_read.h: the one reader of the external term format (ETF): its tags,
 * spelled once, and cnb__term_head, which reads the next term's header with
 * every bound checked. core/term_*.c, cnode/etf_check.c and nif/cnr_term.c
 * walk terms with it and keep only their own policy. A core-private header:
 * cnode/ and nif/ include it as "../core/term_read.h" (arrows cnode -> core,
 * nif -> core). Tests: tests/unit/test_term_read.c, tests/fuzz/fuzz_read.c. */
#ifndef CNB_TERM_READ_H
#define CNB_TERM_READ_H

#include <stddef.h>
#include <stdint.h>

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

/* Reads the header of the term at p, with every field it needs inside
 * [p, end): the tag, the length and count fields and the own bytes they
 * announce (for a pid, port or reference also the node atom, which must be
 * an atom, and the fields after it). It does not check that the children fit,
 * nor any value (atom text, creation, float bits, NEW_FUN's Size): that is
 * the caller's policy. Returns 0 and fills *h; CNB_ETRUNC if the term's own
 * bytes run past end (end <= p included); CNB_EMALFORMED for a tag it does
 * not read (COMPRESSED, ATOM_CACHE_REF, VERSION, FUN_EXT, unknown), a node
 * that is not an atom, or a reference of more than CNB__MAX_REF_WORDS words.
 * On an error *h is meaningless. */
int cnb__term_head(const uint8_t *p, const uint8_t *end, cnb__term_head_t *h);

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

#endif /* CNB_TERM_READ_H */
