/* demo_probe.c: the `probe` demo worker of `cnode --demo` (see demo.c), written
 * against the public API only. Tests: tests/integration/runtime_tests.erl,
 * tests/integration/exunit/. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnode_bridge.h"
#include "demo_int.h"

/* A worker that does what it is asked, for tests and for exploring from a
 * shell: gen_server:call({probe, C}, Request) with Request one of
 *   spawn                      -> {ok, Pid} of a new (unnamed) probe
 *   spawn_inline               -> {ok, Pid} of a new probe that runs inline
 *                              (cnb_spawn_opts_t.run_inline): never ask it
 *                              for busy (it would hold the I/O thread)
 *   on_io_thread               -> true | false: where this call runs
 *   {notify_terminate, Pid}    when the probe ends, terminate sends Pid
 *                              {probe_terminate, Self, Reason} -> ok
 *   {subscribe, Pid}           every later info message M goes to Pid as
 *                              {probe_info, Self, M}
 *   {link, Pid} | {unlink, Pid} | {trap_exit, Bool}          -> ok
 *   {monitor, Pid} | {monitor, Name, Node}                   -> {ok, Ref}
 *   {demonitor, Ref}                                         -> ok
 *   {exit, Pid, Reason}        exit(Pid, Reason) from the probe -> ok
 *   {call, Pid, Req, Ms} | {call, Name, Node, Req, Ms}
 *                              gen_server:call from C -> {ok, Reply} |
 *                              {error, timeout | noproc | noconnection |
 *                                      bad_state (from an inline probe), Detail}
 *   {rpc, Node, M, F, Args, Ms} -> {ok, Result} | {error, ...}
 *   {reply_after, Ms, Term}    replies Term after Ms (a late reply)
 *   {busy, Ms}                 holds its worker thread for Ms (at most 10 s;
 *                              signals to it queue meanwhile) -> ok
 *   {global_register, Name, random_exit | random_notify | notify_all[, Ms]}
 *                              registers the probe in :global (within Ms,
 *                              default 5000) -> yes | no | timeout
 *   {global_re_register, Name} re_registers the probe in :global -> yes | no
 *   {global_whereis, Name}     -> Pid | undefined
 *   {global_whereis_bench, Name, N}  N cnb_global_whereis calls in a row ->
 *                              {ok, Nanoseconds} (all of them) | {error, _}
 *   {global_unregister, Name}  -> ok
 *   global_names               -> global:registered_names()
 *   {pg_members, Group}        cnb_pg_members in scope pg (this node's view:
 *                              its own and its peers' members) -> [Pid] |
 *                              {error, Code}
 *   {count, N}                 replies ok once N more info messages arrived
 *                              (they are not forwarded to the subscriber)
 *   {stop, Reason}             stops with Reason, replying ok first
 *   crash                      a callback error: exits {callback_failed, ...}
 */
/* Small when idle: the subscriber and the pending count call are allocated
 * only when asked for (ei's pid and From structs are over 1 KB each). */
typedef struct probe {
    erlang_pid *sub;
    long count_left; /* {count, N}: info messages still to count */
    erlang_pid *end_to; /* {notify_terminate, Pid} */
    cnb_from_t *count_from;
} probe_t;

static int probe_init(cnb_proc_t *self, void *arg, void **state)
{
    (void)self;
    (void)arg;
    probe_t *p = calloc(1, sizeof(*p));
    if (!p)
        return CNB_ENOMEM;
    *state = p;
    return 0;
}

/* Sends `to` the message {Tag, Self, T} (t: a term with version byte).
 * Returns 0, or CNB_ENOMEM when it could not be encoded (nothing sent). */
static int send_tagged(cnb_proc_t *self, const erlang_pid *to, const char *tag, const char *t,
                       size_t len)
{
    ei_x_buff x;
    int e = ei_x_new_with_version(&x);
    e |= ei_x_encode_tuple_header(&x, 3);
    e |= ei_x_encode_atom(&x, tag);
    e |= ei_x_encode_pid(&x, cnb_self(self));
    e |= ei_x_append_buf(&x, t + 1, (int)len - 1);
    if (!e)
        cnb_send(cnb_proc_node(self), cnb_self(self), to, x.buff, (size_t)x.index);
    ei_x_free(&x);
    return e ? CNB_ENOMEM : 0;
}

