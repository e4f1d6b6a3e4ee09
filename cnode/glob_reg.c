/* glob_reg.c: with opts.visible, the node's own registrar: cnb_global_register,
 * re_register and unregister run through global's protocol itself, with no
 * anchor node, as global's registrar process runs trans_all_known: the lock
 * {global, RegPid} on the boss (the greatest of our node and the known ones)
 * first, then on the others and in our own lock table; a `false` anywhere
 * releases what was set and retries after global's random sleep; then the
 * check against our name table, {register, Name, Pid, Method} (or
 * {unregister, Name}) multi_called to every known node and put in our table,
 * and {del_lock, Id} everywhere. One pid (RegPid), living as long as the
 * node, is the lock requester and the From of every multi_call, so the
 * register's lock check on the peers (global's lock_still_set) holds. Known
 * nodes: those whose sync session with us ended (visible.c tells us), with
 * the nodes they know, as global's `known`. Requests come from any thread
 * through a queue and are run one at a time on the I/O thread. Facts from
 * OTP 25's global.erl are in docs/ARCHITECTURE.md ("Visible mode").
 * Tests: tests/integration/visible_reg_tests.erl. */
#include "glob_table.h"
#include "log.h"
#include "node_rt.h"
#include "../core/deadline.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define GR_MAX_KNOWN 4096
#define GR_KICK "greg_kick"
#define GR_SLEEP "greg_sleep"
#define GR_ABANDON_WAIT_MS 1000 /* a timed-out caller waits for its locks' release */

enum { PH_IDLE, PH_BOSS, PH_ALL, PH_SLEEP, PH_REG };
enum { RQ_QUEUED, RQ_ACTIVE, RQ_DONE };
/* A node's part in the round in flight. */
enum { ND_OUT, ND_WAIT, ND_YES, ND_NO, ND_DOWN };

typedef struct greq {
    struct greq *next;
    int op; /* enum cnb__greg_op */
    char *name; /* ETF with version byte */
    size_t nlen;
    erlang_pid pid;
    int resolve;
    int state;     /* RQ_*, under mu */
    int abandoned; /* the caller gave up (under mu): stop taking locks */
    int left;      /* the caller returned (under mu): the registrar frees it */
    int changing;  /* the change went out (under mu): it runs to its end */
    int rc;
    int has_owner;
    erlang_pid owner;
} greq_t;

typedef char node_name_t[CNB_NAME_MAX];

struct cnb_greg {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    greq_t *qh, *qt; /* waiting to be run (mu) */
    erlang_pid pid;  /* the requester in {global, Pid} and the multi_calls' From */
    ei_x_buff lockid; /* {global, Pid}, no version byte */
    cnb_gtab_t *gt;
    /* The I/O thread's alone from here. */
    node_name_t *known;
    size_t nknown, kcap;
    greq_t *cur;
    int phase;
    int times;         /* global's Times: sleeps so far in this request */
    long long seq;     /* the sleep timer we wait for */
    node_name_t *nodes; /* the known nodes when the attempt began */
    unsigned char *st;  /* ND_* per node of nodes */
    size_t nn, ncap, waiting;
    long boss;          /* index in nodes, -1: we are the boss */
    erlang_ref tag;     /* the round in flight's */
};

static void next_request(cnb_node_t *n);
static void attempt(cnb_node_t *n);
static void round_done(cnb_node_t *n);

