/* links.c: links, monitors and exit signals of workers, with Erlang's
 * semantics: what each signal does to a worker, what its end fires, what a
 * lost connection does (noconnection, locally only), the per-peer cap and the
 * C API (cnb_link, cnb_monitor...). The records live in proc_links.c, their
 * node names and connection epochs in link_names.c.
 *
 * Connections: a link or monitor belongs to the connection it was made over
 * (its node's epoch); once that connection is gone, nothing it owes is sent:
 * not to the node that left, nor over a newer connection to it.
 * Tests: tests/integration/runtime_tests.erl, hostile_signals_tests.erl. */
#include "runtime_int.h"

#include <string.h>

/* ------------------------------------------------------------------ I/O side */

/* ERTS takes link, monitor and exit signals only from processes of the node
 * the connection is to; one naming another node's process would tie records
 * to a connection it does not come over. */
int cnb__links_forged(cnb_node_t *n, const cnb_msg_t *m)
{
    cnb_rt_t *rt = n->rt;
    switch (m->op) {
    case CNB_OP_LINK:
    case CNB_OP_UNLINK:
    case CNB_OP_UNLINK_ID:
    case CNB_OP_UNLINK_ID_ACK:
    case CNB_OP_EXIT:
    case CNB_OP_EXIT2:
    case CNB_OP_MONITOR_P:
    case CNB_OP_DEMONITOR_P:
    case CNB_OP_MONITOR_P_EXIT:
        break;
    default:
        return 0;
    }
    if (!m->has_from || !strcmp(m->peer, n->name) || !strcmp(m->from.node, m->peer))
        return 0;
    size_t k = __atomic_add_fetch(&rt->forged, 1, __ATOMIC_RELAXED);
    if (!(k & (k - 1))) /* 1st, 2nd, 4th, 8th...: a flood cannot flood the log */
        cnb__log(n, CNB_LOG_WARNING,
                 "dropped op %d from %s: its sender is not a process of that node (%zu so far)",
                 m->op, m->peer, k);
    return 1;
}

int cnb__links_meta(cnb_node_t *n, cnb_proc_t *p, sig_t *s, const cnb_msg_t *m)
{
    cnb_lnames_t *L = n->rt->ln;
    sig_meta_t *mt = s->meta;
    if ((m->has_from && cnb__cpid_set(L, &mt->from, &m->from)) ||
        (m->has_ref && cnb__cref_set(L, &mt->ref, &m->ref)))
        goto nomem;
    mt->id = m->unlink_id;
    if (!m->has_to && m->toname[0]) {
        mt->by_name = 1;
        if (s->kind == SIG_MONITOR && !(mt->name = cnb__ln_get(L, m->toname)))
            goto nomem;
    }
    if (m->op == CNB_OP_MONITOR_P_EXIT) /* "from" is the monitored object: pid or name */
        mt->by_name = !m->has_from;
    if (!mt->from.node)
        return 0;
    int limited = strcmp(m->peer, n->name) != 0;
    if (s->kind != SIG_LINK && s->kind != SIG_MONITOR) {
        mt->epoch = cnb__ln_epoch(L, mt->from.node);
        if (limited && (s->kind == SIG_DEMONITOR || s->kind == SIG_UNLINK ||
                        s->kind == SIG_UNLINK_ID)) {
            cnb__ln_releasing(L, mt->from.node, 1);
            mt->releasing = 1;
        }
        return 0;
    }
    int first = 0;
    int rc = cnb__ln_hold(L, &p->pl.holds, p->pl.key, mt->from.node, limited, &mt->epoch, &first);
    if (rc == CNB_ETOOBIG) {
        if (first)
            cnb__log(n, CNB_LOG_WARNING,
                     "%s holds %zu links and monitors here, the most allowed "
                     "(max_links_per_peer): refusing more with system_limit",
                     m->peer, cnb__ln_cap(L));
        cnb__sig_refuse(n, m, "system_limit");
        return 1;
    }
    if (rc)
        goto nomem;
    mt->reserved = 1; /* free_sig gives it back unless a record took it over */
    return 0;
nomem:
    cnb__log(n, CNB_LOG_WARNING, "out of memory: dropped op %d from %s", m->op, m->peer);
    return 1;
}

/* ------------------------------------------------------------------ worker side */

