/* test_frame.c: Check tests of connected-mode framing, distribution headers,
 * fragment reassembly (cnode/frame.c), the bounds-checked term skipper
 * (cnode/etf_check.c, funs included) and epmd reply parsing (cnode/epmd.c). */
#include <check.h>
#include <ei.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etf_check.h"
#include "frame.h"
#include "node_int.h"

START_TEST(frame_packets_in_random_splits)
{
    /* A stream of: tick, 3-byte packet, tick, 300-byte packet. */
    cnb_buf_t s = {0};
    uint8_t hdr[4];
    cnb__put32(hdr, 0);
    cnb__buf_put(&s, hdr, 4);
    cnb__put32(hdr, 3);
    cnb__buf_put(&s, hdr, 4);
    cnb__buf_put(&s, "abc", 3);
    cnb__put32(hdr, 0);
    cnb__buf_put(&s, hdr, 4);
    cnb__put32(hdr, 300);
    cnb__buf_put(&s, hdr, 4);
    uint8_t big[300];
    memset(big, 7, sizeof(big));
    cnb__buf_put(&s, big, 300);
    srand(1);
    for (int round = 0; round < 200; round++) {
        cnb_buf_t in = {0};
        size_t fed = 0, got_sizes[8], ngot = 0;
        while (fed < s.len || in.len > in.off) {
            if (fed < s.len) {
                size_t n = 1 + (size_t)rand() % (s.len - fed);
                cnb__buf_put(&in, s.data + fed, n);
                fed += n;
            }
            for (;;) {
                const uint8_t *pkt;
                size_t plen;
                long used = cnb__frame_next(in.data + in.off, in.len - in.off, 1000, &pkt, &plen);
                ck_assert(used >= 0);
                if (used == 0)
                    break;
                in.off += (size_t)used;
                ck_assert(ngot < 8);
                got_sizes[ngot++] = plen;
            }
            if (fed == s.len && in.len == in.off)
                break;
        }
        ck_assert_uint_eq(ngot, 4);
        ck_assert_uint_eq(got_sizes[0], 0);
        ck_assert_uint_eq(got_sizes[1], 3);
        ck_assert_uint_eq(got_sizes[2], 0);
        ck_assert_uint_eq(got_sizes[3], 300);
        cnb__buf_free(&in);
    }
    cnb__buf_free(&s);
}
END_TEST

START_TEST(frame_too_big)
{
    uint8_t b[8] = {0, 0, 0x10, 0, 1, 2, 3, 4};
    const uint8_t *pkt;
    size_t plen;
    ck_assert_int_eq(cnb__frame_next(b, 8, 100, &pkt, &plen), CNB_ETOOBIG);
    ck_assert_int_eq(cnb__frame_next(b, 3, 100, &pkt, &plen), 0);
}
END_TEST

START_TEST(dist_headers)
{
    cnb_dist_pkt_t p;
    uint8_t pass[] = {112, 131, 106};
    ck_assert_int_eq(cnb__dist_parse(pass, sizeof(pass), &p), 0);
    ck_assert_int_eq(p.kind, CNB_PKT_PASS);
    ck_assert_uint_eq(p.body_len, 2);
    uint8_t hdr[] = {131, 68, 0, 106};
    ck_assert_int_eq(cnb__dist_parse(hdr, sizeof(hdr), &p), 0);
    ck_assert_int_eq(p.kind, CNB_PKT_HDR);
    ck_assert_uint_eq(p.body_len, 1);
    uint8_t cache[] = {131, 68, 1, 8, 0, 3, 'a', 'b', 'c'};
    ck_assert_int_eq(cnb__dist_parse(cache, sizeof(cache), &p), CNB_EPROTO);
    uint8_t start[19 + 1] = {131, 69, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2, 0, 106};
    ck_assert_int_eq(cnb__dist_parse(start, sizeof(start), &p), 0);
    ck_assert_int_eq(p.kind, CNB_PKT_FRAG_START);
    ck_assert_uint_eq(p.seq, 9);
    ck_assert_uint_eq(p.frag, 2);
    uint8_t cont[18 + 2] = {131, 70, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 'x', 'y'};
    ck_assert_int_eq(cnb__dist_parse(cont, sizeof(cont), &p), 0);
    ck_assert_int_eq(p.kind, CNB_PKT_FRAG_CONT);
    ck_assert_uint_eq(p.body_len, 2);
    /* Truncations of every header are errors, never reads past the end. */
    for (size_t n = 0; n < 18; n++)
        ck_assert_int_eq(cnb__dist_parse(start, n, &p), CNB_EPROTO);
    for (size_t n = 0; n < 18; n++)
        ck_assert_int_eq(cnb__dist_parse(cont, n, &p), CNB_EPROTO);
    uint8_t junk[] = {131, 99, 1};
    ck_assert_int_eq(cnb__dist_parse(junk, sizeof(junk), &p), CNB_EPROTO);
}
END_TEST

