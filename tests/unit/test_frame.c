/* test_frame.c: Check tests of connected-mode framing, distribution headers,
 * fragment reassembly and its per-connection bounds (cnode/frame.c), the
 * bounds- and depth-checked term skipper (cnode/etf_check.c, funs included),
 * the decode step of incoming messages (cnode/dist_decode.c) and epmd reply
 * parsing (cnode/epmd.c). */
#include <check.h>
#include <ei.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist_decode.h"
#include "etf_check.h"
#include "frame.h"
#include "node_int.h"
#include "check_run.h"

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

/* Limits with max_message m and everything else out of the way. */
static const cnb_frag_limits_t *lims(size_t m)
{
    static cnb_frag_limits_t l;
    l = (cnb_frag_limits_t){.max_message = m, .max_bytes = 1 << 30, .max_sequences = 1 << 20,
                            .timeout_ms = 1000};
    return &l;
}

START_TEST(fragments_reassemble)
{
    cnb_frags_t t = {0};
    uint8_t *msg;
    size_t len;
    cnb_dist_pkt_t a = frag(1, 5, 3, "hel"), b = frag(0, 5, 2, "lo "), c = frag(0, 5, 1, "world");
    /* Interleaved with another sequence. */
    cnb_dist_pkt_t x = frag(1, 6, 2, "ab"), y = frag(0, 6, 1, "cd");
    ck_assert_int_eq(cnb__frag_add(&t, &a, lims(1000), 0, &msg, &len), 0);
    ck_assert_int_eq(cnb__frag_add(&t, &x, lims(1000), 0, &msg, &len), 0);
    ck_assert_int_eq(cnb__frag_add(&t, &b, lims(1000), 0, &msg, &len), 0);
    ck_assert_int_eq(cnb__frag_add(&t, &y, lims(1000), 0, &msg, &len), 1);
    ck_assert_uint_eq(len, 4);
    ck_assert_mem_eq(msg, "abcd", 4);
    free(msg);
    ck_assert_int_eq(cnb__frag_add(&t, &c, lims(1000), 0, &msg, &len), 1);
    ck_assert_uint_eq(len, 11);
    ck_assert_mem_eq(msg, "hello world", 11);
    free(msg);
    ck_assert_uint_eq(t.count, 0);
    /* A one-fragment message. */
    cnb_dist_pkt_t one = frag(1, 7, 1, "z");
    ck_assert_int_eq(cnb__frag_add(&t, &one, lims(1000), 0, &msg, &len), 1);
    free(msg);
}
END_TEST

START_TEST(fragments_errors)
{
    cnb_frags_t t = {0};
    uint8_t *msg;
    size_t len;
    cnb_dist_pkt_t a = frag(1, 5, 3, "hel"), skip = frag(0, 5, 1, "x"), orphan = frag(0, 9, 1, "y");
    ck_assert_int_eq(cnb__frag_add(&t, &orphan, lims(1000), 0, &msg, &len), CNB_EPROTO);
    ck_assert_int_eq(cnb__frag_add(&t, &a, lims(1000), 0, &msg, &len), 0);
    ck_assert_int_eq(cnb__frag_add(&t, &skip, lims(1000), 0, &msg, &len), CNB_EPROTO);
    ck_assert_uint_eq(t.count, 0); /* the broken sequence is gone */
    /* Over the limit. */
    cnb_dist_pkt_t b1 = frag(1, 1, 2, "0123456789"), b2 = frag(0, 1, 1, "0123456789");
    ck_assert_int_eq(cnb__frag_add(&t, &b1, lims(15), 0, &msg, &len), 0);
    ck_assert_int_eq(cnb__frag_add(&t, &b2, lims(15), 0, &msg, &len), CNB_ETOOBIG);
    ck_assert_uint_eq(t.count, 0);
    /* Partial sequences are freed by clear (ASan checks for leaks). */
    cnb_dist_pkt_t p1 = frag(1, 2, 5, "abc");
    ck_assert_int_eq(cnb__frag_add(&t, &p1, lims(100), 0, &msg, &len), 0);
    cnb__frag_clear(&t);
    ck_assert_uint_eq(t.count, 0);
}
END_TEST

