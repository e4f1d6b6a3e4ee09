/* proc_links.c: a process's links, monitors on it and monitors it holds, each
 * in a hash table of compact records (pids and refs with interned node names,
 * ~50-90 bytes a record instead of ei's ~1 KB structs): O(1) add, find and
 * remove, and tables that shrink as records go.
 * Tests: tests/integration/hostile_signals_tests.erl, runtime_tests.erl. */
#include "proc_links.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnb_common.h"

#define TAB_MIN 8

/* ------------------------------------------------------------ pids and refs */

int cnb__cpid_set(cnb_lnames_t *L, cnb_cpid_t *c, const erlang_pid *p)
{
    if (!(c->node = cnb__ln_get(L, p->node)))
        return CNB_ENOMEM;
    c->num = p->num;
    c->serial = p->serial;
    c->creation = p->creation;
    return 0;
}

void cnb__cpid_get(const cnb_cpid_t *c, erlang_pid *p)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->node, sizeof(p->node), "%s", cnb__ln_str(c->node));
    p->num = c->num;
    p->serial = c->serial;
    p->creation = c->creation;
}

void cnb__cpid_put(cnb_lnames_t *L, cnb_cpid_t *c)
{
    cnb__ln_put(L, c->node);
    c->node = NULL;
}

int cnb__cpid_eq(const cnb_cpid_t *a, const cnb_cpid_t *b)
{
    return a->node == b->node && a->num == b->num && a->serial == b->serial &&
           a->creation == b->creation;
}

int cnb__cref_set(cnb_lnames_t *L, cnb_cref_t *c, const erlang_ref *r)
{
    if (!(c->node = cnb__ln_get(L, r->node)))
        return CNB_ENOMEM;
    c->creation = r->creation;
    c->len = r->len < 0 ? 0 : r->len > 5 ? 5 : (uint32_t)r->len;
    memset(c->n, 0, sizeof(c->n));
    memcpy(c->n, r->n, c->len * sizeof(c->n[0]));
    return 0;
}

void cnb__cref_get(const cnb_cref_t *c, erlang_ref *r)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->node, sizeof(r->node), "%s", cnb__ln_str(c->node));
    r->creation = c->creation;
    r->len = (int)c->len;
    memcpy(r->n, c->n, c->len * sizeof(c->n[0]));
}

void cnb__cref_put(cnb_lnames_t *L, cnb_cref_t *c)
{
    cnb__ln_put(L, c->node);
    c->node = NULL;
}

static int cref_eq(const cnb_cref_t *a, const cnb_cref_t *b)
{
    return a->node == b->node && a->creation == b->creation && a->len == b->len &&
           !memcmp(a->n, b->n, a->len * sizeof(a->n[0]));
}

/* The node's hash is seeded per run, so a peer cannot aim numbers at one
 * bucket without knowing it. */
static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 31);
}

static uint64_t cpid_hash(const cnb_cpid_t *c)
{
    uint64_t h = mix(cnb__ln_hash(c->node), c->num);
    return mix(h, ((uint64_t)c->serial << 32) | c->creation);
}

static uint64_t cref_hash(const cnb_cref_t *c)
{
    uint64_t h = mix(cnb__ln_hash(c->node), c->creation);
    for (uint32_t i = 0; i < c->len; i++)
        h = mix(h, c->n[i]);
    return h;
}

/* ------------------------------------------------------------ tables */

/* Every record starts with its chain pointer. */
typedef struct rec {
    struct rec *next;
} rec_t;

typedef uint64_t (*rec_hash_fn)(const rec_t *r);

static uint64_t link_rec_hash(const rec_t *r)
{
    return cpid_hash(&((const cnb_link_t *)r)->pid);
}

static uint64_t mon_rec_hash(const rec_t *r)
{
    return cref_hash(&((const cnb_mon_t *)r)->ref);
}

/* Rebuilds t with ns buckets (a power of two, or 0 to free them); keeps the
 * old ones when there is no memory for the new. */
static void tab_resize(cnb_ltab_t *t, size_t ns, rec_hash_fn hf)
{
    void **nb = ns ? calloc(ns, sizeof(*nb)) : NULL;
    if (ns && !nb)
        return;
    for (size_t i = 0; i < t->size; i++)
        for (rec_t *r = t->b[i], *nx; r; r = nx) {
            nx = r->next;
            size_t k = hf(r) & (ns - 1);
            r->next = nb[k];
            nb[k] = r;
        }
    free(t->b);
    t->b = nb;
    t->size = ns;
}

