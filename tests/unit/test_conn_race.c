/* test_conn_race.c: Check tests of simultaneous connects between two C nodes
 * in one process (--no-epmd, loopback): both send to each other at the same
 * instant after being disconnected, many rounds; every message arrives, in
 * order, whichever attempt wins (conn_policy.c, conn_hold.c); and one refused
 * with nok whose messages wait until it can dial again. Under ASan
 * (`make asan`) they also check that held messages are never leaked or freed
 * twice. RACE_DEBUG=1 shows the nodes' debug log (how each race went). The
 * same race against real Erlang nodes: tests/integration/simultaneous_tests.erl. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnode_bridge.h"
#include "check_run.h"

#define ROUNDS 40
#define MSGS 5

/* What one node's worker received: per round, how many in order, and
 * whether one came out of order. */
typedef struct rec {
    pthread_mutex_t mu;
    int got[ROUNDS + 1];
    int disorder;
} rec_t;

static int r_init(cnb_proc_t *self, void *arg, void **state)
{
    (void)self;
    *state = arg;
    return 0;
}

static int r_info(cnb_proc_t *self, void *state, const char *msg, size_t len)
{
    (void)self;
    (void)len;
    rec_t *r = state;
    int i = 0, ver, ar;
    long round, seq;
    if (ei_decode_version(msg, &i, &ver) || ei_decode_tuple_header(msg, &i, &ar) || ar != 2 ||
        ei_decode_long(msg, &i, &round) || ei_decode_long(msg, &i, &seq) || round < 1 ||
        round > ROUNDS)
        return CNB_CONTINUE;
    pthread_mutex_lock(&r->mu);
    if (seq != r->got[round] + 1)
        r->disorder = 1;
    r->got[round]++;
    pthread_mutex_unlock(&r->mu);
    return CNB_CONTINUE;
}

static const cnb_worker_ops_t rec_ops = {.init = r_init, .handle_info = r_info};

static cnb_node_t *start(const char *sname, unsigned setuptime, rec_t *r)
{
    cnb_node_opts_t o;
    memset(&o, 0, sizeof(o));
    o.sname = sname;
    o.cookie = "race-cookie";
    o.no_epmd = 1;
    o.net_setuptime = setuptime;
    o.log_level = getenv("RACE_DEBUG") ? CNB_LOG_DEBUG : CNB_LOG_ERROR;
    cnb_node_t *n = NULL;
    ck_assert_int_eq(cnb_node_create(&o, &n), 0);
    ck_assert_int_eq(cnb_node_start(n), 0);
    erlang_pid pid;
    cnb_spawn_opts_t so = {.name = "w"};
    ck_assert_int_eq(cnb_spawn(n, &rec_ops, r, &so, &pid), 0);
    return n;
}

typedef struct side {
    cnb_node_t *n;
    char peer[128]; /* name@host:port of the other node */
    pthread_barrier_t *go;
    int round;
} side_t;

static void *fire(void *arg)
{
    side_t *s = arg;
    pthread_barrier_wait(s->go);
    for (int i = 1; i <= MSGS; i++) {
        char buf[32];
        int k = 0;
        ei_encode_version(buf, &k);
        ei_encode_tuple_header(buf, &k, 2);
        ei_encode_long(buf, &k, s->round);
        ei_encode_long(buf, &k, i);
        ck_assert_int_eq(cnb_reg_send(s->n, NULL, s->peer, "w", buf, (size_t)k), 0);
    }
    return NULL;
}

static int connected(cnb_node_t *n)
{
    char names[4][MAXATOMLEN_UTF8];
    return cnb_node_connected(n, names, 4);
}

/* Waits (up to 5 s) until r holds all MSGS of round; returns 1 if so. */
static int all_in(rec_t *r, int round)
{
    for (int i = 0; i < 2500; i++) {
        pthread_mutex_lock(&r->mu);
        int got = r->got[round];
        pthread_mutex_unlock(&r->mu);
        if (got >= MSGS)
            return 1;
        usleep(2000);
    }
    return 0;
}

