/* demo.c: the workers `cnode --demo` runs, written against the public API
 * only, as a user's service would be:
 *   echo       gen_server:call({echo, C}, Req) -> Req;
 *              {echo, C} ! {ping, From} -> From ! {pong, EchoPid};
 *              gen_server:call({echo, C}, {lookup, Key}) -> what the local
 *              registry holds for Key ([] until the registry is attached).
 *   cache_sup  gen_server:call({cache_sup, C}, {start, MediaId, Content[, TtlMs]})
 *              -> {ok, Pid} of a new cache worker, registered in :global as
 *              {cache, MediaId}; {error, {already_started, Pid}} when that
 *              name is taken (Pid: its owner);
 *   cache_worker  a worker type: cnode_bridge:start_link(C, cache_worker,
 *              [MediaId, Content]) starts a cache worker named {cache, MediaId}
 *              in :global (under a BEAM supervisor, say); the name taken:
 *              {error, {already_started, Pid}};
 *   cache      gen_server:call(Pid, get) -> {ok, Content};
 *              gen_server:call(Pid, stop) -> ok, and the worker ends normally;
 *              after TtlMs it ends by itself.
 *   probe      a worker that links, monitors, calls, exits... on request
 *              (see below), for tests and exploring.
 * Tests: tests/integration/runtime_tests.erl, tests/integration/exunit/. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnode_bridge.h"
#include "demo.h"
#include "registry_worker.h"

/* The node's key registry (NULL: none), set by cnb_demo_start. */
static struct cnb_registry *demo_reg;

/* A handle_call's result once it has encoded its reply: e, the encoders'
 * results OR-ed, nonzero when one ran out of memory (then the worker fails
 * with CNB_ENOMEM instead of sending half a reply). */
static int replied(int e, int rc)
{
    return e ? CNB_ENOMEM : rc;
}

/* {error, Why} as the reply. */
static int error_reply(ei_x_buff *reply, const char *why)
{
    int e = ei_x_encode_tuple_header(reply, 2);
    e |= ei_x_encode_atom(reply, "error");
    e |= ei_x_encode_atom(reply, why);
    return replied(e, CNB_REPLY);
}

/* {ok, Pid} as the reply. */
static int ok_pid(ei_x_buff *reply, const erlang_pid *pid)
{
    int e = ei_x_encode_tuple_header(reply, 2);
    e |= ei_x_encode_atom(reply, "ok");
    e |= ei_x_encode_pid(reply, pid);
    return replied(e, CNB_REPLY);
}

/* ------------------------------------------------------------------ echo */

static int echo_call(cnb_proc_t *self, void *state, const char *req, size_t len,
                     const cnb_from_t *from, ei_x_buff *reply)
{
    (void)state;
    (void)from;
    int i = 0, ver, arity;
    char atom[MAXATOMLEN_UTF8];
    if (!ei_decode_version(req, &i, &ver) && !ei_decode_tuple_header(req, &i, &arity) &&
        arity == 2 && !ei_decode_atom(req, &i, atom) && !strcmp(atom, "lookup")) {
        /* What the C side sees in the shared registry: [{Pid, Value}]. */
        int k0 = i;
        if (ei_skip_term(req, &i) || !demo_reg ||
            cnb_registry_encode_lookup(demo_reg, req + k0, (size_t)(i - k0), reply) < 0)
            return replied(ei_x_encode_empty_list(reply), CNB_REPLY);
        return CNB_REPLY;
    }
    (void)self;
    return replied(ei_x_append_buf(reply, req + 1, (int)len - 1), CNB_REPLY);
}