/* A signal owed to a record made at `epoch` on `node` goes only while the
 * connection it was made over is still the current one: never to a node
 * that left (nor over a newer connection to it). */
static int owed(cnb_proc_t *p, const cnb_lname_t *node, uint32_t epoch)
{
    return node && cnb__ln_current(p->node->rt->ln, node, epoch);
}

/* Hands the info message built in x (rc: the encoders' results OR-ed) to
 * p's handle_info; frees x. An encoder that failed (out of memory) loses the
 * message with a log line. */
static void info_built(cnb_proc_t *p, ei_x_buff *x, int rc, const char *what)
{
    if (rc)
        cnb__log(p->node, CNB_LOG_WARNING, "worker <%u.%u>: out of memory, %s message lost",
                 p->pid.num, p->pid.serial, what);
    else
        cnb__rt_info(p, x->buff, (size_t)x->index);
    ei_x_free(x);
}

/* {'EXIT', From, Reason} for a trapping process. */
static void info_exit(cnb_proc_t *p, const cnb_cpid_t *from, const char *reason, size_t len)
{
    erlang_pid f;
    cnb__cpid_get(from, &f);
    ei_x_buff x;
    if (ei_x_new_with_version(&x))
        x.buff = NULL;
    int rc = !x.buff || ei_x_encode_tuple_header(&x, 3) || ei_x_encode_atom(&x, "EXIT") ||
             ei_x_encode_pid(&x, &f) || ei_x_append_buf(&x, reason + 1, (int)len - 1);
    info_built(p, &x, rc, "an 'EXIT'");
}

/* Links to pid (again): an unlink in progress is forgotten. epoch: NULL for
 * its node's current one. Returns 0 or CNB_ENOMEM. */
static int add_link(cnb_proc_t *p, const cnb_cpid_t *pid, const uint32_t *epoch)
{
    cnb_link_t *l = cnb__pl_link(&p->pl, pid);
    if (!l)
        return cnb__pl_link_add(p->node->rt->ln, &p->pl, pid, epoch, 0) ? 0 : CNB_ENOMEM;
    l->active = 1;
    l->unlink_id = 0;
    l->epoch = epoch ? *epoch : cnb__ln_epoch(p->node->rt->ln, pid->node);
    return 0;
}

int cnb__links_add(cnb_proc_t *p, const erlang_pid *pid)
{
    cnb_cpid_t c;
    if (cnb__cpid_set(p->node->rt->ln, &c, pid))
        return CNB_ENOMEM;
    int rc = add_link(p, &c, NULL);
    cnb__cpid_put(p->node->rt->ln, &c);
    return rc;
}

/* The end of p's links: an exit with reason to each linked process still
 * reachable over the connection the link was made over. */
static size_t fire_links(cnb_proc_t *p, const char *reason, size_t rlen)
{
    size_t k = 0;
    for (cnb_link_t *l = cnb__pl_links_take(&p->pl, NULL, 0), *nx; l; l = nx, k++) {
        nx = l->next;
        if (l->active && owed(p, l->pid.node, l->epoch)) {
            erlang_pid to;
            cnb__cpid_get(&l->pid, &to);
            cnb__sig_exit(p->node, CNB_OP_EXIT, &p->pid, &to, reason, rlen);
        }
        cnb__pl_link_free(p->node->rt->ln, &p->pl, l);
    }
    return k;
}

/* Drops the monitors p holds, telling each target still reachable over the
 * connection it was set over when tell. Returns how many there were. */
static size_t drop_held(cnb_proc_t *p, int tell)
{
    size_t k = 0;
    for (cnb_mon_t *m = cnb__pl_mons_take(&p->pl.held, NULL, 0), *nx; m; m = nx, k++) {
        nx = m->next;
        if (tell && owed(p, m->node, m->epoch)) {
            erlang_pid to;
            erlang_ref ref;
            if (!m->name)
                cnb__cpid_get(&m->pid, &to);
            cnb__cref_get(&m->ref, &ref);
            cnb__sig_monitor(p->node, CNB_OP_DEMONITOR_P, &p->pid, &to,
                             m->name ? cnb__ln_str(m->name) : NULL, cnb__ln_str(m->node), &ref);
        }
        cnb__pl_mon_free(p->node->rt->ln, &p->pl, m);
    }
    return k;
}

