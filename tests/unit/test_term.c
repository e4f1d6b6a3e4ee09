/* test_term.c: Check unit tests of core/term (cnb_term.h). The expected bytes
 * were captured from OTP 25: term_to_binary(binary_to_term(In),
 * [{minor_version, 2}, deterministic]). Built by the Makefile into
 * build/tests/test_term; the random differential tests against a live BEAM are
 * in tests/integration/term_prop_tests.erl. */
#include <check.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnb_term.h"
/* White-box checks of the general path against the fast path. */
#include "../../core/term_int.h"
#include "check_run.h"

/* ---- helpers --------------------------------------------------------------- */

typedef struct bytes {
    uint8_t *p;
    size_t n;
} bytes_t;

static bytes_t unhex(const char *hex)
{
    size_t n = strlen(hex) / 2;
    bytes_t b = {malloc(n ? n : 1), n};
    ck_assert_ptr_nonnull(b.p);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        ck_assert_int_eq(sscanf(hex + 2 * i, "%2x", &v), 1);
        b.p[i] = (uint8_t)v;
    }
    return b;
}

static bytes_t cat(const void *a, size_t an, const void *b, size_t bn)
{
    bytes_t r = {malloc(an + bn + 1), an + bn};
    ck_assert_ptr_nonnull(r.p);
    if (an)
        memcpy(r.p, a, an);
    if (bn)
        memcpy(r.p + an, b, bn);
    return r;
}

/* Canonicalises into a fresh buffer; returns the length or the error. */
static ssize_t canon(const bytes_t *in, bytes_t *out, const cnb_term_opts_t *opts)
{
    ssize_t n = cnb_term_canonical(in->p, in->n, NULL, 0, opts);
    out->p = NULL;
    out->n = 0;
    if (n < 0)
        return n;
    out->p = malloc((size_t)n);
    ck_assert_ptr_nonnull(out->p);
    ssize_t m = cnb_term_canonical(in->p, in->n, out->p, (size_t)n, opts);
    ck_assert_int_eq(m, n);
    out->n = (size_t)n;
    return n;
}

static int cmp_hex(const char *a, const char *b, int *order)
{
    bytes_t x = unhex(a), y = unhex(b);
    int r = cnb_term_compare(x.p, x.n, y.p, y.n, order);
    free(x.p);
    free(y.p);
    return r;
}

/* ---- encoding variants ------------------------------------------------------- */

typedef struct vector {
    const char *name, *in, *out;
} vector_t;

