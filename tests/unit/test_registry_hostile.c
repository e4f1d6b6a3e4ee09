/* test_registry_hostile.c: core/registry (core/registry*.c) against a segment
 * that another process of the same user scribbles on: random bytes, huge refs,
 * cycles in chains and free lists, a sequence number that stays odd, a full
 * undo log, broken lock words, and truncation attempts. Every read and write
 * operation must return a result or a CNB_E* code: never crash, never hang
 * (Check's time-out catches a hang). Run under ASan/UBSan too: `make asan`. */
#include <check.h>
#include <linux/futex.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cnb_registry.h"
#include "cnb_term.h"
#include "registry_int.h" /* the segment layout, to corrupt it on purpose */
#include "check_run.h"

#define NKEYS 400

static char g_path[128];

static const char *new_path(void)
{
    static int seq;
    snprintf(g_path, sizeof g_path, "/dev/shm/cnb_test_hostile_%d_%d", (int)getpid(), seq++);
    unlink(g_path);
    return g_path;
}

/* xorshift: reproducible runs (the seed is in the failure message). */
static uint64_t rnd_state;
static uint64_t rnd(void)
{
    uint64_t x = rnd_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rnd_state = x;
}

/* Canonical {k, I} and <<"value I">> (ETF). */
static size_t mkkey(unsigned char *b, uint32_t i)
{
    unsigned char k[] = {131, 104, 2, 119, 1, 'k', 98, 0, 0, 0, 0};
    i += 1000;
    k[7] = (unsigned char)(i >> 24);
    k[8] = (unsigned char)(i >> 16);
    k[9] = (unsigned char)(i >> 8);
    k[10] = (unsigned char)i;
    memcpy(b, k, sizeof k);
    return sizeof k;
}

static size_t mkval(unsigned char *b, uint32_t i)
{
    int n = snprintf((char *)b + 6, 40, "value %u", i);
    b[0] = 131;
    b[1] = 109;
    b[2] = b[3] = b[4] = 0;
    b[5] = (unsigned char)n;
    return 6 + (size_t)n;
}

static cnb_pid_t owner_of(uint32_t i)
{
    cnb_pid_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.node, sizeof p.node, "n%u@host", i % 3);
    p.num = 1 + i % 7;
    p.creation = 1;
    return p;
}

static int is_code(ssize_t rc)
{
    switch (rc) {
    case CNB_ECORRUPT:
    case CNB_ENOMEM:
    case CNB_ETOOBIG:
    case CNB_ENOENT:
    case CNB_EEXIST:
    case CNB_EINVAL:
    case CNB_ESYS:
        return 1;
    default:
        return 0;
    }
}

#define OK_RC(rc, what) \
    ck_assert_msg((rc) >= 0 || is_code(rc), "%s returned %zd (seed %llu)", what, (ssize_t)(rc), \
                  (unsigned long long)seed)

static struct cnb_registry *open_reg(const char *path, int kind)
{
    cnb_registry_opts_t o = {0};
    o.path = path;
    o.flags = CNB_REG_CREATE;
    o.kind = kind;
    o.stripes = 4;
    o.feed_slots = 64;
    o.node_capacity = 16;
    struct cnb_registry *r = NULL;
    ck_assert_int_eq(cnb_registry_open(&o, &r), 0);
    return r;
}

static void populate(struct cnb_registry *r)
{
    unsigned char k[16], v[48];
    for (uint32_t i = 0; i < NKEYS; i++) {
        cnb_pid_t o = owner_of(i);
        size_t kl = mkkey(k, i), vl = mkval(v, i);
        ck_assert_int_eq(cnb_registry_register(r, k, kl, &o, v, vl, NULL), 0);
    }
    /* free blocks and tombstones too */
    for (uint32_t i = 0; i < NKEYS; i += 5) {
        cnb_pid_t o = owner_of(i);
        size_t kl = mkkey(k, i);
        ck_assert_int_eq(cnb_registry_unregister(r, k, kl, &o), 1);
    }
    ck_assert_int_eq(cnb_registry_meta_put(r, k, mkkey(k, 1), v, mkval(v, 1)), 0);
}

static int pred_half(void *ctx, const void *value, size_t len)
{
    (void)ctx;
    return len > 0 && (((const unsigned char *)value)[len - 1] & 1);
}

static int scan_pred(void *ctx, const cnb_registry_item_t *it)
{
    (void)ctx;
    return it->key_len > 0;
}