static void probe_terminate(cnb_proc_t *self, void *state, const char *r, size_t len)
{
    probe_t *p = state;
    if (p->end_to) {
        send_tagged(self, p->end_to, "probe_terminate", r, len);
        free(p->end_to);
    }
    free(p->sub);
    free(p->count_from);
    free(p);
}

/* One request being handled: its arguments start at req[i]. */
typedef struct probe_req {
    cnb_proc_t *self;
    probe_t *st;
    cnb_node_t *n;
    const char *req;
    int i;
    const cnb_from_t *from;
    ei_x_buff *reply;
} probe_req_t;

static int ok_reply(probe_req_t *q)
{
    return replied(ei_x_encode_atom(q->reply, "ok"), CNB_REPLY);
}

static int ok_ref(ei_x_buff *reply, const erlang_ref *ref)
{
    int e = ei_x_encode_tuple_header(reply, 2);
    e |= ei_x_encode_atom(reply, "ok");
    e |= ei_x_encode_ref(reply, ref);
    return replied(e, CNB_REPLY);
}

/* Copies the term at q's next argument (advancing past it) into a fresh
 * versioned buffer. Returns 0, or -1 (nothing to free) when there is none
 * or no memory for it. */
static int next_term(probe_req_t *q, ei_x_buff *out)
{
    int s0 = q->i;
    if (ei_skip_term(q->req, &q->i))
        return -1;
    if (ei_x_new_with_version(out) || ei_x_append_buf(out, q->req + s0, q->i - s0)) {
        ei_x_free(out);
        return -1;
    }
    return 0;
}

static int call_result(ei_x_buff *reply, int rc, ei_x_buff *r)
{
    int e;
    if (rc == 0) {
        e = ei_x_encode_tuple_header(reply, 2);
        e |= ei_x_encode_atom(reply, "ok");
        e |= ei_x_append_buf(reply, r->buff + 1, r->index - 1);
        return replied(e, CNB_REPLY);
    }
    e = ei_x_encode_tuple_header(reply, 3);
    e |= ei_x_encode_atom(reply, "error");
    e |= ei_x_encode_atom(reply, rc == CNB_ETIMEDOUT ? "timeout"
                                 : rc == CNB_ENOPROC ? "noproc"
                                 : rc == CNB_ENOCONN ? "noconnection"
                                 : rc == CNB_ESTATE  ? "bad_state"
                                                     : "failed");
    if (r->buff && r->index > 1)
        e |= ei_x_append_buf(reply, r->buff + 1, r->index - 1);
    else
        e |= ei_x_encode_atom(reply, "undefined");
    return replied(e, CNB_REPLY);
}

static int p_spawn(probe_req_t *q)
{
    erlang_pid pid;
    int rc = cnb_spawn(q->n, &cnb__demo_probe_ops, NULL, NULL, &pid);
    return rc ? rc : ok_pid(q->reply, &pid);
}

static int p_spawn_inline(probe_req_t *q)
{
    erlang_pid pid;
    cnb_spawn_opts_t o = {.run_inline = 1};
    int rc = cnb_spawn(q->n, &cnb__demo_probe_ops, NULL, &o, &pid);
    return rc ? rc : ok_pid(q->reply, &pid);
}

static int p_on_io_thread(probe_req_t *q)
{
    return replied(ei_x_encode_atom(q->reply, cnb_on_io_thread(q->n) ? "true" : "false"),
                   CNB_REPLY);
}

static int p_notify_terminate(probe_req_t *q)
{
    erlang_pid pid;
    if (ei_decode_pid(q->req, &q->i, &pid))
        return error_reply(q->reply, "badarg");
    if (!q->st->end_to && !(q->st->end_to = malloc(sizeof(pid))))
        return CNB_ENOMEM;
    *q->st->end_to = pid;
    return ok_reply(q);
}

