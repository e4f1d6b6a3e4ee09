/* runtime.c: C workers as Erlang processes: the process table and names,
 * mailboxes of signals, the worker pool, gen_server and sys messages, and
 * termination. What links, monitors and exit signals do is in links.c (their
 * records in proc_links.c, node names and connection epochs in link_names.c).
 *
 * Ownership: a process's links and monitors are touched only by the pool
 * thread running it; every signal from elsewhere (the I/O thread, other
 * workers) goes through its mailbox, in arrival order, as in Erlang.
 * Tests: tests/integration/runtime_tests.erl, hostile_signals_tests.erl,
 * tests/integration/exunit/. */
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime_int.h"

#define BATCH 64          /* signals a worker handles before yielding its thread */
#define TAB_INIT 1024
#define LINKS_PER_PEER_DEFAULT ((size_t)1 << 20)

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

static cnb_proc_t *find_key_locked(cnb_rt_t *rt, uint64_t k)
{
    for (cnb_proc_t *p = rt->tab[k % rt->tab_size]; p; p = p->hnext)
        if (p->key == k)
            return p;
    return NULL;
}

static cnb_proc_t *find_locked(cnb_rt_t *rt, const erlang_pid *pid)
{
    return cnb_node_is_local_pid(rt->node, pid) ? find_key_locked(rt, pid_key(pid)) : NULL;
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

/* Frees s and what its meta holds: names, and a count reserved on p. */
static void free_sig(cnb_proc_t *p, sig_t *s)
{
    sig_meta_t *mt = s->meta;
    if (mt) {
        cnb_lnames_t *L = p->rt->ln;
        if (mt->reserved)
            cnb__ln_release(L, &p->pl.holds, mt->from.node);
        cnb__cpid_put(L, &mt->from);
        cnb__cref_put(L, &mt->ref);
        cnb__ln_put(L, mt->name);
        free(mt);
    }
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

int cnb__rt_peer_has(cnb_node_t *n, const char *peer, uint64_t flag)
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
    if (cnb__rt_peer_has(n, to->node, CNB_DFLAG_UNLINK_ID)) {
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

int cnb__rt_deliver(cnb_node_t *n, const cnb_msg_t *m)
{
    cnb_rt_t *rt = n->rt;
    if (!rt)
        return 0;
    if (cnb__links_forged(n, m))
        return 1;
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
            cnb__links_refuse(n, m, "noproc");
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
            cnb__links_refuse(n, m, "noproc");
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
    if (s && s->meta && cnb__links_meta(n, p, s, m)) {
        free_sig(p, s);
        s = NULL;
    }
    if (s)
        push_sig(p, s);
    pthread_rwlock_unlock(&rt->tab_lock);
    return handled;
}

/* Only the processes holding links or monitors across the lost connection
 * hear of it; each drops them all at once when it takes the signal. */
void cnb__rt_nodedown(cnb_node_t *n, const char *peer)
{
    cnb_rt_t *rt = n->rt;
    if (!rt)
        return;
    cnb__calls_nodedown(n, peer);
    cnb__relay_nodedown(n, peer);
    uint64_t *keys = NULL;
    cnb_lname_t *e = NULL;
    uint32_t ended = 0;
    size_t k = cnb__ln_nodedown(rt->ln, peer, &keys, &e, &ended);
    if (!k)
        return;
    pthread_rwlock_rdlock(&rt->tab_lock);
    for (size_t i = 0; i < k; i++) {
        cnb_proc_t *p = find_key_locked(rt, keys[i]);
        sig_t *s = p ? new_sig(SIG_NODEDOWN, NULL, 0, 1) : NULL;
        if (!s)
            continue; /* its records' epoch is over: it will owe that node nothing */
        s->meta->name = cnb__ln_dup(rt->ln, e);
        s->meta->epoch = ended;
        push_sig(p, s);
    }
    pthread_rwlock_unlock(&rt->tab_lock);
    cnb__ln_put(rt->ln, e);
    free(keys);
}

/* ------------------------------------------------------------------ worker side */

int cnb__rt_is_atom(const char *t, size_t len, const char *atom)
{
    int i = 0, ver;
    char a[MAXATOMLEN_UTF8];
    return len > 0 && !ei_decode_version(t, &i, &ver) && !ei_decode_atom(t, &i, a) &&
           !strcmp(a, atom) && (size_t)i == len;
}

void cnb__rt_set_reason_atom(cnb_proc_t *p, const char *atom)
{
    ei_x_free(&p->reason);
    ei_x_new_with_version(&p->reason);
    ei_x_encode_atom(&p->reason, atom);
    p->has_reason = 1;
}

void cnb__rt_set_reason(cnb_proc_t *p, const char *t, size_t len)
{
    ei_x_free(&p->reason);
    ei_x_new(&p->reason);
    ei_x_append_buf(&p->reason, t, (int)len);
    p->has_reason = 1;
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
            cnb__rt_set_reason_atom(p, "normal");
        p->dead = 1;
    }
}

void cnb__rt_info(cnb_proc_t *p, const char *t, size_t len)
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
                cnb__rt_set_reason(p, r.buff, (size_t)r.index);
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
    cnb__rt_info(p, b, len);
}

static void handle_sig(cnb_proc_t *p, sig_t *s)
{
    switch (s->kind) {
    case SIG_MSG:
        handle_msg(p, s->data, s->len);
        break;
    case SIG_SHUTDOWN:
        cnb__rt_set_reason_atom(p, "shutdown");
        p->dead = 1;
        break;
    default:
        cnb__links_sig(p, s);
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
        cnb__rt_set_reason_atom(p, "normal");
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
        cnb__links_unanswered(p, s, reason, rlen);
        free_sig(p, s);
        s = nx;
    }
    cnb__links_end(p, reason, rlen);
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
        free_sig(p, s);
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
    cnb__rt_set_reason_atom(p, "normal");
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
    p->pl.key = p->key;
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
    if (o && o->link && cnb__links_add(p, o->link) == 0)
        cnb__sig_link(n, &p->pid, o->link);
    int rc = ops->init ? ops->init(p, arg, &p->state) : 0;
    if (rc < 0) {
        /* A failed init: links made so far get the reason, like proc_lib. */
        cnb__rt_set_reason_atom(p, "init_failed");
        cnb__links_abort(p);
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
    cnb__rt_set_reason(p, reason, len);
    return 0;
}

int cnb_trap_exit(cnb_proc_t *p, int on)
{
    int old = p->trap_exit;
    p->trap_exit = on != 0;
    return old;
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
    size_t cap = n->opts.max_links_per_peer ? n->opts.max_links_per_peer : LINKS_PER_PEER_DEFAULT;
    uint64_t seed = ((uint64_t)cnb__random32() << 32) | cnb__random32();
    if (!rt->tab || !rt->names || !rt->threads || cnb__ln_create(cap, seed, &rt->ln)) {
        cnb__ln_destroy(rt->ln);
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
                free_sig(p, s);
            }
            cnb__pl_clear(rt->ln, &p->pl);
            ei_x_free(&p->reason);
            free(p->name);
            pthread_mutex_destroy(&p->mu);
            free(p);
        }
    free(rt->tab);
    free(rt->names);
    free(rt->threads);
    cnb__ln_destroy(rt->ln);
    pthread_rwlock_destroy(&rt->tab_lock);
    pthread_mutex_destroy(&rt->rq_mu);
    pthread_cond_destroy(&rt->rq_cv);
    pthread_cond_destroy(&rt->idle_cv);
    free(rt);
}
