/* test_registry.c: Check suite for core/registry semantics: unique and duplicate
 * kinds, every operation, edge cases (empty key, huge value, 1 vs 1.0), scans,
 * the change feed, refusing bad files, mode 0600, growth while readers read,
 * attach records and purge. Concurrency and kill -9: test_registry_concurrency.c. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cnb_registry.h"
#include "check_run.h"

static char g_path[128];
static int g_seq;

static const char *new_path(void)
{
    snprintf(g_path, sizeof g_path, "/dev/shm/cnb_test_registry_%d_%d", (int)getpid(),
             g_seq++);
    unlink(g_path);
    return g_path;
}

static struct cnb_registry *open_kind(int kind, const char *path)
{
    cnb_registry_opts_t o = {0};
    char err[256];
    o.path = path;
    o.flags = CNB_REG_CREATE;
    o.kind = kind;
    o.errbuf = err;
    o.errbuf_len = sizeof err;
    struct cnb_registry *r = NULL;
    int rc = cnb_registry_open(&o, &r);
    ck_assert_msg(rc == 0, "open: %s (%s)", cnb_strerror(rc), err);
    return r;
}

static void close_unlink(struct cnb_registry *r, const char *path)
{
    char msg[256];
    int rc = cnb_registry_check(r, msg, sizeof msg);
    ck_assert_msg(rc == 0, "check: %s", msg);
    cnb_registry_close(r);
    if (path)
        unlink(path);
}

static cnb_pid_t mkpid(const char *node, uint32_t num, uint32_t creation)
{
    cnb_pid_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.node, sizeof p.node, "%s", node);
    p.num = num;
    p.serial = 0;
    p.creation = creation;
    return p;
}

/* Canonical ETF of a binary: <<131,109,Len:32,Bytes>>. */
static size_t etf_bin(unsigned char *out, const void *s, size_t n)
{
    out[0] = 131;
    out[1] = 109;
    out[2] = (unsigned char)(n >> 24);
    out[3] = (unsigned char)(n >> 16);
    out[4] = (unsigned char)(n >> 8);
    out[5] = (unsigned char)n;
    memcpy(out + 6, s, n);
    return n + 6;
}

/* Canonical ETF of a non-negative integer < 2^31. */
static size_t etf_int(unsigned char *out, uint32_t v)
{
    out[0] = 131;
    if (v < 256) {
        out[1] = 97;
        out[2] = (unsigned char)v;
        return 3;
    }
    out[1] = 98;
    out[2] = (unsigned char)(v >> 24);
    out[3] = (unsigned char)(v >> 16);
    out[4] = (unsigned char)(v >> 8);
    out[5] = (unsigned char)v;
    return 6;
}

/* A result's owner is pid b. */
static int is_owner(const cnb_registry_owner_t *a, const cnb_pid_t *b)
{
    return strcmp(a->node, b->node) == 0 && a->num == b->num && a->serial == b->serial &&
           a->creation == b->creation;
}

static int same_owner(const cnb_registry_owner_t *a, const cnb_registry_owner_t *b)
{
    cnb_pid_t pb;
    cnb_registry_owner_pid(b, &pb);
    return is_owner(a, &pb);
}

static int same_pid(const cnb_pid_t *a, const cnb_pid_t *b)
{
    return strcmp(a->node, b->node) == 0 && a->num == b->num && a->serial == b->serial &&
           a->creation == b->creation;
}

START_TEST(unique_basic)
{
    const char *path = new_path();
    struct cnb_registry *r = open_kind(CNB_REG_UNIQUE, path);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    unsigned char k[64], v[64];
    size_t kl = etf_bin(k, "alpha", 5), vl = etf_int(v, 42);
    cnb_pid_t a = mkpid("a@host", 1, 3), b = mkpid("b@host", 2, 4), cur;

    ck_assert_int_eq(cnb_registry_lookup(r, k, kl, &res), 0);
    ck_assert_int_eq(cnb_registry_register(r, k, kl, &a, v, vl, NULL), 0);
    ck_assert_int_eq(cnb_registry_count(r), 1);
    ck_assert_int_eq(cnb_registry_lookup(r, k, kl, &res), 1);
    ck_assert(is_owner(&res.items[0].owner, &a));
    ck_assert_int_eq(res.items[0].value_len, vl);
    ck_assert_mem_eq(res.items[0].value, v, vl);
    ck_assert_mem_eq(res.items[0].key, k, kl);

    memset(&cur, 0, sizeof cur);
    ck_assert_int_eq(cnb_registry_register(r, k, kl, &b, v, vl, &cur), CNB_EEXIST);
    ck_assert(same_pid(&cur, &a));
    ck_assert_int_eq(cnb_registry_register(r, k, kl, &a, v, vl, &cur), CNB_EEXIST);
    ck_assert_int_eq(cnb_registry_count(r), 1);

    /* unregister by a non-owner does nothing */
    ck_assert_int_eq(cnb_registry_unregister(r, k, kl, &b), 0);
    ck_assert_int_eq(cnb_registry_lookup(r, k, kl, &res), 1);
    ck_assert_int_eq(cnb_registry_unregister(r, k, kl, &a), 1);
    ck_assert_int_eq(cnb_registry_lookup(r, k, kl, &res), 0);
    ck_assert_int_eq(cnb_registry_count(r), 0);
    ck_assert_int_eq(cnb_registry_register(r, k, kl, &b, v, vl, NULL), 0);
    ck_assert_int_eq(cnb_registry_lookup(r, k, kl, &res), 1);
    ck_assert(is_owner(&res.items[0].owner, &b));

    cnb_registry_result_free(&res);
    close_unlink(r, path);
}
END_TEST

