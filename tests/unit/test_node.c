/* test_node.c: Check tests of the node and runtime API without other nodes
 * (--no-epmd, loopback only): cnb_node_run on a host thread, spawning
 * workers, calls between workers of one node, links and exits, timers,
 * registered names, bad arguments, shutdown; links and monitors asked from
 * a thread that is not the worker's (cnb_worker_*), callback errors as exit
 * reasons, cnb_node_wait_connected between two nodes, cnb_version. Under
 * ASan they also check that all memory comes back. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnode_bridge.h"
#include "check_run.h"

static cnb_node_t *new_named_node(const char *sname)
{
    cnb_node_opts_t o;
    memset(&o, 0, sizeof(o));
    o.sname = sname;
    o.cookie = "unit-cookie";
    o.no_epmd = 1;
    o.log_level = getenv("UNIT_DEBUG") ? CNB_LOG_DEBUG : CNB_LOG_ERROR;
    cnb_node_t *n = NULL;
    ck_assert_int_eq(cnb_node_create(&o, &n), 0);
    return n;
}

static cnb_node_t *new_node(void)
{
    return new_named_node("unit@localhost");
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

/* ---- links and monitors from any thread, callback failures as reasons ---- */

/* A watcher (trapping exits) keeps the last message its handle_info got. */
static char last_info[512];
static size_t last_len;
static int w_keep_info(cnb_proc_t *self, void *state, const char *msg, size_t len)
{
    (void)self;
    (void)state;
    pthread_mutex_lock(&mu);
    last_len = len < sizeof(last_info) ? len : 0;
    memcpy(last_info, msg, last_len);
    infos++;
    pthread_mutex_unlock(&mu);
    return CNB_CONTINUE;
}

/* Answers any call; the request {fail, Code} makes handle_call return Code. */
static int w_maybe_fail(cnb_proc_t *self, void *state, const char *req, size_t len,
                        const cnb_from_t *from, ei_x_buff *reply)
{
    int i = 1, ar;
    char a[MAXATOMLEN_UTF8];
    long code;
    if (!ei_decode_tuple_header(req, &i, &ar) && ar == 2 && !ei_decode_atom(req, &i, a) &&
        !strcmp(a, "fail") && !ei_decode_long(req, &i, &code))
        return (int)code;
    return w_call(self, state, req, len, from, reply);
}

static const cnb_worker_ops_t watcher_ops = {.handle_call = w_call, .handle_info = w_keep_info};
static const cnb_worker_ops_t target_ops = {.handle_call = w_maybe_fail};

/* The last info as text, e.g. {'DOWN',#Ref<...>,process,<...>,killed}. */
static void last_info_text(char *out, size_t cap)
{
    pthread_mutex_lock(&mu);
    char *t = NULL;
    int i = 1;
    if (last_len && ei_s_print_term(&t, last_info, &i) >= 0)
        snprintf(out, cap, "%s", t);
    else
        snprintf(out, cap, "(none)");
    free(t);
    pthread_mutex_unlock(&mu);
}

static size_t atom_term(char *buf, const char *atom)
{
    int k = 0;
    ei_encode_version(buf, &k);
    ei_encode_atom(buf, &k, atom);
    return (size_t)k;
}

/* A call to w: when it returns, w has handled everything queued before it. */
static int sync_call(cnb_node_t *n, const erlang_pid *w, const char *req, size_t len)
{
    ei_x_buff r;
    int rc = cnb_call(n, w, NULL, NULL, req, len, 2000, &r);
    ei_x_free(&r);
    return rc;
}

/* Waits for the watcher's info count to reach want, then gives its text. */
static int wait_info(int want, char *text, size_t cap)
{
    int ok = wait_count(&infos, want);
    last_info_text(text, cap);
    return ok;
}

