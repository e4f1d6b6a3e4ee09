/* test_registry_concurrency.c: Check suite for core/registry under concurrency:
 * forked processes and threads writing at once, each checked against its own
 * model while a reader checks that no torn entry is ever seen; and a writer
 * killed with SIGKILL at random points 1,000 times, with the invariant checker
 * and a model comparison after each. Semantics: test_registry.c. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fcntl.h>

#include "cnb_registry.h"
#include "registry_int.h" /* the crash-injection hook, a stripe's bump region */
#include "check_run.h"

static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* A 64-bit mixer for seeds and sizes: the registry's own. */
#define mix cnb__reg_mix

static cnb_pid_t mkpid(const char *node, uint32_t num)
{
    cnb_pid_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.node, sizeof p.node, "%s", node);
    p.num = num;
    p.creation = 1;
    return p;
}

/* Key k as canonical ETF {Space, K}: <<131,104,2,97,Space,98,K:32>>. */
static size_t mkkey(unsigned char *out, unsigned space, uint32_t k)
{
    out[0] = 131;
    out[1] = 104;
    out[2] = 2;
    out[3] = 97;
    out[4] = (unsigned char)space;
    out[5] = 98;
    out[6] = (unsigned char)(k >> 24);
    out[7] = (unsigned char)(k >> 16);
    out[8] = (unsigned char)(k >> 8);
    out[9] = (unsigned char)k;
    return 10;
}

/* ---- several processes and threads against models --------------------------- */

enum { OWN_KEYS = 64, SHARED_KEYS = 8, OPS = 20000, NPROC = 3, NTHREAD = 2 };

struct shared_report {
    volatile int errors;
    volatile long live[NPROC + NTHREAD]; /* own entries at the end */
    volatile int shared_held[NPROC + NTHREAD][SHARED_KEYS];
    volatile int done;
};

/* A value names its owner and key, so any reader can tell a torn entry. */
static size_t mkvalue(unsigned char *out, unsigned space, uint32_t k, uint32_t gen)
{
    size_t n = 12 + (mix(gen * 7919u + k) % 40);
    memset(out, 0, n);
    out[0] = (unsigned char)space;
    memcpy(out + 1, &k, 4);
    memcpy(out + 5, &gen, 4);
    for (size_t i = 9; i < n; i++)
        out[i] = (unsigned char)(space * 31 + k * 7 + gen + i);
    return n;
}

static int value_ok(const unsigned char *v, size_t n, unsigned *space, uint32_t *k)
{
    if (n < 12)
        return 0;
    uint32_t gen;
    memcpy(k, v + 1, 4);
    memcpy(&gen, v + 5, 4);
    *space = v[0];
    unsigned char want[64];
    size_t wn = mkvalue(want, *space, *k, gen);
    return wn == n && memcmp(want, v, n) == 0;
}

static void worker(struct cnb_registry *r, unsigned me, struct shared_report *rep)
{
    char node[32];
    snprintf(node, sizeof node, "w%u@host", me);
    cnb_pid_t self = mkpid(node, 100 + me), cur;
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    uint64_t seed = 0x9E3779B97F4A7C15ULL * (me + 1);
    uint32_t model[OWN_KEYS]; /* 0: absent, else the value generation */
    int held[SHARED_KEYS] = {0};
    memset(model, 0, sizeof model);
    unsigned char k[16], v[64];
    unsigned space = 10 + me;
    int err = 0;
    for (uint32_t i = 1; i <= OPS && !err; i++) {
        uint64_t x = rnd(&seed);
        uint32_t key = (uint32_t)(x >> 8) % OWN_KEYS;
        size_t kl = mkkey(k, space, key);
        switch (x % 8) {
        case 0:
        case 1:
        case 2: {
            size_t vl = mkvalue(v, space, key, i);
            int rc = cnb_registry_register(r, k, kl, &self, v, vl, &cur);
            if (model[key] ? rc != CNB_EEXIST || cur.num != self.num : rc != 0)
                err = 1;
            if (!model[key])
                model[key] = i;
            break;
        }
        case 3: {
            ssize_t n = cnb_registry_unregister(r, k, kl, &self);
            if (n != (model[key] ? 1 : 0))
                err = 2;
            model[key] = 0;
            break;
        }
        case 4: {
            size_t vl = mkvalue(v, space, key, i);
            ssize_t n = cnb_registry_update_value(r, k, kl, &self, v, vl);
            if (n != (model[key] ? 1 : CNB_ENOENT))
                err = 3;
            if (model[key])
                model[key] = i;
            break;
        }
        case 5: {
            ssize_t n = cnb_registry_lookup(r, k, kl, &res);
            if (n != (model[key] ? 1 : 0))
                err = 4;
            else if (n == 1) {
                size_t vl = mkvalue(v, space, key, model[key]);
                if (res.items[0].value_len != vl || memcmp(res.items[0].value, v, vl))
                    err = 5;
            }
            break;
        }
        default: { /* shared keys: contended registration */
            uint32_t s = key % SHARED_KEYS;
            kl = mkkey(k, 1, s);
            if (held[s]) {
                if (cnb_registry_unregister(r, k, kl, &self) != 1)
                    err = 6;
                held[s] = 0;
            } else {
                size_t vl = mkvalue(v, 1, s, me);
                int rc = cnb_registry_register(r, k, kl, &self, v, vl, &cur);
                if (rc == 0)
                    held[s] = 1;
                else if (rc != CNB_EEXIST || cur.num == self.num)
                    err = 7;
            }
        }
        }
    }
    long live = 0;
    for (uint32_t key = 0; key < OWN_KEYS; key++)
        live += model[key] != 0;
    /* keys(self) must be exactly the model plus the shared keys held */
    ssize_t n = cnb_registry_keys(r, &self, &res);
    long held_n = 0;
    for (int s = 0; s < SHARED_KEYS; s++)
        held_n += held[s];
    if (!err && n != live + held_n)
        err = 8;
    rep->live[me] = live;
    for (int s = 0; s < SHARED_KEYS; s++)
        rep->shared_held[me][s] = held[s];
    if (err) {
        fprintf(stderr, "worker %u: error %d\n", me, err);
        __sync_fetch_and_add(&rep->errors, 1);
    }
    cnb_registry_result_free(&res);
}

