/* runtime.c: the process runtime's entry points: created, started and
 * destroyed with the node, and on the I/O thread the delivery of each
 * incoming signal to its worker's mailbox, and of a lost connection to the
 * workers that hold links or monitors across it. The runtime's other jobs
 * are each a file: rt_table.c (pids and names), rt_sched.c (mailboxes, run
 * queue, pool), rt_signals.c (signals sent), rt_life.c (spawn, callbacks,
 * termination), rt_gen.c (gen_server and sys), links.c with proc_links.c and
 * link_names.c (links, monitors, exits), calls.c, timer.c.
 *
 * Ownership: a process's links and monitors are touched only by the thread
 * running it (a pool thread, or the I/O thread for an idle inline worker
 * that a signal reached: cnb__mbox_push_io); every signal from elsewhere (the I/O thread, other
 * workers) goes through its mailbox, in arrival order, as in Erlang.
 * Tests: tests/integration/runtime_tests.erl, hostile_signals_tests.erl,
 * tests/integration/exunit/. */
#include "runtime.h"

#include <stdlib.h>
#include <string.h>

#include "runtime_int.h"

#define TAB_INIT 1024
#define LINKS_PER_PEER_DEFAULT ((size_t)1 << 20)

/* ------------------------------------------------------------------ I/O side */

/* The kind of signal m makes for its worker p (NULL: none found), or 0 when
 * it makes none; *handled: whether the runtime answers for m (see
 * cnb__rt_deliver). Sends the answers owed when p does not exist. */