static int echo_info(cnb_proc_t *self, void *state, const char *msg, size_t len)
{
    (void)state;
    (void)len;
    int i = 0, ver, arity;
    char atom[MAXATOMLEN_UTF8];
    erlang_pid from;
    if (ei_decode_version(msg, &i, &ver) || ei_decode_tuple_header(msg, &i, &arity) ||
        arity != 2 || ei_decode_atom(msg, &i, atom) || strcmp(atom, "ping") ||
        ei_decode_pid(msg, &i, &from))
        return CNB_CONTINUE; /* anything else is ignored, as a gen_server would */
    ei_x_buff x;
    int e = ei_x_new_with_version(&x);
    e |= ei_x_encode_tuple_header(&x, 2);
    e |= ei_x_encode_atom(&x, "pong");
    e |= ei_x_encode_pid(&x, cnb_self(self));
    int rc = e ? CNB_ENOMEM
               : cnb_send(cnb_proc_node(self), cnb_self(self), &from, x.buff, (size_t)x.index);
    ei_x_free(&x);
    return rc < 0 ? rc : CNB_CONTINUE;
}

static const cnb_worker_ops_t echo_ops = {
    .handle_call = echo_call,
    .handle_info = echo_info,
};

/* ------------------------------------------------------------------ cache */

typedef struct cache {
    char *content; /* the Content term, with version byte */
    size_t len;
    long ttl_ms;
    ei_x_buff key; /* {cache, MediaId}: its name in :global and the registry */
} cache_t;

static int cache_init(cnb_proc_t *self, void *arg, void **state)
{
    cache_t *c = arg;
    *state = c;
    /* In the node's registry too, so BEAM code on this host finds it with
     * one lookup; the value is the content. */
    if (demo_reg && c->key.buff)
        cnb_registry_register_term(demo_reg, cnb_self(self), c->key.buff, (size_t)c->key.index,
                                   c->content, c->len);
    if (c->ttl_ms > 0) {
        char m[32];
        int i = 0;
        ei_encode_version(m, &i);
        ei_encode_atom(m, &i, "expire");
        return cnb_send_after(cnb_proc_node(self), (unsigned)c->ttl_ms, cnb_self(self), m,
                              (size_t)i, NULL);
    }
    return 0;
}

static int cache_call(cnb_proc_t *self, void *state, const char *req, size_t len,
                      const cnb_from_t *from, ei_x_buff *reply)
{
    (void)self;
    (void)from;
    (void)len;
    cache_t *c = state;
    int i = 0, ver;
    char atom[MAXATOMLEN_UTF8];
    if (ei_decode_version(req, &i, &ver) || ei_decode_atom(req, &i, atom))
        return error_reply(reply, "badarg");
    if (!strcmp(atom, "get")) {
        int e = ei_x_encode_tuple_header(reply, 2);
        e |= ei_x_encode_atom(reply, "ok");
        e |= ei_x_append_buf(reply, c->content + 1, (int)c->len - 1);
        return replied(e, CNB_REPLY);
    }
    if (!strcmp(atom, "stop")) /* reason normal; the reply goes out first */
        return replied(ei_x_encode_atom(reply, "ok"), CNB_STOP);
    if (!strcmp(atom, "crash")) /* a callback error: the worker exits, links fire */
        return CNB_EINVAL;
    return error_reply(reply, "unknown_call");
}

static int cache_info(cnb_proc_t *self, void *state, const char *msg, size_t len)
{
    (void)self;
    (void)state;
    int i = 0, ver;
    char atom[MAXATOMLEN_UTF8];
    (void)len;
    if (!ei_decode_version(msg, &i, &ver) && !ei_decode_atom(msg, &i, atom) &&
        !strcmp(atom, "expire"))
        return CNB_STOP;
    return CNB_CONTINUE;
}

static void cache_terminate(cnb_proc_t *self, void *state, const char *reason, size_t len)
{
    (void)self;
    (void)reason;
    (void)len;
    cache_t *c = state;
    if (demo_reg && c->key.buff)
        cnb_registry_unregister_term(demo_reg, cnb_self(self), c->key.buff, (size_t)c->key.index);
    if (c->key.buff)
        ei_x_free(&c->key);
    free(c->content);
    free(c);
}

static int cache_status(cnb_proc_t *self, void *state, ei_x_buff *out)
{
    (void)self;
    cache_t *c = state;
    int e = ei_x_encode_tuple_header(out, 2);
    e |= ei_x_encode_atom(out, "cache");
    e |= ei_x_append_buf(out, c->content + 1, (int)c->len - 1);
    return e ? CNB_ENOMEM : 0;
}

