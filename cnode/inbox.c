/* inbox.c: what other threads hand the I/O thread: frames to route and
 * control requests (connect, keep connected, disconnect), each its own type,
 * in one mutex-guarded inbox; the I/O thread takes them in the order they
 * were given. An eventfd wakes it only when it sleeps (or is about to): while
 * it is awake or spinning it drains the inbox before it sleeps, and a hand-off
 * costs no system call. The public connect/disconnect calls.
 * Tests: tests/integration/dist_tests.erl, tests/unit/test_conn_race.c,
 * bench/bench_dist.c. */
#include "conn_policy.h"
#include "loop_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void wake(cnb_node_t *n)
{
    uint64_t one = 1;
    ssize_t w = write(n->wake_ev.fd, &one, sizeof(one));
    (void)w;
}

/* With inbox_mu held, after adding to the inbox: unlocks it and wakes the
 * I/O thread, unless it is awake or a wake-up is pending already (always
 * when force). */
static void unlock_and_wake(cnb_node_t *n, int force)
{
    int need_wake = force || !n->inbox_signalled;
    if (!force)
        n->inbox_signalled = 1;
    atomic_store_explicit(&n->inbox_ready, 1, memory_order_release);
    pthread_mutex_unlock(&n->inbox_mu);
    if (need_wake)
        wake(n);
}

int cnb__inbox_sleep(cnb_node_t *n)
{
    pthread_mutex_lock(&n->inbox_mu);
    int empty = !n->inbox_head && !n->ctl_head;
    if (empty)
        n->inbox_signalled = 0;
    pthread_mutex_unlock(&n->inbox_mu);
    return empty;
}

void cnb__inbox_awake(cnb_node_t *n)
{
    pthread_mutex_lock(&n->inbox_mu);
    n->inbox_signalled = 1;
    pthread_mutex_unlock(&n->inbox_mu);
}

void cnb__inbox_woken(cnb_node_t *n)
{
    uint64_t v;
    ssize_t r = read(n->wake_ev.fd, &v, sizeof(v));
    (void)r;
}

static int on_io_thread(const cnb_node_t *n)
{
    return n->thread_started && pthread_equal(pthread_self(), n->thread);
}

int cnb_on_io_thread(const cnb_node_t *n)
{
    return n && on_io_thread(n);
}

int cnb__submit(cnb_node_t *n, cnb_chunk_t *ch)
{
    if (atomic_load(&n->stopping)) {
        free(ch);
        return CNB_ECLOSED;
    }
    if (on_io_thread(n)) {
        cnb__route(n, ch); /* on the I/O thread already: no queue hop */
        return 0;
    }
    ch->next = NULL;
    pthread_mutex_lock(&n->inbox_mu);
    if (n->inbox_tail)
        n->inbox_tail->next = ch;
    else
        n->inbox_head = ch;
    n->inbox_tail = ch;
    n->inbox_frames++;
    unlock_and_wake(n, 0);
    return 0;
}

/* Carries out one control request. */
static void do_ctl(cnb_node_t *n, const cnb_ctl_t *q)
{
    if (q->kind == CTL_CONNECT) {
        cnb__connect_out(n, q->peer); /* tells nodedown itself when it cannot */
    } else if (q->kind == CTL_KEEP) {
        cnb__keep_add(n, q->peer);
    } else if (q->kind == CTL_DISCONNECT) {
        cnb_conn_t *c = cnb__conn_find(n, q->peer);
        if (!c)
            c = cnb__conn_attempt(n, q->peer, NULL, 1);
        if (c)
            cnb__conn_close(n, c, CNB_LOG_INFO, "disconnected on request");
    }
}

void cnb__drain_inbox(cnb_node_t *n)
{
    if (!atomic_load_explicit(&n->inbox_ready, memory_order_acquire))
        return;
    pthread_mutex_lock(&n->inbox_mu);
    cnb_chunk_t *ch = n->inbox_head;
    cnb_ctl_t *q = n->ctl_head;
    n->inbox_head = n->inbox_tail = NULL;
    n->ctl_head = n->ctl_tail = NULL;
    n->inbox_frames = 0;
    atomic_store_explicit(&n->inbox_ready, 0, memory_order_relaxed);
    pthread_mutex_unlock(&n->inbox_mu);
    size_t routed = 0;
    while (ch || q) {
        if (q && (!ch || routed >= q->after)) {
            cnb_ctl_t *nq = q->next;
            do_ctl(n, q);
            free(q);
            q = nq;
            continue;
        }
        cnb_chunk_t *nx = ch->next;
        cnb__route(n, ch);
        routed++;
        ch = nx;
    }
}

void cnb__inbox_free(cnb_node_t *n)
{
    cnb__chunks_free(n->inbox_head);
    n->inbox_head = n->inbox_tail = NULL;
    while (n->ctl_head) {
        cnb_ctl_t *q = n->ctl_head;
        n->ctl_head = q->next;
        free(q);
    }
    n->ctl_tail = NULL;
}

/* Queues a control request. From the I/O thread itself (a callback) it goes
 * before the frames waiting, as the next thing done; from any other thread,
 * after everything handed in before it. */
static int control_request(cnb_node_t *n, const char *peer, int kind)
{
    if (!peer)
        return CNB_EINVAL;
    size_t plen = strlen(peer);
    if (plen >= CNB_NAME_MAX)
        return CNB_EINVAL;
    int here = on_io_thread(n);
    if (!here && atomic_load(&n->stopping))
        return CNB_ECLOSED;
    cnb_ctl_t *q = malloc(sizeof(*q) + plen + 1);
    if (!q)
        return CNB_ENOMEM;
    q->kind = kind;
    memcpy(q->peer, peer, plen + 1);
    pthread_mutex_lock(&n->inbox_mu);
    if (here) {
        q->after = 0;
        q->next = n->ctl_head;
        n->ctl_head = q;
        if (!n->ctl_tail)
            n->ctl_tail = q;
    } else {
        q->after = n->inbox_frames;
        q->next = NULL;
        if (n->ctl_tail)
            n->ctl_tail->next = q;
        else
            n->ctl_head = q;
        n->ctl_tail = q;
    }
    unlock_and_wake(n, here);
    return 0;
}

int cnb_node_connect(cnb_node_t *n, const char *peer)
{
    if (!peer || !strchr(peer, '@'))
        return CNB_EINVAL;
    return control_request(n, peer, CTL_CONNECT);
}

int cnb_node_keep_connected(cnb_node_t *n, const char *peer)
{
    if (!peer || !strchr(peer, '@'))
        return CNB_EINVAL;
    return control_request(n, peer, CTL_KEEP);
}

int cnb_node_anchors(cnb_node_t *n, char (*out)[MAXATOMLEN_UTF8], int max)
{
    pthread_mutex_lock(&n->peers_mu);
    int cnt = n->nkeep;
    for (int i = 0; i < cnt && i < max; i++)
        snprintf(out[i], MAXATOMLEN_UTF8, "%s", n->keep[i].node);
    pthread_mutex_unlock(&n->peers_mu);
    return cnt;
}

int cnb_node_disconnect(cnb_node_t *n, const char *peer)
{
    return control_request(n, peer, CTL_DISCONNECT);
}