/* A link's exit signal. */
static void link_exit(cnb_proc_t *p, const cnb_cpid_t *from, const char *reason, size_t len)
{
    cnb_link_t *l = cnb__pl_link(&p->pl, from);
    if (!l || !l->active)
        return;
    cnb__pl_link_drop(p->node->rt->ln, &p->pl, l);
    if (p->trap_exit)
        info_exit(p, from, reason, len);
    else if (!cnb__rt_is_atom(reason, len, "normal")) {
        cnb__rt_set_reason(p, reason, len);
        p->dead = 1;
    }
}

/* {'DOWN', Ref, process, Obj, Reason} to a worker holding monitor m. */
static void info_down(cnb_proc_t *p, const cnb_mon_t *m, const char *reason, size_t len)
{
    erlang_ref ref;
    erlang_pid obj;
    cnb__cref_get(&m->ref, &ref);
    ei_x_buff x;
    if (ei_x_new_with_version(&x))
        x.buff = NULL;
    int rc = !x.buff || ei_x_encode_tuple_header(&x, 5) || ei_x_encode_atom(&x, "DOWN") ||
             ei_x_encode_ref(&x, &ref) || ei_x_encode_atom(&x, "process");
    if (m->name)
        rc = rc || ei_x_encode_tuple_header(&x, 2) || ei_x_encode_atom(&x, cnb__ln_str(m->name)) ||
             ei_x_encode_atom(&x, cnb__ln_str(m->node));
    else {
        cnb__cpid_get(&m->pid, &obj);
        rc = rc || ei_x_encode_pid(&x, &obj);
    }
    rc = rc || ei_x_append_buf(&x, reason + 1, (int)len - 1);
    info_built(p, &x, rc, "a 'DOWN'");
}

static int is_self(const cnb_proc_t *p, const cnb_cpid_t *c)
{
    return c->num == p->pid.num && c->serial == p->pid.serial &&
           c->creation == p->pid.creation && !strcmp(cnb__ln_str(c->node), p->pid.node);
}

/* The connection to node mt->name went down at epoch mt->epoch: every record
 * across it goes first, so that nothing is owed to that node whatever this
 * process does next; then its links and the monitors it held fire locally
 * with noconnection. Monitors on it from there just go. */
static void nodedown(cnb_proc_t *p, const sig_meta_t *mt)
{
    cnb_lnames_t *L = p->node->rt->ln;
    char r[32];
    size_t rl = cnb__atom_term(r, "noconnection"), k = 0;
    cnb_link_t *links = cnb__pl_links_take(&p->pl, mt->name, mt->epoch);
    cnb_mon_t *held = cnb__pl_mons_take(&p->pl.held, mt->name, mt->epoch);
    cnb_mon_t *on_me = cnb__pl_mons_take(&p->pl.on_me, mt->name, mt->epoch);
    for (cnb_link_t *l = links, *nx; l; l = nx, k++) {
        nx = l->next;
        if (l->active && !p->dead) {
            if (p->trap_exit)
                info_exit(p, &l->pid, r, rl);
            else {
                cnb__rt_set_reason(p, r, rl);
                p->dead = 1;
            }
        }
        cnb__pl_link_free(L, &p->pl, l);
    }
    for (cnb_mon_t *m = held, *nx; m; m = nx, k++) {
        nx = m->next;
        if (!p->dead)
            info_down(p, m, r, rl);
        cnb__pl_mon_free(L, &p->pl, m);
    }
    for (cnb_mon_t *m = on_me, *nx; m; m = nx, k++) {
        nx = m->next;
        cnb__pl_mon_free(L, &p->pl, m);
    }
    cnb__ln_freed(L, k);
}