/* Issue 13: 4,000 never-completed sequences on one connection held 263 MB.
 * Now the bytes held by all incomplete sequences together are capped, and
 * so is their count; the sequence that would pass a cap is dropped and the
 * error says which cap (the loop then closes the connection). */
START_TEST(fragments_capped_per_connection)
{
    cnb_frags_t t = {0};
    uint8_t *msg = NULL;
    size_t len = 0;
    cnb_frag_limits_t lim = {.max_message = 200, .max_bytes = 250, .max_sequences = 1000,
                             .timeout_ms = 1000};
    char data[61];
    memset(data, 'x', 60);
    data[60] = 0;
    /* Four sequences of 60 bytes each: 240 held, each far under max_message. */
    for (uint64_t seq = 1; seq <= 4; seq++) {
        cnb_dist_pkt_t p = frag(1, seq, 3, data);
        ck_assert_int_eq(cnb__frag_add(&t, &p, &lim, 0, &msg, &len), 0);
    }
    ck_assert_uint_eq(t.count, 4);
    ck_assert_uint_eq(t.bytes, 240);
    /* A fifth would hold 300 > 250: refused as the per-connection cap. */
    cnb_dist_pkt_t p5 = frag(1, 5, 3, data);
    ck_assert_int_eq(cnb__frag_add(&t, &p5, &lim, 0, &msg, &len), CNB_ENOSPC);
    ck_assert_uint_eq(t.count, 4);
    ck_assert_uint_eq(t.bytes, 240);
    char why[200];
    cnb__frag_why(CNB_ENOSPC, &t, &lim, why, sizeof(why));
    ck_assert_msg(strstr(why, "4 incomplete fragmented message(s)") && strstr(why, "250"), "%s",
                  why);
    /* So would a continuation that grows one of them past it. */
    cnb_dist_pkt_t c1 = frag(0, 1, 2, data);
    ck_assert_int_eq(cnb__frag_add(&t, &c1, &lim, 0, &msg, &len), CNB_ENOSPC);
    ck_assert_uint_eq(t.count, 3); /* that sequence is gone */
    ck_assert_uint_eq(t.bytes, 180);
    /* Completing one gives its bytes back. */
    cnb_dist_pkt_t c2a = frag(0, 2, 2, "ab"), c2b = frag(0, 2, 1, "cd");
    ck_assert_int_eq(cnb__frag_add(&t, &c2a, &lim, 0, &msg, &len), 0);
    ck_assert_int_eq(cnb__frag_add(&t, &c2b, &lim, 0, &msg, &len), 1);
    ck_assert_uint_eq(len, 64);
    free(msg);
    ck_assert_uint_eq(t.count, 2);
    ck_assert_uint_eq(t.bytes, 120);
    cnb__frag_clear(&t);
    ck_assert_uint_eq(t.bytes, 0);

    /* The count cap, with its own text (it used to say "exceeds the limit of
     * N bytes"). */
    lim.max_sequences = 3;
    for (uint64_t seq = 1; seq <= 3; seq++) {
        cnb_dist_pkt_t p = frag(1, seq, 2, "a");
        ck_assert_int_eq(cnb__frag_add(&t, &p, &lim, 0, &msg, &len), 0);
    }
    cnb_dist_pkt_t p4 = frag(1, 4, 2, "a");
    ck_assert_int_eq(cnb__frag_add(&t, &p4, &lim, 0, &msg, &len), CNB_EBUSY);
    cnb__frag_why(CNB_EBUSY, &t, &lim, why, sizeof(why));
    ck_assert_msg(strstr(why, "more than 3 incomplete fragmented messages"), "%s", why);
    ck_assert_ptr_null(strstr(why, "exceeds"));
    /* A one-fragment message needs no slot. */
    cnb_dist_pkt_t one = frag(1, 9, 1, "z");
    ck_assert_int_eq(cnb__frag_add(&t, &one, &lim, 0, &msg, &len), 1);
    free(msg);
    cnb__frag_why(CNB_ETOOBIG, &t, &lim, why, sizeof(why));
    ck_assert_msg(strstr(why, "exceeds the limit of 200 bytes"), "%s", why);
    cnb__frag_clear(&t);
}
END_TEST

