/* runtime.c: C workers as Erlang processes: the process table, mailboxes of
 * signals, the worker pool, links (old and UNLINK_ID protocols), monitors
 * (by pid and by name), exit signals and trap_exit, gen_server and sys
 * messages, and termination that fires links and monitors.
 *
 * Ownership: a process's links and monitors are touched only by the pool
 * thread running it; every signal from elsewhere (the I/O thread, other
 * workers) goes through its mailbox, in arrival order, as in Erlang.
 * Tests: tests/integration/runtime_tests.erl, tests/integration/exunit/. */
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node_int.h"

#define BATCH 64          /* signals a worker handles before yielding its thread */
#define TAB_INIT 1024

enum sig_kind {
    SIG_MSG = 1,
    SIG_LINK,
    SIG_UNLINK,
    SIG_UNLINK_ID,
    SIG_UNLINK_ID_ACK,
    SIG_EXIT,
    SIG_EXIT2,
    SIG_MONITOR,
    SIG_DEMONITOR,
    SIG_DOWN,
    SIG_NODEDOWN,
    SIG_SHUTDOWN
};

typedef struct sig_meta {
    erlang_pid from;
    erlang_ref ref;
    uint64_t id;
    int by_name;                /* MONITOR/DEMONITOR/DOWN by name */
    char name[MAXATOMLEN_UTF8]; /* that name; NODEDOWN: the node */
} sig_meta_t;

typedef struct sig {
    struct sig *next;
    int kind;
    sig_meta_t *meta; /* NULL for plain messages */
    size_t len;
    char data[]; /* message or reason: ETF with version byte */
} sig_t;

typedef struct link {
    struct link *next;
    erlang_pid pid;
    int active;
    uint64_t unlink_id; /* outstanding UNLINK_ID when !active */
} link_t;

typedef struct mon {
    struct mon *next;
    erlang_ref ref;
    erlang_pid pid;             /* on_me: the monitoring pid; held: the target */
    int by_name;
    char name[MAXATOMLEN_UTF8]; /* held by name: target name; on_me: our name */
    char node[CNB_NAME_MAX];    /* held by name: target node */
} mon_t;

struct cnb_proc {
    cnb_rt_t *rt;
    cnb_node_t *node;
    uint64_t key; /* pid counter: num | serial << 15 */
    erlang_pid pid;
    const cnb_worker_ops_t *ops;
    void *state;
    char *name; /* registered name (malloc'd), or NULL */
    int trap_exit;
    /* mailbox */
    pthread_mutex_t mu;
    sig_t *head, *tail;
    int scheduled;
    int dead;
    struct cnb_proc *rq_next;
    struct cnb_proc *hnext; /* pid table chain */
    struct cnb_proc *nnext; /* name table chain */
    /* owned by the running thread */
    link_t *links;
    mon_t *on_me;
    mon_t *held;
    ei_x_buff reason;
    int has_reason;
    uint64_t unlink_seq;
};

struct cnb_rt {
    cnb_node_t *node;
    pthread_rwlock_t tab_lock;
    cnb_proc_t **tab;
    size_t tab_size, count;
    cnb_proc_t **names;
    size_t names_size;
    pthread_mutex_t rq_mu;
    pthread_cond_t rq_cv;
    pthread_cond_t idle_cv; /* count reached 0 */
    cnb_proc_t *rq_head, *rq_tail;
    int stop;
    unsigned nthreads;
    pthread_t *threads;
    int started;
};

static uint64_t pid_key(const erlang_pid *p)
{
    return (uint64_t)p->num | ((uint64_t)p->serial << 15);
}

int cnb__pid_eq(const erlang_pid *a, const erlang_pid *b)
{
    return a->num == b->num && a->serial == b->serial && a->creation == b->creation &&
           !strcmp(a->node, b->node);
}

int cnb__ref_eq(const erlang_ref *a, const erlang_ref *b)
{
    if (a->len != b->len || a->creation != b->creation || strcmp(a->node, b->node))
        return 0;
    for (int i = 0; i < a->len && i < 5; i++)
        if (a->n[i] != b->n[i])
            return 0;
    return 1;
}

size_t cnb__atom_term(char *buf, const char *atom)
{
    int i = 0;
    ei_encode_version(buf, &i);
    ei_encode_atom(buf, &i, atom);
    return (size_t)i;
}

static unsigned name_hash(const char *s, size_t size)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h % size;
}

/* ------------------------------------------------------------------ table */

static cnb_proc_t *find_locked(cnb_rt_t *rt, const erlang_pid *pid)
{
    if (!cnb_node_is_local_pid(rt->node, pid))
        return NULL;
    uint64_t k = pid_key(pid);
    for (cnb_proc_t *p = rt->tab[k % rt->tab_size]; p; p = p->hnext)
        if (p->key == k)
            return p;
    return NULL;
}

static cnb_proc_t *find_name_locked(cnb_rt_t *rt, const char *name)
{
    for (cnb_proc_t *p = rt->names[name_hash(name, rt->names_size)]; p; p = p->nnext)
        if (p->name && !strcmp(p->name, name))
            return p;
    return NULL;
}

static void grow_locked(cnb_rt_t *rt)
{
    size_t ns = rt->tab_size * 2;
    cnb_proc_t **nt = calloc(ns, sizeof(*nt));
    if (!nt)
        return; /* keep the old size: longer chains, still correct */
    for (size_t i = 0; i < rt->tab_size; i++)
        for (cnb_proc_t *p = rt->tab[i], *nx; p; p = nx) {
            nx = p->hnext;
            p->hnext = nt[p->key % ns];
            nt[p->key % ns] = p;
        }
    free(rt->tab);
    rt->tab = nt;
    rt->tab_size = ns;
}

static void name_del_locked(cnb_rt_t *rt, cnb_proc_t *p)
{
    if (!p->name)
        return;
    for (cnb_proc_t **pp = &rt->names[name_hash(p->name, rt->names_size)]; *pp;
         pp = &(*pp)->nnext)
        if (*pp == p) {
            *pp = p->nnext;
            break;
        }
    free(p->name);
    p->name = NULL;
}

/* ------------------------------------------------------------------ mailbox */

static void rq_push(cnb_rt_t *rt, cnb_proc_t *p)
{
    pthread_mutex_lock(&rt->rq_mu);
    p->rq_next = NULL;
    if (rt->rq_tail)
        rt->rq_tail->rq_next = p;
    else
        rt->rq_head = p;
    rt->rq_tail = p;
    pthread_cond_signal(&rt->rq_cv);
    pthread_mutex_unlock(&rt->rq_mu);
}

