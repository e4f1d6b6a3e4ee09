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
 *   cache      gen_server:call(Pid, get) -> {ok, Content};
 *              gen_server:call(Pid, stop) -> ok, and the worker ends normally;
 *              after TtlMs it ends by itself.
 *   probe      a worker that links, monitors, calls, exits... on request
 *              (see below), for tests and exploring.
 * Tests: tests/integration/runtime_tests.erl, tests/integration/exunit/. */
#include <stdlib.h>
#include <string.h>

#include "cnode_bridge.h"
#include "demo.h"
#include "registry_worker.h"

/* The node's key registry (NULL: none), set by cnb_demo_start. */
static struct cnb_registry *demo_reg;

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
            ei_x_encode_empty_list(reply);
        return CNB_REPLY;
    }
    (void)self;
    ei_x_append_buf(reply, req + 1, (int)len - 1);
    return CNB_REPLY;
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
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "pong");
    ei_x_encode_pid(&x, cnb_self(self));
    int rc = cnb_send(cnb_proc_node(self), cnb_self(self), &from, x.buff, (size_t)x.index);
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
    if (ei_decode_version(req, &i, &ver) || ei_decode_atom(req, &i, atom)) {
        ei_x_encode_tuple_header(reply, 2);
        ei_x_encode_atom(reply, "error");
        ei_x_encode_atom(reply, "badarg");
        return CNB_REPLY;
    }
    if (!strcmp(atom, "get")) {
        ei_x_encode_tuple_header(reply, 2);
        ei_x_encode_atom(reply, "ok");
        ei_x_append_buf(reply, c->content + 1, (int)c->len - 1);
        return CNB_REPLY;
    }
    if (!strcmp(atom, "stop")) {
        ei_x_encode_atom(reply, "ok");
        return CNB_STOP; /* reason normal; the reply goes out first */
    }
    if (!strcmp(atom, "crash")) /* a callback error: the worker exits, links fire */
        return CNB_EINVAL;
    ei_x_encode_tuple_header(reply, 2);
    ei_x_encode_atom(reply, "error");
    ei_x_encode_atom(reply, "unknown_call");
    return CNB_REPLY;
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
    ei_x_encode_tuple_header(out, 2);
    ei_x_encode_atom(out, "cache");
    ei_x_append_buf(out, c->content + 1, (int)c->len - 1);
    return 0;
}

static const cnb_worker_ops_t cache_ops = {
    .init = cache_init,
    .handle_call = cache_call,
    .handle_info = cache_info,
    .terminate = cache_terminate,
    .format_status = cache_status,
};

/* ------------------------------------------------------------------ cache_sup */

static void error_reply(ei_x_buff *reply, const char *why)
{
    ei_x_encode_tuple_header(reply, 2);
    ei_x_encode_atom(reply, "error");
    ei_x_encode_atom(reply, why);
}