START_TEST(duplicate_basic)
{
    const char *path = new_path();
    struct cnb_registry *r = open_kind(CNB_REG_DUPLICATE, path);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    unsigned char k[64], v1[16], v2[16], v3[16];
    size_t kl = etf_bin(k, "topic", 5);
    size_t l1 = etf_int(v1, 1), l2 = etf_int(v2, 2), l3 = etf_int(v3, 3);
    cnb_pid_t a = mkpid("a@host", 1, 1), b = mkpid("b@host", 1, 1);

    ck_assert_int_eq(cnb_registry_register(r, k, kl, &a, v1, l1, NULL), 0);
    ck_assert_int_eq(cnb_registry_register(r, k, kl, &a, v2, l2, NULL), 0);
    ck_assert_int_eq(cnb_registry_register(r, k, kl, &b, v3, l3, NULL), 0);
    ck_assert_int_eq(cnb_registry_count(r), 3);
    ck_assert_int_eq(cnb_registry_lookup(r, k, kl, &res), 3);
    int seen = 0;
    for (size_t i = 0; i < res.n; i++) {
        const cnb_registry_item_t *it = &res.items[i];
        if (is_owner(&it->owner, &a) && it->value_len == l1 && !memcmp(it->value, v1, l1))
            seen |= 1;
        if (is_owner(&it->owner, &a) && it->value_len == l2 && !memcmp(it->value, v2, l2))
            seen |= 2;
        if (is_owner(&it->owner, &b) && it->value_len == l3 && !memcmp(it->value, v3, l3))
            seen |= 4;
    }
    ck_assert_int_eq(seen, 7);
    ck_assert_int_eq(cnb_registry_values(r, k, kl, &a, &res), 2);
    ck_assert_int_eq(cnb_registry_values(r, k, kl, &b, &res), 1);
    ck_assert_mem_eq(res.items[0].value, v3, l3);

    /* update_value changes every entry of that owner */
    ck_assert_int_eq(cnb_registry_update_value(r, k, kl, &a, v3, l3), 2);
    ck_assert_int_eq(cnb_registry_values(r, k, kl, &a, &res), 2);
    ck_assert_mem_eq(res.items[0].value, v3, l3);
    ck_assert_mem_eq(res.items[1].value, v3, l3);

    ck_assert_int_eq(cnb_registry_unregister(r, k, kl, &a), 2);
    ck_assert_int_eq(cnb_registry_lookup(r, k, kl, &res), 1);
    ck_assert_int_eq(cnb_registry_count(r), 1);
    cnb_registry_result_free(&res);
    close_unlink(r, path);
}
END_TEST

START_TEST(int_and_float_distinct)
{
    struct cnb_registry *r = open_kind(CNB_REG_UNIQUE, NULL); /* process-private */
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    static const unsigned char one[] = {131, 97, 1};
    static const unsigned char onef[] = {131, 70, 63, 240, 0, 0, 0, 0, 0, 0};
    cnb_pid_t a = mkpid("a@h", 1, 1), b = mkpid("b@h", 2, 1);
    ck_assert_int_eq(cnb_registry_register(r, one, sizeof one, &a, "x", 1, NULL), 0);
    ck_assert_int_eq(cnb_registry_register(r, onef, sizeof onef, &b, "y", 1, NULL), 0);
    ck_assert_int_eq(cnb_registry_count(r), 2);
    ck_assert_int_eq(cnb_registry_lookup(r, one, sizeof one, &res), 1);
    ck_assert(is_owner(&res.items[0].owner, &a));
    ck_assert_int_eq(cnb_registry_lookup(r, onef, sizeof onef, &res), 1);
    ck_assert(is_owner(&res.items[0].owner, &b));
    ck_assert_int_eq(cnb_registry_unregister(r, one, sizeof one, &a), 1);
    ck_assert_int_eq(cnb_registry_lookup(r, onef, sizeof onef, &res), 1);
    cnb_registry_result_free(&res);
    close_unlink(r, NULL);
}
END_TEST

/* -0.0 =:= 0.0 on OTP 25 (Elixir's Registry takes them for one key): the
 * registry does too, at any depth of the key, in every operation, for short
 * keys and for keys too long for the inline buffer. */
START_TEST(zero_and_negative_zero_one_key)
{
    struct cnb_registry *r = open_kind(CNB_REG_UNIQUE, NULL);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    static const unsigned char pos[] = {131, 70, 0, 0, 0, 0, 0, 0, 0, 0};
    static const unsigned char neg[] = {131, 70, 128, 0, 0, 0, 0, 0, 0, 0};
    cnb_pid_t a = mkpid("a@h", 1, 1), cur;
    ck_assert_int_eq(cnb_registry_register(r, pos, sizeof pos, &a, "x", 1, NULL), 0);
    ck_assert_int_eq(cnb_registry_register(r, neg, sizeof neg, &a, "y", 1, &cur), CNB_EEXIST);
    ck_assert_int_eq(cnb_registry_lookup(r, neg, sizeof neg, &res), 1);
    ck_assert_mem_eq(res.items[0].value, "x", 1);
    ck_assert_int_eq(cnb_registry_update_value(r, neg, sizeof neg, &a, "z", 1), 1);
    ck_assert_int_eq(cnb_registry_values(r, neg, sizeof neg, &a, &res), 1);
    ck_assert_mem_eq(res.items[0].value, "z", 1);
    cnb_registry_key_t ks[2] = {{neg, sizeof neg}, {pos, sizeof pos}};
    size_t counts[2];
    ck_assert_int_eq(cnb_registry_lookup_many(r, ks, 2, &res, counts), 2);
    ck_assert_int_eq(cnb_registry_unregister(r, neg, sizeof neg, &a), 1);
    ck_assert_int_eq(cnb_registry_count(r), 0);
    ck_assert_int_eq(cnb_registry_meta_put(r, neg, sizeof neg, "m", 1), 0);
    ck_assert_int_eq(cnb_registry_meta_get(r, pos, sizeof pos, &res), 1);
    ck_assert_int_eq(cnb_registry_meta_delete(r, pos, sizeof pos), 0);

    /* {<<300 bytes>>, -0.0}: nested, and longer than the inline buffer */
    unsigned char big[2][330];
    for (int v = 0; v < 2; v++) {
        unsigned char *k = big[v];
        memcpy(k, (const unsigned char[]){131, 104, 2, 109, 0, 0, 1, 44}, 8);
        memset(k + 8, 70, 300); /* byte 70 = NEW_FLOAT_EXT's tag, inside a binary */
        memcpy(k + 308, v ? neg + 1 : pos + 1, 9);
    }
    ck_assert_int_eq(cnb_registry_register(r, big[1], 317, &a, "n", 1, NULL), 0);
    ck_assert_int_eq(cnb_registry_lookup(r, big[0], 317, &res), 1);
    ck_assert_mem_eq(res.items[0].key, big[0], 317); /* stored as 0.0 */
    ks[0] = (cnb_registry_key_t){big[0], 317};
    ks[1] = (cnb_registry_key_t){big[1], 317};
    ck_assert_int_eq(cnb_registry_lookup_many(r, ks, 2, &res, counts), 2);
    ck_assert_int_eq(cnb_registry_unregister(r, big[0], 317, &a), 1);
    cnb_registry_result_free(&res);
    close_unlink(r, NULL);
}
END_TEST

/* A freed block of 4 KiB or more becomes the stripe's bump region when it runs
 * out, before the arena grows: here 150 small entries fit in the space a
 * dropped 20 KiB value left. */
START_TEST(freed_space_reused_for_new_entries)
{
    cnb_registry_opts_t o = {0};
    o.stripes = 1;
    struct cnb_registry *r;
    ck_assert_int_eq(cnb_registry_open(&o, &r), 0);
    cnb_pid_t a = mkpid("a@h", 1, 1);
    static unsigned char big[20480];
    unsigned char k[16];
    ck_assert_int_eq(cnb_registry_register(r, "big", 3, &a, big, sizeof big, NULL), 0);
    ck_assert_int_eq(cnb_registry_unregister(r, "big", 3, &a), 1);
    cnb_registry_info_t before, after;
    cnb_registry_info(r, &before);
    for (uint32_t i = 0; i < 150; i++) {
        size_t kl = etf_int(k, 1000 + i);
        ck_assert_int_eq(cnb_registry_register(r, k, kl, &a, k, kl, NULL), 0);
    }
    cnb_registry_info(r, &after);
    ck_assert_uint_eq(after.arena_used, before.arena_used);
    close_unlink(r, NULL);
}
END_TEST

