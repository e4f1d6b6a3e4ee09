/* demo.c: the workers `cnode --demo` runs, written against the public API
 * only, as a user's service would be:
 *   echo       gen_server:call({echo, C}, Req) -> Req;
 *              {echo, C} ! {ping, From} -> From ! {pong, EchoPid};
 *              gen_server:call({echo, C}, {lookup, Key}) -> what the local
 *              registry holds for Key ([] until the registry is attached).
 *   cache_sup  gen_server:call({cache_sup, C}, {start, MediaId, Content[, TtlMs]})
 *              -> {ok, Pid} of a new cache worker;
 *   cache      gen_server:call(Pid, get) -> {ok, Content};
 *              gen_server:call(Pid, stop) -> ok, and the worker ends normally;
 *              after TtlMs it ends by itself.
 * Tests: tests/integration/runtime_tests.erl, tests/integration/exunit/. */
#include <stdlib.h>
#include <string.h>

#include "cnode_bridge.h"
#include "demo.h"

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
        /* The shared registry comes with its own issue; nothing is registered
         * on the C side yet. */
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
} cache_t;

static int cache_init(cnb_proc_t *self, void *arg, void **state)
{
    cache_t *c = arg;
    *state = c;
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
    cache_t *c = calloc(1, sizeof(*c));
    if (!c || !(c->content = malloc((size_t)(c1 - c0) + 1))) {
        free(c);
        error_reply(reply, "enomem");
        return CNB_REPLY;
    }
    c->content[0] = (char)131;
    memcpy(c->content + 1, req + c0, (size_t)(c1 - c0));
    c->len = (size_t)(c1 - c0) + 1;
    c->ttl_ms = ttl;
    erlang_pid pid;
    int rc = cnb_spawn(cnb_proc_node(self), &cache_ops, c, NULL, &pid);
    if (rc) {
        free(c->content);
        free(c);
        error_reply(reply, "spawn_failed");
        return CNB_REPLY;
    }
    ei_x_encode_tuple_header(reply, 2);
    ei_x_encode_atom(reply, "ok");
    ei_x_encode_pid(reply, &pid);
    return CNB_REPLY;
}

static const cnb_worker_ops_t sup_ops = {
    .handle_call = sup_call,
};

int cnb_demo_start(cnb_node_t *node)
{
    erlang_pid pid;
    cnb_spawn_opts_t o = {.name = "echo"};
    int rc = cnb_spawn(node, &echo_ops, NULL, &o, &pid);
    if (rc)
        return rc;
    o.name = "cache_sup";
    return cnb_spawn(node, &sup_ops, NULL, &o, &pid);
}