static void already_started(ei_x_buff *reply, const erlang_pid *owner)
{
    ei_x_encode_tuple_header(reply, 2);
    ei_x_encode_atom(reply, "error");
    ei_x_encode_tuple_header(reply, 2);
    ei_x_encode_atom(reply, "already_started");
    ei_x_encode_pid(reply, owner);
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
        (arity != 3 && arity != 4) || ei_decode_atom(req, &i, atom) || strcmp(atom, "start")) {
        error_reply(reply, "badarg");
        return CNB_REPLY;
    }
    int id0 = i;
    if (ei_skip_term(req, &i)) { /* MediaId: any term */
        error_reply(reply, "badarg");
        return CNB_REPLY;
    }
    int c0 = i;
    long ttl = 0;
    if (ei_skip_term(req, &i)) {
        error_reply(reply, "badarg");
        return CNB_REPLY;
    }
    int c1 = i;
    if (arity == 4 && (ei_decode_long(req, &i, &ttl) || ttl < 0)) {
        error_reply(reply, "badarg");
        return CNB_REPLY;
    }
    /* The global name {cache, MediaId}: a live owner wins. */
    ei_x_buff gname;
    ei_x_new_with_version(&gname);
    ei_x_encode_tuple_header(&gname, 2);
    ei_x_encode_atom(&gname, "cache");
    ei_x_append_buf(&gname, req + id0, c0 - id0);
    cnb_node_t *n = cnb_proc_node(self);
    erlang_pid owner;
    if (cnb_global_whereis(n, gname.buff, (size_t)gname.index, &owner, 5000) == 0) {
        already_started(reply, &owner);
        ei_x_free(&gname);
        return CNB_REPLY;
    }
    cache_t *c = calloc(1, sizeof(*c));
    if (!c || !(c->content = malloc((size_t)(c1 - c0) + 1))) {
        free(c);
        ei_x_free(&gname);
        error_reply(reply, "enomem");
        return CNB_REPLY;
    }
    c->content[0] = (char)131;
    memcpy(c->content + 1, req + c0, (size_t)(c1 - c0));
    c->len = (size_t)(c1 - c0) + 1;
    c->ttl_ms = ttl;
    ei_x_new(&c->key);
    ei_x_append_buf(&c->key, gname.buff, gname.index);
    erlang_pid pid;
    int rc = cnb_spawn(n, &cache_ops, c, NULL, &pid);
    if (rc) {
        ei_x_free(&c->key);
        free(c->content);
        free(c);
        ei_x_free(&gname);
        error_reply(reply, "spawn_failed");
        return CNB_REPLY;
    }
    rc = cnb_global_register(n, gname.buff, (size_t)gname.index, &pid, CNB_GLOBAL_RANDOM_EXIT,
                             5000, &owner);
    ei_x_free(&gname);
    if (rc == CNB_EEXIST) {
        /* Someone registered it meanwhile: this worker goes, theirs stays. */
        char r[32];
        int k = 0;
        ei_encode_version(r, &k);
        ei_encode_atom(r, &k, "shutdown");
        cnb_exit(n, cnb_self(self), &pid, r, (size_t)k);
        already_started(reply, &owner);
        return CNB_REPLY;
    }
    if (rc)
        cnb_node_log(n, CNB_LOG_WARNING, "cache worker started without a global name: %s",
                     cnb_strerror(rc));
    ei_x_encode_tuple_header(reply, 2);
    ei_x_encode_atom(reply, "ok");
    ei_x_encode_pid(reply, &pid);
    return CNB_REPLY;
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

static void ok_ref(ei_x_buff *reply, const erlang_ref *ref)
{
    ei_x_encode_tuple_header(reply, 2);
    ei_x_encode_atom(reply, "ok");
    ei_x_encode_ref(reply, ref);
}

/* Copies the term at req[*i] (advancing *i) into a fresh versioned buffer. */
static int term_at(const char *req, int *i, ei_x_buff *out)
{
    int s0 = *i;
    if (ei_skip_term(req, i))
        return -1;
    ei_x_new_with_version(out);
    ei_x_append_buf(out, req + s0, *i - s0);
    return 0;
}

static void call_result(ei_x_buff *reply, int rc, ei_x_buff *r)
{
    if (rc == 0) {
        ei_x_encode_tuple_header(reply, 2);
        ei_x_encode_atom(reply, "ok");
        ei_x_append_buf(reply, r->buff + 1, r->index - 1);
    } else {
        ei_x_encode_tuple_header(reply, 3);
        ei_x_encode_atom(reply, "error");
        ei_x_encode_atom(reply, rc == CNB_ETIMEDOUT ? "timeout"
                                : rc == CNB_ENOPROC ? "noproc"
                                : rc == CNB_ENOCONN ? "noconnection"
                                                    : "failed");
        if (r->index > 1)
            ei_x_append_buf(reply, r->buff + 1, r->index - 1);
        else
            ei_x_encode_atom(reply, "undefined");
    }
}

static const cnb_worker_ops_t probe_ops;