/* After removals: give memory back once the table is mostly empty; the
 * smallest bucket array stays unless free_empty (a bulk removal), so that a
 * monitor set and cleared per call does not allocate each time. */
static void tab_shrink(cnb_ltab_t *t, rec_hash_fn hf, int free_empty)
{
    if (t->count == 0 && free_empty) {
        free(t->b);
        t->b = NULL;
        t->size = 0;
    } else if (t->size > TAB_MIN && (size_t)t->count * 8 < t->size) {
        size_t ns = TAB_MIN;
        while (ns < (size_t)t->count * 2)
            ns *= 2;
        tab_resize(t, ns, hf);
    }
}

static int tab_insert(cnb_ltab_t *t, rec_t *r, rec_hash_fn hf)
{
    if (t->count >= t->size && t->size <= UINT32_MAX / 2)
        tab_resize(t, t->size ? t->size * 2 : TAB_MIN, hf);
    if (!t->size || t->count == UINT32_MAX)
        return CNB_ENOMEM; /* the counts are 32 bits (more is past any memory) */
    size_t k = hf(r) & (t->size - 1);
    r->next = t->b[k];
    t->b[k] = r;
    t->count++;
    return 0;
}

static void tab_remove(cnb_ltab_t *t, rec_t *r, rec_hash_fn hf)
{
    for (rec_t **pp = (rec_t **)&t->b[hf(r) & (t->size - 1)]; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            t->count--;
            break;
        }
    tab_shrink(t, hf, 0);
}

/* Takes the records take() accepts out of t, as a list. */
static rec_t *tab_take(cnb_ltab_t *t, rec_hash_fn hf, int (*take)(const rec_t *, const void *),
                       const void *arg)
{
    rec_t *out = NULL;
    for (size_t i = 0; i < t->size; i++)
        for (rec_t **pp = (rec_t **)&t->b[i]; *pp;) {
            rec_t *r = *pp;
            if (take(r, arg)) {
                *pp = r->next;
                r->next = out;
                out = r;
                t->count--;
            } else {
                pp = &r->next;
            }
        }
    tab_shrink(t, hf, 1);
    return out;
}

typedef struct on_node {
    const cnb_lname_t *node;
    uint32_t upto;
} on_node_t;

static int epoch_upto(uint32_t e, uint32_t upto)
{
    return (int32_t)(e - upto) <= 0;
}

static int take_link(const rec_t *r, const void *arg)
{
    const on_node_t *o = arg;
    const cnb_link_t *l = (const cnb_link_t *)r;
    return !o->node || (l->pid.node == o->node && epoch_upto(l->epoch, o->upto));
}

static int take_mon(const rec_t *r, const void *arg)
{
    const on_node_t *o = arg;
    const cnb_mon_t *m = (const cnb_mon_t *)r;
    return !o->node || (m->node == o->node && epoch_upto(m->epoch, o->upto));
}

/* ------------------------------------------------------------ links */

cnb_link_t *cnb__pl_link(cnb_plinks_t *pl, const cnb_cpid_t *pid)
{
    if (!pl->links.size)
        return NULL;
    for (cnb_link_t *l = pl->links.b[cpid_hash(pid) & (pl->links.size - 1)]; l; l = l->next)
        if (cnb__cpid_eq(&l->pid, pid))
            return l;
    return NULL;
}

static void link_free(cnb_lnames_t *L, cnb_plinks_t *pl, cnb_link_t *l, int release)
{
    if (release)
        cnb__ln_release(L, &pl->holds, l->pid.node);
    cnb__cpid_put(L, &l->pid);
    free(l);
}

cnb_link_t *cnb__pl_link_add(cnb_lnames_t *L, cnb_plinks_t *pl, const cnb_cpid_t *pid,
                             const uint32_t *epoch, int adopt)
{
    cnb_link_t *l = calloc(1, sizeof(*l));
    uint32_t cur = 0;
    int first;
    if (!l)
        return NULL;
    if (!adopt && cnb__ln_hold(L, &pl->holds, pl->key, pid->node, 0, &cur, &first)) {
        free(l);
        return NULL;
    }
    l->pid = *pid;
    l->pid.node = cnb__ln_dup(L, pid->node);
    l->epoch = epoch ? *epoch : cur;
    l->active = 1;
    if (tab_insert(&pl->links, (rec_t *)l, link_rec_hash)) {
        link_free(L, pl, l, !adopt); /* an adopted hold stays the caller's */
        return NULL;
    }
    return l;
}