static cnb_dist_pkt_t frag(int start, uint64_t seq, uint64_t id, const char *data)
{
    cnb_dist_pkt_t p;
    memset(&p, 0, sizeof(p));
    p.kind = start ? CNB_PKT_FRAG_START : CNB_PKT_FRAG_CONT;
    p.seq = seq;
    p.frag = id;
    p.body = (const uint8_t *)data;
    p.body_len = strlen(data);
    return p;
}

START_TEST(fragments_reassemble)
{
    cnb_frags_t t = {0};
    uint8_t *msg;
    size_t len;
    cnb_dist_pkt_t a = frag(1, 5, 3, "hel"), b = frag(0, 5, 2, "lo "), c = frag(0, 5, 1, "world");
    /* Interleaved with another sequence. */
    cnb_dist_pkt_t x = frag(1, 6, 2, "ab"), y = frag(0, 6, 1, "cd");
    ck_assert_int_eq(cnb__frag_add(&t, &a, 1000, &msg, &len), 0);
    ck_assert_int_eq(cnb__frag_add(&t, &x, 1000, &msg, &len), 0);
    ck_assert_int_eq(cnb__frag_add(&t, &b, 1000, &msg, &len), 0);
    ck_assert_int_eq(cnb__frag_add(&t, &y, 1000, &msg, &len), 1);
    ck_assert_uint_eq(len, 4);
    ck_assert_mem_eq(msg, "abcd", 4);
    free(msg);
    ck_assert_int_eq(cnb__frag_add(&t, &c, 1000, &msg, &len), 1);
    ck_assert_uint_eq(len, 11);
    ck_assert_mem_eq(msg, "hello world", 11);
    free(msg);
    ck_assert_uint_eq(t.count, 0);
    /* A one-fragment message. */
    cnb_dist_pkt_t one = frag(1, 7, 1, "z");
    ck_assert_int_eq(cnb__frag_add(&t, &one, 1000, &msg, &len), 1);
    free(msg);
}
END_TEST

START_TEST(fragments_errors)
{
    cnb_frags_t t = {0};
    uint8_t *msg;
    size_t len;
    cnb_dist_pkt_t a = frag(1, 5, 3, "hel"), skip = frag(0, 5, 1, "x"), orphan = frag(0, 9, 1, "y");
    ck_assert_int_eq(cnb__frag_add(&t, &orphan, 1000, &msg, &len), CNB_EPROTO);
    ck_assert_int_eq(cnb__frag_add(&t, &a, 1000, &msg, &len), 0);
    ck_assert_int_eq(cnb__frag_add(&t, &skip, 1000, &msg, &len), CNB_EPROTO);
    ck_assert_uint_eq(t.count, 0); /* the broken sequence is gone */
    /* Over the limit. */
    cnb_dist_pkt_t b1 = frag(1, 1, 2, "0123456789"), b2 = frag(0, 1, 1, "0123456789");
    ck_assert_int_eq(cnb__frag_add(&t, &b1, 15, &msg, &len), 0);
    ck_assert_int_eq(cnb__frag_add(&t, &b2, 15, &msg, &len), CNB_ETOOBIG);
    ck_assert_uint_eq(t.count, 0);
    /* Partial sequences are freed by clear (ASan checks for leaks). */
    cnb_dist_pkt_t p1 = frag(1, 2, 5, "abc");
    ck_assert_int_eq(cnb__frag_add(&t, &p1, 100, &msg, &len), 0);
    cnb__frag_clear(&t);
    ck_assert_uint_eq(t.count, 0);
}
END_TEST