struct thr {
    struct cnb_registry *r;
    unsigned me;
    struct shared_report *rep;
};

static void *worker_thread(void *p)
{
    struct thr *t = p;
    worker(t->r, t->me, t->rep);
    return NULL;
}

static void *reader_thread(void *p)
{
    struct thr *t = p;
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    uint64_t seed = 12345;
    unsigned char k[16];
    long lookups = 0;
    unsigned char kb[8][16];
    unsigned bspace[8];
    uint32_t bkey[8];
    cnb_registry_key_t keys[8];
    size_t counts[8];
    while (!t->rep->done) {
        if (lookups % 2) { /* a batch of 8 random keys through lookup_many */
            for (int b = 0; b < 8; b++) {
                uint64_t y = rnd(&seed);
                bspace[b] = y & 1 ? 1 : 10 + (unsigned)((y >> 1) % (NPROC + NTHREAD));
                bkey[b] = (uint32_t)(y >> 8) % (bspace[b] == 1 ? SHARED_KEYS : OWN_KEYS);
                keys[b] = (cnb_registry_key_t){kb[b], mkkey(kb[b], bspace[b], bkey[b])};
            }
            ssize_t n = cnb_registry_lookup_many(t->r, keys, 8, &res, counts);
            size_t at = 0;
            for (int b = 0; n >= 0 && b < 8; b++) {
                unsigned vs;
                uint32_t vk;
                if (counts[b] > 1 ||
                    (counts[b] == 1 &&
                     (!value_ok(res.items[at].value, res.items[at].value_len, &vs, &vk) ||
                      vs != bspace[b] || vk != bkey[b])))
                    n = -1;
                at += counts[b];
            }
            if (n < 0 || at != res.n) {
                fprintf(stderr, "reader: torn or bad entry in a batch (n=%zd)\n", n);
                __sync_fetch_and_add(&t->rep->errors, 1);
            }
        }
        uint64_t x = rnd(&seed);
        unsigned space = x & 1 ? 1 : 10 + (unsigned)((x >> 1) % (NPROC + NTHREAD));
        uint32_t key = (uint32_t)(x >> 8) % (space == 1 ? SHARED_KEYS : OWN_KEYS);
        ssize_t n = cnb_registry_lookup(t->r, k, mkkey(k, space, key), &res);
        unsigned vs;
        uint32_t vk;
        if (n < 0 || n > 1 ||
            (n == 1 && (!value_ok(res.items[0].value, res.items[0].value_len, &vs, &vk) ||
                        vs != space || vk != key))) {
            fprintf(stderr, "reader: torn or bad entry (n=%zd)\n", n);
            __sync_fetch_and_add(&t->rep->errors, 1);
        }
        lookups++;
    }
    cnb_registry_result_free(&res);
    return NULL;
}

/* A fresh registry segment in /dev/shm plus a report page the forked
 * processes share; fixture_done() checks and removes both. */
struct fixture {
    char path[128];
    cnb_registry_opts_t o;
    struct cnb_registry *r;
    struct shared_report *rep;
};

static void fixture_open(struct fixture *f, const char *name)
{
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "/dev/shm/cnb_test_%s_%d", name, (int)getpid());
    unlink(f->path);
    f->o.path = f->path;
    f->o.flags = CNB_REG_CREATE;
    f->o.stripes = 16;
    ck_assert_int_eq(cnb_registry_open(&f->o, &f->r), 0);
    f->rep = mmap(NULL, sizeof *f->rep, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                  -1, 0);
    ck_assert_ptr_ne(f->rep, MAP_FAILED);
    memset((void *)f->rep, 0, sizeof *f->rep);
}

static void fixture_done(struct fixture *f)
{
    ck_assert_int_eq(f->rep->errors, 0);
    char msg[256];
    ck_assert_msg(cnb_registry_check(f->r, msg, sizeof msg) == 0, "check: %s", msg);
    munmap((void *)f->rep, sizeof *f->rep);
    cnb_registry_close(f->r);
    unlink(f->path);
}

