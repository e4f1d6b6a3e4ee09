/* link_names.c: the names link and monitor records refer to, interned (one
 * refcounted copy per name), and per node: its connection epoch, which
 * processes hold records there (so a nodedown reaches only them) and how many
 * records and reserved signals it has here (the per-peer cap).
 * Tests: tests/integration/hostile_signals_tests.erl, runtime_tests.erl. */
#include "proc_links.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "cnb_common.h"

#define TRIM_AFTER 16384 /* records freed between two malloc_trim calls */

struct cnb_lname {
    struct cnb_lname *hnext;
    uint64_t hash;
    size_t refs;
    uint32_t epoch;         /* +1 at each nodedown */
    uint32_t refused_epoch; /* epoch + 1 when a refusal was logged; 0: none yet */
    size_t count;           /* records and reserved signals crossing to this node */
    size_t releasing;       /* its DEMONITOR/UNLINK signals queued here, not yet run */
    cnb_hold_t *holders;
    char s[];
};

struct cnb_hold {
    cnb_hold_t *pnext;         /* the process's holds */
    cnb_hold_t *nprev, *nnext; /* the node's holders */
    cnb_lname_t *node;         /* one reference while the hold exists */
    uint64_t key;
    size_t count;
};

struct cnb_lnames {
    pthread_mutex_t mu;
    cnb_lname_t **b;
    size_t size, count;
    uint64_t seed;
    size_t cap;
    atomic_size_t freed;
};

static uint64_t str_hash(uint64_t seed, const char *s)
{
    uint64_t h = 1469598103934665603ull ^ seed;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h ^ (h >> 29);
}

int cnb__ln_create(size_t cap, uint64_t seed, cnb_lnames_t **out)
{
    cnb_lnames_t *L = calloc(1, sizeof(*L));
    if (!L)
        return CNB_ENOMEM;
    L->size = 64;
    if (!(L->b = calloc(L->size, sizeof(*L->b)))) {
        free(L);
        return CNB_ENOMEM;
    }
    L->seed = seed;
    L->cap = cap ? cap : 1;
    atomic_init(&L->freed, 0);
    pthread_mutex_init(&L->mu, NULL);
    *out = L;
    return 0;
}

void cnb__ln_destroy(cnb_lnames_t *L)
{
    if (!L)
        return;
    for (size_t i = 0; i < L->size; i++)
        for (cnb_lname_t *e = L->b[i], *nx; e; e = nx) {
            nx = e->hnext;
            free(e);
        }
    free(L->b);
    pthread_mutex_destroy(&L->mu);
    free(L);
}

size_t cnb__ln_cap(const cnb_lnames_t *L)
{
    return L->cap;
}

static void grow_locked(cnb_lnames_t *L)
{
    size_t ns = L->size * 2;
    cnb_lname_t **nb = calloc(ns, sizeof(*nb));
    if (!nb)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < L->size; i++)
        for (cnb_lname_t *e = L->b[i], *nx; e; e = nx) {
            nx = e->hnext;
            e->hnext = nb[e->hash & (ns - 1)];
            nb[e->hash & (ns - 1)] = e;
        }
    free(L->b);
    L->b = nb;
    L->size = ns;
}

static cnb_lname_t *find_locked(cnb_lnames_t *L, const char *s, uint64_t h)
{
    for (cnb_lname_t *e = L->b[h & (L->size - 1)]; e; e = e->hnext)
        if (e->hash == h && !strcmp(e->s, s))
            return e;
    return NULL;
}

cnb_lname_t *cnb__ln_get(cnb_lnames_t *L, const char *s)
{
    uint64_t h = str_hash(L->seed, s);
    pthread_mutex_lock(&L->mu);
    cnb_lname_t *e = find_locked(L, s, h);
    if (!e) {
        size_t len = strlen(s);
        if ((e = calloc(1, sizeof(*e) + len + 1))) {
            e->hash = h;
            memcpy(e->s, s, len + 1);
            if (L->count + 1 > L->size)
                grow_locked(L);
            e->hnext = L->b[h & (L->size - 1)];
            L->b[h & (L->size - 1)] = e;
            L->count++;
        }
    }
    if (e)
        e->refs++;
    pthread_mutex_unlock(&L->mu);
    return e;
}

cnb_lname_t *cnb__ln_dup(cnb_lnames_t *L, cnb_lname_t *e)
{
    pthread_mutex_lock(&L->mu);
    e->refs++;
    pthread_mutex_unlock(&L->mu);
    return e;
}