START_TEST(empty_key_and_value)
{
    struct cnb_registry *r = open_kind(CNB_REG_UNIQUE, NULL);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    cnb_pid_t a = mkpid("a@h", 1, 1);
    static const unsigned char empty_bin[] = {131, 109, 0, 0, 0, 0};
    ck_assert_int_eq(cnb_registry_register(r, NULL, 0, &a, NULL, 0, NULL), 0);
    ck_assert_int_eq(cnb_registry_register(r, empty_bin, sizeof empty_bin, &a, NULL, 0, NULL), 0);
    ck_assert_int_eq(cnb_registry_lookup(r, "", 0, &res), 1);
    ck_assert_int_eq(res.items[0].key_len, 0);
    ck_assert_int_eq(res.items[0].value_len, 0);
    ck_assert_ptr_nonnull(res.items[0].value);
    ck_assert_int_eq(cnb_registry_lookup(r, empty_bin, sizeof empty_bin, &res), 1);
    ck_assert_int_eq(res.items[0].key_len, sizeof empty_bin);
    ck_assert_int_eq(cnb_registry_register(r, NULL, 0, &a, NULL, 0, NULL), CNB_EEXIST);
    ck_assert_int_eq(cnb_registry_unregister(r, NULL, 0, &a), 1);
    ck_assert_int_eq(cnb_registry_lookup(r, NULL, 0, &res), 0);
    cnb_registry_result_free(&res);
    close_unlink(r, NULL);
}
END_TEST

START_TEST(bad_arguments)
{
    cnb_registry_opts_t o = {0};
    o.max_key_size = 64;
    o.max_value_size = 1024;
    struct cnb_registry *r;
    ck_assert_int_eq(cnb_registry_open(&o, &r), 0);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    cnb_pid_t a = mkpid("a@h", 1, 1), bad;
    unsigned char big[2048];
    memset(big, 7, sizeof big);
    ck_assert_int_eq(cnb_registry_register(r, big, 65, &a, "v", 1, NULL), CNB_ETOOBIG);
    ck_assert_int_eq(cnb_registry_register(r, big, 64, &a, big, 1025, NULL), CNB_ETOOBIG);
    ck_assert_int_eq(cnb_registry_register(r, big, 64, &a, big, 1024, NULL), 0);
    memset(&bad, 0, sizeof bad); /* empty node name */
    ck_assert_int_eq(cnb_registry_register(r, "k", 1, &bad, "v", 1, NULL), CNB_EINVAL);
    memset(bad.node, 'x', sizeof bad.node); /* not terminated */
    ck_assert_int_eq(cnb_registry_register(r, "k", 1, &bad, "v", 1, NULL), CNB_EINVAL);
    ck_assert_int_eq(cnb_registry_register(r, NULL, 3, &a, "v", 1, NULL), CNB_EINVAL);
    ck_assert_int_eq(cnb_registry_lookup(r, big, 65, &res), CNB_ETOOBIG);
    ck_assert_int_eq(cnb_registry_update_value(r, "zz", 2, &a, "v", 1), CNB_ENOENT);
    ck_assert_int_eq(cnb_registry_meta_get(r, "zz", 2, &res), CNB_ENOENT);
    ck_assert_int_eq(cnb_registry_meta_delete(r, "zz", 2), CNB_ENOENT);
    ck_assert_int_eq(cnb_registry_unregister_match(r, "zz", 2, &a, NULL, NULL), CNB_EINVAL);
    cnb_registry_result_free(&res);
    close_unlink(r, NULL);
}
END_TEST

/* lookup_many gives the answers of one lookup per key, in key order, for batch
 * sizes around its pipeline depth, absent keys, keys with several entries, the
 * empty key and big values; bad batches are refused whole. */
static void check_batch(struct cnb_registry *r, const cnb_registry_key_t *keys, size_t n)
{
    cnb_registry_result_t many, one;
    cnb_registry_result_init(&many, NULL);
    cnb_registry_result_init(&one, NULL);
    size_t *counts = calloc(n + 1, sizeof *counts);
    ssize_t total = cnb_registry_lookup_many(r, keys, n, &many, counts);
    ck_assert_int_ge(total, 0);
    ck_assert_uint_eq((size_t)total, many.n);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        ssize_t c = cnb_registry_lookup(r, keys[i].key, keys[i].len, &one);
        ck_assert_int_ge(c, 0);
        ck_assert_uint_eq(counts[i], (size_t)c);
        for (size_t j = 0; j < (size_t)c; j++, at++) {
            const cnb_registry_item_t *a = &one.items[j], *b = &many.items[at];
            ck_assert(same_owner(&a->owner, &b->owner));
            ck_assert_uint_eq(a->key_len, b->key_len);
            ck_assert_uint_eq(a->value_len, b->value_len);
            ck_assert_uint_eq(a->hash, b->hash);
            ck_assert(a->key_len == 0 || memcmp(a->key, b->key, a->key_len) == 0);
            ck_assert(a->value_len == 0 || memcmp(a->value, b->value, a->value_len) == 0);
        }
    }
    ck_assert_uint_eq(at, many.n);
    free(counts);
    cnb_registry_result_free(&many);
    cnb_registry_result_free(&one);
}