START_TEST(worker_ops_from_any_thread)
{
    cnb_node_t *n = new_node();
    ck_assert_int_eq(cnb_node_start(n), 0);
    erlang_pid w, t1, t2, t3, t4;
    cnb_spawn_opts_t so = {.trap_exit = 1};
    ck_assert_int_eq(cnb_spawn(n, &watcher_ops, NULL, &so, &w), 0);
    ck_assert_int_eq(cnb_spawn(n, &target_ops, NULL, NULL, &t1), 0);
    ck_assert_int_eq(cnb_spawn(n, &target_ops, NULL, NULL, &t2), 0);
    ck_assert_int_eq(cnb_spawn(n, &target_ops, NULL, NULL, &t3), 0);
    ck_assert_int_eq(cnb_spawn(n, &target_ops, NULL, NULL, &t4), 0);
    char req[64], kill[16], text[512];
    size_t qlen = atom_term(req, "sync"), klen = atom_term(kill, "kill");
    infos = 0;

    /* A monitor asked from this thread: its DOWN carries the ref given here. */
    erlang_ref ref;
    ck_assert_int_eq(cnb_worker_monitor(n, &w, &t1, &ref), 0);
    ck_assert_int_eq(sync_call(n, &w, req, qlen), 0);
    ck_assert_int_eq(cnb_exit(n, NULL, &t1, kill, klen), 0);
    ck_assert(wait_info(1, text, sizeof(text)));
    ck_assert_msg(strstr(text, "'DOWN'") && strstr(text, "killed"), "got %s", text);
    int i = 1, ar;
    char a[MAXATOMLEN_UTF8];
    erlang_ref got;
    pthread_mutex_lock(&mu);
    ck_assert(!ei_decode_tuple_header(last_info, &i, &ar) && ar == 5 &&
              !ei_decode_atom(last_info, &i, a) && !ei_decode_ref(last_info, &i, &got));
    pthread_mutex_unlock(&mu);
    ck_assert(got.len == ref.len && !memcmp(got.n, ref.n, sizeof(got.n[0]) * (size_t)ref.len));

    /* A link asked from this thread: t2's end reaches w as an EXIT. */
    ck_assert_int_eq(cnb_worker_link(n, &w, &t2), 0);
    ck_assert_int_eq(sync_call(n, &w, req, qlen), 0);
    ck_assert_int_eq(cnb_exit(n, NULL, &t2, kill, klen), 0);
    ck_assert(wait_info(2, text, sizeof(text)));
    ck_assert_msg(strstr(text, "'EXIT'") && strstr(text, "killed"), "got %s", text);

    /* Unlink and demonitor: t3's end reaches w by neither. */
    ck_assert_int_eq(cnb_worker_link(n, &w, &t3), 0);
    ck_assert_int_eq(cnb_worker_monitor(n, &w, &t3, &ref), 0);
    ck_assert_int_eq(cnb_worker_unlink(n, &w, &t3), 0);
    ck_assert_int_eq(cnb_worker_demonitor(n, &w, &ref), 0);
    ck_assert_int_eq(sync_call(n, &w, req, qlen), 0);
    ck_assert_int_eq(cnb_exit(n, NULL, &t3, kill, klen), 0);

    /* A callback's error code is the exit reason's readable atom; a code of
     * the callback's own is {unknown_error, Code}. */
    ck_assert_int_eq(cnb_worker_monitor(n, &w, &t4, NULL), 0);
    ck_assert_int_eq(sync_call(n, &w, req, qlen), 0);
    char fail[32];
    int k = 0;
    ei_encode_version(fail, &k);
    ei_encode_tuple_header(fail, &k, 2);
    ei_encode_atom(fail, &k, "fail");
    ei_encode_long(fail, &k, CNB_ETIMEDOUT);
    ck_assert_int_eq(sync_call(n, &t4, fail, (size_t)k), CNB_ENOPROC);
    ck_assert(wait_info(3, text, sizeof(text)));
    ck_assert_msg(strstr(text, "{callback_failed, handle_call, timeout}"), "got %s", text);
    pthread_mutex_lock(&mu);
    ck_assert_int_eq(infos, 3); /* nothing from t3 */
    pthread_mutex_unlock(&mu);
    erlang_pid t5;
    ck_assert_int_eq(cnb_spawn(n, &target_ops, NULL, NULL, &t5), 0);
    ck_assert_int_eq(cnb_worker_monitor(n, &w, &t5, NULL), 0);
    ck_assert_int_eq(sync_call(n, &w, req, qlen), 0);
    k = 0;
    ei_encode_version(fail, &k);
    ei_encode_tuple_header(fail, &k, 2);
    ei_encode_atom(fail, &k, "fail");
    ei_encode_long(fail, &k, -1000);
    ck_assert_int_eq(sync_call(n, &t5, fail, (size_t)k), CNB_ENOPROC);
    ck_assert(wait_info(4, text, sizeof(text)));
    ck_assert_msg(strstr(text, "{callback_failed, handle_call, {unknown_error, -1000}}"), "got %s",
                  text);

    /* A worker that is gone, a pid of another node, bad arguments. */
    ck_assert_int_eq(cnb_worker_link(n, &t1, &w), CNB_ENOPROC);
    erlang_pid other = w;
    snprintf(other.node, sizeof(other.node), "elsewhere@localhost");
    ck_assert_int_eq(cnb_worker_monitor(n, &other, &w, &ref), CNB_ENOPROC);
    ck_assert_int_eq(cnb_worker_link(n, &w, NULL), CNB_EINVAL);
    ck_assert_int_eq(cnb_worker_demonitor(n, NULL, &ref), CNB_EINVAL);
    ck_assert_int_eq(cnb_node_shutdown(n, 5000), 0);
    cnb_node_destroy(n);
}
END_TEST

