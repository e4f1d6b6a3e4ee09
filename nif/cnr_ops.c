/* cnr_ops.c: the registry resource (create, attach, drop, owner monitors) and
 * the short operations of the cnode_registry NIF: register, unregister,
 * lookup, values, keys, update_value, count, meta. Reads run on the calling
 * scheduler with a result buffer capped at 512 KiB; a read that needs more
 * (a key with thousands of duplicate entries, an owner of thousands of keys) is
 * rescheduled on a dirty CPU scheduler, so a normal scheduler never copies an
 * unbounded result. Tests: tests/integration/nif_tests.erl,
 * tests/integration/exunit/registry_compat_test.exs. */
#include <string.h>

#include "cnr.h"

/* ---- result buffers ---------------------------------------------------------- */

#define BOUND_BYTES ((size_t)1 << 19)

/* Each scheduler thread keeps one result buffer whose allocator refuses to grow
 * past BOUND_BYTES; the refusal is remembered so the caller can tell it from a
 * real shortage of memory. */
static __thread int tls_bound_hit;
static __thread int tls_res_ready;
static __thread cnb_registry_result_t tls_res;

static void *bound_alloc(void *ctx, size_t n)
{
    (void)ctx;
    if (n > BOUND_BYTES) {
        tls_bound_hit = 1;
        return NULL;
    }
    return enif_alloc(n);
}

static void *bound_realloc(void *ctx, void *p, size_t n)
{
    (void)ctx;
    if (n > BOUND_BYTES) {
        tls_bound_hit = 1;
        return NULL;
    }
    return enif_realloc(p, n);
}

static void bound_free(void *ctx, void *p)
{
    (void)ctx;
    enif_free(p);
}

static const cnb_allocator_t bound_allocator = {bound_alloc, bound_realloc, bound_free, NULL};

static cnb_registry_result_t *bounded_res(void)
{
    if (!tls_res_ready) {
        cnb_registry_result_init(&tls_res, &bound_allocator);
        tls_res_ready = 1;
    }
    tls_bound_hit = 0;
    return &tls_res;
}

/* A read failed because the capped buffer was too small. */
static int overflowed(ssize_t rc)
{
    return rc == CNB_ENOMEM && tls_bound_hit;
}

/* ---- small helpers ----------------------------------------------------------- */

/* A runtime failure of a read, whose result type has no error case: raises
 * error({cnode_registry, Reason}). */
static ERL_NIF_TERM raise_code(ErlNifEnv *env, int code)
{
    return enif_raise_exception(
        env, enif_make_tuple2(env, enif_make_atom(env, "cnode_registry"), cnr_code_atom(env, code)));
}

static int self_pid(ErlNifEnv *env, ErlNifPid *self, ERL_NIF_TERM *term, cnb_pid_t *cp)
{
    if (!enif_self(env, self))
        return 0;
    *term = enif_make_pid(env, self);
    return cnr_pid_get(env, *term, cp);
}

static void notify(ErlNifEnv *env, const struct cnr_reg *reg, ERL_NIF_TERM msg)
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

/* Makes sure the registry monitors owner pid (a local process that just
 * registered), so that its entries are removed when it dies; counts the
 * registration. */