/* Appends a signal; schedules the process if it was idle. Takes s. */
static void push_sig(cnb_proc_t *p, sig_t *s)
{
    int sched = 0;
    s->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->next = s;
    else
        p->head = s;
    p->tail = s;
    if (!p->scheduled && !p->dead) {
        p->scheduled = 1;
        sched = 1;
    }
    pthread_mutex_unlock(&p->mu);
    if (sched)
        rq_push(p->rt, p);
}

static sig_t *new_sig(int kind, const char *data, size_t len, int with_meta)
{
    sig_t *s = malloc(sizeof(*s) + len);
    if (!s)
        return NULL;
    s->next = NULL;
    s->kind = kind;
    s->len = len;
    if (len)
        memcpy(s->data, data, len);
    s->meta = NULL;
    if (with_meta && !(s->meta = calloc(1, sizeof(*s->meta)))) {
        free(s);
        return NULL;
    }
    return s;
}

static void free_sig(sig_t *s)
{
    free(s->meta);
    free(s);
}

/* ------------------------------------------------------------------ signals out */

static int send_ctrl(cnb_node_t *n, const char *peer, ei_x_buff *ctrl, const char *payload,
                     size_t plen)
{
    int rc = cnb_send_ctrl(n, peer, ctrl->buff, (size_t)ctrl->index, payload, plen);
    ei_x_free(ctrl);
    return rc;
}

int cnb__sig_link(cnb_node_t *n, const erlang_pid *from, const erlang_pid *to)
{
    ei_x_buff x;
    if (ei_x_new_with_version(&x))
        return CNB_ENOMEM;
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_long(&x, CNB_OP_LINK);
    ei_x_encode_pid(&x, from);
    ei_x_encode_pid(&x, to);
    return send_ctrl(n, to->node, &x, NULL, 0);
}

static int peer_has(cnb_node_t *n, const char *peer, uint64_t flag)
{
    if (!strcmp(peer, cnb_node_name(n)))
        return 1;
    return (cnb_node_peer_flags(n, peer) & flag) != 0;
}

int cnb__sig_unlink(cnb_node_t *n, uint64_t id, const erlang_pid *from, const erlang_pid *to)
{
    ei_x_buff x;
    if (ei_x_new_with_version(&x))
        return CNB_ENOMEM;
    if (peer_has(n, to->node, CNB_DFLAG_UNLINK_ID)) {
        ei_x_encode_tuple_header(&x, 4);
        ei_x_encode_long(&x, CNB_OP_UNLINK_ID);
        ei_x_encode_ulonglong(&x, id);
    } else {
        ei_x_encode_tuple_header(&x, 3);
        ei_x_encode_long(&x, CNB_OP_UNLINK);
    }
    ei_x_encode_pid(&x, from);
    ei_x_encode_pid(&x, to);
    return send_ctrl(n, to->node, &x, NULL, 0);
}

int cnb__sig_unlink_ack(cnb_node_t *n, uint64_t id, const erlang_pid *from, const erlang_pid *to)
{
    ei_x_buff x;
    if (ei_x_new_with_version(&x))
        return CNB_ENOMEM;
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_long(&x, CNB_OP_UNLINK_ID_ACK);
    ei_x_encode_ulonglong(&x, id);
    ei_x_encode_pid(&x, from);
    ei_x_encode_pid(&x, to);
    return send_ctrl(n, to->node, &x, NULL, 0);
}

int cnb__sig_exit(cnb_node_t *n, int op, const erlang_pid *from, const erlang_pid *to,
                  const char *reason, size_t len)
{
    ei_x_buff x;
    if (ei_x_new_with_version(&x))
        return CNB_ENOMEM;
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_long(&x, op == CNB_OP_EXIT2 ? CNB_OP_PAYLOAD_EXIT2 : CNB_OP_PAYLOAD_EXIT);
    ei_x_encode_pid(&x, from);
    ei_x_encode_pid(&x, to);
    return send_ctrl(n, to->node, &x, reason, len);
}

int cnb__sig_monitor(cnb_node_t *n, int op, const erlang_pid *from, const erlang_pid *to,
                     const char *to_name, const char *peer, const erlang_ref *ref)
{
    ei_x_buff x;
    if (ei_x_new_with_version(&x))
        return CNB_ENOMEM;
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_long(&x, op);
    ei_x_encode_pid(&x, from);
    if (to_name)
        ei_x_encode_atom(&x, to_name);
    else
        ei_x_encode_pid(&x, to);
    ei_x_encode_ref(&x, ref);
    return send_ctrl(n, to_name ? peer : to->node, &x, NULL, 0);
}

int cnb__sig_down(cnb_node_t *n, const erlang_pid *obj, const char *obj_name,
                  const erlang_pid *to, const erlang_ref *ref, const char *reason, size_t len)
{
    ei_x_buff x;
    if (ei_x_new_with_version(&x))
        return CNB_ENOMEM;
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_long(&x, CNB_OP_PAYLOAD_MONITOR_P_EXIT);
    if (obj_name)
        ei_x_encode_atom(&x, obj_name);
    else
        ei_x_encode_pid(&x, obj);
    ei_x_encode_pid(&x, to);
    ei_x_encode_ref(&x, ref);
    return send_ctrl(n, to->node, &x, reason, len);
}

/* ------------------------------------------------------------------ I/O side */

static void reply_noproc_link(cnb_node_t *n, const cnb_msg_t *m)
{
    char r[32];
    size_t rl = cnb__atom_term(r, "noproc");
    cnb__sig_exit(n, CNB_OP_EXIT, &m->to, &m->from, r, rl);
}

static void reply_noproc_monitor(cnb_node_t *n, const cnb_msg_t *m)
{
    char r[32];
    size_t rl = cnb__atom_term(r, "noproc");
    cnb__sig_down(n, &m->to, m->has_to ? NULL : m->toname, &m->from, &m->ref, r, rl);
}