static void put_locked(cnb_lnames_t *L, cnb_lname_t *e)
{
    if (--e->refs)
        return;
    for (cnb_lname_t **pp = &L->b[e->hash & (L->size - 1)]; *pp; pp = &(*pp)->hnext)
        if (*pp == e) {
            *pp = e->hnext;
            break;
        }
    L->count--;
    free(e);
}

void cnb__ln_put(cnb_lnames_t *L, cnb_lname_t *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&L->mu);
    put_locked(L, e);
    pthread_mutex_unlock(&L->mu);
}

const char *cnb__ln_str(const cnb_lname_t *e)
{
    return e->s;
}

uint64_t cnb__ln_hash(const cnb_lname_t *e)
{
    return e->hash;
}

uint32_t cnb__ln_epoch(cnb_lnames_t *L, const cnb_lname_t *e)
{
    pthread_mutex_lock(&L->mu);
    uint32_t epoch = e->epoch;
    pthread_mutex_unlock(&L->mu);
    return epoch;
}

int cnb__ln_current(cnb_lnames_t *L, const cnb_lname_t *e, uint32_t epoch)
{
    return cnb__ln_epoch(L, e) == epoch;
}

int cnb__ln_hold(cnb_lnames_t *L, cnb_hold_t **holds, uint64_t key, cnb_lname_t *e,
                 int limited, uint32_t *epoch, int *first)
{
    int rc = 0;
    pthread_mutex_lock(&L->mu);
    /* The room a queued DEMONITOR/UNLINK will make counts already: the peer
     * sent it before this signal, and its worker runs them in that order.
     * A bogus one (nothing to drop) lets count pass the cap by one while it
     * is queued, so the excess stays bounded by signals held in memory anyway. */
    if (limited && e->count >= L->cap + e->releasing) {
        *first = e->refused_epoch != e->epoch + 1;
        e->refused_epoch = e->epoch + 1;
        rc = CNB_ETOOBIG;
        goto out;
    }
    cnb_hold_t *h = *holds;
    while (h && h->node != e)
        h = h->pnext;
    if (!h) {
        if (!(h = calloc(1, sizeof(*h)))) {
            rc = CNB_ENOMEM;
            goto out;
        }
        h->node = e;
        e->refs++;
        h->key = key;
        h->pnext = *holds;
        *holds = h;
        h->nnext = e->holders;
        if (e->holders)
            e->holders->nprev = h;
        e->holders = h;
    }
    h->count++;
    e->count++;
    *epoch = e->epoch;
out:
    pthread_mutex_unlock(&L->mu);
    return rc;
}

void cnb__ln_releasing(cnb_lnames_t *L, cnb_lname_t *e, int delta)
{
    pthread_mutex_lock(&L->mu);
    if (delta > 0)
        e->releasing++;
    else if (e->releasing)
        e->releasing--;
    pthread_mutex_unlock(&L->mu);
}

void cnb__ln_release(cnb_lnames_t *L, cnb_hold_t **holds, cnb_lname_t *e)
{
    pthread_mutex_lock(&L->mu);
    cnb_hold_t **pp = holds;
    while (*pp && (*pp)->node != e)
        pp = &(*pp)->pnext;
    cnb_hold_t *h = *pp;
    if (h) {
        e->count--;
        if (--h->count == 0) {
            *pp = h->pnext;
            if (h->nprev)
                h->nprev->nnext = h->nnext;
            else
                e->holders = h->nnext;
            if (h->nnext)
                h->nnext->nprev = h->nprev;
            free(h);
            put_locked(L, e);
        }
    }
    pthread_mutex_unlock(&L->mu);
}

size_t cnb__ln_nodedown(cnb_lnames_t *L, const char *node, uint64_t **keys, cnb_lname_t **out,
                        uint32_t *ended)
{
    uint64_t h = str_hash(L->seed, node);
    size_t n = 0;
    pthread_mutex_lock(&L->mu);
    cnb_lname_t *e = find_locked(L, node, h);
    if (!e)
        goto out;
    *ended = e->epoch++;
    for (cnb_hold_t *x = e->holders; x; x = x->nnext)
        n++;
    if (!n)
        goto out;
    uint64_t *k = malloc(n * sizeof(*k));
    if (!k) {
        n = 0; /* the records stay until their process ends; no signal is owed */
        goto out;
    }
    size_t i = 0;
    for (cnb_hold_t *x = e->holders; x; x = x->nnext)
        k[i++] = x->key;
    e->refs++;
    *keys = k;
    *out = e;
out:
    pthread_mutex_unlock(&L->mu);
    return n;
}

void cnb__ln_freed(cnb_lnames_t *L, size_t n)
{
    size_t before = atomic_fetch_add(&L->freed, n);
    if (before + n < TRIM_AFTER)
        return;
    atomic_store(&L->freed, 0);
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}