static const vector_t vectors[] = {
    {"SMALL_INTEGER_EXT", "83612a", "83612a"},
    {"no version byte", "612a", "83612a"},
    {"INTEGER_EXT small value", "83620000002a", "83612a"},
    {"INTEGER_EXT 256", "836200000100", "836200000100"},
    {"INTEGER_EXT -1", "8362ffffffff", "8362ffffffff"},
    {"SMALL_BIG_EXT 42", "836e01002a", "83612a"},
    {"SMALL_BIG_EXT zero-padded", "836e04002a000000", "83612a"},
    {"SMALL_BIG_EXT -2^31", "836e040100000080", "836280000000"},
    {"SMALL_BIG_EXT -2^31-1", "836e040101000080", "836e040101000080"},
    {"SMALL_BIG_EXT 2^31", "836e040000000080", "836e040000000080"},
    {"SMALL_BIG_EXT empty", "836e0000", "836100"},
    {"SMALL_BIG_EXT negative zero", "836e02010000", "836100"},
    {"SMALL_BIG_EXT sign 255", "836e01ff05", "8362fffffffb"},
    {"SMALL_BIG_EXT 2^64 padded", "836e0c00000000000000000001000000", "836e0900000000000000000001"},
    {"LARGE_BIG_EXT 5", "836f000000010005", "836105"},
    {"LARGE_BIG_EXT 2^2040", "836f000001000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001", "836f000001000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001"},
    {"SMALL_BIG_EXT 2^2032 as 255 bytes", "836eff00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001", "836eff00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001"},
    {"NEW_FLOAT_EXT 1.5", "83463ff8000000000000", "83463ff8000000000000"},
    {"NEW_FLOAT_EXT -0.0", "83468000000000000000", "83468000000000000000"},
    {"FLOAT_EXT 1.5", "8363312e3530303030303030303030303030303030303030652b30300000000000", "83463ff8000000000000"},
    {"FLOAT_EXT -0.0", "83632d302e3030303030303030303030303030303030303030652b303000000000", "83468000000000000000"},
    {"FLOAT_EXT comma", "8363322e3500000000000000000000000000000000000000000000000000000000", "83464004000000000000"},
    {"FLOAT_EXT plus sign", "83632b312e30653100000000000000000000000000000000000000000000000000", "83464024000000000000"},
    {"FLOAT_EXT underflow", "8363312e30652d3430300000000000000000000000000000000000000000000000", "83460000000000000000"},
    {"FLOAT_EXT denormal", "8363342e3934303635363435383431323436353434313737652d33323400000000", "83460000000000000001"},
    {"FLOAT_EXT garbage after NUL", "8363312e350078797a000000000000000000000000000000000000000000000000", "83463ff8000000000000"},
    {"FLOAT_EXT 0.1", "8363312e3030303030303030303030303030303035353531652d30310000000000", "83463fb999999999999a"},
    {"ATOM_EXT", "83640003616263", "837703616263"},
    {"SMALL_ATOM_EXT", "837303616263", "837703616263"},
    {"ATOM_UTF8_EXT short", "83760003616263", "837703616263"},
    {"SMALL_ATOM_UTF8_EXT", "837703616263", "837703616263"},
    {"ATOM_EXT latin1", "83640002e4ff", "837704c3a4c3bf"},
    {"SMALL_ATOM_EXT latin1", "837302e4ff", "837704c3a4c3bf"},
    {"ATOM_EXT empty", "83640000", "837700"},
    {"ATOM_EXT 255 latin1 chars", "836400ffe4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4", "837601fec3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4"},
    {"ATOM_UTF8_EXT 255 chars", "837601fec3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4", "837601fec3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4c3a4"},
    {"SMALL_TUPLE_EXT", "8368026400056361636865612a", "83680277056361636865612a"},
    {"LARGE_TUPLE_EXT small", "83690000000273056361636865620000002a", "83680277056361636865612a"},
    {"LARGE_TUPLE_EXT empty", "836900000000", "836800"},
    {"NIL", "836a", "836a"},
    {"STRING_EXT empty", "836b0000", "836a"},
    {"STRING_EXT", "836b0003010203", "836b0003010203"},
    {"LIST_EXT of bytes", "836c000000036101610261036a", "836b0003010203"},
    {"LIST_EXT bytes via INTEGER_EXT", "836c0000000262000000016e0100026a", "836b00020102"},
    {"LIST_EXT non-byte", "836c00000002610162000001006a", "836c00000002610162000001006a"},
    {"LIST_EXT improper", "836c00000002610161026103", "836c00000002610161026103"},
    {"LIST_EXT empty then NIL", "836c000000006a", "836a"},
    {"LIST_EXT empty then 5", "836c000000006105", "836105"},
    {"LIST_EXT tail STRING_EXT", "836c0000000161056b000107", "836b00020507"},
    {"LIST_EXT tail STRING_EXT non-byte head", "836c00000001640001616b00020708", "836c00000003770161610761086a"},
    {"LIST_EXT tail LIST_EXT", "836c00000001640001616c00000001640001626a", "836c000000027701617701626a"},
    {"LIST_EXT tail empty STRING_EXT", "836c0000000161016b0000", "836b000101"},
    {"LIST_EXT nested string", "836c000000016c0000000161016a6a", "836c000000016b0001016a"},
    {"BINARY_EXT", "836d00000003010203", "836d00000003010203"},
    {"BIT_BINARY_EXT", "834d0000000103ff", "834d0000000103e0"},
    {"BIT_BINARY_EXT 8 bits", "834d00000002080102", "836d000000020102"},
    {"BIT_BINARY_EXT empty", "834d0000000000", "836d00000000"},
    {"MAP_EXT unsorted", "8374000000047701616103463ff0000000000000770162610261016101770161", "837400000004610177016161026101463ff00000000000007701627701616103"},
    {"MAP_EXT empty", "837400000000", "837400000000"},
    {"MAP_EXT nested", "8374000000026400017a74000000026102610061016100640001616a", "8374000000027701616a77017a74000000026101610061026100"},
    {"MAP_EXT tuple keys", "83740000000368026101463ff0000000000000610168026101610261026802463ff000000000000061016103", "837400000003680261016102610268026101463ff000000000000061016802463ff000000000000061016103"},
    {"PID_EXT", "8367640003614062000000050000000602", "83587703614062000000050000000600000002"},
    {"NEW_PID_EXT", "835877036140620000000500000006ffffffff", "835877036140620000000500000006ffffffff"},
    {"REFERENCE_EXT", "83656400036140620000000502", "835a000177036140620000000200000005"},
    {"NEW_REFERENCE_EXT", "8372000364000361406201000000010000000200000003", "835a0003770361406200000001000000010000000200000003"},
    {"NEWER_REFERENCE_EXT", "835a00057703614062000000090000000100000002000000030000000400000005", "835a00057703614062000000090000000100000002000000030000000400000005"},
    {"PORT_EXT", "83666400036140620000000502", "835977036140620000000500000002"},
    {"PORT_EXT big id", "8366640003614062ffffffff02", "8378770361406200000000ffffffff00000002"},
    {"NEW_PORT_EXT", "835977036140620fffffff00000001", "835977036140620fffffff00000001"},
    {"NEW_PORT_EXT 2^28", "835977036140621000000000000001", "83787703614062000000001000000000000001"},
    {"V4_PORT_EXT small id", "83787703614062000000000000000500000001", "835977036140620000000500000001"},
    {"V4_PORT_EXT", "83787703614062010000000000000000000001", "83787703614062010000000000000000000001"},
    {"EXPORT_EXT", "83716400056c697374736400036d61706102", "837177056c6973747377036d61706102"},
    {"EXPORT_EXT INTEGER_EXT arity", "837177016d7701666200000002", "837177016d7701666102"},
    {"EXPORT_EXT arity 2^32+5", "837177016d7701666e05000500000001", "837177016d7701666105"},
    {"EXPORT_EXT arity behind LIST_EXT 0", "837177016d7701666c000000006103", "837177016d7701666103"},
    {"NEW_FUN_EXT", "837000000000010000000000000000000000000000006300000003000000016400016d62000000076e0100056764000361406200000001000000000064000178", "8370000000390100000000000000000000000000000063000000030000000177016d61076105587703614062000000010000000000000000770178"},
    {"COMPRESSED", "835000000071789ccb604a6160cd48cdc9c9cf664861a7030000159e0673", "836802770568656c6c6f6b006407070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707"},
    {"COMPRESSED no version byte", "5000000071789ccb604a6160cd48cdc9c9cf664861a7030000159e0673", "836802770568656c6c6f6b006407070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707"},
    {"COMPRESSED non-canonical inside", "83500000000a789ccb616060604a644c64ca020007c8019e", "836b00020102"},
};
#define NVECTORS (sizeof(vectors) / sizeof(vectors[0]))

