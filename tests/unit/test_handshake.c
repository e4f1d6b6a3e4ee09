/* test_handshake.c: Check tests of the version 6 handshake state machine
 * (cnode/handshake.c): two machines talking to each other through memory, fed
 * whole, byte by byte and in random splits; wrong cookies, refusals, missing
 * flags, truncated and corrupted packets, node names a real node cannot have. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handshake.h"
#include "check_run.h"

#define A_NAME "alpha@host"
#define B_NAME "beta@host"

typedef struct pair {
    cnb_hs_t a, b; /* a initiates, b accepts */
    cnb_buf_t a_out, b_out;
    int a_res, b_res;
} pair_t;

static void pair_init(pair_t *p, const char *cookie_a, const char *cookie_b)
{
    memset(p, 0, sizeof(*p));
    cnb__hs_init(&p->a, CNB_HS_INITIATOR, 2, A_NAME, CNB_DFLAGS_OURS, 1111, cookie_a, 0xdeadbeef,
                 B_NAME);
    cnb__hs_init(&p->b, CNB_HS_ACCEPTOR, 2, B_NAME, CNB_DFLAGS_OURS, 2222, cookie_b, 0x12345678,
                 NULL);
    ck_assert_int_eq(cnb__hs_start(&p->a, &p->a_out), 0);
}

static void pair_free(pair_t *p)
{
    cnb__buf_free(&p->a_out);
    cnb__buf_free(&p->b_out);
}

/* Moves bytes from out (of one side) into hs (the other side), at most `step`
 * bytes at a time (0: all at once, -1: random). Returns the last result. */
static int deliver(cnb_hs_t *to, cnb_buf_t *from_out, cnb_buf_t *to_out, int step,
                   const char *status)
{
    cnb_buf_t in = {0};
    int res = CNB_HS_MORE;
    size_t fed = 0;
    while (fed < from_out->len) {
        size_t n = from_out->len - fed;
        if (step > 0 && (size_t)step < n)
            n = (size_t)step;
        else if (step < 0)
            n = 1 + (size_t)rand() % n;
        cnb__buf_put(&in, from_out->data + fed, n);
        fed += n;
        for (;;) {
            size_t used = 0;
            res = cnb__hs_input(to, in.data + in.off, in.len - in.off, &used, to_out);
            in.off += used;
            if (res == CNB_HS_NAME_RECEIVED) {
                ck_assert_int_eq(cnb__hs_status(to, status ? status : "ok", to_out), 0);
                if (status && (!strcmp(status, "nok") || !strcmp(status, "not_allowed")))
                    break; /* the acceptor is done; it flushes and closes */
            }
            if (res < 0 || res == CNB_HS_DONE || used == 0)
                break;
        }
        if (res < 0 || res == CNB_HS_DONE)
            break;
    }
    from_out->len = from_out->off = 0;
    cnb__buf_free(&in);
    return res;
}

/* Runs the whole exchange. Returns the first negative result or DONE. */
static int run(pair_t *p, int step, const char *status, int *a_res, int *b_res)
{
    *a_res = *b_res = CNB_HS_MORE;
    for (int round = 0; round < 10; round++) {
        if (p->a_out.len) {
            *b_res = deliver(&p->b, &p->a_out, &p->b_out, step, status);
            if (*b_res < 0)
                return *b_res;
        }
        if (p->b_out.len) {
            *a_res = deliver(&p->a, &p->b_out, &p->a_out, step, status);
            if (*a_res < 0)
                return *a_res;
        }
        if (*a_res == CNB_HS_DONE && *b_res == CNB_HS_DONE)
            return CNB_HS_DONE;
        if (!p->a_out.len && !p->b_out.len)
            break;
    }
    return *a_res < 0 ? *a_res : *b_res;
}