START_TEST(lookup_many_matches_lookup)
{
    const char *path = new_path();
    struct cnb_registry *r = open_kind(CNB_REG_DUPLICATE, path);
    enum { NK = 3000 };
    static unsigned char kbuf[NK][8];
    static cnb_registry_key_t keys[NK + 2];
    unsigned char *big = malloc(100000);
    memset(big, 9, 100000);
    for (uint32_t i = 0; i < NK; i++) {
        keys[i].key = kbuf[i];
        keys[i].len = etf_int(kbuf[i], i);
        for (uint32_t e = 0; e < i % 4; e++) { /* i % 4 entries: none for some */
            cnb_pid_t o = mkpid(e & 1 ? "b@h" : "a@h", i, 1 + e);
            int huge = i % 97 == 1; /* some keys hold a 100 kB value */
            const void *v = huge ? big : kbuf[i];
            size_t vl = huge ? 100000 : e + 1;
            ck_assert_int_eq(
                cnb_registry_register(r, keys[i].key, keys[i].len, &o, v, vl, NULL), 0);
        }
    }
    cnb_pid_t o = mkpid("a@h", 1, 1);
    keys[NK].key = NULL; /* the empty key, registered */
    keys[NK].len = 0;
    ck_assert_int_eq(cnb_registry_register(r, "", 0, &o, "v", 1, NULL), 0);
    keys[NK + 1].key = "absent";
    keys[NK + 1].len = 6;
    static const size_t sizes[] = {0, 1, 2, 5, 16, 17, 33, 100, NK + 2};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        check_batch(r, keys + (NK + 2 - sizes[s]) / 2, sizes[s]);
    check_batch(r, keys + NK - 3, 5); /* ends with the empty key and an absent one */
    /* An item points at the interned node name instead of holding 256 bytes. */
    ck_assert_uint_le(sizeof(cnb_registry_item_t), 96);

    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    size_t counts[4];
    ck_assert_int_eq(cnb_registry_lookup_many(r, keys, 0, &res, NULL), 0);
    ck_assert_int_eq(cnb_registry_lookup_many(r, NULL, 2, &res, counts), CNB_EINVAL);
    ck_assert_int_eq(cnb_registry_lookup_many(r, keys, 2, &res, NULL), CNB_EINVAL);
    cnb_registry_key_t bad[3] = {{"k", 1}, {NULL, 4}, {"k", 1}};
    ck_assert_int_eq(cnb_registry_lookup_many(r, bad, 3, &res, counts), CNB_EINVAL);
    ck_assert_uint_eq(res.n, 0);
    /* a key over max_key_size has no entries, as any other absent key */
    unsigned char *huge = calloc(1, (1u << 20) + 1);
    cnb_registry_key_t mixed[3] = {{keys[3].key, keys[3].len}, {huge, (1u << 20) + 1},
                                   {keys[7].key, keys[7].len}};
    ck_assert_int_eq(cnb_registry_lookup_many(r, mixed, 3, &res, counts), 3 + 3);
    ck_assert_uint_eq(counts[0], 3);
    ck_assert_uint_eq(counts[1], 0);
    ck_assert_uint_eq(counts[2], 3);
    free(huge);
    cnb_registry_result_free(&res);
    free(big);
    close_unlink(r, path);
}
END_TEST

/* cnb_registry_lookup_one answers as cnb_registry_lookup does for a unique
 * registry: keys of every length the inline compare and float scan take
 * apart (0..40 bytes, one byte different at each place), -0.0 as 0.0, a
 * value longer than the buffer (CNB_ENOSPC, its length), and CNB_EINVAL for a
 * duplicate registry or missing outputs. */
START_TEST(lookup_one_matches_lookup)
{
    struct cnb_registry *r = open_kind(CNB_REG_UNIQUE, NULL);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    cnb_registry_owner_t ow;
    unsigned char vb[8], k[41], k2[41];
    size_t vl;
    cnb_pid_t a = mkpid("a@h", 7, 3);
    for (size_t n = 0; n <= 40; n++) {
        for (size_t i = 0; i < n; i++)
            k[i] = (unsigned char)(n * 31 + i * 7 + 70); /* some 70s: floats' tag */
        ck_assert_int_eq(cnb_registry_register(r, k, n, &a, k, n < 8 ? n : 8, NULL), 0);
    }
    for (size_t n = 0; n <= 40; n++) {
        for (size_t i = 0; i < n; i++)
            k[i] = (unsigned char)(n * 31 + i * 7 + 70);
        vl = 99;
        ck_assert_int_eq(cnb_registry_lookup_one(r, k, n, &ow, vb, sizeof vb, &vl), 1);
        ck_assert_uint_eq(vl, n < 8 ? n : 8);
        ck_assert_mem_eq(vb, k, vl);
        ck_assert(is_owner(&ow, &a));
        ck_assert_int_eq(cnb_registry_lookup(r, k, n, &res), 1);
        for (size_t i = 0; i < n; i++) { /* one byte off: absent */
            memcpy(k2, k, n);
            k2[i] ^= 0x40;
            ck_assert_int_eq(cnb_registry_lookup_one(r, k2, n, &ow, vb, sizeof vb, &vl), 0);
        }
    }
    /* a value longer than the buffer */
    ck_assert_int_eq(cnb_registry_register(r, "big", 3, &a, "0123456789", 10, NULL), 0);
    ck_assert_int_eq(cnb_registry_lookup_one(r, "big", 3, &ow, vb, sizeof vb, &vl), CNB_ENOSPC);
    ck_assert_uint_eq(vl, 10);
    /* -0.0 finds 0.0's entry */
    static const unsigned char pos[] = {131, 70, 0, 0, 0, 0, 0, 0, 0, 0};
    static const unsigned char neg[] = {131, 70, 128, 0, 0, 0, 0, 0, 0, 0};
    ck_assert_int_eq(cnb_registry_register(r, pos, sizeof pos, &a, "x", 1, NULL), 0);
    ck_assert_int_eq(cnb_registry_lookup_one(r, neg, sizeof neg, &ow, vb, sizeof vb, &vl), 1);
    ck_assert_mem_eq(vb, "x", 1);
    /* bad arguments */
    ck_assert_int_eq(cnb_registry_lookup_one(r, "k", 1, NULL, vb, sizeof vb, &vl), CNB_EINVAL);
    ck_assert_int_eq(cnb_registry_lookup_one(r, "k", 1, &ow, vb, sizeof vb, NULL), CNB_EINVAL);
    ck_assert_int_eq(cnb_registry_lookup_one(r, "k", 1, &ow, NULL, 1, &vl), CNB_EINVAL);
    ck_assert_int_eq(cnb_registry_lookup_one(r, NULL, 1, &ow, vb, sizeof vb, &vl), CNB_EINVAL);
    ck_assert_int_eq(cnb_registry_lookup_one(NULL, "k", 1, &ow, vb, sizeof vb, &vl), CNB_EINVAL);
    cnb_registry_result_free(&res);
    close_unlink(r, NULL);
    struct cnb_registry *d = open_kind(CNB_REG_DUPLICATE, NULL);
    ck_assert_int_eq(cnb_registry_lookup_one(d, "k", 1, &ow, vb, sizeof vb, &vl), CNB_EINVAL);
    close_unlink(d, NULL);
}
END_TEST

START_TEST(huge_value)
{
    const char *path = new_path();
    struct cnb_registry *r = open_kind(CNB_REG_UNIQUE, path);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    size_t n = 20u << 20;
    unsigned char *v = malloc(n);
    ck_assert_ptr_nonnull(v);
    for (size_t i = 0; i < n; i++)
        v[i] = (unsigned char)(i * 31 + (i >> 12));
    cnb_pid_t a = mkpid("a@h", 1, 1);
    ck_assert_int_eq(cnb_registry_register(r, "big", 3, &a, v, n, NULL), 0);
    ck_assert_int_eq(cnb_registry_register(r, "small", 5, &a, "s", 1, NULL), 0);
    ck_assert_int_eq(cnb_registry_lookup(r, "big", 3, &res), 1);
    ck_assert_uint_eq(res.items[0].value_len, n);
    ck_assert(memcmp(res.items[0].value, v, n) == 0);
    /* freed space is reused: registering it again does not grow the arena */
    ck_assert_int_eq(cnb_registry_unregister(r, "big", 3, &a), 1);
    cnb_registry_info_t i1, i2;
    cnb_registry_info(r, &i1);
    ck_assert_int_eq(cnb_registry_register(r, "big2", 4, &a, v, n, NULL), 0);
    cnb_registry_info(r, &i2);
    ck_assert_uint_lt(i2.arena_used - i1.arena_used, n / 2);
    free(v);
    cnb_registry_result_free(&res);
    close_unlink(r, path);
}
END_TEST