static int p_crash(probe_req_t *q)
{
    (void)q;
    return CNB_EINVAL;
}

static int p_subscribe(probe_req_t *q)
{
    erlang_pid pid;
    if (ei_decode_pid(q->req, &q->i, &pid))
        return error_reply(q->reply, "badarg");
    if (!q->st->sub && !(q->st->sub = malloc(sizeof(*q->st->sub))))
        return CNB_ENOMEM;
    *q->st->sub = pid;
    return ok_reply(q);
}

/* {link, Pid} and {unlink, Pid}: fn on Pid, then ok. */
static int pid_op(probe_req_t *q, int (*fn)(cnb_proc_t *, const erlang_pid *))
{
    erlang_pid pid;
    if (ei_decode_pid(q->req, &q->i, &pid))
        return error_reply(q->reply, "badarg");
    fn(q->self, &pid);
    return ok_reply(q);
}

static int p_link(probe_req_t *q)
{
    return pid_op(q, cnb_link);
}

static int p_unlink(probe_req_t *q)
{
    return pid_op(q, cnb_unlink);
}

static int p_trap_exit(probe_req_t *q)
{
    int b = 0;
    ei_decode_boolean(q->req, &q->i, &b);
    cnb_trap_exit(q->self, b);
    return ok_reply(q);
}

static int p_monitor(probe_req_t *q)
{
    erlang_pid pid;
    erlang_ref ref;
    if (ei_decode_pid(q->req, &q->i, &pid))
        return error_reply(q->reply, "badarg");
    cnb_monitor(q->self, &pid, &ref);
    return ok_ref(q->reply, &ref);
}

static int p_monitor_name(probe_req_t *q)
{
    char name[MAXATOMLEN_UTF8], node[MAXATOMLEN_UTF8];
    erlang_ref ref;
    if (ei_decode_atom(q->req, &q->i, name) || ei_decode_atom(q->req, &q->i, node))
        return error_reply(q->reply, "badarg");
    cnb_monitor_name(q->self, name, node, &ref);
    return ok_ref(q->reply, &ref);
}

static int p_demonitor(probe_req_t *q)
{
    erlang_ref ref;
    if (ei_decode_ref(q->req, &q->i, &ref))
        return error_reply(q->reply, "badarg");
    cnb_demonitor(q->self, &ref);
    return ok_reply(q);
}

static int p_exit(probe_req_t *q)
{
    erlang_pid pid;
    ei_x_buff r;
    if (ei_decode_pid(q->req, &q->i, &pid) || next_term(q, &r))
        return error_reply(q->reply, "badarg");
    cnb_exit(q->n, cnb_self(q->self), &pid, r.buff, (size_t)r.index);
    ei_x_free(&r);
    return ok_reply(q);
}

/* {call, Pid, Req, Ms} (by_pid) or {call, Name, Node, Req, Ms}. */
static int do_call(probe_req_t *q, int by_pid)
{
    char name[MAXATOMLEN_UTF8], node[MAXATOMLEN_UTF8];
    erlang_pid pid;
    long ms;
    ei_x_buff a, r;
    if ((by_pid ? ei_decode_pid(q->req, &q->i, &pid)
                : (ei_decode_atom(q->req, &q->i, name) || ei_decode_atom(q->req, &q->i, node))))
        return error_reply(q->reply, "badarg");
    if (next_term(q, &a))
        return error_reply(q->reply, "badarg");
    if (ei_decode_long(q->req, &q->i, &ms)) {
        ei_x_free(&a);
        return error_reply(q->reply, "badarg");
    }
    int rc = cnb_call(q->n, by_pid ? &pid : NULL, by_pid ? NULL : name, by_pid ? NULL : node,
                      a.buff, (size_t)a.index, (unsigned)ms, &r);
    rc = call_result(q->reply, rc, &r);
    ei_x_free(&a);
    ei_x_free(&r);
    return rc;
}

static int p_call_pid(probe_req_t *q)
{
    return do_call(q, 1);
}

static int p_call_name(probe_req_t *q)
{
    return do_call(q, 0);
}