static const cnb_worker_ops_t cache_ops = {
    .init = cache_init,
    .handle_call = cache_call,
    .handle_info = cache_info,
    .terminate = cache_terminate,
    .format_status = cache_status,
};

/* ------------------------------------------------------------------ cache_worker */
/* The cache worker as a worker type, for BEAM supervisors: started by
 * cnode_bridge:start_link(C, cache_worker, [MediaId, Content]) (or any remote
 * spawn of cache_worker:start/2). Its init takes {cache, MediaId} in :global,
 * as a gen_server started with {global, {cache, MediaId}} does: a name taken
 * fails the start with {already_started, Owner}. */

/* {already_started, Owner} as the worker's reason (the start's error). */
static void reason_already_started(cnb_proc_t *self, const erlang_pid *owner)
{
    ei_x_buff r;
    int e = ei_x_new_with_version(&r);
    e = e || ei_x_encode_tuple_header(&r, 2) || ei_x_encode_atom(&r, "already_started") ||
        ei_x_encode_pid(&r, owner);
    if (!e)
        cnb_proc_set_reason(self, r.buff, (size_t)r.index);
    ei_x_free(&r);
}

static int cache_type_init(cnb_proc_t *self, void *arg, void **state)
{
    const cnb_spawn_args_t *a = arg;
    cnb_node_t *n = cnb_proc_node(self);
    int i = 0, ver, len;
    if (a->argc != 2 || ei_decode_version(a->args, &i, &ver) ||
        ei_decode_list_header(a->args, &i, &len))
        return CNB_EINVAL;
    int id0 = i;
    if (ei_skip_term(a->args, &i))
        return CNB_EINVAL;
    int c0 = i;
    if (ei_skip_term(a->args, &i))
        return CNB_EINVAL;
    int c1 = i;
    cache_t *c = calloc(1, sizeof(*c));
    int rc = CNB_ENOMEM;
    if (!c || !(c->content = malloc((size_t)(c1 - c0) + 1)) || ei_x_new_with_version(&c->key) ||
        ei_x_encode_tuple_header(&c->key, 2) || ei_x_encode_atom(&c->key, "cache") ||
        ei_x_append_buf(&c->key, a->args + id0, c0 - id0))
        goto fail;
    int v = 0;
    ei_encode_version(c->content, &v);
    memcpy(c->content + v, a->args + c0, (size_t)(c1 - c0));
    c->len = (size_t)(c1 - c0) + (size_t)v;
    erlang_pid owner;
    rc = cnb_global_register(n, c->key.buff, (size_t)c->key.index, cnb_self(self),
                             CNB_GLOBAL_RANDOM_EXIT, 5000, &owner);
    if (rc == CNB_EEXIST)
        reason_already_started(self, &owner);
    if (rc)
        goto fail;
    return cache_init(self, c, state);
fail:
    if (c) {
        ei_x_free(&c->key);
        free(c->content);
    }
    free(c);
    return rc;
}

static const cnb_worker_ops_t cache_type_ops = {
    .init = cache_type_init,
    .handle_call = cache_call,
    .handle_info = cache_info,
    .terminate = cache_terminate,
    .format_status = cache_status,
};

/* ------------------------------------------------------------------ cache_sup */

static int already_started(ei_x_buff *reply, const erlang_pid *owner)
{
    int e = ei_x_encode_tuple_header(reply, 2);
    e |= ei_x_encode_atom(reply, "error");
    e |= ei_x_encode_tuple_header(reply, 2);
    e |= ei_x_encode_atom(reply, "already_started");
    e |= ei_x_encode_pid(reply, owner);
    return replied(e, CNB_REPLY);
}

/* A cache worker for the content at req[c0, c1), named gname, its pid into
 * *pid. Returns NULL, or the error atom for the reply (nothing left
 * behind): enomem, spawn_failed. */
