/* demo.c: the workers `cnode --demo` runs, written against the public API
 * only, as a user's service would be:
 *   echo       gen_server:call({echo, C}, Req) -> Req;
 *              {echo, C} ! {ping, From} -> From ! {pong, EchoPid};
 *              gen_server:call({echo, C}, {lookup, Key}) -> what the local
 *              registry holds for Key ([] until the registry is attached;
 *              {error, Reason} when it cannot say, e.g. corrupt: an entry's
 *              bytes in the segment are no term).
 *   cache_sup  gen_server:call({cache_sup, C}, {start, MediaId, Content[, TtlMs]})
 *              -> {ok, Pid} of a new cache worker, registered in :global as
 *              {cache, MediaId}; {error, {already_started, Pid}} when that
 *              name is taken (Pid: its owner);
 *   cache_worker  a worker type: cnode_bridge:start_link(C, cache_worker,
 *              [MediaId, Content]) starts a cache worker named {cache, MediaId}
 *              in :global (under a BEAM supervisor, say); the name taken:
 *              {error, {already_started, Pid}};
 *   cache      gen_server:call(Pid, get) -> {ok, Content}; on a visible node a
 *              member of the :pg group cache_workers (scope pg);
 *              gen_server:call(Pid, stop) -> ok, and the worker ends normally;
 *              after TtlMs it ends by itself.
 *   probe      a worker that links, monitors, calls, exits... on request
 *              (demo_probe.c), for tests and exploring.
 * Tests: tests/integration/runtime_tests.erl, tests/integration/exunit/. */
#include <stdlib.h>
#include <string.h>

#include "cnode_bridge.h"
#include "demo.h"
#include "demo_int.h"
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
        if (ei_skip_term(req, &i) || !demo_reg)
            return replied(ei_x_encode_empty_list(reply), CNB_REPLY);
        int rc = cnb_registry_encode_lookup(demo_reg, req + k0, (size_t)(i - k0), reply);
        if (rc < 0) /* {error, corrupt}: an entry's bytes are no term */
            return error_reply(reply, cnb_erratom(rc));
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
    /* A visible node: a member of the group cache_workers in scope pg, so
     * pg:get_members(cache_workers) lists it on every node (hidden: CNB_ESTATE,
     * and nothing to do). It leaves when it ends. */
    char g[32];
    int gi = 0;
    ei_encode_version(g, &gi);
    ei_encode_atom(g, &gi, "cache_workers");
    int rc = cnb_pg_join(cnb_proc_node(self), "pg", g, (size_t)gi, cnb_self(self));
    if (rc && rc != CNB_ESTATE)
        cnb_node_log(cnb_proc_node(self), CNB_LOG_WARNING, "cache worker not in pg: %s",
                     cnb_strerror(rc));
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
    /* The global name {cache, MediaId}: a live owner wins. The worker is
     * started first and the name taken for it in one round trip to :global;
     * asking whereis first would cost every start a second one. When the
     * name is taken, cnb_global_register says by whom and this worker goes. */
    ei_x_buff gname;
    int e = ei_x_new_with_version(&gname);
    e |= ei_x_encode_tuple_header(&gname, 2);
    e |= ei_x_encode_atom(&gname, "cache");
    e |= ei_x_append_buf(&gname, req + id0, c0 - id0);
    cnb_node_t *n = cnb_proc_node(self);
    erlang_pid owner, pid;
    const char *why = e ? "enomem" : NULL;
    if (why || (why = start_cache(n, req, c0, c1, ttl, &gname, &pid))) {
        ei_x_free(&gname);
        return error_reply(reply, why);
    }
    int rc = cnb_global_register(n, gname.buff, (size_t)gname.index, &pid,
                                 CNB_GLOBAL_RANDOM_EXIT, 5000, &owner);
    ei_x_free(&gname);
    if (rc == CNB_EEXIST) {
        /* The name is taken: this worker goes, the live owner stays. */
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

int cnb_demo_start(cnb_node_t *node, struct cnb_registry *reg)
{
    demo_reg = reg;
    erlang_pid pid;
    /* Inline (issue 19): echo's callbacks never block (a copy, a registry
     * lookup, a send), so the I/O thread runs it itself when a call comes in:
     * no hand-off to a pool thread and back, the reply leaves in the same
     * loop turn. It is the worker bench_targets' call figures measure. */
    cnb_spawn_opts_t o = {.name = "echo", .run_inline = 1};
    int rc = cnb_spawn(node, &echo_ops, NULL, &o, &pid);
    if (rc)
        return rc;
    o.run_inline = 0; /* the others block: cnb_call, :global, probe's busy */
    o.name = "cache_sup";
    if ((rc = cnb_spawn(node, &sup_ops, NULL, &o, &pid)))
        return rc;
    o.name = "probe";
    if ((rc = cnb_spawn(node, &cnb__demo_probe_ops, NULL, &o, &pid)))
        return rc;
    return cnb_register_type(node, "cache_worker", &cache_type_ops);
}