/* Every read and write operation, a few times each. */
static void run_all(struct cnb_registry *r, uint64_t seed)
{
    unsigned char k[16], v[48];
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    ssize_t rc;
    for (int round = 0; round < 3; round++) {
        uint32_t i = (uint32_t)(rnd() % (NKEYS + 50));
        cnb_pid_t o = owner_of(i);
        size_t kl = mkkey(k, i), vl = mkval(v, i + 1);
        rc = cnb_registry_lookup(r, k, kl, &res);
        OK_RC(rc, "lookup");
        for (ssize_t j = 0; j < rc; j++) /* what is returned is readable */
            ck_assert(res.items[j].key_len == 0 || res.items[j].key[0] == 131 ||
                      res.items[j].key[0] != 131);
        {
            cnb_registry_owner_t ow;
            unsigned char vb[32];
            size_t vlen = 0;
            rc = cnb_registry_lookup_one(r, k, kl, &ow, vb, sizeof vb, &vlen);
            if (rc != CNB_ENOSPC) /* a value longer than vb (a scribbled length) */
                OK_RC(rc, "lookup_one");
            if (rc == 1) /* what is returned is readable */
                ck_assert(vlen <= sizeof vb && strnlen(ow.node, 256) < 256);
        }
        rc = cnb_registry_values(r, k, kl, &o, &res);
        OK_RC(rc, "values");
        rc = cnb_registry_keys(r, &o, &res);
        OK_RC(rc, "keys");
        for (ssize_t j = 0; j < rc; j++)
            ck_assert(strnlen(res.items[j].owner.node, 256) < 256);
        (void)cnb_registry_count(r);
        rc = cnb_registry_meta_get(r, k, mkkey(k, 1), &res);
        OK_RC(rc, "meta_get");

        unsigned char kb[16][16];
        cnb_registry_key_t keys[16];
        size_t counts[16];
        for (int j = 0; j < 16; j++)
            keys[j] = (cnb_registry_key_t){kb[j], mkkey(kb[j], (uint32_t)(rnd() % NKEYS))};
        rc = cnb_registry_lookup_many(r, keys, 16, &res, counts);
        OK_RC(rc, "lookup_many");
        if (rc >= 0) {
            size_t sum = 0;
            for (int j = 0; j < 16; j++)
                sum += counts[j];
            ck_assert_uint_eq(sum, (size_t)rc);
        }

        cnb_registry_cursor_t cur = {0, 0};
        for (int calls = 0; !cur.done && calls < 2000; calls++) {
            rc = cnb_registry_scan(r, &cur, 64, calls & 1 ? scan_pred : NULL, NULL, &res);
            OK_RC(rc, "scan");
            if (rc < 0)
                break;
        }
        uint64_t pos = 0, missed = 0;
        for (int calls = 0; calls < 4; calls++) {
            rc = cnb_registry_feed_poll(r, &pos, 32, &res, &missed);
            OK_RC(rc, "feed_poll");
        }
        (void)cnb_registry_feed_head(r);

        cnb_pid_t cur_owner;
        rc = cnb_registry_register(r, k, kl, &o, v, vl, &cur_owner);
        OK_RC(rc, "register");
        rc = cnb_registry_update_value(r, k, kl, &o, v, vl);
        OK_RC(rc, "update_value");
        rc = cnb_registry_unregister_match(r, k, kl, &o, pred_half, NULL);
        OK_RC(rc, "unregister_match");
        rc = cnb_registry_unregister(r, k, kl, &o);
        OK_RC(rc, "unregister");
        rc = cnb_registry_meta_put(r, k, kl, v, vl);
        OK_RC(rc, "meta_put");
        rc = cnb_registry_meta_delete(r, k, kl);
        OK_RC(rc, "meta_delete");
        if (round == 2) {
            rc = cnb_registry_remove_owner(r, &o);
            OK_RC(rc, "remove_owner");
            rc = cnb_registry_remove_node(r, o.node, 1);
            OK_RC(rc, "remove_node");
        }
    }
    cnb_registry_info_t info;
    ck_assert_int_eq(cnb_registry_info(r, &info), 0);
    rc = cnb_registry_purge(r);
    OK_RC(rc, "purge");
    char msg[256];
    rc = cnb_registry_check(r, msg, sizeof msg);
    OK_RC(rc, "check");
    cnb_registry_result_free(&res);
}

/* ---- corruptions ---------------------------------------------------------- */

static uint64_t interesting(void)
{
    static const uint64_t v[] = {0,          1,          2,           0xFFFFFFFFu,
                                 0xFFFFFFF0u, 0x7FFFFFFFu, 0x80000000u, ~(uint64_t)0,
                                 0x1000,     0x20,       0xFF,        0x3F00000001ULL};
    return rnd() % 3 ? v[rnd() % (sizeof v / sizeof v[0])] : rnd();
}

static void poke(struct cnb_registry *r, uint64_t off, uint64_t val, unsigned size)
{
    uint64_t m = atomic_load(&r->mapped);
    if (off + size > m)
        return;
    memcpy(r->base + off, &val, size);
}