/* cnb_node_wait_connected: times out with nobody there, returns once a
 * second node (here another C node, no epmd) has connected. */
START_TEST(wait_connected)
{
    cnb_node_t *a = new_node();
    ck_assert_int_eq(cnb_node_start(a), 0);
    ck_assert_int_eq(cnb_node_wait_connected(a, "nobody@localhost", 100), CNB_ETIMEDOUT);
    ck_assert_int_eq(cnb_node_wait_connected(a, NULL, 100), CNB_ETIMEDOUT);
    ck_assert_int_eq(cnb_node_wait_connected(a, "no-at-sign", 100), CNB_EINVAL);
    cnb_node_t *b = new_named_node("unit2@localhost");
    ck_assert_int_eq(cnb_node_start(b), 0);
    char peer[300];
    snprintf(peer, sizeof(peer), "%s:%u", cnb_node_name(a), cnb_node_port(a));
    ck_assert_int_eq(cnb_node_keep_connected(b, peer), 0);
    ck_assert_int_eq(cnb_node_wait_connected(b, peer, 10000), 0);
    ck_assert_int_eq(cnb_node_wait_connected(b, cnb_node_name(a), 0), 0);
    ck_assert_int_eq(cnb_node_wait_connected(a, NULL, 10000), 0);
    ck_assert_int_eq(cnb_node_wait_connected(a, cnb_node_name(b), 10000), 0);
    cnb_node_stop(b);
    ck_assert_int_eq(cnb_node_wait_connected(b, "nobody@localhost", 10000), CNB_ECLOSED);
    cnb_node_destroy(b);
    cnb_node_destroy(a);
}
END_TEST

START_TEST(version)
{
    char want[32];
    snprintf(want, sizeof(want), "%d.%d.%d", CNB_VERSION_MAJOR, CNB_VERSION_MINOR,
             CNB_VERSION_PATCH);
    ck_assert_str_eq(cnb_version(), want);
    ck_assert_str_eq(cnb_version(), CNB_VERSION_STRING);
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
    tcase_add_test(tc, worker_ops_from_any_thread);
    tcase_add_test(tc, wait_connected);
    tcase_add_test(tc, version);
    suite_add_tcase(s, tc);
    return cnb_check_run(s);
}