static int sig_kind_of(cnb_node_t *n, const cnb_msg_t *m, const cnb_proc_t *p, int *handled)
{
    *handled = 1;
    switch (m->op) {
    case CNB_OP_SEND:
    case CNB_OP_REG_SEND:
        if (p && m->payload)
            return SIG_MSG;
        *handled = p != NULL || (m->has_to && cnb_node_is_local_pid(n, &m->to));
        return 0;
    case CNB_OP_LINK:
        if (p)
            return SIG_LINK;
        if (cnb_node_is_local_pid(n, &m->to))
            cnb__sig_refuse(n, m, "noproc");
        else
            *handled = 0;
        return 0;
    case CNB_OP_UNLINK:
        return p ? SIG_UNLINK : 0;
    case CNB_OP_UNLINK_ID:
        if (p)
            return SIG_UNLINK_ID;
        if (cnb_node_is_local_pid(n, &m->to))
            cnb__sig_unlink_ack(n, m->unlink_id, &m->to, &m->from);
        return 0;
    case CNB_OP_UNLINK_ID_ACK:
        return p ? SIG_UNLINK_ID_ACK : 0;
    case CNB_OP_EXIT:
    case CNB_OP_EXIT2:
        return p && m->payload ? (m->op == CNB_OP_EXIT ? SIG_EXIT : SIG_EXIT2) : 0;
    case CNB_OP_MONITOR_P:
        if (p)
            return SIG_MONITOR;
        if (m->has_to ? cnb_node_is_local_pid(n, &m->to) : 1)
            cnb__sig_refuse(n, m, "noproc");
        return 0;
    case CNB_OP_DEMONITOR_P:
        return p ? SIG_DEMONITOR : 0;
    case CNB_OP_MONITOR_P_EXIT:
        return p && m->payload ? SIG_DOWN : 0;
    case CNB_OP_GROUP_LEADER:
        return 0;
    case CNB_OP_ALIAS_SEND:
    case CNB_OP_ALTACT_SIG_SEND: /* what stays of it: an exit through an alias */
        /* Aliases serve calls only: one that no call waits for anymore is a
         * late reply, dropped (never handed to anyone else); an exit signal
         * through one has no worker to reach. */
        return 0;
    default:
        *handled = p != NULL;
        return 0;
    }
}

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
        p = cnb__pt_find_locked(rt, &m->to);
    else if ((m->op == CNB_OP_REG_SEND || m->op == CNB_OP_MONITOR_P ||
              m->op == CNB_OP_DEMONITOR_P || m->op == CNB_OP_EXIT2) && m->toname[0])
        p = cnb__pt_find_name_locked(rt, m->toname);
    int handled;
    int kind = sig_kind_of(n, m, p, &handled);
    cnb_proc_t *run_here = NULL;
    if (kind) {
        /* Messages, exit reasons and DOWN reasons carry the payload. */
        int with_data = kind == SIG_MSG || kind == SIG_EXIT || kind == SIG_EXIT2 || kind == SIG_DOWN;
        sig_t *s = cnb__sig_new(kind, with_data ? m->payload : NULL, with_data ? m->payload_len : 0,
                                kind != SIG_MSG);
        if (s && kind == SIG_MSG && cnb__gen_is_call(m->payload, m->payload_len)) {
            s->call = 1; /* the I/O thread may spin for its reply (cnb__rt_busy) */
            atomic_fetch_add_explicit(&rt->calls_in, 1, memory_order_relaxed);
        }
        if (!s)
            cnb__log(n, CNB_LOG_WARNING, "out of memory: dropped op %d from %s", m->op, m->peer);
        else if (s->meta && cnb__links_meta(n, p, s, m))
            cnb__sig_free(p, s); /* refused or logged there */
        else if (cnb__mbox_push_io(p, s, (m->sig_flags & CNB_ALTACT_PRIO) &&
                                              (kind == SIG_MSG || kind == SIG_EXIT2)))
            run_here = p; /* (an EEP 76 priority signal goes ahead of ordinary ones) */
    }
    pthread_rwlock_unlock(&rt->tab_lock);
    /* An idle inline worker, now claimed by this thread: it cannot end or be
     * freed by anyone else, and runs without the table's lock held (it may
     * spawn, or end and leave the table). */
    if (run_here)
        cnb__mbox_run_inline(run_here);
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
    size_t lost = 0;
    size_t k = cnb__ln_nodedown(rt->ln, peer, &keys, &e, &ended);
    if (!k)
        return;
    pthread_rwlock_rdlock(&rt->tab_lock);
    for (size_t i = 0; i < k; i++) {
        cnb_proc_t *p = cnb__pt_find_key_locked(rt, keys[i]);
        if (!p)
            continue;
        sig_t *s = cnb__sig_new(SIG_NODEDOWN, NULL, 0, 1);
        if (!s) {
            /* Its records' epoch is over, so it owes that node nothing; but
             * its links and monitors there stay until it ends. */
            lost++;
            continue;
        }
        s->meta->name = cnb__ln_dup(rt->ln, e);
        s->meta->epoch = ended;
        cnb__mbox_push(p, s);
    }
    pthread_rwlock_unlock(&rt->tab_lock);
    if (lost)
        cnb__log(n, CNB_LOG_WARNING,
                 "out of memory: %zu worker(s) not told that %s went down (no noconnection exits)",
                 lost, peer);
    cnb__ln_put(rt->ln, e);
    free(keys);
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
    if (!rt->tab || !rt->names || !rt->threads || cnb__ln_create(cap, seed, &rt->ln) ||
        cnb__types_create(&rt->types)) {
        cnb__types_destroy(rt->types);
        cnb__ln_destroy(rt->ln);
        free(rt->tab);
        free(rt->names);
        free(rt->threads);
        free(rt);
        return CNB_ENOMEM;
    }
    pthread_rwlock_init(&rt->tab_lock, NULL);
    pthread_mutex_init(&rt->rq_mu, NULL);
    sem_init(&rt->rq_sem, 0, 0);
    *out = rt;
    return 0;
}

int cnb__rt_start(cnb_rt_t *rt)
{
    return cnb__pool_start(rt);
}

void cnb__rt_destroy(cnb_rt_t *rt)
{
    if (!rt)
        return;
    cnb__types_destroy(rt->types); /* remote spawns in flight end first */
    cnb__pool_stop(rt);
    /* Workers still alive: free without callbacks (the node is gone). */
    for (size_t i = 0; i < rt->tab_size; i++)
        for (cnb_proc_t *p = rt->tab[i], *nx; p; p = nx) {
            nx = p->hnext;
            for (sig_t *s = p->head, *sn; s; s = sn) {
                sn = s->next;
                cnb__sig_free(p, s);
            }
            cnb__pl_clear(rt->ln, &p->pl);
            ei_x_free(&p->reason);
            free(p->reg);
                    free(p);
        }
    free(rt->tab);
    free(rt->names);
    free(rt->threads);
    cnb__ln_destroy(rt->ln);
    pthread_rwlock_destroy(&rt->tab_lock);
    pthread_mutex_destroy(&rt->rq_mu);
    sem_destroy(&rt->rq_sem);
    free(rt);
}
