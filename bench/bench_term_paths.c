/* bench_term_paths: the term fast paths on small, typical inputs, where a
 * term's header costs most: canonicalising registry keys (already canonical,
 * and in an older encoding), the canonical-form check, term order, the hash,
 * and the wire's skip check (cnode/etf_check) on a gen_server call message.
 * Driven by bench_paths.h (callgrind per path, or `term_paths.<name>_ns`
 * lines for scripts/run-bench); docs/BENCHMARKS.md, "Term reader cost". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_paths.h"
#include "cnb_term.h"
#include "../cnode/etf_check.h"
#include "../core/term_int.h"

static volatile uint64_t sink;

#define KEY(...) {sizeof((const uint8_t[]){__VA_ARGS__}), (const uint8_t[]){__VA_ARGS__}}

typedef struct input {
    size_t len;
    const uint8_t *p;
} input_t;

/* Registry keys in canonical form (term_to_binary(K, [deterministic])). */
static const input_t canon_keys[] = {
    KEY(131, 119, 5, 'c', 'a', 'c', 'h', 'e'),                           /* cache */
    KEY(131, 104, 2, 119, 5, 'c', 'a', 'c', 'h', 'e', 97, 42),           /* {cache, 42} */
    KEY(131, 109, 0, 0, 0, 10, 'u', 's', 'e', 'r', ':', '1', '2', '3', '4', '5'), /* <<"user:12345">> */
    KEY(131, 98, 0, 1, 226, 64),                                         /* 123456 */
    KEY(131, 97, 7),                                                     /* 7 */
    KEY(131, 104, 2, 119, 4, 'u', 's', 'e', 'r', 104, 2, 119, 7, 's', 'e', 's', 's', 'i', 'o',
        'n', 98, 0, 0, 4, 0),                                            /* {user, {session, 1024}} */
    KEY(131, 104, 3, 104, 2, 119, 6, 't', 'e', 'n', 'a', 'n', 't', 97, 7, 109, 0, 0, 0, 6, 'u',
        's', 'e', 'r', ':', '1', 97, 3),                                 /* {{tenant, 7}, <<"user:1">>, 3} */
};

/* The same kind of keys as an older or foreign encoder writes them
 * (ATOM_EXT, INTEGER_EXT for a small value): the general path. */
static const input_t other_keys[] = {
    KEY(131, 100, 0, 5, 'c', 'a', 'c', 'h', 'e'),
    KEY(131, 104, 2, 100, 0, 5, 'c', 'a', 'c', 'h', 'e', 98, 0, 0, 0, 42),
    KEY(131, 104, 2, 100, 0, 4, 'u', 's', 'e', 'r', 104, 2, 100, 0, 7, 's', 'e', 's', 's', 'i',
        'o', 'n', 98, 0, 0, 4, 0),
    KEY(131, 104, 3, 104, 2, 100, 0, 6, 't', 'e', 'n', 'a', 'n', 't', 98, 0, 0, 0, 7, 109, 0, 0,
        0, 6, 'u', 's', 'e', 'r', ':', '1', 98, 0, 0, 0, 3),
};

/* Pairs of canonical keys that term order tells apart late. */
static const input_t cmp_keys[] = {
    KEY(131, 104, 2, 119, 5, 'c', 'a', 'c', 'h', 'e', 97, 42),
    KEY(131, 104, 2, 119, 5, 'c', 'a', 'c', 'h', 'e', 97, 43),
    KEY(131, 109, 0, 0, 0, 10, 'u', 's', 'e', 'r', ':', '1', '2', '3', '4', '5'),
    KEY(131, 109, 0, 0, 0, 10, 'u', 's', 'e', 'r', ':', '1', '2', '3', '4', '6'),
    KEY(131, 104, 2, 119, 4, 'u', 's', 'e', 'r', 104, 2, 119, 7, 's', 'e', 's', 's', 'i', 'o',
        'n', 98, 0, 0, 4, 0),
    KEY(131, 104, 2, 119, 4, 'u', 's', 'e', 'r', 104, 2, 119, 7, 's', 'e', 's', 's', 'i', 'o',
        'n', 98, 0, 0, 4, 1),
    KEY(131, 98, 0, 1, 226, 64),
    KEY(131, 98, 0, 1, 226, 65),
};

/* {'$gen_call', {Pid, [alias | Ref]}, {lookup, {cache, 42}}} as an OTP 25
 * node sends it (no version byte: the wire's terms follow the control). */
