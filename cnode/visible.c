/* visible.c: with opts.visible (--visible), the node's own `global_name_server`:
 * it answers OTP global's connect protocol (init_connect, lock_set, exchange,
 * resolved, then in_sync to the peer's known nodes; a peer's init_connect
 * is held while we know other nodes, init_connect()) and its lock and
 * registration calls, so that global:sync() completes on every node and no
 * registration waits on us. It keeps a copy of the name table and a lock
 * table (glob_table.c), fed by the exchange, resolved/new_nodes ops and the
 * calls, and offers its own workers' names in its exchange; name clashes
 * of a session go to glob_resolve.c, lost_connection/remove_connection to
 * glob_pop.c. Facts from OTP 25's global.erl are in docs/ARCHITECTURE.md
 * ("Visible mode"). I/O thread only. Tests:
 * tests/integration/visible_tests.erl, visible_heal_tests.erl. */
#include "glob_pop.h"
#include "glob_resolve.h"
#include "log.h"
#include "node_rt.h"

#include <stdlib.h>
#include <string.h>

#define VIS_TAG_MAX 64     /* the encoded sync tag we echo (an integer in OTP) */
#define VIS_MAX_KNOWN 1024 /* nodes we tell in_sync from one resolved message */
#define GLOBAL_VSN 8       /* global's protocol version in OTP 25..29 */
#define HOLD_ASK_MS 1000   /* held this long: the nodes we know are asked to connect to it */
#define HOLD_MAX_MS 5000   /* held this long: answered after all */

/* One peer's sync session: its tag (echoed back to it) and ours. */
typedef struct vis_peer {
    char name[CNB_NAME_MAX];
    char his_tag[VIS_TAG_MAX];
    int his_tag_len;
    long long my_tag;
    long vsn;
    int held;        /* its init_connect is not answered yet (init_connect()) */
    int asked;       /* held, and the nodes we know were asked to connect to it */
    int64_t held_at; /* n->now when held */
} vis_peer_t;

struct cnb_visible {
    erlang_pid locker; /* stands for global's locker process in lock ids */
    cnb_gtab_t *gt;    /* the name and lock tables (glob_table.c) */
    cnb_gres_t *gres;  /* clashes of a session's names (glob_resolve.c) */
    cnb_pop_t *pop;    /* prevent_overlapping_partitions (glob_pop.c) */
    long long next_tag;
    vis_peer_t *peers;
    size_t npeers, cap;
};

int cnb__visible_create(cnb_node_t *n)
{
    struct cnb_visible *v = calloc(1, sizeof *v);
    if (!v)
        return CNB_ENOMEM;
    cnb_node_make_pid(n, &v->locker);
    v->gt = cnb__gt_create(&v->locker);
    v->gres = cnb__gres_create();
    v->pop = cnb__pop_create();
    if (!v->gt || !v->gres || !v->pop) {
        cnb__gt_destroy(v->gt);
        cnb__gres_destroy(v->gres);
        cnb__pop_destroy(v->pop);
        free(v);
        return CNB_ENOMEM;
    }
    v->next_tag = 1;
    n->vis = v;
    return 0;
}

void cnb__visible_destroy(cnb_node_t *n)
{
    if (!n->vis)
        return;
    cnb__gres_destroy(n->vis->gres); /* resolver threads first: they use the table */
    cnb__gt_destroy(n->vis->gt);
    cnb__pop_destroy(n->vis->pop);
    free(n->vis->peers);
    free(n->vis);
    n->vis = NULL;
}