static int p_rpc(probe_req_t *q)
{
    char node[MAXATOMLEN_UTF8], mod[MAXATOMLEN_UTF8], fun[MAXATOMLEN_UTF8];
    long ms;
    ei_x_buff a, r;
    if (ei_decode_atom(q->req, &q->i, node) || ei_decode_atom(q->req, &q->i, mod) ||
        ei_decode_atom(q->req, &q->i, fun) || next_term(q, &a))
        return error_reply(q->reply, "badarg");
    if (ei_decode_long(q->req, &q->i, &ms)) {
        ei_x_free(&a);
        return error_reply(q->reply, "badarg");
    }
    int rc = cnb_rpc(q->n, node, mod, fun, a.buff, (size_t)a.index, (unsigned)ms, &r);
    rc = call_result(q->reply, rc, &r);
    ei_x_free(&a);
    ei_x_free(&r);
    return rc;
}

/* Keeps From; a timer message carries it back to us. */
static int p_reply_after(probe_req_t *q)
{
    long ms;
    ei_x_buff t, m;
    if (ei_decode_long(q->req, &q->i, &ms) || next_term(q, &t))
        return error_reply(q->reply, "badarg");
    int e = ei_x_new_with_version(&m);
    e |= ei_x_encode_tuple_header(&m, 3);
    e |= ei_x_encode_atom(&m, "$probe_reply");
    e |= ei_x_encode_binary(&m, q->from, sizeof(*q->from));
    e |= ei_x_append_buf(&m, t.buff + 1, t.index - 1);
    int rc = e ? CNB_ENOMEM
               : cnb_send_after(q->n, (unsigned)ms, cnb_self(q->self), m.buff, (size_t)m.index,
                                NULL);
    ei_x_free(&m);
    ei_x_free(&t);
    return rc < 0 ? rc : CNB_CONTINUE;
}

static int p_busy(probe_req_t *q)
{
    long ms;
    if (ei_decode_long(q->req, &q->i, &ms) || ms < 0 || ms > 10000)
        return error_reply(q->reply, "badarg");
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
    return ok_reply(q);
}

static int global_register(probe_req_t *q, int with_ms)
{
    ei_x_buff nm;
    char how[MAXATOMLEN_UTF8];
    long ms = 5000;
    if (next_term(q, &nm))
        return error_reply(q->reply, "badarg");
    if (ei_decode_atom(q->req, &q->i, how) ||
        (with_ms && (ei_decode_long(q->req, &q->i, &ms) || ms < 0 || ms > 600000))) {
        ei_x_free(&nm);
        return error_reply(q->reply, "badarg");
    }
    int resolve = !strcmp(how, "random_notify") ? CNB_GLOBAL_RANDOM_NOTIFY
                  : !strcmp(how, "notify_all")  ? CNB_GLOBAL_NOTIFY_ALL
                                                : CNB_GLOBAL_RANDOM_EXIT;
    int rc = cnb_global_register(q->n, nm.buff, (size_t)nm.index, cnb_self(q->self), resolve,
                                 (unsigned)ms, NULL);
    ei_x_free(&nm);
    return replied(ei_x_encode_atom(q->reply, rc == 0                ? "yes"
                                              : rc == CNB_ETIMEDOUT ? "timeout"
                                                                    : "no"),
                   CNB_REPLY);
}

static int p_global_register(probe_req_t *q)
{
    return global_register(q, 0);
}

static int p_global_register_ms(probe_req_t *q)
{
    return global_register(q, 1);
}

static int p_global_re_register(probe_req_t *q)
{
    ei_x_buff nm;
    if (next_term(q, &nm))
        return error_reply(q->reply, "badarg");
    int rc = cnb_global_re_register(q->n, nm.buff, (size_t)nm.index, cnb_self(q->self),
                                    CNB_GLOBAL_RANDOM_EXIT, 5000);
    ei_x_free(&nm);
    return replied(ei_x_encode_atom(q->reply, rc == 0 ? "yes" : "no"), CNB_REPLY);
}

