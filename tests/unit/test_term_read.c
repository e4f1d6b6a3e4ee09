/* test_term_read.c: unit tests of core/term_read.h (cnb__term_head, the one
 * reader of the external term format): each tag's header, size, count and
 * children, every prefix truncated, and the tags and fields it refuses;
 * its helpers for atom text (cnb__term_is_ascii, cnb__term_node_text). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_run.h"
#include "term_read.h"

typedef struct row {
    const char *name;
    const char *hex;    /* one term, with trailing bytes that belong to its children */
    unsigned hdr;
    size_t size;
    uint64_t n, children;
    size_t data_at;
} row_t;

static size_t unhex(const char *hex, uint8_t *out)
{
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        ck_assert_int_eq(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
    return n;
}

static const row_t rows[] = {
    {"SMALL_INTEGER", "6107", 1, 2, 0, 0, 1},
    {"INTEGER_EXT", "62fffffffe", 1, 5, 0, 0, 1},
    {"NEW_FLOAT", "463ff0000000000000", 1, 9, 0, 0, 1},
    {"FLOAT_EXT", "63312e30303030303030303030303030303030303030303030652b30300000000000", 1, 32, 0,
     0, 1},
    {"NIL", "6a", 1, 1, 0, 0, 1},
    {"EXPORT", "71", 1, 1, 0, 3, 1},
    {"SMALL_ATOM_UTF8", "7703616263", 2, 5, 3, 0, 2},
    {"SMALL_ATOM", "730161", 2, 3, 1, 0, 2},
    {"ATOM", "64000161", 3, 4, 1, 0, 3},
    {"ATOM_UTF8", "76000161", 3, 4, 1, 0, 3},
    {"STRING", "6b00020102", 3, 5, 2, 0, 3},
    {"SMALL_BIG", "6e020001ff", 3, 5, 2, 0, 3},
    {"LARGE_BIG", "6f000000010107", 6, 7, 1, 0, 6},
    {"BINARY", "6d00000002abcd", 5, 7, 2, 0, 5},
    {"BIT_BINARY", "4d0000000103e0", 6, 7, 1, 0, 6},
    {"SMALL_TUPLE", "68026a6a", 2, 2, 2, 2, 2},
    {"LARGE_TUPLE", "69000000016a", 5, 5, 1, 1, 5},
    {"LIST", "6c000000016a6a", 5, 5, 1, 2, 5},
    {"MAP", "74000000016a6a", 5, 5, 1, 2, 5},
    {"NEW_FUN", "70" "00000000" "00" "00000000000000000000000000000000" "00000007" "00000002", 30,
     30, 2, 6, 30},
    {"NEW_PID", "58" "770161" "000000010000000200000003", 1, 16, 0, 0, 4},
    {"PID", "67" "64000161" "000000010000000203", 1, 14, 0, 0, 5},
    {"NEW_PORT", "59" "770161" "0000000100000002", 1, 12, 0, 0, 4},
    {"V4_PORT", "78" "770161" "000000000000000100000002", 1, 16, 0, 0, 4},
    {"PORT", "66" "770161" "0000000102", 1, 9, 0, 0, 4},
    {"REFERENCE", "65" "770161" "0000000102", 1, 9, 1, 0, 4},
    {"NEW_REFERENCE", "72" "0002" "770161" "01" "0000000100000002", 3, 15, 2, 0, 6},
    {"NEWER_REFERENCE", "5a" "0001" "770161" "00000003" "00000001", 3, 14, 1, 0, 6},
    {"NEWER_REFERENCE of 0 words (policy's to refuse)", "5a" "0000" "770161" "00000003", 3, 10,
     0, 0, 6},
};

START_TEST(test_head_layout)
{
    const row_t *r = &rows[_i];
    uint8_t buf[128];
    size_t len = unhex(r->hex, buf);
    cnb__term_head_t h;
    ck_assert_msg(cnb__term_head(buf, buf + len, &h) == 0, "%s", r->name);
    ck_assert_int_eq(h.tag, buf[0]);
    ck_assert_msg(h.hdr == r->hdr && h.size == r->size && h.n == r->n &&
                      h.children == r->children && h.data == buf + r->data_at,
                  "%s: hdr %u size %zu n %llu children %llu data +%td", r->name, h.hdr, h.size,
                  (unsigned long long)h.n, (unsigned long long)h.children, h.data - buf);
    /* Every prefix that cuts the term's own bytes is CNB_ETRUNC. */
    for (size_t k = 0; k < r->size; k++) {
        uint8_t *cut = malloc(k ? k : 1);
        ck_assert_ptr_nonnull(cut);
        memcpy(cut, buf, k);
        ck_assert_msg(cnb__term_head(cut, cut + k, &h) == CNB_ETRUNC, "%s: prefix %zu", r->name,
                      k);
        free(cut);
    }
}
END_TEST

START_TEST(test_head_refuses)
{
    static const char *bad[] = {
        "50000000017801", /* COMPRESSED: the caller inflates first */
        "5200",           /* ATOM_CACHE_REF */
        "83610a",         /* VERSION inside a term */
        "7500000000",     /* FUN_EXT */
        "00", "4b0153", "79", "ff",
        "58" "6101" "000000010000000200000003", /* a pid whose node is not an atom */
        "65" "6a" "0000000102",                 /* a reference whose node is not an atom */
        "5a" "0006" "770161" "00000003" "000000000000000000000000000000000000000000000000",
        "72" "ffff" "770161" "01",              /* more words than a reference holds */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t buf[128];
        size_t len = unhex(bad[i], buf);
        cnb__term_head_t h;
        ck_assert_msg(cnb__term_head(buf, buf + len, &h) == CNB_EMALFORMED, "%s", bad[i]);
    }
}
END_TEST

START_TEST(test_head_large_counts)
{
    /* Counts are reported as they are; children are not required to fit. */
    uint8_t t[] = {CNB__TAG_LARGE_TUPLE, 0xff, 0xff, 0xff, 0xff};
    uint8_t m[] = {CNB__TAG_MAP, 0xff, 0xff, 0xff, 0xff};
    uint8_t l[] = {CNB__TAG_LIST, 0xff, 0xff, 0xff, 0xff};
    uint8_t b[] = {CNB__TAG_BINARY, 0xff, 0xff, 0xff, 0xff, 0};
    cnb__term_head_t h;
    ck_assert_int_eq(cnb__term_head(t, t + sizeof t, &h), 0);
    ck_assert_uint_eq(h.children, 0xffffffffu);
    ck_assert(!cnb__term_children_fit(&h, t, t + sizeof t));
    ck_assert_int_eq(cnb__term_head(m, m + sizeof m, &h), 0);
    ck_assert_uint_eq(h.children, UINT64_C(0x1fffffffe));
    ck_assert_int_eq(cnb__term_head(l, l + sizeof l, &h), 0);
    ck_assert_uint_eq(h.children, UINT64_C(0x100000000));
    ck_assert_int_eq(cnb__term_head(b, b + sizeof b, &h), CNB_ETRUNC);
    /* A tuple of two nils fits in two bytes, not in one. */
    uint8_t two[] = {CNB__TAG_SMALL_TUPLE, 2, CNB__TAG_NIL, CNB__TAG_NIL};
    ck_assert_int_eq(cnb__term_head(two, two + 4, &h), 0);
    ck_assert(cnb__term_children_fit(&h, two, two + 4));
    ck_assert(!cnb__term_children_fit(&h, two, two + 3));
    /* Nothing at all. */
    ck_assert_int_eq(cnb__term_head(two, two, &h), CNB_ETRUNC);
}
END_TEST

/* cnb__term_is_ascii at every length up to 40 with a high bit at every
 * position (each buffer exactly n bytes, so a sanitizer catches a read past
 * it). */
START_TEST(test_is_ascii)
{
    for (size_t n = 0; n <= 40; n++) {
        uint8_t *s = malloc(n ? n : 1);
        ck_assert_ptr_nonnull(s);
        memset(s, 'a', n);
        ck_assert_msg(cnb__term_is_ascii(s, n), "all ASCII, %zu bytes", n);
        for (size_t k = 0; k < n; k++) {
            s[k] = (uint8_t)(0x80 | k);
            ck_assert_msg(!cnb__term_is_ascii(s, n), "high bit at %zu of %zu", k, n);
            s[k] = 0x7f;
        }
        free(s);
    }
}
END_TEST

/* cnb__term_node_text on the node atom of pids read by cnb__term_head, in
 * each of the four atom encodings. */
START_TEST(test_node_text)
{
    static const char *pids[] = {
        "58" "770161" "000000010000000200000003",
        "58" "730161" "000000010000000200000003",
        "58" "76000161" "000000010000000200000003",
        "58" "64000161" "000000010000000200000003",
    };
    for (size_t i = 0; i < sizeof(pids) / sizeof(pids[0]); i++) {
        uint8_t buf[64];
        size_t len = unhex(pids[i], buf);
        const uint8_t *text;
        cnb__term_head_t h;
        ck_assert_int_eq(cnb__term_head(buf, buf + len, &h), 0);
        ck_assert_uint_eq(cnb__term_node_text(buf + h.hdr, &text), 1);
        ck_assert_ptr_eq(text, h.data - 1);
        ck_assert_int_eq(text[0], 'a');
    }
}
END_TEST

static Suite *read_suite(void)
{
    Suite *s = suite_create("term_read");
    TCase *tc = tcase_create("head");
    tcase_add_loop_test(tc, test_head_layout, 0, (int)(sizeof(rows) / sizeof(rows[0])));
    tcase_add_test(tc, test_head_refuses);
    tcase_add_test(tc, test_head_large_counts);
    tcase_add_test(tc, test_is_ascii);
    tcase_add_test(tc, test_node_text);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cnb_check_run(read_suite());
}