static const char *start_cache(cnb_node_t *n, const char *req, int c0, int c1, long ttl,
                               const ei_x_buff *gname, erlang_pid *pid)
{
    cache_t *c = calloc(1, sizeof(*c));
    const char *why = "enomem";
    if (!c || !(c->content = malloc((size_t)(c1 - c0) + 1)) || ei_x_new(&c->key) ||
        ei_x_append_buf(&c->key, gname->buff, gname->index))
        goto fail;
    int v = 0;
    ei_encode_version(c->content, &v);
    memcpy(c->content + v, req + c0, (size_t)(c1 - c0));
    c->len = (size_t)(c1 - c0) + (size_t)v;
    c->ttl_ms = ttl;
    if (!cnb_spawn(n, &cache_ops, c, NULL, pid))
        return NULL;
    why = "spawn_failed";
fail:
    if (c) {
        ei_x_free(&c->key);
        free(c->content);
    }
    free(c);
    return why;
}

static int sup_call(cnb_proc_t *self, void *state, const char *req, size_t len,
                    const cnb_from_t *from, ei_x_buff *reply)
{
    (void)state;
    (void)from;
    (void)len;
    int i = 0, ver, arity;
    char atom[MAXATOMLEN_UTF8];
    if (ei_decode_version(req, &i, &ver) || ei_decode_tuple_header(req, &i, &arity) ||
        (arity != 3 && arity != 4) || ei_decode_atom(req, &i, atom) || strcmp(atom, "start"))
        return error_reply(reply, "badarg");
    int id0 = i;
    if (ei_skip_term(req, &i)) /* MediaId: any term */
        return error_reply(reply, "badarg");
    int c0 = i;
    long ttl = 0;
    if (ei_skip_term(req, &i))
        return error_reply(reply, "badarg");
    int c1 = i;
    if (arity == 4 && (ei_decode_long(req, &i, &ttl) || ttl < 0))
        return error_reply(reply, "badarg");
    /* The global name {cache, MediaId}: a live owner wins. */
    ei_x_buff gname;
    int e = ei_x_new_with_version(&gname);
    e |= ei_x_encode_tuple_header(&gname, 2);
    e |= ei_x_encode_atom(&gname, "cache");
    e |= ei_x_append_buf(&gname, req + id0, c0 - id0);
    cnb_node_t *n = cnb_proc_node(self);
    erlang_pid owner, pid;
    const char *why = e ? "enomem" : NULL;
    if (!why && cnb_global_whereis(n, gname.buff, (size_t)gname.index, &owner, 5000) == 0) {
        ei_x_free(&gname);
        return already_started(reply, &owner);
    }
    if (why || (why = start_cache(n, req, c0, c1, ttl, &gname, &pid))) {
        ei_x_free(&gname);
        return error_reply(reply, why);
    }
    int rc = cnb_global_register(n, gname.buff, (size_t)gname.index, &pid,
                                 CNB_GLOBAL_RANDOM_EXIT, 5000, &owner);
    ei_x_free(&gname);
    if (rc == CNB_EEXIST) {
        /* Someone registered it meanwhile: this worker goes, theirs stays. */
        char r[32];
        int k = 0;
        ei_encode_version(r, &k);
        ei_encode_atom(r, &k, "shutdown");
        cnb_exit(n, cnb_self(self), &pid, r, (size_t)k);
        return already_started(reply, &owner);
    }
    if (rc)
        cnb_node_log(n, CNB_LOG_WARNING, "cache worker started without a global name: %s",
                     cnb_strerror(rc));
    return ok_pid(reply, &pid);
}

static const cnb_worker_ops_t sup_ops = {
    .handle_call = sup_call,
};

