/* bench_registry.c: figures for core/registry, printed as
 * `registry.<metric> <value> <unit>`: lookups per second on one thread at 1k,
 * 100k and 1M entries (and with a writer thread busy on the same registry), one
 * key per call (cnb_registry_lookup) and in batches of BATCH keys
 * (cnb_registry_lookup_many),
 * bytes per entry, register + unregister pairs per second. The BEAM's figures
 * for the same work: bench/registry_beam.erl. Run by `make bench`. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cnb_registry.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* {cache, I} as canonical ETF: 131,104,2,119,5,"cache",98,I:32 (15 bytes). */
#define KLEN 15
static void mkkey(unsigned char *k, uint32_t i)
{
    static const unsigned char pre[] = {131, 104, 2, 119, 5, 'c', 'a', 'c', 'h', 'e', 98};
    memcpy(k, pre, sizeof pre);
    k[11] = (unsigned char)(i >> 24);
    k[12] = (unsigned char)(i >> 16);
    k[13] = (unsigned char)(i >> 8);
    k[14] = (unsigned char)i;
}

static const unsigned char VALUE[] = {131, 97, 42}; /* 42 */

static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

struct writer {
    struct cnb_registry *r;
    volatile int stop;
    long ops;
};

static void *writer_main(void *p)
{
    struct writer *w = p;
    cnb_pid_t o;
    memset(&o, 0, sizeof o);
    strcpy(o.node, "writer@host");
    o.num = 2;
    unsigned char k[KLEN];
    uint32_t i = 0;
    while (!w->stop) {
        mkkey(k, 0x80000000u + (i % 1000));
        cnb_registry_register(w->r, k, KLEN, &o, VALUE, sizeof VALUE, NULL);
        cnb_registry_unregister(w->r, k, KLEN, &o);
        i++;
        w->ops += 2;
    }
    return NULL;
}

static double lookups(struct cnb_registry *r, uint32_t n, const uint32_t *order, uint32_t m)
{
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    unsigned char k[KLEN];
    long found = 0;
    double t0 = now_s();
    for (uint32_t i = 0; i < m; i++) {
        mkkey(k, order[i % n]);
        found += cnb_registry_lookup(r, k, KLEN, &res);
    }
    double dt = now_s() - t0;
    cnb_registry_result_free(&res);
    if (found != (long)m)
        fprintf(stderr, "bench: %ld of %u lookups found\n", found, m);
    return m / dt;
}

/* For scale: nanoseconds per random memory read that depends on the one before
 * (a pointer chase over 128 MB, one read per 64-byte line). A one-key lookup in
 * a registry far bigger than the caches waits for two of these. */