START_TEST(test_vector)
{
    const vector_t *v = &vectors[_i];
    bytes_t in = unhex(v->in), want = unhex(v->out), got, again;

    ck_assert_msg(canon(&in, &got, NULL) == (ssize_t)want.n, "%s: length %zd, want %zu", v->name,
                  cnb_term_canonical(in.p, in.n, NULL, 0, NULL), want.n);
    ck_assert_msg(memcmp(got.p, want.p, want.n) == 0, "%s: wrong bytes", v->name);

    /* Idempotent, and the fast path (already canonical) agrees. */
    ck_assert_int_eq(canon(&want, &again, NULL), (ssize_t)want.n);
    ck_assert_int_eq(memcmp(again.p, want.p, want.n), 0);
    ck_assert_int_eq(cnb__term_is_canonical(want.p + 1, want.p + want.n, 1000, NULL), 1);

    /* The general path gives the same bytes on canonical input. */
    cnb__term_limits_t lim;
    cnb__term_limits(NULL, &lim);
    uint8_t stack[64];
    cnb__obuf_t o = {stack, 0, sizeof(stack), 0, SIZE_MAX, NULL};
    ck_assert_int_eq(cnb__term_canon_slow(want.p + 1, want.p + want.n, &lim, &o), 0);
    ck_assert_uint_eq(o.len, want.n - 1);
    ck_assert_int_eq(memcmp(o.buf, want.p + 1, o.len), 0);
    if (o.owned)
        free(o.buf);

    /* Equal terms hash equal, with or without the version byte. */
    ck_assert_uint_eq(cnb_term_hash(got.p, got.n), cnb_term_hash(want.p, want.n));
    ck_assert_uint_eq(cnb_term_hash(want.p, want.n), cnb_term_hash(want.p + 1, want.n - 1));

    /* The allocating variant. */
    void *ap;
    size_t an;
    ck_assert_int_eq(cnb_term_canonical_alloc(in.p, in.n, &ap, &an, NULL), 0);
    ck_assert_uint_eq(an, want.n);
    ck_assert_int_eq(memcmp(ap, want.p, an), 0);
    free(ap);

    /* A buffer one byte short, and one exactly right (caller's buffer used as
     * scratch by the general path). */
    uint8_t *small = malloc(want.n);
    ck_assert_int_eq(cnb_term_canonical(in.p, in.n, small, want.n - 1, NULL), CNB_ENOSPC);
    ck_assert_int_eq(cnb_term_canonical(in.p, in.n, small, want.n, NULL), (ssize_t)want.n);
    ck_assert_int_eq(memcmp(small, want.p, want.n), 0);
    free(small);

    /* Compares equal to its canonical form. */
    int order = 2;
    ck_assert_int_eq(cnb_term_compare(got.p, got.n, want.p, want.n, &order), 0);
    ck_assert_int_eq(order, 0);

    free(in.p);
    free(want.p);
    free(got.p);
    free(again.p);
}
END_TEST

/* Every proper prefix of a valid encoding is truncated input. */
START_TEST(test_truncated_prefixes)
{
    const vector_t *v = &vectors[_i];
    bytes_t in = unhex(v->in);
    for (size_t k = 0; k < in.n; k++) {
        ssize_t r = cnb_term_canonical(in.p, k, NULL, 0, NULL);
        /* A bare version byte followed by nothing, or the first bytes of a
         * term: always CNB_ETRUNC. */
        ck_assert_msg(r == CNB_ETRUNC, "%s: prefix %zu/%zu gives %s", v->name, k, in.n,
                      cnb_errname((int)r));
    }
    free(in.p);
}
END_TEST

/* ---- errors -------------------------------------------------------------------- */

typedef struct bad {
    const char *name, *in;
    int err;
} bad_t;

static const bad_t bads[] = {
    {"trailing byte", "83610100", CNB_EMALFORMED},
    {"two terms", "836101610a", CNB_EMALFORMED},
    {"version byte twice", "8383610a", CNB_EMALFORMED},
    {"ATOM_CACHE_REF", "835200", CNB_EMALFORMED},
    {"distribution header", "834400", CNB_EMALFORMED},
    {"FUN_EXT (removed in OTP 23)", "837500000000", CNB_EMALFORMED},
    {"LOCAL_EXT (OTP 26)", "8379", CNB_EMALFORMED},
    {"internal atom index (tag 75)", "834b0153", CNB_EMALFORMED},
    {"unknown tag 0", "8300", CNB_EMALFORMED},
    {"unknown tag 255", "83ff", CNB_EMALFORMED},
    {"NaN", "83467ff8000000000000", CNB_EMALFORMED},
    {"infinity", "83467ff0000000000000", CNB_EMALFORMED},
    {"FLOAT_EXT overflow", "8363312e3565343030000000000000000000000000000000000000000000000000",
     CNB_EMALFORMED},
    {"FLOAT_EXT leading space", "836320312e35000000000000000000000000000000000000000000000000000000",
     CNB_EMALFORMED},
    {"FLOAT_EXT no fraction", "8363312e0000000000000000000000000000000000000000000000000000000000",
     CNB_EMALFORMED},
    {"FLOAT_EXT no NUL in 31 bytes",
     "83632d312e30303030303030303030303030303030303030303030303030303030", CNB_EMALFORMED},
    {"FLOAT_EXT empty exponent", "8363312e3565000000000000000000000000000000000000000000000000000000",
     CNB_EMALFORMED},
    {"ATOM_EXT of 256 bytes", NULL, CNB_EMALFORMED}, /* built in the test */
    {"SMALL_ATOM_UTF8_EXT bad UTF-8", "837701e4", CNB_EMALFORMED},
    {"SMALL_ATOM_UTF8_EXT overlong", "837702c080", CNB_EMALFORMED},
    {"SMALL_ATOM_UTF8_EXT overlong 3 bytes", "837703e08080", CNB_EMALFORMED},
    {"SMALL_ATOM_UTF8_EXT surrogate", "837703eda080", CNB_EMALFORMED},
    {"SMALL_ATOM_UTF8_EXT above U+10FFFF", "837704f4908080", CNB_EMALFORMED},
    {"BIT_BINARY_EXT 9 bits", "834d000000010901", CNB_EMALFORMED},
    {"BIT_BINARY_EXT 0 bits", "834d000000010001", CNB_EMALFORMED},
    {"BIT_BINARY_EXT empty with bits", "834d0000000003", CNB_EMALFORMED},
    {"MAP_EXT duplicate key", "837400000002610161026200000001610a", CNB_EMALFORMED},
    {"MAP_EXT 0.0 and -0.0", "8374000000024600000000000000006102468000000000000000610a",
     CNB_EMALFORMED},
    {"PID_EXT creation 4", "83676400036140620000000500000006" "04", CNB_EMALFORMED},
    {"PID_EXT node not an atom", "8367610100000005000000060000", CNB_EMALFORMED},
    {"REFERENCE_EXT first word >= 2^18", "8365640003614062" "00040000" "02", CNB_EMALFORMED},
    {"NEW_REFERENCE_EXT 0 words", "837200006400036140620200", CNB_EMALFORMED},
    {"NEWER_REFERENCE_EXT 0 words", "835a0000770361406200000002", CNB_EMALFORMED},
    {"NEWER_REFERENCE_EXT 6 words",
     "835a000677036140620000000200000001000000010000000100000001000000010000000100",
     CNB_EMALFORMED},
    {"PORT_EXT creation 7", "83666400036140620000000507", CNB_EMALFORMED},
    {"EXPORT_EXT negative arity", "83716400016164000162" "62ffffffff", CNB_EMALFORMED},
    {"EXPORT_EXT arity 2^59", "83716400016164000162" "6e08000000000000000008", CNB_EMALFORMED},
    /* No function has an arity past 255; OTP 27.3's VM crashes on such a fun. */
    {"EXPORT_EXT arity 256", "83716400016164000162" "62" "00000100", CNB_EMALFORMED},
    {"EXPORT_EXT canonical arity 256", "8371770161770162" "62" "00000100", CNB_EMALFORMED},
    {"EXPORT_EXT arity 2^31-1", "83716400016164000162" "62" "7fffffff", CNB_EMALFORMED},
    {"EXPORT_EXT atom module required", "8371610161016102", CNB_EMALFORMED},
    {"NEW_FUN_EXT creator not a pid",
     "837000000000010000000000000000000000000000006300000003000000006400016d62000000076e010005"
     "6101",
     CNB_EMALFORMED},
    {"COMPRESSED size 0", "835000000000789c030000000001", CNB_EMALFORMED},
    {"COMPRESSED nested", NULL, CNB_EMALFORMED},      /* built in the test */
    {"COMPRESSED size too small", NULL, CNB_EZLIB},   /* built in the test */
    {"COMPRESSED size too large", NULL, CNB_EZLIB},   /* built in the test */
    {"COMPRESSED corrupt", NULL, CNB_EZLIB},          /* built in the test */
    {"COMPRESSED trailing", NULL, CNB_EMALFORMED},    /* built in the test */
    {"COMPRESSED over max_decompressed", NULL, CNB_ETOOBIG}, /* built in the test */
    {"LIST_EXT count beyond input", "836cffffffff6a", CNB_ETRUNC},
    {"tuple arity beyond input", "8369ffffffff", CNB_ETRUNC},
    {"BINARY_EXT length beyond input", "836dffffffff00", CNB_ETRUNC},
    {"empty input", "", CNB_ETRUNC},
    {"version byte only", "83", CNB_ETRUNC},
};
#define NBADS (sizeof(bads) / sizeof(bads[0]))