START_TEST(processes_and_threads)
{
    struct fixture fx;
    fixture_open(&fx, "regconc");
    cnb_registry_opts_t o = fx.o;
    struct cnb_registry *r = fx.r;
    struct shared_report *rep = fx.rep;

    pid_t kids[NPROC];
    for (unsigned i = 0; i < NPROC; i++) {
        kids[i] = fork();
        ck_assert_int_ge(kids[i], 0);
        if (kids[i] == 0) {
            struct cnb_registry *cr;
            if (cnb_registry_open(&o, &cr) != 0)
                _exit(2);
            worker(cr, i, rep);
            cnb_registry_close(cr);
            _exit(0);
        }
    }
    pthread_t th[NTHREAD], rd;
    struct thr targs[NTHREAD], rarg = {r, 0, rep};
    pthread_create(&rd, NULL, reader_thread, &rarg);
    for (unsigned i = 0; i < NTHREAD; i++) {
        targs[i] = (struct thr){r, NPROC + i, rep};
        pthread_create(&th[i], NULL, worker_thread, &targs[i]);
    }
    for (unsigned i = 0; i < NTHREAD; i++)
        pthread_join(th[i], NULL);
    for (unsigned i = 0; i < NPROC; i++) {
        int st;
        waitpid(kids[i], &st, 0);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                      "writer process %u ended with status 0x%x (exit 2: open failed)", i, st);
    }
    rep->done = 1;
    pthread_join(rd, NULL);
    ck_assert_int_eq(rep->errors, 0);

    long total = 0;
    for (unsigned w = 0; w < NPROC + NTHREAD; w++) {
        total += rep->live[w];
        for (int s = 0; s < SHARED_KEYS; s++)
            total += rep->shared_held[w][s];
    }
    for (int s = 0; s < SHARED_KEYS; s++) {
        int holders = 0;
        for (unsigned w = 0; w < NPROC + NTHREAD; w++)
            holders += rep->shared_held[w][s];
        ck_assert_int_le(holders, 1);
    }
    ck_assert_int_eq((long)cnb_registry_count(r), total);
    fixture_done(&fx);
}
END_TEST

/* ---- attaching while another process grows the segment ------------------------ */

/* A writer that keeps growing the segment (big values) while other processes
 * attach: an attacher must never take the growth for corruption. (Once seen
 * in CI: the file's size was read before a header that already named the
 * bigger size, and open said "sizes inconsistent".) */
static void *grower_thread(void *p)
{
    struct thr *t = p;
    cnb_pid_t self = mkpid("grower@host", 1);
    static unsigned char v[3000];
    memset(v, 7, sizeof v);
    unsigned char k[16];
    for (uint32_t i = 0; !t->rep->done; i++)
        if (cnb_registry_register(t->r, k, mkkey(k, 2, i), &self, v, sizeof v, NULL) != 0)
            __sync_fetch_and_add(&t->rep->errors, 1);
    return NULL;
}

START_TEST(attach_while_growing)
{
    /* Growth steps are small (1 MiB) while a segment is young, so each round
     * starts a fresh segment: many growths, each a chance to hit the race. */
    int failed = 0;
    for (int round = 0; round < 40 && !failed; round++) {
        struct fixture fx;
        fixture_open(&fx, "reggrow");
        cnb_registry_opts_t o = fx.o;
        struct shared_report *rep = fx.rep;
        pthread_t g;
        struct thr garg = {fx.r, 0, rep};
        pthread_create(&g, NULL, grower_thread, &garg);
        pid_t kids[2];
        for (int i = 0; i < 2; i++) {
            kids[i] = fork();
            ck_assert_int_ge(kids[i], 0);
            if (kids[i] == 0) {
                for (int j = 0; j < 25; j++) {
                    char err[256] = "";
                    cnb_registry_opts_t co = o;
                    co.errbuf = err;
                    co.errbuf_len = sizeof err;
                    struct cnb_registry *cr;
                    if (cnb_registry_open(&co, &cr) != 0) {
                        fprintf(stderr, "round %d attach %d: %s\n", round, j, err);
                        _exit(2);
                    }
                    cnb_registry_close(cr);
                }
                _exit(0);
            }
        }
        for (int i = 0; i < 2; i++) {
            int st;
            waitpid(kids[i], &st, 0);
            failed |= !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        }
        rep->done = 1;
        pthread_join(g, NULL);
        fixture_done(&fx);
    }
    ck_assert_msg(!failed, "an attach failed while the segment grew");
}
END_TEST

/* ---- a crash at every write point of one operation --------------------------- */

/* The hook core calls between logged stores (registry_int.h): the child below
 * arms it to die at the n-th point. */
static volatile long fault_at, fault_count;

void cnb__reg_fault_point(void)
{
    if (fault_at && ++fault_count == fault_at)
        raise(SIGKILL);
}

typedef void (*crash_op)(struct cnb_registry *r);
/* Checks a copy after the operation died (or finished: done 1). Returns 1 if
 * right, else 0 with a reason in why. */
typedef int (*crash_verify)(struct cnb_registry *r, int done, char *why, size_t whylen);

static void *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = malloc(*len);
    ck_assert(b && fread(b, 1, *len, f) == *len);
    fclose(f);
    return b;
}

/* Runs op on a fresh copy of the segment at path in a child that dies at its
 * n-th write point, for n = 1, 2, ... until op finishes first; each time, the
 * copy must pass the checker (which repairs what the child left) and verify.
 * Returns how many points there were. */