/* n writes of 1, 2, 4 or 8 bytes anywhere in the mapped segment. */
static void scribble(struct cnb_registry *r, int n)
{
    uint64_t m = atomic_load(&r->mapped);
    for (int i = 0; i < n; i++) {
        unsigned size = 1u << (rnd() % 4);
        uint64_t off = rnd() % (m - 8);
        if (rnd() % 2)
            off &= ~(uint64_t)(size - 1);
        poke(r, off, interesting(), size);
    }
}

/* Calls fn(r, entry ref, arg) for each entry reachable from the key tables
 * (before any corruption: the tables are sane). */
static void each_entry(struct cnb_registry *r, void (*fn)(struct cnb_registry *, uint32_t, int),
                       int arg)
{
    for (uint32_t si = 0; si <= r->nstripes; si++) {
        uint64_t t = r->stripes[si].ktab;
        if (!cnb__tab_ref(t))
            continue;
        const uint64_t *slots = cnb__reg_data(r, cnb__tab_ref(t));
        for (uint64_t j = 0; j < ((uint64_t)1 << cnb__tab_bits(t)); j++)
            if ((uint32_t)slots[j] > CNB__SLOT_TOMB)
                fn(r, (uint32_t)slots[j], arg);
    }
}

static void entry_self_loop(struct cnb_registry *r, uint32_t ref, int which)
{
    struct cnb__reg_entry *e = cnb__reg_data(r, ref);
    e->next[which] = ref;
}

static void entry_huge_next(struct cnb_registry *r, uint32_t ref, int which)
{
    struct cnb__reg_entry *e = cnb__reg_data(r, ref);
    e->next[which] = 0xFFFFFFF0u - (uint32_t)(rnd() % 64) * 16;
    e->prev[which ^ 1] = 0x7FFFFFF0u;
}

static void entry_huge_lengths(struct cnb_registry *r, uint32_t ref, int arg)
{
    struct cnb__reg_entry *e = cnb__reg_data(r, ref);
    if (arg || rnd() % 4 == 0) {
        e->klen = (uint32_t)interesting();
        e->vlen = (uint32_t)interesting();
        e->node = (uint32_t)interesting();
    }
}

enum target {
    T_RANDOM,
    T_CHAIN_LOOP,
    T_OWNER_LOOP,
    T_HUGE_REFS,
    T_HUGE_LENGTHS,
    T_TABLE_WORDS,
    T_ALLOCATOR,
    T_ODD_SEQ,
    T_FULL_LOG,
    T_HEADER,
    T_NODES,
    T_FEED,
    T_LOCKS,
    T_COUNT
};

