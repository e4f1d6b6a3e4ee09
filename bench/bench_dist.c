/* bench_dist.c: distribution-layer figures for `make bench` (driven by
 * bench/bench_run.erl, which runs the BEAM equivalents in the same run):
 * connection set-up time to an Erlang node, and one-way throughput and sender
 * CPU per message of small messages from C to one BEAM process. An optional
 * sixth argument BYTES sends {m, <<BYTES bytes>>} instead of {m, I} (the
 * messages/s-vs-size plot).
 * Prints "dist.<metric> <value> <unit>" lines; with CNB_BENCH_TLS_CERT, _KEY and
 * _CACERT set it runs TLS distribution and prints "tls.<metric>" lines. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cnode_bridge.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int up_events, down_events, done_received;
static char target[MAXATOMLEN_UTF8];
static erlang_pid self_pid;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void on_node(cnb_node_t *n, const char *peer, int up, void *user)
{
    (void)n;
    (void)user;
    if (strcmp(peer, target))
        return;
    pthread_mutex_lock(&mu);
    if (up)
        up_events++;
    else
        down_events++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* The sink's {done, N} goes to a worker: a message to a local pid that is no
 * live process is dropped like one to a dead process. */
static int done_info(cnb_proc_t *self, void *state, const char *msg, size_t len)
{
    (void)self;
    (void)state;
    (void)msg;
    (void)len;
    pthread_mutex_lock(&mu);
    done_received++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    return CNB_CONTINUE;
}

static const cnb_worker_ops_t done_ops = {.handle_info = done_info};

static int wait_for(int *counter, int value, double timeout)
{
    double end = now_s() + timeout;
    pthread_mutex_lock(&mu);
    while (*counter < value && now_s() < end) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&cv, &mu, &ts);
    }
    int ok = *counter >= value;
    pthread_mutex_unlock(&mu);
    return ok;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: bench_dist SNAME COOKIE PEER_NODE CONNECTS MESSAGES [BYTES]\n");
        return 2;
    }
    long bytes = argc == 7 ? atol(argv[6]) : 0;
    snprintf(target, sizeof(target), "%s", argv[3]);
    int connects = atoi(argv[4]);
    long messages = atol(argv[5]);
    cnb_node_opts_t o;
    memset(&o, 0, sizeof(o));
    o.sname = argv[1];
    o.cookie = argv[2];
    o.log_level = CNB_LOG_WARNING;
    o.on_node = on_node;
    o.tls_cert = getenv("CNB_BENCH_TLS_CERT");
    o.tls_key = getenv("CNB_BENCH_TLS_KEY");
    o.tls_cacert = getenv("CNB_BENCH_TLS_CACERT");
    const char *g = o.tls_cert ? "tls" : "dist";
    cnb_node_t *node;
    if (cnb_node_create(&o, &node) || cnb_node_start(node))
        return 1;
    if (cnb_spawn(node, &done_ops, NULL, NULL, &self_pid)) {
        fprintf(stderr, "bench_dist: cannot start the receiving worker\n");
        return 1;
    }

    /* Connection set-up: connect, wait for up, disconnect, wait for down. */
    double *t = calloc((size_t)connects, sizeof(double));
    for (int i = 0; i < connects; i++) {
        double t0 = now_s();
        cnb_node_connect(node, target);
        if (!wait_for(&up_events, i + 1, 10)) {
            fprintf(stderr, "bench_dist: cannot connect to %s\n", target);
            return 1;
        }
        t[i] = now_s() - t0;
        cnb_node_disconnect(node, target);
        wait_for(&down_events, i + 1, 10);
        usleep(20000); /* let the peer notice the close */
    }
    qsort(t, (size_t)connects, sizeof(double), cmp_double);
    printf("%s.connect_setup_us %.0f us\n", g, t[connects / 2] * 1e6);
    free(t);

    /* Throughput: {start, N, Self} to bench_sink, N x {m, I}, wait for done. */
    cnb_node_connect(node, target);
    wait_for(&up_events, connects + 1, 10);
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_atom(&x, "start");
    ei_x_encode_long(&x, messages);
    ei_x_encode_pid(&x, &self_pid);
    cnb_reg_send(node, &self_pid, target, "bench_sink", x.buff, (size_t)x.index);
    ei_x_free(&x);
    double c0 = cpu_s(), t0 = now_s();
    char *payload = calloc(1, (size_t)(bytes > 0 ? bytes : 1));
    char *buf = malloc((size_t)(bytes > 0 ? bytes : 0) + 64);
    if (!payload || !buf)
        return 1;
    memset(payload, 'x', (size_t)(bytes > 0 ? bytes : 0));
    for (long i = 0; i < messages; i++) {
        int k = 0;
        ei_encode_version(buf, &k);
        ei_encode_tuple_header(buf, &k, 2);
        ei_encode_atom(buf, &k, "m");
        if (bytes > 0)
            ei_encode_binary(buf, &k, payload, bytes);
        else
            ei_encode_long(buf, &k, i);
        while (cnb_reg_send(node, &self_pid, target, "bench_sink", buf, (size_t)k) == CNB_ENOMEM)
            usleep(100);
    }
    double sent = now_s();
    if (!wait_for(&done_received, 1, 120)) {
        fprintf(stderr, "bench_dist: the sink never finished\n");
        return 1;
    }
    double t1 = now_s(), c1 = cpu_s(); /* the I/O thread's writes included */
    printf("%s.to_beam_msgs_per_s %.0f msg/s\n", g, (double)messages / (t1 - t0));
    printf("%s.sender_cpu_ns_per_msg %.0f ns\n", g, (c1 - c0) * 1e9 / (double)messages);
    printf("%s.c_enqueue_ns_per_msg %.0f ns\n", g, (sent - t0) * 1e9 / (double)messages);
    free(buf);
    free(payload);
    cnb_node_destroy(node);
    return 0;
}