static int owner_watch(ErlNifEnv *env, struct cnr_reg *reg, const ErlNifPid *pid,
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
    int m = enif_monitor_process(env, reg, pid, &o->mon);
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

/* Counts n entries of owner pid gone (unregister). */
static void owner_forget(ErlNifEnv *env, struct cnr_reg *reg, const ErlNifPid *pid, uint64_t n)
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

/* The server (the process that owns the registry) died: the name goes. An
 * owner died: its entries go, whatever the registry's mode. */
void cnr_reg_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    struct cnr_reg *reg = obj;
    if (reg->server_monitored && enif_compare_monitors(mon, &reg->server_mon) == 0) {
        reg->server_monitored = 0;
        (void)cnr_table_remove(reg->name, reg);
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
        enif_monitor_process(env, reg, &reg->server, &reg->server_mon) != 0) {
        enif_release_resource(reg);
        return cnr_error(env, CNB_EINVAL);
    }
    reg->server_monitored = 1;
    int rc = cnr_table_put(reg->name, reg);
    enif_release_resource(reg);
    return rc ? cnr_error(env, rc) : ok;
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
    o.alloc = &cnr_g.alloc;
    int rc = cnb_registry_open(&o, &reg->core);
    if (rc) {
        reg->core = NULL;
        enif_release_resource(reg);
        return cnr_error(env, rc);
    }
    reg->kind = kind;
    reg->mode = CNR_PRIVATE;
    return reg_publish(env, reg, cnr_atom.ok);
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
    o.alloc = &cnr_g.alloc;
    int rc = cnb_registry_open(&o, &reg->core);
    if (rc) {
        reg->core = NULL;
        enif_release_resource(reg);
        return cnr_error(env, rc);
    }
    cnb_registry_info_t info;
    cnb_registry_info(reg->core, &info);
    reg->kind = info.kind;
    reg->mode = CNR_SHARED;
    return reg_publish(env, reg, enif_make_tuple2(env, cnr_atom.ok, kind_atom(reg->kind)));
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
    (void)cnr_table_remove(argv[0], NULL);
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

/* ---- running an operation on a named registry --------------------------------- */

/* An operation on reg (the table's read lock is held, or the caller holds a
 * reference). res is the result buffer to use; an operation that finds it too
 * small sets *again and returns 0. */
typedef ERL_NIF_TERM (*op_fn)(ErlNifEnv *env, struct cnr_reg *reg, const ERL_NIF_TERM argv[],
                              cnb_registry_result_t *res, int *again);

static ERL_NIF_TERM run_op(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[], op_fn op,
                           const char *name,
                           ERL_NIF_TERM (*dirty)(ErlNifEnv *, int, const ERL_NIF_TERM[]))
{
    ERL_NIF_TERM r;
    int again = 0;
    int tok = cnr_table_enter();
    struct cnr_reg *reg = cnr_table_find(argv[0]);
    if (!reg)
        r = enif_make_badarg(env);
    else if (reg->mode == CNR_REMOTE)
        r = cnr_atom.cnr_remote;
    else
        r = op(env, reg, argv, bounded_res(), &again);
    cnr_table_leave(tok);
    if (again)
        return enif_schedule_nif(env, name, ERL_NIF_DIRTY_JOB_CPU_BOUND, dirty, argc, argv);
    return r;
}

/* The same on a dirty scheduler, with an unbounded buffer. */
static ERL_NIF_TERM run_op_dirty(ErlNifEnv *env, const ERL_NIF_TERM argv[], op_fn op)
{
    int tok = cnr_table_enter();
    struct cnr_reg *reg = cnr_table_find(argv[0]);
    if (reg)
        enif_keep_resource(reg);
    cnr_table_leave(tok);
    if (!reg)
        return enif_make_badarg(env);
    if (reg->mode == CNR_REMOTE) {
        enif_release_resource(reg);
        return cnr_atom.cnr_remote;
    }
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, &cnr_g.alloc);
    int again = 0;
    tls_bound_hit = 0;
    ERL_NIF_TERM r = op(env, reg, argv, &res, &again);
    cnb_registry_result_free(&res);
    enif_release_resource(reg);
    return again ? raise_code(env, CNB_ENOMEM) : r;
}

#define OP_NIF(nif, op)                                                             \
    static ERL_NIF_TERM nif##_dirty(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) \
    {                                                                               \
        (void)argc;                                                                 \
        return run_op_dirty(env, argv, op);                                         \
    }                                                                               \
    CNR_NIF(nif)                                                                    \
    {                                                                               \
        return run_op(env, argc, argv, op, #nif, nif##_dirty);                      \
    }

/* Keys and values beyond the limits of the canonical form (nesting, size) are
 * bad arguments. */
static ERL_NIF_TERM canon_failed(ErlNifEnv *env, int rc)
{
    return rc == CNB_ENOMEM ? cnr_error(env, rc) : enif_make_badarg(env);
}

/* A read's result: the list from items[0..n) in reverse (core chains list the
 * newest entry first; Elixir's Registry lists entries in insertion order). */
enum item_shape { PID_VALUE, VALUE, KEY };

/* The list of items[from..to) (reversed, as above) in *out. Returns 1, or 0
 * when an item's bytes are not a term or its owner not a pid (memory another
 * process wrote): the caller raises then, with nothing half-built handed out.
 * Never puts an exception term in a list. */
static int items_range(ErlNifEnv *env, const cnb_registry_result_t *res, size_t from,
                       size_t to, enum item_shape shape, ERL_NIF_TERM *out)
{
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t i = from; i < to; i++) {
        const cnb_registry_item_t *it = &res->items[i];
        ERL_NIF_TERM v, p, e;
        if (shape == KEY) {
            if (!cnr_decode(env, it->key, it->key_len, &e))
                return 0;
        } else {
            if (!cnr_decode(env, it->value, it->value_len, &v))
                return 0;
            if (shape == VALUE) {
                e = v;
            } else {
                if (!CNR_PID_MAKE(env, &it->owner, &p))
                    return 0;
                e = enif_make_tuple2(env, p, v);
            }
        }
        list = enif_make_list_cell(env, e, list);
    }
    *out = list;
    return 1;
}