static void race(const char *name_a, const char *name_b)
{
    static rec_t ra, rb;
    memset(&ra, 0, sizeof(ra));
    memset(&rb, 0, sizeof(rb));
    pthread_mutex_init(&ra.mu, NULL);
    pthread_mutex_init(&rb.mu, NULL);
    cnb_node_t *a = start(name_a, 7, &ra), *b = start(name_b, 7, &rb);
    side_t sa = {.n = a}, sb = {.n = b};
    snprintf(sa.peer, sizeof(sa.peer), "%s:%u", cnb_node_name(b), cnb_node_port(b));
    snprintf(sb.peer, sizeof(sb.peer), "%s:%u", cnb_node_name(a), cnb_node_port(a));
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 2);
    sa.go = sb.go = &go;
    for (int round = 1; round <= ROUNDS; round++) {
        sa.round = sb.round = round;
        pthread_t ta, tb;
        pthread_create(&ta, NULL, fire, &sa);
        pthread_create(&tb, NULL, fire, &sb);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        ck_assert_msg(all_in(&rb, round), "round %d: %s got %d of %d from %s", round, name_b,
                      rb.got[round], MSGS, name_a);
        ck_assert_msg(all_in(&ra, round), "round %d: %s got %d of %d from %s", round, name_a,
                      ra.got[round], MSGS, name_b);
        ck_assert_int_eq(connected(a), 1);
        ck_assert_int_eq(connected(b), 1);
        /* Both sides drop it before the next round. */
        cnb_node_disconnect(a, cnb_node_name(b));
        cnb_node_disconnect(b, cnb_node_name(a));
        for (int i = 0; i < 2500 && (connected(a) || connected(b)); i++)
            usleep(2000);
        ck_assert_int_eq(connected(a) + connected(b), 0);
    }
    ck_assert(!ra.disorder && !rb.disorder);
    pthread_barrier_destroy(&go);
    cnb_node_destroy(a);
    cnb_node_destroy(b);
}

START_TEST(both_send_at_once)
{
    race("lo@localhost", "hi@localhost");
}
END_TEST

static void send_seq(cnb_node_t *n, const char *peer, int round, int from, int to)
{
    for (int i = from; i <= to; i++) {
        char buf[32];
        int k = 0;
        ei_encode_version(buf, &k);
        ei_encode_tuple_header(buf, &k, 2);
        ei_encode_long(buf, &k, round);
        ei_encode_long(buf, &k, i);
        ck_assert_int_eq(cnb_reg_send(n, NULL, peer, "w", buf, (size_t)k), 0);
    }
}

/* hi sends to lo while lo's own attempt to hi hangs (it dialled a port where
 * nothing answers the handshake): lo, the greater name, answers nok again and
 * again; hi keeps its messages and dials again until lo's attempt times out
 * (lo's net_setuptime, 1 s, within hi's 7 s), then delivers all, in order. */
START_TEST(refused_then_dial_again)
{
    static rec_t rhi, rlo;
    memset(&rhi, 0, sizeof(rhi));
    memset(&rlo, 0, sizeof(rlo));
    pthread_mutex_init(&rhi.mu, NULL);
    pthread_mutex_init(&rlo.mu, NULL);
    cnb_node_t *hi = start("hi@localhost", 7, &rhi), *lo = start("lo@localhost", 1, &rlo);
    /* A listener that takes connections (the kernel's backlog) and never speaks. */
    int stall = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    ck_assert(stall >= 0 && !bind(stall, (struct sockaddr *)&sa, sizeof(sa)) &&
              !listen(stall, 8) && !getsockname(stall, (struct sockaddr *)&sa, &sl));
    char to_hi[128], to_lo[128];
    snprintf(to_hi, sizeof(to_hi), "%s:%u", cnb_node_name(hi), (unsigned)ntohs(sa.sin_port));
    snprintf(to_lo, sizeof(to_lo), "%s:%u", cnb_node_name(lo), cnb_node_port(lo));
    send_seq(lo, to_hi, 2, 1, 1); /* lo's attempt to hi: stuck in the handshake */
    usleep(100000);
    send_seq(hi, to_lo, 1, 1, MSGS);
    ck_assert_msg(all_in(&rlo, 1), "lo got %d of %d from hi", rlo.got[1], MSGS);
    ck_assert(!rlo.disorder);
    close(stall);
    cnb_node_destroy(hi);
    cnb_node_destroy(lo);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("conn_race");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, both_send_at_once);
    tcase_add_test(tc, refused_then_dial_again);
    suite_add_tcase(s, tc);
    return cnb_check_run(s);
}
