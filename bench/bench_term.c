/* bench_term: speed of core/term (canonical ETF, hash, compare). Prints lines
 * `term.<metric> <value> <unit>` for scripts/run-bench; bench/term_beam.erl
 * prints the BEAM's figures for the same work as `term_beam.<metric> ...`.
 * Built by the Makefile into build/bench/bench_term. */
#include <ei.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnb_term.h"

static volatile uint64_t sink;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf_t;

static void put(buf_t *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) {
            perror("bench_term");
            exit(1);
        }
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put8(buf_t *b, unsigned v)
{
    uint8_t c = (uint8_t)v;
    put(b, &c, 1);
}

static void put32(buf_t *b, uint32_t v)
{
    uint8_t c[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(b, c, 4);
}

/* A list of 20000 records {user, Id, Score, <<32 bytes>>, "abc", #{name, age}}.
 * canonical != 0: as term_to_binary(T, [deterministic]) writes it; otherwise
 * the way an older or foreign encoder might: ATOM_EXT, INTEGER_EXT for small
 * values, FLOAT_EXT, LIST_EXT for strings, map keys out of order. */
static buf_t mixed_term(int canonical)
{
    buf_t b = {NULL, 0, 0};
    int n = 20000;
    put8(&b, 131);
    put8(&b, 108);
    put32(&b, (uint32_t)n);
    for (int i = 0; i < n; i++) {
        put8(&b, 104);
        put8(&b, 6);
        if (canonical)
            put(&b, "\x77\x04user", 6);
        else
            put(&b, "\x64\x00\x04user", 7);
        put8(&b, 98); /* Id: > 255, so INTEGER_EXT either way */
        put32(&b, (uint32_t)(100000 + i));
        if (canonical) {
            double d = i * 0.5;
            uint64_t bits;
            memcpy(&bits, &d, 8);
            put8(&b, 70);
            put32(&b, (uint32_t)(bits >> 32));
            put32(&b, (uint32_t)bits);
        } else {
            char txt[32];
            memset(txt, 0, sizeof(txt));
            snprintf(txt, sizeof(txt), "%.20e", i * 0.5);
            put8(&b, 99);
            put(&b, txt, 31);
        }
        put8(&b, 109);
        put32(&b, 32);
        for (int k = 0; k < 32; k++)
            put8(&b, (unsigned)(i + k));
        if (canonical) {
            put(&b, "\x6b\x00\x03" "abc", 6);
        } else {
            put(&b, "\x6c\x00\x00\x00\x03\x61\x61\x61\x62\x61\x63\x6a", 12);
        }
        put8(&b, 116);
        put32(&b, 2);
        if (canonical) {
            put(&b, "\x77\x03" "age\x61\x21", 7);
            put(&b, "\x77\x04name\x77\x03" "bob", 11);
        } else {
            put(&b, "\x64\x00\x04name\x64\x00\x03" "bob", 13);
            put(&b, "\x64\x00\x03" "age\x62\x00\x00\x00\x21", 11);
        }
    }
    put8(&b, 106);
    return b;
}

/* Runs fn until about min_s seconds have passed; returns seconds per call. */
typedef void (*work_fn)(void *);

static double time_per_call(work_fn fn, void *arg, double min_s)
{
    long iters = 1;
    for (;;) {
        double t0 = now();
        for (long i = 0; i < iters; i++)
            fn(arg);
        double dt = now() - t0;
        if (dt >= min_s)
            return dt / (double)iters;
        iters = dt > 0.001 ? (long)((double)iters * min_s / dt * 1.1) + 1 : iters * 10;
    }
}

typedef struct job {
    const uint8_t *in;
    size_t len;
    uint8_t *out;
    size_t cap;
    const uint8_t *other;
    size_t olen;
} job_t;

static void do_canonical(void *arg)
{
    job_t *j = arg;
    ssize_t r = cnb_term_canonical(j->in, j->len, j->out, j->cap, NULL);
    if (r < 0) {
        fprintf(stderr, "bench_term: %s\n", cnb_strerror((int)r));
        exit(1);
    }
    sink += (uint64_t)r;
}

static void do_hash(void *arg)
{
    job_t *j = arg;
    sink += cnb_term_hash(j->in, j->len);
}

static void do_canonical_hash(void *arg)
{
    job_t *j = arg;
    uint8_t out[64];
    ssize_t r = cnb_term_canonical(j->in, j->len, out, sizeof(out), NULL);
    sink += cnb_term_hash(out, (size_t)r);
}

static void do_compare(void *arg)
{
    job_t *j = arg;
    int order;
    if (cnb_term_compare(j->in, j->len, j->other, j->olen, &order) != 0)
        exit(1);
    sink += (uint64_t)order;
}

static void report_mbps(const char *metric, work_fn fn, job_t *j)
{
    double s = time_per_call(fn, j, 0.5);
    printf("term.%s %.0f MB/s\n", metric, (double)j->len / s / 1e6);
}

static void report_ns(const char *metric, work_fn fn, job_t *j)
{
    double s = time_per_call(fn, j, 0.3);
    printf("term.%s %.1f ns\n", metric, s * 1e9);
}

int main(void)
{
    /* A 32 MiB binary. */
    size_t big = (size_t)32 << 20;
    uint8_t *bin = malloc(big + 6), *out = malloc(big + 64);
    if (!bin || !out)
        return 1;
    bin[0] = 131;
    bin[1] = 109;
    bin[2] = (uint8_t)(big >> 24);
    bin[3] = (uint8_t)(big >> 16);
    bin[4] = (uint8_t)(big >> 8);
    bin[5] = (uint8_t)big;
    for (size_t i = 0; i < big; i++)
        bin[6 + i] = (uint8_t)(i * 31 + (i >> 9));
    job_t j = {bin, big + 6, out, big + 64, NULL, 0};
    report_mbps("canonical_large_binary", do_canonical, &j);
    report_mbps("hash_large_binary", do_hash, &j);
    free(bin);
    free(out);

    buf_t canon = mixed_term(1), other = mixed_term(0);
    out = malloc(canon.n + 64);
    job_t m = {canon.p, canon.n, out, canon.n + 64, NULL, 0};
    report_mbps("canonical_mixed_canonical_input", do_canonical, &m);
    job_t m2 = {other.p, other.n, out, canon.n + 64, NULL, 0};
    report_mbps("canonical_mixed_other_encoding", do_canonical, &m2);
    /* Check the two encodings agree, so the figures compare like with like. */
    uint8_t *check = malloc(canon.n);
    if (cnb_term_canonical(other.p, other.n, check, canon.n, NULL) != (ssize_t)canon.n ||
        memcmp(check, canon.p, canon.n) != 0) {
        fprintf(stderr, "bench_term: the two mixed encodings differ\n");
        return 1;
    }
    free(check);
    free(out);
    free(canon.p);
    free(other.p);

    /* {cache, 42} as ei encodes it, and as ATOM_EXT/INTEGER_EXT. */
    ei_init();
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "cache");
    ei_x_encode_long(&x, 42);
    static const uint8_t old_key[] = {131, 104, 2, 100, 0, 5, 'c', 'a', 'c', 'h', 'e',
                                      98,  0,   0, 0,   42};
    uint8_t small_out[64];
    job_t k = {(const uint8_t *)x.buff, (size_t)x.index, small_out, sizeof(small_out), NULL, 0};
    report_ns("canonical_small_key_ei", do_canonical, &k);
    job_t k2 = {old_key, sizeof(old_key), small_out, sizeof(small_out), NULL, 0};
    report_ns("canonical_small_key_other_encoding", do_canonical, &k2);
    ssize_t kn = cnb_term_canonical(x.buff, (size_t)x.index, small_out, sizeof(small_out), NULL);
    job_t h = {small_out, (size_t)kn, NULL, 0, NULL, 0};
    report_ns("hash_small_key", do_hash, &h);
    report_ns("canonical_and_hash_small_key", do_canonical_hash, &k);
    static const uint8_t key43[] = {131, 104, 2, 119, 5, 'c', 'a', 'c', 'h', 'e', 97, 43};
    job_t c = {small_out, (size_t)kn, NULL, 0, key43, sizeof(key43)};
    report_ns("compare_small_keys", do_compare, &c);
    ei_x_free(&x);
    return 0;
}
