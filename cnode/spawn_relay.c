/* spawn_relay.c: runs global:resolve_it/4 for a C worker on an Erlang node.
 * When a node asks this one to run erpc:execute_call(Ref, global, resolve_it,
 * [Method, Name, Pid, Pid2]) (see spawn.c), we send that same spawn request,
 * arguments untouched, back to the node that asked, from a fresh pid of ours
 * with a monitor; its SPAWN_REPLY becomes ours (our pid in place of its
 * process), and its DOWN, {Ref, return, Winner} or whatever the process ended
 * with, is forwarded as the DOWN of our "process". So every resolver -- the
 * three of `global`, exported or local funs, any user fun -- runs as the code
 * of `global` runs it, and exit/2 and sends reach the pids from there.
 * Everything here runs on the I/O thread, which owns the table.
 * Tests: tests/integration/global_resolver_tests.erl. */
#include <stdlib.h>
#include <string.h>

#include "etf_check.h"
#include "node_rt.h"

/* More resolvers than this in flight at once is no sane cluster: refused.
 * Per peer too, so that a peer that never answers blocks only itself. */
#define MAX_RELAYS 4096
#define MAX_RELAYS_PER_PEER 1024

struct cnb_relay {
    struct cnb_relay *next;
    char peer[CNB_NAME_MAX]; /* asked us, and runs the resolver */
    erlang_ref req;          /* its request id (and its monitor reference) */
    erlang_pid from;         /* its requesting process */
    erlang_pid self;         /* our "process": From of our request, pid in our reply */
    erlang_ref ref;          /* our request id (and our monitor reference) */
    int replied;             /* SPAWN_REPLY sent to peer */
    char name[CNB_NAME_TEXT];/* the conflicting name, for logs */
};

void cnb__name_text(const char *t, size_t len, char *out, size_t cap)
{
    /* ei's printer recurses; a name this small cannot nest deeply. */
    char *s = NULL;
    int i = 0;
    if (len <= 512 && ei_s_print_term(&s, t, &i) >= 0 && s)
        snprintf(out, cap, "%s", s);
    else
        snprintf(out, cap, "(a term of %zu bytes)", len);
    free(s);
}

int cnb__relay_start(cnb_node_t *n, const char *peer, const erlang_ref *req,
                     const erlang_pid *from, const erlang_pid *gl, const char *args,
                     size_t args_len, const char *name, size_t name_len)
{
    if (n->nrelays >= MAX_RELAYS || strlen(peer) >= CNB_NAME_MAX)
        return CNB_ENOMEM;
    unsigned mine = 0;
    for (const struct cnb_relay *o = n->relays; o; o = o->next)
        mine += !strcmp(o->peer, peer);
    if (mine >= MAX_RELAYS_PER_PEER)
        return CNB_ENOMEM;
    struct cnb_relay *r = calloc(1, sizeof(*r));
    if (!r)
        return CNB_ENOMEM;
    snprintf(r->peer, sizeof(r->peer), "%s", peer);
    r->req = *req;
    r->from = *from;
    cnb_node_make_pid(n, &r->self);
    cnb_node_make_ref(n, &r->ref);
    cnb__name_text(name, name_len, r->name, sizeof(r->name));

    /* {29, Ref, Self, GroupLeader, {erpc, execute_call, 4}, [monitor]}, the
     * arguments as they came. The group leader is the requester's own. */
    ei_x_buff x;
    int rc = CNB_ENOMEM;
    if (ei_x_new_with_version(&x))
        goto fail;
    if (!ei_x_encode_tuple_header(&x, 6) && !ei_x_encode_long(&x, CNB_OP_SPAWN_REQUEST) &&
        !ei_x_encode_ref(&x, &r->ref) && !ei_x_encode_pid(&x, &r->self) &&
        !ei_x_encode_pid(&x, gl) && !ei_x_encode_tuple_header(&x, 3) &&
        !ei_x_encode_atom(&x, "erpc") && !ei_x_encode_atom(&x, "execute_call") &&
        !ei_x_encode_long(&x, 4) && !ei_x_encode_list_header(&x, 1) &&
        !ei_x_encode_atom(&x, "monitor") && !ei_x_encode_empty_list(&x))
        rc = cnb_send_ctrl(n, peer, x.buff, (size_t)x.index, args, args_len);
    ei_x_free(&x);
    if (rc)
        goto fail;
    r->next = n->relays;
    n->relays = r;
    n->nrelays++;
    cnb__log(n, CNB_LOG_DEBUG, "global: %s runs the resolver for the name conflict on %s", peer,
             r->name);
    return 0;
fail:
    free(r);
    return rc;
}

static void unlink_relay(cnb_node_t *n, struct cnb_relay *r)
{
    for (struct cnb_relay **pp = &n->relays; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            n->nrelays--;
            break;
        }
    free(r);
}

static struct cnb_relay *find(cnb_node_t *n, const char *peer, const erlang_ref *ref)
{
    for (struct cnb_relay *r = n->relays; r; r = r->next)
        if (!strcmp(r->peer, peer) && cnb__ref_eq(&r->ref, ref))
            return r;
    return NULL;
}