static int is_even_value(void *ctx, const void *value, size_t len)
{
    (void)ctx;
    return len == 3 && ((const unsigned char *)value)[2] % 2 == 0;
}

START_TEST(unregister_match_and_keys)
{
    struct cnb_registry *r = open_kind(CNB_REG_DUPLICATE, NULL);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    cnb_pid_t a = mkpid("a@h", 1, 1), b = mkpid("a@h", 2, 1);
    unsigned char v[8];
    for (uint32_t i = 0; i < 10; i++)
        ck_assert_int_eq(cnb_registry_register(r, "k", 1, &a, v, etf_int(v, i), NULL), 0);
    ck_assert_int_eq(cnb_registry_register(r, "k", 1, &b, v, etf_int(v, 2), NULL), 0);
    ck_assert_int_eq(cnb_registry_unregister_match(r, "k", 1, &a, is_even_value, NULL), 5);
    ck_assert_int_eq(cnb_registry_values(r, "k", 1, &a, &res), 5);
    for (size_t i = 0; i < res.n; i++)
        ck_assert_int_eq(res.items[i].value[2] % 2, 1);
    ck_assert_int_eq(cnb_registry_values(r, "k", 1, &b, &res), 1);

    /* keys of an owner across every stripe */
    unsigned char k[16];
    for (uint32_t i = 0; i < 1000; i++)
        ck_assert_int_eq(cnb_registry_register(r, k, etf_int(k, 1000 + i), &b, "v", 1, NULL), 0);
    ck_assert_int_eq(cnb_registry_keys(r, &b, &res), 1001);
    char *seen = calloc(1000, 1);
    for (size_t i = 0; i < res.n; i++) {
        const cnb_registry_item_t *it = &res.items[i];
        if (it->key_len == 1)
            continue;
        ck_assert_int_eq(it->key_len, 6);
        uint32_t x = ((uint32_t)it->key[2] << 24 | (uint32_t)it->key[3] << 16 |
                      (uint32_t)it->key[4] << 8 | it->key[5]) - 1000;
        ck_assert_uint_lt(x, 1000);
        ck_assert_int_eq(seen[x]++, 0);
    }
    free(seen);
    ck_assert_int_eq(cnb_registry_keys(r, &a, &res), 5);
    cnb_pid_t nobody = mkpid("nobody@h", 1, 1);
    ck_assert_int_eq(cnb_registry_keys(r, &nobody, &res), 0);
    cnb_registry_result_free(&res);
    close_unlink(r, NULL);
}
END_TEST

START_TEST(remove_owner_and_node)
{
    struct cnb_registry *r = open_kind(CNB_REG_UNIQUE, NULL);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    cnb_pid_t a1 = mkpid("a@h", 1, 1), a2 = mkpid("a@h", 2, 1), a3 = mkpid("a@h", 3, 2),
              b = mkpid("b@h", 1, 1);
    unsigned char k[16];
    for (uint32_t i = 0; i < 400; i++) {
        const cnb_pid_t *o = i % 4 == 0 ? &a1 : i % 4 == 1 ? &a2 : i % 4 == 2 ? &a3 : &b;
        ck_assert_int_eq(cnb_registry_register(r, k, etf_int(k, i), o, "v", 1, NULL), 0);
    }
    ck_assert_int_eq(cnb_registry_remove_owner(r, &a1), 100);
    ck_assert_int_eq(cnb_registry_remove_owner(r, &a1), 0);
    ck_assert_int_eq(cnb_registry_count(r), 300);
    ck_assert_int_eq(cnb_registry_remove_node(r, "a@h", 2), 100); /* only creation 2 */
    ck_assert_int_eq(cnb_registry_keys(r, &a2, &res), 100);
    ck_assert_int_eq(cnb_registry_remove_node(r, "a@h", 0), 100);
    ck_assert_int_eq(cnb_registry_remove_node(r, "zz@h", 0), 0);
    ck_assert_int_eq(cnb_registry_count(r), 100);
    ck_assert_int_eq(cnb_registry_keys(r, &b, &res), 100);
    cnb_registry_result_free(&res);
    close_unlink(r, NULL);
}
END_TEST

START_TEST(meta)
{
    struct cnb_registry *r = open_kind(CNB_REG_UNIQUE, NULL);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    ck_assert_int_eq(cnb_registry_meta_put(r, "m", 1, "one", 3), 0);
    ck_assert_int_eq(cnb_registry_meta_get(r, "m", 1, &res), 1);
    ck_assert_mem_eq(res.items[0].value, "one", 3);
    ck_assert_int_eq(cnb_registry_meta_put(r, "m", 1, "three", 5), 0);
    ck_assert_int_eq(cnb_registry_meta_get(r, "m", 1, &res), 1);
    ck_assert_int_eq(res.items[0].value_len, 5);
    ck_assert_mem_eq(res.items[0].value, "three", 5);
    ck_assert_int_eq(cnb_registry_count(r), 0); /* meta is not counted */
    ck_assert_int_eq(cnb_registry_lookup(r, "m", 1, &res), 0);
    ck_assert_int_eq(cnb_registry_meta_delete(r, "m", 1), 0);
    ck_assert_int_eq(cnb_registry_meta_get(r, "m", 1, &res), CNB_ENOENT);
    cnb_registry_result_free(&res);
    close_unlink(r, NULL);
}
END_TEST

static int keep_odd(void *ctx, const cnb_registry_item_t *it)
{
    (void)ctx;
    return it->key[it->key_len - 1] % 2;
}