int cnb__rt_deliver(cnb_node_t *n, const cnb_msg_t *m)
{
    cnb_rt_t *rt = n->rt;
    if (!rt)
        return 0;
    if (m->op == CNB_OP_ALIAS_SEND || m->op == CNB_OP_SEND || m->op == CNB_OP_MONITOR_P_EXIT)
        if (cnb__calls_deliver(n, m))
            return 1;
    pthread_rwlock_rdlock(&rt->tab_lock);
    cnb_proc_t *p = NULL;
    if (m->has_to)
        p = find_locked(rt, &m->to);
    else if ((m->op == CNB_OP_REG_SEND || m->op == CNB_OP_MONITOR_P ||
              m->op == CNB_OP_DEMONITOR_P) && m->toname[0])
        p = find_name_locked(rt, m->toname);
    int handled = 1;
    sig_t *s = NULL;
    switch (m->op) {
    case CNB_OP_SEND:
    case CNB_OP_REG_SEND:
        if (p && m->payload)
            s = new_sig(SIG_MSG, m->payload, m->payload_len, 0);
        else
            handled = p != NULL || (m->has_to && cnb_node_is_local_pid(n, &m->to));
        break;
    case CNB_OP_LINK:
        if (p)
            s = new_sig(SIG_LINK, NULL, 0, 1);
        else if (cnb_node_is_local_pid(n, &m->to))
            reply_noproc_link(n, m);
        else
            handled = 0;
        break;
    case CNB_OP_UNLINK:
    case CNB_OP_UNLINK_ID:
    case CNB_OP_UNLINK_ID_ACK:
        if (p)
            s = new_sig(m->op == CNB_OP_UNLINK      ? SIG_UNLINK
                        : m->op == CNB_OP_UNLINK_ID ? SIG_UNLINK_ID
                                                    : SIG_UNLINK_ID_ACK,
                        NULL, 0, 1);
        else if (m->op == CNB_OP_UNLINK_ID && cnb_node_is_local_pid(n, &m->to))
            cnb__sig_unlink_ack(n, m->unlink_id, &m->to, &m->from);
        break;
    case CNB_OP_EXIT:
    case CNB_OP_EXIT2:
        if (p && m->payload)
            s = new_sig(m->op == CNB_OP_EXIT ? SIG_EXIT : SIG_EXIT2, m->payload, m->payload_len,
                        1);
        break;
    case CNB_OP_MONITOR_P:
        if (p)
            s = new_sig(SIG_MONITOR, NULL, 0, 1);
        else if (m->has_to ? cnb_node_is_local_pid(n, &m->to) : 1)
            reply_noproc_monitor(n, m);
        break;
    case CNB_OP_DEMONITOR_P:
        if (p)
            s = new_sig(SIG_DEMONITOR, NULL, 0, 1);
        break;
    case CNB_OP_MONITOR_P_EXIT:
        if (p && m->payload)
            s = new_sig(SIG_DOWN, m->payload, m->payload_len, 1);
        break;
    case CNB_OP_GROUP_LEADER:
        break;
    case CNB_OP_ALIAS_SEND:
        /* Aliases serve calls only: one that no call waits for anymore is a
         * late reply, dropped (never handed to anyone else). */
        break;
    default:
        handled = p != NULL;
        break;
    }
    if (s && s->meta) {
        if (m->has_from)
            s->meta->from = m->from;
        if (m->has_ref)
            s->meta->ref = m->ref;
        s->meta->id = m->unlink_id;
        if (!m->has_to && m->toname[0]) {
            s->meta->by_name = 1;
            snprintf(s->meta->name, sizeof(s->meta->name), "%s", m->toname);
        }
        if (m->op == CNB_OP_MONITOR_P_EXIT) {
            /* "from" is the monitored object: a pid, or a name (toname). */
            s->meta->by_name = !m->has_from;
        }
    }
    if (s)
        push_sig(p, s);
    pthread_rwlock_unlock(&rt->tab_lock);
    return handled;
}

void cnb__rt_nodedown(cnb_node_t *n, const char *peer)
{
    cnb_rt_t *rt = n->rt;
    if (!rt)
        return;
    cnb__calls_nodedown(n, peer);
    cnb__relay_nodedown(n, peer);
    pthread_rwlock_rdlock(&rt->tab_lock);
    for (size_t i = 0; i < rt->tab_size; i++)
        for (cnb_proc_t *p = rt->tab[i]; p; p = p->hnext) {
            sig_t *s = new_sig(SIG_NODEDOWN, NULL, 0, 1);
            if (!s)
                continue;
            snprintf(s->meta->name, sizeof(s->meta->name), "%s", peer);
            push_sig(p, s);
        }
    pthread_rwlock_unlock(&rt->tab_lock);
}

/* ------------------------------------------------------------------ worker side */

static int is_atom_term(const char *t, size_t len, const char *atom)
{
    int i = 0, ver;
    char a[MAXATOMLEN_UTF8];
    return len > 0 && !ei_decode_version(t, &i, &ver) && !ei_decode_atom(t, &i, a) &&
           !strcmp(a, atom) && (size_t)i == len;
}

static void set_reason_atom(cnb_proc_t *p, const char *atom)
{
    ei_x_free(&p->reason);
    ei_x_new_with_version(&p->reason);
    ei_x_encode_atom(&p->reason, atom);
    p->has_reason = 1;
}

static void set_reason(cnb_proc_t *p, const char *t, size_t len)
{
    ei_x_free(&p->reason);
    ei_x_new(&p->reason);
    ei_x_append_buf(&p->reason, t, (int)len);
    p->has_reason = 1;
}

static void deliver_info(cnb_proc_t *p, const char *t, size_t len);

/* {'EXIT', From, Reason} for a trapping process. */
static void info_exit(cnb_proc_t *p, const erlang_pid *from, const char *reason, size_t len)
{
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_atom(&x, "EXIT");
    ei_x_encode_pid(&x, from);
    ei_x_append_buf(&x, reason + 1, (int)len - 1);
    deliver_info(p, x.buff, (size_t)x.index);
    ei_x_free(&x);
}

static link_t *find_link(cnb_proc_t *p, const erlang_pid *pid, link_t ***prev)
{
    for (link_t **pp = &p->links; *pp; pp = &(*pp)->next)
        if (cnb__pid_eq(&(*pp)->pid, pid)) {
            if (prev)
                *prev = pp;
            return *pp;
        }
    return NULL;
}

static void drop_link(link_t **pp)
{
    link_t *l = *pp;
    *pp = l->next;
    free(l);
}

static int add_link(cnb_proc_t *p, const erlang_pid *pid)
{
    link_t *l = find_link(p, pid, NULL);
    if (l) {
        l->active = 1;
        l->unlink_id = 0;
        return 0;
    }
    l = calloc(1, sizeof(*l));
    if (!l)
        return CNB_ENOMEM;
    l->pid = *pid;
    l->active = 1;
    l->next = p->links;
    p->links = l;
    return 0;
}