int cnb__greg_create(cnb_node_t *n, cnb_gtab_t *gt)
{
    struct cnb_greg *g = calloc(1, sizeof *g);
    if (!g)
        return CNB_ENOMEM;
    cnb_node_make_pid(n, &g->pid);
    if (ei_x_new(&g->lockid) || ei_x_encode_tuple_header(&g->lockid, 2) ||
        ei_x_encode_atom(&g->lockid, "global") || ei_x_encode_pid(&g->lockid, &g->pid)) {
        ei_x_free(&g->lockid);
        free(g);
        return CNB_ENOMEM;
    }
    pthread_mutex_init(&g->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    g->gt = gt;
    g->boss = -1;
    n->greg = g;
    return 0;
}

static void req_free(greq_t *q)
{
    if (q) {
        free(q->name);
        free(q);
    }
}

/* After the I/O thread has stopped; callers still waiting are the caller's
 * error (as for cnb_call). An abandoned request in flight is ours to free. */
void cnb__greg_destroy(cnb_node_t *n)
{
    struct cnb_greg *g = n->greg;
    if (!g)
        return;
    if (g->cur && g->cur->left)
        req_free(g->cur);
    ei_x_free(&g->lockid);
    free(g->known);
    free(g->nodes);
    free(g->st);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
    n->greg = NULL;
}

/* ------------------------------------------------------------ known nodes */

static long known_at(const struct cnb_greg *g, const char *node)
{
    for (size_t k = 0; k < g->nknown; k++)
        if (!strcmp(g->known[k], node))
            return (long)k;
    return -1;
}

void cnb__greg_known(cnb_node_t *n, const char *node)
{
    struct cnb_greg *g = n->greg;
    if (!g || !strcmp(node, n->name) || !strchr(node, '@') || strlen(node) >= CNB_NAME_MAX ||
        known_at(g, node) >= 0 || g->nknown >= GR_MAX_KNOWN)
        return;
    if (g->nknown == g->kcap) {
        size_t cap = g->kcap ? g->kcap * 2 : 8;
        node_name_t *k = realloc(g->known, cap * sizeof *k);
        if (!k) {
            cnb__log(n, CNB_LOG_ERROR, "out of memory: global: %s not counted as known", node);
            return;
        }
        g->known = k;
        g->kcap = cap;
    }
    snprintf(g->known[g->nknown++], CNB_NAME_MAX, "%s", node);
}

int cnb__greg_is_known(cnb_node_t *n, const char *node)
{
    return n->greg && known_at(n->greg, node) >= 0;
}

const char *cnb__greg_known_at(cnb_node_t *n, size_t k)
{
    return n->greg && k < n->greg->nknown ? n->greg->known[k] : NULL;
}

/* ------------------------------------------------------------ one round */

/* {'$gen_call', {RegPid, Tag}, Req} with Req's encoding in req (no version
 * byte) to {global_name_server, Node} for each node marked ND_WAIT. A node
 * the send fails for counts as down. */
static void round_send(cnb_node_t *n, const char *req, int rlen)
{
    struct cnb_greg *g = n->greg;
    ei_x_buff x;
    cnb_node_make_ref(n, &g->tag);
    int e = ei_x_new_with_version(&x) || ei_x_encode_tuple_header(&x, 3) ||
            ei_x_encode_atom(&x, "$gen_call") || ei_x_encode_tuple_header(&x, 2) ||
            ei_x_encode_pid(&x, &g->pid) || ei_x_encode_ref(&x, &g->tag) ||
            ei_x_append_buf(&x, req, rlen);
    g->waiting = 0;
    for (size_t k = 0; k < g->nn; k++) {
        if (g->st[k] != ND_WAIT)
            continue;
        int rc = e ? CNB_ENOMEM
                   : cnb_reg_send(n, &g->pid, g->nodes[k], "global_name_server", x.buff,
                                  (size_t)x.index);
        if (rc) {
            g->st[k] = ND_DOWN;
            cnb__log(n, CNB_LOG_WARNING, "global registrar: a call to %s not sent: %s",
                     g->nodes[k], cnb_strerror(rc));
        } else {
            g->waiting++;
        }
    }
    ei_x_free(&x);
}

/* {Op, {global, RegPid}} (set_lock, del_lock) as a round's request. */
static void lock_round(cnb_node_t *n, const char *op)
{
    struct cnb_greg *g = n->greg;
    ei_x_buff r;
    int e = ei_x_new(&r) || ei_x_encode_tuple_header(&r, 2) || ei_x_encode_atom(&r, op) ||
            ei_x_append_buf(&r, g->lockid.buff, g->lockid.index);
    round_send(n, e ? "" : r.buff, e ? 0 : r.index);
    ei_x_free(&r);
}

/* Our lock everywhere it may be set: del_lock to each node of the attempt
 * still known (the boss last, as global's delete_global_lock; a node where
 * we hold none ignores it; one gone down holds nothing of ours, and a send
 * would dial it) and in our table. Replies are not waited for: what we send
 * a node next comes after it on the same connection. */
static void release(cnb_node_t *n)
{
    struct cnb_greg *g = n->greg;
    for (int boss = 0; boss < 2; boss++) {
        for (size_t k = 0; k < g->nn; k++)
            g->st[k] = ((long)k == g->boss) == boss && known_at(g, g->nodes[k]) >= 0 ? ND_WAIT
                                                                                      : ND_OUT;
        lock_round(n, "del_lock");
    }
    if (g->nn)
        memset(g->st, ND_OUT, g->nn);
    g->waiting = 0;
    cnb_node_make_ref(n, &g->tag); /* late replies to the old round: dropped */
    cnb__gt_del_lock(n, g->gt, g->lockid.buff, 0, &g->pid);
}

/* ------------------------------------------------------------ the request */

/* The request ends with rc; its caller wakes (or, gone, it is freed). */
static void finish(cnb_node_t *n, int rc)
{
    struct cnb_greg *g = n->greg;
    greq_t *q = g->cur;
    g->cur = NULL;
    g->phase = PH_IDLE;
    pthread_mutex_lock(&g->mu);
    q->rc = rc;
    q->state = RQ_DONE;
    int gone = q->left;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    if (gone)
        req_free(q);
    next_request(n);
}

/* global's random_sleep(Times): up to 1/8 s doubling each time, at most 8 s;
 * then the attempt again (a timer message to our pid). */
static void backoff(cnb_node_t *n)
{
    struct cnb_greg *g = n->greg;
    int t = g->times++;
    unsigned tmax = t > 5 ? 8000u : ((1u << t) * 1000u) / 8u;
    unsigned ms = 1 + cnb__random32() % tmax;
    char m[64];
    int i = 0;
    g->phase = PH_SLEEP;
    g->seq++;
    if (ei_encode_version(m, &i) || ei_encode_tuple_header(m, &i, 2) ||
        ei_encode_atom(m, &i, GR_SLEEP) || ei_encode_longlong(m, &i, g->seq) ||
        cnb_send_after(n, ms, &g->pid, m, (size_t)i, NULL)) {
        cnb__log(n, CNB_LOG_ERROR, "global registrar: no timer for a retry");
        finish(n, CNB_ENOMEM);
    }
}

static void fail_lock(cnb_node_t *n)
{
    release(n);
    backoff(n);
}

/* The lock on the boss is ours: now in our table and on every other node. */
static void lock_all(cnb_node_t *n)
{
    struct cnb_greg *g = n->greg;
    if (!cnb__gt_set_lock(n, g->gt, g->lockid.buff, 0, &g->pid)) {
        fail_lock(n);
        return;
    }
    for (size_t k = 0; k < g->nn; k++)
        g->st[k] = (long)k == g->boss ? ND_YES : ND_WAIT;
    g->phase = PH_ALL;
    lock_round(n, "set_lock");
    if (!g->waiting)
        round_done(n);
}

static void attempt(cnb_node_t *n)
{
    struct cnb_greg *g = n->greg;
    if (g->ncap < g->nknown) {
        node_name_t *nd = realloc(g->nodes, g->nknown * sizeof *nd);
        if (nd)
            g->nodes = nd;
        unsigned char *st = nd ? realloc(g->st, g->nknown) : NULL;
        if (st)
            g->st = st;
        if (!nd || !st) {
            finish(n, CNB_ENOMEM);
            return;
        }
        g->ncap = g->nknown;
    }
    g->nn = g->nknown;
    if (g->nn) {
        memcpy(g->nodes, g->known, g->nn * sizeof *g->nodes);
        memset(g->st, ND_OUT, g->nn);
    }
    /* The boss: the greatest of us and the known nodes (atoms of plain
     * names order as their bytes). */
    const char *best = n->name;
    g->boss = -1;
    for (size_t k = 0; k < g->nn; k++)
        if (strcmp(g->nodes[k], best) > 0) {
            best = g->nodes[k];
            g->boss = (long)k;
        }
    if (g->boss < 0) {
        lock_all(n);
        return;
    }
    g->st[g->boss] = ND_WAIT;
    g->phase = PH_BOSS;
    lock_round(n, "set_lock");
    if (!g->waiting)
        round_done(n);
}

/* The method of a registration from C: fun global:F/3 (an export: every
 * node's global can run it when it resolves a clash). */
static int put_method(ei_x_buff *x, int resolve)
{
    const char *f = resolve == CNB_GLOBAL_RANDOM_NOTIFY ? "random_notify_name"
                    : resolve == CNB_GLOBAL_NOTIFY_ALL  ? "notify_all_name"
                                                        : "random_exit_name";
    char tag = 113; /* EXPORT_EXT: Module, Function, Arity */
    return ei_x_append_buf(x, &tag, 1) || ei_x_encode_atom(x, "global") ||
           ei_x_encode_atom(x, f) || ei_x_encode_long(x, 3);
}

/* Locks held everywhere: global's check, then the change in our table and on
 * every known node. Returns 1 when the request is over (rc set), 0 when the
 * round went out. */
static int change(cnb_node_t *n, int *rc)
{
    struct cnb_greg *g = n->greg;
    greq_t *q = g->cur;
    erlang_pid cur;
    int found = !cnb__gt_name_find(g->gt, q->name, q->nlen, &cur);
    if (q->op == CNB__GREG_UNREGISTER && !found)
        return *rc = 0, 1;
    if (q->op == CNB__GREG_REGISTER && found) {
        /* Ours already (a retry of a registration that went through): yes. */
        if (cnb__pid_eq(&cur, &q->pid))
            return *rc = 0, 1;
        q->owner = cur;
        q->has_owner = 1;
        return *rc = CNB_EEXIST, 1;
    }
    if (q->op == CNB__GREG_REGISTER && cnb__gt_pid_named(g->gt, &q->pid))
        return *rc = CNB_EEXIST, 1; /* global's check_dupname */
    ei_x_buff r, m;
    int e = ei_x_new(&r) || ei_x_new(&m);
    if (q->op == CNB__GREG_UNREGISTER) {
        e = e || ei_x_encode_tuple_header(&r, 2) || ei_x_encode_atom(&r, "unregister") ||
            ei_x_append_buf(&r, q->name + 1, (int)q->nlen - 1);
    } else {
        e = e || put_method(&m, q->resolve) || ei_x_encode_tuple_header(&r, 4) ||
            ei_x_encode_atom(&r, "register") ||
            ei_x_append_buf(&r, q->name + 1, (int)q->nlen - 1) || ei_x_encode_pid(&r, &q->pid) ||
            ei_x_append_buf(&r, m.buff, m.index);
    }
    if (!e)
        e = q->op == CNB__GREG_UNREGISTER
                ? (cnb__gt_name_del(n, g->gt, q->name, q->nlen), 0)
                : cnb__gt_name_put(n, g->gt, q->name, q->nlen, &q->pid, m.buff, m.index);
    if (e) {
        ei_x_free(&r);
        ei_x_free(&m);
        return *rc = e < 0 ? e : CNB_ENOMEM, 1;
    }
    for (size_t k = 0; k < g->nn; k++)
        g->st[k] = ND_WAIT;
    g->phase = PH_REG;
    pthread_mutex_lock(&g->mu);
    q->changing = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    round_send(n, r.buff, r.index);
    ei_x_free(&r);
    ei_x_free(&m);
    return g->waiting == 0 ? (*rc = 0, 1) : 0;
}

/* Every node of the round answered (or went down). */
static void round_done(cnb_node_t *n)
{
    struct cnb_greg *g = n->greg;
    int rc = 0;
    switch (g->phase) {
    case PH_BOSS:
        /* A boss that went down counts as yes, as multi_call's bad nodes
         * give no reply for global to refuse. */
        if (g->st[g->boss] == ND_NO)
            backoff(n);
        else
            lock_all(n);
        return;
    case PH_ALL:
        for (size_t k = 0; k < g->nn; k++)
            if (g->st[k] == ND_NO) {
                fail_lock(n);
                return;
            }
        /* A node that became known meanwhile would miss the change: again,
         * as global's lock_on_known_nodes. */
        for (size_t k = 0; k < g->nknown; k++) {
            size_t j = 0;
            while (j < g->nn && strcmp(g->nodes[j], g->known[k]))
                j++;
            if (j == g->nn) {
                fail_lock(n);
                return;
            }
        }
        if (!change(n, &rc))
            return;
        break;
    case PH_REG:
        break;
    default:
        return;
    }
    release(n);
    finish(n, rc);
}

/* Takes the next queued request, if none runs. */
static void next_request(cnb_node_t *n)
{
    struct cnb_greg *g = n->greg;
    if (g->cur)
        return;
    pthread_mutex_lock(&g->mu);
    greq_t *q = g->qh;
    if (q) {
        g->qh = q->next;
        if (!g->qh)
            g->qt = NULL;
        q->state = RQ_ACTIVE;
    }
    pthread_mutex_unlock(&g->mu);
    if (!q)
        return;
    g->cur = q;
    g->times = 0;
    attempt(n);
}

/* A kick: a new request, or the one in flight abandoned by its caller (while
 * it only takes locks, it stops and gives them back; once the change went
 * out, it runs to its end, as a multi_call does). */
static void kicked(cnb_node_t *n)
{
    struct cnb_greg *g = n->greg;
    if (g->cur && (g->phase == PH_BOSS || g->phase == PH_ALL || g->phase == PH_SLEEP)) {
        pthread_mutex_lock(&g->mu);
        int gone = g->cur->abandoned;
        pthread_mutex_unlock(&g->mu);
        if (gone) {
            if (g->phase != PH_SLEEP)
                release(n);
            finish(n, CNB_ETIMEDOUT);
            return;
        }
    }
    next_request(n);
}

/* A node of the round answered, or is gone. */
static void answered(cnb_node_t *n, size_t k, int how)
{
    struct cnb_greg *g = n->greg;
    if (g->st[k] != ND_WAIT)
        return;
    g->st[k] = (unsigned char)how;
    if (--g->waiting == 0)
        round_done(n);
}

void cnb__greg_nodedown(cnb_node_t *n, const char *peer)
{
    struct cnb_greg *g = n->greg;
    if (!g)
        return;
    long k = known_at(g, peer);
    if (k >= 0)
        memmove(&g->known[k], &g->known[k + 1], (g->nknown - (size_t)k - 1) * sizeof *g->known);
    g->nknown -= k >= 0;
    if (g->cur && g->phase != PH_SLEEP)
        for (size_t j = 0; j < g->nn; j++)
            if (!strcmp(g->nodes[j], peer)) {
                answered(n, j, ND_DOWN);
                break;
            }
}

/* {Tag, Reply} from a node of the round in flight (m->peer: the connection
 * it came on); anything else is dropped. */
static void reply(cnb_node_t *n, const cnb_msg_t *m, const char *b, int i)
{
    struct cnb_greg *g = n->greg;
    erlang_ref tag;
    char a[MAXATOMLEN_UTF8];
    if (!g->cur || ei_decode_ref(b, &i, &tag) || !cnb__ref_eq(&tag, &g->tag))
        return;
    int yes = !ei_decode_atom(b, &i, a) && strcmp(a, "false");
    for (size_t k = 0; k < g->nn; k++)
        if (!strcmp(g->nodes[k], m->peer)) {
            answered(n, k, yes ? ND_YES : ND_NO);
            return;
        }
}

int cnb__greg_take(cnb_node_t *n, const cnb_msg_t *m)
{
    struct cnb_greg *g = n->greg;
    if (!g || !m->has_to || !cnb__pid_eq(&m->to, &g->pid))
        return 0;
    /* Monitors on it (global monitors a lock's holder), links, exits: it
     * lives as long as the node, so nothing to record; the peer's node
     * fires noconnection itself when the connection goes. */
    if (m->op != CNB_OP_SEND || !m->payload)
        return 1;
    const char *b = m->payload;
    int i = 0, ver, arity;
    char a[MAXATOMLEN_UTF8];
    if (ei_decode_version(b, &i, &ver) || ei_decode_tuple_header(b, &i, &arity) || arity != 2) {
        if (!strcmp(m->peer, n->name))
            kicked(n);
        return 1;
    }
    int j = i;
    long long seq;
    if (!strcmp(m->peer, n->name)) { /* ours: a kick or a sleep's end */
        if (!ei_decode_atom(b, &j, a) && !strcmp(a, GR_SLEEP) &&
            !ei_decode_longlong(b, &j, &seq) && seq == g->seq && g->phase == PH_SLEEP && g->cur)
            attempt(n);
        else
            kicked(n);
        return 1;
    }
    reply(n, m, b, i);
    return 1;
}

/* ------------------------------------------------------------ the callers */

static void kick_io(cnb_node_t *n)
{
    char m[32];
    int i = 0;
    ei_encode_version(m, &i);
    ei_encode_atom(m, &i, GR_KICK);
    (void)cnb_send(n, NULL, &n->greg->pid, m, (size_t)i);
}

int cnb__greg_run(cnb_node_t *n, int op, const char *name, size_t len, const erlang_pid *pid,
                  int resolve, unsigned timeout_ms, erlang_pid *owner)
{
    struct cnb_greg *g = n->greg;
    if (!g)
        return CNB_ESTATE;
    if (cnb_on_io_thread(n))
        return CNB_ESTATE; /* the answers could only come in through this thread */
    greq_t *q = calloc(1, sizeof *q);
    if (!q || !(q->name = malloc(len))) {
        free(q);
        return CNB_ENOMEM;
    }
    memcpy(q->name, name, len);
    q->nlen = len;
    q->op = op;
    q->resolve = resolve;
    if (pid)
        q->pid = *pid;
    struct timespec dl;
    cnb__deadline(CLOCK_MONOTONIC, timeout_ms, &dl);
    pthread_mutex_lock(&g->mu);
    if (g->qt)
        g->qt->next = q;
    else
        g->qh = q;
    g->qt = q;
    pthread_mutex_unlock(&g->mu);
    kick_io(n);
    /* The answers take round trips to other nodes: the I/O thread need not
     * spin for this thread meanwhile. */
    cnb__rt_wait_begin(n);
    pthread_mutex_lock(&g->mu);
    while (q->state != RQ_DONE)
        if (pthread_cond_timedwait(&g->cv, &g->mu, &dl) == ETIMEDOUT)
            break;
    if (q->state == RQ_ACTIVE) {
        /* Too late: the registrar stops taking locks and gives back what it
         * holds before we return (so a caller that sees the timeout sees no
         * lock of ours), unless the change is out already. */
        q->abandoned = 1;
        pthread_mutex_unlock(&g->mu);
        kick_io(n);
        cnb__deadline(CLOCK_MONOTONIC, GR_ABANDON_WAIT_MS, &dl);
        pthread_mutex_lock(&g->mu);
        while (q->state != RQ_DONE && !q->changing)
            if (pthread_cond_timedwait(&g->cv, &g->mu, &dl) == ETIMEDOUT)
                break;
    }
    int rc = CNB_ETIMEDOUT, mine = 1;
    if (q->state == RQ_DONE) {
        rc = q->rc;
        if (owner && rc == CNB_EEXIST) {
            if (q->has_owner)
                *owner = q->owner;
            else
                memset(owner, 0, sizeof *owner);
        }
    } else if (q->state == RQ_QUEUED) {
        greq_t **pp = &g->qh, *prev = NULL;
        while (*pp != q) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        *pp = q->next;
        if (g->qt == q)
            g->qt = prev;
    } else {
        q->left = 1; /* the registrar frees it */
        mine = 0;
    }
    pthread_mutex_unlock(&g->mu);
    if (mine)
        req_free(q);
    return rc;
}
