/* rt_table.c: the process runtime's table of live workers (by pid) and of
 * registered names, under rt->tab_lock, and the C API on names
 * (cnb_register, cnb_whereis...). Tests: tests/integration/runtime_tests.erl,
 * tests/integration/exunit/. */
#include "runtime_int.h"

#include <stdlib.h>
#include <string.h>

/* The table's key of a pid of this node. num is 15 bits and serial 13
 * (cnb_node_make_pid), so the key is the pid counter itself, modulo 2^28: it
 * repeats once the counter wraps, which is why cnb__pt_fresh_pid skips keys
 * still in the table. */
uint64_t cnb__pt_key(const erlang_pid *p)
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

static unsigned name_hash(const char *s, size_t size)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h % size;
}

cnb_proc_t *cnb__pt_find_key_locked(cnb_rt_t *rt, uint64_t k)
{
    for (cnb_proc_t *p = rt->tab[k % rt->tab_size]; p; p = p->hnext)
        if (p->pl.key == k)
            return p;
    return NULL;
}

cnb_proc_t *cnb__pt_find_locked(cnb_rt_t *rt, const erlang_pid *pid)
{
    return cnb_node_is_local_pid(rt->node, pid) ? cnb__pt_find_key_locked(rt, cnb__pt_key(pid))
                                                 : NULL;
}

cnb_proc_t *cnb__pt_find_name_locked(cnb_rt_t *rt, const char *name)
{
    for (cnb_pname_t *e = rt->names[name_hash(name, rt->names_size)]; e; e = e->next)
        if (!strcmp(e->name, name))
            return e->proc;
    return NULL;
}

void cnb__pt_fresh_pid(cnb_rt_t *rt, erlang_pid *pid)
{
    /* Bounded: the table holds far fewer than 2^28 keys. */
    pthread_rwlock_rdlock(&rt->tab_lock);
    do
        cnb_node_make_pid(rt->node, pid);
    while (cnb__pt_find_key_locked(rt, cnb__pt_key(pid)));
    pthread_rwlock_unlock(&rt->tab_lock);
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
            p->hnext = nt[p->pl.key % ns];
            nt[p->pl.key % ns] = p;
        }
    free(rt->tab);
    rt->tab = nt;
    rt->tab_size = ns;
}

void cnb__pt_insert_locked(cnb_rt_t *rt, cnb_proc_t *p)
{
    if (rt->count + 1 > rt->tab_size * 2)
        grow_locked(rt);
    p->hnext = rt->tab[p->pl.key % rt->tab_size];
    rt->tab[p->pl.key % rt->tab_size] = p;
    rt->count++;
}

int cnb__pt_name_add_locked(cnb_rt_t *rt, cnb_proc_t *p, const char *name)
{
    size_t len = strlen(name) + 1;
    cnb_pname_t *e = malloc(sizeof(*e) + len);
    if (!e)
        return CNB_ENOMEM;
    memcpy(e->name, name, len);
    e->proc = p;
    unsigned h = name_hash(name, rt->names_size);
    e->next = rt->names[h];
    rt->names[h] = e;
    p->reg = e;
    return 0;
}

static void name_del_locked(cnb_rt_t *rt, cnb_proc_t *p)
{
    cnb_pname_t *e = p->reg;
    if (!e)
        return;
    for (cnb_pname_t **pp = &rt->names[name_hash(e->name, rt->names_size)]; *pp;
         pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    free(e);
    p->reg = NULL;
}

void cnb__pt_remove(cnb_rt_t *rt, cnb_proc_t *p)
{
    pthread_rwlock_wrlock(&rt->tab_lock);
    for (cnb_proc_t **pp = &rt->tab[p->pl.key % rt->tab_size]; *pp; pp = &(*pp)->hnext)
        if (*pp == p) {
            *pp = p->hnext;
            break;
        }
    name_del_locked(rt, p);
    rt->count--;
    pthread_rwlock_unlock(&rt->tab_lock);
}

int cnb_register(cnb_node_t *n, const char *name, const erlang_pid *pid)
{
    cnb_rt_t *rt = n->rt;
    if (!name || !name[0] || strlen(name) >= MAXATOMLEN_UTF8 || !pid)
        return CNB_EINVAL;
    int rc = 0;
    pthread_rwlock_wrlock(&rt->tab_lock);
    cnb_proc_t *p = cnb__pt_find_locked(rt, pid);
    if (!p || p->dead)
        rc = CNB_ENOPROC;
    else if (cnb__pt_find_name_locked(rt, name))
        rc = CNB_EEXIST;
    else if (p->reg)
        rc = CNB_EBUSY; /* a process has at most one registered name */
    else
        rc = cnb__pt_name_add_locked(rt, p, name);
    pthread_rwlock_unlock(&rt->tab_lock);
    return rc;
}

int cnb_unregister(cnb_node_t *n, const char *name)
{
    cnb_rt_t *rt = n->rt;
    pthread_rwlock_wrlock(&rt->tab_lock);
    cnb_proc_t *p = name ? cnb__pt_find_name_locked(rt, name) : NULL;
    if (p)
        name_del_locked(rt, p);
    pthread_rwlock_unlock(&rt->tab_lock);
    return p ? 0 : CNB_ENOENT;
}

int cnb_whereis(cnb_node_t *n, const char *name, erlang_pid *pid)
{
    cnb_rt_t *rt = n->rt;
    pthread_rwlock_rdlock(&rt->tab_lock);
    cnb_proc_t *p = name ? cnb__pt_find_name_locked(rt, name) : NULL;
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
