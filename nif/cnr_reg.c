/* cnr_reg.c: the registry resource of the cnode_registry NIF: creating one
 * (new, attach, add_remote), dropping it, info, and the local owner processes
 * it monitors so their entries go when they die (cnr_owner_watch/forget, the
 * down callback). Tests: tests/integration/nif_tests.erl,
 * tests/integration/exunit/registry_compat_test.exs. */
#include <string.h>

#include "cnr.h"

/* ---- listeners, kinds ------------------------------------------------------- */

void cnr_notify(ErlNifEnv *env, const struct cnr_reg *reg, ERL_NIF_TERM msg)
{
    for (unsigned i = 0; i < reg->nlisteners; i++) {
        ErlNifPid to;
        if (enif_whereis_pid(env, reg->listeners[i], &to))
            (void)enif_send(env, &to, NULL, msg);
    }
}

static int get_kind(ERL_NIF_TERM t, int *kind)
{
    if (t == cnr_atom.unique)
        *kind = CNB_REG_UNIQUE;
    else if (t == cnr_atom.duplicate)
        *kind = CNB_REG_DUPLICATE;
    else
        return 0;
    return 1;
}

static ERL_NIF_TERM kind_atom(int kind)
{
    return kind == CNB_REG_DUPLICATE ? cnr_atom.duplicate : cnr_atom.unique;
}

static int get_listeners(ErlNifEnv *env, ERL_NIF_TERM list, struct cnr_reg *reg)
{
    ERL_NIF_TERM head;
    reg->nlisteners = 0;
    while (enif_get_list_cell(env, list, &head, &list)) {
        if (!enif_is_atom(env, head) || reg->nlisteners == CNR_MAX_LISTENERS)
            return 0;
        reg->listeners[reg->nlisteners++] = head;
    }
    return enif_is_empty_list(env, list);
}

/* ---- owners: the local processes the registry monitors ----------------------- */

static size_t owner_home(ERL_NIF_TERM pid, size_t cap)
{
    return (size_t)(((uint64_t)pid * 0x9E3779B97F4A7C15ULL) >> 32) & (cap - 1);
}

/* owners_lock held. Index of pid's slot, or of the empty slot where it would go. */
static size_t owner_find(const struct cnr_reg *reg, ERL_NIF_TERM pid)
{
    size_t mask = reg->owners_cap - 1, j = owner_home(pid, reg->owners_cap);
    while (reg->owners[j].pid && reg->owners[j].pid != pid)
        j = (j + 1) & mask;
    return j;
}

static int owners_grow(struct cnr_reg *reg)
{
    size_t cap = reg->owners_cap ? reg->owners_cap * 2 : 16;
    struct cnr_owner *o = enif_alloc(cap * sizeof *o);
    if (!o)
        return CNB_ENOMEM;
    memset(o, 0, cap * sizeof *o);
    for (size_t i = 0; i < reg->owners_cap; i++) {
        if (!reg->owners[i].pid)
            continue;
        size_t j = owner_home(reg->owners[i].pid, cap);
        while (o[j].pid)
            j = (j + 1) & (cap - 1);
        o[j] = reg->owners[i];
    }
    enif_free(reg->owners);
    reg->owners = o;
    reg->owners_cap = cap;
    return 0;
}

/* owners_lock held: removes slot j (backward shift, no tombstones). */
static void owner_remove_slot(struct cnr_reg *reg, size_t j)
{
    size_t mask = reg->owners_cap - 1;
    reg->owners[j].pid = 0;
    reg->owners_n--;
    for (size_t k = (j + 1) & mask; reg->owners[k].pid; k = (k + 1) & mask) {
        size_t home = owner_home(reg->owners[k].pid, reg->owners_cap);
        int between = j <= k ? (home > j && home <= k) : (home > j || home <= k);
        if (!between) {
            reg->owners[j] = reg->owners[k];
            reg->owners[k].pid = 0;
            j = k;
        }
    }
}