/* A set of encoded terms of every kind the skipper knows. */
static int encode_samples(ei_x_buff *x, int which)
{
    ei_x_new(x);
    erlang_pid pid = {.num = 1, .serial = 2, .creation = 3};
    strcpy(pid.node, "node@host");
    erlang_ref ref = {.len = 3, .n = {1, 2, 3}, .creation = 4};
    strcpy(ref.node, "node@host");
    switch (which) {
    case 0:
        return ei_x_encode_long(x, 5);
    case 1:
        return ei_x_encode_long(x, 1L << 40);
    case 2:
        return ei_x_encode_double(x, 3.5);
    case 3:
        return ei_x_encode_atom(x, "hello");
    case 4:
        return ei_x_encode_pid(x, &pid);
    case 5:
        return ei_x_encode_ref(x, &ref);
    case 6:
        return ei_x_encode_string(x, "a string");
    case 7:
        return ei_x_encode_binary(x, "bin", 3);
    case 8:
        ei_x_encode_tuple_header(x, 3);
        ei_x_encode_atom(x, "ok");
        ei_x_encode_list_header(x, 2);
        ei_x_encode_long(x, 1000);
        ei_x_encode_pid(x, &pid);
        ei_x_encode_empty_list(x);
        ei_x_encode_map_header(x, 1);
        ei_x_encode_atom(x, "k");
        return ei_x_encode_ref(x, &ref);
    default:
        ei_x_encode_tuple_header(x, 2);
        ei_x_encode_bitstring(x, "\xff\x80", 0, 9);
        return ei_x_encode_fun(x, &(erlang_fun){.type = EI_FUN_EXPORT,
                                                .arity = 2,
                                                .module = "lists",
                                                .u.exprt.func = "map"});
    }
}

/* Every cut of the term t is an error, and every value (in steps of `step`)
 * at every offset gives an error or a length inside the buffer. */
static void cuts_and_corruptions(const uint8_t *t, size_t len, int step)
{
    for (size_t n = 0; n < len; n++) {
        /* An exact-size copy, so ASan catches any read past the end. */
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, t, n);
        ck_assert_int_lt(cnb__etf_skip(cut, n), 0);
        free(cut);
    }
    for (size_t i = 0; i < len; i++)
        for (int v = 0; v < 256; v += step) {
            uint8_t *c = malloc(len);
            memcpy(c, t, len);
            c[i] = (uint8_t)v;
            ck_assert(cnb__etf_skip(c, len) <= (long)len);
            free(c);
        }
}

START_TEST(etf_skip_valid_truncated_corrupted)
{
    for (int which = 0; which < 10; which++) {
        ei_x_buff x;
        ck_assert_int_eq(encode_samples(&x, which), 0);
        const uint8_t *t = (const uint8_t *)x.buff;
        size_t len = (size_t)x.index;
        ck_assert_int_eq(cnb__etf_skip(t, len), (long)len);
        /* Followed by junk: still the term's own length. */
        uint8_t *more = malloc(len + 5);
        memcpy(more, t, len);
        memset(more + len, 0xee, 5);
        ck_assert_int_eq(cnb__etf_skip(more, len + 5), (long)len);
        free(more);
        cuts_and_corruptions(t, len, 17);
        ei_x_free(&x);
    }
}
END_TEST

START_TEST(etf_skip_rejects)
{
    uint8_t cache_ref[] = {82, 1};
    ck_assert_int_lt(cnb__etf_skip(cache_ref, 2), 0);
    uint8_t huge_tuple[] = {105, 0xff, 0xff, 0xff, 0xff, 106};
    ck_assert_int_lt(cnb__etf_skip(huge_tuple, sizeof(huge_tuple)), 0);
    uint8_t huge_list[] = {108, 0xff, 0xff, 0xff, 0xff, 106};
    ck_assert_int_lt(cnb__etf_skip(huge_list, sizeof(huge_list)), 0);
    uint8_t bad_bits[] = {77, 0, 0, 0, 1, 0, 0xff};
    ck_assert_int_lt(cnb__etf_skip(bad_bits, sizeof(bad_bits)), 0);
    ck_assert_int_lt(cnb__etf_skip(NULL, 0), 0);
}
END_TEST

/* A closure: fun of `mod` with the given free-variable bytes (n terms). */
static void encode_closure(ei_x_buff *x, const char *vars, int vars_len, int n)
{
    erlang_fun f;
    memset(&f, 0, sizeof(f));
    f.type = EI_FUN_CLOSURE;
    f.arity = 3;
    strcpy(f.module, "mod");
    f.u.closure.index = 1;
    f.u.closure.old_index = 1;
    f.u.closure.uniq = 123456;
    f.u.closure.n_free_vars = n;
    f.u.closure.free_var_len = vars_len;
    f.u.closure.free_vars = (char *)vars;
    strcpy(f.u.closure.pid.node, "a@h");
    f.u.closure.pid.num = 1;
    f.u.closure.pid.creation = 1;
    ck_assert_int_eq(ei_x_encode_fun(x, &f), 0);
}