START_TEST(scan_once)
{
    cnb_registry_opts_t o = {0};
    o.kind = CNB_REG_DUPLICATE;
    o.stripes = 8;
    struct cnb_registry *r;
    ck_assert_int_eq(cnb_registry_open(&o, &r), 0);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    cnb_pid_t a = mkpid("a@h", 1, 1);
    unsigned char k[16];
    enum { N = 3000 };
    for (uint32_t i = 0; i < N; i++) /* stable keys, some duplicated */
        for (uint32_t d = 0; d < (i % 7 == 0 ? 3u : 1u); d++)
            ck_assert_int_eq(cnb_registry_register(r, k, etf_int(k, i), &a, "v", 1, NULL), 0);
    uint32_t expect = cnb_registry_count(r);
    unsigned char *seen = calloc(N, 1);
    cnb_registry_cursor_t cur = {0, 0};
    uint32_t total = 0, calls = 0, churn = 0;
    while (!cur.done) {
        ssize_t n = cnb_registry_scan(r, &cur, 17, NULL, NULL, &res);
        ck_assert_int_ge(n, 0);
        calls++;
        for (size_t i = 0; i < res.n; i++) {
            const cnb_registry_item_t *it = &res.items[i];
            if (it->key_len == 6 && it->key[1] == 98) {
                uint32_t x = (uint32_t)it->key[2] << 24 | (uint32_t)it->key[3] << 16 |
                             (uint32_t)it->key[4] << 8 | it->key[5];
                if (x >= 1000000)
                    continue; /* churn keys */
                ck_assert_uint_lt(x, N);
                seen[x]++;
            } else {
                seen[it->key[2]]++;
            }
            total++;
        }
        /* churn between calls: insert and remove other keys, growing tables */
        for (int j = 0; j < 40; j++, churn++) {
            ck_assert_int_eq(cnb_registry_register(r, k, etf_int(k, 1000000 + churn), &a,
                                                   "c", 1, NULL), 0);
            if (churn % 3 == 0)
                ck_assert_int_eq(cnb_registry_unregister(r, k, etf_int(k, 1000000 + churn / 2),
                                                         &a), 1);
        }
    }
    ck_assert_uint_eq(total, expect);
    for (uint32_t i = 0; i < N; i++)
        ck_assert_int_eq(seen[i], i % 7 == 0 ? 3 : 1);
    ck_assert_uint_gt(calls, 10);
    free(seen);

    /* with a predicate */
    uint32_t kept = 0;
    cur = (cnb_registry_cursor_t){0, 0};
    while (!cur.done) {
        ssize_t n = cnb_registry_scan(r, &cur, 0, keep_odd, NULL, &res);
        ck_assert_int_ge(n, 0);
        for (size_t i = 0; i < res.n; i++)
            ck_assert_int_eq(res.items[i].key[res.items[i].key_len - 1] % 2, 1);
        kept += (uint32_t)n;
    }
    ck_assert_uint_gt(kept, 0);
    cnb_registry_result_free(&res);
    close_unlink(r, NULL);
}
END_TEST

START_TEST(feed_events)
{
    cnb_registry_opts_t o = {0};
    o.feed_slots = 16;
    o.feed_slot_size = 128;
    struct cnb_registry *r;
    ck_assert_int_eq(cnb_registry_open(&o, &r), 0);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    cnb_pid_t a = mkpid("a@h", 7, 2);
    uint64_t pos = cnb_registry_feed_head(r), missed = 99;
    ck_assert_int_eq(cnb_registry_feed_poll(r, &pos, 0, &res, &missed), 0);
    ck_assert_int_eq(missed, 0);
    ck_assert_int_eq(cnb_registry_register(r, "k1", 2, &a, "v1", 2, NULL), 0);
    ck_assert_int_eq(cnb_registry_update_value(r, "k1", 2, &a, "v2", 2), 1);
    ck_assert_int_eq(cnb_registry_unregister(r, "k1", 2, &a), 1);
    ck_assert_int_eq(cnb_registry_register(r, "k1", 2, &a, "v1", 2, NULL), 0);
    ck_assert_int_eq(cnb_registry_register(r, "k1", 2, &a, "v1", 2, NULL), CNB_EEXIST);
    ck_assert_int_eq(cnb_registry_feed_poll(r, &pos, 0, &res, &missed), 4);
    ck_assert_int_eq(missed, 0);
    ck_assert_int_eq(res.items[0].event, CNB_REG_EV_REGISTER);
    ck_assert_int_eq(res.items[1].event, CNB_REG_EV_UPDATE);
    ck_assert_mem_eq(res.items[1].value, "v2", 2);
    ck_assert_int_eq(res.items[2].event, CNB_REG_EV_UNREGISTER);
    ck_assert_int_eq(res.items[3].event, CNB_REG_EV_REGISTER);
    for (int i = 0; i < 4; i++) {
        ck_assert(is_owner(&res.items[i].owner, &a));
        ck_assert_mem_eq(res.items[i].key, "k1", 2);
        ck_assert_uint_eq(res.items[i].seq, pos - 4 + (uint64_t)i);
    }
    ck_assert_int_eq(cnb_registry_feed_poll(r, &pos, 0, &res, &missed), 0);

    /* too large for a slot */
    unsigned char big[200];
    memset(big, 1, sizeof big);
    ck_assert_int_eq(cnb_registry_register(r, "k2", 2, &a, big, sizeof big, NULL), 0);
    ck_assert_int_eq(cnb_registry_register(r, big, sizeof big, &a, "v", 1, NULL), 0);
    ck_assert_int_eq(cnb_registry_feed_poll(r, &pos, 0, &res, &missed), 2);
    ck_assert_uint_eq(res.items[0].flags, CNB_REG_EVF_VALUE_OMITTED);
    ck_assert_ptr_null(res.items[0].value);
    ck_assert_uint_eq(res.items[0].value_len, sizeof big);
    ck_assert_mem_eq(res.items[0].key, "k2", 2);
    ck_assert_uint_eq(res.items[1].flags, CNB_REG_EVF_VALUE_OMITTED | CNB_REG_EVF_KEY_OMITTED);
    ck_assert_ptr_null(res.items[1].key);
    ck_assert_uint_eq(res.items[1].key_len, sizeof big);

    /* a listener that falls behind is told how many it missed */
    unsigned char k[16];
    for (uint32_t i = 0; i < 50; i++)
        ck_assert_int_eq(cnb_registry_register(r, k, etf_int(k, i), &a, "v", 1, NULL), 0);
    ck_assert_int_eq(cnb_registry_feed_poll(r, &pos, 0, &res, &missed), 16);
    ck_assert_uint_eq(missed, 34);
    ck_assert_uint_eq(res.items[15].seq + 1, cnb_registry_feed_head(r));
    /* max bounds one poll */
    for (uint32_t i = 50; i < 60; i++)
        ck_assert_int_eq(cnb_registry_register(r, k, etf_int(k, i), &a, "v", 1, NULL), 0);
    ck_assert_int_eq(cnb_registry_feed_poll(r, &pos, 4, &res, &missed), 4);
    ck_assert_int_eq(cnb_registry_feed_poll(r, &pos, 100, &res, &missed), 6);
    ck_assert_uint_eq(missed, 0);
    cnb_registry_result_free(&res);
    close_unlink(r, NULL);
}
END_TEST

static int open_err(const char *path, char *err, size_t errlen, unsigned flags)
{
    cnb_registry_opts_t o = {0};
    o.path = path;
    o.flags = flags;
    o.errbuf = err;
    o.errbuf_len = errlen;
    struct cnb_registry *r = NULL;
    int rc = cnb_registry_open(&o, &r);
    if (rc == 0)
        cnb_registry_close(r);
    return rc;
}