static long crash_every_point(const char *path, crash_op op, crash_verify verify)
{
    size_t len;
    void *snap = read_file(path, &len);
    char copy[160];
    for (long n = 1;; n++) {
        /* A copy is a sealed memfd too (a plain file is refused), reached by
         * its /proc/self/fd path: the forked child inherits the fd. */
        int fd = memfd_create("cnb_crash_copy", MFD_ALLOW_SEALING);
        ck_assert(fd >= 0 && write(fd, snap, len) == (ssize_t)len);
        ck_assert_int_eq(fchmod(fd, 0600), 0);
        ck_assert_int_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL), 0);
        snprintf(copy, sizeof copy, "/proc/self/fd/%d", fd);
        cnb_registry_opts_t o = {0};
        o.path = copy;
        pid_t kid = fork();
        ck_assert_int_ge(kid, 0);
        if (kid == 0) {
            struct cnb_registry *cr;
            if (cnb_registry_open(&o, &cr) != 0)
                _exit(2);
            fault_count = 0;
            fault_at = n;
            op(cr);
            _exit(0);
        }
        int st;
        waitpid(kid, &st, 0);
        int done = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        ck_assert_msg(done || (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL),
                      "point %ld: child status 0x%x", n, st);
        struct cnb_registry *r;
        ck_assert_int_eq(cnb_registry_open(&o, &r), 0);
        char msg[256];
        ck_assert_msg(cnb_registry_check(r, msg, sizeof msg) == 0, "point %ld: check: %s", n,
                      msg);
        ck_assert_msg(verify(r, done, msg, sizeof msg), "point %ld: %s", n, msg);
        cnb_registry_close(r);
        close(fd);
        if (done) {
            free(snap);
            return n;
        }
    }
}

enum { CP_BASE = 400 };
static uint32_t cp_base_n; /* small keys 0..cp_base_n-1 of space 6 exist */
static uint32_t cp_flux;   /* the key the operation changes */
static int cp_flux_after;  /* whether it is there once the operation is done */

/* Every key of space 6 up to cp_base_n is there with a whole value, except
 * that cp_flux may be either way until the operation is done; the count
 * agrees. */
static int cp_verify(struct cnb_registry *r, int done, char *why, size_t whylen)
{
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    unsigned char k[16];
    int ok = 1;
    uint64_t present = 0;
    for (uint32_t i = 0; ok && i <= cp_base_n; i++) {
        ssize_t n = cnb_registry_lookup(r, k, mkkey(k, 6, i), &res);
        int want = i == cp_flux ? (done ? cp_flux_after : -1) : i < cp_base_n;
        unsigned vs;
        uint32_t vk;
        if (n < 0 || n > 1 || (want >= 0 && n != want))
            ok = 0 * snprintf(why, whylen, "key %u: %zd entries (want %d)", i, n, want);
        else if (n == 1 && !(value_ok(res.items[0].value, res.items[0].value_len, &vs, &vk) &&
                             vs == 6 && vk == i))
            ok = 0 * snprintf(why, whylen, "key %u: value corrupt", i);
        present += n == 1;
    }
    uint64_t c = cnb_registry_count(r);
    if (ok && c != present)
        ok = 0 * snprintf(why, whylen, "count %llu, %llu keys there", (unsigned long long)c,
                          (unsigned long long)present);
    cnb_registry_result_free(&res);
    return ok;
}

static void cp_unregister_flux(struct cnb_registry *r)
{
    cnb_pid_t self = mkpid("crash@host", 1);
    unsigned char k[16];
    (void)cnb_registry_unregister(r, k, mkkey(k, 6, cp_flux), &self);
}

/* A new value for cp_flux (another length, so a new entry replaces the old). */
static void cp_update_flux(struct cnb_registry *r)
{
    cnb_pid_t self = mkpid("crash@host", 1);
    unsigned char k[16], v[64];
    uint32_t gen = 2;
    while (mkvalue(v, 6, cp_flux, gen) == mkvalue(v, 6, cp_flux, 1))
        gen++;
    size_t vl = mkvalue(v, 6, cp_flux, gen);
    (void)cnb_registry_update_value(r, k, mkkey(k, 6, cp_flux), &self, v, vl);
}

static void cp_register_next(struct cnb_registry *r)
{
    cnb_pid_t self = mkpid("crash@host", 1);
    unsigned char k[16], v[64];
    size_t vl = mkvalue(v, 6, cp_base_n, 1);
    (void)cnb_registry_register(r, k, mkkey(k, 6, cp_base_n), &self, v, vl, NULL);
}

static void cp_add(struct cnb_registry *r, uint32_t i)
{
    cnb_pid_t self = mkpid("crash@host", 1);
    unsigned char k[16], v[64];
    size_t vl = mkvalue(v, 6, i, 1);
    ck_assert_int_eq(cnb_registry_register(r, k, mkkey(k, 6, i), &self, v, vl, NULL), 0);
}

/* One stripe, so that the internals the scenarios aim at are easy to reach. */
static struct cnb_registry *cp_open(const char *path)
{
    unlink(path);
    cnb_registry_opts_t o = {0};
    o.path = path;
    o.flags = CNB_REG_CREATE;
    o.stripes = 1;
    struct cnb_registry *r;
    ck_assert_int_eq(cnb_registry_open(&o, &r), 0);
    return r;
}

/* A registration whose entry needs a new bump region, which a freed 20 KiB
 * block becomes; a registration that doubles the key table; an unregister; a
 * value replaced. Each operation dies at each of its write points in turn. */