/* zlib-compressed bodies for the COMPRESSED cases (made with zlib.compress
 * in Python/Erlang, default level). */
static bytes_t compressed_case(const char *name, cnb_term_opts_t *opts)
{
    /* {hello,[7,...]} compressed by term_to_binary/2: 0x71 bytes inside. */
    bytes_t good = unhex("835000000071789ccb604a6160cd48cdc9c9cf664861a7030000159e0673");
    if (!strcmp(name, "COMPRESSED nested")) {
        free(good.p);
        /* 80, size 3, zlib(97 5) inside another 80. */
        return unhex("83500000000f789c0b60606060aa98e39dc2cac07092211d0016f5034b");
    }
    if (!strcmp(name, "COMPRESSED size too small"))
        good.p[5] = 0x70;
    else if (!strcmp(name, "COMPRESSED size too large"))
        good.p[5] = 0x72;
    else if (!strcmp(name, "COMPRESSED corrupt"))
        good.p[good.n - 6] ^= 0x55;
    else if (!strcmp(name, "COMPRESSED trailing")) {
        bytes_t t = cat(good.p, good.n, "\0", 1);
        free(good.p);
        return t;
    } else if (!strcmp(name, "COMPRESSED over max_decompressed"))
        opts->max_decompressed = 0x70;
    return good;
}

START_TEST(test_error)
{
    const bad_t *b = &bads[_i];
    cnb_term_opts_t opts = {0, 0, 0, NULL};
    bytes_t in;
    if (b->in) {
        in = unhex(b->in);
    } else if (!strncmp(b->name, "COMPRESSED", 10)) {
        in = compressed_case(b->name, &opts);
    } else { /* ATOM_EXT of 256 bytes */
        in.n = 4 + 256;
        in.p = malloc(in.n);
        memcpy(in.p, "\x83\x64\x01\x00", 4);
        memset(in.p + 4, 'a', 256);
    }
    ssize_t r = cnb_term_canonical(in.p, in.n, NULL, 0, &opts);
    ck_assert_msg(r == b->err, "%s: got %s, want %s", b->name, cnb_errname((int)r),
                  cnb_errname(b->err));
    ck_assert_str_ne(cnb_strerror((int)r), "unknown error");
    uint8_t out[256];
    ck_assert_int_eq(cnb_term_canonical(in.p, in.n, out, sizeof(out), &opts), b->err);
    void *ap = (void *)1;
    size_t an = 1;
    ck_assert_int_eq(cnb_term_canonical_alloc(in.p, in.n, &ap, &an, &opts), b->err);
    ck_assert_ptr_null(ap);
    free(in.p);
}
END_TEST

START_TEST(test_args)
{
    void *ap;
    size_t an;
    int order;
    ck_assert_int_eq(cnb_term_canonical(NULL, 3, NULL, 0, NULL), CNB_EINVAL);
    ck_assert_int_eq(cnb_term_canonical(NULL, 0, NULL, 0, NULL), CNB_ETRUNC);
    ck_assert_int_eq(cnb_term_canonical_alloc("\x83\x61\x01", 3, NULL, &an, NULL), CNB_EINVAL);
    ck_assert_int_eq(cnb_term_canonical_alloc("\x83\x61\x01", 3, &ap, NULL, NULL), CNB_EINVAL);
    ck_assert_int_eq(cnb_term_compare("\x83\x61\x01", 3, "\x83\x61\x01", 3, NULL), CNB_EINVAL);
    ck_assert_int_eq(cnb_term_compare(NULL, 0, "\x83\x61\x01", 3, &order), CNB_ETRUNC);
    ck_assert_uint_eq(cnb_term_hash(NULL, 0), cnb_term_hash("", 0));
}
END_TEST

/* ---- limits ---------------------------------------------------------------------- */

