/* rt_life.c: the life of a C worker: spawn (init, name, going live), its
 * callbacks' results, the reason it ends with, what each signal does to it
 * (links, monitors and exits are links.c's), its end (terminate, leaving the
 * table, answering what is still queued) and the node's shutdown of all.
 * Tests: tests/integration/runtime_tests.erl, supervision_tests.erl,
 * hostile_signals_tests.erl, tests/integration/exunit/. */
#include "runtime_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cnb__rt_is_atom(const char *t, size_t len, const char *atom)
{
    int i = 0, ver;
    char a[MAXATOMLEN_UTF8];
    return len > 0 && !ei_decode_version(t, &i, &ver) && !ei_decode_atom(t, &i, a) &&
           !strcmp(a, atom) && (size_t)i == len;
}

/* ------------------------------------------------------------------ reasons */

/* 1: p's reason is set (reason.buff); 0: not yet; -1: lost for want of
 * memory (reason_done leaves buff NULL and index -1). */
static int has_reason(const cnb_proc_t *p)
{
    return p->reason.buff ? 1 : p->reason.index < 0 ? -1 : 0;
}

/* Ends setting p's reason: failed (an encoder out of memory) marks it lost,
 * so p ends with out_of_memory rather than a reason it did not have. */
static void reason_done(cnb_proc_t *p, int failed)
{
    if (!failed)
        return; /* reason.buff set: has_reason says 1 */
    ei_x_free(&p->reason);
    p->reason.index = -1; /* lost (buff NULL) */
    cnb__log(p->node, CNB_LOG_WARNING, "worker <%u.%u>: out of memory, it ends with out_of_memory",
             p->pid.num, p->pid.serial);
}

void cnb__rt_set_reason_atom(cnb_proc_t *p, const char *atom)
{
    ei_x_free(&p->reason);
    reason_done(p, ei_x_new_with_version(&p->reason) || ei_x_encode_atom(&p->reason, atom));
}

void cnb__rt_set_reason(cnb_proc_t *p, const char *t, size_t len)
{
    ei_x_free(&p->reason);
    reason_done(p, ei_x_new(&p->reason) || ei_x_append_buf(&p->reason, t, (int)len));
}

void cnb__rt_set_reason_body(cnb_proc_t *p, const char *body, size_t len)
{
    ei_x_free(&p->reason);
    reason_done(p, ei_x_new_with_version(&p->reason) || ei_x_append_buf(&p->reason, body, (int)len));
}

/* {callback_failed, Cb, Reason}: Reason the code's atom (enomem, timeout...)
 * as BEAM code sees core's errors, or {unknown_error, Code} for a code of
 * the callback's own that the list does not have. */
void cnb__rt_callback_failed(cnb_proc_t *p, const char *cb, int code)
{
    ei_x_free(&p->reason);
    int known = strcmp(cnb_errname(code), "CNB_EUNKNOWN") != 0;
    int e = ei_x_new_with_version(&p->reason);
    if (!e)
        e = ei_x_encode_tuple_header(&p->reason, 3) ||
            ei_x_encode_atom(&p->reason, "callback_failed") || ei_x_encode_atom(&p->reason, cb);
    if (!e && known)
        e = ei_x_encode_atom(&p->reason, cnb_erratom(code));
    else if (!e)
        e = ei_x_encode_tuple_header(&p->reason, 2) ||
            ei_x_encode_atom(&p->reason, "unknown_error") || ei_x_encode_long(&p->reason, code);
    reason_done(p, e);
    p->dead = 1;
    cnb__log(p->node, CNB_LOG_WARNING, "worker <%u.%u> %s failed: %s", p->pid.num, p->pid.serial,
             cb, cnb_strerror(code));
}

void cnb__rt_after_callback(cnb_proc_t *p, const char *cb, int rc)
{
    if (rc < 0)
        cnb__rt_callback_failed(p, cb, rc);
    else if (rc == CNB_STOP) {
        if (!has_reason(p))
            cnb__rt_set_reason_atom(p, "normal");
        p->dead = 1;
    }
}

void cnb__rt_info(cnb_proc_t *p, const char *t, size_t len)
{
    if (!p->ops->handle_info)
        return;
    cnb__rt_after_callback(p, "handle_info", p->ops->handle_info(p, p->state, t, len));
}

/* ------------------------------------------------------------------ signals in */

void cnb__proc_handle(cnb_proc_t *p, sig_t *s)
{
    switch (s->kind) {
    case SIG_MSG:
        cnb__gen_msg(p, s->data, s->len);
        break;
    case SIG_SHUTDOWN:
        cnb__rt_set_reason_atom(p, "shutdown");
        p->dead = 1;
        break;
    case SIG_WORKER_OP:
        cnb__worker_op_sig(p, s);
        break;
    default:
        cnb__links_sig(p, s);
        break;
    }
}

/* ------------------------------------------------------------------ the end */