static void callback_failed(cnb_proc_t *p, const char *cb, int code)
{
    ei_x_free(&p->reason);
    ei_x_new_with_version(&p->reason);
    ei_x_encode_tuple_header(&p->reason, 3);
    ei_x_encode_atom(&p->reason, "callback_failed");
    ei_x_encode_atom(&p->reason, cb);
    ei_x_encode_long(&p->reason, code);
    p->has_reason = 1;
    p->dead = 1;
    cnb__log(p->node, CNB_LOG_WARNING, "worker <%u.%u> %s failed: %s", p->pid.num, p->pid.serial,
             cb, cnb_strerror(code));
}

static void after_callback(cnb_proc_t *p, const char *cb, int rc)
{
    if (rc < 0)
        callback_failed(p, cb, rc);
    else if (rc == CNB_STOP) {
        if (!p->has_reason)
            set_reason_atom(p, "normal");
        p->dead = 1;
    }
}

static void deliver_info(cnb_proc_t *p, const char *t, size_t len)
{
    if (!p->ops->handle_info)
        return;
    after_callback(p, "handle_info", p->ops->handle_info(p, p->state, t, len));
}

int cnb_reply(cnb_node_t *n, const cnb_from_t *from, const char *term, size_t len)
{
    if (!from || !term || len < 2 || (unsigned char)term[0] != 131 || !from->tag_len)
        return CNB_EINVAL;
    /* {Tag, Reply} */
    size_t total = 1 + 2 + from->tag_len + (len - 1);
    char stackbuf[2048];
    char *b = total <= sizeof(stackbuf) ? stackbuf : malloc(total);
    if (!b)
        return CNB_ENOMEM;
    b[0] = (char)131;
    b[1] = 104;
    b[2] = 2;
    memcpy(b + 3, from->tag, from->tag_len);
    memcpy(b + 3 + from->tag_len, term + 1, len - 1);
    /* A tag [alias|Ref] is answered through the alias (OTP 24+ gen:call). */
    int i = 0, arity;
    char atom[MAXATOMLEN_UTF8];
    erlang_ref alias;
    int rc;
    if (!ei_decode_list_header(from->tag, &i, &arity) && arity == 1 &&
        !ei_decode_atom(from->tag, &i, atom) && !strcmp(atom, "alias") &&
        !ei_decode_ref(from->tag, &i, &alias))
        rc = cnb_alias_send(n, NULL, &alias, b, total);
    else
        rc = cnb_send(n, NULL, &from->pid, b, total);
    if (b != stackbuf)
        free(b);
    return rc;
}

/* sys messages: {system, From, Request}. */
static void handle_system(cnb_proc_t *p, const cnb_from_t *from, const char *req, int req_len)
{
    ei_x_buff x;
    ei_x_new_with_version(&x);
    int i = 0, arity;
    char atom[MAXATOMLEN_UTF8] = "";
    if (!ei_decode_atom(req, &i, atom)) {
        /* plain atom request */
    } else {
        i = 0;
        if (!ei_decode_tuple_header(req, &i, &arity) && arity >= 1)
            ei_decode_atom(req, &i, atom);
    }
    ei_x_buff st;
    ei_x_new(&st);
    int have_state = p->ops->format_status && p->ops->format_status(p, p->state, &st) == 0 &&
                     st.index > 0;
    if (!strcmp(atom, "get_state")) {
        if (have_state)
            ei_x_append_buf(&x, st.buff, st.index);
        else {
            ei_x_encode_tuple_header(&x, 2);
            ei_x_encode_atom(&x, "cnode_worker");
            ei_x_encode_pid(&x, &p->pid);
        }
    } else if (!strcmp(atom, "get_status")) {
        /* {status, Pid, {module, cnode_worker}, [PDict, SysState, Parent, Dbg, Misc]} */
        ei_x_encode_tuple_header(&x, 4);
        ei_x_encode_atom(&x, "status");
        ei_x_encode_pid(&x, &p->pid);
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, "module");
        ei_x_encode_atom(&x, "cnode_worker");
        ei_x_encode_list_header(&x, 5);
        ei_x_encode_empty_list(&x);
        ei_x_encode_atom(&x, "running");
        ei_x_encode_pid(&x, &p->pid);
        ei_x_encode_empty_list(&x);
        ei_x_encode_list_header(&x, 2);
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, "header");
        ei_x_encode_string(&x, "C worker");
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, "data");
        ei_x_encode_list_header(&x, 2);
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_string(&x, "Registered name");
        ei_x_encode_atom(&x, p->name ? p->name : "undefined");
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_string(&x, "State");
        if (have_state)
            ei_x_append_buf(&x, st.buff, st.index);
        else
            ei_x_encode_atom(&x, "undefined");
        ei_x_encode_empty_list(&x);
        ei_x_encode_empty_list(&x);
        ei_x_encode_empty_list(&x);
    } else if (!strcmp(atom, "suspend") || !strcmp(atom, "resume")) {
        ei_x_encode_atom(&x, "ok");
    } else if (!strcmp(atom, "terminate")) {
        /* {terminate, Reason}: stop with that reason (sys:terminate/2). */
        int j = 0, ar;
        if (!ei_decode_tuple_header(req, &j, &ar) && ar == 2 && !ei_skip_term(req, &j)) {
            int s0 = j;
            if (!ei_skip_term(req, &j)) {
                ei_x_buff r;
                ei_x_new_with_version(&r);
                ei_x_append_buf(&r, req + s0, j - s0);
                set_reason(p, r.buff, (size_t)r.index);
                ei_x_free(&r);
                p->dead = 1;
            }
        }
        ei_x_encode_atom(&x, "ok");
    } else {
        /* Refused cleanly: {error, {unsupported, Request}} */
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, "error");
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, "unsupported_system_message");
        ei_x_append_buf(&x, req, req_len);
    }
    cnb_reply(p->node, from, x.buff, (size_t)x.index);
    ei_x_free(&x);
    ei_x_free(&st);
}

/* Decodes {Pid, Tag} at b[*i] into from. */
static int decode_from(const char *b, int *i, cnb_from_t *from)
{
    int arity;
    if (ei_decode_tuple_header(b, i, &arity) || arity != 2 || ei_decode_pid(b, i, &from->pid))
        return -1;
    int t0 = *i;
    if (ei_skip_term(b, i) || (size_t)(*i - t0) > sizeof(from->tag))
        return -1;
    memcpy(from->tag, b + t0, (size_t)(*i - t0));
    from->tag_len = (size_t)(*i - t0);
    return 0;
}