START_TEST(crash_at_every_point)
{
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/cnb_test_regcrash_%d", (int)getpid());
    struct cnb_registry *r = cp_open(path);
    struct cnb__reg_stripe *st = &r->stripes[0];
    cnb_pid_t self = mkpid("crash@host", 1);
    static unsigned char big[20480];
    uint32_t i = 0;
    for (; i < CP_BASE; i++)
        cp_add(r, i);
    ck_assert_int_eq(cnb_registry_register(r, "big", 3, &self, big, sizeof big, NULL), 0);
    ck_assert_int_eq(cnb_registry_unregister(r, "big", 3, &self), 1);
    /* Use up the bump region: the next entry must take the freed block. */
    uint64_t cost = cnb__reg_alloc_cost(CNB__ENTRY_HDR + 10 + 51);
    while ((uint64_t)(st->bump_end - st->bump_cur) >= cost)
        cp_add(r, i++);
    cp_base_n = cp_flux = i;
    cp_flux_after = 1;
    cnb_registry_info_t before, after;
    cnb_registry_info(r, &before);
    long points = crash_every_point(path, cp_register_next, cp_verify);
    ck_assert_int_gt(points, 10);
    cp_register_next(r); /* the same step, done for real: no arena growth */
    cnb_registry_info(r, &after);
    ck_assert_uint_eq(after.arena_used, before.arena_used);
    ck_assert_int_eq(cnb_registry_count(r), cp_base_n + 1);

    /* Table growth: add keys until the next one doubles the key table. */
    for (i = cp_base_n + 1;
         !cnb__reg_rehash_bits(st->ktab, st->klive, (uint64_t)st->klive + st->ktomb); i++)
        cp_add(r, i);
    cp_base_n = cp_flux = i;
    uint64_t ktab = st->ktab;
    points = crash_every_point(path, cp_register_next, cp_verify);
    ck_assert_int_gt(points, 10);
    cp_register_next(r);
    ck_assert_uint_gt(cnb__tab_bits(st->ktab), cnb__tab_bits(ktab));
    cp_base_n++;

    /* Unregistering a key, and replacing a value, die at each point too. */
    cp_flux = 7;
    cp_flux_after = 0;
    ck_assert_int_gt(crash_every_point(path, cp_unregister_flux, cp_verify), 5);
    cp_flux = 9;
    cp_flux_after = 1;
    ck_assert_int_gt(crash_every_point(path, cp_update_flux, cp_verify), 5);
    cnb_registry_close(r);
    unlink(path);
}
END_TEST

/* ---- kill -9 at random points ---------------------------------------------------- */

enum { KK = 48, KOWN = 8, KMETA = 4, KILLS = 1000 };

enum { OP_REG, OP_UNREG, OP_UPDATE, OP_MATCH, OP_RMOWNER, OP_RMNODE, OP_LOOKUP, OP_META };

struct kop {
    int kind;
    uint32_t key, owner;
    uint64_t vid;
};

static size_t kvalue_len(uint64_t vid)
{
    uint64_t h = mix(vid);
    unsigned r = (unsigned)(h % 1000);
    if (r < 900)
        return 8 + (h >> 16) % 56;
    if (r < 950)
        return 64 + (h >> 16) % 700;
    if (r < 995) /* 4-16 KiB: freed, they become bump regions for small entries */
        return 4096 + (h >> 16) % 12000;
    return 70000 + (h >> 16) % 3000; /* big: exercises G's free lists */
}

static size_t meta_len(uint64_t vid)
{
    size_t n = kvalue_len(vid);
    return n > 200 ? 200 : n;
}

static void kvalue(unsigned char *out, uint64_t vid)
{
    size_t n = kvalue_len(vid);
    memcpy(out, &vid, 8);
    uint64_t s = mix(vid) | 1;
    for (size_t i = 8; i < n; i++)
        out[i] = (unsigned char)(rnd(&s) >> 24);
}

static void gen_kop(uint64_t *seed, uint64_t iter, uint32_t i, struct kop *op)
{
    uint64_t x = rnd(seed);
    unsigned r = (unsigned)(x % 1000);
    op->key = (uint32_t)(x >> 16) % KK;
    op->owner = (uint32_t)(x >> 32) % KOWN;
    op->vid = (iter << 24) | i;
    op->kind = r < 430   ? OP_REG
               : r < 600 ? OP_UNREG
               : r < 720 ? OP_UPDATE
               : r < 800 ? OP_MATCH
               : r < 815 ? OP_RMOWNER
               : r < 820 ? OP_RMNODE
               : r < 900 ? OP_LOOKUP
                         : OP_META;
    if (op->kind == OP_META)
        op->key %= KMETA;
}

static cnb_pid_t kowner(uint32_t o)
{
    return mkpid(o < KOWN / 2 ? "n@h" : "m@h", o + 1);
}

static int match_even(void *ctx, const void *v, size_t n)
{
    (void)ctx;
    return n >= 1 && ((const unsigned char *)v)[0] % 2 == 0;
}

static void run_kop(struct cnb_registry *r, const struct kop *op, unsigned char *vbuf,
                    cnb_registry_result_t *res)
{
    unsigned char k[16];
    size_t kl = mkkey(k, op->kind == OP_META ? 2 : 3, op->key);
    cnb_pid_t o = kowner(op->owner);
    switch (op->kind) {
    case OP_REG:
        kvalue(vbuf, op->vid);
        cnb_registry_register(r, k, kl, &o, vbuf, kvalue_len(op->vid), NULL);
        break;
    case OP_UNREG:
        cnb_registry_unregister(r, k, kl, &o);
        break;
    case OP_UPDATE:
        kvalue(vbuf, op->vid);
        cnb_registry_update_value(r, k, kl, &o, vbuf, kvalue_len(op->vid));
        break;
    case OP_MATCH:
        cnb_registry_unregister_match(r, k, kl, &o, match_even, NULL);
        break;
    case OP_RMOWNER:
        cnb_registry_remove_owner(r, &o);
        break;
    case OP_RMNODE:
        cnb_registry_remove_node(r, "m@h", 0);
        break;
    case OP_LOOKUP:
        cnb_registry_lookup(r, k, kl, res);
        break;
    case OP_META:
        kvalue(vbuf, op->vid);
        cnb_registry_meta_put(r, k, kl, vbuf, meta_len(op->vid));
        break;
    }
}