/* A sequence that stops getting fragments is reported once it has waited
 * timeout_ms; one that keeps going is not. */
START_TEST(fragments_stall_timeout)
{
    cnb_frags_t t = {0};
    uint8_t *msg = NULL;
    size_t len = 0;
    char why[200] = "";
    cnb_frag_limits_t lim = {.max_message = 1000, .max_bytes = 1000, .max_sequences = 10,
                             .timeout_ms = 500};
    cnb_dist_pkt_t a = frag(1, 1, 4, "aa"), b = frag(1, 2, 4, "bb");
    ck_assert_int_eq(cnb__frag_add(&t, &a, &lim, 1000, &msg, &len), 0);
    ck_assert_int_eq(cnb__frag_add(&t, &b, &lim, 1000, &msg, &len), 0);
    ck_assert_uint_eq(cnb__frag_stalled(&t, &lim, 1499, why, sizeof(why)), 0);
    /* Sequence 2 moves on at 1400; sequence 1 does not. */
    cnb_dist_pkt_t b2 = frag(0, 2, 3, "bb");
    ck_assert_int_eq(cnb__frag_add(&t, &b2, &lim, 1400, &msg, &len), 0);
    ck_assert_uint_eq(cnb__frag_stalled(&t, &lim, 1500, why, sizeof(why)), 1);
    ck_assert_msg(strstr(why, "1 of 2 incomplete fragmented message(s) got no fragment for 500 ms"),
                  "%s", why);
    ck_assert_uint_eq(cnb__frag_stalled(&t, &lim, 1900, why, sizeof(why)), 2);
    ck_assert_uint_eq(t.count, 2); /* reporting frees nothing */
    cnb__frag_clear(&t);
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

/* A term of the given depth (a leaf alone is 1): [[...[]...]] (kind 'l'),
 * {{...{}...}} ('t') or #{k => #{k => ... #{}}} ('m'); no version byte.
 * Caller frees. */
static uint8_t *nested(size_t depth, char kind, size_t *len)
{
    size_t per = kind == 'l' ? 6 : kind == 't' ? 2 : 9;
    uint8_t *b = malloc(depth * per + 8);
    size_t k = 0;
    for (size_t d = 1; d < depth; d++) {
        if (kind == 'l') {
            memcpy(b + k, "\x6c\x00\x00\x00\x01", 5);
            k += 5;
        } else if (kind == 't') {
            memcpy(b + k, "\x68\x01", 2);
            k += 2;
        } else {
            memcpy(b + k, "\x74\x00\x00\x00\x01\x77\x01k", 8);
            k += 8;
        }
    }
    b[k++] = kind == 'l' ? 106 : kind == 't' ? 104 : 116; /* [], {} or #{} */
    if (kind == 't')
        b[k++] = 0;
    if (kind == 'm') {
        memset(b + k, 0, 4);
        k += 4;
    }
    if (kind == 'l')
        for (size_t d = 1; d < depth; d++)
            b[k++] = 106; /* each list's tail */
    *len = k;
    return b;
}

/* Issue 13: a 200,000-deep term reached ei_skip_term's recursion and killed
 * the node. The skipper itself is iterative at any depth, and refuses more
 * than the limit with CNB_EDEPTH; at the limit ei's recursive decoders, the
 * ones handlers use, take the term. */
START_TEST(etf_depth_limit)
{
    const char kinds[] = {'l', 't', 'm'};
    for (int k = 0; k < 3; k++) {
        size_t len;
        uint8_t *t = nested(CNB_ETF_MAX_DEPTH, kinds[k], &len);
        ck_assert_int_eq(cnb__etf_skip(t, len), (long)len);
        int i = 0;
        char *v = malloc(len + 1);
        v[0] = (char)131;
        memcpy(v + 1, t, len);
        i = 1;
        ck_assert_int_eq(ei_skip_term(v, &i), 0);
        ck_assert_int_eq(i, (int)len + 1);
        free(v);
        free(t);
        t = nested(CNB_ETF_MAX_DEPTH + 1, kinds[k], &len);
        ck_assert_int_eq(cnb__etf_skip(t, len), CNB_EDEPTH);
        ck_assert_int_eq(cnb__etf_skip_limit(t, len, CNB_ETF_MAX_DEPTH + 1), (long)len);
        free(t);
        t = nested(200000, kinds[k], &len);
        ck_assert_int_eq(cnb__etf_skip(t, len), CNB_EDEPTH);
        ck_assert_int_eq(cnb__etf_skip_limit(t, len, UINT32_MAX), (long)len);
        /* Truncated deep: still an error, never a read past the end. */
        ck_assert_int_lt(cnb__etf_skip_limit(t, len - 1, UINT32_MAX), 0);
        free(t);
    }
    uint8_t leaf[] = {106};
    ck_assert_int_eq(cnb__etf_skip_limit(leaf, 1, 1), 1);
    uint8_t one[] = {104, 1, 106};
    ck_assert_int_eq(cnb__etf_skip_limit(one, 3, 1), CNB_EDEPTH);
    ck_assert_int_eq(cnb__etf_skip_limit(one, 3, 2), 3);
}
END_TEST

/* Terms whose layout is whole but that ei would not decode whole: ei then
 * stops part-way and the caller reads on from the wrong place. Refused. */
START_TEST(etf_rejects_what_ei_cannot_decode)
{
    /* An atom of 256 latin-1 characters. */
    uint8_t *a = calloc(1, 3 + 256);
    a[0] = 100;
    a[1] = 1;
    a[2] = 0;
    memset(a + 3, 'a', 256);
    ck_assert_int_eq(cnb__etf_skip(a, 3 + 256), CNB_EMALFORMED);
    a[2] = 0xff; /* 511 bytes: refused as latin-1 ... */
    ck_assert_int_lt(cnb__etf_skip(a, 3 + 256), 0);
    free(a);
    /* ... 255 is fine. */
    uint8_t *b = calloc(1, 2 + 255);
    b[0] = 115;
    b[1] = 255;
    memset(b + 2, 'b', 255);
    ck_assert_int_eq(cnb__etf_skip(b, 2 + 255), 2 + 255);
    free(b);
    /* Old float (NEW_FLOATS is mandatory) and old fun. */
    uint8_t oldf[32] = {99};
    ck_assert_int_eq(cnb__etf_skip(oldf, sizeof(oldf)), CNB_EMALFORMED);
    uint8_t oldfun[] = {117, 0, 0, 0, 0};
    ck_assert_int_eq(cnb__etf_skip(oldfun, sizeof(oldfun)), CNB_EMALFORMED);
    /* EXPORT of a non-atom module, or a non-small-integer arity. */
    uint8_t exp_bad[] = {113, 97, 1, 119, 1, 'f', 97, 2};
    ck_assert_int_eq(cnb__etf_skip(exp_bad, sizeof(exp_bad)), CNB_EMALFORMED);
    uint8_t exp_bad2[] = {113, 119, 1, 'm', 119, 1, 'f', 106, 0};
    ck_assert_int_eq(cnb__etf_skip(exp_bad2, sizeof(exp_bad2)), CNB_EMALFORMED);
    uint8_t exp_ok[] = {113, 119, 1, 'm', 119, 1, 'f', 97, 2};
    ck_assert_int_eq(cnb__etf_skip(exp_ok, sizeof(exp_ok)), (long)sizeof(exp_ok));
    /* A real fun (made by ei), then one whose module atom claims bytes past
     * the fun's Size: ei_decode_fun would read them. */
    uint8_t fun[] = {112, 0, 0, 0, 0,                             /* Size, set below */
                     1,                                           /* Arity */
                     0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, /* Uniq */
                     0, 0, 0, 2,                                  /* Index */
                     0, 0, 0, 1,                                  /* NumFree */
                     119, 1, 'm',                                 /* Module */
                     97, 0, 97, 0,                                /* OldIndex, OldUniq */
                     88, 119, 3, 'a', '@', 'b', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, /* Pid */
                     97, 7};                                      /* the free variable */
    cnb__put32(fun + 1, sizeof(fun) - 1);
    ck_assert_int_eq(cnb__etf_skip(fun, sizeof(fun)), (long)sizeof(fun));
    int i = 0;
    ck_assert_int_eq(ei_decode_fun((const char *)fun, &i, NULL), 0);
    ck_assert_int_eq(i, (int)sizeof(fun));
    uint8_t *f2 = malloc(sizeof(fun));
    memcpy(f2, fun, sizeof(fun));
    f2[31] = 200; /* module atom of 200 bytes */
    ck_assert_int_eq(cnb__etf_skip(f2, sizeof(fun)), CNB_EMALFORMED);
    memcpy(f2, fun, sizeof(fun));
    f2[28] = 2; /* two free variables, room for one */
    ck_assert_int_lt(cnb__etf_skip(f2, sizeof(fun)), 0);
    memcpy(f2, fun, sizeof(fun));
    cnb__put32(f2 + 1, sizeof(fun) - 2); /* Size one short of the free variable */
    ck_assert_int_lt(cnb__etf_skip(f2, sizeof(fun)), 0);
    free(f2);
}
END_TEST

/* Builds a 131/68-style body (no version bytes, exactly its size): the
 * control tuple {Op, A, Z} (or {Op, A} when z is NULL), then the payload
 * pl[0..pll). Caller frees. */
static uint8_t *body2(long op, const erlang_pid *a, const erlang_pid *z, const uint8_t *pl,
                      size_t pll, size_t *len)
{
    char c[512];
    int i = 0;
    ei_encode_tuple_header(c, &i, z ? 3 : 2);
    ei_encode_long(c, &i, op);
    ei_encode_pid(c, &i, a);
    if (z)
        ei_encode_pid(c, &i, z);
    uint8_t *b = malloc((size_t)i + pll);
    memcpy(b, c, (size_t)i);
    if (pll)
        memcpy(b + i, pl, pll);
    *len = (size_t)i + pll;
    return b;
}

START_TEST(dist_decode_depth_and_shape)
{
    erlang_pid a = {.num = 1, .creation = 1}, z = {.num = 2, .creation = 1};
    strcpy(a.node, "a@h");
    strcpy(z.node, "z@h");
    size_t dl;
    uint8_t *deep = nested(200000, 'l', &dl);
    cnb_decoded_t d;
    size_t len;
    /* SEND_SENDER {22, From, To} + a 200,000-deep message: dropped. */
    uint8_t *b = body2(CNB_OP_SEND_SENDER, &a, &z, deep, dl, &len);
    ck_assert_int_eq(cnb__dist_decode(b, len, 0, &d), CNB_EDEPTH);
    free(b);
    /* PAYLOAD_EXIT {24, From, To} + the deep reason: delivered, the reason
     * replaced by term_too_deep. */
    b = body2(CNB_OP_PAYLOAD_EXIT, &a, &z, deep, dl, &len);
    ck_assert_int_eq(cnb__dist_decode(b, len, 0, &d), 0);
    ck_assert_int_eq(d.kind, CNB_DEC_SIGNAL);
    ck_assert_int_eq(d.msg.op, CNB_OP_EXIT);
    ck_assert_int_eq(d.reason_replaced, 1);
    char atom[MAXATOMLEN];
    int j = 0, ver;
    ck_assert_int_eq(ei_decode_version(d.msg.payload, &j, &ver), 0);
    ck_assert_int_eq(ei_decode_atom(d.msg.payload, &j, atom), 0);
    ck_assert_str_eq(atom, "term_too_deep");
    ck_assert_int_eq(j, (int)d.msg.payload_len);
    cnb__dist_decoded_free(&d);
    /* The same reason but one byte short: malformed, not replaced. */
    ck_assert_int_eq(cnb__dist_decode(b, len - 1, 0, &d), CNB_EMALFORMED);
    free(b);
    /* A deep control term: dropped. */
    uint8_t hdr[] = {104, 4, 97, CNB_OP_REG_SEND};
    uint8_t *cd = malloc(sizeof(hdr) + 64 + dl);
    memcpy(cd, hdr, sizeof(hdr));
    int i = (int)sizeof(hdr);
    ei_encode_pid((char *)cd, &i, &a);
    memcpy(cd + i, deep, dl);
    i += (int)dl;
    ei_encode_atom((char *)cd, &i, "echo");
    ck_assert_int_eq(cnb__dist_decode(cd, (size_t)i, 0, &d), CNB_EDEPTH);
    free(cd);
    /* An EXIT {3, From, To} missing its reason: refused before any read past
     * the control term (the body is exactly its size, for ASan). */
    b = body2(CNB_OP_EXIT, &a, &z, NULL, 0, &len);
    ck_assert_int_eq(cnb__dist_decode(b, len, 0, &d), CNB_EMALFORMED);
    free(b);
    /* A LINK {1, From} with one field too few. */
    b = body2(CNB_OP_LINK, &a, NULL, NULL, 0, &len);
    ck_assert_int_eq(cnb__dist_decode(b, len, 0, &d), CNB_EMALFORMED);
    free(b);
    free(deep);
}
END_TEST

/* ALTACT_SIG_SEND {37, Flags, From, To[, Token]} + payload (no version
 * bytes, as after a distribution header), To as the flags say. */
static uint8_t *altact_body(long flags, int arity, const erlang_pid *from, const erlang_pid *to,
                            const erlang_ref *alias, const char *name, size_t *len)
{
    char c[1024];
    int i = 0;
    ei_encode_tuple_header(c, &i, arity);
    ei_encode_long(c, &i, CNB_OP_ALTACT_SIG_SEND);
    ei_encode_long(c, &i, flags);
    ei_encode_pid(c, &i, from);
    if (flags & CNB_ALTACT_ALIAS)
        ei_encode_ref(c, &i, alias);
    else if (flags & CNB_ALTACT_NAME)
        ei_encode_atom(c, &i, name);
    else
        ei_encode_pid(c, &i, to);
    if (arity == 5) /* a trace token: any term */
        ei_encode_tuple_header(c, &i, 0);
    ei_encode_atom(c, &i, "hello"); /* the message or exit reason */
    uint8_t *b = malloc((size_t)i);
    memcpy(b, c, (size_t)i);
    *len = (size_t)i;
    return b;
}

START_TEST(dist_decode_altact_every_flag)
{
    erlang_pid a = {.num = 1, .creation = 1}, z = {.num = 2, .creation = 1};
    strcpy(a.node, "a@h");
    strcpy(z.node, "z@h");
    erlang_ref r = {.len = 3, .n = {1, 2, 3}, .creation = 1};
    strcpy(r.node, "z@h");
    cnb_decoded_t d;
    size_t len;
    for (long f = 0; f < 32; f++) {
        int arity = (f & CNB_ALTACT_TOKEN) ? 5 : 4;
        uint8_t *b = altact_body(f, arity, &a, &z, &r, "echo", &len);
        if ((f & CNB_ALTACT_ALIAS) && (f & CNB_ALTACT_NAME)) { /* To cannot be both */
            ck_assert_int_eq(cnb__dist_decode(b, len, 0, &d), CNB_EMALFORMED);
            free(b);
            continue;
        }
        ck_assert_msg(cnb__dist_decode(b, len, 0, &d) == 0, "flags %ld", f);
        ck_assert_int_eq(d.kind, CNB_DEC_SIGNAL);
        ck_assert_int_eq(d.raw_op, CNB_OP_ALTACT_SIG_SEND);
        ck_assert_uint_eq(d.msg.sig_flags, (unsigned)f);
        ck_assert_int_eq(d.msg.has_from, 1);
        ck_assert_str_eq(d.msg.from.node, "a@h");
        int exit = (f & CNB_ALTACT_EXIT) != 0;
        if (f & CNB_ALTACT_ALIAS) {
            ck_assert_int_eq(d.msg.op, exit ? CNB_OP_ALTACT_SIG_SEND : CNB_OP_ALIAS_SEND);
            ck_assert_int_eq(d.msg.has_ref, 1);
            ck_assert_uint_eq(d.msg.ref.n[2], 3);
        } else if (f & CNB_ALTACT_NAME) {
            ck_assert_int_eq(d.msg.op, exit ? CNB_OP_EXIT2 : CNB_OP_REG_SEND);
            ck_assert_int_eq(d.msg.has_to, 0);
            ck_assert_str_eq(d.msg.toname, "echo");
        } else {
            ck_assert_int_eq(d.msg.op, exit ? CNB_OP_EXIT2 : CNB_OP_SEND);
            ck_assert_int_eq(d.msg.has_to, 1);
            ck_assert_uint_eq(d.msg.to.num, 2);
        }
        /* The message (or reason) as a payload with its version byte. */
        int j = 0, ver;
        char atom[MAXATOMLEN];
        ck_assert_int_eq(ei_decode_version(d.msg.payload, &j, &ver), 0);
        ck_assert_int_eq(ei_decode_atom(d.msg.payload, &j, atom), 0);
        ck_assert_str_eq(atom, "hello");
        cnb__dist_decoded_free(&d);
        /* The other arity than the TOKEN flag says: malformed. */
        uint8_t *w = altact_body(f, 9 - arity, &a, &z, &r, "echo", &len);
        ck_assert_int_eq(cnb__dist_decode(w, len, 0, &d), CNB_EMALFORMED);
        free(w);
        /* Without the message: malformed. */
        ck_assert_int_eq(cnb__dist_decode(b, len - 7, 0, &d), CNB_EMALFORMED);
        free(b);
    }
    /* A flag this release does not know: ignored, not misread. */
    uint8_t *b = altact_body(32 | CNB_ALTACT_PRIO, 4, &a, &z, &r, "echo", &len);
    ck_assert_int_eq(cnb__dist_decode(b, len, 0, &d), 0);
    ck_assert_int_eq(d.kind, CNB_DEC_IGNORED);
    cnb__dist_decoded_free(&d);
    free(b);
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
    /* Funs in free variables are checked at every level, up to the general
     * depth limit: 65 deep pass, deeper than CNB_ETF_MAX_DEPTH are refused. */
    nested_closures(&x, 65);
    ck_assert_int_eq(cnb__etf_skip((uint8_t *)x.buff, (size_t)x.index), (long)x.index);
    ei_x_free(&x);
    nested_closures(&x, CNB_ETF_MAX_DEPTH + 1);
    ck_assert_int_lt(cnb__etf_skip((uint8_t *)x.buff, (size_t)x.index), 0);
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
    tcase_add_test(tc, fragments_capped_per_connection);
    tcase_add_test(tc, fragments_stall_timeout);
    tcase_add_test(tc, etf_skip_valid_truncated_corrupted);
    tcase_add_test(tc, etf_skip_rejects);
    tcase_add_test(tc, etf_depth_limit);
    tcase_add_test(tc, etf_rejects_what_ei_cannot_decode);
    tcase_add_test(tc, dist_decode_depth_and_shape);
    tcase_add_test(tc, dist_decode_altact_every_flag);
    tcase_add_test(tc, etf_skip_funs);
    tcase_add_test(tc, epmd_reply);
    suite_add_tcase(s, tc);
    return cnb_check_run(s);
}