static void corrupt(struct cnb_registry *r, enum target t)
{
    struct cnb__reg_hdr *h = r->hdr;
    switch (t) {
    case T_RANDOM:
        scribble(r, 1 + (int)(rnd() % 64));
        break;
    case T_CHAIN_LOOP:
        each_entry(r, entry_self_loop, 0);
        break;
    case T_OWNER_LOOP:
        each_entry(r, entry_self_loop, 1);
        break;
    case T_HUGE_REFS:
        each_entry(r, entry_huge_next, (int)(rnd() % 2));
        break;
    case T_HUGE_LENGTHS:
        each_entry(r, entry_huge_lengths, 0);
        break;
    case T_TABLE_WORDS:
        for (uint32_t si = 0; si <= r->nstripes; si++) {
            r->stripes[si].ktab = (interesting() << 8) | (rnd() % 64);
            r->stripes[si].otab = (0xFFFFFFF0ULL << 8) | 31;
        }
        break;
    case T_ALLOCATOR:
        for (uint32_t si = 0; si <= r->nstripes; si++) {
            struct cnb__reg_stripe *st = &r->stripes[si];
            st->bump_cur = (uint32_t)interesting();
            st->bump_end = (uint32_t)interesting();
            st->chunk_g = (uint32_t)interesting();
            for (unsigned c = 0; c < CNB__REG_NCLASS; c++)
                if (st->heads[c] || rnd() % 8 == 0)
                    st->heads[c] = rnd() % 2 ? st->heads[c] : (uint32_t)interesting();
            /* a free list that loops on itself */
            for (unsigned c = 0; c < CNB__REG_NCLASS; c++)
                if (st->heads[c] && CNB__REF_OFF(st->heads[c]) + 16 <= atomic_load(&r->mapped) &&
                    CNB__REF_OFF(st->heads[c]) >= r->hdr->arena_off)
                    *(uint32_t *)cnb__reg_data(r, st->heads[c]) = st->heads[c];
        }
        atomic_store(&h->top, interesting());
        atomic_store(&h->file_size, interesting());
        for (unsigned c = 0; c < CNB__REG_NCLASS; c += 7)
            h->gheads[c] = (uint32_t)interesting();
        break;
    case T_ODD_SEQ: /* stays odd: nobody holds the lock, nobody will end it */
        for (uint32_t si = 0; si <= r->nstripes; si++)
            atomic_store(&r->stripes[si].seq, 2 * rnd() + 1);
        break;
    case T_FULL_LOG:
        for (uint32_t si = 0; si <= r->nstripes; si++) {
            struct cnb__reg_log *log = &r->stripes[si].log;
            for (unsigned i = 0; i < CNB__REG_LOG_CAP; i++) {
                log->recs[i].where = interesting() | ((uint64_t)(1 + rnd() % 3) << 56);
                log->recs[i].old = interesting();
            }
            atomic_store(&log->len, rnd() % 2 ? CNB__REG_LOG_CAP : ~0u);
        }
        atomic_store(&h->glog.len, CNB__REG_LOG_CAP);
        break;
    case T_HEADER:
        /* the immutable fields: an attached handle keeps its checked copies */
        h->nstripes = (uint32_t)interesting();
        h->feed_off = interesting();
        h->arena_off = interesting();
        h->attach_cap = (uint32_t)interesting();
        h->page_size = 0;
        h->feed_slots = (uint32_t)interesting();
        break;
    case T_NODES:
        atomic_store(&h->ncount, (uint32_t)interesting());
        for (uint32_t i = 0; i < r->node_cap; i++) {
            r->nodes[i].len = (uint32_t)interesting();
            memset(r->nodes[i].name, 'x', sizeof r->nodes[i].name); /* no NUL */
        }
        for (uint32_t i = 0; i < r->node_cap * 2; i++)
            atomic_store(&r->nodeidx[i], (uint32_t)interesting() | 1);
        for (uint32_t i = 0; i < CNB__REG_ATTACH_CAP; i++) {
            r->attach[i].pid = (int32_t)interesting();
            r->attach[i].node = (uint32_t)interesting();
            atomic_store(&r->attach[i].state, (uint32_t)(rnd() % 4));
        }
        break;
    case T_FEED:
        atomic_store(&h->feed_head, interesting());
        for (uint32_t i = 0; i < r->feed_slots; i++) {
            struct cnb__reg_feed_slot *s =
                (void *)(r->feed + (uint64_t)i * r->feed_slot_size);
            atomic_store(&s->state, interesting());
            s->klen = (uint32_t)interesting();
            s->vlen = (uint32_t)interesting();
            s->flags = (uint32_t)interesting();
            s->node = (uint32_t)interesting();
        }
        break;
    case T_LOCKS:
        /* lock words of a thread that does not exist, kinds glibc would take
         * for PI mutexes, robust-list pointers into nowhere */
        for (uint32_t si = 0; si <= r->nstripes; si++) {
            pthread_mutex_t *m = &r->stripes[si].lock;
            memset(m, 0, sizeof *m);
            if (rnd() % 2)
                memset(m, 0xA5, sizeof *m);
            else
                *(uint32_t *)m = 0x3FFFFFFF;
        }
        memset(&h->glock, 0x5A, sizeof h->glock);
        break;
    case T_COUNT:
        break;
    }
}

/* ---- tests ----------------------------------------------------------------- */

static void one_round(uint64_t seed, enum target t, int kind)
{
    rnd_state = seed;
    struct cnb_registry *r = open_reg(NULL, kind);
    populate(r);
    corrupt(r, t);
    run_all(r, seed);
    corrupt(r, T_RANDOM); /* and more on top */
    run_all(r, seed);
    cnb_registry_close(r);
}

/* Forged live-chain counts (klive/olive) make the next insert rehash; the new
 * table is sized from what the old one can hold, not from the count, so the
 * segment does not grow by hundreds of megabytes (once it grew until the
 * process was killed for lack of memory). */
START_TEST(forged_counts_do_not_grow_the_segment)
{
    uint64_t seed = 2;
    struct cnb_registry *r = open_reg(NULL, CNB_REG_DUPLICATE);
    populate(r);
    cnb_registry_info_t in0, in1;
    ck_assert_int_eq(cnb_registry_info(r, &in0), 0);
    for (uint32_t si = 0; si < 4; si++) {
        r->stripes[si].klive = 0x00FFFFFF;
        r->stripes[si].olive = 0x00FFFFFF;
    }
    unsigned char k[16], v[48];
    for (uint32_t i = NKEYS; i < NKEYS + 64; i++) {
        cnb_pid_t o = owner_of(i + 100000);
        ssize_t rc = cnb_registry_register(r, k, mkkey(k, i), &o, v, mkval(v, i), NULL);
        OK_RC(rc, "register");
    }
    ck_assert_int_eq(cnb_registry_info(r, &in1), 0);
    ck_assert_msg(in1.file_size < in0.file_size + (16u << 20),
                  "segment grew from %llu to %llu bytes", (unsigned long long)in0.file_size,
                  (unsigned long long)in1.file_size);
    cnb_registry_close(r);
}
END_TEST