/* The list of all items, or raises error({cnode_registry, corrupt}). */
static ERL_NIF_TERM items_list(ErlNifEnv *env, const cnb_registry_result_t *res,
                               enum item_shape shape)
{
    ERL_NIF_TERM list;
    return items_range(env, res, 0, res->n, shape, &list) ? list
                                                          : raise_code(env, CNB_ECORRUPT);
}

/* The end of a read that lists items: when the result outgrew the bound of a
 * normal scheduler, asks to be run again on a dirty one (*again); raises on a
 * failure; else the list. */
static ERL_NIF_TERM read_result(ErlNifEnv *env, ssize_t n, const cnb_registry_result_t *res,
                                enum item_shape shape, int *again)
{
    if (overflowed(n)) {
        *again = 1;
        return 0;
    }
    if (n < 0)
        return raise_code(env, (int)n);
    return items_list(env, res, shape);
}

/* ---- register, unregister ----------------------------------------------------- */

#define MAX_DEAD_RETRIES 8

static ERL_NIF_TERM op_register(ErlNifEnv *env, struct cnr_reg *reg, const ERL_NIF_TERM argv[],
                                cnb_registry_result_t *res, int *again)
{
    (void)res;
    (void)again;
    ErlNifPid self;
    ERL_NIF_TERM selft, r;
    cnb_pid_t me, cur;
    struct cnr_canon k, v;
    if (!self_pid(env, &self, &selft, &me))
        return enif_make_badarg(env);
    int rc = cnr_canon(env, argv[1], &k);
    if (rc)
        return canon_failed(env, rc);
    if ((rc = cnr_canon(env, argv[2], &v))) {
        cnr_canon_free(&k);
        return canon_failed(env, rc);
    }
    for (int tries = 0;; tries++) {
        rc = cnb_registry_register(reg->core, k.p, k.len, &me, v.p, v.len, &cur);
        if (rc != CNB_EEXIST)
            break;
        ERL_NIF_TERM curt;
        ErlNifPid lp;
        if (!CNR_PID_MAKE(env, &cur, &curt)) {
            rc = CNB_ECORRUPT;
            break;
        }
        /* As Elixir's Registry: a dead local owner whose exit is still being
         * processed does not hold the key. */
        if (tries < MAX_DEAD_RETRIES && curt != selft && enif_get_local_pid(env, curt, &lp) &&
            !enif_is_process_alive(env, &lp)) {
            (void)cnb_registry_unregister(reg->core, k.p, k.len, &cur);
            continue;
        }
        r = enif_make_tuple2(env, cnr_atom.error,
                             enif_make_tuple2(env, cnr_atom.already_registered, curt));
        goto out;
    }
    if (rc) {
        r = cnr_error(env, rc);
        goto out;
    }
    if ((rc = owner_watch(env, reg, &self, &me))) {
        (void)cnb_registry_unregister(reg->core, k.p, k.len, &me);
        r = cnr_error(env, rc);
        goto out;
    }
    if (reg->nlisteners) {
        ERL_NIF_TERM t[5] = {cnr_atom.register_, reg->name, argv[1], selft, argv[2]};
        notify(env, reg, enif_make_tuple_from_array(env, t, 5));
    }
    r = enif_make_tuple2(env, cnr_atom.ok, enif_make_pid(env, &reg->server));
out:
    cnr_canon_free(&k);
    cnr_canon_free(&v);
    return r;
}
OP_NIF(cnr_register, op_register)