static vis_peer_t *peer_find(struct cnb_visible *v, const char *peer, int make)
{
    for (size_t i = 0; i < v->npeers; i++)
        if (!strcmp(v->peers[i].name, peer))
            return &v->peers[i];
    if (!make)
        return NULL;
    if (v->npeers == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        vis_peer_t *p = realloc(v->peers, cap * sizeof *p);
        if (!p)
            return NULL;
        v->peers = p;
        v->cap = cap;
    }
    vis_peer_t *e = &v->peers[v->npeers++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", peer);
    return e;
}

void cnb__visible_nodedown(cnb_node_t *n, const char *peer)
{
    struct cnb_visible *v = n->vis;
    if (!v)
        return;
    vis_peer_t *e = peer_find(v, peer, 0);
    cnb__pop_nodedown(n, v->pop, &v->locker, peer);
    if (e)
        *e = v->peers[--v->npeers];
    cnb__gt_drop_node(n, v->gt, peer); /* as global: its pids' names and locks */
}

void cnb__visible_proc_exit(cnb_node_t *n, const erlang_pid *pid)
{
    if (n->vis)
        cnb__gt_drop_pid(n, n->vis->gt, pid);
}

cnb_gtab_t *cnb__visible_gt(cnb_node_t *n)
{
    return n->vis ? n->vis->gt : NULL;
}

int cnb__visible_whereis(cnb_node_t *n, const char *name, size_t len, erlang_pid *pid)
{
    return n->vis ? cnb__gt_name_find(n->vis->gt, name, len, pid) : CNB_ESTATE;
}

/* Sends x (built with a version byte) to {global_name_server, peer}. */
static void gns_send(cnb_node_t *n, const char *peer, ei_x_buff *x, const char *what)
{
    int rc = cnb_reg_send(n, &n->vis->locker, peer, "global_name_server", x->buff,
                          (size_t)x->index);
    if (rc && rc != CNB_ECLOSED)
        cnb__log(n, CNB_LOG_WARNING, "global %s to %s not sent: %s", what, peer,
                 cnb_strerror(rc));
}

/* x := {'$gen_cast', {Tag, ...: the cast's tuple of `arity` opened, its
 * first element written. */
static int cast_head(ei_x_buff *x, const char *tag, int arity)
{
    return ei_x_new_with_version(x) || ei_x_encode_tuple_header(x, 2) ||
           ei_x_encode_atom(x, "$gen_cast") || ei_x_encode_tuple_header(x, arity) ||
           ei_x_encode_atom(x, tag);
}

static int put_his_tag(ei_x_buff *x, const vis_peer_t *e)
{
    return ei_x_append_buf(x, e->his_tag, e->his_tag_len);
}

/* Our init_connect to e's node (a new session: a fresh tag of ours), then
 * {init_connect_ack, node(), HisTag, MyTag}, which the peer checks against
 * the tags it holds. */
static void answer(cnb_node_t *n, vis_peer_t *e)
{
    ei_x_buff x;
    e->held = 0;
    if (cast_head(&x, "init_connect", 4) || ei_x_encode_tuple_header(&x, 2) ||
        ei_x_encode_long(&x, e->vsn) || ei_x_encode_longlong(&x, e->my_tag) ||
        ei_x_encode_atom(&x, n->name) || ei_x_encode_tuple_header(&x, 4) ||
        ei_x_encode_atom(&x, "locker") || ei_x_encode_atom(&x, "no_longer_a_pid") ||
        ei_x_encode_empty_list(&x) || ei_x_encode_pid(&x, &n->vis->locker))
        goto nomem;
    gns_send(n, e->name, &x, "init_connect");
    ei_x_free(&x);
    if (ei_x_new_with_version(&x) || ei_x_encode_tuple_header(&x, 4) ||
        ei_x_encode_atom(&x, "init_connect_ack") || ei_x_encode_atom(&x, n->name) ||
        put_his_tag(&x, e) || ei_x_encode_longlong(&x, e->my_tag))
        goto nomem;
    gns_send(n, e->name, &x, "init_connect_ack");
    ei_x_free(&x);
    return;
nomem:
    ei_x_free(&x);
    cnb__log(n, CNB_LOG_ERROR, "out of memory: global init_connect from %s not answered",
             e->name);
}

/* Whether global's known holds a node other than peer. */
static int knows_others(cnb_node_t *n, const char *peer)
{
    const char *k;
    for (size_t i = 0; (k = cnb__greg_known_at(n, i)); i++)
        if (strcmp(k, peer))
            return 1;
    return 0;
}

/* {init_connect, {Vsn, HisTag, ...}, Node, {locker, _, _Known, HisLocker}}.
 * We answer only, never start: the peer sends its init_connect from its
 * nodeup, so it holds its tag before ours arrive.
 * - From a node we know (global's known: we told it in_sync after another
 *   node's session, or a session with it ended, and no nodedown since): as
 *   global's init_connect when it runs no session with the node, nothing is
 *   answered. The in_sync we sent reaches it first and ends its session; an
 *   init_connect_ack after it would no longer match its tags, and global then
 *   restarts the connect, dropping every name of our pids (its
 *   delete_node_resources), with no new session to bring them back.
 * - While we know other nodes (a heal whose first connection to the peer's
 *   partition is ours): held, not answered. We present ourselves as a
 *   partition of our own, so a session of ours would settle the clashes
 *   between the peer and us only, and the sessions of the nodes we know
 *   would then give the peer back names it had just deleted. Their sessions
 *   with the peer carry every name; their new_nodes makes us send in_sync to
 *   the peer (sync_others), which ends its wait for us and drops the hold.
 *   Held HOLD_ASK_MS and still connected: the nodes we know are asked to
 *   connect to it (ask_connect), in case nothing else makes them. Answered
 *   after all when no node we know is left, or after HOLD_MAX_MS
 *   (cnb__visible_tick).
 * - Otherwise answered at once. */
static void init_connect(cnb_node_t *n, const char *peer, const char *b, int i)
{
    int arity;
    long vsn;
    if (cnb__greg_is_known(n, peer)) {
        cnb__log(n, CNB_LOG_DEBUG, "global: init_connect from %s not answered: in sync already",
                 peer);
        return;
    }
    if (ei_decode_tuple_header(b, &i, &arity) || arity < 2 || ei_decode_long(b, &i, &vsn))
        return;
    int t0 = i;
    if (ei_skip_term(b, &i) || i - t0 > VIS_TAG_MAX)
        return;
    vis_peer_t *e = peer_find(n->vis, peer, 1);
    if (!e) {
        cnb__log(n, CNB_LOG_ERROR, "out of memory: global init_connect from %s not answered",
                 peer);
        return;
    }
    memcpy(e->his_tag, b + t0, (size_t)(i - t0));
    e->his_tag_len = i - t0;
    e->my_tag = n->vis->next_tag++;
    e->vsn = vsn < GLOBAL_VSN ? vsn : GLOBAL_VSN;
    if (knows_others(n, peer)) {
        e->held = 1;
        e->asked = 0;
        e->held_at = n->now;
        cnb__log(n, CNB_LOG_DEBUG,
                 "global: init_connect from %s held: the nodes we know run its session", peer);
        return;
    }
    answer(n, e);
}

/* {'$gen_cast', {cast, net_kernel, connect_node, [Peer], user}} to rex on
 * every node we know: rpc:cast(Node, net_kernel, connect_node, [Peer]). */
static void ask_connect(cnb_node_t *n, const vis_peer_t *e)
{
    ei_x_buff x;
    if (cast_head(&x, "cast", 5) || ei_x_encode_atom(&x, "net_kernel") ||
        ei_x_encode_atom(&x, "connect_node") || ei_x_encode_list_header(&x, 1) ||
        ei_x_encode_atom(&x, e->name) || ei_x_encode_empty_list(&x) ||
        ei_x_encode_atom(&x, "user")) {
        ei_x_free(&x);
        cnb__log(n, CNB_LOG_ERROR, "out of memory: no node asked to connect to %s", e->name);
        return;
    }
    const char *k;
    for (size_t i = 0; (k = cnb__greg_known_at(n, i)); i++) {
        if (!strcmp(k, e->name))
            continue;
        int rc = cnb_reg_send(n, &n->vis->locker, k, "rex", x.buff, (size_t)x.index);
        if (rc && rc != CNB_ECLOSED)
            cnb__log(n, CNB_LOG_WARNING, "global: %s not asked to connect to %s: %s", k,
                     e->name, cnb_strerror(rc));
    }
    ei_x_free(&x);
}

void cnb__visible_tick(cnb_node_t *n)
{
    struct cnb_visible *v = n->vis;
    if (!v)
        return;
    for (size_t i = 0; i < v->npeers; i++) {
        vis_peer_t *e = &v->peers[i];
        if (!e->held)
            continue;
        int64_t age = n->now - e->held_at;
        if (age >= HOLD_MAX_MS || !knows_others(n, e->name)) {
            cnb__log(n, CNB_LOG_DEBUG, "global: init_connect from %s answered after %lld ms",
                     e->name, (long long)age);
            answer(n, e);
        } else if (age >= HOLD_ASK_MS && !e->asked) {
            e->asked = 1;
            cnb__log(n, CNB_LOG_DEBUG, "global: the nodes we know asked to connect to %s",
                     e->name);
            ask_connect(n, e);
        }
    }
}

/* The peer's session whose message has our tag (MyTag) after `skip` terms
 * from b[i]; NULL (the message dropped, as global's handle_cast does when
 * its sync_tag_my differs) for a peer with no session of ours: none, held,
 * or one that a newer init_connect replaced. */
static vis_peer_t *session(cnb_node_t *n, const char *peer, const char *b, int i, int skip,
                           const char *what)
{
    vis_peer_t *e = peer_find(n->vis, peer, 0);
    long long tag;
    if (!e || e->held)
        return NULL;
    while (skip-- > 0)
        if (ei_skip_term(b, &i))
            return NULL;
    if (ei_decode_longlong(b, &i, &tag) || tag != e->my_tag) {
        cnb__log(n, CNB_LOG_DEBUG, "global: %s from %s dropped: not our session's tag", what,
                 peer);
        return NULL;
    }
    return e;
}

/* {lock_set, HisLocker, true, _Known, MyTag}: his locker holds the lock on
 * both partitions (we said yes to its set_lock); ours "holds" it too:
 * {lock_set, OurLocker, true, [], HisTag}, which his server hands his locker. */
static void lock_set(cnb_node_t *n, const char *peer, const char *b, int i, int arity)
{
    vis_peer_t *e = arity == 5 ? session(n, peer, b, i, 3, "lock_set") : NULL;
    erlang_pid p;
    int set;
    if (!e || ei_decode_pid(b, &i, &p) || ei_decode_boolean(b, &i, &set) || !set)
        return;
    ei_x_buff x;
    if (cast_head(&x, "lock_set", 5) || ei_x_encode_pid(&x, &n->vis->locker) ||
        ei_x_encode_boolean(&x, 1) || ei_x_encode_empty_list(&x) || put_his_tag(&x, e)) {
        ei_x_free(&x);
        cnb__log(n, CNB_LOG_ERROR, "out of memory: global lock_set from %s not answered", peer);
        return;
    }
    gns_send(n, peer, &x, "lock_set");
    ei_x_free(&x);
}

/* {Name, Pid, Method} at b[i..] into the table, replacing what we hold
 * (i moves past it). Returns nonzero when malformed. */
static int put_triple(cnb_node_t *n, const char *b, int *i)
{
    int n0, n1, m0;
    erlang_pid pid;
    if (cnb__gt_triple(b, i, &n0, &n1, &pid, &m0))
        return -1;
    (void)cnb__gt_name_put(n, n->vis->gt, b + n0, (size_t)(n1 - n0), &pid, b + m0, *i - m0);
    return 0;
}

/* [{insert, {Name, Pid, Method}} | {delete, Name}] (resolved, new_nodes) at
 * b[i..], applied as global's do_ops. */
static void do_ops(cnb_node_t *n, const char *b, int i)
{
    int len, a;
    char op[MAXATOMLEN_UTF8];
    if (ei_decode_list_header(b, &i, &len))
        return;
    for (int k = 0; k < len; k++) {
        if (ei_decode_tuple_header(b, &i, &a) || a != 2 || ei_decode_atom(b, &i, op))
            return;
        int t0 = i;
        if (!strcmp(op, "insert")) {
            if (put_triple(n, b, &i))
                return;
        } else if (ei_skip_term(b, &i)) {
            return;
        } else if (!strcmp(op, "delete")) {
            (void)cnb__gt_name_del(n, n->vis->gt, b + t0, (size_t)(i - t0));
        }
    }
}

/* {exchange, Node, Names, _, MyTag}: ours (the names of our own pids) go
 * back as {exchange, node(), Names, [], HisTag}; his names go into our table
 * and, when our name sorts below his, we resolve clashes with our workers'
 * names (glob_resolve.c), which then sends our {resolved, ...}. */
static void exchange(cnb_node_t *n, const char *peer, const char *b, int i)
{
    vis_peer_t *e = session(n, peer, b, i, 3, "exchange");
    if (!e || ei_skip_term(b, &i))
        return;
    ei_x_buff x;
    if (cast_head(&x, "exchange", 5) || ei_x_encode_atom(&x, n->name) ||
        cnb__gt_encode_ours(n, n->vis->gt, &x) || ei_x_encode_empty_list(&x) ||
        put_his_tag(&x, e)) {
        ei_x_free(&x);
        cnb__log(n, CNB_LOG_ERROR, "out of memory: global exchange from %s not answered", peer);
        return;
    }
    gns_send(n, peer, &x, "exchange");
    ei_x_free(&x);
    cnb__gres_exchange(n, n->vis->gres, n->vis->gt, &n->vis->locker, peer, b, i, e->his_tag,
                       e->his_tag_len);
}

/* As global's sync_others: each node of the list at b[i..] ([{N, Vsn}] or
 * [N]) but us hears {in_sync, node(), true}, sent on a connection the send
 * makes, so that it counts us as synced (and connects: connect_all). */
static void sync_others(cnb_node_t *n, const char *peer, const char *b, int i)
{
    int len, a;
    char node[MAXATOMLEN_UTF8];
    if (ei_decode_list_header(b, &i, &len) || len > VIS_MAX_KNOWN)
        return;
    ei_x_buff x;
    if (cast_head(&x, "in_sync", 3) || ei_x_encode_atom(&x, n->name) ||
        ei_x_encode_boolean(&x, 1)) {
        ei_x_free(&x);
        cnb__log(n, CNB_LOG_ERROR, "out of memory: in_sync for %s's nodes not sent", peer);
        return;
    }
    for (int k = 0; k < len; k++) {
        int j = i;
        a = 0;
        if (!ei_decode_tuple_header(b, &j, &a) && a == 2)
            i = j;
        if (ei_decode_atom(b, &i, node) || (a == 2 && ei_skip_term(b, &i)))
            break;
        if (strcmp(node, n->name) && strchr(node, '@')) {
            gns_send(n, node, &x, "in_sync");
            cnb__greg_known(n, node); /* known too, as global's resolved */
            vis_peer_t *h = peer_find(n->vis, node, 0);
            if (h && h->held) { /* its session ran with the nodes we know */
                h->held = 0;
                cnb__log(n, CNB_LOG_DEBUG, "global: %s in sync through %s: not answered",
                         node, peer);
            }
        }
    }
    ei_x_free(&x);
}

/* {resolved, Node, Ops, HisKnown, unused, NamesExt, MyTag}: we are in sync
 * with the peer, and with the nodes it knows (sync_others). */
static void resolved(cnb_node_t *n, const char *peer, const char *b, int i, int arity)
{
    if (arity != 7 || !session(n, peer, b, i, 5, "resolved") || ei_skip_term(b, &i))
        return;
    cnb__greg_known(n, peer); /* global's known: the registrar's nodes */
    do_ops(n, b, i); /* the clashes his resolver settled for us */
    if (!ei_skip_term(b, &i))
        sync_others(n, peer, b, i);
}

/* {new_nodes, Node, Ops, NamesExt, Nodes, _}: a session of a node we know
 * (we are in its Known) merged Nodes into its partition: their names
 * (do_ops) and, as global's new_nodes does for the nodes it adds, in_sync to
 * them (we keep no Known, so every one of them hears it; an in_sync is
 * harmless to a node that counts us as synced already). Without it a node
 * that joined through another node's session never counts us as synced. */
static void new_nodes(cnb_node_t *n, const char *peer, const char *b, int i)
{
    if (ei_skip_term(b, &i))
        return;
    do_ops(n, b, i);
    if (!ei_skip_term(b, &i) && !ei_skip_term(b, &i))
        sync_others(n, peer, b, i); /* also makes them known (the registrar's) */
}

/* '$gen_call's of global_name_server that other nodes' global makes of every
 * known node (multi_call, timeout infinity), each answered at once as
 * global's handle_call does: set_lock true or false (another requester holds
 * the resource: the asker releases and retries), del_lock true;
 * {register, Name, Pid, Method} / {register_ext, ..., RegNode} yes and
 * {unregister, Name} ok, with the table changed. Never blocks. */
static const char *call_do(cnb_node_t *n, const char *req, const char *b, int i, int arity,
                           const erlang_pid *from)
{
    cnb_gtab_t *t = n->vis->gt;
    if (!strcmp(req, "set_lock"))
        return arity == 2 && cnb__gt_set_lock(n, t, b, i, from) ? "true" : "false";
    if (!strcmp(req, "del_lock")) {
        if (arity == 2)
            cnb__gt_del_lock(n, t, b, i, from);
        return "true";
    }
    if (!strcmp(req, "register") || !strcmp(req, "register_ext")) {
        int n0 = i, n1, m0;
        erlang_pid pid;
        if (arity == (req[8] ? 5 : 4) && !ei_skip_term(b, &i) && (n1 = i, 1) &&
            !ei_decode_pid(b, &i, &pid) && (m0 = i, 1) && !ei_skip_term(b, &i))
            (void)cnb__gt_name_put(n, t, b + n0, (size_t)(n1 - n0), &pid, b + m0, i - m0);
        return "yes";
    }
    if (!strcmp(req, "unregister")) {
        int n0 = i;
        if (arity == 2 && !ei_skip_term(b, &i))
            (void)cnb__gt_name_del(n, t, b + n0, (size_t)(i - n0));
        return "ok";
    }
    return NULL;
}

static void gen_call(cnb_node_t *n, const cnb_msg_t *m, const char *b, int i)
{
    int arity, t0, t1;
    erlang_pid from;
    char req[MAXATOMLEN_UTF8];
    if (ei_decode_tuple_header(b, &i, &arity) || arity != 2 || ei_decode_pid(b, &i, &from))
        return;
    t0 = i;
    if (ei_skip_term(b, &i))
        return;
    t1 = i;
    if (ei_decode_tuple_header(b, &i, &arity) || arity < 1 || ei_decode_atom(b, &i, req))
        return;
    const char *reply = call_do(n, req, b, i, arity, &from);
    if (reply)
        cnb__gen_reply_atom(n, m, &from, t0, t1, reply);
    else
        cnb__log(n, CNB_LOG_DEBUG, "ignored a global_name_server call from %s", m->peer);
}

/* A cast: {'$gen_cast', {Op, ...}}. */
static void gen_cast(cnb_node_t *n, const char *peer, const char *b, int i)
{
    int arity;
    char op[MAXATOMLEN_UTF8];
    if (ei_decode_tuple_header(b, &i, &arity) || arity < 2 || ei_decode_atom(b, &i, op))
        return;
    if (!strcmp(op, "init_connect") && arity == 4)
        init_connect(n, peer, b, i);
    else if (!strcmp(op, "lock_set"))
        lock_set(n, peer, b, i, arity);
    else if (!strcmp(op, "exchange") && arity == 5)
        exchange(n, peer, b, i);
    else if (!strcmp(op, "resolved"))
        resolved(n, peer, b, i, arity);
    else if (!strcmp(op, "new_nodes") && arity == 6)
        new_nodes(n, peer, b, i);
    /* in_sync, async_del_*: nothing to keep. */
}

int cnb__visible_take(cnb_node_t *n, const cnb_msg_t *m)
{
    if (!n->vis)
        return 0;
    /* The DOWN of a pid our tables watch (a name's owner, a lock holder). */
    if (m->op == CNB_OP_MONITOR_P_EXIT && m->has_to && m->has_from &&
        !strcmp(m->to.node, n->vis->locker.node) && m->to.num == n->vis->locker.num &&
        m->to.serial == n->vis->locker.serial) {
        cnb__gt_drop_pid(n, n->vis->gt, &m->from);
        return 1;
    }
    if (m->has_to || strcmp(m->toname, "global_name_server"))
        return 0;
    /* Monitors on it (multi_call sets one) need no record: the caller's node
     * fires noconnection itself when the connection goes. */
    if (m->op == CNB_OP_MONITOR_P || m->op == CNB_OP_DEMONITOR_P)
        return 1;
    if (m->op != CNB_OP_REG_SEND || !m->payload)
        return 0;
    cnb__pop_heard(n->vis->pop, m->peer); /* its global counts us in its Known */
    const char *b = m->payload;
    int i = 0, ver, arity;
    char tag[MAXATOMLEN_UTF8];
    if (ei_decode_version(b, &i, &ver) || ei_decode_tuple_header(b, &i, &arity) ||
        ei_decode_atom(b, &i, tag))
        return 1; /* not {Tag, ...}: dropped */
    if (!strcmp(tag, "$gen_call") && arity == 3)
        gen_call(n, m, b, i);
    else if (!strcmp(tag, "lost_connection") && arity == 5)
        cnb__pop_lost(n, n->vis->pop, &n->vis->locker, b, m->payload_len, b, i);
    else if (!strcmp(tag, "remove_connection") && arity == 2)
        cnb__pop_remove(n, n->vis->pop, m->peer, b, i);
    else if (!strcmp(tag, "$gen_cast") && arity == 2)
        gen_cast(n, m->peer, b, i);
    return 1;
}