static int probe_call(cnb_proc_t *self, void *state, const char *req, size_t len,
                      const cnb_from_t *from, ei_x_buff *reply)
{
    (void)len;
    probe_t *st = state;
    cnb_node_t *n = cnb_proc_node(self);
    int i = 0, ver, arity = 0, type, size;
    char op[MAXATOMLEN_UTF8];
    ei_decode_version(req, &i, &ver);
    ei_get_type(req, &i, &type, &size);
    if (type == ERL_ATOM_EXT || type == ERL_SMALL_ATOM_UTF8_EXT || type == ERL_ATOM_UTF8_EXT ||
        type == ERL_SMALL_ATOM_EXT) {
        ei_decode_atom(req, &i, op);
    } else if (ei_decode_tuple_header(req, &i, &arity) || arity < 1 || ei_decode_atom(req, &i, op)) {
        error_reply(reply, "badarg");
        return CNB_REPLY;
    }
    erlang_pid pid;
    erlang_ref ref;
    if (!strcmp(op, "spawn")) {
        int rc = cnb_spawn(n, &probe_ops, NULL, NULL, &pid);
        if (rc)
            return rc;
        ei_x_encode_tuple_header(reply, 2);
        ei_x_encode_atom(reply, "ok");
        ei_x_encode_pid(reply, &pid);
        return CNB_REPLY;
    }
    if (!strcmp(op, "crash"))
        return CNB_EINVAL;
    if (arity == 2 && !strcmp(op, "subscribe") && !ei_decode_pid(req, &i, &pid)) {
        if (!st->sub && !(st->sub = malloc(sizeof(*st->sub))))
            return CNB_ENOMEM;
        *st->sub = pid;
    } else if (arity == 2 && !strcmp(op, "link") && !ei_decode_pid(req, &i, &pid)) {
        cnb_link(self, &pid);
    } else if (arity == 2 && !strcmp(op, "unlink") && !ei_decode_pid(req, &i, &pid)) {
        cnb_unlink(self, &pid);
    } else if (arity == 2 && !strcmp(op, "trap_exit")) {
        int b = 0;
        ei_decode_boolean(req, &i, &b);
        cnb_trap_exit(self, b);
    } else if (arity == 2 && !strcmp(op, "monitor") && !ei_decode_pid(req, &i, &pid)) {
        cnb_monitor(self, &pid, &ref);
        ok_ref(reply, &ref);
        return CNB_REPLY;
    } else if (arity == 3 && !strcmp(op, "monitor")) {
        char name[MAXATOMLEN_UTF8], node[MAXATOMLEN_UTF8];
        if (ei_decode_atom(req, &i, name) || ei_decode_atom(req, &i, node)) {
            error_reply(reply, "badarg");
            return CNB_REPLY;
        }
        cnb_monitor_name(self, name, node, &ref);
        ok_ref(reply, &ref);
        return CNB_REPLY;
    } else if (arity == 2 && !strcmp(op, "demonitor") && !ei_decode_ref(req, &i, &ref)) {
        cnb_demonitor(self, &ref);
    } else if (arity == 3 && !strcmp(op, "exit") && !ei_decode_pid(req, &i, &pid)) {
        ei_x_buff r;
        if (term_at(req, &i, &r)) {
            error_reply(reply, "badarg");
            return CNB_REPLY;
        }
        cnb_exit(n, cnb_self(self), &pid, r.buff, (size_t)r.index);
        ei_x_free(&r);
    } else if ((arity == 4 || arity == 5) && !strcmp(op, "call")) {
        char name[MAXATOMLEN_UTF8], node[MAXATOMLEN_UTF8];
        int by_pid = arity == 4;
        long ms;
        ei_x_buff q, r;
        if ((by_pid ? ei_decode_pid(req, &i, &pid)
                    : (ei_decode_atom(req, &i, name) || ei_decode_atom(req, &i, node))) ||
            term_at(req, &i, &q) || ei_decode_long(req, &i, &ms)) {
            error_reply(reply, "badarg");
            return CNB_REPLY;
        }
        int rc = cnb_call(n, by_pid ? &pid : NULL, by_pid ? NULL : name, by_pid ? NULL : node,
                          q.buff, (size_t)q.index, (unsigned)ms, &r);
        call_result(reply, rc, &r);
        ei_x_free(&q);
        ei_x_free(&r);
        return CNB_REPLY;
    } else if (arity == 6 && !strcmp(op, "rpc")) {
        char node[MAXATOMLEN_UTF8], mod[MAXATOMLEN_UTF8], fun[MAXATOMLEN_UTF8];
        long ms;
        ei_x_buff a, r;
        if (ei_decode_atom(req, &i, node) || ei_decode_atom(req, &i, mod) ||
            ei_decode_atom(req, &i, fun) || term_at(req, &i, &a) || ei_decode_long(req, &i, &ms)) {
            error_reply(reply, "badarg");
            return CNB_REPLY;
        }
        int rc = cnb_rpc(n, node, mod, fun, a.buff, (size_t)a.index, (unsigned)ms, &r);
        call_result(reply, rc, &r);
        ei_x_free(&a);
        ei_x_free(&r);
        return CNB_REPLY;
    } else if (arity == 3 && !strcmp(op, "reply_after")) {
        /* Keep From; a timer message carries it back to us. */
        long ms;
        ei_x_buff t;
        if (ei_decode_long(req, &i, &ms) || term_at(req, &i, &t)) {
            error_reply(reply, "badarg");
            return CNB_REPLY;
        }
        ei_x_buff m;
        ei_x_new_with_version(&m);
        ei_x_encode_tuple_header(&m, 3);
        ei_x_encode_atom(&m, "$probe_reply");
        ei_x_encode_binary(&m, from, sizeof(*from));
        ei_x_append_buf(&m, t.buff + 1, t.index - 1);
        cnb_send_after(n, (unsigned)ms, cnb_self(self), m.buff, (size_t)m.index, NULL);
        ei_x_free(&m);
        ei_x_free(&t);
        return CNB_CONTINUE;
    } else if (arity == 3 && !strcmp(op, "global_register")) {
        ei_x_buff nm;
        char how[MAXATOMLEN_UTF8];
        if (term_at(req, &i, &nm) || ei_decode_atom(req, &i, how)) {
            error_reply(reply, "badarg");
            return CNB_REPLY;
        }
        int resolve = !strcmp(how, "random_notify") ? CNB_GLOBAL_RANDOM_NOTIFY
                      : !strcmp(how, "notify_all")  ? CNB_GLOBAL_NOTIFY_ALL
                                                    : CNB_GLOBAL_RANDOM_EXIT;
        int rc = cnb_global_register(n, nm.buff, (size_t)nm.index, cnb_self(self), resolve, 5000,
                                     NULL);
        ei_x_free(&nm);
        ei_x_encode_atom(reply, rc == 0 ? "yes" : "no");
        return CNB_REPLY;
    } else if (arity == 2 && !strcmp(op, "global_whereis")) {
        ei_x_buff nm;
        if (term_at(req, &i, &nm)) {
            error_reply(reply, "badarg");
            return CNB_REPLY;
        }
        if (cnb_global_whereis(n, nm.buff, (size_t)nm.index, &pid, 5000) == 0)
            ei_x_encode_pid(reply, &pid);
        else
            ei_x_encode_atom(reply, "undefined");
        ei_x_free(&nm);
        return CNB_REPLY;
    } else if (arity == 2 && !strcmp(op, "global_unregister")) {
        ei_x_buff nm;
        if (term_at(req, &i, &nm)) {
            error_reply(reply, "badarg");
            return CNB_REPLY;
        }
        cnb_global_unregister(n, nm.buff, (size_t)nm.index, 5000);
        ei_x_free(&nm);
    } else if (arity == 0 && !strcmp(op, "global_names")) {
        ei_x_buff r;
        if (cnb_global_registered_names(n, 5000, &r) == 0)
            ei_x_append_buf(reply, r.buff + 1, r.index - 1);
        else
            error_reply(reply, "noconnection");
        ei_x_free(&r);
        return CNB_REPLY;
    } else if (arity == 2 && !strcmp(op, "count")) {
        long cnt;
        if (ei_decode_long(req, &i, &cnt) || cnt <= 0) {
            error_reply(reply, "badarg");
            return CNB_REPLY;
        }
        if (!st->count_from && !(st->count_from = malloc(sizeof(*st->count_from))))
            return CNB_ENOMEM;
        st->count_left = cnt;
        *st->count_from = *from;
        return CNB_CONTINUE;
    } else if (arity == 2 && !strcmp(op, "stop")) {
        ei_x_buff r;
        if (term_at(req, &i, &r)) {
            error_reply(reply, "badarg");
            return CNB_REPLY;
        }
        cnb_proc_set_reason(self, r.buff, (size_t)r.index);
        ei_x_free(&r);
        ei_x_encode_atom(reply, "ok");
        return CNB_STOP;
    } else {
        error_reply(reply, "badarg");
        return CNB_REPLY;
    }
    ei_x_encode_atom(reply, "ok");
    return CNB_REPLY;
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
        ei_x_new_with_version(&r);
        ei_x_append_buf(&r, msg + t, (int)len - t);
        cnb_reply(n, &from, r.buff, (size_t)r.index);
        ei_x_free(&r);
        return CNB_CONTINUE;
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
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_atom(&x, "probe_info");
    ei_x_encode_pid(&x, cnb_self(self));
    ei_x_append_buf(&x, msg + 1, (int)len - 1);
    cnb_send(n, cnb_self(self), st->sub, x.buff, (size_t)x.index);
    ei_x_free(&x);
    return CNB_CONTINUE;
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
    return cnb_spawn(node, &probe_ops, NULL, &o, &pid);
}
