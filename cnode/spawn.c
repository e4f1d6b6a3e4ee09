/* spawn.c: SPAWN_REQUEST from other nodes. We run no Erlang code, but two
 * things need an answer: `rpc:call(CNode, ...)` in general (erpc spawns
 * erpc:execute_call/4 on the target node), which gets a clean `notsup`, and
 * global's conflict resolution, which calls global:resolve_it/4 on the node of
 * the registered pid -- for a C worker, this node. We carry out global's three
 * resolvers (random_exit_name, random_notify_name, notify_all_name) here, as
 * that code would, and report the result the way erpc expects: SPAWN_REPLY with
 * a fresh pid, then that "process" going DOWN with {Ref, return, Result}.
 * Tests: tests/integration/global_tests.erl (conflicts after a partition). */
#include <stdlib.h>
#include <string.h>

#include "node_int.h"

static void spawn_reply(cnb_node_t *n, const char *peer, const erlang_ref *req,
                        const erlang_pid *to, int flags, const erlang_pid *pid, const char *err)
{
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 5);
    ei_x_encode_long(&x, CNB_OP_SPAWN_REPLY);
    ei_x_encode_ref(&x, req);
    ei_x_encode_pid(&x, to);
    ei_x_encode_long(&x, flags);
    if (pid)
        ei_x_encode_pid(&x, pid);
    else
        ei_x_encode_atom(&x, err);
    cnb_send_ctrl(n, peer, x.buff, (size_t)x.index, NULL, 0);
    ei_x_free(&x);
}

/* Kills or notifies for one global resolver. Result: the winner pid, or none
 * (*winner NULL). Returns 0, or -1 for a resolver we do not know. */
static int resolve(cnb_node_t *n, const char *method, const char *name_t, int name_len,
                   const erlang_pid *p1, const erlang_pid *p2, const erlang_pid **winner)
{
    /* minmax: by node name (atoms compare by their text). */
    const erlang_pid *min = strcmp(p1->node, p2->node) < 0 ? p1 : p2;
    const erlang_pid *max = min == p1 ? p2 : p1;
    ei_x_buff m;
    if (!strcmp(method, "random_exit_name")) {
        char r[16];
        int k = 0;
        ei_encode_version(r, &k);
        ei_encode_atom(r, &k, "kill");
        cnb_exit(n, NULL, max, r, (size_t)k);
        cnb__log(n, CNB_LOG_INFO, "global: name conflict, killing <%u.%u> on %s", max->num,
                 max->serial, max->node);
        *winner = min;
        return 0;
    }
    if (!strcmp(method, "random_notify_name")) {
        ei_x_new_with_version(&m);
        ei_x_encode_tuple_header(&m, 2);
        ei_x_encode_atom(&m, "global_name_conflict");
        ei_x_append_buf(&m, name_t, name_len);
        cnb_send(n, NULL, max, m.buff, (size_t)m.index);
        ei_x_free(&m);
        *winner = min;
        return 0;
    }
    if (!strcmp(method, "notify_all_name")) {
        for (int k = 0; k < 2; k++) {
            const erlang_pid *to = k ? p2 : p1, *other = k ? p1 : p2;
            ei_x_new_with_version(&m);
            ei_x_encode_tuple_header(&m, 3);
            ei_x_encode_atom(&m, "global_name_conflict");
            ei_x_append_buf(&m, name_t, name_len);
            ei_x_encode_pid(&m, other);
            cnb_send(n, NULL, to, m.buff, (size_t)m.index);
            ei_x_free(&m);
        }
        *winner = NULL;
        return 0;
    }
    return -1;
}

void cnb__spawn_request(cnb_node_t *n, const char *peer, const char *ctrl, const char *payload)
{
    /* {29 | 30, ReqId, From, GroupLeader, {M, F, Arity}, Opts [, Token]} */
    int i = 0, arity, ar2;
    long op, fa;
    erlang_ref req;
    erlang_pid from, gl;
    char mod[MAXATOMLEN_UTF8], fun[MAXATOMLEN_UTF8];
    if (ei_decode_tuple_header(ctrl, &i, &arity) || arity < 6 || ei_decode_long(ctrl, &i, &op) ||
        ei_decode_ref(ctrl, &i, &req) || ei_decode_pid(ctrl, &i, &from) ||
        ei_decode_pid(ctrl, &i, &gl) || ei_decode_tuple_header(ctrl, &i, &ar2) || ar2 != 3 ||
        ei_decode_atom(ctrl, &i, mod) || ei_decode_atom(ctrl, &i, fun) ||
        ei_decode_long(ctrl, &i, &fa))
        return;
    /* Only erpc:execute_call(Ref, global, resolve_it, [Method, Name, P1, P2]). */
    if (strcmp(mod, "erpc") || strcmp(fun, "execute_call") || fa != 4 || !payload)
        goto notsup;
    int j = 0, ver, len;
    erlang_ref ref;
    char m2[MAXATOMLEN_UTF8], f2[MAXATOMLEN_UTF8];
    if (ei_decode_version(payload, &j, &ver) || ei_decode_list_header(payload, &j, &len) ||
        len != 4 || ei_decode_ref(payload, &j, &ref) || ei_decode_atom(payload, &j, m2) ||
        ei_decode_atom(payload, &j, f2) || strcmp(m2, "global") || strcmp(f2, "resolve_it") ||
        ei_decode_list_header(payload, &j, &len) || len != 4)
        goto notsup;
    erlang_fun method;
    if (ei_decode_fun(payload, &j, &method))
        goto notsup;
    int is_export = method.type == EI_FUN_EXPORT && !strcmp(method.module, "global");
    char mname[MAXATOMLEN_UTF8];
    snprintf(mname, sizeof(mname), "%s", is_export ? method.u.exprt.func : "");
    free_fun(&method);
    int name_at = j;
    erlang_pid p1, p2;
    if (ei_skip_term(payload, &j))
        goto notsup;
    int name_len = j - name_at;
    if (ei_decode_pid(payload, &j, &p1) || ei_decode_pid(payload, &j, &p2))
        goto notsup;
    const erlang_pid *winner = NULL;
    if (!is_export || resolve(n, mname, payload + name_at, name_len, &p1, &p2, &winner))
        goto notsup;

    /* The "process" that ran it: a fresh pid, spawned and gone at once. */
    erlang_pid self;
    cnb_node_make_pid(n, &self);
    spawn_reply(n, peer, &req, &from, 2 /* monitor set up */, &self, NULL);
    ei_x_buff reason;
    ei_x_new_with_version(&reason);
    ei_x_encode_tuple_header(&reason, 3);
    ei_x_encode_ref(&reason, &ref);
    ei_x_encode_atom(&reason, "return");
    if (winner)
        ei_x_encode_pid(&reason, winner);
    else
        ei_x_encode_atom(&reason, "none");
    cnb__sig_down(n, &self, NULL, &from, &req, reason.buff, (size_t)reason.index);
    ei_x_free(&reason);
    return;
notsup:
    cnb__log(n, CNB_LOG_DEBUG, "refused a spawn request of %s:%s/%ld from %s", mod, fun, fa, peer);
    spawn_reply(n, peer, &req, &from, 0, NULL, "notsup");
}