/* depth nested 1-tuples around an atom; latin1 makes the general path run. */
static bytes_t nested_tuples(size_t depth, int latin1)
{
    bytes_t b = {malloc(1 + 2 * depth + 5), 0};
    b.p[b.n++] = 131;
    for (size_t i = 0; i < depth; i++) {
        b.p[b.n++] = 104;
        b.p[b.n++] = 1;
    }
    memcpy(b.p + b.n, latin1 ? "\x64\x00\x01x" : "\x77\x01x", latin1 ? 4 : 3);
    b.n += latin1 ? 4 : 3;
    return b;
}

/* depth nested one-element lists [[[...[x]...]]]. */
static bytes_t nested_lists(size_t depth, int latin1)
{
    bytes_t b = {malloc(1 + 6 * depth + 5), 0};
    b.p[b.n++] = 131;
    for (size_t i = 0; i < depth; i++) {
        memcpy(b.p + b.n, "\x6c\x00\x00\x00\x01", 5);
        b.n += 5;
    }
    memcpy(b.p + b.n, latin1 ? "\x64\x00\x01x" : "\x77\x01x", latin1 ? 4 : 3);
    b.n += latin1 ? 4 : 3;
    memset(b.p + b.n, 106, depth);
    b.n += depth;
    return b;
}

/* depth nested single-pair maps #{1 => #{1 => ... x}}. */
static bytes_t nested_maps(size_t depth, int latin1)
{
    bytes_t b = {malloc(1 + 7 * depth + 5), 0};
    b.p[b.n++] = 131;
    for (size_t i = 0; i < depth; i++) {
        memcpy(b.p + b.n, "\x74\x00\x00\x00\x01\x61\x01", 7);
        b.n += 7;
    }
    memcpy(b.p + b.n, latin1 ? "\x64\x00\x01x" : "\x77\x01x", latin1 ? 4 : 3);
    b.n += latin1 ? 4 : 3;
    return b;
}

typedef bytes_t (*nest_fn)(size_t, int);
static const nest_fn nesters[] = {nested_tuples, nested_lists, nested_maps};

START_TEST(test_depth_limit)
{
    nest_fn nest = nesters[_i % 3];
    int latin1 = _i >= 3;
    bytes_t ok = nest(1000, latin1), deep = nest(1001, latin1);
    ck_assert_int_gt(cnb_term_canonical(ok.p, ok.n, NULL, 0, NULL), 0);
    ck_assert_int_eq(cnb_term_canonical(deep.p, deep.n, NULL, 0, NULL), CNB_EDEPTH);
    cnb_term_opts_t opts = {3, 0, 0, NULL};
    bytes_t three = nest(3, latin1), four = nest(4, latin1);
    ck_assert_int_gt(cnb_term_canonical(three.p, three.n, NULL, 0, &opts), 0);
    ck_assert_int_eq(cnb_term_canonical(four.p, four.n, NULL, 0, &opts), CNB_EDEPTH);
    free(ok.p);
    free(deep.p);
    free(three.p);
    free(four.p);
}
END_TEST

/* Work on a very deep term on a thread with a small stack: nothing recurses. */
static void *deep_worker(void *arg)
{
    size_t depth = 200000;
    cnb_term_opts_t opts = {depth + 1, 0, 0, NULL};
    int *ok = arg;
    for (int k = 0; k < 3; k++) {
        bytes_t in = nesters[k](depth, 1), want = nesters[k](depth, 0);
        void *out;
        size_t n;
        int order = 9;
        if (cnb_term_canonical_alloc(in.p, in.n, &out, &n, &opts) != 0 || n != want.n ||
            memcmp(out, want.p, n) != 0)
            *ok = 0;
        else if (cnb_term_compare(out, n, want.p, want.n, &order) != 0 || order != 0)
            *ok = 0;
        else if (cnb_term_hash(out, n) != cnb_term_hash(want.p, want.n))
            *ok = 0;
        free(out);
        free(in.p);
        free(want.p);
    }
    return NULL;
}

START_TEST(test_deep_small_stack)
{
    pthread_attr_t attr;
    pthread_t th;
    int ok = 1;
    ck_assert_int_eq(pthread_attr_init(&attr), 0);
    ck_assert_int_eq(pthread_attr_setstacksize(&attr, 256 * 1024), 0);
    ck_assert_int_eq(pthread_create(&th, &attr, deep_worker, &ok), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    pthread_attr_destroy(&attr);
    ck_assert_int_eq(ok, 1);
}
END_TEST

START_TEST(test_size_limit)
{
    /* {cache, 42}: 12 canonical bytes; as ATOM_EXT it needs the general path. */
    bytes_t fast = unhex("83680277056361636865612a");
    bytes_t slow = unhex("8368026400056361636865612a");
    cnb_term_opts_t fits = {0, 12, 0, NULL}, short_by_one = {0, 11, 0, NULL};
    ck_assert_int_eq(cnb_term_canonical(fast.p, fast.n, NULL, 0, &fits), 12);
    ck_assert_int_eq(cnb_term_canonical(slow.p, slow.n, NULL, 0, &fits), 12);
    ck_assert_int_eq(cnb_term_canonical(fast.p, fast.n, NULL, 0, &short_by_one), CNB_ETOOBIG);
    ck_assert_int_eq(cnb_term_canonical(slow.p, slow.n, NULL, 0, &short_by_one), CNB_ETOOBIG);

    /* A long list of bytes as LIST_EXT: twice as long before it folds. */
    size_t n = 60000;
    bytes_t list = {malloc(6 + 2 * n + 1), 0};
    memcpy(list.p, "\x83\x6c", 2);
    cnb__put32(list.p + 2, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        list.p[6 + 2 * i] = 97;
        list.p[7 + 2 * i] = (uint8_t)i;
    }
    list.p[6 + 2 * n] = 106;
    list.n = 7 + 2 * n;
    cnb_term_opts_t exact = {0, 4 + n, 0, NULL}, under = {0, 3 + n, 0, NULL};
    ck_assert_int_eq(cnb_term_canonical(list.p, list.n, NULL, 0, &exact), (ssize_t)(4 + n));
    ck_assert_int_eq(cnb_term_canonical(list.p, list.n, NULL, 0, &under), CNB_ETOOBIG);
    free(fast.p);
    free(slow.p);
    free(list.p);
}
END_TEST

START_TEST(test_big_map_sort)
{
    /* 40 keys in descending order, as hand-made ETF; the canonical form has
     * them ascending (key order), and a duplicate anywhere is an error. */
    size_t n = 40;
    bytes_t m = {malloc(6 + 4 * n), 0};
    memcpy(m.p, "\x83\x74", 2);
    cnb__put32(m.p + 2, (uint32_t)n);
    m.n = 6;
    for (size_t i = 0; i < n; i++) {
        m.p[m.n++] = 97;
        m.p[m.n++] = (uint8_t)(n - i);
        m.p[m.n++] = 97;
        m.p[m.n++] = (uint8_t)i;
    }
    bytes_t out;
    ck_assert_int_eq(canon(&m, &out, NULL), (ssize_t)m.n);
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_eq(out.p[6 + 4 * i + 1], i + 1);
        ck_assert_uint_eq(out.p[6 + 4 * i + 3], n - 1 - i);
    }
    free(out.p);
    m.p[6 + 4 * 7 + 1] = m.p[6 + 4 * 30 + 1]; /* a duplicate key */
    ck_assert_int_eq(cnb_term_canonical(m.p, m.n, NULL, 0, NULL), CNB_EMALFORMED);
    free(m.p);
}
END_TEST

