/* glob_table.c: visible mode's copy of :global's name table and its lock
 * table (visible.c feeds both from global_name_server's protocol; any thread
 * reads the names: one mutex). Names and lock ids are kept as canonical ETF
 * (cnb_term_canonical), so two encodings of one term are one key. Pids of
 * other nodes (name owners, lock holders) are monitored from the node's
 * locker pid, as global monitors them; their DOWN, their node's nodedown and,
 * for our own workers, their end take them out. Limits: GT_MAX_NAMES names
 * and GT_MAX_LOCKS locks (past them: not kept, one warning). */
#include "glob_table.h"

#include "cnb_term.h"
#include "log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define GT_BUCKETS 1024
#define GT_MAX_NAMES 65536
#define GT_MAX_LOCKS 65536
#define GT_MAX_HOLDERS 64 /* pids under one requester id (global allows many) */

typedef struct gname {
    struct gname *next;
    unsigned char *name; /* canonical, with 131 */
    size_t nlen;
    char *method; /* ETF, no version byte */
    int mlen;
    erlang_pid pid;
    erlang_ref mref;
    int monitored;
} gname_t;

typedef struct gholder {
    erlang_pid pid;
    erlang_ref mref;
    int monitored;
} gholder_t;

typedef struct glock {
    struct glock *next;
    unsigned char *res, *req; /* canonical ResourceId, LockRequesterId */
    size_t rlen, qlen;
    gholder_t h[GT_MAX_HOLDERS];
    int nh;
} glock_t;

struct cnb_gtab {
    pthread_mutex_t mu;
    erlang_pid locker;
    gname_t *b[GT_BUCKETS];
    size_t nnames, nlocks;
    glock_t *locks;
    int warned_names, warned_locks;
};

cnb_gtab_t *cnb__gt_create(const erlang_pid *locker)
{
    cnb_gtab_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    t->locker = *locker;
    return t;
}

static void name_free(gname_t *e)
{
    free(e->name);
    free(e->method);
    free(e);
}

void cnb__gt_destroy(cnb_gtab_t *t)
{
    if (!t)
        return;
    for (size_t k = 0; k < GT_BUCKETS; k++)
        for (gname_t *e = t->b[k], *nx; e; e = nx) {
            nx = e->next;
            name_free(e);
        }
    for (glock_t *l = t->locks, *nx; l; l = nx) {
        nx = l->next;
        free(l->res);
        free(l->req);
        free(l);
    }
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static int same_pid(const erlang_pid *a, const erlang_pid *b)
{
    return a->num == b->num && a->serial == b->serial && a->creation == b->creation &&
           !strcmp(a->node, b->node);
}

static size_t hash(const unsigned char *k, size_t len)
{
    size_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ k[i]) * 16777619u;
    return h % GT_BUCKETS;
}

/* A monitor from our locker on pid when it is of another node (the DOWN comes
 * back to visible.c, which calls cnb__gt_down). */
static int watch(cnb_node_t *n, cnb_gtab_t *t, const erlang_pid *pid, erlang_ref *ref)
{
    if (!strcmp(pid->node, n->name))
        return 0;
    cnb_node_make_ref(n, ref);
    return !cnb__sig_monitor(n, CNB_OP_MONITOR_P, &t->locker, pid, NULL, NULL, ref);
}

static void unwatch(cnb_node_t *n, cnb_gtab_t *t, const erlang_pid *pid, const erlang_ref *ref,
                    int monitored)
{
    if (monitored)
        (void)cnb__sig_monitor(n, CNB_OP_DEMONITOR_P, &t->locker, pid, NULL, NULL, ref);
}

static gname_t **name_slot(cnb_gtab_t *t, const unsigned char *k, size_t len)
{
    gname_t **pp = &t->b[hash(k, len)];
    while (*pp && ((*pp)->nlen != len || memcmp((*pp)->name, k, len)))
        pp = &(*pp)->next;
    return pp;
}

