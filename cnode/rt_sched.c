/* rt_sched.c: scheduling of the process runtime: each worker's mailbox of
 * signals, the run queue of workers with signals waiting, and the pool of
 * threads that takes them from it, BATCH signals at a time, taken off the
 * mailbox under one lock (a priority signal still overtakes those of them
 * not handled yet). A pool thread
 * out of work spins a while (opts.spin_us; one thread at a time; not after
 * runs of one-way messages only: pool_thread) before it
 * sleeps on a semaphore, so that the next hand-off from the I/O thread needs
 * no wake-up; the queue posts only for threads that sleep (a semaphore, not
 * a condition variable: a thread woken from pthread_cond_wait holds its
 * mutex as contended, and its unlock costs one more system call).
 * An inline worker (cnb_spawn_opts_t.run_inline) that is idle when the I/O
 * thread delivers a signal to it is claimed by the I/O thread instead, by the
 * same flag (scheduled) a pool thread's claim sets, and run there
 * (cnb__mbox_run_inline): no hand-off at all.
 * Tests: tests/integration/runtime_tests.erl, spin_tests.erl, bench
 * (targets section). */
#include "runtime_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 64 /* signals a worker handles before yielding its thread */

/* With rq_mu held: takes one sleeping thread off the count, to be woken
 * (sem_post) once the lock is released. Returns whether there was one. */
static int take_sleeper(cnb_rt_t *rt)
{
    if (!rt->sleepers)
        return 0;
    rt->sleepers--;
    return 1;
}

/* Queues p. A sleeping thread is woken only when no thread spins: a
 * spinning one takes p, and wakes a sleeper itself if more is queued. */
static void rq_push(cnb_rt_t *rt, cnb_proc_t *p)
{
    pthread_mutex_lock(&rt->rq_mu);
    p->rq_next = NULL;
    if (rt->rq_tail)
        rt->rq_tail->rq_next = p;
    else
        rt->rq_head = p;
    rt->rq_tail = p;
    atomic_fetch_add_explicit(&rt->rq_len, 1, memory_order_release);
    int wake = !atomic_load_explicit(&rt->spinning, memory_order_acquire) && take_sleeper(rt);
    pthread_mutex_unlock(&rt->rq_mu);
    if (wake)
        sem_post(&rt->rq_sem);
}

/* Whether a reply is likely soon: a '$gen_call' delivered is not handled yet.
 * Other work (a stream of one-way messages, a worker's start or end) makes
 * no frame the I/O thread should spin for: a frame it does make wakes it. */
int cnb__rt_busy(cnb_node_t *n)
{
    cnb_rt_t *rt = n->rt;
    return rt && atomic_load_explicit(&rt->calls_in, memory_order_acquire) > 0;
}

/* Links s into p's mailbox (a priority signal after those already waiting,
 * ahead of every other; an ordinary one at the tail) and schedules p if it
 * is neither scheduled nor dead: into the run queue, or, when io and p is an
 * inline worker, claimed for the I/O thread (returns 1). */
static int mbox_link(cnb_proc_t *p, sig_t *s, int prio, int io)
{
    int sched = 0;
    cnb__mbox_lock(&p->mu);
    if (prio) {
        sig_t **at = p->prio_last ? &p->prio_last->next : &p->head;
        s->next = *at;
        *at = s;
        if (!s->next)
            p->tail = s;
        p->prio_last = s;
        atomic_store_explicit(&p->prio_in, 1, memory_order_release);
    } else {
        s->next = NULL;
        if (p->tail)
            p->tail->next = s;
        else
            p->head = s;
        p->tail = s;
    }
    if (!p->scheduled && !p->dead) {
        p->scheduled = 1;
        sched = 1;
    }
    cnb__mbox_unlock(&p->mu);
    if (sched && io && p->run_inline && !p->node->rt->inline_running)
        return 1; /* scheduled = 1: ours, as a pool thread's from the queue */
    if (sched)
        rq_push(p->node->rt, p);
    return 0;
}

void cnb__mbox_push(cnb_proc_t *p, sig_t *s)
{
    mbox_link(p, s, 0, 0);
}

void cnb__mbox_push_prio(cnb_proc_t *p, sig_t *s)
{
    mbox_link(p, s, 1, 0);
}

int cnb__mbox_push_io(cnb_proc_t *p, sig_t *s, int prio)
{
    return mbox_link(p, s, prio, cnb_on_io_thread(p->node));
}

void cnb__mbox_go_live(cnb_proc_t *p)
{
    cnb__mbox_lock(&p->mu);
    int sched = p->head != NULL;
    p->scheduled = sched;
    cnb__mbox_unlock(&p->mu);
    if (sched)
        rq_push(p->node->rt, p);
}