static void write_file(const char *path, const void *data, size_t n, mode_t mode)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, mode);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, n), (ssize_t)n);
    fchmod(fd, mode);
    close(fd);
}

static void patch_file(const char *path, off_t off, const void *data, size_t n)
{
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, data, n, off), (ssize_t)n);
    close(fd);
}

START_TEST(refuse_bad_files)
{
    char err[256];
    const char *path = new_path();
    ck_assert_int_eq(open_err(path, err, sizeof err, 0), CNB_ENOENT);
    ck_assert_ptr_nonnull(strstr(err, "no such"));

    /* a foreign file, small and large */
    write_file(path, "hello, world\n", 13, 0600);
    ck_assert_int_eq(open_err(path, err, sizeof err, CNB_REG_CREATE), CNB_EBADFILE);
    ck_assert_ptr_nonnull(strstr(err, "too small"));
    char *junk = malloc(1 << 16);
    memset(junk, 'A', 1 << 16);
    write_file(path, junk, 1 << 16, 0600);
    free(junk);
    ck_assert_int_eq(open_err(path, err, sizeof err, CNB_REG_CREATE), CNB_EBADFILE);
    ck_assert_ptr_nonnull(strstr(err, "magic"));
    unlink(path);

    /* a real one, then damaged in several ways */
    /* (the segment lives while a process has it open: r stays open) */
    struct cnb_registry *r = open_kind(CNB_REG_UNIQUE, path);
    cnb_pid_t a = mkpid("a@h", 1, 1);
    ck_assert_int_eq(cnb_registry_register(r, "k", 1, &a, "v", 1, NULL), 0);
    ck_assert_int_eq(open_err(path, err, sizeof err, CNB_REG_CREATE | CNB_REG_EXCL),
                     CNB_EEXIST);
    ck_assert_int_eq(open_err(path, err, sizeof err, 0), 0);

    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 0777, 0600);
    chmod(path, 0644);
    ck_assert_int_eq(open_err(path, err, sizeof err, 0), CNB_EPERM);
    ck_assert_ptr_nonnull(strstr(err, "0600"));
    chmod(path, 0600);

    unsigned char b;
    int fd = open(path, O_RDONLY);
    ck_assert_int_eq(pread(fd, &b, 1, 40), 1); /* inside the immutable header */
    close(fd);
    unsigned char nb = b ^ 0x55;
    patch_file(path, 40, &nb, 1);
    ck_assert_int_eq(open_err(path, err, sizeof err, 0), CNB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(err, "checksum"));
    patch_file(path, 40, &b, 1);
    ck_assert_int_eq(open_err(path, err, sizeof err, 0), 0);

    uint32_t ver = 99;
    patch_file(path, 8, &ver, 4);
    ck_assert_int_eq(open_err(path, err, sizeof err, 0), CNB_EVERSION);
    ck_assert_ptr_nonnull(strstr(err, "version"));
    ver = 1;
    patch_file(path, 8, &ver, 4);

    patch_file(path, 0, "XXXX", 4);
    ck_assert_int_eq(open_err(path, err, sizeof err, 0), CNB_EBADFILE);
    patch_file(path, 0, "CNBR", 4);
    cnb_registry_close(r);

    /* once its creator closed it the segment is gone, and so is the name */
    ck_assert_int_eq(open_err(path, err, sizeof err, 0), CNB_ENOENT);
    r = open_kind(CNB_REG_UNIQUE, path); /* a dangling name is taken over */
    cnb_registry_close(r);

    /* kind mismatch */
    unlink(path);
    r = open_kind(CNB_REG_DUPLICATE, path);
    cnb_registry_opts_t o = {0};
    struct cnb_registry *r2;
    o.path = path;
    o.kind = CNB_REG_UNIQUE;
    ck_assert_int_eq(cnb_registry_open(&o, &r2), CNB_EINVAL);
    cnb_registry_close(r);
    ck_assert_int_eq(cnb_registry_unlink(path), 0);
    ck_assert_int_eq(cnb_registry_unlink(path), CNB_ENOENT);
}

/* A segment copied into a plain file (which any process could truncate under
 * a mapping: SIGBUS) is refused before it is mapped. */
START_TEST(refuse_unsealed_file)
{
    char err[256];
    const char *path = new_path();
    char plain[160];
    snprintf(plain, sizeof plain, "%s.plain", path);
    struct cnb_registry *r = open_kind(CNB_REG_UNIQUE, path);
    int in = open(path, O_RDONLY);
    ck_assert_int_ge(in, 0);
    struct stat sb;
    ck_assert_int_eq(fstat(in, &sb), 0);
    char *buf = malloc((size_t)sb.st_size);
    ck_assert_int_eq(pread(in, buf, (size_t)sb.st_size, 0), sb.st_size);
    close(in);
    write_file(plain, buf, (size_t)sb.st_size, 0600);
    free(buf);
    ck_assert_int_eq(open_err(plain, err, sizeof err, 0), CNB_EPERM);
    ck_assert_ptr_nonnull(strstr(err, "F_SEAL_SHRINK"));
    unlink(plain);
    cnb_registry_close(r);
    unlink(path);
}
END_TEST

START_TEST(two_handles_share)
{
    const char *path = new_path();
    struct cnb_registry *r1 = open_kind(CNB_REG_UNIQUE, path);
    struct cnb_registry *r2 = open_kind(0, path);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    cnb_pid_t a = mkpid("a@h", 1, 1);
    unsigned char k[16];
    for (uint32_t i = 0; i < 20000; i++) /* grows the file through r1 */
        ck_assert_int_eq(cnb_registry_register(r1, k, etf_int(k, i), &a, "v", 1, NULL), 0);
    ck_assert_int_eq(cnb_registry_count(r2), 20000);
    for (uint32_t i = 0; i < 20000; i += 97) /* r2 remaps on demand */
        ck_assert_int_eq(cnb_registry_lookup(r2, k, etf_int(k, i), &res), 1);
    ck_assert_int_eq(cnb_registry_unregister(r2, k, etf_int(k, 5), &a), 1);
    ck_assert_int_eq(cnb_registry_lookup(r1, k, etf_int(k, 5), &res), 0);
    cnb_registry_info_t info;
    cnb_registry_info(r1, &info);
    ck_assert_uint_eq(info.attached, 2);
    ck_assert_uint_gt(info.generation, 0);
    cnb_registry_result_free(&res);
    close_unlink(r2, NULL);
    close_unlink(r1, path);
}
END_TEST

/* ---- growth while readers read ---------------------------------------------- */

struct grow_ctx {
    struct cnb_registry *r;
    volatile int stop;
    long lookups;
    int errors;
};