/* Keys equal in term order but different terms (#Ref<a@b.7> and
 * #Ref<a@b.7.0.0>): a duplicate for a small map, two keys for a large one. */
START_TEST(test_ref_keys)
{
    const char *r1 = "5a0001770361406200000001" "00000007";
    const char *r3 = "5a0003770361406200000001" "000000070000000000000000";
    char hex[2048];
    snprintf(hex, sizeof(hex), "8374000000%02x%s6101%s6102", 2, r1, r3);
    bytes_t small = unhex(hex);
    ck_assert_int_eq(cnb_term_canonical(small.p, small.n, NULL, 0, NULL), CNB_EMALFORMED);
    size_t len = (size_t)snprintf(hex, sizeof(hex), "8374000000%02x%s6101%s6102", 40, r3, r1);
    for (int i = 0; i < 38; i++)
        len += (size_t)snprintf(hex + len, sizeof(hex) - len, "61%02x6100", 10 + i);
    bytes_t large = unhex(hex), out;
    ck_assert_int_eq(canon(&large, &out, NULL), (ssize_t)large.n);
    int order = 9;
    ck_assert_int_eq(cnb_term_compare(out.p, out.n, out.p, out.n, &order), 0);
    ck_assert_int_eq(order, 0);
    free(small.p);
    free(large.p);
    free(out.p);
}
END_TEST

/* cnb_term_zero_sign: every -0.0 of canonical bytes becomes 0.0, in place,
 * wherever it is nested; other floats and non-float bytes that look like one
 * (70 in a binary) are untouched; input that is not canonical is refused. */
START_TEST(test_zero_sign)
{
    bytes_t neg = unhex("83468000000000000000"), pos = unhex("83460000000000000000");
    ck_assert_int_eq(cnb_term_zero_sign(neg.p, neg.n), 1);
    ck_assert_mem_eq(neg.p, pos.p, pos.n);
    ck_assert_int_eq(cnb_term_zero_sign(neg.p, neg.n), 0); /* already 0.0 */
    /* {x, [-0.0, 1.5, <<70,128,0,0,0,0,0,0,0>>], -0.0} without the 131 */
    const char *in = "6803" "770178" "6c00000003" "468000000000000000" "463ff8000000000000"
                     "6d00000009468000000000000000" "6a" "468000000000000000";
    const char *want = "6803" "770178" "6c00000003" "460000000000000000" "463ff8000000000000"
                       "6d00000009468000000000000000" "6a" "460000000000000000";
    bytes_t t = unhex(in), w = unhex(want);
    ck_assert_int_eq(cnb_term_zero_sign(t.p, t.n), 2);
    ck_assert_mem_eq(t.p, w.p, w.n);
    bytes_t bad = unhex("8364000178"); /* ATOM_EXT: valid, not canonical */
    ck_assert_int_eq(cnb_term_zero_sign(bad.p, bad.n), CNB_EINVAL);
    ck_assert_int_eq(cnb_term_zero_sign(NULL, 3), CNB_EINVAL);
    ck_assert_int_eq(cnb_term_zero_sign(bad.p, 0), CNB_ETRUNC);
    free(neg.p);
    free(pos.p);
    free(t.p);
    free(w.p);
    free(bad.p);
}
END_TEST

/* ---- hash -------------------------------------------------------------------------- */

START_TEST(test_hash_pinned)
{
    /* The hash is part of the stored format: it must never change. */
    bytes_t a = unhex("83680277056361636865612a"); /* {cache, 42} */
    bytes_t b = unhex("836a");                     /* [] */
    bytes_t c = unhex("837700");                   /* '' */
    uint64_t ha = cnb_term_hash(a.p, a.n), hb = cnb_term_hash(b.p, b.n),
             hc = cnb_term_hash(c.p, c.n), he = cnb_term_hash("", 0);
    ck_assert_uint_eq(ha, UINT64_C(0xee2c4fb7ebcfa45f));
    ck_assert_uint_eq(hb, UINT64_C(0x24084860d02c6a84));
    ck_assert_uint_eq(hc, UINT64_C(0xb68ff3d99cfc28e9));
    ck_assert_uint_eq(he, cnb_term_hash("\x83", 1));
    ck_assert_uint_ne(ha, hb);
    ck_assert_uint_ne(hb, hc);
    free(a.p);
    free(b.p);
    free(c.p);
}
END_TEST

START_TEST(test_hash_every_tail)
{
    /* Inputs of 0..64 bytes, with and without the version byte, each in a
     * buffer of exactly its size (ASan: the tail loads stay inside): the
     * same values as the byte-by-byte tail of the first version (pinned:
     * folded together, from the tree before the tail took whole-word
     * loads). */
    uint64_t acc = 0;
    for (size_t len = 0; len <= 64; len++) {
        uint8_t *b = malloc(len ? len : 1);
        ck_assert_ptr_nonnull(b);
        for (size_t i = 0; i < len; i++)
            b[i] = (uint8_t)(i * 37 + len);
        if (len)
            b[0] = 131;
        acc = acc * UINT64_C(0x100000001B3) ^ cnb_term_hash(b, len);
        if (len)
            acc = acc * UINT64_C(0x100000001B3) ^ cnb_term_hash(b + 1, len - 1);
        free(b);
    }
    ck_assert_uint_eq(acc, UINT64_C(0x73520ebb2654c7d2));
}
END_TEST

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