sig_t *cnb__mbox_take_all(cnb_proc_t *p)
{
    cnb__mbox_lock(&p->mu);
    sig_t *s = p->head;
    p->head = p->tail = p->prio_last = NULL;
    atomic_store_explicit(&p->prio_in, 0, memory_order_relaxed);
    cnb__mbox_unlock(&p->mu);
    return s;
}

sig_t *cnb__sig_new(int kind, const char *data, size_t len, int with_meta)
{
    sig_t *s = malloc(sizeof(*s) + len);
    if (!s)
        return NULL;
    s->next = NULL;
    s->kind = kind;
    s->call = 0;
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

void cnb__sig_free(cnb_proc_t *p, sig_t *s)
{
    if (s->call) /* after its handling submitted any reply (io_ready in loop.c) */
        atomic_fetch_sub_explicit(&p->node->rt->calls_in, 1, memory_order_release);
    sig_meta_t *mt = s->meta;
    if (mt) {
        cnb_lnames_t *L = p->node->rt->ln;
        if (mt->reserved)
            cnb__ln_release(L, &p->pl.holds, mt->from.node);
        if (mt->releasing)
            cnb__ln_releasing(L, mt->from.node, -1);
        cnb__cpid_put(L, &mt->from);
        cnb__cref_put(L, &mt->ref);
        cnb__ln_put(L, mt->name);
        free(mt);
    }
    free(s);
}

/* Takes up to max signals off p's mailbox under one lock: the priority
 * signals waiting (EEP 76) if any, else ordinary ones (*ordinary = 1). NULL
 * when it is empty: p is no longer scheduled then. */
static sig_t *take_batch(cnb_proc_t *p, int max, int *ordinary)
{
    cnb__mbox_lock(&p->mu);
    sig_t *first = p->head, *last = first;
    if (!first) {
        p->scheduled = 0;
        cnb__mbox_unlock(&p->mu);
        return NULL;
    }
    *ordinary = !p->prio_last;
    for (int cnt = 1; cnt < max && last->next && last != p->prio_last; cnt++)
        last = last->next;
    if (last == p->prio_last) { /* every priority signal taken */
        p->prio_last = NULL;
        atomic_store_explicit(&p->prio_in, 0, memory_order_relaxed);
    }
    p->head = last->next;
    if (!p->head)
        p->tail = NULL;
    last->next = NULL;
    cnb__mbox_unlock(&p->mu);
    return first;
}

/* Puts signals taken but not handled back at the front of p's mailbox,
 * behind the priority signals that came meanwhile (they overtake ordinary
 * signals not handled yet, as they would have in the mailbox). */
static void put_back(cnb_proc_t *p, sig_t *first)
{
    sig_t *last = first;
    while (last->next)
        last = last->next;
    cnb__mbox_lock(&p->mu);
    sig_t **at = p->prio_last ? &p->prio_last->next : &p->head;
    last->next = *at;
    *at = first;
    if (!last->next)
        p->tail = last;
    cnb__mbox_unlock(&p->mu);
}

/* The signal this pool thread is handling (cnb__rt_wait_begin). */
static __thread sig_t *handling;

/* What a run handled, for the pool thread's spin policy (pool_thread). */
typedef struct run_seen {
    int msgs;  /* one-way messages */
    int other; /* calls, and every other kind of signal */
} run_seen_t;

/* Runs up to BATCH of p's signals; p ends (and is freed) as soon as one
 * leaves it dead (those still taken go back first: its end answers them).
 * Counts what it handled into *seen. */
static void run(cnb_proc_t *p, run_seen_t *seen)
{
    int k = 0, ordinary = 0;
    while (k < BATCH) {
        sig_t *s = take_batch(p, BATCH - k, &ordinary);
        if (!s)
            return;
        while (s) {
            if (ordinary && atomic_load_explicit(&p->prio_in, memory_order_acquire)) {
                put_back(p, s); /* the priority signal first */
                break;
            }
            sig_t *nx = s->next;
            if (s->kind == SIG_MSG && !s->call)
                seen->msgs++;
            else
                seen->other++;
            handling = s;
            cnb__proc_handle(p, s);
            handling = NULL;
            cnb__sig_free(p, s);
            k++;
            if (p->dead) {
                if (nx)
                    put_back(p, nx);
                cnb__proc_finish(p);
                return;
            }
            s = nx;
        }
    }
    rq_push(p->node->rt, p); /* still scheduled: let others run first */
}

void cnb__mbox_run_inline(cnb_proc_t *p)
{
    cnb_rt_t *rt = p->node->rt;
    rt->inline_running = 1; /* what it sends to another inline worker queues */
    run_seen_t seen = {0, 0};
    run(p, &seen);
    rt->inline_running = 0;
}

static int rq_ready(void *arg)
{
    const cnb_rt_t *rt = arg;
    return atomic_load_explicit(&rt->rq_len, memory_order_acquire) ||
           atomic_load_explicit(&rt->stopping, memory_order_relaxed);
}

/* Out of work: spins a while for more, when no other thread of the node
 * spins (the I/O thread, awaiting this thread's reply, gives the role up
 * at once, as no worker runs any more). */
static void spin_for_work(cnb_rt_t *rt)
{
    cnb_node_t *n = rt->node;
    int us = n->opts.spin_us;
    if (us <= 0 || rq_ready(rt) || !cnb__spin_claim(n, CNB_SPIN_CLAIM_WAIT_US))
        return;
    atomic_store_explicit(&rt->spinning, 1, memory_order_release);
    cnb__spin_until(rq_ready, rt, us);
    atomic_store_explicit(&rt->spinning, 0, memory_order_release);
    cnb__spin_release(n);
}

/* Sleeps until work is queued or the pool stops: NULL then, else the
 * worker taken from the queue. A thread sleeps on the
 * semaphore, counted in sleepers; whoever takes it off the count posts. */
static cnb_proc_t *next_worker(cnb_rt_t *rt)
{
    pthread_mutex_lock(&rt->rq_mu);
    while (!rt->rq_head && !rt->stop) {
        rt->sleepers++;
        pthread_mutex_unlock(&rt->rq_mu);
        while (sem_wait(&rt->rq_sem) && errno == EINTR)
            ;
        pthread_mutex_lock(&rt->rq_mu);
    }
    cnb_proc_t *p = rt->rq_head;
    int wake = 0;
    if (p) {
        rt->rq_head = p->rq_next;
        if (!rt->rq_head)
            rt->rq_tail = NULL;
        else
            wake = take_sleeper(rt); /* more waits: one more thread on it */
        atomic_fetch_sub_explicit(&rt->rq_len, 1, memory_order_release);
    }
    pthread_mutex_unlock(&rt->rq_mu);
    if (wake)
        sem_post(&rt->rq_sem);
    return p;
}

/* The runtime whose pool this thread is of (NULL: not a pool thread). */
static __thread cnb_rt_t *pool_of;

void cnb__rt_wait_begin(cnb_node_t *n)
{
    sig_t *s = handling;
    if (!n->rt || pool_of != n->rt || !s || !s->call)
        return;
    /* The call being handled stops counting for good: its reply, if any,
     * comes after a wait the I/O thread should not spin through (a frame it
     * makes then wakes the I/O thread as any other does). */
    s->call = 0;
    atomic_fetch_sub_explicit(&n->rt->calls_in, 1, memory_order_release);
}

static void *pool_thread(void *arg)
{
    cnb_rt_t *rt = arg;
    pool_of = rt;
    /* In a stream of one-way messages into a worker a spin for work always
     * succeeds, so it would hold a core through the whole stream (beside
     * the I/O thread and, on a small machine, the sender): a thread whose
     * last run handled two messages or more and nothing else sleeps instead,
     * and keeps doing so until a run handles anything but messages. */
    int stream = 0;
    for (;;) {
        if (!stream)
            spin_for_work(rt);
        cnb_proc_t *p = next_worker(rt);
        if (!p)
            return NULL;
        run_seen_t seen = {0, 0};
        run(p, &seen);
        if (seen.other)
            stream = 0;
        else if (seen.msgs >= 2)
            stream = 1;
    }
}

int cnb__pool_start(cnb_rt_t *rt)
{
    for (unsigned i = 0; i < rt->nthreads; i++)
        if (cnb__thread_create(&rt->threads[i], pool_thread, rt) == 0)
            rt->started++;
    return rt->started ? 0 : CNB_ESYS;
}

void cnb__pool_stop(cnb_rt_t *rt)
{
    pthread_mutex_lock(&rt->rq_mu);
    rt->stop = 1;
    atomic_store(&rt->stopping, 1);
    int sleeping = rt->sleepers;
    rt->sleepers = 0;
    pthread_mutex_unlock(&rt->rq_mu);
    while (sleeping-- > 0)
        sem_post(&rt->rq_sem);
    for (int i = 0; i < rt->started; i++)
        pthread_join(rt->threads[i], NULL);
}