void cnb__links_sig(cnb_proc_t *p, sig_t *s)
{
    sig_meta_t *mt = s->meta;
    cnb_lnames_t *L = p->node->rt->ln;
    cnb_link_t *l;
    cnb_mon_t *m;
    switch (s->kind) {
    case SIG_LINK: /* the new record takes over the signal's reserved count */
        if (!cnb__pl_link(&p->pl, &mt->from) &&
            cnb__pl_link_add(L, &p->pl, &mt->from, &mt->epoch, mt->reserved))
            mt->reserved = 0;
        break;
    case SIG_UNLINK:
        if ((l = cnb__pl_link(&p->pl, &mt->from)))
            cnb__pl_link_drop(L, &p->pl, l);
        break;
    case SIG_UNLINK_ID:
        if ((l = cnb__pl_link(&p->pl, &mt->from)) && l->active)
            cnb__pl_link_drop(L, &p->pl, l);
        if (owed(p, mt->from.node, mt->epoch)) {
            erlang_pid to;
            cnb__cpid_get(&mt->from, &to);
            cnb__sig_unlink_ack(p->node, mt->id, &p->pid, &to);
        }
        break;
    case SIG_UNLINK_ID_ACK:
        if ((l = cnb__pl_link(&p->pl, &mt->from)) && !l->active && l->unlink_id == mt->id)
            cnb__pl_link_drop(L, &p->pl, l);
        break;
    case SIG_EXIT:
        link_exit(p, &mt->from, s->data, s->len);
        break;
    case SIG_EXIT2:
        if (cnb__rt_is_atom(s->data, s->len, "kill")) {
            cnb__rt_set_reason_atom(p, "killed");
            p->dead = 1;
        } else if (p->trap_exit) {
            info_exit(p, &mt->from, s->data, s->len);
        } else if (!cnb__rt_is_atom(s->data, s->len, "normal") || is_self(p, &mt->from)) {
            cnb__rt_set_reason(p, s->data, s->len);
            p->dead = 1;
        }
        break;
    case SIG_MONITOR: /* as for LINK */
        if (cnb__pl_mon_add(L, &p->pl, &p->pl.on_me, &mt->ref, &mt->from, mt->from.node,
                            mt->by_name ? mt->name : NULL, &mt->epoch, mt->reserved))
            mt->reserved = 0;
        break;
    case SIG_DEMONITOR:
        if ((m = cnb__pl_mon_take(&p->pl.on_me, &mt->ref)))
            cnb__pl_mon_free(L, &p->pl, m);
        break;
    case SIG_DOWN:
        if ((m = cnb__pl_mon_take(&p->pl.held, &mt->ref))) {
            info_down(p, m, s->data, s->len);
            cnb__pl_mon_free(L, &p->pl, m);
        }
        break;
    case SIG_NODEDOWN:
        nodedown(p, mt);
        break;
    }
}

void cnb__links_unanswered(cnb_proc_t *p, const sig_t *s, const char *reason, size_t rlen)
{
    const sig_meta_t *mt = s->meta;
    if ((s->kind != SIG_LINK && s->kind != SIG_MONITOR && s->kind != SIG_UNLINK_ID) ||
        !owed(p, mt->from.node, mt->epoch))
        return;
    erlang_pid to;
    erlang_ref ref;
    cnb__cpid_get(&mt->from, &to);
    if (s->kind == SIG_LINK)
        cnb__sig_exit(p->node, CNB_OP_EXIT, &p->pid, &to, reason, rlen);
    else if (s->kind == SIG_UNLINK_ID)
        cnb__sig_unlink_ack(p->node, mt->id, &p->pid, &to);
    else {
        cnb__cref_get(&mt->ref, &ref);
        cnb__sig_down(p->node, &p->pid, mt->by_name ? cnb__ln_str(mt->name) : NULL, &to, &ref,
                      reason, rlen);
    }
}

void cnb__links_end(cnb_proc_t *p, const char *reason, size_t rlen)
{
    size_t k = fire_links(p, reason, rlen);
    for (cnb_mon_t *m = cnb__pl_mons_take(&p->pl.on_me, NULL, 0), *nx; m; m = nx, k++) {
        nx = m->next;
        if (owed(p, m->node, m->epoch)) {
            erlang_pid to;
            erlang_ref ref;
            cnb__cpid_get(&m->pid, &to);
            cnb__cref_get(&m->ref, &ref);
            cnb__sig_down(p->node, &p->pid, m->name ? cnb__ln_str(m->name) : NULL, &to, &ref,
                          reason, rlen);
        }
        cnb__pl_mon_free(p->node->rt->ln, &p->pl, m);
    }
    k += drop_held(p, 1);
    cnb__ln_freed(p->node->rt->ln, k);
}

void cnb__links_abort(cnb_proc_t *p)
{
    fire_links(p, p->reason.buff, (size_t)p->reason.index);
    drop_held(p, 0);
}

/* ------------------------------------------------------------------ public API */