static void name_unlink(cnb_node_t *n, cnb_gtab_t *t, gname_t **pp)
{
    gname_t *e = *pp;
    *pp = e->next;
    unwatch(n, t, &e->pid, &e->mref, e->monitored);
    name_free(e);
    t->nnames--;
}

/* The canonical key of the term at b (len bytes, with or without 131). */
static int key(const char *b, size_t len, void **k, size_t *klen)
{
    return cnb_term_canonical_alloc(b, len, k, klen, NULL);
}

int cnb__gt_name_put(cnb_node_t *n, cnb_gtab_t *t, const char *name, size_t nlen,
                     const erlang_pid *pid, const char *method, int mlen)
{
    void *k;
    size_t klen;
    int rc = key(name, nlen, &k, &klen);
    if (rc)
        return rc;
    char *m = malloc(mlen > 0 ? (size_t)mlen : 1);
    if (!m) {
        free(k);
        return CNB_ENOMEM;
    }
    memcpy(m, method, (size_t)mlen);
    pthread_mutex_lock(&t->mu);
    gname_t **pp = name_slot(t, k, klen);
    if (*pp) {
        name_unlink(n, t, pp); /* as global's ins_name: the new one replaces it */
    } else if (t->nnames >= GT_MAX_NAMES) {
        if (!t->warned_names++)
            cnb__log(n, CNB_LOG_WARNING, "global: name table full (%d names): names past it "
                     "are not kept here (whereis from C misses them)", GT_MAX_NAMES);
        pthread_mutex_unlock(&t->mu);
        free(k);
        free(m);
        return CNB_ENOSPC;
    }
    gname_t *e = calloc(1, sizeof *e);
    if (!e) {
        pthread_mutex_unlock(&t->mu);
        free(k);
        free(m);
        return CNB_ENOMEM;
    }
    e->name = k;
    e->nlen = klen;
    e->method = m;
    e->mlen = mlen;
    e->pid = *pid;
    e->monitored = watch(n, t, pid, &e->mref);
    e->next = *pp;
    *pp = e;
    t->nnames++;
    pthread_mutex_unlock(&t->mu);
    return 0;
}

/* Finds name; n set: removes it too; method set: a copy of its Method. */
static int name_get(cnb_node_t *n, cnb_gtab_t *t, const char *name, size_t nlen,
                    erlang_pid *pid, char **method, int *mlen)
{
    void *k;
    size_t klen;
    int rc = key(name, nlen, &k, &klen);
    if (rc)
        return rc;
    pthread_mutex_lock(&t->mu);
    gname_t **pp = name_slot(t, k, klen);
    rc = *pp ? 0 : CNB_ENOENT;
    if (*pp && pid)
        *pid = (*pp)->pid;
    if (*pp && method) {
        *mlen = (*pp)->mlen;
        *method = malloc((*pp)->mlen > 0 ? (size_t)(*pp)->mlen : 1);
        if (*method)
            memcpy(*method, (*pp)->method, (size_t)(*pp)->mlen);
        else
            rc = CNB_ENOMEM;
    }
    if (*pp && n)
        name_unlink(n, t, pp);
    pthread_mutex_unlock(&t->mu);
    free(k);
    return rc;
}

int cnb__gt_name_del(cnb_node_t *n, cnb_gtab_t *t, const char *name, size_t nlen)
{
    return name_get(n, t, name, nlen, NULL, NULL, NULL);
}

int cnb__gt_name_find(cnb_gtab_t *t, const char *name, size_t nlen, erlang_pid *pid)
{
    return name_get(NULL, t, name, nlen, pid, NULL, NULL);
}

int cnb__gt_name_get(cnb_gtab_t *t, const char *name, size_t nlen, erlang_pid *pid,
                     char **method, int *mlen)
{
    return name_get(NULL, t, name, nlen, pid, method, mlen);
}