static int p_global_whereis(probe_req_t *q)
{
    ei_x_buff nm;
    erlang_pid pid;
    if (next_term(q, &nm))
        return error_reply(q->reply, "badarg");
    int e = cnb_global_whereis(q->n, nm.buff, (size_t)nm.index, &pid, 5000) == 0
                ? ei_x_encode_pid(q->reply, &pid)
                : ei_x_encode_atom(q->reply, "undefined");
    ei_x_free(&nm);
    return replied(e, CNB_REPLY);
}

static int p_global_whereis_bench(probe_req_t *q)
{
    ei_x_buff nm;
    long cnt;
    erlang_pid pid;
    struct timespec t0, t1;
    if (next_term(q, &nm))
        return error_reply(q->reply, "badarg");
    if (ei_decode_long(q->req, &q->i, &cnt) || cnt <= 0 || cnt > 100000000) {
        ei_x_free(&nm);
        return error_reply(q->reply, "badarg");
    }
    int rc = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long k = 0; k < cnt && !rc; k++)
        rc = cnb_global_whereis(q->n, nm.buff, (size_t)nm.index, &pid, 5000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ei_x_free(&nm);
    if (rc)
        return error_reply(q->reply, "whereis_failed");
    long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    int e = ei_x_encode_tuple_header(q->reply, 2) || ei_x_encode_atom(q->reply, "ok") ||
            ei_x_encode_longlong(q->reply, ns);
    return replied(e, CNB_REPLY);
}

static int p_global_unregister(probe_req_t *q)
{
    ei_x_buff nm;
    if (next_term(q, &nm))
        return error_reply(q->reply, "badarg");
    cnb_global_unregister(q->n, nm.buff, (size_t)nm.index, 5000);
    ei_x_free(&nm);
    return ok_reply(q);
}

static int p_global_names(probe_req_t *q)
{
    ei_x_buff r;
    int rc = cnb_global_registered_names(q->n, 5000, &r);
    rc = rc == 0 ? replied(ei_x_append_buf(q->reply, r.buff + 1, r.index - 1), CNB_REPLY)
                 : error_reply(q->reply, "noconnection");
    ei_x_free(&r);
    return rc;
}

static int p_pg_members(probe_req_t *q)
{
    ei_x_buff g, r;
    if (next_term(q, &g))
        return error_reply(q->reply, "badarg");
    int rc = cnb_pg_members(q->n, "pg", g.buff, (size_t)g.index, &r);
    ei_x_free(&g);
    if (rc)
        return error_reply(q->reply, cnb_strerror(rc));
    rc = replied(ei_x_append_buf(q->reply, r.buff + 1, r.index - 1), CNB_REPLY);
    ei_x_free(&r);
    return rc;
}

static int p_count(probe_req_t *q)
{
    long cnt;
    if (ei_decode_long(q->req, &q->i, &cnt) || cnt <= 0)
        return error_reply(q->reply, "badarg");
    if (!q->st->count_from && !(q->st->count_from = malloc(sizeof(*q->st->count_from))))
        return CNB_ENOMEM;
    q->st->count_left = cnt;
    *q->st->count_from = *q->from;
    return CNB_CONTINUE;
}

static int p_stop(probe_req_t *q)
{
    ei_x_buff r;
    if (next_term(q, &r))
        return error_reply(q->reply, "badarg");
    int rc = cnb_proc_set_reason(q->self, r.buff, (size_t)r.index);
    ei_x_free(&r);
    return rc ? rc : replied(ei_x_encode_atom(q->reply, "ok"), CNB_STOP);
}