static void *grow_reader(void *p)
{
    struct grow_ctx *c = p;
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    unsigned char k[16];
    uint32_t i = 0;
    unsigned char kb[8][16];
    cnb_registry_key_t keys[8];
    size_t counts[8];
    while (!c->stop) {
        if (i % 2) { /* every other round, a batch of 8 keys */
            for (int b = 0; b < 8; b++)
                keys[b] = (cnb_registry_key_t){kb[b], etf_int(kb[b], (i + 37 * b) % 500)};
            ssize_t n = cnb_registry_lookup_many(c->r, keys, 8, &res, counts);
            if (n != 8)
                c->errors++;
            for (int b = 0; n == 8 && b < 8; b++)
                if (counts[b] != 1 || res.items[b].value_len != keys[b].len ||
                    memcmp(res.items[b].value, kb[b], keys[b].len) != 0)
                    c->errors++;
        }
        uint32_t x = i++ % 500;
        size_t kl = etf_int(k, x);
        ssize_t n = cnb_registry_lookup(c->r, k, kl, &res);
        if (n != 1 || res.items[0].value_len != kl || memcmp(res.items[0].value, k, kl) != 0)
            c->errors++;
        c->lookups++;
    }
    cnb_registry_result_free(&res);
    return NULL;
}

START_TEST(growth_while_reading)
{
    const char *path = new_path();
    cnb_registry_opts_t o = {0};
    o.path = path;
    o.flags = CNB_REG_CREATE;
    o.stripes = 4;
    struct cnb_registry *w, *rd;
    ck_assert_int_eq(cnb_registry_open(&o, &w), 0);
    ck_assert_int_eq(cnb_registry_open(&o, &rd), 0); /* a second mapping */
    cnb_pid_t a = mkpid("a@h", 1, 1);
    unsigned char k[16];
    for (uint32_t i = 0; i < 500; i++) {
        size_t kl = etf_int(k, i);
        ck_assert_int_eq(cnb_registry_register(w, k, kl, &a, k, kl, NULL), 0);
    }
    cnb_registry_info_t i0, i1;
    cnb_registry_info(w, &i0);
    struct grow_ctx c1 = {rd, 0, 0, 0}, c2 = {w, 0, 0, 0};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, grow_reader, &c1);
    pthread_create(&t2, NULL, grow_reader, &c2);
    for (uint32_t i = 500; i < 200000; i++) {
        size_t kl = etf_int(k, i);
        ck_assert_int_eq(cnb_registry_register(w, k, kl, &a, k, kl, NULL), 0);
        if (i % 3 == 0)
            ck_assert_int_eq(cnb_registry_unregister(w, k, etf_int(k, i - 1), &a), 1);
    }
    c1.stop = c2.stop = 1;
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    cnb_registry_info(w, &i1);
    ck_assert_int_eq(c1.errors, 0);
    ck_assert_int_eq(c2.errors, 0);
    ck_assert_int_gt(c1.lookups, 0);
    ck_assert_uint_gt(i1.generation, i0.generation);
    ck_assert_uint_gt(i1.file_size, i0.file_size);
    close_unlink(rd, NULL);
    close_unlink(w, path);
}
END_TEST

/* ---- attach records ------------------------------------------------------------ */

START_TEST(purge_dead_attacher)
{
    const char *path = new_path();
    struct cnb_registry *r = open_kind(CNB_REG_UNIQUE, path);
    cnb_pid_t mine = mkpid("parent@h", 1, 1);
    ck_assert_int_eq(cnb_registry_register(r, "p", 1, &mine, "v", 1, NULL), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        cnb_registry_opts_t o = {0};
        o.path = path;
        o.owner_node = "child@h";
        o.owner_creation = 9;
        struct cnb_registry *c;
        if (cnb_registry_open(&o, &c) != 0)
            _exit(2);
        unsigned char k[16];
        cnb_pid_t p = mkpid("child@h", 5, 9), q = mkpid("child@h", 5, 8);
        for (uint32_t i = 0; i < 100; i++)
            if (cnb_registry_register(c, k, etf_int(k, 1000 + i), i < 90 ? &p : &q, "v", 1,
                                      NULL))
                _exit(3);
        kill(getpid(), SIGKILL); /* die without closing */
        _exit(4);
    }
    int status;
    waitpid(child, &status, 0);
    ck_assert(WIFSIGNALED(status));
    ck_assert_int_eq(cnb_registry_count(r), 101);
    cnb_registry_info_t info;
    cnb_registry_info(r, &info);
    ck_assert_uint_eq(info.attached, 2);
    ck_assert_int_eq(cnb_registry_purge(r), 1);
    /* entries of child@h creation 9 went with it; creation 8 stays */
    ck_assert_int_eq(cnb_registry_count(r), 11);
    cnb_registry_info(r, &info);
    ck_assert_uint_eq(info.attached, 1);
    ck_assert_int_eq(cnb_registry_purge(r), 0);
    close_unlink(r, path);
}
END_TEST

START_TEST(initial_capacity)
{
    cnb_registry_opts_t o = {0};
    o.initial_capacity = 100000;
    struct cnb_registry *r;
    ck_assert_int_eq(cnb_registry_open(&o, &r), 0);
    cnb_registry_info_t i0, i1;
    cnb_registry_info(r, &i0);
    cnb_pid_t a = mkpid("a@h", 1, 1);
    unsigned char k[16];
    for (uint32_t i = 0; i < 1000; i++)
        ck_assert_int_eq(cnb_registry_register(r, k, etf_int(k, i), &a, "v", 1, NULL), 0);
    cnb_registry_info(r, &i1);
    ck_assert_uint_gt(i0.arena_used, 100000 * 16);
    close_unlink(r, NULL);
}
END_TEST

static Suite *registry_suite(void)
{
    Suite *s = suite_create("registry");
    TCase *tc = tcase_create("semantics");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, unique_basic);
    tcase_add_test(tc, duplicate_basic);
    tcase_add_test(tc, int_and_float_distinct);
    tcase_add_test(tc, zero_and_negative_zero_one_key);
    tcase_add_test(tc, freed_space_reused_for_new_entries);
    tcase_add_test(tc, empty_key_and_value);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, huge_value);
    tcase_add_test(tc, lookup_many_matches_lookup);
    tcase_add_test(tc, lookup_one_matches_lookup);
    tcase_add_test(tc, unregister_match_and_keys);
    tcase_add_test(tc, remove_owner_and_node);
    tcase_add_test(tc, meta);
    tcase_add_test(tc, scan_once);
    tcase_add_test(tc, feed_events);
    tcase_add_test(tc, initial_capacity);
    suite_add_tcase(s, tc);
    TCase *tf = tcase_create("segment");
    tcase_set_timeout(tf, 120);
    tcase_add_test(tf, refuse_bad_files);
    tcase_add_test(tf, refuse_unsealed_file);
    tcase_add_test(tf, two_handles_share);
    tcase_add_test(tf, growth_while_reading);
    tcase_add_test(tf, purge_dead_attacher);
    suite_add_tcase(s, tf);
    return s;
}

int main(void)
{
    return cnb_check_run(registry_suite());
}
