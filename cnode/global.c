/* global.c: :global names for C workers. Hidden, run through `global` on a
 * connected Erlang node with rex (cnb_rpc): register/re_register with a
 * resolver chosen as {global, random_exit_name} etc. (global accepts {M, F}
 * tuples), unregister, whereis, send, registered_names. Visible (n->vis),
 * through global's protocol itself: the node's registrar (glob_reg.c) and its
 * own name table (glob_table.c), no anchor. The monitors every node's
 * global_name_server then sets on the C pid are ordinary monitors of the
 * runtime. Tests: tests/integration/global_tests.erl, visible_reg_tests.erl. */
#include <stdlib.h>
#include <string.h>

#include "glob_table.h"
#include "node_int.h"
#include "node_rt.h"

#define MAX_TRY 64

/* The nodes to try, anchors first, each once. Returns how many. */
static int candidates(cnb_node_t *n, char (*out)[MAXATOMLEN_UTF8], int max)
{
    int k = cnb_node_anchors(n, out, max);
    if (k > max)
        k = max;
    char (*conn)[MAXATOMLEN_UTF8] = malloc((size_t)max * sizeof(*conn));
    if (!conn)
        return k;
    int c = cnb_node_connected(n, conn, max);
    for (int i = 0; i < c && i < max && k < max; i++) {
        int dup = 0;
        for (int j = 0; j < k; j++)
            if (!strcmp(out[j], conn[i]))
                dup = 1;
        if (!dup)
            snprintf(out[k++], MAXATOMLEN_UTF8, "%s", conn[i]);
    }
    free(conn);
    return k;
}

/* rpc global:Fun(Args...) on the first node that answers. args: the ETF of
 * the argument list; enc: its encoders' results OR-ed (nonzero: out of
 * memory, nothing sent). *reply is always left for ei_x_free (on an error, an
 * empty buffer or none). */
static int global_rpc(cnb_node_t *n, const char *fun, ei_x_buff *args, int enc,
                      unsigned timeout_ms, ei_x_buff *reply)
{
    memset(reply, 0, sizeof(*reply));
    if (enc)
        return CNB_ENOMEM;
    char (*nodes)[MAXATOMLEN_UTF8] = malloc(MAX_TRY * sizeof(*nodes));
    if (!nodes)
        return CNB_ENOMEM;
    /* Nobody to ask yet (the anchors' connections still being made, say just
     * after cnb_node_keep_connected): wait for a connection, within the
     * timeout. With one up already, go on at once, as before: an anchor that
     * is down must not delay asking the nodes that are there. */
    cnb_node_wait_connected(n, NULL, timeout_ms);
    int k = candidates(n, nodes, MAX_TRY);
    int rc = CNB_ENOCONN;
    for (int i = 0; i < k; i++) {
        rc = cnb_rpc(n, nodes[i], "global", fun, args->buff, (size_t)args->index, timeout_ms,
                     reply);
        if (rc == 0) {
            /* {badrpc, _}: that node could not run it; try another. */
            int j = 0, ver, arity;
            char atom[MAXATOMLEN_UTF8];
            if (!ei_decode_version(reply->buff, &j, &ver) &&
                !ei_decode_tuple_header(reply->buff, &j, &arity) && arity == 2 &&
                !ei_decode_atom(reply->buff, &j, atom) && !strcmp(atom, "badrpc")) {
                ei_x_free(reply);
                rc = CNB_ENOCONN;
                continue;
            }
            break;
        }
        ei_x_free(reply);
        cnb__log(n, CNB_LOG_DEBUG, "global:%s through %s failed: %s", fun, nodes[i],
                 cnb_strerror(rc));
        rc = CNB_ENOCONN;
    }
    free(nodes);
    if (rc && ei_x_new_with_version(reply))
        memset(reply, 0, sizeof(*reply)); /* ei_x_free takes it as it is */
    return rc;
}

static int valid_term(const char *t, size_t len)
{
    return t && len >= 2 && (unsigned char)t[0] == 131;
}

/* {global, Method}; returns nonzero when an encoder failed. */
static int put_method(ei_x_buff *x, int resolve)
{
    return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "global") ||
           ei_x_encode_atom(x, resolve == CNB_GLOBAL_RANDOM_NOTIFY ? "random_notify_name"
                               : resolve == CNB_GLOBAL_NOTIFY_ALL  ? "notify_all_name"
                                                                   : "random_exit_name");
}

static int reply_atom_is(const ei_x_buff *r, const char *atom)
{
    int j = 0, ver;
    char a[MAXATOMLEN_UTF8];
    return !ei_decode_version(r->buff, &j, &ver) && !ei_decode_atom(r->buff, &j, a) &&
           !strcmp(a, atom);
}