/* The requests: op, tuple arity (0: a plain atom; -1: either), handler. */
static const struct {
    const char *op;
    int arity;
    int (*fn)(probe_req_t *q);
} probe_reqs[] = {
    {"spawn", -1, p_spawn},
    {"spawn_inline", -1, p_spawn_inline},
    {"on_io_thread", -1, p_on_io_thread},
    {"notify_terminate", 2, p_notify_terminate},
    {"crash", -1, p_crash},
    {"subscribe", 2, p_subscribe},
    {"link", 2, p_link},
    {"unlink", 2, p_unlink},
    {"trap_exit", 2, p_trap_exit},
    {"monitor", 2, p_monitor},
    {"monitor", 3, p_monitor_name},
    {"demonitor", 2, p_demonitor},
    {"exit", 3, p_exit},
    {"call", 4, p_call_pid},
    {"call", 5, p_call_name},
    {"rpc", 6, p_rpc},
    {"reply_after", 3, p_reply_after},
    {"busy", 2, p_busy},
    {"global_register", 3, p_global_register},
    {"global_register", 4, p_global_register_ms},
    {"global_re_register", 2, p_global_re_register},
    {"global_whereis", 2, p_global_whereis},
    {"global_whereis_bench", 3, p_global_whereis_bench},
    {"global_unregister", 2, p_global_unregister},
    {"global_names", 0, p_global_names},
    {"pg_members", 2, p_pg_members},
    {"count", 2, p_count},
    {"stop", 2, p_stop},
};

static int probe_call(cnb_proc_t *self, void *state, const char *req, size_t len,
                      const cnb_from_t *from, ei_x_buff *reply)
{
    (void)len;
    probe_req_t q = {self, state, cnb_proc_node(self), req, 0, from, reply};
    int ver, arity = 0, type, size;
    char op[MAXATOMLEN_UTF8];
    ei_decode_version(req, &q.i, &ver);
    ei_get_type(req, &q.i, &type, &size);
    if (type == ERL_ATOM_EXT || type == ERL_SMALL_ATOM_UTF8_EXT || type == ERL_ATOM_UTF8_EXT ||
        type == ERL_SMALL_ATOM_EXT) {
        ei_decode_atom(req, &q.i, op);
    } else if (ei_decode_tuple_header(req, &q.i, &arity) || arity < 1 ||
               ei_decode_atom(req, &q.i, op)) {
        return error_reply(reply, "badarg");
    }
    for (size_t k = 0; k < sizeof(probe_reqs) / sizeof(probe_reqs[0]); k++)
        if ((probe_reqs[k].arity < 0 || probe_reqs[k].arity == arity) &&
            !strcmp(probe_reqs[k].op, op))
            return probe_reqs[k].fn(&q);
    return error_reply(reply, "badarg");
}

static int probe_info(cnb_proc_t *self, void *state, const char *msg, size_t len)
{
    probe_t *st = state;
    cnb_node_t *n = cnb_proc_node(self);
    int i = 0, ver, arity;
    char atom[MAXATOMLEN_UTF8];
    if (!ei_decode_version(msg, &i, &ver) && !ei_decode_tuple_header(msg, &i, &arity) &&
        arity == 3 && !ei_decode_atom(msg, &i, atom) && !strcmp(atom, "$probe_reply")) {
        cnb_from_t from;
        long blen;
        int t = i;
        if (ei_decode_binary(msg, &t, &from, &blen) || blen != (long)sizeof(from))
            return CNB_CONTINUE;
        ei_x_buff r;
        int e = ei_x_new_with_version(&r);
        e |= ei_x_append_buf(&r, msg + t, (int)len - t);
        int rc = e ? CNB_ENOMEM : cnb_reply(n, &from, r.buff, (size_t)r.index);
        ei_x_free(&r);
        return rc == CNB_ENOMEM ? rc : CNB_CONTINUE;
    }
    if (st->count_left > 0) {
        if (--st->count_left == 0) {
            char ok[16];
            int k = 0;
            ei_encode_version(ok, &k);
            ei_encode_atom(ok, &k, "ok");
            cnb_reply(n, st->count_from, ok, (size_t)k);
        }
        return CNB_CONTINUE;
    }
    if (!st->sub)
        return CNB_CONTINUE;
    return send_tagged(self, st->sub, "probe_info", msg, len) ? CNB_ENOMEM : CNB_CONTINUE;
}

const cnb_worker_ops_t cnb__demo_probe_ops = {
    .init = probe_init,
    .handle_call = probe_call,
    .handle_info = probe_info,
    .terminate = probe_terminate,
};