int cnr_owner_watch(ErlNifEnv *env, struct cnr_reg *reg, const ErlNifPid *pid,
                       const cnb_pid_t *cp)
{
    ERL_NIF_TERM t = enif_make_pid(env, pid);
    int rc = 0, dead = 0;
    enif_mutex_lock(reg->owners_lock);
    if (reg->owners_cap) {
        struct cnr_owner *o = &reg->owners[owner_find(reg, t)];
        if (o->pid == t) {
            o->entries++;
            goto out;
        }
    }
    if ((reg->owners_n + 1) * 2 > reg->owners_cap && (rc = owners_grow(reg)))
        goto out;
    size_t j = owner_find(reg, t);
    struct cnr_owner *o = &reg->owners[j];
    int m = enif_monitor_process(env, reg->watch, pid, &o->mon);
    if (m > 0) {
        dead = 1;
    } else if (m < 0) {
        rc = CNB_EINVAL;
    } else {
        o->pid = t;
        o->cpid = *cp;
        o->entries = 1;
        reg->owners_n++;
    }
out:
    enif_mutex_unlock(reg->owners_lock);
    if (dead && reg->core)
        (void)cnb_registry_remove_owner(reg->core, cp);
    return rc;
}

void cnr_owner_forget(ErlNifEnv *env, struct cnr_reg *reg, const ErlNifPid *pid, uint64_t n)
{
    ERL_NIF_TERM t = enif_make_pid(env, pid);
    enif_mutex_lock(reg->owners_lock);
    if (reg->owners_cap) {
        struct cnr_owner *o = &reg->owners[owner_find(reg, t)];
        if (o->pid == t)
            o->entries = o->entries > n ? o->entries - n : 0;
    }
    enif_mutex_unlock(reg->owners_lock);
}

/* ---- resource callbacks ------------------------------------------------------- */

void cnr_reg_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    struct cnr_reg *reg = obj;
    struct cnr_watch *w = reg->watch;
    if (w && w->lock) {
        /* From now on a monitor that fires finds no registry. */
        enif_mutex_lock(w->lock);
        w->reg = NULL;
        enif_mutex_unlock(w->lock);
    }
    if (w)
        enif_release_resource(w);
    /* A shared segment outlives this handle: the entries of owners only this
     * handle watched would never be removed, so they go now. */
    if (reg->core && reg->mode == CNR_SHARED)
        for (size_t i = 0; i < reg->owners_cap; i++)
            if (reg->owners[i].pid)
                (void)cnb_registry_remove_owner(reg->core, &reg->owners[i].cpid);
    if (reg->core)
        cnb_registry_close(reg->core);
    reg->core = NULL;
    if (reg->owners_lock)
        enif_mutex_destroy(reg->owners_lock);
    enif_free(reg->owners);
}

void cnr_watch_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    struct cnr_watch *w = obj;
    if (w->lock)
        enif_mutex_destroy(w->lock);
}

/* Owners with more entries than this are purged by the server process (a
 * dirty NIF, remove_owner/2) rather than in the down callback, which runs on
 * a normal scheduler: removing one entry takes about 0.1 us. */
#define INLINE_PURGE_MAX 5000

/* Asks the server to purge owner pid's entries: {'$cnr_owner_down', Name, Pid}.
 * Returns 1 if sent. */
static int purge_later(ErlNifEnv *env, struct cnr_reg *reg, const ErlNifPid *pid)
{
    ErlNifEnv *menv = enif_alloc_env();
    if (!menv)
        return 0;
    ERL_NIF_TERM msg =
        enif_make_tuple3(menv, cnr_atom.owner_down, reg->name, enif_make_pid(menv, pid));
    int sent = enif_send(env, &reg->server, menv, msg);
    enif_free_env(menv);
    return sent;
}

/* The server (the process that owns the registry) died: the name goes
 * (*gone: the registry taken out of the table, to release). An owner died:
 * its entries go, whatever the registry's mode. */
static void reg_down(ErlNifEnv *env, struct cnr_reg *reg, ErlNifPid *pid, ErlNifMonitor *mon,
                     struct cnr_reg **gone)
{
    if (reg->server_monitored && enif_compare_monitors(mon, &reg->server_mon) == 0) {
        reg->server_monitored = 0;
        *gone = cnr_table_take(reg->name, reg);
        return;
    }
    ERL_NIF_TERM t = enif_make_pid(env, pid);
    cnb_pid_t cp;
    int found = 0;
    uint64_t entries = 0;
    enif_mutex_lock(reg->owners_lock);
    if (reg->owners_cap) {
        size_t j = owner_find(reg, t);
        if (reg->owners[j].pid == t) {
            cp = reg->owners[j].cpid;
            entries = reg->owners[j].entries;
            owner_remove_slot(reg, j);
            found = 1;
        }
    }
    enif_mutex_unlock(reg->owners_lock);
    if (!found || !reg->core)
        return;
    if (entries > INLINE_PURGE_MAX && reg->server_monitored && purge_later(env, reg, pid))
        return;
    (void)cnb_registry_remove_owner(reg->core, &cp);
}