START_TEST(handshake_whole)
{
    pair_t p;
    int ar, br;
    pair_init(&p, "cookie", "cookie");
    ck_assert_int_eq(run(&p, 0, NULL, &ar, &br), CNB_HS_DONE);
    ck_assert_str_eq(p.a.peer_name, B_NAME);
    ck_assert_str_eq(p.b.peer_name, A_NAME);
    ck_assert_uint_eq(p.a.peer_creation, 2222);
    ck_assert_uint_eq(p.b.peer_creation, 1111);
    ck_assert(p.a.peer_flags == CNB_DFLAGS_OURS);
    ck_assert(p.b.peer_flags == CNB_DFLAGS_OURS);
    pair_free(&p);
}
END_TEST

START_TEST(handshake_byte_by_byte)
{
    pair_t p;
    int ar, br;
    pair_init(&p, "cookie", "cookie");
    ck_assert_int_eq(run(&p, 1, NULL, &ar, &br), CNB_HS_DONE);
    pair_free(&p);
}
END_TEST

START_TEST(handshake_random_splits)
{
    srand(42);
    for (int i = 0; i < 500; i++) {
        pair_t p;
        int ar, br;
        pair_init(&p, "cookie", "cookie");
        ck_assert_int_eq(run(&p, -1, i % 2 ? "ok" : "ok_simultaneous", &ar, &br), CNB_HS_DONE);
        pair_free(&p);
    }
}
END_TEST

START_TEST(handshake_wrong_cookie)
{
    pair_t p;
    int ar, br;
    pair_init(&p, "cookie", "other");
    ck_assert_int_eq(run(&p, 0, NULL, &ar, &br), CNB_ECOOKIE);
    ck_assert_int_eq(br, CNB_ECOOKIE); /* the acceptor notices first */
    ck_assert_ptr_nonnull(strstr(p.b.err, "wrong cookie"));
    pair_free(&p);
}
END_TEST

START_TEST(handshake_refused)
{
    const char *statuses[] = {"nok", "not_allowed"};
    for (int i = 0; i < 2; i++) {
        pair_t p;
        int ar, br;
        pair_init(&p, "c", "c");
        ck_assert_int_eq(run(&p, 0, statuses[i], &ar, &br), CNB_ECLOSED);
        ck_assert_str_eq(p.a.status, statuses[i]);
        pair_free(&p);
    }
}
END_TEST

START_TEST(handshake_alive_true)
{
    pair_t p;
    int ar, br;
    pair_init(&p, "c", "c");
    ck_assert_int_eq(run(&p, 0, "alive", &ar, &br), CNB_HS_DONE);
    ck_assert(cnb__hs_replaces_old(&p.b));
    pair_free(&p);
}
END_TEST

START_TEST(handshake_wrong_peer_name)
{
    pair_t p;
    int ar, br;
    pair_init(&p, "c", "c");
    snprintf(p.a.expect_peer, sizeof(p.a.expect_peer), "gamma@host");
    ck_assert_int_eq(run(&p, 0, NULL, &ar, &br), CNB_EPROTO);
    ck_assert_ptr_nonnull(strstr(p.a.err, "instead of"));
    pair_free(&p);
}
END_TEST

START_TEST(handshake_missing_flags)
{
    pair_t p;
    int ar, br;
    pair_init(&p, "c", "c");
    /* Rebuild the initiator's name packet without BIG_CREATION. */
    p.a_out.len = 0;
    cnb__hs_init(&p.a, CNB_HS_INITIATOR, 2, A_NAME, CNB_DFLAGS_OURS & ~CNB_DFLAG_BIG_CREATION, 1,
                 "c", 7, B_NAME);
    cnb__hs_start(&p.a, &p.a_out);
    ck_assert_int_eq(run(&p, 0, NULL, &ar, &br), CNB_EPROTO);
    ck_assert_ptr_nonnull(strstr(p.b.err, "mandatory"));
    pair_free(&p);
}
END_TEST

/* Every corruption of one byte of the initiator's name packet is either
 * accepted (harmless bytes such as flags/creation) or refused with an error:
 * never a crash, never a read past the end (ASan run). */