/* The model: per key, entries as (owner << 56 | vid); per meta key, a vid. */
struct kmodel {
    uint64_t *e[KK];
    size_t n[KK], cap[KK];
    uint64_t meta[KMETA];
};

static void km_add(struct kmodel *m, uint32_t k, uint64_t sig)
{
    if (m->n[k] == m->cap[k]) {
        m->cap[k] = m->cap[k] ? m->cap[k] * 2 : 8;
        m->e[k] = realloc(m->e[k], m->cap[k] * sizeof(uint64_t));
    }
    m->e[k][m->n[k]++] = sig;
}

static void km_apply(struct kmodel *m, const struct kop *op)
{
    uint64_t own = (uint64_t)op->owner << 56;
    switch (op->kind) {
    case OP_REG:
        km_add(m, op->key, own | op->vid);
        break;
    case OP_UPDATE:
        for (size_t i = 0; i < m->n[op->key]; i++)
            if ((m->e[op->key][i] >> 56) == op->owner)
                m->e[op->key][i] = own | op->vid;
        break;
    case OP_UNREG:
    case OP_MATCH:
    case OP_RMOWNER:
    case OP_RMNODE:
        for (uint32_t k = 0; k < KK; k++) {
            size_t w = 0;
            for (size_t i = 0; i < m->n[k]; i++) {
                uint64_t s = m->e[k][i];
                uint32_t so = (uint32_t)(s >> 56);
                int gone = op->kind == OP_RMNODE    ? so >= KOWN / 2
                           : op->kind == OP_RMOWNER ? so == op->owner
                           : k != op->key || so != op->owner
                               ? 0
                               : op->kind == OP_UNREG || (s & 0xFF) % 2 == 0;
                if (!gone)
                    m->e[k][w++] = s;
            }
            m->n[k] = w;
        }
        break;
    case OP_META:
        m->meta[op->key] = op->vid;
        break;
    default:
        break;
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int in_set(const uint64_t *s, size_t n, uint64_t v)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == v)
            return 1;
    return 0;
}

/* Reads the registry into `now` and checks before ∩ after ⊆ now ⊆ before ∪ after
 * for every key (a multi-entry operation may be cut between entries). */
static int km_compare(struct cnb_registry *r, const struct kmodel *before,
                      const struct kmodel *after, struct kmodel *now,
                      cnb_registry_result_t *res, char *why, size_t whylen)
{
    unsigned char k[16], v[80000];
    size_t total = 0;
    for (uint32_t key = 0; key < KK; key++) {
        now->n[key] = 0;
        ssize_t n = cnb_registry_lookup(r, k, mkkey(k, 3, key), res);
        if (n < 0) {
            snprintf(why, whylen, "lookup %u: %s", key, cnb_strerror((int)n));
            return 0;
        }
        for (size_t i = 0; i < (size_t)n; i++) {
            const cnb_registry_item_t *it = &res->items[i];
            uint64_t vid;
            if (it->value_len < 8) {
                snprintf(why, whylen, "key %u: short value", key);
                return 0;
            }
            memcpy(&vid, it->value, 8);
            kvalue(v, vid);
            if (it->value_len != kvalue_len(vid) || memcmp(v, it->value, it->value_len)) {
                snprintf(why, whylen, "key %u: value %llx corrupt", key,
                         (unsigned long long)vid);
                return 0;
            }
            uint32_t o = it->owner.num - 1;
            cnb_pid_t want = kowner(o);
            if (o >= KOWN || strcmp(it->owner.node, want.node)) {
                snprintf(why, whylen, "key %u: bad owner", key);
                return 0;
            }
            km_add(now, key, ((uint64_t)o << 56) | vid);
        }
        total += (size_t)n;
        for (size_t i = 0; i < now->n[key]; i++) {
            uint64_t s = now->e[key][i];
            if (!in_set(before->e[key], before->n[key], s) &&
                !in_set(after->e[key], after->n[key], s)) {
                snprintf(why, whylen, "key %u: phantom entry %llx", key, (unsigned long long)s);
                return 0;
            }
        }
        for (size_t i = 0; i < before->n[key]; i++) {
            uint64_t s = before->e[key][i];
            if (in_set(after->e[key], after->n[key], s) && !in_set(now->e[key], now->n[key], s)) {
                snprintf(why, whylen, "key %u: lost entry %llx", key, (unsigned long long)s);
                return 0;
            }
        }
        if (now->n[key])
            qsort(now->e[key], now->n[key], sizeof(uint64_t), cmp_u64);
    }
    if (cnb_registry_count(r) != total) {
        snprintf(why, whylen, "count %llu, entries %zu",
                 (unsigned long long)cnb_registry_count(r), total);
        return 0;
    }
    for (uint32_t m = 0; m < KMETA; m++) {
        ssize_t n = cnb_registry_meta_get(r, k, mkkey(k, 2, m), res);
        uint64_t vid = 0;
        if (n == 1) {
            if (res->items[0].value_len < 8) {
                snprintf(why, whylen, "meta %u: short value", m);
                return 0;
            }
            memcpy(&vid, res->items[0].value, 8);
            kvalue(v, vid);
            if (res->items[0].value_len != meta_len(vid) ||
                memcmp(v, res->items[0].value, res->items[0].value_len)) {
                snprintf(why, whylen, "meta %u: value corrupt", m);
                return 0;
            }
        } else if (n != CNB_ENOENT) {
            snprintf(why, whylen, "meta_get %u: %zd", m, n);
            return 0;
        }
        if (vid != before->meta[m] && vid != after->meta[m]) {
            snprintf(why, whylen, "meta %u wrong", m);
            return 0;
        }
        now->meta[m] = vid;
    }
    return 1;
}