/* depth closures, each the only free variable of the one around it. */
static void nested_closures(ei_x_buff *x, int depth)
{
    ei_x_buff in;
    ei_x_new(&in);
    ei_x_encode_atom(&in, "core");
    for (int d = 0; d < depth; d++) {
        ei_x_buff out;
        ei_x_new(&out);
        encode_closure(&out, in.buff, in.index, 1);
        ei_x_free(&in);
        in = out;
    }
    *x = in;
}

START_TEST(etf_skip_funs)
{
    ei_x_buff vars, x;
    ei_x_new(&vars);
    ei_x_encode_atom(&vars, "ok");
    ei_x_encode_long(&vars, 5);
    ei_x_new(&x);
    encode_closure(&x, vars.buff, vars.index, 2);
    uint8_t *t = (uint8_t *)x.buff;
    size_t len = (size_t)x.index;
    ck_assert_int_eq(cnb__etf_skip(t, len), (long)len);
    erlang_fun f;
    int k = 0;
    ck_assert_int_eq(ei_decode_fun(x.buff, &k, &f), 0);
    free_fun(&f);
    cuts_and_corruptions(t, len, 1);
    /* Size one short (the variables overrun it), or one long (they end
     * before it): refused, whatever follows. */
    uint8_t *big = malloc(len + 1);
    memcpy(big, t, len);
    big[len] = 106;
    cnb__put32(big + 1, (uint32_t)len - 2);
    ck_assert_int_lt(cnb__etf_skip(big, len + 1), 0);
    cnb__put32(big + 1, (uint32_t)len);
    ck_assert_int_lt(cnb__etf_skip(big, len + 1), 0);
    /* The smallest Size: module, indexes and pid lie outside the fun. */
    cnb__put32(big + 1, 29);
    ck_assert_int_lt(cnb__etf_skip(big, len + 1), 0);
    free(big);
    /* A pid that is not one, where ei_decode_fun expects it. */
    size_t pid_at = len - (size_t)vars.index - 18; /* NEW_PID: tag, 'a@h', 12 bytes */
    ck_assert_int_eq(t[pid_at], 88);
    t[pid_at] = 97;
    ck_assert_int_lt(cnb__etf_skip(t, len), 0);
    ei_x_free(&x);
    ei_x_free(&vars);
    /* Funs in free variables: 64 deep pass, 65 are refused. */
    nested_closures(&x, 64);
    ck_assert_int_eq(cnb__etf_skip((uint8_t *)x.buff, (size_t)x.index), (long)x.index);
    ei_x_free(&x);
    nested_closures(&x, 65);
    ck_assert_int_eq(cnb__etf_skip((uint8_t *)x.buff, (size_t)x.index), CNB_EMALFORMED);
    ei_x_free(&x);
}
END_TEST

START_TEST(epmd_reply)
{
    uint8_t ok[] = {119, 0, 0x1f, 0x90, 72, 0, 0, 6, 0, 6, 0, 1, 'a', 0, 0};
    ck_assert_int_eq(cnb__epmd_port_reply(ok, sizeof(ok)), 8080);
    ck_assert_int_eq(cnb__epmd_port_reply(ok, 3), 0);
    uint8_t notfound[] = {119, 1};
    ck_assert_int_eq(cnb__epmd_port_reply(notfound, 2), CNB_ENOENT);
    uint8_t junk[] = {1, 2, 3, 4};
    ck_assert_int_eq(cnb__epmd_port_reply(junk, 4), CNB_EPROTO);
    uint8_t old[] = {119, 0, 0x1f, 0x90, 72, 0, 0, 5, 0, 5};
    ck_assert_int_eq(cnb__epmd_port_reply(old, sizeof(old)), CNB_EPROTO);
    uint8_t req[64];
    int n = cnb__epmd_port_request("abc", req, sizeof(req));
    ck_assert_int_eq(n, 6);
    ck_assert_mem_eq(req, "\x00\x04\x7a" "abc", 6);
}
END_TEST

int main(void)
{
    ei_init();
    Suite *s = suite_create("frame");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, frame_packets_in_random_splits);
    tcase_add_test(tc, frame_too_big);
    tcase_add_test(tc, dist_headers);
    tcase_add_test(tc, fragments_reassemble);
    tcase_add_test(tc, fragments_errors);
    tcase_add_test(tc, etf_skip_valid_truncated_corrupted);
    tcase_add_test(tc, etf_skip_rejects);
    tcase_add_test(tc, etf_skip_funs);
    tcase_add_test(tc, epmd_reply);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