/* ------------------------------------------------------------------ probe */
/* A worker that does what it is asked, for tests and for exploring from a
 * shell: gen_server:call({probe, C}, Request) with Request one of
 *   spawn                      -> {ok, Pid} of a new (unnamed) probe
 *   {subscribe, Pid}           every later info message M goes to Pid as
 *                              {probe_info, Self, M}
 *   {link, Pid} | {unlink, Pid} | {trap_exit, Bool}          -> ok
 *   {monitor, Pid} | {monitor, Name, Node}                   -> {ok, Ref}
 *   {demonitor, Ref}                                         -> ok
 *   {exit, Pid, Reason}        exit(Pid, Reason) from the probe -> ok
 *   {call, Pid, Req, Ms} | {call, Name, Node, Req, Ms}
 *                              gen_server:call from C -> {ok, Reply} |
 *                              {error, timeout | noproc | noconnection, Detail}
 *   {rpc, Node, M, F, Args, Ms} -> {ok, Result} | {error, ...}
 *   {reply_after, Ms, Term}    replies Term after Ms (a late reply)
 *   {busy, Ms}                 holds its worker thread for Ms (at most 10 s;
 *                              signals to it queue meanwhile) -> ok
 *   {global_register, Name, random_exit | random_notify | notify_all}
 *                              registers the probe in :global -> yes | no
 *   {global_whereis, Name}     -> Pid | undefined
 *   {global_unregister, Name}  -> ok
 *   global_names               -> global:registered_names()
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

static void probe_terminate(cnb_proc_t *self, void *state, const char *r, size_t len)
{
    (void)self;
    (void)r;
    (void)len;
    probe_t *p = state;
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
                                                     : "failed");
    if (r->buff && r->index > 1)
        e |= ei_x_append_buf(reply, r->buff + 1, r->index - 1);
    else
        e |= ei_x_encode_atom(reply, "undefined");
    return replied(e, CNB_REPLY);
}

static const cnb_worker_ops_t probe_ops;

static int p_spawn(probe_req_t *q)
{
    erlang_pid pid;
    int rc = cnb_spawn(q->n, &probe_ops, NULL, NULL, &pid);
    return rc ? rc : ok_pid(q->reply, &pid);
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

static int p_global_register(probe_req_t *q)
{
    ei_x_buff nm;
    char how[MAXATOMLEN_UTF8];
    if (next_term(q, &nm))
        return error_reply(q->reply, "badarg");
    if (ei_decode_atom(q->req, &q->i, how)) {
        ei_x_free(&nm);
        return error_reply(q->reply, "badarg");
    }
    int resolve = !strcmp(how, "random_notify") ? CNB_GLOBAL_RANDOM_NOTIFY
                  : !strcmp(how, "notify_all")  ? CNB_GLOBAL_NOTIFY_ALL
                                                : CNB_GLOBAL_RANDOM_EXIT;
    int rc = cnb_global_register(q->n, nm.buff, (size_t)nm.index, cnb_self(q->self), resolve,
                                 5000, NULL);
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
    {"global_whereis", 2, p_global_whereis},
    {"global_unregister", 2, p_global_unregister},
    {"global_names", 0, p_global_names},
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
    ei_x_buff x;
    int e = ei_x_new_with_version(&x);
    e |= ei_x_encode_tuple_header(&x, 3);
    e |= ei_x_encode_atom(&x, "probe_info");
    e |= ei_x_encode_pid(&x, cnb_self(self));
    e |= ei_x_append_buf(&x, msg + 1, (int)len - 1);
    if (!e)
        cnb_send(n, cnb_self(self), st->sub, x.buff, (size_t)x.index);
    ei_x_free(&x);
    return e ? CNB_ENOMEM : CNB_CONTINUE;
}

static const cnb_worker_ops_t probe_ops = {
    .init = probe_init,
    .handle_call = probe_call,
    .handle_info = probe_info,
    .terminate = probe_terminate,
};

int cnb_demo_start(cnb_node_t *node, struct cnb_registry *reg)
{
    demo_reg = reg;
    erlang_pid pid;
    cnb_spawn_opts_t o = {.name = "echo"};
    int rc = cnb_spawn(node, &echo_ops, NULL, &o, &pid);
    if (rc)
        return rc;
    o.name = "cache_sup";
    if ((rc = cnb_spawn(node, &sup_ops, NULL, &o, &pid)))
        return rc;
    o.name = "probe";
    if ((rc = cnb_spawn(node, &probe_ops, NULL, &o, &pid)))
        return rc;
    return cnb_register_type(node, "cache_worker", &cache_type_ops);
}