/* A monitor of a registry fired: if the registry is still there, it stays so
 * under the watch's lock (its destructor waits), and the table's reference
 * taken from it is released after. */
void cnr_watch_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    struct cnr_watch *w = obj;
    struct cnr_reg *gone = NULL;
    enif_mutex_lock(w->lock);
    if (w->reg)
        reg_down(env, w->reg, pid, mon, &gone);
    enif_mutex_unlock(w->lock);
    if (gone)
        enif_release_resource(gone); /* may run the destructor, which takes w->lock */
}

/* ---- creating, attaching, dropping -------------------------------------------- */

/* A fresh registry resource whose server is the caller. */
static struct cnr_reg *reg_alloc(ErlNifEnv *env, ERL_NIF_TERM name, ERL_NIF_TERM listeners,
                                 int *err)
{
    struct cnr_reg *reg = enif_alloc_resource(cnr_g.reg_rt, sizeof *reg);
    if (!reg) {
        *err = CNB_ENOMEM;
        return NULL;
    }
    memset(reg, 0, sizeof *reg);
    reg->name = name;
    reg->cnode = enif_make_list(env, 0);
    if (!get_listeners(env, listeners, reg)) {
        *err = CNB_EINVAL;
        goto fail;
    }
    if (!(reg->owners_lock = enif_mutex_create("cnr_owners"))) {
        *err = CNB_ENOMEM;
        goto fail;
    }
    struct cnr_watch *w = enif_alloc_resource(cnr_g.watch_rt, sizeof *w);
    if (!w) {
        *err = CNB_ENOMEM;
        goto fail;
    }
    w->reg = reg;
    reg->watch = w;
    if (!(w->lock = enif_mutex_create("cnr_watch"))) {
        *err = CNB_ENOMEM;
        goto fail;
    }
    return reg;
fail:
    enif_release_resource(reg);
    return NULL;
}

/* Monitors the server (the caller), adds the name. Consumes the caller's
 * reference to reg. */
static ERL_NIF_TERM reg_publish(ErlNifEnv *env, struct cnr_reg *reg, ERL_NIF_TERM ok)
{
    if (!enif_self(env, &reg->server) ||
        enif_monitor_process(env, reg->watch, &reg->server, &reg->server_mon) != 0) {
        enif_release_resource(reg);
        return cnr_error(env, CNB_EINVAL);
    }
    reg->server_monitored = 1;
    int rc = cnr_table_put(reg->name, reg);
    enif_release_resource(reg);
    return rc ? cnr_error(env, rc) : ok;
}

/* Opens reg's core handle with o (bookkeeping on enif_alloc) and publishes reg
 * in mode (CNR_PRIVATE or CNR_SHARED). Consumes the caller's reference to reg.
 * Returns what new/attach answer: ok, {ok, Kind} (attach), {error, Reason}. */
static ERL_NIF_TERM reg_open(ErlNifEnv *env, struct cnr_reg *reg, cnb_registry_opts_t *o,
                             int mode)
{
    o->alloc = &cnr_g.alloc;
    int rc = cnb_registry_open(o, &reg->core);
    if (rc) {
        reg->core = NULL;
        enif_release_resource(reg);
        return cnr_error(env, rc);
    }
    cnb_registry_info_t info;
    cnb_registry_info(reg->core, &info);
    reg->kind = info.kind;
    reg->mode = mode;
    return reg_publish(env, reg,
                       mode == CNR_SHARED
                           ? enif_make_tuple2(env, cnr_atom.ok, kind_atom(reg->kind))
                           : cnr_atom.ok);
}

/* new(Name, Kind, Listeners) -> ok | {error, exists | Reason}: a
 * process-private registry owned by the caller. */
CNR_NIF(cnr_new)
{
    (void)argc;
    int kind, err = 0;
    if (!enif_is_atom(env, argv[0]) || !get_kind(argv[1], &kind))
        return enif_make_badarg(env);
    struct cnr_reg *reg = reg_alloc(env, argv[0], argv[2], &err);
    if (!reg)
        return err == CNB_EINVAL ? enif_make_badarg(env) : cnr_error(env, err);
    cnb_registry_opts_t o;
    memset(&o, 0, sizeof o);
    o.flags = CNB_REG_CREATE;
    o.kind = kind;
    return reg_open(env, reg, &o, CNR_PRIVATE);
}