static const input_t gen_call[] = {
    KEY(104, 3, 119, 9, '$', 'g', 'e', 'n', '_', 'c', 'a', 'l', 'l', 104, 2,
        88, 119, 8, 'a', '@', 'h', 'o', 's', 't', '1', '2', 0, 0, 0, 91, 0, 0, 0, 0, 100, 200, 1, 2,
        108, 0, 0, 0, 1, 119, 5, 'a', 'l', 'i', 'a', 's',
        90, 0, 3, 119, 8, 'a', '@', 'h', 'o', 's', 't', '1', '2', 100, 200, 1, 2,
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
        104, 2, 119, 6, 'l', 'o', 'o', 'k', 'u', 'p', 104, 2, 119, 5, 'c', 'a', 'c', 'h', 'e', 97,
        42),
    /* The control tuple before it: {REG_SEND = 6, From, '', ToName}. */
    KEY(104, 4, 97, 6, 88, 119, 8, 'a', '@', 'h', 'o', 's', 't', '1', '2', 0, 0, 0, 91, 0, 0, 0,
        0, 100, 200, 1, 2, 119, 0, 119, 5, 'c', 'a', 'c', 'h', 'e'),
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static void fail(const char *what)
{
    fprintf(stderr, "bench_term_paths: %s failed\n", what);
    exit(1);
}

/* Canonical input: the check, then a copy. */
__attribute__((noinline)) static void path_canonical(long iters)
{
    uint8_t out[128];
    for (long k = 0; k < iters; k++)
        for (size_t i = 0; i < N_OF(canon_keys); i++) {
            ssize_t r = cnb_term_canonical(canon_keys[i].p, canon_keys[i].len, out, sizeof out, NULL);
            if (r != (ssize_t)canon_keys[i].len)
                fail("canonical");
            sink += (uint64_t)r;
        }
}

/* Other encodings: the check says no, then the canonicaliser writes. */
__attribute__((noinline)) static void path_canonical_other(long iters)
{
    uint8_t out[128];
    for (long k = 0; k < iters; k++)
        for (size_t i = 0; i < N_OF(other_keys); i++) {
            ssize_t r = cnb_term_canonical(other_keys[i].p, other_keys[i].len, out, sizeof out, NULL);
            if (r <= 0)
                fail("canonical_other");
            sink += (uint64_t)r;
        }
}

/* The canonical-form check alone (term_valid.c). */
__attribute__((noinline)) static void path_valid(long iters)
{
    for (long k = 0; k < iters; k++)
        for (size_t i = 0; i < N_OF(canon_keys); i++) {
            const uint8_t *p = canon_keys[i].p + 1;
            if (cnb__term_is_canonical(p, p + canon_keys[i].len - 1, 1000, NULL) != 1)
                fail("valid");
        }
}

__attribute__((noinline)) static void path_compare(long iters)
{
    for (long k = 0; k < iters; k++)
        for (size_t i = 0; i < N_OF(cmp_keys); i += 2) {
            int order;
            if (cnb_term_compare(cmp_keys[i].p, cmp_keys[i].len, cmp_keys[i + 1].p,
                                 cmp_keys[i + 1].len, &order) || order >= 0)
                fail("compare");
            sink += (uint64_t)order;
        }
}

__attribute__((noinline)) static void path_hash(long iters)
{
    for (long k = 0; k < iters; k++)
        for (size_t i = 0; i < N_OF(canon_keys); i++)
            sink += cnb_term_hash(canon_keys[i].p, canon_keys[i].len);
}

__attribute__((noinline)) static void path_etf_check(long iters)
{
    for (long k = 0; k < iters; k++)
        for (size_t i = 0; i < N_OF(gen_call); i++) {
            long r = cnb__etf_skip(gen_call[i].p, gen_call[i].len);
            if (r != (long)gen_call[i].len)
                fail("etf_check");
            sink += (uint64_t)r;
        }
}

static const bench_path_t paths[] = {
    {"canonical", path_canonical, N_OF(canon_keys)},
    {"canonical_other", path_canonical_other, N_OF(other_keys)},
    {"valid", path_valid, N_OF(canon_keys)},
    {"compare", path_compare, N_OF(cmp_keys) / 2},
    {"hash", path_hash, N_OF(canon_keys)},
    {"etf_check", path_etf_check, N_OF(gen_call)},
};

int main(int argc, char **argv)
{
    return bench_paths_main("term_paths", paths, N_OF(paths), argc, argv);
}
