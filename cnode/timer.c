/* timer.c: cnb_send_after and cnb_cancel_timer: one thread per node with a
 * binary heap of deadlines; a due timer is an ordinary send, so it lands in
 * the mailbox in order with everything else. Tests:
 * tests/integration/runtime_tests.erl (cache worker TTL). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node_int.h"
#include "runtime.h"
#include "../core/deadline.h"

typedef struct tmr {
    int64_t due;
    uint64_t id;
    erlang_pid to;
    size_t len;
    char *msg;
} tmr_t;

struct cnb_timers {
    cnb_node_t *node;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    tmr_t **heap;
    size_t n, cap;
    uint64_t next_id;
    int stop;
    pthread_t thread;
    int started;
};

static void swap(tmr_t **h, size_t a, size_t b)
{
    tmr_t *t = h[a];
    h[a] = h[b];
    h[b] = t;
}

static void sift_up(tmr_t **h, size_t i)
{
    while (i > 0 && h[(i - 1) / 2]->due > h[i]->due) {
        swap(h, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void sift_down(tmr_t **h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l]->due < h[m]->due)
            m = l;
        if (r < n && h[r]->due < h[m]->due)
            m = r;
        if (m == i)
            return;
        swap(h, i, m);
        i = m;
    }
}

static tmr_t *remove_at(cnb_timers_t *t, size_t i)
{
    tmr_t *x = t->heap[i];
    t->heap[i] = t->heap[--t->n];
    if (i < t->n) {
        sift_down(t->heap, t->n, i);
        sift_up(t->heap, i);
    }
    return x;
}

static void *timer_thread(void *arg)
{
    cnb_timers_t *t = arg;
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        if (t->n == 0) {
            pthread_cond_wait(&t->cv, &t->mu);
            continue;
        }
        int64_t now = cnb__now_ms();
        if (t->heap[0]->due <= now) {
            tmr_t *x = remove_at(t, 0);
            pthread_mutex_unlock(&t->mu);
            cnb_send(t->node, NULL, &x->to, x->msg, x->len);
            free(x->msg);
            free(x);
            pthread_mutex_lock(&t->mu);
            continue;
        }
        struct timespec ts;
        cnb__deadline(CLOCK_MONOTONIC, t->heap[0]->due - now, &ts);
        pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

int cnb__timers_create(cnb_node_t *n, cnb_timers_t **out)
{
    cnb_timers_t *t = calloc(1, sizeof(*t));
    if (!t)
        return CNB_ENOMEM;
    t->node = n;
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&t->thread, NULL, timer_thread, t) == 0)
        t->started = 1;
    *out = t;
    return t->started ? 0 : CNB_ESYS;
}

void cnb__timers_destroy(cnb_timers_t *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = 1;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    if (t->started)
        pthread_join(t->thread, NULL);
    for (size_t i = 0; i < t->n; i++) {
        free(t->heap[i]->msg);
        free(t->heap[i]);
    }
    free(t->heap);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

int cnb_send_after(cnb_node_t *n, unsigned ms, const erlang_pid *to, const char *msg, size_t len,
                   uint64_t *tref)
{
    cnb_timers_t *t = n->timers;
    if (!to || !msg || len < 2 || (unsigned char)msg[0] != 131)
        return CNB_EINVAL;
    tmr_t *x = calloc(1, sizeof(*x));
    char *copy = malloc(len);
    if (!x || !copy) {
        free(x);
        free(copy);
        return CNB_ENOMEM;
    }
    memcpy(copy, msg, len);
    x->msg = copy;
    x->len = len;
    x->to = *to;
    x->due = cnb__now_ms() + ms;
    pthread_mutex_lock(&t->mu);
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 64;
        tmr_t **nh = realloc(t->heap, nc * sizeof(*nh));
        if (!nh) {
            pthread_mutex_unlock(&t->mu);
            free(copy);
            free(x);
            return CNB_ENOMEM;
        }
        t->heap = nh;
        t->cap = nc;
    }
    x->id = ++t->next_id;
    t->heap[t->n] = x;
    sift_up(t->heap, t->n++);
    if (tref)
        *tref = x->id;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    return 0;
}

int cnb_cancel_timer(cnb_node_t *n, uint64_t tref)
{
    cnb_timers_t *t = n->timers;
    tmr_t *x = NULL;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n; i++)
        if (t->heap[i]->id == tref) {
            x = remove_at(t, i);
            break;
        }
    pthread_mutex_unlock(&t->mu);
    if (!x)
        return CNB_ENOENT;
    free(x->msg);
    free(x);
    return 0;
}
