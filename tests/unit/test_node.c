/* test_node.c: Check tests of the node and runtime API without other nodes
 * (--no-epmd, loopback only): cnb_node_run on a host thread, spawning
 * workers, calls between workers of one node, links and exits, timers,
 * registered names, bad arguments, shutdown. Under ASan they also check that
 * all memory comes back. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnode_bridge.h"
#include "check_run.h"

static cnb_node_t *new_node(void)
{
    cnb_node_opts_t o;
    memset(&o, 0, sizeof(o));
    o.sname = "unit@localhost";
    o.cookie = "unit-cookie";
    o.no_epmd = 1;
    o.log_level = CNB_LOG_ERROR;
    cnb_node_t *n = NULL;
    ck_assert_int_eq(cnb_node_create(&o, &n), 0);
    return n;
}

static void *runner(void *arg)
{
    cnb_node_run(arg);
    return NULL;
}

/* A worker that answers calls with {ok, Req} and counts infos. */
static int w_call(cnb_proc_t *self, void *state, const char *req, size_t len,
                  const cnb_from_t *from, ei_x_buff *reply)
{
    (void)self;
    (void)state;
    (void)from;
    ei_x_encode_tuple_header(reply, 2);
    ei_x_encode_atom(reply, "ok");
    ei_x_append_buf(reply, req + 1, (int)len - 1);
    return CNB_REPLY;
}

static int infos;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static int w_info(cnb_proc_t *self, void *state, const char *msg, size_t len)
{
    (void)self;
    (void)state;
    (void)msg;
    (void)len;
    pthread_mutex_lock(&mu);
    infos++;
    pthread_mutex_unlock(&mu);
    return CNB_CONTINUE;
}

static int terminated;
static void w_terminate(cnb_proc_t *self, void *state, const char *r, size_t len)
{
    (void)self;
    (void)state;
    (void)r;
    (void)len;
    pthread_mutex_lock(&mu);
    terminated++;
    pthread_mutex_unlock(&mu);
}

static const cnb_worker_ops_t ops = {
    .handle_call = w_call, .handle_info = w_info, .terminate = w_terminate};

static int wait_count(int *v, int want)
{
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&mu);
        int got = *v;
        pthread_mutex_unlock(&mu);
        if (got >= want)
            return 1;
        usleep(2000);
    }
    return 0;
}

START_TEST(run_on_host_thread_and_call)
{
    cnb_node_t *n = new_node();
    pthread_t t;
    pthread_create(&t, NULL, runner, n);
    erlang_pid pid, other;
    cnb_spawn_opts_t so = {.name = "w"};
    ck_assert_int_eq(cnb_spawn(n, &ops, NULL, &so, &pid), 0);
    ck_assert_int_eq(cnb_spawn(n, &ops, NULL, &so, &other), CNB_EEXIST);
    ck_assert(other.num == pid.num);
    ck_assert_int_eq(cnb_whereis(n, "w", &other), 0);
    char req[32];
    int k = 0;
    ei_encode_version(req, &k);
    ei_encode_atom(req, &k, "hello");
    ei_x_buff r;
    /* By pid and by name: through the node's own loopback. */
    ck_assert_int_eq(cnb_call(n, &pid, NULL, NULL, req, (size_t)k, 2000, &r), 0);
    int i = 0, ver, ar;
    char a[MAXATOMLEN_UTF8];
    ck_assert(!ei_decode_version(r.buff, &i, &ver) && !ei_decode_tuple_header(r.buff, &i, &ar) &&
              ar == 2 && !ei_decode_atom(r.buff, &i, a) && !strcmp(a, "ok"));
    ei_x_free(&r);
    ck_assert_int_eq(cnb_call(n, NULL, "w", cnb_node_name(n), req, (size_t)k, 2000, &r), 0);
    ei_x_free(&r);
    /* A call to nobody: noproc. */
    ck_assert_int_eq(cnb_call(n, NULL, "nobody", cnb_node_name(n), req, (size_t)k, 2000, &r),
                     CNB_ENOPROC);
    ei_x_free(&r);
    /* Timers and plain sends land in handle_info. */
    infos = 0;
    ck_assert_int_eq(cnb_send_after(n, 20, &pid, req, (size_t)k, NULL), 0);
    uint64_t tref;
    ck_assert_int_eq(cnb_send_after(n, 10000, &pid, req, (size_t)k, &tref), 0);
    ck_assert_int_eq(cnb_cancel_timer(n, tref), 0);
    ck_assert_int_eq(cnb_cancel_timer(n, tref), CNB_ENOENT);
    ck_assert_int_eq(cnb_send(n, NULL, &pid, req, (size_t)k), 0);
    ck_assert(wait_count(&infos, 2));
    /* exit(Pid, kill) ends it; terminate runs. */
    terminated = 0;
    char kill[16];
    int kk = 0;
    ei_encode_version(kill, &kk);
    ei_encode_atom(kill, &kk, "kill");
    ck_assert_int_eq(cnb_exit(n, NULL, &pid, kill, (size_t)kk), 0);
    ck_assert(wait_count(&terminated, 1));
    ck_assert_int_eq(cnb_whereis(n, "w", &other), CNB_ENOENT);
    cnb_node_stop(n);
    pthread_join(t, NULL);
    cnb_node_destroy(n);
}
END_TEST