START_TEST(targeted_corruptions)
{
    for (int t = 0; t < T_COUNT; t++)
        for (uint64_t s = 1; s <= 6; s++)
            one_round(s * 7919 + (uint64_t)t, (enum target)t,
                      s % 2 ? CNB_REG_UNIQUE : CNB_REG_DUPLICATE);
}
END_TEST

START_TEST(random_bytes)
{
    for (uint64_t s = 1; s <= 150; s++)
        one_round(s * 104729, T_RANDOM, s % 2 ? CNB_REG_UNIQUE : CNB_REG_DUPLICATE);
}
END_TEST

/* A stripe whose sequence number stays odd (nobody writing): a reader does
 * not wait for it forever; a locker makes it even again. */
START_TEST(odd_sequence_does_not_hang_readers)
{
    uint64_t seed = 1;
    struct cnb_registry *r = open_reg(NULL, CNB_REG_UNIQUE);
    populate(r);
    unsigned char k[16];
    size_t kl = mkkey(k, 3);
    uint32_t si = cnb__reg_stripe_of(r, cnb__reg_mix(cnb_term_hash(k, kl)));
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    for (int i = 0; i < 100; i++) {
        atomic_store(&r->stripes[si].seq, 12345);
        ssize_t rc = cnb_registry_lookup(r, k, kl, &res);
        OK_RC(rc, "lookup");
        ck_assert_int_eq(rc, 1); /* the locked read still finds it */
    }
    ck_assert_uint_eq(atomic_load(&r->stripes[si].seq) % 2, 0);
    cnb_registry_result_free(&res);
    cnb_registry_close(r);
}
END_TEST

/* The scribbler's seed: CNB_HOSTILE_SEED if set (to replay a failure: the
 * bytes written and where are the same, their timing against the reader is
 * not), else a fresh one; printed so that a crash, which Check reports
 * without any message of ours, can be replayed. */
static uint64_t scribbler_seed(const char *test)
{
    const char *env = getenv("CNB_HOSTILE_SEED");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t seed = env && *env ? strtoull(env, NULL, 0)
                                : ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_nsec;
    if (seed == 0)
        seed = 1; /* xorshift's one fixed point */
    fprintf(stderr, "%s: seed %llu\n", test, (unsigned long long)seed);
    return seed;
}

/* Forks a scribbler: another OS process that maps the segment at path as it is
 * now and runs body(fd, mapping, size, arg) (which never returns), seeded from
 * seed, killed with the test at the latest. Returns its pid. */
typedef void (*scribble_fn)(int fd, char *p, uint64_t size, void *arg);

static pid_t fork_scribbler(const char *path, uint64_t seed, scribble_fn body, void *arg)
{
    pid_t kid = fork();
    ck_assert_int_ge(kid, 0);
    if (kid > 0)
        return kid;
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives the test */
    int fd = open(path, O_RDWR);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0)
        _exit(2);
    char *p = mmap(NULL, (size_t)sb.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        _exit(3);
    rnd_state = seed ^ 0x9E3779B97F4A7C15ULL;
    body(fd, p, (uint64_t)sb.st_size, arg);
    _exit(5);
}

/* Kills the scribbler; it must not have stopped by itself. */
static void stop_scribbler(pid_t kid)
{
    kill(kid, SIGKILL);
    int st;
    waitpid(kid, &st, 0);
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "scribbler status 0x%x", st);
}

/* Random bytes anywhere, and a truncation attempt, every 200 us. */
static void scribble_anywhere(int fd, char *p, uint64_t size, void *arg)
{
    (void)arg;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            uint64_t off = rnd() % (size - 8);
            uint64_t v = interesting();
            memcpy(p + off, &v, 1u << (rnd() % 4));
        }
        if (ftruncate(fd, 4096) == 0 || errno != EPERM)
            _exit(4); /* the seal did not hold */
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
}

/* Another OS process writes random bytes into the segment while this one
 * reads and writes, and tries to truncate it all along. */
START_TEST(concurrent_scribbler)
{
    uint64_t seed = scribbler_seed(__func__);
    const char *path = new_path();
    struct cnb_registry *r = open_reg(path, CNB_REG_UNIQUE);
    populate(r);
    pid_t kid = fork_scribbler(path, seed, scribble_anywhere, NULL);
    rnd_state = seed;
    time_t end = time(NULL) + 3;
    while (time(NULL) < end)
        run_all(r, seed);
    stop_scribbler(kid);
    cnb_registry_close(r);
    unlink(path);
}
END_TEST