static void handle_msg(cnb_proc_t *p, const char *b, size_t len)
{
    int i = 0, ver, arity;
    char atom[MAXATOMLEN_UTF8];
    if (ei_decode_version(b, &i, &ver) || ei_decode_tuple_header(b, &i, &arity) || arity < 2 ||
        ei_decode_atom(b, &i, atom))
        goto info;
    if (arity == 3 && !strcmp(atom, "$gen_call")) {
        cnb_from_t from;
        if (decode_from(b, &i, &from))
            goto info;
        int r0 = i;
        if (ei_skip_term(b, &i))
            goto info;
        if (!p->ops->handle_call) {
            /* No call handler: the caller gets an exit, as a gen_server
             * crashing on an unknown call would give. */
            callback_failed(p, "handle_call", CNB_EINVAL);
            return;
        }
        /* The request as a term of its own (with version byte). */
        size_t rl = (size_t)(i - r0) + 1;
        char sbuf[512];
        char *req = rl <= sizeof(sbuf) ? sbuf : malloc(rl);
        if (!req) {
            callback_failed(p, "handle_call", CNB_ENOMEM);
            return;
        }
        req[0] = (char)131;
        memcpy(req + 1, b + r0, rl - 1);
        ei_x_buff reply;
        ei_x_new_with_version(&reply);
        int rc = p->ops->handle_call(p, p->state, req, rl, &from, &reply);
        if ((rc == CNB_REPLY || rc == CNB_STOP) && reply.index > 1)
            cnb_reply(p->node, &from, reply.buff, (size_t)reply.index);
        ei_x_free(&reply);
        if (req != sbuf)
            free(req);
        after_callback(p, "handle_call", rc == CNB_REPLY ? 0 : rc);
        return;
    }
    if (arity == 2 && !strcmp(atom, "$gen_cast")) {
        if (!p->ops->handle_cast)
            goto info;
        int m0 = i;
        if (ei_skip_term(b, &i))
            goto info;
        size_t ml = (size_t)(i - m0) + 1;
        char *m = malloc(ml);
        if (!m)
            return;
        m[0] = (char)131;
        memcpy(m + 1, b + m0, ml - 1);
        after_callback(p, "handle_cast", p->ops->handle_cast(p, p->state, m, ml));
        free(m);
        return;
    }
    if (arity == 3 && !strcmp(atom, "system")) {
        cnb_from_t from;
        if (decode_from(b, &i, &from))
            goto info;
        int q0 = i;
        if (ei_skip_term(b, &i))
            goto info;
        handle_system(p, &from, b + q0, i - q0);
        return;
    }
info:
    deliver_info(p, b, len);
}

/* A link's exit signal (or noconnection). */
static void link_exit(cnb_proc_t *p, const erlang_pid *from, const char *reason, size_t len)
{
    link_t **pp;
    link_t *l = find_link(p, from, &pp);
    if (!l || !l->active)
        return;
    drop_link(pp);
    if (p->trap_exit)
        info_exit(p, from, reason, len);
    else if (!is_atom_term(reason, len, "normal")) {
        set_reason(p, reason, len);
        p->dead = 1;
    }
}

static mon_t *take_mon(mon_t **list, const erlang_ref *ref)
{
    for (mon_t **pp = list; *pp; pp = &(*pp)->next)
        if (cnb__ref_eq(&(*pp)->ref, ref)) {
            mon_t *m = *pp;
            *pp = m->next;
            return m;
        }
    return NULL;
}

/* {'DOWN', Ref, process, Obj, Reason} to a worker holding monitor m. */
static void info_down(cnb_proc_t *p, const mon_t *m, const char *reason, size_t len)
{
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 5);
    ei_x_encode_atom(&x, "DOWN");
    ei_x_encode_ref(&x, &m->ref);
    ei_x_encode_atom(&x, "process");
    if (m->by_name) {
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, m->name);
        ei_x_encode_atom(&x, m->node);
    } else {
        ei_x_encode_pid(&x, &m->pid);
    }
    ei_x_append_buf(&x, reason + 1, (int)len - 1);
    deliver_info(p, x.buff, (size_t)x.index);
    ei_x_free(&x);
}

static void handle_sig(cnb_proc_t *p, sig_t *s)
{
    sig_meta_t *mt = s->meta;
    switch (s->kind) {
    case SIG_MSG:
        handle_msg(p, s->data, s->len);
        break;
    case SIG_LINK:
        if (!find_link(p, &mt->from, NULL))
            add_link(p, &mt->from);
        break;
    case SIG_UNLINK: {
        link_t **pp;
        if (find_link(p, &mt->from, &pp))
            drop_link(pp);
        break;
    }
    case SIG_UNLINK_ID: {
        link_t **pp;
        link_t *l = find_link(p, &mt->from, &pp);
        if (l && l->active)
            drop_link(pp);
        cnb__sig_unlink_ack(p->node, mt->id, &p->pid, &mt->from);
        break;
    }
    case SIG_UNLINK_ID_ACK: {
        link_t **pp;
        link_t *l = find_link(p, &mt->from, &pp);
        if (l && !l->active && l->unlink_id == mt->id)
            drop_link(pp);
        break;
    }
    case SIG_EXIT:
        link_exit(p, &mt->from, s->data, s->len);
        break;
    case SIG_EXIT2:
        if (is_atom_term(s->data, s->len, "kill")) {
            set_reason_atom(p, "killed");
            p->dead = 1;
        } else if (p->trap_exit) {
            info_exit(p, &mt->from, s->data, s->len);
        } else if (!is_atom_term(s->data, s->len, "normal") || cnb__pid_eq(&mt->from, &p->pid)) {
            set_reason(p, s->data, s->len);
            p->dead = 1;
        }
        break;
    case SIG_MONITOR: {
        mon_t *m = calloc(1, sizeof(*m));
        if (!m)
            break;
        m->ref = mt->ref;
        m->pid = mt->from;
        m->by_name = mt->by_name;
        if (mt->by_name)
            snprintf(m->name, sizeof(m->name), "%s", mt->name);
        m->next = p->on_me;
        p->on_me = m;
        break;
    }
    case SIG_DEMONITOR:
        free(take_mon(&p->on_me, &mt->ref));
        break;
    case SIG_DOWN: {
        mon_t *m = take_mon(&p->held, &mt->ref);
        if (m) {
            info_down(p, m, s->data, s->len);
            free(m);
        }
        break;
    }
    case SIG_NODEDOWN: {
        char r[32];
        size_t rl = cnb__atom_term(r, "noconnection");
        const char *peer = mt->name;
        /* Links across the lost connection. */
        for (link_t **pp = &p->links; *pp && !p->dead;) {
            if (!strcmp((*pp)->pid.node, peer)) {
                erlang_pid from = (*pp)->pid;
                int active = (*pp)->active;
                drop_link(pp);
                if (!active)
                    continue;
                if (p->trap_exit)
                    info_exit(p, &from, r, rl);
                else {
                    set_reason(p, r, rl);
                    p->dead = 1;
                }
            } else {
                pp = &(*pp)->next;
            }
        }
        /* Monitors we hold on processes there: DOWN noconnection. */
        for (mon_t **pp = &p->held; *pp && !p->dead;) {
            const char *mn = (*pp)->by_name ? (*pp)->node : (*pp)->pid.node;
            if (!strcmp(mn, peer)) {
                mon_t *m = *pp;
                *pp = m->next;
                info_down(p, m, r, rl);
                free(m);
            } else {
                pp = &(*pp)->next;
            }
        }
        /* Monitors processes there held on us: gone with the connection. */
        for (mon_t **pp = &p->on_me; *pp;) {
            if (!strcmp((*pp)->pid.node, peer)) {
                mon_t *m = *pp;
                *pp = m->next;
                free(m);
            } else {
                pp = &(*pp)->next;
            }
        }
        break;
    }
    case SIG_SHUTDOWN:
        set_reason_atom(p, "shutdown");
        p->dead = 1;
        break;
    }
}