int cnb__relay_spawn_reply(cnb_node_t *n, const char *peer, const char *ctrl)
{
    /* {31 | 32, ReqId, To, Flags, Result [, Token]}: Result a pid or an atom. */
    int i = 0, arity, type, size;
    long op, flags;
    erlang_ref ref;
    erlang_pid to, pid;
    if (ei_decode_tuple_header(ctrl, &i, &arity) || arity < 5 || ei_decode_long(ctrl, &i, &op) ||
        ei_decode_ref(ctrl, &i, &ref) || ei_decode_pid(ctrl, &i, &to) ||
        ei_decode_long(ctrl, &i, &flags) || ei_get_type(ctrl, &i, &type, &size))
        return 0;
    struct cnb_relay *r = find(n, peer, &ref);
    if (!r || !cnb__pid_eq(&r->self, &to))
        return 0;
    if (type == ERL_PID_EXT || type == ERL_NEW_PID_EXT) {
        if (ei_decode_pid(ctrl, &i, &pid))
            return 1;
        if (!r->replied)
            cnb__spawn_reply(n, r->peer, &r->req, &r->from, 2 /* monitor set up */, &r->self,
                             NULL);
        r->replied = 1;
        return 1;
    }
    char err[MAXATOMLEN_UTF8] = "badarg";
    (void)ei_decode_atom(ctrl, &i, err);
    cnb__log(n, CNB_LOG_WARNING,
             "global: %s refused to run the resolver for the name conflict on %s: %s", peer,
             r->name, err);
    if (!r->replied)
        cnb__spawn_reply(n, r->peer, &r->req, &r->from, 0, NULL, err);
    unlink_relay(n, r);
    return 1;
}

/* Logs a resolver outcome that global cannot use as a winner: anything but
 * {_, return, Pid | none}. global then keeps the pid of the other partition
 * ({'EXIT', _} returned, which rpc:call makes a badrpc, or no return at all)
 * or unregisters the name (any other value). Skips with the bounded checker:
 * the reason came off the wire. */
static void check_outcome(cnb_node_t *n, const struct cnb_relay *r, const char *reason,
                          size_t len)
{
    int j = 0, ver, arity, type, size, drops = 0;
    char a[MAXATOMLEN_UTF8];
    if (!ei_decode_version(reason, &j, &ver) && !ei_decode_tuple_header(reason, &j, &arity) &&
        arity == 3) {
        long k = cnb__etf_skip((const uint8_t *)reason + j, len - (size_t)j); /* the Ref */
        j += k > 0 ? (int)k : 0;
        if (k > 0 && !ei_decode_atom(reason, &j, a) && !strcmp(a, "return") &&
            !ei_get_type(reason, &j, &type, &size)) {
            if (type == ERL_PID_EXT || type == ERL_NEW_PID_EXT)
                return;
            int at = j;
            if (!ei_decode_atom(reason, &j, a) && !strcmp(a, "none"))
                return;
            j = at;
            drops = !(!ei_decode_tuple_header(reason, &j, &arity) && arity == 2 &&
                      !ei_decode_atom(reason, &j, a) && !strcmp(a, "EXIT"));
        }
    }
    char text[CNB_NAME_TEXT];
    cnb__name_text(reason + 1, len - 1, text, sizeof(text));
    cnb__log(n, CNB_LOG_WARNING,
             "global: the resolver for the name conflict on %s (run on %s) ended with %s; "
             "global %s",
             r->name, r->peer, text,
             drops ? "unregisters the name" : "keeps the pid of the other partition");
}

int cnb__relay_down(cnb_node_t *n, const cnb_msg_t *m)
{
    if (m->op != CNB_OP_MONITOR_P_EXIT || !m->has_ref || !m->has_to)
        return 0;
    struct cnb_relay *r = find(n, m->peer, &m->ref);
    if (!r || !cnb__pid_eq(&r->self, &m->to))
        return 0;
    char none[32];
    const char *reason = m->payload;
    size_t len = m->payload_len;
    if (!reason || len < 2) {
        len = cnb__atom_term(none, "noproc");
        reason = none;
    }
    /* The requester always first hears that the process exists. */
    if (!r->replied)
        cnb__spawn_reply(n, r->peer, &r->req, &r->from, 2, &r->self, NULL);
    /* The tuple's middle is a ref and atoms, flat: ei may skip it. */
    check_outcome(n, r, reason, len);
    cnb__sig_down(n, &r->self, NULL, &r->from, &r->req, reason, len);
    unlink_relay(n, r);
    return 1;
}

void cnb__relay_nodedown(cnb_node_t *n, const char *peer)
{
    struct cnb_relay *r = n->relays;
    while (r) {
        struct cnb_relay *next = r->next;
        if (!strcmp(r->peer, peer)) {
            cnb__log(n, CNB_LOG_WARNING,
                     "global: lost %s while it ran the resolver for the name conflict on %s",
                     peer, r->name);
            unlink_relay(n, r);
        }
        r = next;
    }
}

void cnb__relay_destroy(cnb_node_t *n)
{
    while (n->relays)
        unlink_relay(n, n->relays);
}