static int name_call(cnb_node_t *n, const char *fun, const char *name, size_t len,
                     const erlang_pid *pid, int with_method, int resolve, unsigned timeout_ms,
                     ei_x_buff *reply)
{
    ei_x_buff a;
    int e = ei_x_new_with_version(&a);
    e |= ei_x_encode_list_header(&a, 1 + (pid != NULL) + (with_method != 0));
    e |= ei_x_append_buf(&a, name + 1, (int)len - 1);
    if (pid)
        e |= ei_x_encode_pid(&a, pid);
    if (with_method)
        e |= put_method(&a, resolve);
    e |= ei_x_encode_empty_list(&a);
    int rc = global_rpc(n, fun, &a, e, timeout_ms, reply);
    ei_x_free(&a);
    return rc;
}

int cnb_global_whereis(cnb_node_t *n, const char *name, size_t len, erlang_pid *pid,
                       unsigned timeout_ms)
{
    if (!valid_term(name, len))
        return CNB_EINVAL;
    if (n->vis) /* visible: our own copy of the name table */
        return cnb__visible_whereis(n, name, len, pid);
    ei_x_buff r;
    int rc = name_call(n, "whereis_name", name, len, NULL, 0, 0, timeout_ms, &r);
    if (!rc) {
        int j = 0, ver;
        erlang_pid p;
        if (!ei_decode_version(r.buff, &j, &ver) && !ei_decode_pid(r.buff, &j, &p)) {
            if (pid)
                *pid = p;
        } else {
            rc = CNB_ENOENT;
        }
    }
    ei_x_free(&r);
    return rc;
}

/* Pids compare equal by node, number, serial and creation. */
static int same_pid(const erlang_pid *a, const erlang_pid *b)
{
    return a->num == b->num && a->serial == b->serial && a->creation == b->creation &&
           !strcmp(a->node, b->node);
}

int cnb_global_register(cnb_node_t *n, const char *name, size_t len, const erlang_pid *pid,
                        int resolve, unsigned timeout_ms, erlang_pid *owner)
{
    if (!valid_term(name, len) || !pid)
        return CNB_EINVAL;
    ei_x_buff r = {0};
    int rc = n->greg ? cnb__greg_run(n, CNB__GREG_REGISTER, name, len, pid, resolve, timeout_ms,
                                     owner)
                     : name_call(n, "register_name", name, len, pid, 1, resolve, timeout_ms, &r);
    if (!rc && !n->greg && !reply_atom_is(&r, "yes")) {
        /* `no` also comes when the name is already ours: an earlier attempt
         * registered it through an anchor that went away before answering,
         * and this is the retry through another one. That is success. */
        erlang_pid cur;
        int found = !cnb_global_whereis(n, name, len, &cur, timeout_ms);
        if (found && same_pid(&cur, pid)) {
            rc = 0;
        } else {
            rc = CNB_EEXIST;
            if (owner) {
                if (found)
                    *owner = cur;
                else
                    memset(owner, 0, sizeof(*owner));
            }
        }
    }
    ei_x_free(&r);
    if (!rc && cnb__log_on(n, CNB_LOG_INFO)) {
        char t[256];
        cnb__log(n, CNB_LOG_INFO, "global: %s registered for <%u.%u>",
                 cnb__log_term(name, len, t, sizeof(t)), pid->num, pid->serial);
    }
    return rc;
}

int cnb_global_re_register(cnb_node_t *n, const char *name, size_t len, const erlang_pid *pid,
                           int resolve, unsigned timeout_ms)
{
    if (!valid_term(name, len) || !pid)
        return CNB_EINVAL;
    if (n->greg)
        return cnb__greg_run(n, CNB__GREG_RE_REGISTER, name, len, pid, resolve, timeout_ms, NULL);
    ei_x_buff r;
    int rc = name_call(n, "re_register_name", name, len, pid, 1, resolve, timeout_ms, &r);
    ei_x_free(&r);
    return rc;
}

int cnb_global_unregister(cnb_node_t *n, const char *name, size_t len, unsigned timeout_ms)
{
    if (!valid_term(name, len))
        return CNB_EINVAL;
    if (n->greg)
        return cnb__greg_run(n, CNB__GREG_UNREGISTER, name, len, NULL, 0, timeout_ms, NULL);
    ei_x_buff r;
    int rc = name_call(n, "unregister_name", name, len, NULL, 0, 0, timeout_ms, &r);
    ei_x_free(&r);
    return rc;
}

int cnb_global_send(cnb_node_t *n, const char *name, size_t len, const char *msg, size_t mlen,
                    unsigned timeout_ms)
{
    erlang_pid pid;
    int rc = cnb_global_whereis(n, name, len, &pid, timeout_ms);
    return rc ? rc : cnb_send(n, NULL, &pid, msg, mlen);
}

int cnb_global_registered_names(cnb_node_t *n, unsigned timeout_ms, ei_x_buff *out)
{
    if (n->vis) { /* our own copy of the name table */
        int e = ei_x_new_with_version(out) || cnb__gt_encode_names(cnb__visible_gt(n), out);
        return e ? CNB_ENOMEM : 0;
    }
    ei_x_buff a;
    int e = ei_x_new_with_version(&a);
    e |= ei_x_encode_empty_list(&a);
    int rc = global_rpc(n, "registered_names", &a, e, timeout_ms, out);
    ei_x_free(&a);
    return rc;
}