struct mutex_offs {
    const uint64_t *off;
    unsigned n;
};

/* As fast as it can, into the mutexes at the offsets arg lists: mostly the two
 * list pointers (glibc's x86-64 layout: bytes 24 and 32), which glibc follows;
 * else lock word, owner, users, kind. */
static void scribble_mutexes(int fd, char *p, uint64_t size, void *arg)
{
    const struct mutex_offs *mo = arg;
    (void)fd;
    (void)size;
    for (;;) {
        uint64_t off = mo->off[rnd() % mo->n] + (rnd() % 4 ? 24 + 8 * (rnd() % 2) : 4 * (rnd() % 5));
        uint64_t v = interesting();
        memcpy(p + off, &v, off % 8 ? 4 : 8);
    }
}

/* Another OS process writes only into the segment's mutexes (glibc's
 * robust-list pointers, kind, lock word, owner) while this one locks and
 * unlocks them. glibc's unlock follows the list pointers it finds in the
 * mutex: before registry_mutex.c unlocked by itself, a pointer written between
 * the restore of the saved ones and glibc's read of them was a SIGSEGV in
 * pthread_mutex_unlock, within a second or two here (and once in ~60 runs of
 * concurrent_scribbler, whose writes land anywhere). */
START_TEST(mutex_scribbler)
{
    uint64_t seed = scribbler_seed(__func__);
    const char *path = new_path();
    struct cnb_registry *r = open_reg(path, CNB_REG_UNIQUE);
    populate(r);
    uint64_t offs[16];
    unsigned n = 0;
    for (uint32_t si = 0; si <= r->nstripes; si++)
        offs[n++] = CNB__OFF(r, &r->stripes[si].lock);
    offs[n++] = CNB__OFF(r, &r->hdr->glock);
    offs[n++] = CNB__OFF(r, &r->hdr->nlock);
    offs[n++] = CNB__OFF(r, &r->hdr->flock);
    offs[n++] = CNB__OFF(r, &r->hdr->alock);
    struct mutex_offs mo = {offs, n};
    pid_t kid = fork_scribbler(path, seed, scribble_mutexes, &mo);
    unsigned char k[16], v[48];
    char msg[256];
    time_t end = time(NULL) + 3;
    while (time(NULL) < end) {
        for (uint32_t i = 0; i < 50; i++) {
            cnb_pid_t o = owner_of(i);
            size_t kl = mkkey(k, i), vl = mkval(v, i);
            ssize_t rc = cnb_registry_register(r, k, kl, &o, v, vl, NULL);
            OK_RC(rc, "register");
            rc = cnb_registry_unregister(r, k, kl, &o);
            OK_RC(rc, "unregister");
        }
        ssize_t rc = cnb_registry_purge(r);
        OK_RC(rc, "purge");
        rc = cnb_registry_check(r, msg, sizeof msg);
        OK_RC(rc, "check");
    }
    stop_scribbler(kid);
    cnb_registry_close(r);
    unlink(path);
}
END_TEST

/* The held stripe lock's lock word is overwritten by another process (here:
 * by the fault hook, in the middle of a register). glibc's unlock then
 * refuses (EPERM) and leaves the mutex on this thread's robust list, and the
 * next robust mutex the thread locks after the segment is unmapped writes
 * through that pointer: a SIGSEGV in a later, unrelated call. */
static struct cnb_registry *g_scribble_locks_of;

/* Is this thread's robust mutex list (the kernel's copy of its head) empty? */
static int robust_list_empty(void)
{
    struct robust_list_head *h = NULL;
    size_t len = 0;
    if (syscall(SYS_get_robust_list, 0, &h, &len) != 0)
        return 1; /* no list to leave anything on */
    return h->list.next == &h->list;
}

void cnb__reg_fault_point(void)
{
    struct cnb_registry *r = g_scribble_locks_of;
    if (!r)
        return;
    g_scribble_locks_of = NULL;
    for (uint32_t si = 0; si <= r->nstripes; si++)
        *(volatile uint32_t *)&r->stripes[si].lock = 0; /* the lock word: "free" */
}