void cnb__proc_finish(cnb_proc_t *p)
{
    cnb_rt_t *rt = p->node->rt;
    cnb_node_t *n = p->node;
    /* With no reason set, normal; with one lost for want of memory,
     * out_of_memory: both encoded on the stack, needing no allocation. */
    char fallback[32];
    const char *reason = p->reason.buff;
    size_t rlen = (size_t)p->reason.index;
    if (has_reason(p) <= 0) {
        rlen = cnb__atom_term(fallback, has_reason(p) < 0 ? "out_of_memory" : "normal");
        reason = fallback;
    }
    if (p->ops->terminate)
        p->ops->terminate(p, p->state, reason, rlen);
    char name[MAXATOMLEN_UTF8];
    snprintf(name, sizeof(name), "%s", p->reg ? p->reg->name : "");

    cnb__pt_remove(rt, p);
    cnb__pg_proc_exit(n, &p->pid);      /* its :pg memberships (visible mode) */
    cnb__visible_proc_exit(n, &p->pid); /* its :global names (visible mode) */
    /* Nobody can push now. Signals still queued arrived before the end.
     * What the end owes others goes in one burst (see cnb__sig_burst_begin). */
    cnb__sig_burst_begin();
    for (sig_t *s = cnb__mbox_take_all(p), *nx; s; s = nx) {
        nx = s->next;
        cnb__links_unanswered(p, s, reason, rlen);
        cnb__sig_free(p, s);
    }
    cnb__links_end(p, reason, rlen);
    cnb__sig_burst_end(n);
    if (cnb__log_on(n, CNB_LOG_INFO)) {
        char why[256];
        cnb__log(n, CNB_LOG_INFO, "worker <%u.%u>%s%s ended: %s", p->pid.num, p->pid.serial,
                 name[0] ? " " : "", name, cnb__log_term(reason, rlen, why, sizeof(why)));
    }
    ei_x_free(&p->reason);
    free(p);
}

/* ------------------------------------------------------------------ spawn */

/* A worker whose init ran but that cannot go live (its name was taken
 * meanwhile, no memory for the name, or the process that asked for it with a
 * link is gone): it ends at once with reason, so its terminate runs and
 * whatever init linked or monitored is told. Called with tab_lock
 * write-locked; returns with it unlocked. */
static void abandon_locked(cnb_rt_t *rt, cnb_proc_t *p, const char *reason)
{
    pthread_rwlock_unlock(&rt->tab_lock);
    cnb__rt_set_reason_atom(p, reason);
    p->dead = 1;
    cnb__proc_finish(p);
}

/* p's init failed: out of the table, the signals that came meanwhile
 * answered with the reason (init's own, else init_failed, copied to *why
 * when why is given), the links init made told; p freed. */
static void init_failed(cnb_proc_t *p, ei_x_buff *why)
{
    if (has_reason(p) <= 0)
        cnb__rt_set_reason_atom(p, "init_failed");
    char fallback[32];
    const char *reason = p->reason.buff;
    size_t rlen = (size_t)p->reason.index;
    if (has_reason(p) <= 0) {
        rlen = cnb__atom_term(fallback, "out_of_memory");
        reason = fallback;
    }
    if (why && (ei_x_new(why) || ei_x_append_buf(why, reason, (int)rlen)))
        ei_x_free(why); /* left empty: the caller says init_failed */
    cnb__pt_remove(p->node->rt, p);
    for (sig_t *s = cnb__mbox_take_all(p), *nx; s; s = nx) {
        nx = s->next;
        cnb__links_unanswered(p, s, reason, rlen);
        cnb__sig_free(p, s);
    }
    cnb__links_abort(p);
    ei_x_free(&p->reason);
    free(p);
}

/* The pid of the worker registered as name, into out; 0 when none. */
static int name_owner(cnb_rt_t *rt, const char *name, erlang_pid *out)
{
    pthread_rwlock_rdlock(&rt->tab_lock);
    cnb_proc_t *owner = cnb__pt_find_name_locked(rt, name);
    if (owner)
        *out = owner->pid;
    pthread_rwlock_unlock(&rt->tab_lock);
    return owner != NULL;
}

/* The records a remote spawn's options ask for, made on p before it goes
 * live (as if rq->from had linked and monitored it first). Returns 0 when
 * they were made over the connection the request came over, which is still
 * up (the spawn reply can go), 1 when it went down meanwhile (nothing owed
 * there: the reply is not sent), or CNB_ENOMEM. */
static int requested_records(cnb_proc_t *p, const cnb_spawn_req_t *rq)
{
    cnb_lnames_t *L = p->node->rt->ln;
    cnb_cpid_t from = {0};
    cnb_cref_t ref = {0};
    int rc = CNB_ENOMEM;
    if (cnb__cpid_set(L, &from, &rq->from) || cnb__cref_set(L, &ref, &rq->id))
        goto out;
    if (rq->link && !cnb__pl_link_add(L, &p->pl, &from, &rq->epoch, 0))
        goto out;
    if (rq->monitor &&
        !cnb__pl_mon_add(L, &p->pl, &p->pl.on_me, &ref, &from, from.node, NULL, &rq->epoch, 0))
        goto out;
    /* Records hold their node from here, so a nodedown from now on reaches
     * p; one that came before shows as a stale epoch. */
    rc = cnb__ln_current(L, rq->node, rq->epoch) ? 0 : 1;
out:
    cnb__cpid_put(L, &from);
    cnb__cref_put(L, &ref);
    return rc;
}