static void notify_unregister(ErlNifEnv *env, struct cnr_reg *reg, ERL_NIF_TERM key,
                              ERL_NIF_TERM selft)
{
    if (reg->nlisteners)
        notify(env, reg, enif_make_tuple4(env, cnr_atom.unregister, reg->name, key, selft));
}

static ERL_NIF_TERM op_unregister(ErlNifEnv *env, struct cnr_reg *reg,
                                  const ERL_NIF_TERM argv[], cnb_registry_result_t *res,
                                  int *again)
{
    (void)res;
    (void)again;
    ErlNifPid self;
    ERL_NIF_TERM selft;
    cnb_pid_t me;
    struct cnr_canon k;
    if (!self_pid(env, &self, &selft, &me))
        return enif_make_badarg(env);
    int rc = cnr_canon(env, argv[1], &k);
    if (rc)
        return canon_failed(env, rc);
    ssize_t n = cnb_registry_unregister(reg->core, k.p, k.len, &me);
    cnr_canon_free(&k);
    if (n < 0 && n != CNB_ETOOBIG)
        return cnr_error(env, (int)n);
    if (n > 0)
        owner_forget(env, reg, &self, (uint64_t)n);
    notify_unregister(env, reg, argv[1], selft);
    return cnr_atom.ok;
}
OP_NIF(cnr_unregister, op_unregister)

/* unregister_values(Name, Key, Values): removes the caller's entries of Key
 * whose value is one of Values (the Erlang side chose them with a match spec).
 * Returns how many were removed. */
struct values_ctx {
    struct cnr_canon *vals;
    size_t n;
};

static int value_in(void *ctx, const void *value, size_t len)
{
    const struct values_ctx *c = ctx;
    for (size_t i = 0; i < c->n; i++)
        if (c->vals[i].len == len && memcmp(c->vals[i].p, value, len) == 0)
            return 1;
    return 0;
}

static ERL_NIF_TERM op_unregister_values(ErlNifEnv *env, struct cnr_reg *reg,
                                         const ERL_NIF_TERM argv[], cnb_registry_result_t *res,
                                         int *again)
{
    (void)res;
    (void)again;
    ErlNifPid self;
    ERL_NIF_TERM selft, head, list = argv[2], r;
    cnb_pid_t me;
    struct cnr_canon k;
    unsigned len;
    struct values_ctx c = {NULL, 0};
    if (!self_pid(env, &self, &selft, &me) || !enif_get_list_length(env, list, &len))
        return enif_make_badarg(env);
    int rc = cnr_canon(env, argv[1], &k);
    if (rc)
        return canon_failed(env, rc);
    if (len == 0) {
        r = enif_make_uint(env, 0);
        goto out;
    }
    if (!(c.vals = enif_alloc(len * sizeof *c.vals))) {
        r = cnr_error(env, CNB_ENOMEM);
        goto out;
    }
    while (enif_get_list_cell(env, list, &head, &list)) {
        if ((rc = cnr_canon(env, head, &c.vals[c.n]))) {
            r = canon_failed(env, rc);
            goto out;
        }
        c.n++;
    }
    ssize_t n = cnb_registry_unregister_match(reg->core, k.p, k.len, &me, value_in, &c);
    r = n < 0 ? cnr_error(env, (int)n) : enif_make_uint64(env, (uint64_t)n);
    if (n > 0)
        owner_forget(env, reg, &self, (uint64_t)n);
out:
    for (size_t i = 0; i < c.n; i++)
        cnr_canon_free(&c.vals[i]);
    enif_free(c.vals);
    cnr_canon_free(&k);
    return r;
}
OP_NIF(cnr_unregister_values, op_unregister_values)

/* notify_unregister(Name, Key) -> ok: tells the listeners that the caller
 * unregistered Key (unregister_match removed all of its entries). */
static ERL_NIF_TERM op_notify_unregister(ErlNifEnv *env, struct cnr_reg *reg,
                                         const ERL_NIF_TERM argv[], cnb_registry_result_t *res,
                                         int *again)
{
    (void)res;
    (void)again;
    ErlNifPid self;
    if (!enif_self(env, &self))
        return enif_make_badarg(env);
    notify_unregister(env, reg, argv[1], enif_make_pid(env, &self));
    return cnr_atom.ok;
}
OP_NIF(cnr_notify_unregister, op_notify_unregister)