START_TEST(many_workers_and_shutdown)
{
    cnb_node_t *n = new_node();
    ck_assert_int_eq(cnb_node_start(n), 0);
    terminated = 0;
    for (int i = 0; i < 2000; i++) {
        erlang_pid p;
        ck_assert_int_eq(cnb_spawn(n, &ops, NULL, NULL, &p), 0);
    }
    ck_assert_uint_eq(cnb_node_process_count(n), 2000);
    ck_assert_int_eq(cnb_node_shutdown(n, 5000), 0);
    ck_assert_int_eq(terminated, 2000);
    ck_assert_uint_eq(cnb_node_process_count(n), 0);
    cnb_node_destroy(n);
}
END_TEST

/* A zeroed log_level means the documented default, info: an info line is
 * written (to stderr, caught here in a temporary file). */
START_TEST(zeroed_log_level_is_info)
{
    cnb_node_opts_t o;
    memset(&o, 0, sizeof(o));
    o.sname = "unit@localhost";
    o.cookie = "unit-cookie";
    o.no_epmd = 1;
    cnb_node_t *n = NULL;
    ck_assert_int_eq(cnb_node_create(&o, &n), 0);
    FILE *tmp = tmpfile();
    ck_assert_ptr_nonnull(tmp);
    int saved = dup(STDERR_FILENO);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(fileno(tmp), STDERR_FILENO), 0);
    cnb_node_log(n, CNB_LOG_INFO, "zeroed-level info line");
    cnb_node_log(n, CNB_LOG_DEBUG, "zeroed-level debug line");
    dup2(saved, STDERR_FILENO);
    close(saved);
    char buf[4096] = "";
    rewind(tmp);
    size_t got = fread(buf, 1, sizeof(buf) - 1, tmp);
    buf[got] = 0;
    fclose(tmp);
    ck_assert_ptr_nonnull(strstr(buf, "zeroed-level info line"));
    ck_assert_ptr_null(strstr(buf, "zeroed-level debug line"));
    cnb_node_destroy(n);
}
END_TEST

START_TEST(bad_arguments)
{
    cnb_node_opts_t o;
    memset(&o, 0, sizeof(o));
    cnb_node_t *n = NULL;
    o.log_level = -1; /* silence */
    ck_assert_int_eq(cnb_node_create(&o, &n), CNB_EINVAL); /* no name */
    o.sname = "a@b.c";
    o.cookie = "x";
    ck_assert_int_eq(cnb_node_create(&o, &n), CNB_EINVAL); /* dotted short name */
    o.sname = "bad name@h";
    ck_assert_int_eq(cnb_node_create(&o, &n), CNB_EINVAL);
    o.sname = "ok@h";
    o.cookie = "";
    ck_assert_int_eq(cnb_node_create(&o, &n), CNB_EINVAL);
    n = new_node();
    erlang_pid p;
    memset(&p, 0, sizeof(p));
    ck_assert_int_eq(cnb_spawn(n, NULL, NULL, NULL, &p), CNB_EINVAL);
    ck_assert_int_eq(cnb_send(n, NULL, &p, "x", 1), CNB_EINVAL); /* no version byte */
    ck_assert_int_eq(cnb_register(n, "", &p), CNB_EINVAL);
    ck_assert_int_eq(cnb_node_connect(n, "no-at-sign"), CNB_EINVAL);
    cnb_node_destroy(n);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("node");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, run_on_host_thread_and_call);
    tcase_add_test(tc, many_workers_and_shutdown);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, zeroed_log_level_is_info);
    suite_add_tcase(s, tc);
    return cnb_check_run(s);
}