START_TEST(test_hash_spread)
{
    /* {cache, I} for 200000 I: no collisions, and one flipped input bit
     * changes about half of the output bits. */
    size_t n = 200000;
    uint64_t *h = malloc(n * sizeof(*h));
    double flips = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t key[16] = {131, 104, 2, 119, 5, 'c', 'a', 'c', 'h', 'e', 98};
        cnb__put32(key + 11, (uint32_t)i);
        h[i] = cnb_term_hash(key, 15);
        key[3 + (i % 12)] ^= (uint8_t)(1u << (i % 8));
        flips += __builtin_popcountll(h[i] ^ cnb_term_hash(key, 15));
    }
    qsort(h, n, sizeof(*h), cmp_u64);
    for (size_t i = 1; i < n; i++)
        ck_assert_uint_ne(h[i - 1], h[i]);
    flips /= (double)n;
    ck_assert_msg(flips > 31.0 && flips < 33.0, "average bits flipped %f", flips);
    free(h);

    /* Long inputs (the two-lane loop) and every tail length. */
    uint8_t buf[300];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7);
    for (size_t len = 1; len < sizeof(buf); len++) {
        uint64_t x = cnb_term_hash(buf, len);
        buf[len - 1] ^= 1;
        ck_assert_uint_ne(x, cnb_term_hash(buf, len));
        buf[len - 1] ^= 1;
        ck_assert_uint_ne(x, cnb_term_hash(buf, len - 1));
    }
}
END_TEST

/* ---- compare ------------------------------------------------------------------------ */

/* Terms in ascending Erlang term order, as lists:sort/1 put them on OTP 25. */
static const char *const sorted[] = {
    "8346c6293e5939a08cea",
    "836e0901000000000000000040",
    "836e040101000080",
    "8362ffffffff",
    "8346bfe0000000000000",
    "836100",
    "83463fe0000000000000",
    "83463ff8000000000000",
    "836102",
    "8361ff",
    "83464070080000000000",
    "836e070000000000000020",
    "836e070001000000000020",
    "83464340000000000001",
    "836e0900000000000000000001",
    "83464415af1d78b58c40",
    "83467fefffffffffffff",
    "836e8a00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000010",
    "837700",
    "83770161",
    "8377026162",
    "837703616263",
    "83770162",
    "837702c3a4",
    "837702c480",
    "835a000177036140620000000100000001",
    "835a00027703614062000000010000000200000000",
    "835a00027703614062000000010000000100000001",
    "835a000177036140620000000200000000",
    "835a000177036240610000000000000000",
    "8370000000360100000000000000000000000000000000000000010000000077016d61006105587703614062000000000000000000000000",
    "8370000000360100000000000000000000000000000001000000020000000077016d61006105587703614062000000000000000000000000",
    "8370000000380100000000000000000000000000000002000000020000000177016d610061055877036140620000000000000000000000006101",
    "8370000000380100000000000000000000000000000003000000020000000177016d610061055877036140620000000000000000000000006102",
    "8371770665726c616e6777036162736101",
    "837177056c6973747377036d61706102",
    "837177056c6973747377036d61706103",
    "837177056c6973747377036d617061ff",
    "835977036140620000000200000001",
    "835977036140620000000100000002",
    "83787703614062000001000000000000000002",
    "835977036240610000000000000000",
    "83587703614062000000010000000000000005",
    "83587703624061000000010000000000000000",
    "83587703614062000000020000000000000000",
    "83587703614062000000000000000100000000",
    "836800",
    "8368016101",
    "8368016102",
    "83680261006100",
    "8368026101770161",
    "837400000000",
    "8374000000016101770161",
    "8374000000016101770162",
    "8374000000016102770161",
    "837400000001463ff0000000000000770161",
    "8374000000017701616101",
    "83740000000261017701616102770162",
    "836a",
    "836b000100",
    "836b00020000",
    "836c0000000161016102",
    "836b000101",
    "836c00000002610161026103",
    "836b00020102",
    "836b0003010203",
    "836c00000001463ff80000000000006a",
    "836c0000000162000001006a",
    "836c000000017701616a",
    "836c0000000168006a",
    "836d00000000",
    "834d000000010100",
    "836d0000000100",
    "836d000000020000",
    "836d0000000101",
    "836d000000020102",
    "834d00000002030140",
    "834d000000010180",
    "836d00000001ff",
};
#define NSORTED (sizeof(sorted) / sizeof(sorted[0]))

/* Pairs that are == but not the same bytes. */
static const char *const equal[][2] = {
    {"836101", "83463ff0000000000000"},
    {"836100", "83460000000000000000"},
    {"83460000000000000000", "83468000000000000000"},
    {"836e0901000000000000000001", "8346c3f0000000000000"},
    {"836c00000001463ff00000000000006a", "836b000101"},
    {"8368016101", "836801463ff0000000000000"},
    {"8374000000017701616101", "837400000001770161463ff0000000000000"},
    {"835a000177036140620000000100000007", "835a0003770361406200000001000000070000000000000000"},
};
#define NEQUAL (sizeof(equal) / sizeof(equal[0]))

START_TEST(test_compare_order)
{
    for (size_t i = 0; i < NSORTED; i++) {
        for (size_t j = 0; j < NSORTED; j++) {
            int order = 9;
            ck_assert_int_eq(cmp_hex(sorted[i], sorted[j], &order), 0);
            int want = (i > j) - (i < j);
            ck_assert_msg(order == want, "compare(%s, %s) = %d, want %d", sorted[i], sorted[j],
                          order, want);
        }
    }
}
END_TEST