static void km_copy(struct kmodel *dst, const struct kmodel *src)
{
    for (uint32_t k = 0; k < KK; k++) {
        dst->n[k] = 0;
        for (size_t i = 0; i < src->n[k]; i++)
            km_add(dst, k, src->e[k][i]);
    }
    memcpy(dst->meta, src->meta, sizeof dst->meta);
}

static void km_free(struct kmodel *m)
{
    for (uint32_t k = 0; k < KK; k++)
        free(m->e[k]);
    memset(m, 0, sizeof *m);
}

struct progress {
    volatile int ready;
    volatile uint32_t done; /* operations finished */
};

/* ---- kill -9 while freed blocks are reused as bump space ------------------------ */

enum { BR_WINDOW = 2000, BR_KILLS = 300 };

struct bump_progress {
    volatile int ready;
    volatile uint32_t next; /* the next small key the writer registers */
};

/* Small value of window key i: its number, then its low byte repeated; the
 * length moves to the next size class every BR_WINDOW keys, so the entry a
 * step drops (BR_WINDOW keys back) is of another class than the one it adds. */
static size_t bump_value(unsigned char *v, uint32_t i)
{
    size_t n = 12 + (i / BR_WINDOW) % 40 * 16;
    memcpy(v, &i, 4);
    memset(v + 4, (int)(i & 0xff), n - 4);
    return n;
}

static int bump_value_ok(const unsigned char *v, size_t n, uint32_t i)
{
    unsigned char want[12 + 40 * 16];
    return n == bump_value(want, i) && memcmp(v, want, n) == 0;
}

/* The writer: a sliding window of BR_WINDOW small entries whose new entries
 * need fresh space, and at each step a value of 5 KiB or 12 KiB in turn
 * registered and dropped, whose free blocks keep becoming bump regions. */
static void bump_writer(struct cnb_registry *r, struct bump_progress *bp)
{
    cnb_pid_t self = mkpid("bump@host", 1);
    static unsigned char big[12288];
    unsigned char k[16], v[12 + 40 * 16];
    for (;;) {
        uint32_t i = bp->next;
        size_t vl = bump_value(v, i);
        (void)cnb_registry_register(r, k, mkkey(k, 4, i), &self, v, vl, NULL);
        if (i >= BR_WINDOW)
            (void)cnb_registry_unregister(r, k, mkkey(k, 4, i - BR_WINDOW), &self);
        size_t bl = i % 2 ? 12288 : 5120;
        memset(big, (int)(i & 0xff), bl);
        (void)cnb_registry_register(r, k, mkkey(k, 5, 0), &self, big, bl, NULL);
        (void)cnb_registry_unregister(r, k, mkkey(k, 5, 0), &self);
        bp->next = i + 1;
    }
}