START_TEST(handshake_corrupted_name)
{
    pair_t p;
    pair_init(&p, "c", "c");
    cnb_buf_t orig = {0};
    cnb__buf_put(&orig, p.a_out.data, p.a_out.len);
    for (size_t i = 0; i < orig.len; i++) {
        for (int v = 0; v < 256; v += 51) {
            cnb_hs_t b;
            cnb_buf_t out = {0};
            cnb__hs_init(&b, CNB_HS_ACCEPTOR, 2, B_NAME, CNB_DFLAGS_OURS, 1, "c", 1, NULL);
            uint8_t *copy = malloc(orig.len);
            memcpy(copy, orig.data, orig.len);
            copy[i] = (uint8_t)v;
            size_t used = 0;
            int r = cnb__hs_input(&b, copy, orig.len, &used, &out);
            ck_assert(r == CNB_HS_MORE || r == CNB_HS_NAME_RECEIVED || r < 0);
            ck_assert(used <= orig.len);
            free(copy);
            cnb__buf_free(&out);
        }
    }
    cnb__buf_free(&orig);
    pair_free(&p);
}
END_TEST

START_TEST(handshake_truncated)
{
    pair_t p;
    pair_init(&p, "c", "c");
    for (size_t n = 0; n < p.a_out.len; n++) {
        cnb_hs_t b;
        cnb_buf_t out = {0};
        cnb__hs_init(&b, CNB_HS_ACCEPTOR, 2, B_NAME, CNB_DFLAGS_OURS, 1, "c", 1, NULL);
        size_t used = 99;
        ck_assert_int_eq(cnb__hs_input(&b, p.a_out.data, n, &used, &out), CNB_HS_MORE);
        ck_assert_uint_eq(used, 0);
        cnb__buf_free(&out);
    }
    pair_free(&p);
}
END_TEST

START_TEST(handshake_garbage)
{
    static const char *junk[] = {"GET / HTTP/1.1\r\n\r\n", "\x00\x00", "\x00\x05nabcd",
                                 "\x00\x03Nxy", "\xff\xff\xff\xff"};
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
        cnb_hs_t b;
        cnb_buf_t out = {0};
        cnb__hs_init(&b, CNB_HS_ACCEPTOR, 2, B_NAME, CNB_DFLAGS_OURS, 1, "c", 1, NULL);
        size_t used;
        size_t len = i == 1 ? 2 : strlen(junk[i]);
        if (i == 2)
            len = 7;
        int r = cnb__hs_input(&b, (const uint8_t *)junk[i], len, &used, &out);
        ck_assert_msg(r < 0 || r == CNB_HS_MORE, "junk %zu gave %d", i, r);
        cnb__buf_free(&out);
    }
}
END_TEST

START_TEST(handshake_tls_headers)
{
    /* 4-byte length headers (inet_tls_dist) work the same way. */
    pair_t p;
    memset(&p, 0, sizeof(p));
    cnb__hs_init(&p.a, CNB_HS_INITIATOR, 4, A_NAME, CNB_DFLAGS_OURS, 1, "k", 3, B_NAME);
    cnb__hs_init(&p.b, CNB_HS_ACCEPTOR, 4, B_NAME, CNB_DFLAGS_OURS, 2, "k", 4, NULL);
    cnb__hs_start(&p.a, &p.a_out);
    ck_assert_uint_eq(p.a_out.data[0], 0);
    ck_assert_uint_eq(p.a_out.data[1], 0);
    int ar, br;
    ck_assert_int_eq(run(&p, 3, NULL, &ar, &br), CNB_HS_DONE);
    pair_free(&p);
}
END_TEST