/* update_value(Name, Key, New) -> ok | error: replaces the value of the caller's
 * entry of Key (unique registries only; badarg otherwise). */
static ERL_NIF_TERM op_update_value(ErlNifEnv *env, struct cnr_reg *reg,
                                    const ERL_NIF_TERM argv[], cnb_registry_result_t *res,
                                    int *again)
{
    (void)res;
    (void)again;
    ErlNifPid self;
    ERL_NIF_TERM selft;
    cnb_pid_t me;
    struct cnr_canon k, v;
    if (reg->kind != CNB_REG_UNIQUE || !self_pid(env, &self, &selft, &me))
        return enif_make_badarg(env);
    int rc = cnr_canon(env, argv[1], &k);
    if (rc)
        return canon_failed(env, rc);
    if ((rc = cnr_canon(env, argv[2], &v))) {
        cnr_canon_free(&k);
        return canon_failed(env, rc);
    }
    ssize_t n = cnb_registry_update_value(reg->core, k.p, k.len, &me, v.p, v.len);
    cnr_canon_free(&k);
    cnr_canon_free(&v);
    if (n == CNB_ENOENT)
        return cnr_atom.error;
    return n < 0 ? cnr_error(env, (int)n) : cnr_atom.ok;
}
OP_NIF(cnr_update_value, op_update_value)

/* ---- reads --------------------------------------------------------------------- */

static ERL_NIF_TERM op_lookup(ErlNifEnv *env, struct cnr_reg *reg, const ERL_NIF_TERM argv[],
                              cnb_registry_result_t *res, int *again)
{
    struct cnr_canon k;
    int rc = cnr_canon(env, argv[1], &k);
    if (rc)
        return canon_failed(env, rc);
    ssize_t n = cnb_registry_lookup(reg->core, k.p, k.len, res);
    cnr_canon_free(&k);
    if (n == CNB_ETOOBIG) /* longer than any key the registry can hold */
        return enif_make_list(env, 0);
    return read_result(env, n, res, PID_VALUE, again);
}
OP_NIF(cnr_lookup, op_lookup)

/* lookup_many(Name, Keys) -> [[{Pid, Value}]], one list per key in Keys' order;
 * Keys is a proper list of at most MANY_MAX keys (cnode_registry:lookup_many/2
 * cuts longer lists), looked up together by cnb_registry_lookup_many. */
#define MANY_MAX 256u

static ERL_NIF_TERM op_lookup_many(ErlNifEnv *env, struct cnr_reg *reg,
                                   const ERL_NIF_TERM argv[], cnb_registry_result_t *res,
                                   int *again)
{
    unsigned len;
    if (!enif_get_list_length(env, argv[1], &len) || len > MANY_MAX)
        return enif_make_badarg(env);
    if (len == 0)
        return enif_make_list(env, 0);
    struct cnr_canon *k = enif_alloc(sizeof *k * len);
    cnb_registry_key_t *keys = enif_alloc(sizeof *keys * len);
    size_t *counts = enif_alloc(sizeof *counts * len);
    ERL_NIF_TERM r = 0, list = argv[1], head;
    unsigned got = 0;
    int rc = k && keys && counts ? 0 : CNB_ENOMEM;
    for (; rc == 0 && got < len && enif_get_list_cell(env, list, &head, &list); got++) {
        rc = cnr_canon(env, head, &k[got]);
        keys[got] = (cnb_registry_key_t){k[got].p, k[got].len};
    }
    if (rc) {
        r = canon_failed(env, rc);
    } else {
        ssize_t n = cnb_registry_lookup_many(reg->core, keys, len, res, counts);
        if (overflowed(n)) {
            *again = 1;
        } else if (n < 0) {
            r = raise_code(env, (int)n);
        } else {
            /* Built from the last key back, so the outer list needs no reversal. */
            r = enif_make_list(env, 0);
            size_t end = res->n;
            for (unsigned i = len; i-- > 0;) {
                ERL_NIF_TERM one;
                if (counts[i] > end ||
                    !items_range(env, res, end - counts[i], end, PID_VALUE, &one)) {
                    r = raise_code(env, CNB_ECORRUPT);
                    break;
                }
                end -= counts[i];
                r = enif_make_list_cell(env, one, r);
            }
        }
    }
    for (unsigned i = 0; i < got; i++)
        cnr_canon_free(&k[i]);
    if (k)
        enif_free(k);
    if (keys)
        enif_free(keys);
    if (counts)
        enif_free(counts);
    return r;
}
OP_NIF(cnr_lookup_many, op_lookup_many)