int cnb__gt_triple(const char *b, int *i, int *n0, int *n1, erlang_pid *pid, int *m0)
{
    int a;
    if (ei_decode_tuple_header(b, i, &a) || a != 3)
        return -1;
    *n0 = *i;
    if (ei_skip_term(b, i))
        return -1;
    *n1 = *i;
    if (ei_decode_pid(b, i, pid))
        return -1;
    *m0 = *i;
    return ei_skip_term(b, i);
}

int cnb__gt_pid_named(cnb_gtab_t *t, const erlang_pid *pid)
{
    int yes = 0;
    pthread_mutex_lock(&t->mu);
    for (size_t k = 0; k < GT_BUCKETS && !yes; k++)
        for (gname_t *e = t->b[k]; e && !yes; e = e->next)
            yes = same_pid(&e->pid, pid);
    pthread_mutex_unlock(&t->mu);
    return yes;
}

int cnb__gt_encode_names(cnb_gtab_t *t, ei_x_buff *x)
{
    int e = 0;
    pthread_mutex_lock(&t->mu);
    for (size_t k = 0; k < GT_BUCKETS; k++)
        for (gname_t *g = t->b[k]; g; g = g->next)
            e |= ei_x_encode_list_header(x, 1) ||
                 ei_x_append_buf(x, (const char *)g->name + 1, (int)g->nlen - 1);
    pthread_mutex_unlock(&t->mu);
    return e || ei_x_encode_empty_list(x);
}

/* p is pid, or (pid NULL) a pid of node. */
static int hit(const erlang_pid *p, const erlang_pid *pid, const char *node)
{
    return pid ? same_pid(p, pid) : node && !strcmp(p->node, node);
}

/* Removes what pid (or, pid NULL, any pid of node) held: names and lock
 * holds; a lock with no holder left goes. Caller holds the mutex. */
static void drop(cnb_node_t *n, cnb_gtab_t *t, const erlang_pid *pid, const char *node)
{
    for (size_t k = 0; k < GT_BUCKETS; k++)
        for (gname_t **pp = &t->b[k]; *pp;) {
            const erlang_pid *p = &(*pp)->pid;
            if (hit(p, pid, node)) {
                /* At a nodedown its monitors went with the connection: no
                 * demonitor (a send could dial the node back). */
                (*pp)->monitored &= !node;
                name_unlink(n, t, pp);
            } else {
                pp = &(*pp)->next;
            }
        }
    for (glock_t **lp = &t->locks; *lp;) {
        glock_t *l = *lp;
        for (int i = 0; i < l->nh;) {
            const erlang_pid *p = &l->h[i].pid;
            if (hit(p, pid, node)) {
                unwatch(n, t, p, &l->h[i].mref, l->h[i].monitored && !node);
                l->h[i] = l->h[--l->nh];
            } else {
                i++;
            }
        }
        if (l->nh) {
            lp = &l->next;
            continue;
        }
        *lp = l->next;
        free(l->res);
        free(l->req);
        free(l);
        t->nlocks--;
    }
}

void cnb__gt_drop_pid(cnb_node_t *n, cnb_gtab_t *t, const erlang_pid *pid)
{
    pthread_mutex_lock(&t->mu);
    drop(n, t, pid, NULL);
    pthread_mutex_unlock(&t->mu);
}

void cnb__gt_drop_node(cnb_node_t *n, cnb_gtab_t *t, const char *node)
{
    pthread_mutex_lock(&t->mu);
    drop(n, t, NULL, node);
    pthread_mutex_unlock(&t->mu);
}

int cnb__gt_encode_ours(cnb_node_t *n, cnb_gtab_t *t, ei_x_buff *x)
{
    int e = 0;
    pthread_mutex_lock(&t->mu);
    for (size_t k = 0; k < GT_BUCKETS; k++)
        for (gname_t *g = t->b[k]; g; g = g->next) {
            if (strcmp(g->pid.node, n->name))
                continue;
            e |= ei_x_encode_list_header(x, 1) || ei_x_encode_tuple_header(x, 3) ||
                 ei_x_append_buf(x, (const char *)g->name + 1, (int)g->nlen - 1) ||
                 ei_x_encode_pid(x, &g->pid) || ei_x_append_buf(x, g->method, g->mlen);
        }
    pthread_mutex_unlock(&t->mu);
    return e || ei_x_encode_empty_list(x);
}