START_TEST(test_compare_equal)
{
    for (size_t i = 0; i < NEQUAL; i++) {
        int order = 9;
        ck_assert_int_eq(cmp_hex(equal[i][0], equal[i][1], &order), 0);
        ck_assert_msg(order == 0, "%s == %s", equal[i][0], equal[i][1]);
        ck_assert_int_eq(cmp_hex(equal[i][1], equal[i][0], &order), 0);
        ck_assert_int_eq(order, 0);
        ck_assert_str_ne(equal[i][0], equal[i][1]);
    }
}
END_TEST

START_TEST(test_compare_errors)
{
    int order;
    /* Valid but not canonical (ATOM_EXT), and compressed: not accepted. */
    ck_assert_int_eq(cmp_hex("83640001", "836101", &order), CNB_ETRUNC);
    ck_assert_int_eq(cmp_hex("8364000161", "836101", &order), CNB_EINVAL);
    ck_assert_int_eq(cmp_hex("836101", "835000000071789ccb604a6160cd48cdc9c9cf664861a7030000159e0673",
                             &order),
                     CNB_EINVAL);
    ck_assert_int_eq(cmp_hex("836101", "8361", &order), CNB_ETRUNC);
    ck_assert_int_eq(cmp_hex("836101", "835200", &order), CNB_EMALFORMED);
    ck_assert_int_eq(cmp_hex("83610100", "836101", &order), CNB_EMALFORMED);
    /* Without the version byte is fine. */
    ck_assert_int_eq(cmp_hex("6101", "836102", &order), 0);
    ck_assert_int_eq(order, -1);
}
END_TEST

/* ---- memory -------------------------------------------------------------------------- */

typedef struct counting {
    long allocs, frees, fail_after;
} counting_t;

static void *c_alloc(void *ctx, size_t n)
{
    counting_t *c = ctx;
    if (c->fail_after >= 0 && c->allocs + 1 > c->fail_after)
        return NULL;
    c->allocs++;
    return malloc(n);
}

static void *c_realloc(void *ctx, void *p, size_t n)
{
    counting_t *c = ctx;
    if (c->fail_after >= 0 && c->allocs + 1 > c->fail_after)
        return NULL;
    if (!p)
        c->allocs++;
    else
        c->allocs++, c->frees++; /* count a move as a free and an alloc */
    return realloc(p, n);
}

static void c_free(void *ctx, void *p)
{
    counting_t *c = ctx;
    if (p)
        c->frees++;
    free(p);
}

/* Inputs that allocate: compressed, an unsorted large map, deep nesting, large
 * output. */
static bytes_t oom_input(int k)
{
    switch (k) {
    case 0:
        return unhex("835000000071789ccb604a6160cd48cdc9c9cf664861a7030000159e0673");
    case 1: {
        size_t n = 50;
        bytes_t m = {malloc(6 + 6 * n), 6};
        memcpy(m.p, "\x83\x74", 2);
        cnb__put32(m.p + 2, (uint32_t)n);
        for (size_t i = 0; i < n; i++) {
            memcpy(m.p + m.n, "\x73\x01", 2);
            m.p[m.n + 2] = (uint8_t)('z' - i % 26 + (i >= 26 ? 128 : 0));
            m.p[m.n + 3] = 97;
            m.p[m.n + 4] = (uint8_t)i;
            m.n += 5;
        }
        return m;
    }
    case 2:
        return nested_lists(300, 1);
    default: {
        bytes_t b = {malloc(7 + 4000), 7};
        memcpy(b.p, "\x83\x6c\x00\x00\x07\xd0\x6a", 7);
        b.n = 6;
        for (int i = 0; i < 2000; i++) {
            b.p[b.n++] = 97;
            b.p[b.n++] = (uint8_t)i;
        }
        b.p[b.n++] = 106;
        return b;
    }
    }
}

START_TEST(test_oom)
{
    bytes_t in = oom_input(_i);
    int saw_enomem = 0, saw_ok = 0;
    for (long fail = 0; fail < 64; fail++) {
        counting_t c = {0, 0, fail};
        cnb_allocator_t a = {c_alloc, c_realloc, c_free, &c};
        cnb_term_opts_t opts = {0, 0, 0, &a};
        void *out = NULL;
        size_t n = 0;
        int r = cnb_term_canonical_alloc(in.p, in.n, &out, &n, &opts);
        ck_assert_msg(r == 0 || r == CNB_ENOMEM, "input %d, fail at %ld: %s", _i, fail,
                      cnb_errname(r));
        if (r == 0) {
            saw_ok = 1;
            cnb_free(&a, out);
        } else {
            saw_enomem = 1;
            ck_assert_ptr_null(out);
        }
        ck_assert_msg(c.allocs == c.frees, "input %d, fail at %ld: %ld allocs, %ld frees", _i,
                      fail, c.allocs, c.frees);
        ssize_t s = cnb_term_canonical(in.p, in.n, NULL, 0, &opts);
        ck_assert(s > 0 || s == CNB_ENOMEM);
        ck_assert_int_eq(c.allocs, c.frees);
    }
    ck_assert(saw_ok);
    ck_assert(saw_enomem);
    free(in.p);
}
END_TEST

/* ---- runner ---------------------------------------------------------------------------- */

static Suite *term_suite(void)
{
    Suite *s = suite_create("term");
    TCase *tc = tcase_create("encodings");
    tcase_add_loop_test(tc, test_vector, 0, (int)NVECTORS);
    tcase_add_loop_test(tc, test_truncated_prefixes, 0, (int)NVECTORS);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_loop_test(tc, test_error, 0, (int)NBADS);
    tcase_add_test(tc, test_args);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_add_loop_test(tc, test_depth_limit, 0, 6);
    tcase_add_test(tc, test_deep_small_stack);
    tcase_add_test(tc, test_size_limit);
    tcase_add_test(tc, test_big_map_sort);
    tcase_add_test(tc, test_ref_keys);
    tcase_add_test(tc, test_zero_sign);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("hash");
    tcase_add_test(tc, test_hash_pinned);
    tcase_add_test(tc, test_hash_every_tail);
    tcase_add_test(tc, test_hash_spread);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("compare");
    tcase_add_test(tc, test_compare_order);
    tcase_add_test(tc, test_compare_equal);
    tcase_add_test(tc, test_compare_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("memory");
    tcase_add_loop_test(tc, test_oom, 0, 4);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cnb_check_run(term_suite());
}