/* ---- lookups in slices --------------------------------------------------------- */

void cnr_snap_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    struct cnr_snap *s = obj;
    cnb_registry_result_free(&s->res);
    if (s->lock)
        enif_mutex_destroy(s->lock);
}

/* Frees a big snapshot's copy on a dirty scheduler (giving back hundreds of
 * megabytes can take a while): argv = [Snap, LastSlice]. */
static ERL_NIF_TERM snap_free_dirty(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    struct cnr_snap *s;
    if (!enif_get_resource(env, argv[0], cnr_g.snap_rt, (void **)&s))
        return enif_make_badarg(env);
    enif_mutex_lock(s->lock);
    cnb_registry_result_free(&s->res);
    enif_mutex_unlock(s->lock);
    return enif_make_tuple2(env, argv[1], cnr_atom.done);
}

/* The next slice of at most max items: {[{Pid, Value}], Snap | done}. */
static ERL_NIF_TERM snap_slice(ErlNifEnv *env, struct cnr_snap *s, ERL_NIF_TERM st, size_t max)
{
    enif_mutex_lock(s->lock);
    size_t to = s->left, from = to > max ? to - max : 0;
    ERL_NIF_TERM list;
    int ok = items_range(env, &s->res, from, to, PID_VALUE, &list);
    s->left = ok ? from : 0;
    size_t bytes = s->res.cap * sizeof *s->res.items + s->res.buf_cap;
    enif_mutex_unlock(s->lock);
    if (!ok)
        return raise_code(env, CNB_ECORRUPT);
    if (from > 0)
        return enif_make_tuple2(env, list, st);
    if (bytes > BOUND_BYTES) {
        ERL_NIF_TERM args[2] = {st, list};
        return enif_schedule_nif(env, "lookup_next", ERL_NIF_DIRTY_JOB_CPU_BOUND, snap_free_dirty,
                                 2, args);
    }
    enif_mutex_lock(s->lock);
    cnb_registry_result_free(&s->res);
    enif_mutex_unlock(s->lock);
    return enif_make_tuple2(env, list, cnr_atom.done);
}

/* lookup_open(Name, Key, Max) -> {Entries, done} | {FirstEntries, Snap}: the
 * entries of Key, all at once when they are few, else copied (on a dirty
 * scheduler) into a snapshot handed out Max at a time by lookup_next/2. Used
 * by match and count_match, which filter each slice. */
static ERL_NIF_TERM op_lookup_open(ErlNifEnv *env, struct cnr_reg *reg,
                                   const ERL_NIF_TERM argv[], cnb_registry_result_t *res,
                                   int *again)
{
    struct cnr_canon k;
    unsigned int max;
    if (!enif_get_uint(env, argv[2], &max) || max == 0)
        return enif_make_badarg(env);
    int rc = cnr_canon(env, argv[1], &k);
    if (rc)
        return canon_failed(env, rc);
    ssize_t n = cnb_registry_lookup(reg->core, k.p, k.len, res);
    cnr_canon_free(&k);
    if (n == CNB_ETOOBIG)
        return enif_make_tuple2(env, enif_make_list(env, 0), cnr_atom.done);
    if (overflowed(n)) {
        *again = 1;
        return 0;
    }
    if (n < 0)
        return raise_code(env, (int)n);
    if (res->n <= max)
        return enif_make_tuple2(env, items_list(env, res, PID_VALUE), cnr_atom.done);
    if (res->alloc == &bound_allocator) {
        /* The per-thread buffer is not ours to keep: copy on a dirty one. */
        *again = 1;
        return 0;
    }
    /* Many entries: keep the copy and hand it out in slices. */
    struct cnr_snap *s = enif_alloc_resource(cnr_g.snap_rt, sizeof *s);
    if (!s)
        return raise_code(env, CNB_ENOMEM);
    memset(s, 0, sizeof *s);
    if (!(s->lock = enif_mutex_create("cnr_snap"))) {
        enif_release_resource(s);
        return raise_code(env, CNB_ENOMEM);
    }
    s->res = *res; /* take the buffers over */
    s->left = res->n;
    cnb_registry_result_init(res, &cnr_g.alloc);
    ERL_NIF_TERM st = enif_make_resource(env, s);
    enif_release_resource(s);
    return snap_slice(env, s, st, max);
}
OP_NIF(cnr_lookup_open, op_lookup_open)