/* Splits a lock id {ResourceId, LockRequesterId} at b[i..] into canonical keys. */
static int lock_keys(const char *b, int i, void **r, size_t *rl, void **q, size_t *ql)
{
    int a, s;
    if (ei_decode_tuple_header(b, &i, &a) || a != 2)
        return CNB_EMALFORMED;
    s = i;
    if (ei_skip_term(b, &i) || key(b + s, (size_t)(i - s), r, rl))
        return CNB_EMALFORMED;
    s = i;
    if (ei_skip_term(b, &i) || key(b + s, (size_t)(i - s), q, ql)) {
        free(*r);
        return CNB_EMALFORMED;
    }
    return 0;
}

static glock_t **lock_slot(cnb_gtab_t *t, const void *r, size_t rl)
{
    glock_t **lp = &t->locks;
    while (*lp && ((*lp)->rlen != rl || memcmp((*lp)->res, r, rl)))
        lp = &(*lp)->next;
    return lp;
}

int cnb__gt_set_lock(cnb_node_t *n, cnb_gtab_t *t, const char *b, int i, const erlang_pid *from)
{
    void *r, *q;
    size_t rl, ql;
    if (lock_keys(b, i, &r, &rl, &q, &ql))
        return 0;
    int yes = 1;
    pthread_mutex_lock(&t->mu);
    glock_t **lp = lock_slot(t, r, rl), *l = *lp;
    if (l && (l->qlen != ql || memcmp(l->req, q, ql))) {
        yes = 0; /* another requester holds it: global's can_set_lock says false */
    } else if (!l && t->nlocks >= GT_MAX_LOCKS) {
        if (!t->warned_locks++)
            cnb__log(n, CNB_LOG_WARNING, "global: lock table full (%d locks): locks past it "
                     "are granted here without being kept", GT_MAX_LOCKS);
    } else {
        if (!l && (l = calloc(1, sizeof *l)) != NULL) {
            l->res = r;
            l->rlen = rl;
            l->req = q;
            l->qlen = ql;
            r = q = NULL;
            *lp = l;
            t->nlocks++;
        }
        int have = 0;
        for (int k = 0; l && k < l->nh; k++)
            have |= same_pid(&l->h[k].pid, from);
        if (l && !have && l->nh < GT_MAX_HOLDERS) {
            gholder_t *h = &l->h[l->nh++];
            h->pid = *from;
            h->monitored = watch(n, t, from, &h->mref);
        }
    }
    pthread_mutex_unlock(&t->mu);
    free(r);
    free(q);
    return yes;
}

void cnb__gt_del_lock(cnb_node_t *n, cnb_gtab_t *t, const char *b, int i, const erlang_pid *from)
{
    void *r, *q;
    size_t rl, ql;
    if (lock_keys(b, i, &r, &rl, &q, &ql))
        return;
    pthread_mutex_lock(&t->mu);
    glock_t **lp = lock_slot(t, r, rl), *l = *lp;
    if (l && l->qlen == ql && !memcmp(l->req, q, ql)) {
        for (int k = 0; k < l->nh; k++)
            if (same_pid(&l->h[k].pid, from)) {
                unwatch(n, t, from, &l->h[k].mref, l->h[k].monitored);
                l->h[k] = l->h[--l->nh];
                break;
            }
        if (!l->nh) {
            *lp = l->next;
            free(l->res);
            free(l->req);
            free(l);
            t->nlocks--;
        }
    }
    pthread_mutex_unlock(&t->mu);
    free(r);
    free(q);
}