int cnb_link(cnb_proc_t *p, const erlang_pid *to)
{
    if (!to)
        return CNB_EINVAL;
    if (cnb__pid_eq(to, &p->pid))
        return 0;
    int rc = cnb__links_add(p, to);
    return rc ? rc : cnb__sig_link(p->node, &p->pid, to);
}

int cnb_unlink(cnb_proc_t *p, const erlang_pid *to)
{
    cnb_cpid_t c;
    if (!to || cnb__cpid_set(p->node->rt->ln, &c, to))
        return to ? CNB_ENOMEM : CNB_EINVAL;
    cnb_link_t *l = cnb__pl_link(&p->pl, &c);
    cnb__cpid_put(p->node->rt->ln, &c);
    if (!l || !l->active)
        return 0;
    if (cnb__rt_peer_has(p->node, to->node, CNB_DFLAG_UNLINK_ID)) {
        l->active = 0;
        l->unlink_id = ++p->unlink_seq;
        return cnb__sig_unlink(p->node, l->unlink_id, &p->pid, to);
    }
    cnb__pl_link_drop(p->node->rt->ln, &p->pl, l);
    return cnb__sig_unlink(p->node, 0, &p->pid, to);
}

/* A new monitor p holds on pid to, or on name at node: recorded, then the
 * MONITOR_P sent; its ref is given (NULL: a new one), and copied to *ref
 * (may be NULL). */
static int monitor(cnb_proc_t *p, const erlang_pid *to, const char *name, const char *node,
                   const erlang_ref *given, erlang_ref *ref)
{
    cnb_lnames_t *L = p->node->rt->ln;
    cnb_cref_t cr = {0};
    cnb_cpid_t cp = {0};
    cnb_lname_t *nm = NULL, *nd = NULL;
    erlang_ref r;
    if (given)
        r = *given;
    else
        cnb_node_make_ref(p->node, &r);
    int rc = CNB_ENOMEM;
    if (cnb__cref_set(L, &cr, &r) || (to && cnb__cpid_set(L, &cp, to)) ||
        (name && !(nm = cnb__ln_get(L, name))) || (node && !(nd = cnb__ln_get(L, node))))
        goto out;
    if (!cnb__pl_mon_add(L, &p->pl, &p->pl.held, &cr, to ? &cp : NULL, to ? cp.node : nd, nm,
                         NULL, 0))
        goto out;
    if (ref)
        *ref = r;
    rc = cnb__sig_monitor(p->node, CNB_OP_MONITOR_P, &p->pid, to, name, node, &r);
out:
    cnb__cref_put(L, &cr);
    cnb__cpid_put(L, &cp);
    cnb__ln_put(L, nm);
    cnb__ln_put(L, nd);
    return rc;
}

int cnb_monitor(cnb_proc_t *p, const erlang_pid *to, erlang_ref *ref)
{
    return to ? monitor(p, to, NULL, NULL, NULL, ref) : CNB_EINVAL;
}

int cnb__links_monitor_ref(cnb_proc_t *p, const erlang_pid *to, const erlang_ref *ref)
{
    return monitor(p, to, NULL, NULL, ref, NULL);
}

int cnb_monitor_name(cnb_proc_t *p, const char *name, const char *node, erlang_ref *ref)
{
    if (!name || !node || strlen(name) >= MAXATOMLEN_UTF8 || strlen(node) >= CNB_NAME_MAX)
        return CNB_EINVAL;
    return monitor(p, NULL, name, node, NULL, ref);
}

int cnb_demonitor(cnb_proc_t *p, const erlang_ref *ref)
{
    cnb_lnames_t *L = p->node->rt->ln;
    cnb_cref_t c;
    if (!ref || cnb__cref_set(L, &c, ref))
        return ref ? CNB_ENOMEM : CNB_EINVAL;
    cnb_mon_t *m = cnb__pl_mon_take(&p->pl.held, &c);
    cnb__cref_put(L, &c);
    if (!m)
        return 0;
    erlang_pid to;
    if (!m->name)
        cnb__cpid_get(&m->pid, &to);
    int rc = cnb__sig_monitor(p->node, CNB_OP_DEMONITOR_P, &p->pid, &to,
                              m->name ? cnb__ln_str(m->name) : NULL, cnb__ln_str(m->node), ref);
    cnb__pl_mon_free(L, &p->pl, m);
    return rc;
}