START_TEST(lock_word_scribbled_while_held)
{
    uint64_t seed = 3;
    struct cnb_registry *r = open_reg(NULL, CNB_REG_UNIQUE);
    populate(r);
    struct cnb_registry *other = open_reg(NULL, CNB_REG_UNIQUE); /* mapped elsewhere */
    unsigned char k[16], v[48];
    cnb_pid_t o = owner_of(1);
    g_scribble_locks_of = r;
    ssize_t rc = cnb_registry_register(r, k, mkkey(k, NKEYS + 1), &o, v, mkval(v, 1), NULL);
    OK_RC(rc, "register");
    ck_assert_ptr_null(g_scribble_locks_of); /* the hook ran, with the lock held */
    cnb_registry_close(r);
    /* r is unmapped: nothing of it may be left on this thread's robust list */
    ck_assert_msg(robust_list_empty(), "a mutex of the closed segment is still listed");
    ck_assert_int_eq(cnb_registry_register(other, k, mkkey(k, 1), &o, v, mkval(v, 1), NULL), 0);
    pthread_mutex_t m;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&m, &a);
    ck_assert_int_eq(pthread_mutex_lock(&m), 0);
    ck_assert_int_eq(pthread_mutex_unlock(&m), 0);
    pthread_mutex_destroy(&m);
    pthread_mutexattr_destroy(&a);
    char msg[256];
    ck_assert_msg(cnb_registry_check(other, msg, sizeof msg) == 0, "check: %s", msg);
    cnb_registry_close(other);
}
END_TEST

/* Locks released in another order than taken, and around a robust mutex the
 * registry did not lock: each is taken off this thread's robust list, and
 * every lock is free afterwards. */
START_TEST(unlock_out_of_order)
{
    struct cnb_registry *r = open_reg(NULL, CNB_REG_UNIQUE);
    pthread_mutex_t *s0 = &r->stripes[0].lock, *s1 = &r->stripes[1].lock,
                    *s2 = &r->stripes[2].lock;
    ck_assert_int_eq(cnb__reg_mutex_lock(s0), 0);
    ck_assert_int_eq(cnb__reg_mutex_lock(s1), 0);
    ck_assert_int_eq(cnb__reg_mutex_lock(s2), 0);
    cnb__reg_mutex_unlock(s1);
    cnb__reg_mutex_unlock(s0);
    cnb__reg_mutex_unlock(s2);
    ck_assert(robust_list_empty());
    pthread_mutex_t x;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&x, &a);
    ck_assert_int_eq(cnb__reg_mutex_lock(s0), 0);
    ck_assert_int_eq(pthread_mutex_lock(&x), 0);
    ck_assert_int_eq(cnb__reg_mutex_lock(s1), 0);
    cnb__reg_mutex_unlock(s0);
    cnb__reg_mutex_unlock(s1);
    ck_assert_int_eq(pthread_mutex_unlock(&x), 0);
    ck_assert(robust_list_empty());
    pthread_mutex_destroy(&x);
    pthread_mutexattr_destroy(&a);
    for (uint32_t si = 0; si <= r->nstripes; si++) {
        ck_assert_int_eq(cnb__reg_mutex_trylock(&r->stripes[si].lock), 0);
        cnb__reg_mutex_unlock(&r->stripes[si].lock);
    }
    ck_assert(robust_list_empty());
    char msg[256];
    ck_assert_msg(cnb_registry_check(r, msg, sizeof msg) == 0, "check: %s", msg);
    cnb_registry_close(r);
}
END_TEST

/* The header's immutable fields rewritten by another process: the checker,
 * like every operation, walks by the handle's checked copies (before, it took
 * the arena's start from the header and found "corruption" where there was
 * none, or walked from wherever the header said). */
START_TEST(check_ignores_rewritten_header)
{
    struct cnb_registry *r = open_reg(NULL, CNB_REG_DUPLICATE);
    populate(r);
    r->hdr->arena_off = 64;
    r->hdr->nstripes = 1000;
    r->hdr->page_size = 0;
    char msg[256];
    ck_assert_msg(cnb_registry_check(r, msg, sizeof msg) == 0, "check: %s", msg);
    cnb_registry_close(r);
}
END_TEST

/* Truncation by every path a same-user process has: the name, the creator's
 * /proc/PID/fd link, open with O_TRUNC; all refused while mapped. Growth
 * stays allowed, and the registry works on. */