START_TEST(kill9_bump_reuse)
{
    struct fixture fx;
    fixture_open(&fx, "regbump");
    struct bump_progress *bp = mmap(NULL, sizeof *bp, PROT_READ | PROT_WRITE,
                                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(bp, MAP_FAILED);
    memset((void *)bp, 0, sizeof *bp);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    uint64_t seed = 0x5EED0000u ^ (uint64_t)getpid();
    unsigned char k[16];
    for (int iter = 0; iter < BR_KILLS; iter++) {
        bp->ready = 0;
        pid_t kid = fork();
        ck_assert_int_ge(kid, 0);
        if (kid == 0) {
            struct cnb_registry *cr;
            cnb_registry_opts_t co = fx.o;
            co.flags = 0;
            if (cnb_registry_open(&co, &cr) != 0)
                _exit(2);
            bp->ready = 1;
            bump_writer(cr, bp);
        }
        while (!bp->ready)
            usleep(20);
        usleep((useconds_t)(rnd(&seed) % 3000));
        kill(kid, SIGKILL);
        int st;
        waitpid(kid, &st, 0);
        ck_assert(WIFSIGNALED(st));
        char msg[256];
        ck_assert_msg(cnb_registry_check(fx.r, msg, sizeof msg) == 0, "kill %d: check: %s",
                      iter, msg);
        /* The window is there, intact; at most the step in flight differs. */
        uint32_t next = bp->next, lo = next > BR_WINDOW ? next - BR_WINDOW : 0;
        for (uint32_t i = lo; i < next; i++) {
            ssize_t n = cnb_registry_lookup(fx.r, k, mkkey(k, 4, i), &res);
            ck_assert_msg(n == 1 || (n == 0 && i == lo),
                          "kill %d: key %u of [%u, %u) has %zd entries", iter, i, lo, next, n);
            if (n == 1)
                ck_assert(bump_value_ok(res.items[0].value, res.items[0].value_len, i));
        }
        uint64_t count = cnb_registry_count(fx.r);
        ck_assert_msg(count + 1 >= next - lo && count <= next - lo + 3,
                      "kill %d: %llu entries for a window of %u", iter,
                      (unsigned long long)count, next - lo);
    }
    cnb_registry_info_t info;
    cnb_registry_info(fx.r, &info);
    /* Bounded: free lists do not merge neighbours, so each of the 40 value
     * sizes keeps up to a window's worth of blocks (about 32 MiB after 80,000
     * steps without kills), but nothing leaks. */
    ck_assert_msg(info.arena_used < ((uint64_t)48 << 20), "arena %llu bytes",
                  (unsigned long long)info.arena_used);
    cnb_registry_result_free(&res);
    munmap((void *)bp, sizeof *bp);
    fixture_done(&fx);
}
END_TEST

START_TEST(kill9_loop)
{
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/cnb_test_regkill_%d", (int)getpid());
    unlink(path);
    cnb_registry_opts_t o = {0};
    o.path = path;
    o.flags = CNB_REG_CREATE;
    o.kind = CNB_REG_DUPLICATE;
    o.stripes = 4;
    o.feed_slots = 64;
    struct cnb_registry *r;
    ck_assert_int_eq(cnb_registry_open(&o, &r), 0);
    struct progress *pg = mmap(NULL, sizeof *pg, PROT_READ | PROT_WRITE,
                               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(pg, MAP_FAILED);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    static struct kmodel model, after, now;
    unsigned char *vbuf = malloc(80000);
    uint64_t master = (uint64_t)time(NULL) * 2654435761u | 1;
    const char *env = getenv("CNB_TEST_SEED");
    if (env)
        master = strtoull(env, NULL, 0);
    uint64_t feed_pos = cnb_registry_feed_head(r);
    for (uint64_t iter = 1; iter <= KILLS; iter++) {
        uint64_t seed = mix(master + iter) | 1, delay_seed = seed ^ 0xABCDEF;
        pg->ready = 0;
        pg->done = 0;
        pid_t kid = fork();
        ck_assert_int_ge(kid, 0);
        if (kid == 0) {
            struct cnb_registry *cr;
            cnb_registry_opts_t co = o;
            co.flags = 0;
            if (cnb_registry_open(&co, &cr) != 0)
                _exit(2);
            pg->ready = 1;
            cnb_registry_result_t cres;
            cnb_registry_result_init(&cres, NULL);
            uint64_t s = seed;
            for (uint32_t i = 0;; i++) {
                struct kop op;
                gen_kop(&s, iter, i, &op);
                run_kop(cr, &op, vbuf, &cres);
                pg->done = i + 1;
            }
        }
        unsigned d = (unsigned)(rnd(&delay_seed) % 100);
        if (d >= 3) /* mostly kill while operating, sometimes while attaching */
            while (!pg->ready)
                usleep(50);
        usleep((useconds_t)(rnd(&delay_seed) % 2500));
        kill(kid, SIGKILL);
        int st;
        waitpid(kid, &st, 0);
        ck_assert_msg(WIFSIGNALED(st), "child exited by itself (status %d)", st);

        char msg[512];
        int rc = cnb_registry_check(r, msg, sizeof msg);
        ck_assert_msg(rc == 0, "iteration %llu (seed %llu): check: %s", (unsigned long long)iter,
                      (unsigned long long)master, msg);
        /* replay what the child finished, then allow the one in flight */
        uint32_t done = pg->done;
        uint64_t s = seed;
        struct kop op;
        for (uint32_t i = 0; i < done; i++) {
            gen_kop(&s, iter, i, &op);
            km_apply(&model, &op);
        }
        gen_kop(&s, iter, done, &op);
        km_copy(&after, &model);
        km_apply(&after, &op);
        char why[256];
        ck_assert_msg(km_compare(r, &model, &after, &now, &res, why, sizeof why),
                      "iteration %llu (seed %llu, op %u kind %d): %s", (unsigned long long)iter,
                      (unsigned long long)master, done, op.kind, why);
        km_copy(&model, &now);
        /* the feed stays readable and ordered */
        uint64_t missed, last = 0;
        ssize_t n;
        while ((n = cnb_registry_feed_poll(r, &feed_pos, 0, &res, &missed)) > 0)
            for (ssize_t i = 0; i < n; i++) {
                ck_assert_uint_gt(res.items[i].seq, last);
                last = res.items[i].seq;
            }
        ck_assert_int_ge(n, 0);
    }
    ck_assert_int_ge(cnb_registry_purge(r), 0);
    cnb_registry_info_t info;
    cnb_registry_info(r, &info);
    ck_assert_uint_eq(info.attached, 1);
    km_free(&model);
    km_free(&after);
    km_free(&now);
    free(vbuf);
    cnb_registry_result_free(&res);
    munmap(pg, sizeof *pg);
    cnb_registry_close(r);
    unlink(path);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("registry_concurrency");
    TCase *tc = tcase_create("models");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, processes_and_threads);
    tcase_add_test(tc, attach_while_growing);
    suite_add_tcase(s, tc);
    TCase *tk = tcase_create("kill9");
    tcase_set_timeout(tk, 300);
    tcase_add_test(tk, kill9_loop);
    tcase_add_test(tk, kill9_bump_reuse);
    tcase_add_test(tk, crash_at_every_point);
    suite_add_tcase(s, tk);
    return s;
}

int main(void)
{
    return cnb_check_run(suite());
}