/* The worker ends: terminate, leave the table, answer what is still queued,
 * fire links and monitors, free. Runs on the worker's own thread. */
static void finish(cnb_proc_t *p)
{
    cnb_rt_t *rt = p->rt;
    cnb_node_t *n = p->node;
    if (!p->has_reason)
        set_reason_atom(p, "normal");
    const char *reason = p->reason.buff;
    size_t rlen = (size_t)p->reason.index;
    if (p->ops->terminate)
        p->ops->terminate(p, p->state, reason, rlen);
    char name[MAXATOMLEN_UTF8];
    snprintf(name, sizeof(name), "%s", p->name ? p->name : "");

    pthread_rwlock_wrlock(&rt->tab_lock);
    for (cnb_proc_t **pp = &rt->tab[p->key % rt->tab_size]; *pp; pp = &(*pp)->hnext)
        if (*pp == p) {
            *pp = p->hnext;
            break;
        }
    name_del_locked(rt, p);
    rt->count--;
    if (rt->count == 0)
        pthread_cond_broadcast(&rt->idle_cv);
    pthread_rwlock_unlock(&rt->tab_lock);

    /* Nobody can push now. Signals still queued arrived before the end. */
    pthread_mutex_lock(&p->mu);
    sig_t *s = p->head;
    p->head = p->tail = NULL;
    pthread_mutex_unlock(&p->mu);
    while (s) {
        sig_t *nx = s->next;
        if (s->kind == SIG_LINK)
            cnb__sig_exit(n, CNB_OP_EXIT, &p->pid, &s->meta->from, reason, rlen);
        else if (s->kind == SIG_MONITOR)
            cnb__sig_down(n, &p->pid, s->meta->by_name ? s->meta->name : NULL, &s->meta->from,
                          &s->meta->ref, reason, rlen);
        else if (s->kind == SIG_UNLINK_ID)
            cnb__sig_unlink_ack(n, s->meta->id, &p->pid, &s->meta->from);
        free_sig(s);
        s = nx;
    }
    while (p->links) {
        link_t *l = p->links;
        p->links = l->next;
        if (l->active)
            cnb__sig_exit(n, CNB_OP_EXIT, &p->pid, &l->pid, reason, rlen);
        free(l);
    }
    while (p->on_me) {
        mon_t *m = p->on_me;
        p->on_me = m->next;
        cnb__sig_down(n, &p->pid, m->by_name ? m->name : NULL, &m->pid, &m->ref, reason, rlen);
        free(m);
    }
    while (p->held) {
        mon_t *m = p->held;
        p->held = m->next;
        cnb__sig_monitor(n, CNB_OP_DEMONITOR_P, &p->pid, &m->pid, m->by_name ? m->name : NULL,
                         m->node, &m->ref);
        free(m);
    }
    cnb__log(n, CNB_LOG_DEBUG, "worker <%u.%u>%s%s ended", p->pid.num, p->pid.serial,
             name[0] ? " " : "", name);
    ei_x_free(&p->reason);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static void run(cnb_proc_t *p)
{
    for (int k = 0; k < BATCH; k++) {
        pthread_mutex_lock(&p->mu);
        sig_t *s = p->head;
        if (!s) {
            p->scheduled = 0;
            pthread_mutex_unlock(&p->mu);
            return;
        }
        p->head = s->next;
        if (!p->head)
            p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        handle_sig(p, s);
        free_sig(s);
        if (p->dead) {
            finish(p);
            return;
        }
    }
    rq_push(p->rt, p); /* still scheduled: let others run first */
}

static void *pool_thread(void *arg)
{
    cnb_rt_t *rt = arg;
    for (;;) {
        pthread_mutex_lock(&rt->rq_mu);
        while (!rt->rq_head && !rt->stop)
            pthread_cond_wait(&rt->rq_cv, &rt->rq_mu);
        if (!rt->rq_head && rt->stop) {
            pthread_mutex_unlock(&rt->rq_mu);
            return NULL;
        }
        cnb_proc_t *p = rt->rq_head;
        rt->rq_head = p->rq_next;
        if (!rt->rq_head)
            rt->rq_tail = NULL;
        pthread_mutex_unlock(&rt->rq_mu);
        run(p);
    }
}

/* ------------------------------------------------------------------ public API */

/* A worker whose init ran but that cannot go live (its name was taken
 * meanwhile, or no memory for the name): it ends at once, normally, so its
 * terminate runs and whatever init linked or monitored is told. Called with
 * tab_lock write-locked; returns with it unlocked. */
static void abandon_locked(cnb_rt_t *rt, cnb_proc_t *p)
{
    set_reason_atom(p, "normal");
    p->dead = 1;
    rt->count++; /* finish() takes it out again */
    p->hnext = rt->tab[p->key % rt->tab_size];
    rt->tab[p->key % rt->tab_size] = p;
    pthread_rwlock_unlock(&rt->tab_lock);
    finish(p);
}

int cnb_spawn(cnb_node_t *n, const cnb_worker_ops_t *ops, void *arg, const cnb_spawn_opts_t *o,
              erlang_pid *out)
{
    cnb_rt_t *rt = n->rt;
    if (!ops || !out)
        return CNB_EINVAL;
    if (atomic_load(&n->stopping) || rt->stop)
        return CNB_ECLOSED;
    if (o && o->name && (!o->name[0] || strlen(o->name) >= MAXATOMLEN_UTF8))
        return CNB_EINVAL;
    cnb_proc_t *p = calloc(1, sizeof(*p));
    if (!p)
        return CNB_ENOMEM;
    p->rt = rt;
    p->node = n;
    p->ops = ops;
    pthread_mutex_init(&p->mu, NULL);
    cnb_node_make_pid(n, &p->pid);
    p->key = pid_key(&p->pid);
    p->trap_exit = o && o->trap_exit;
    p->scheduled = 1; /* not runnable until live */
    if (o && o->name) {
        /* Refuse early when the name is taken, before init runs. */
        pthread_rwlock_rdlock(&rt->tab_lock);
        cnb_proc_t *owner = find_name_locked(rt, o->name);
        if (owner)
            *out = owner->pid;
        pthread_rwlock_unlock(&rt->tab_lock);
        if (owner) {
            pthread_mutex_destroy(&p->mu);
            free(p);
            return CNB_EEXIST;
        }
    }
    if (o && o->link && add_link(p, o->link) == 0)
        cnb__sig_link(n, &p->pid, o->link);
    int rc = ops->init ? ops->init(p, arg, &p->state) : 0;
    if (rc < 0) {
        /* A failed init: links made so far get the reason, like proc_lib. */
        set_reason_atom(p, "init_failed");
        while (p->links) {
            link_t *l = p->links;
            p->links = l->next;
            cnb__sig_exit(n, CNB_OP_EXIT, &p->pid, &l->pid, p->reason.buff,
                          (size_t)p->reason.index);
            free(l);
        }
        while (p->held) {
            mon_t *m = p->held;
            p->held = m->next;
            free(m);
        }
        ei_x_free(&p->reason);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return rc;
    }
    pthread_rwlock_wrlock(&rt->tab_lock);
    if (o && o->name) {
        cnb_proc_t *owner = find_name_locked(rt, o->name);
        if (owner) {
            /* Lost a race for the name: end this one as if it had stopped. */
            *out = owner->pid;
            abandon_locked(rt, p);
            return CNB_EEXIST;
        }
        if (!(p->name = strdup(o->name))) {
            abandon_locked(rt, p);
            return CNB_ENOMEM;
        }
        unsigned h = name_hash(p->name, rt->names_size);
        p->nnext = rt->names[h];
        rt->names[h] = p;
    }
    if (rt->count + 1 > rt->tab_size * 2)
        grow_locked(rt);
    p->hnext = rt->tab[p->key % rt->tab_size];
    rt->tab[p->key % rt->tab_size] = p;
    rt->count++;
    *out = p->pid;
    pthread_rwlock_unlock(&rt->tab_lock);
    /* Live: run whatever arrived meanwhile. */
    pthread_mutex_lock(&p->mu);
    int sched = p->head != NULL;
    p->scheduled = sched;
    pthread_mutex_unlock(&p->mu);
    if (sched)
        rq_push(rt, p);
    return 0;
}

const erlang_pid *cnb_self(const cnb_proc_t *p)
{
    return &p->pid;
}

cnb_node_t *cnb_proc_node(const cnb_proc_t *p)
{
    return p->node;
}

int cnb_proc_set_reason(cnb_proc_t *p, const char *reason, size_t len)
{
    if (!reason || len < 2 || (unsigned char)reason[0] != 131)
        return CNB_EINVAL;
    set_reason(p, reason, len);
    return 0;
}

int cnb_trap_exit(cnb_proc_t *p, int on)
{
    int old = p->trap_exit;
    p->trap_exit = on != 0;
    return old;
}

int cnb_link(cnb_proc_t *p, const erlang_pid *to)
{
    if (!to)
        return CNB_EINVAL;
    if (cnb__pid_eq(to, &p->pid))
        return 0;
    int rc = add_link(p, to);
    return rc ? rc : cnb__sig_link(p->node, &p->pid, to);
}

int cnb_unlink(cnb_proc_t *p, const erlang_pid *to)
{
    link_t **pp;
    link_t *l = find_link(p, to, &pp);
    if (!l || !l->active)
        return 0;
    if (peer_has(p->node, to->node, CNB_DFLAG_UNLINK_ID)) {
        l->active = 0;
        l->unlink_id = ++p->unlink_seq;
        return cnb__sig_unlink(p->node, l->unlink_id, &p->pid, to);
    }
    drop_link(pp);
    return cnb__sig_unlink(p->node, 0, &p->pid, to);
}

int cnb_monitor(cnb_proc_t *p, const erlang_pid *to, erlang_ref *ref)
{
    mon_t *m = calloc(1, sizeof(*m));
    if (!m || !to)
        return free(m), CNB_ENOMEM;
    cnb_node_make_ref(p->node, &m->ref);
    m->pid = *to;
    snprintf(m->node, sizeof(m->node), "%s", to->node);
    m->next = p->held;
    p->held = m;
    if (ref)
        *ref = m->ref;
    return cnb__sig_monitor(p->node, CNB_OP_MONITOR_P, &p->pid, to, NULL, NULL, &m->ref);
}

int cnb_monitor_name(cnb_proc_t *p, const char *name, const char *node, erlang_ref *ref)
{
    if (!name || !node || strlen(name) >= MAXATOMLEN_UTF8 || strlen(node) >= CNB_NAME_MAX)
        return CNB_EINVAL;
    mon_t *m = calloc(1, sizeof(*m));
    if (!m)
        return CNB_ENOMEM;
    cnb_node_make_ref(p->node, &m->ref);
    m->by_name = 1;
    snprintf(m->name, sizeof(m->name), "%s", name);
    snprintf(m->node, sizeof(m->node), "%s", node);
    m->next = p->held;
    p->held = m;
    if (ref)
        *ref = m->ref;
    return cnb__sig_monitor(p->node, CNB_OP_MONITOR_P, &p->pid, NULL, name, node, &m->ref);
}

int cnb_demonitor(cnb_proc_t *p, const erlang_ref *ref)
{
    mon_t *m = take_mon(&p->held, ref);
    if (!m)
        return 0;
    int rc = cnb__sig_monitor(p->node, CNB_OP_DEMONITOR_P, &p->pid, &m->pid,
                              m->by_name ? m->name : NULL, m->node, &m->ref);
    free(m);
    return rc;
}

int cnb_exit(cnb_node_t *n, const erlang_pid *from, const erlang_pid *to, const char *reason,
             size_t len)
{
    if (!to || !reason || len < 2 || (unsigned char)reason[0] != 131)
        return CNB_EINVAL;
    erlang_pid f;
    if (!from) {
        cnb_node_make_pid(n, &f);
        from = &f;
    }
    return cnb__sig_exit(n, CNB_OP_EXIT2, from, to, reason, len);
}

int cnb_register(cnb_node_t *n, const char *name, const erlang_pid *pid)
{
    cnb_rt_t *rt = n->rt;
    if (!name || !name[0] || strlen(name) >= MAXATOMLEN_UTF8 || !pid)
        return CNB_EINVAL;
    int rc = 0;
    pthread_rwlock_wrlock(&rt->tab_lock);
    cnb_proc_t *p = find_locked(rt, pid);
    if (!p || p->dead)
        rc = CNB_ENOPROC;
    else if (find_name_locked(rt, name))
        rc = CNB_EEXIST;
    else if (p->name)
        rc = CNB_EBUSY; /* a process has at most one registered name */
    else if (!(p->name = strdup(name)))
        rc = CNB_ENOMEM;
    else {
        unsigned h = name_hash(name, rt->names_size);
        p->nnext = rt->names[h];
        rt->names[h] = p;
    }
    pthread_rwlock_unlock(&rt->tab_lock);
    return rc;
}

int cnb_unregister(cnb_node_t *n, const char *name)
{
    cnb_rt_t *rt = n->rt;
    pthread_rwlock_wrlock(&rt->tab_lock);
    cnb_proc_t *p = name ? find_name_locked(rt, name) : NULL;
    if (p)
        name_del_locked(rt, p);
    pthread_rwlock_unlock(&rt->tab_lock);
    return p ? 0 : CNB_ENOENT;
}

int cnb_whereis(cnb_node_t *n, const char *name, erlang_pid *pid)
{
    cnb_rt_t *rt = n->rt;
    pthread_rwlock_rdlock(&rt->tab_lock);
    cnb_proc_t *p = name ? find_name_locked(rt, name) : NULL;
    if (p && pid)
        *pid = p->pid;
    pthread_rwlock_unlock(&rt->tab_lock);
    return p ? 0 : CNB_ENOENT;
}

size_t cnb_node_process_count(cnb_node_t *n)
{
    cnb_rt_t *rt = n->rt;
    pthread_rwlock_rdlock(&rt->tab_lock);
    size_t c = rt->count;
    pthread_rwlock_unlock(&rt->tab_lock);
    return c;
}

int cnb_node_shutdown(cnb_node_t *n, unsigned timeout_ms)
{
    cnb_rt_t *rt = n->rt;
    pthread_rwlock_rdlock(&rt->tab_lock);
    for (size_t i = 0; i < rt->tab_size; i++)
        for (cnb_proc_t *p = rt->tab[i]; p; p = p->hnext) {
            sig_t *s = new_sig(SIG_SHUTDOWN, NULL, 0, 0);
            if (s)
                push_sig(p, s);
        }
    pthread_rwlock_unlock(&rt->tab_lock);
    /* Wait for the count to reach zero (idle_cv is signalled under tab_lock's
     * writers; poll with a short sleep to keep the locking simple). */
    int64_t end = cnb__now_ms() + timeout_ms;
    while (cnb_node_process_count(n) > 0 && cnb__now_ms() < end) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    size_t left = cnb_node_process_count(n);
    if (left)
        cnb__log(n, CNB_LOG_WARNING, "%zu worker(s) did not end within %u ms", left, timeout_ms);
    cnb_node_stop(n);
    return left ? CNB_ETIMEDOUT : 0;
}

/* ------------------------------------------------------------------ lifecycle */

int cnb__rt_create(cnb_node_t *n, unsigned threads, cnb_rt_t **out)
{
    cnb_rt_t *rt = calloc(1, sizeof(*rt));
    if (!rt)
        return CNB_ENOMEM;
    rt->node = n;
    rt->nthreads = threads ? threads : 2;
    rt->tab_size = TAB_INIT;
    rt->names_size = 256;
    rt->tab = calloc(rt->tab_size, sizeof(*rt->tab));
    rt->names = calloc(rt->names_size, sizeof(*rt->names));
    rt->threads = calloc(rt->nthreads, sizeof(*rt->threads));
    if (!rt->tab || !rt->names || !rt->threads) {
        free(rt->tab);
        free(rt->names);
        free(rt->threads);
        free(rt);
        return CNB_ENOMEM;
    }
    pthread_rwlock_init(&rt->tab_lock, NULL);
    pthread_mutex_init(&rt->rq_mu, NULL);
    pthread_cond_init(&rt->rq_cv, NULL);
    pthread_cond_init(&rt->idle_cv, NULL);
    *out = rt;
    return 0;
}

int cnb__rt_start(cnb_rt_t *rt)
{
    for (unsigned i = 0; i < rt->nthreads; i++)
        if (cnb__thread_create(&rt->threads[i], pool_thread, rt) == 0)
            rt->started++;
    return rt->started ? 0 : CNB_ESYS;
}

void cnb__rt_destroy(cnb_rt_t *rt)
{
    if (!rt)
        return;
    pthread_mutex_lock(&rt->rq_mu);
    rt->stop = 1;
    pthread_cond_broadcast(&rt->rq_cv);
    pthread_mutex_unlock(&rt->rq_mu);
    for (int i = 0; i < rt->started; i++)
        pthread_join(rt->threads[i], NULL);
    /* Workers still alive: free without callbacks (the node is gone). */
    for (size_t i = 0; i < rt->tab_size; i++)
        for (cnb_proc_t *p = rt->tab[i], *nx; p; p = nx) {
            nx = p->hnext;
            for (sig_t *s = p->head, *sn; s; s = sn) {
                sn = s->next;
                free_sig(s);
            }
            while (p->links) {
                link_t *l = p->links;
                p->links = l->next;
                free(l);
            }
            for (mon_t **lists[2] = {&p->on_me, &p->held}, **lp = lists[0]; lp;
                 lp = lp == lists[0] ? lists[1] : NULL)
                while (*lp) {
                    mon_t *m = *lp;
                    *lp = m->next;
                    free(m);
                }
            ei_x_free(&p->reason);
            free(p->name);
            pthread_mutex_destroy(&p->mu);
            free(p);
        }
    free(rt->tab);
    free(rt->names);
    free(rt->threads);
    pthread_rwlock_destroy(&rt->tab_lock);
    pthread_mutex_destroy(&rt->rq_mu);
    pthread_cond_destroy(&rt->rq_cv);
    pthread_cond_destroy(&rt->idle_cv);
    free(rt);
}