START_TEST(truncation_refused)
{
    uint64_t seed = 2;
    const char *path = new_path();
    struct cnb_registry *r = open_reg(path, CNB_REG_UNIQUE);
    populate(r);
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/%d/fd/%d", (int)getpid(), r->fd);
    pid_t kid = fork();
    ck_assert_int_ge(kid, 0);
    if (kid == 0) {
        const char *paths[] = {path, proc};
        for (int i = 0; i < 2; i++) {
            int fd = open(paths[i], O_RDWR);
            if (fd < 0)
                _exit(10 + i);
            if (ftruncate(fd, 0) == 0 || errno != EPERM)
                _exit(20 + i);
            if (ftruncate(fd, 4096) == 0 || errno != EPERM)
                _exit(30 + i);
            if (fcntl(fd, F_ADD_SEALS, F_SEAL_GROW) == 0 || errno != EPERM)
                _exit(40 + i);
            close(fd);
            if (open(paths[i], O_RDWR | O_TRUNC) >= 0 || errno != EPERM)
                _exit(50 + i);
        }
        _exit(0);
    }
    int st;
    waitpid(kid, &st, 0);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "truncating child status 0x%x", st);
    run_all(r, seed);
    /* growth still works: many more entries than the first chunk holds */
    unsigned char k[16], v[48];
    for (uint32_t i = 0; i < 20000; i++) {
        cnb_pid_t o = owner_of(i);
        size_t kl = mkkey(k, NKEYS + 100 + i), vl = mkval(v, i);
        ck_assert_int_eq(cnb_registry_register(r, k, kl, &o, v, vl, NULL), 0);
    }
    char msg[256];
    ck_assert_msg(cnb_registry_check(r, msg, sizeof msg) == 0, "check: %s", msg);
    cnb_registry_close(r);
    unlink(path);
}
END_TEST

/* /proc/<pid>/stat as purge reads it: the command name is the process's own
 * choice (it may hold ") " and digits), a zombie is gone, and so is a process
 * whose flags carry PF_EXITING (0x4): killed, its sockets already closed,
 * not yet a zombie. Before, such a process counted as alive and an
 * attachment that saw a killed C node's connection drop kept its entries. */
START_TEST(proc_stat_parse)
{
    /* fields 3..22: state ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime stime cutime cstime priority nice threads
     * itrealvalue starttime */
    const char *live = "77 (cnode) S 1 77 77 0 -1 4194560 10 0 0 0 1 2 0 0 20 0 3 0 123456 1 2";
    ck_assert_uint_eq(cnb__reg_stat_start(live), 123456);
    /* comm "x) Z 1 2 3 4" (at most 15 bytes, prctl PR_SET_NAME) */
    const char *evil = "77 (x) Z 1 2 3 4) S 1 77 77 0 -1 64 0 0 0 0 0 0 0 0 20 0 1 0 555 1 2";
    ck_assert_uint_eq(cnb__reg_stat_start(evil), 555);
    const char *exiting = "77 (cnode) R 1 77 77 0 -1 4194564 10 0 0 0 1 2 0 0 20 0 3 0 123456 1";
    ck_assert_uint_eq(cnb__reg_stat_start(exiting), 0);
    const char *zombie = "77 (cnode) Z 1 77 77 0 -1 4194316 10 0 0 0 1 2 0 0 20 0 1 0 123456 1";
    ck_assert_uint_eq(cnb__reg_stat_start(zombie), 0);
    ck_assert_uint_eq(cnb__reg_stat_start("77 (cnode) S 1 77"), 0);
    ck_assert_uint_eq(cnb__reg_stat_start("77 (cnode) S 1 77 77 0 -1 x 10"), 0);
    ck_assert_uint_eq(cnb__reg_stat_start(""), 0);
    /* This process, and one reaped after SIGKILL. */
    ck_assert_int_eq(cnb_registry_os_pid_alive(getpid()), 1);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        pause();
        _exit(0);
    }
    ck_assert_int_eq(cnb_registry_os_pid_alive(child), 1);
    kill(child, SIGKILL);
    int status;
    waitpid(child, &status, 0);
    ck_assert_int_eq(cnb_registry_os_pid_alive(child), 0);
    ck_assert_int_eq(cnb_registry_os_pid_alive(0), 0);
    ck_assert_int_eq(cnb_registry_os_pid_alive(-1), 0);
}
END_TEST

int main(void)
{
#ifndef CNB_TEST_OLD_CODE /* (built against the code before the fix, to see it fail) */
    cnb__reg_lock_wait_ms = 20; /* a scribbled lock word costs 20 ms, not 2 s */
#endif
    Suite *s = suite_create("registry_hostile");
    TCase *tc = tcase_create("hostile");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, odd_sequence_does_not_hang_readers);
    tcase_add_test(tc, targeted_corruptions);
    tcase_add_test(tc, forged_counts_do_not_grow_the_segment);
    tcase_add_test(tc, random_bytes);
    tcase_add_test(tc, truncation_refused);
    tcase_add_test(tc, concurrent_scribbler);
    tcase_add_test(tc, mutex_scribbler);
    tcase_add_test(tc, lock_word_scribbled_while_held);
    tcase_add_test(tc, unlock_out_of_order);
    tcase_add_test(tc, check_ignores_rewritten_header);
    tcase_add_test(tc, proc_stat_parse);
    suite_add_tcase(s, tc);
    return cnb_check_run(s);
}