START_TEST(digest_known_value)
{
    /* erlang:md5([atom_to_list(cookie) | integer_to_list(12345)]) */
    static const uint8_t want[16] = {85,  99, 54, 14, 228, 127, 53, 159,
                                     193, 203, 16, 126, 1, 5, 45, 8};
    uint8_t got[16];
    cnb__hs_digest(12345, "cookie", got);
    ck_assert_mem_eq(got, want, 16);
}
END_TEST

/* Node names: what net_kernel lets a node be called passes, the rest (and
 * anything that could forge a log line) is refused. */
START_TEST(node_name_rules)
{
    static const char *good[] = {"a@b", "alpha@host", "n_1-x@host.example.com", "c@127.0.0.1",
                                 "v6@::1", "x@h\xc3\xa9te", "Z9@[weird]!~"};
    static const char *bad[] = {"", "@", "a@", "@h", "noat", "a@b@c", "a b@h", "a@h h",
                                "a.b@h", "a\n@h", "a@h\n2026 [error] x: forged",
                                "a@\x1b[31mred", "a@h\x7f", "a@h\xc2\x9b", "a@h\xff",
                                "\xc3\xa9@h", "a@h\t", "a@h\xe2\x80\xa8"};
    for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++)
        ck_assert_msg(cnb__hs_name_ok((const uint8_t *)good[i], strlen(good[i])), "%s", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        ck_assert_msg(!cnb__hs_name_ok((const uint8_t *)bad[i], strlen(bad[i])), "%s", bad[i]);
    ck_assert(!cnb__hs_name_ok((const uint8_t *)"a\0b@h", 5));
    char longname[300];
    memset(longname, 'a', sizeof(longname));
    longname[1] = '@';
    ck_assert(cnb__hs_name_ok((const uint8_t *)longname, 255));
    ck_assert(!cnb__hs_name_ok((const uint8_t *)longname, 256));
}
END_TEST

/* An acceptor refuses send_name with a bad name before any status, and says
 * which name (raw: the logger escapes it). */
START_TEST(handshake_bad_name_refused)
{
    static const char *bad[] = {"evil\n2026-01-01T00:00:00.000Z [error] x: forged@h",
                                "a@\x1b[2Jhost", "nohost", "a b@h"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        cnb_hs_t a, b;
        cnb_buf_t aout = {0}, bout = {0};
        cnb__hs_init(&a, CNB_HS_INITIATOR, 2, bad[i], CNB_DFLAGS_OURS, 1, "c", 1, NULL);
        ck_assert_int_eq(cnb__hs_start(&a, &aout), 0);
        cnb__hs_init(&b, CNB_HS_ACCEPTOR, 2, B_NAME, CNB_DFLAGS_OURS, 2, "c", 2, NULL);
        size_t used = 0;
        ck_assert_int_eq(cnb__hs_input(&b, aout.data, aout.len, &used, &bout), CNB_EPROTO);
        ck_assert_uint_eq(bout.len, 0);
        ck_assert_ptr_nonnull(strstr(b.err, "bad node name"));
        ck_assert_str_eq(b.peer_name, "");
        cnb__buf_free(&aout);
        cnb__buf_free(&bout);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("handshake");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, handshake_whole);
    tcase_add_test(tc, handshake_byte_by_byte);
    tcase_add_test(tc, handshake_random_splits);
    tcase_add_test(tc, handshake_wrong_cookie);
    tcase_add_test(tc, handshake_refused);
    tcase_add_test(tc, handshake_alive_true);
    tcase_add_test(tc, handshake_wrong_peer_name);
    tcase_add_test(tc, handshake_missing_flags);
    tcase_add_test(tc, handshake_corrupted_name);
    tcase_add_test(tc, handshake_truncated);
    tcase_add_test(tc, handshake_garbage);
    tcase_add_test(tc, handshake_tls_headers);
    tcase_add_test(tc, digest_known_value);
    tcase_add_test(tc, node_name_rules);
    tcase_add_test(tc, handshake_bad_name_refused);
    suite_add_tcase(s, tc);
    return cnb_check_run(s);
}