int cnb__spawn(cnb_node_t *n, const cnb_worker_ops_t *ops, void *arg, const cnb_spawn_opts_t *o,
               const cnb_spawn_req_t *rq, erlang_pid *out, ei_x_buff *why)
{
    cnb_rt_t *rt = n->rt;
    const char *name = o ? o->name : NULL;
    if (!ops || !out)
        return CNB_EINVAL;
    if (atomic_load(&n->stopping) || rt->stop)
        return CNB_ECLOSED;
    if (name && (!name[0] || strlen(name) >= MAXATOMLEN_UTF8))
        return CNB_EINVAL;
    if (name && name_owner(rt, name, out))
        return CNB_EEXIST; /* refused early, before init runs */
    cnb_proc_t *p = calloc(1, sizeof(*p));
    if (!p)
        return CNB_ENOMEM;
    p->node = n;
    p->ops = ops;
    cnb__pt_fresh_pid(rt, &p->pid);
    p->pl.key = cnb__pt_key(&p->pid);
    p->trap_exit = o && o->trap_exit;
    p->run_inline = o && o->run_inline;
    p->scheduled = 1; /* not runnable until live: signals wait in the mailbox */
    pthread_rwlock_wrlock(&rt->tab_lock);
    cnb__pt_insert_locked(rt, p);
    pthread_rwlock_unlock(&rt->tab_lock);
    if (o && o->link && cnb__links_add(p, o->link) == 0)
        cnb__sig_link(n, &p->pid, o->link);
    int rc = ops->init ? ops->init(p, arg, &p->state) : 0;
    if (rc < 0) {
        init_failed(p, why); /* links made so far get the reason, like proc_lib */
        return rc;
    }
    int lost = rq ? requested_records(p, rq) : 0;
    pthread_rwlock_wrlock(&rt->tab_lock);
    cnb_proc_t *owner = name ? cnb__pt_find_name_locked(rt, name) : NULL;
    if (owner) {
        /* Lost a race for the name: end this one as if it had stopped. */
        *out = owner->pid;
        abandon_locked(rt, p, "normal");
        return CNB_EEXIST;
    }
    if ((name && cnb__pt_name_add_locked(rt, p, name)) || lost < 0) {
        abandon_locked(rt, p, "normal");
        return CNB_ENOMEM;
    }
    if (lost && rq->link) {
        /* The requester's node went away during init: a linked worker gets
         * its noconnection exit, as ERTS gives one spawned meanwhile. */
        abandon_locked(rt, p, "noconnection");
        return CNB_ENOCONN;
    }
    *out = p->pid;
    pthread_rwlock_unlock(&rt->tab_lock);
    if (rq && !lost)
        cnb__spawn_reply(n, rq->from.node, &rq->id, &rq->from,
                         (rq->link ? 1 : 0) | (rq->monitor ? 2 : 0), &p->pid, NULL);
    cnb__log(n, CNB_LOG_INFO, "worker <%u.%u>%s%s started", p->pid.num, p->pid.serial,
             name ? " " : "", name ? name : "");
    cnb__mbox_go_live(p); /* run whatever arrived meanwhile */
    return 0;
}

int cnb_spawn(cnb_node_t *n, const cnb_worker_ops_t *ops, void *arg, const cnb_spawn_opts_t *o,
              erlang_pid *out)
{
    return cnb__spawn(n, ops, arg, o, NULL, out, NULL);
}

/* ------------------------------------------------------------------ C API */

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
    return has_reason(p) > 0 ? 0 : CNB_ENOMEM;
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

int cnb_node_shutdown(cnb_node_t *n, unsigned timeout_ms)
{
    cnb_rt_t *rt = n->rt;
    size_t lost = 0;
    pthread_rwlock_rdlock(&rt->tab_lock);
    for (size_t i = 0; i < rt->tab_size; i++)
        for (cnb_proc_t *p = rt->tab[i]; p; p = p->hnext) {
            sig_t *s = cnb__sig_new(SIG_SHUTDOWN, NULL, 0, 0);
            if (s)
                cnb__mbox_push(p, s);
            else
                lost++;
        }
    pthread_rwlock_unlock(&rt->tab_lock);
    if (lost)
        cnb__log(n, CNB_LOG_WARNING, "out of memory: %zu worker(s) not told to shut down", lost);
    /* Wait for the count to reach zero, polling with a short sleep: workers
     * end on the pool's threads, and nothing signals the count's changes. */
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