void cnb__pl_link_free(cnb_lnames_t *L, cnb_plinks_t *pl, cnb_link_t *l)
{
    link_free(L, pl, l, 1);
}

void cnb__pl_link_drop(cnb_lnames_t *L, cnb_plinks_t *pl, cnb_link_t *l)
{
    tab_remove(&pl->links, (rec_t *)l, link_rec_hash);
    cnb__pl_link_free(L, pl, l);
}

cnb_link_t *cnb__pl_links_take(cnb_plinks_t *pl, const cnb_lname_t *node, uint32_t upto)
{
    on_node_t o = {node, upto};
    return (cnb_link_t *)tab_take(&pl->links, link_rec_hash, take_link, &o);
}

/* ------------------------------------------------------------ monitors */

static void mon_free(cnb_lnames_t *L, cnb_plinks_t *pl, cnb_mon_t *m, int release)
{
    if (release)
        cnb__ln_release(L, &pl->holds, m->node);
    cnb__cref_put(L, &m->ref);
    cnb__ln_put(L, m->pid.node);
    cnb__ln_put(L, m->node);
    cnb__ln_put(L, m->name);
    free(m);
}

cnb_mon_t *cnb__pl_mon_add(cnb_lnames_t *L, cnb_plinks_t *pl, cnb_ltab_t *t,
                           const cnb_cref_t *ref, const cnb_cpid_t *pid, cnb_lname_t *node,
                           cnb_lname_t *name, const uint32_t *epoch, int adopt)
{
    cnb_mon_t *m = calloc(1, sizeof(*m));
    uint32_t cur = 0;
    int first;
    if (!m)
        return NULL;
    if (!adopt && cnb__ln_hold(L, &pl->holds, pl->key, node, 0, &cur, &first)) {
        free(m);
        return NULL;
    }
    m->ref = *ref;
    m->ref.node = cnb__ln_dup(L, ref->node);
    if (pid) {
        m->pid = *pid;
        m->pid.node = cnb__ln_dup(L, pid->node);
    }
    m->node = cnb__ln_dup(L, node);
    m->name = name ? cnb__ln_dup(L, name) : NULL;
    m->epoch = epoch ? *epoch : cur;
    if (tab_insert(t, (rec_t *)m, mon_rec_hash)) {
        mon_free(L, pl, m, !adopt); /* an adopted hold stays the caller's */
        return NULL;
    }
    return m;
}

cnb_mon_t *cnb__pl_mon_take(cnb_ltab_t *t, const cnb_cref_t *ref)
{
    if (!t->size)
        return NULL;
    for (cnb_mon_t *m = t->b[cref_hash(ref) & (t->size - 1)]; m; m = m->next)
        if (cref_eq(&m->ref, ref)) {
            tab_remove(t, (rec_t *)m, mon_rec_hash);
            return m;
        }
    return NULL;
}

void cnb__pl_mon_free(cnb_lnames_t *L, cnb_plinks_t *pl, cnb_mon_t *m)
{
    mon_free(L, pl, m, 1);
}

cnb_mon_t *cnb__pl_mons_take(cnb_ltab_t *t, const cnb_lname_t *node, uint32_t upto)
{
    on_node_t o = {node, upto};
    return (cnb_mon_t *)tab_take(t, mon_rec_hash, take_mon, &o);
}

void cnb__pl_clear(cnb_lnames_t *L, cnb_plinks_t *pl)
{
    for (cnb_link_t *l = cnb__pl_links_take(pl, NULL, 0), *nx; l; l = nx) {
        nx = l->next;
        cnb__pl_link_free(L, pl, l);
    }
    cnb_ltab_t *tabs[2] = {&pl->on_me, &pl->held};
    for (int i = 0; i < 2; i++)
        for (cnb_mon_t *m = cnb__pl_mons_take(tabs[i], NULL, 0), *nx; m; m = nx) {
            nx = m->next;
            cnb__pl_mon_free(L, pl, m);
        }
}