/* attach(Name, Path, Listeners, CNode, OwnerNode, OwnerCreation) -> {ok, Kind} |
 * {error, Reason}: maps the registry segment at Path (a C node's, on this
 * host). OwnerNode/OwnerCreation name this VM, so that another attacher purges
 * our entries if this OS process dies without detaching. */
CNR_NIF(cnr_attach)
{
    (void)argc;
    ErlNifBinary path, onode;
    unsigned int creation;
    int err = 0;
    char pbuf[4096], nbuf[256];
    if (!enif_is_atom(env, argv[0]) || !enif_inspect_binary(env, argv[1], &path) ||
        path.size == 0 || path.size >= sizeof pbuf || memchr(path.data, 0, path.size) ||
        !enif_is_atom(env, argv[3]) || !enif_inspect_binary(env, argv[4], &onode) ||
        onode.size == 0 || onode.size >= sizeof nbuf || memchr(onode.data, 0, onode.size) ||
        !enif_get_uint(env, argv[5], &creation))
        return enif_make_badarg(env);
    memcpy(pbuf, path.data, path.size);
    pbuf[path.size] = 0;
    memcpy(nbuf, onode.data, onode.size);
    nbuf[onode.size] = 0;
    struct cnr_reg *reg = reg_alloc(env, argv[0], argv[2], &err);
    if (!reg)
        return err == CNB_EINVAL ? enif_make_badarg(env) : cnr_error(env, err);
    cnb_registry_opts_t o;
    memset(&o, 0, sizeof o);
    reg->cnode = argv[3];
    o.path = pbuf;
    o.owner_node = nbuf;
    o.owner_creation = creation;
    return reg_open(env, reg, &o, CNR_SHARED);
}

/* add_remote(Name, Kind, Listeners, CNode) -> ok | {error, exists}: names a
 * registry reached through messages to CNode's registry worker (the caller is
 * its proxy); operations on it return '$cnr_remote' and the Erlang side takes
 * over. */
CNR_NIF(cnr_add_remote)
{
    (void)argc;
    int kind, err = 0;
    if (!enif_is_atom(env, argv[0]) || !get_kind(argv[1], &kind) || !enif_is_atom(env, argv[3]))
        return enif_make_badarg(env);
    struct cnr_reg *reg = reg_alloc(env, argv[0], argv[2], &err);
    if (!reg)
        return err == CNB_EINVAL ? enif_make_badarg(env) : cnr_error(env, err);
    reg->kind = kind;
    reg->mode = CNR_REMOTE;
    reg->cnode = argv[3];
    return reg_publish(env, reg, cnr_atom.ok);
}

/* drop(Name) -> ok: the name goes; the registry closes when its last user is
 * done. */
CNR_NIF(cnr_drop)
{
    (void)argc;
    if (!enif_is_atom(env, argv[0]))
        return enif_make_badarg(env);
    struct cnr_reg *gone = cnr_table_take(argv[0], NULL);
    if (gone)
        enif_release_resource(gone);
    return cnr_atom.ok;
}

/* info(Name) -> #{kind, mode, listeners, server, count, cnode}. */
CNR_NIF(cnr_info)
{
    (void)argc;
    ERL_NIF_TERM r;
    int tok = cnr_table_enter();
    struct cnr_reg *reg = cnr_table_find(argv[0]);
    if (!reg) {
        r = enif_make_badarg(env);
    } else {
        ERL_NIF_TERM keys[6] = {cnr_atom.kind,   cnr_atom.mode,  cnr_atom.listeners,
                                cnr_atom.server, cnr_atom.count, cnr_atom.cnode};
        ERL_NIF_TERM vals[6];
        vals[0] = kind_atom(reg->kind);
        vals[1] = reg->mode == CNR_PRIVATE  ? cnr_atom.private_
                  : reg->mode == CNR_SHARED ? cnr_atom.shared
                                            : cnr_atom.remote;
        vals[2] = enif_make_list_from_array(env, reg->listeners, reg->nlisteners);
        vals[3] = enif_make_pid(env, &reg->server);
        vals[4] = enif_make_uint64(env, reg->core ? cnb_registry_count(reg->core) : 0);
        vals[5] = reg->cnode;
        if (!enif_make_map_from_arrays(env, keys, vals, 6, &r))
            r = enif_make_badarg(env);
    }
    cnr_table_leave(tok);
    return r;
}

