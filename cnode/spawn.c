/* spawn.c: SPAWN_REQUEST from other nodes. We run no Erlang code, so every
 * remote spawn gets a clean `notsup` (rpc:call(CNode, ...) then returns
 * {badrpc, ...}) except a registered worker type's (worker_types.c) and: global's conflict resolution, which after a
 * partition runs rpc:call(node(Pid2), global, resolve_it, [Method, Name, Pid,
 * Pid2]) -- erpc spawning erpc:execute_call(Ref, global, resolve_it, Args) --
 * on the node of the registered pid, for a C worker this node. Method may be
 * any fun (register_name/2's default is a fun local to `global`), so we have
 * the requesting node run that very call for us (spawn_relay.c) and answer as
 * erpc expects. Tests: tests/integration/global_resolver_tests.erl. */
#include <stdlib.h>
#include <string.h>

#include "etf_check.h"
#include "node_rt.h"

void cnb__spawn_reply(cnb_node_t *n, const char *peer, const erlang_ref *req,
                      const erlang_pid *to, int flags, const erlang_pid *pid, const char *err)
{
    ei_x_buff x;
    if (!ei_x_new_with_version(&x) && !ei_x_encode_tuple_header(&x, 5) &&
        !ei_x_encode_long(&x, CNB_OP_SPAWN_REPLY) && !ei_x_encode_ref(&x, req) &&
        !ei_x_encode_pid(&x, to) && !ei_x_encode_long(&x, flags) &&
        !(pid ? ei_x_encode_pid(&x, pid) : ei_x_encode_atom(&x, err)))
        cnb_send_ctrl(n, peer, x.buff, (size_t)x.index, NULL, 0);
    else
        cnb__log(n, CNB_LOG_WARNING, "out of memory: the spawn reply to %s was not sent", peer);
    ei_x_free(&x);
}

/* Skips one term at p[*j] with the bounded, iterative checker (ei's skip
 * recurses, and a name comes off the wire). Returns 0 or -1. */
static int skip(const char *p, size_t len, int *j)
{
    long k = (size_t)*j < len ? cnb__etf_skip((const uint8_t *)p + *j, len - (size_t)*j) : -1;
    if (k < 0)
        return -1;
    *j += (int)k;
    return 0;
}

static int atom_is(const char *p, int *j, const char *want)
{
    char a[MAXATOMLEN_UTF8];
    return !ei_decode_atom(p, j, a) && !strcmp(a, want);
}

static int nil_at(const char *p, int *j)
{
    int len;
    return !ei_decode_list_header(p, j, &len) && len == 0;
}

/* Is args (versioned) [Ref, global, resolve_it, [Method, Name, P1, P2]]?
 * Returns 1 and the span of Name, or 0. */
static int resolve_args(const char *args, size_t len, int *name_at, int *name_len)
{
    int j = 0, ver, n;
    erlang_pid p;
    if (ei_decode_version(args, &j, &ver) || ei_decode_list_header(args, &j, &n) || n != 4 ||
        ei_decode_ref(args, &j, NULL) || !atom_is(args, &j, "global") ||
        !atom_is(args, &j, "resolve_it") || ei_decode_list_header(args, &j, &n) || n != 4 ||
        skip(args, len, &j))
        return 0;
    *name_at = j;
    if (skip(args, len, &j))
        return 0;
    *name_len = j - *name_at;
    return !ei_decode_pid(args, &j, &p) && !ei_decode_pid(args, &j, &p) && nil_at(args, &j) &&
           nil_at(args, &j) && (size_t)j == len;
}

void cnb__spawn_request(cnb_node_t *n, const char *peer, const char *ctrl, const char *payload,
                        size_t payload_len)
{
    /* {29 | 30, ReqId, From, GroupLeader, {M, F, Arity}, Opts [, Token]} */
    int i = 0, arity, ar2, name_at = 0, name_len = 0;
    long op, fa;
    erlang_ref req;
    erlang_pid from, gl;
    char mod[MAXATOMLEN_UTF8], fun[MAXATOMLEN_UTF8];
    if (ei_decode_tuple_header(ctrl, &i, &arity) || arity < 6 || ei_decode_long(ctrl, &i, &op) ||
        ei_decode_ref(ctrl, &i, &req) || ei_decode_pid(ctrl, &i, &from) ||
        ei_decode_pid(ctrl, &i, &gl) || ei_decode_tuple_header(ctrl, &i, &ar2) || ar2 != 3 ||
        ei_decode_atom(ctrl, &i, mod) || ei_decode_atom(ctrl, &i, fun) ||
        ei_decode_long(ctrl, &i, &fa)) {
        cnb__log(n, CNB_LOG_WARNING, "malformed spawn request from %s: dropped", peer);
        return;
    }
    if (cnb__types_spawn(n, peer, &req, &from, mod, fun, fa, ctrl, i, payload, payload_len))
        return; /* a registered worker type (worker_types.c) */
    /* erpc:execute_call/4 with global:resolve_it's arguments: relayed. The
     * requester runs `global` (it asked) and is connected (it just did). */
    if (!strcmp(mod, "erpc") && !strcmp(fun, "execute_call") && fa == 4 && payload &&
        resolve_args(payload, payload_len, &name_at, &name_len)) {
        if (strcmp(peer, n->name) &&
            !cnb__relay_start(n, peer, &req, &from, &gl, payload, payload_len,
                              payload + name_at, (size_t)name_len))
            return;
        char text[CNB_NAME_TEXT];
        cnb__name_text(payload + name_at, (size_t)name_len, text, sizeof(text));
        cnb__log(n, CNB_LOG_WARNING,
                 "global: could not relay the resolver for the name conflict on %s from %s: "
                 "refused (notsup)",
                 text, peer);
    } else {
        cnb__log(n, CNB_LOG_DEBUG, "refused a spawn request of %s:%s/%ld from %s", mod, fun, fa,
                 peer);
    }
    cnb__spawn_reply(n, peer, &req, &from, 0, NULL, "notsup");
}