/* lookup_next(Snap, Max) -> {Entries, Snap | done}. */
CNR_NIF(cnr_lookup_next)
{
    (void)argc;
    struct cnr_snap *s;
    unsigned int max;
    if (!enif_get_resource(env, argv[0], cnr_g.snap_rt, (void **)&s) ||
        !enif_get_uint(env, argv[1], &max) || max == 0)
        return enif_make_badarg(env);
    return snap_slice(env, s, argv[0], max);
}

static ERL_NIF_TERM op_values(ErlNifEnv *env, struct cnr_reg *reg, const ERL_NIF_TERM argv[],
                              cnb_registry_result_t *res, int *again)
{
    cnb_pid_t owner;
    struct cnr_canon k;
    if (!cnr_pid_get(env, argv[2], &owner))
        return enif_make_badarg(env);
    int rc = cnr_canon(env, argv[1], &k);
    if (rc)
        return canon_failed(env, rc);
    ssize_t n = cnb_registry_values(reg->core, k.p, k.len, &owner, res);
    cnr_canon_free(&k);
    if (n == CNB_ETOOBIG)
        return enif_make_list(env, 0);
    return read_result(env, n, res, VALUE, again);
}
OP_NIF(cnr_values, op_values)

static ERL_NIF_TERM op_keys(ErlNifEnv *env, struct cnr_reg *reg, const ERL_NIF_TERM argv[],
                            cnb_registry_result_t *res, int *again)
{
    cnb_pid_t owner;
    if (!cnr_pid_get(env, argv[1], &owner))
        return enif_make_badarg(env);
    ssize_t n = cnb_registry_keys(reg->core, &owner, res);
    return read_result(env, n, res, KEY, again);
}
OP_NIF(cnr_keys, op_keys)

static ERL_NIF_TERM op_count(ErlNifEnv *env, struct cnr_reg *reg, const ERL_NIF_TERM argv[],
                             cnb_registry_result_t *res, int *again)
{
    (void)argv;
    (void)res;
    (void)again;
    return enif_make_uint64(env, cnb_registry_count(reg->core));
}
OP_NIF(cnr_count, op_count)

/* ---- meta ------------------------------------------------------------------------ */

static int meta_key_ok(ErlNifEnv *env, ERL_NIF_TERM k)
{
    return enif_is_atom(env, k) || enif_is_tuple(env, k);
}

static ERL_NIF_TERM op_meta(ErlNifEnv *env, struct cnr_reg *reg, const ERL_NIF_TERM argv[],
                            cnb_registry_result_t *res, int *again)
{
    struct cnr_canon k;
    ERL_NIF_TERM v;
    if (!meta_key_ok(env, argv[1]))
        return enif_make_badarg(env);
    int rc = cnr_canon(env, argv[1], &k);
    if (rc)
        return canon_failed(env, rc);
    ssize_t n = cnb_registry_meta_get(reg->core, k.p, k.len, res);
    cnr_canon_free(&k);
    if (n == CNB_ENOENT || n == CNB_ETOOBIG || n == 0)
        return cnr_atom.error;
    if (overflowed(n)) {
        *again = 1;
        return 0;
    }
    if (n < 0)
        return raise_code(env, (int)n);
    if (!cnr_decode(env, res->items[0].value, res->items[0].value_len, &v))
        return raise_code(env, CNB_ECORRUPT);
    return enif_make_tuple2(env, cnr_atom.ok, v);
}
OP_NIF(cnr_meta, op_meta)