static double dependent_load_ns(void)
{
    size_t lines = ((size_t)128 << 20) / 64, loads = 5000000;
    uint64_t *a = aligned_alloc(64, lines * 64);
    uint32_t *perm = malloc(sizeof *perm * lines);
    if (!a || !perm) {
        free(a);
        free(perm);
        return 0;
    }
    for (size_t i = 0; i < lines; i++)
        perm[i] = (uint32_t)i;
    uint64_t seed = 88172645463325252ULL;
    for (size_t i = lines - 1; i > 0; i--) {
        size_t j = (size_t)(rnd(&seed) % (i + 1));
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (size_t i = 0; i < lines; i++) /* one cycle through every line */
        a[(size_t)perm[i] * 8] = (uint64_t)perm[(i + 1) % lines] * 8;
    volatile uint64_t sink;
    uint64_t p = 0;
    double t0 = now_s();
    for (size_t i = 0; i < loads; i++)
        p = a[p];
    double dt = now_s() - t0;
    sink = p;
    (void)sink;
    free(a);
    free(perm);
    return dt * 1e9 / (double)loads;
}

/* The same lookups, BATCH keys per cnb_registry_lookup_many call. */
#define BATCH 64
static double lookups_many(struct cnb_registry *r, uint32_t n, const uint32_t *order,
                           uint32_t m)
{
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    unsigned char k[BATCH][KLEN];
    cnb_registry_key_t keys[BATCH];
    size_t counts[BATCH];
    long found = 0;
    m -= m % BATCH;
    double t0 = now_s();
    for (uint32_t i = 0; i < m; i += BATCH) {
        for (unsigned b = 0; b < BATCH; b++) {
            mkkey(k[b], order[(i + b) % n]);
            keys[b] = (cnb_registry_key_t){k[b], KLEN};
        }
        found += cnb_registry_lookup_many(r, keys, BATCH, &res, counts);
    }
    double dt = now_s() - t0;
    cnb_registry_result_free(&res);
    if (found != (long)m)
        fprintf(stderr, "bench: %ld of %u batched lookups found\n", found, m);
    return m / dt;
}

int main(void)
{
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/cnb_bench_registry_%d", (int)getpid());
    unlink(path);
    static const uint32_t sizes[] = {1000, 100000, 1000000};
    cnb_pid_t owner;
    memset(&owner, 0, sizeof owner);
    strcpy(owner.node, "bench@host");
    owner.num = 1;
    owner.creation = 1;
    uint32_t *order = malloc(sizeof(uint32_t) * 1000000);
    unsigned char k[KLEN];
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        uint32_t n = sizes[si];
        cnb_registry_opts_t o = {0};
        o.path = path;
        o.flags = CNB_REG_CREATE | CNB_REG_EXCL;
        struct cnb_registry *r;
        int rc = cnb_registry_open(&o, &r);
        if (rc) {
            fprintf(stderr, "bench: open: %s\n", cnb_strerror(rc));
            return 1;
        }
        for (uint32_t i = 0; i < n; i++) {
            mkkey(k, i);
            owner.num = 1 + i % 1000;
            if (cnb_registry_register(r, k, KLEN, &owner, VALUE, sizeof VALUE, NULL)) {
                fprintf(stderr, "bench: register failed\n");
                return 1;
            }
            order[i] = i;
        }
        uint64_t seed = 88172645463325252ULL;
        for (uint32_t i = n - 1; i > 0; i--) { /* random order */
            uint32_t j = (uint32_t)(rnd(&seed) % (i + 1)), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        uint32_t m = 3000000;
        lookups(r, n, order, n < 100000 ? n : 100000); /* warm up */
        double lps = lookups(r, n, order, m);
        const char *label = n == 1000 ? "1k" : n == 100000 ? "100k" : "1m";
        printf("registry.lookups_per_s_%s %.0f ops/s\n", label, lps);
        printf("registry.batched_lookups_per_s_%s %.0f ops/s\n", label,
               lookups_many(r, n, order, m));

        struct writer w = {r, 0, 0};
        pthread_t t;
        pthread_create(&t, NULL, writer_main, &w);
        double t0 = now_s();
        double lpsw = lookups(r, n, order, m);
        double blpsw = lookups_many(r, n, order, m);
        w.stop = 1;
        pthread_join(t, NULL);
        double dt = now_s() - t0;
        printf("registry.lookups_per_s_%s_with_writer %.0f ops/s\n", label, lpsw);
        printf("registry.batched_lookups_per_s_%s_with_writer %.0f ops/s\n", label, blpsw);
        printf("registry.writer_ops_per_s_%s_during_lookups %.0f ops/s\n", label, w.ops / dt);

        if (n == 1000000) {
            cnb_registry_info_t info;
            cnb_registry_info(r, &info);
            printf("registry.bytes_per_entry %.1f bytes\n", (double)info.arena_used / n);
            printf("registry.file_bytes_per_entry %.1f bytes\n", (double)info.file_size / n);
        }
        if (n == 100000) {
            uint32_t pairs = 500000;
            t0 = now_s();
            for (uint32_t i = 0; i < pairs; i++) {
                mkkey(k, 0x40000000u + (i % 50000));
                cnb_registry_register(r, k, KLEN, &owner, VALUE, sizeof VALUE, NULL);
                cnb_registry_unregister(r, k, KLEN, &owner);
            }
            printf("registry.register_unregister_per_s %.0f pairs/s\n", pairs / (now_s() - t0));
        }
        cnb_registry_close(r);
        unlink(path);
    }
    free(order);
    printf("registry.dependent_load_ns_128mb %.1f ns\n", dependent_load_ns());
    return 0;
}