static ERL_NIF_TERM op_put_meta(ErlNifEnv *env, struct cnr_reg *reg,
                                const ERL_NIF_TERM argv[], cnb_registry_result_t *res,
                                int *again)
{
    (void)res;
    (void)again;
    struct cnr_canon k, v;
    if (!meta_key_ok(env, argv[1]))
        return enif_make_badarg(env);
    int rc = cnr_canon(env, argv[1], &k);
    if (rc)
        return canon_failed(env, rc);
    if ((rc = cnr_canon(env, argv[2], &v))) {
        cnr_canon_free(&k);
        return canon_failed(env, rc);
    }
    rc = cnb_registry_meta_put(reg->core, k.p, k.len, v.p, v.len);
    cnr_canon_free(&k);
    cnr_canon_free(&v);
    return rc ? cnr_error(env, rc) : cnr_atom.ok;
}
OP_NIF(cnr_put_meta, op_put_meta)

static ERL_NIF_TERM op_delete_meta(ErlNifEnv *env, struct cnr_reg *reg,
                                   const ERL_NIF_TERM argv[], cnb_registry_result_t *res,
                                   int *again)
{
    (void)res;
    (void)again;
    struct cnr_canon k;
    if (!meta_key_ok(env, argv[1]))
        return enif_make_badarg(env);
    int rc = cnr_canon(env, argv[1], &k);
    if (rc)
        return canon_failed(env, rc);
    rc = cnb_registry_meta_delete(reg->core, k.p, k.len);
    cnr_canon_free(&k);
    return rc && rc != CNB_ENOENT && rc != CNB_ETOOBIG ? cnr_error(env, rc) : cnr_atom.ok;
}
OP_NIF(cnr_delete_meta, op_delete_meta)

/* remove_node(Name, Node, Creation) -> N: removes the entries of every owner on
 * Node (a binary, UTF-8) with that creation (0: any). Used when a C node
 * goes down. */
static ERL_NIF_TERM op_remove_node(ErlNifEnv *env, struct cnr_reg *reg,
                                   const ERL_NIF_TERM argv[], cnb_registry_result_t *res,
                                   int *again)
{
    (void)res;
    (void)again;
    char node[256];
    unsigned int creation;
    ErlNifBinary b;
    if (enif_inspect_binary(env, argv[1], &b) && b.size > 0 && b.size < sizeof node &&
        !memchr(b.data, 0, b.size)) {
        memcpy(node, b.data, b.size);
        node[b.size] = 0;
    } else {
        return enif_make_badarg(env);
    }
    if (!enif_get_uint(env, argv[2], &creation))
        return enif_make_badarg(env);
    ssize_t n = cnb_registry_remove_node(reg->core, node, creation);
    return n < 0 ? cnr_error(env, (int)n) : enif_make_uint64(env, (uint64_t)n);
}
OP_NIF(cnr_remove_node, op_remove_node)

/* canonical(Term) -> binary(): the canonical bytes the registry compares (for
 * tests and tools). */
CNR_NIF(cnr_canonical)
{
    (void)argc;
    struct cnr_canon c;
    ERL_NIF_TERM r;
    int rc = cnr_canon(env, argv[0], &c);
    if (rc)
        return canon_failed(env, rc);
    unsigned char *p = enif_make_new_binary(env, c.len, &r);
    if (!p)
        r = cnr_error(env, CNB_ENOMEM);
    else
        memcpy(p, c.p, c.len);
    cnr_canon_free(&c);
    return r;
}

/* remove_owner(Name, Pid) -> N (a dirty NIF): removes every entry of Pid, a
 * local owner that died with many entries (see cnr_reg_down). */
CNR_NIF(cnr_remove_owner)
{
    (void)argc;
    cnb_pid_t owner;
    if (!cnr_pid_get(env, argv[1], &owner))
        return enif_make_badarg(env);
    int tok = cnr_table_enter();
    struct cnr_reg *reg = cnr_table_find(argv[0]);
    if (reg)
        enif_keep_resource(reg);
    cnr_table_leave(tok);
    if (!reg)
        return enif_make_badarg(env);
    ssize_t n = reg->core ? cnb_registry_remove_owner(reg->core, &owner) : 0;
    enif_release_resource(reg);
    return n < 0 ? cnr_error(env, (int)n) : enif_make_uint64(env, (uint64_t)n);
}
