/* cnr_ops.c: the short operations of the cnode_registry NIF. Those of core's
 * table (register, unregister, unregister_values, update_value, lookup,
 * values, keys, count, meta, put_meta, delete_meta: core/registry_ops.c, which
 * the C node's registry worker runs too) decode their arguments here, run
 * there, and get their answer built here; the NIF's own are lookup_many, the
 * sliced lookups behind match and count_match, notify_unregister,
 * remove_node, remove_owner and canonical. Reads run on the calling scheduler
 * with a result buffer capped at 512 KiB; a read that needs more (a key with
 * thousands of duplicate entries, an owner of thousands of keys) is
 * rescheduled on a dirty CPU scheduler, so a normal scheduler never copies an
 * unbounded result. Tests: tests/integration/nif_tests.erl,
 * tests/integration/exunit/registry_compat_test.exs. */
#include <string.h>

#include "cnb_registry_ops.h"
#include "cnr.h"

/* ---- result buffers ---------------------------------------------------------- */

#define BOUND_BYTES ((size_t)1 << 19)

static void *capped_alloc(void *ctx, size_t n)
{
    struct cnr_capped *c = ctx;
    if (n > c->cap) {
        c->hit = 1;
        return NULL;
    }
    return enif_alloc(n);
}

static void *capped_realloc(void *ctx, void *p, size_t n)
{
    struct cnr_capped *c = ctx;
    if (n > c->cap) {
        c->hit = 1;
        return NULL;
    }
    return enif_realloc(p, n);
}

static void capped_free(void *ctx, void *p)
{
    (void)ctx;
    enif_free(p);
}

cnb_registry_result_t *cnr_capped_res(struct cnr_capped *c)
{
    if (!c->ready) {
        c->alloc = (cnb_allocator_t){capped_alloc, capped_realloc, capped_free, c};
        cnb_registry_result_init(&c->res, &c->alloc);
        c->ready = 1;
    }
    c->hit = 0;
    return &c->res;
}

/* This file's buffer: each scheduler thread keeps one. */
static __thread struct cnr_capped ops_buf = {.cap = BOUND_BYTES};

/* A read failed because the capped buffer was too small. */
static int overflowed(ssize_t rc)
{
    return rc == CNB_ENOMEM && ops_buf.hit;
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
        r = op(env, reg, argv, cnr_capped_res(&ops_buf), &again);
    cnr_table_leave(tok);
    if (again)
        return enif_schedule_nif(env, name, ERL_NIF_DIRTY_JOB_CPU_BOUND, dirty, argc, argv);
    return r;
}

/* The same on a dirty scheduler, with an unbounded buffer. */
static ERL_NIF_TERM run_op_dirty(ErlNifEnv *env, const ERL_NIF_TERM argv[], op_fn op)
{
    struct cnr_reg *reg = cnr_table_hold(argv[0]);
    if (!reg)
        return enif_make_badarg(env);
    if (reg->mode == CNR_REMOTE) {
        enif_release_resource(reg);
        return cnr_atom.cnr_remote;
    }
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, &cnr_g.alloc);
    int again = 0;
    ops_buf.hit = 0;
    ERL_NIF_TERM r = op(env, reg, argv, &res, &again);
    cnb_registry_result_free(&res);
    enif_release_resource(reg);
    return again ? cnr_raise(env, CNB_ENOMEM) : r;
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

/* A read's key that is no canonical term (too deep, too big): a bad argument;
 * out of memory: raised (cnb_regop_bad_term's rule for reads). */
static ERL_NIF_TERM canon_failed(ErlNifEnv *env, int rc)
{
    return rc == CNB_ENOMEM ? cnr_raise(env, rc) : enif_make_badarg(env);
}

/* The list of items[from..to) in reverse (core lists the newest entry of a key
 * first; Elixir's Registry lists entries in insertion order), each shaped as
 * enum cnb_regop_shape says, in *out. Returns 1, or 0 when an item's bytes are
 * not a term or its owner not a pid (memory another process wrote): the
 * caller raises then, with nothing half-built handed out. Never puts an
 * exception term in a list. */
static int items_range(ErlNifEnv *env, const cnb_registry_result_t *res, size_t from,
                       size_t to, int shape, ERL_NIF_TERM *out)
{
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t i = from; i < to; i++) {
        const cnb_registry_item_t *it = &res->items[i];
        ERL_NIF_TERM v, e;
        if (shape == CNB_SHAPE_KEY) {
            if (!cnr_decode(env, it->key, it->key_len, &e))
                return 0;
        } else {
            if (!cnr_decode(env, it->value, it->value_len, &v))
                return 0;
            if (shape == CNB_SHAPE_VALUE) {
                e = v;
            } else {
                ERL_NIF_TERM pv[2];
                if (!CNR_PID_MAKE(env, &it->owner, &pv[0]))
                    return 0;
                pv[1] = v;
                e = enif_make_tuple_from_array(env, pv, 2); /* not variadic */
            }
        }
        list = enif_make_list_cell(env, e, list);
    }
    *out = list;
    return 1;
}

/* The list of all items, or raises error({cnode_registry, corrupt}). */
static ERL_NIF_TERM items_list(ErlNifEnv *env, const cnb_registry_result_t *res, int shape)
{
    ERL_NIF_TERM list;
    return items_range(env, res, 0, res->n, shape, &list) ? list : cnr_raise(env, CNB_ECORRUPT);
}

/* ---- the operations of core's table ---------------------------------------------- */

/* A table operation's arguments taken from argv (argv[0] is the registry's
 * name; the owner, 'O', is the caller), with the buffers they live in. */
struct nif_args {
    cnb_regop_args_t a;
    struct cnr_canon k, v;
    int has_k, has_v;
    struct cnr_canon *vals; /* 'L' */
    cnb_regop_term_t *terms;
    size_t nvals;
    ErlNifPid self;
    ERL_NIF_TERM selft;
};

static void args_free(struct nif_args *d)
{
    if (d->has_k)
        cnr_canon_free(&d->k);
    if (d->has_v)
        cnr_canon_free(&d->v);
    for (size_t i = 0; i < d->nvals; i++)
        cnr_canon_free(&d->vals[i]);
    enif_free(d->vals);
    enif_free(d->terms);
}

static int canon_arg(ErlNifEnv *env, ERL_NIF_TERM t, struct cnr_canon *c, cnb_regop_term_t *out)
{
    int rc = cnr_canon(env, t, c);
    if (rc == 0)
        *out = (cnb_regop_term_t){c->p, c->len};
    return rc;
}

/* 'L': a proper list of values. Returns 0, CNB_EINVAL, CNB_ENOMEM or a
 * cnr_canon error. */
static int values_arg(ErlNifEnv *env, ERL_NIF_TERM list, struct nif_args *d)
{
    unsigned len;
    ERL_NIF_TERM head;
    if (!enif_get_list_length(env, list, &len))
        return CNB_EINVAL;
    if (len == 0)
        return 0;
    d->vals = enif_alloc(len * sizeof *d->vals);
    d->terms = enif_alloc(len * sizeof *d->terms);
    if (!d->vals || !d->terms)
        return CNB_ENOMEM;
    while (enif_get_list_cell(env, list, &head, &list)) {
        int rc = canon_arg(env, head, &d->vals[d->nvals], &d->terms[d->nvals]);
        if (rc)
            return rc;
        d->nvals++;
    }
    d->a.values = d->terms;
    d->a.nvalues = d->nvals;
    return 0;
}

/* Takes op's arguments (its letters, cnb_registry_ops.h) from argv. Returns 0,
 * or a code for cnb_regop_bad_term. */
static int args_get(ErlNifEnv *env, int op, const ERL_NIF_TERM argv[], struct nif_args *d)
{
    int j = 1, rc = 0;
    for (const char *l = cnb_regop_table[op].args; *l && rc == 0; l++) {
        switch (*l) {
        case 'K':
        case 'M':
            rc = canon_arg(env, argv[j++], &d->k, &d->a.key);
            d->has_k = rc == 0;
            break;
        case 'V':
            rc = canon_arg(env, argv[j++], &d->v, &d->a.value);
            d->has_v = rc == 0;
            break;
        case 'O':
            if (!enif_self(env, &d->self))
                return CNB_EINVAL;
            d->selft = enif_make_pid(env, &d->self);
            rc = cnr_pid_get(env, d->selft, &d->a.pid) ? 0 : CNB_EINVAL;
            break;
        case 'P':
            rc = cnr_pid_get(env, argv[j++], &d->a.pid) ? 0 : CNB_EINVAL;
            break;
        case 'L':
            rc = values_arg(env, argv[j++], d);
            break;
        }
    }
    return rc;
}

/* register: a local holder that is dead (its exit not processed yet) gives
 * way. hctx: the nif_args of the call. */
static int holder_dead(void *hctx, const cnb_pid_t *holder, const cnb_pid_t *me)
{
    (void)me;
    ErlNifEnv *env = ((void **)hctx)[0];
    const struct nif_args *d = ((void **)hctx)[1];
    ERL_NIF_TERM t;
    ErlNifPid lp;
    return CNR_PID_MAKE(env, holder, &t) && t != d->selft && enif_get_local_pid(env, t, &lp) &&
           !enif_is_process_alive(env, &lp);
}

/* What only the NIF does after a write: monitor a new owner (or take the
 * entry back), count removals, tell the listeners. Returns 0 or the term to
 * answer instead. */
static ERL_NIF_TERM after_write(ErlNifEnv *env, struct cnr_reg *reg, int op,
                                const ERL_NIF_TERM argv[], const struct nif_args *d,
                                const cnb_regop_out_t *o)
{
    if (op == CNB_REGOP_REGISTER && o->answer == CNB_ANS_REGISTERED) {
        int rc = cnr_owner_watch(env, reg, &d->self, &d->a.pid);
        if (rc) {
            (void)cnb_registry_unregister(reg->core, d->a.key.p, d->a.key.len, &d->a.pid);
            return cnr_error(env, rc);
        }
        if (reg->nlisteners) {
            ERL_NIF_TERM t[5] = {cnr_atom.register_, reg->name, argv[1], d->selft, argv[2]};
            cnr_notify(env, reg, enif_make_tuple_from_array(env, t, 5));
        }
    } else if ((op == CNB_REGOP_UNREGISTER && o->answer == CNB_ANS_OK) ||
               (op == CNB_REGOP_UNREGISTER_VALUES && o->answer == CNB_ANS_COUNT)) {
        if (o->count)
            cnr_owner_forget(env, reg, &d->self, o->count);
        if (op == CNB_REGOP_UNREGISTER && reg->nlisteners)
            cnr_notify(env, reg,
                       enif_make_tuple4(env, cnr_atom.unregister, reg->name, argv[1], d->selft));
    }
    return 0;
}

/* The outcome as a term (cnb_registry_ops.h says which). */
static ERL_NIF_TERM answer(ErlNifEnv *env, const struct cnr_reg *reg, const cnb_regop_out_t *o,
                           const cnb_registry_result_t *res, int *again)
{
    ERL_NIF_TERM t;
    switch (o->answer) {
    case CNB_ANS_OK:
        return cnr_atom.ok;
    case CNB_ANS_ERROR:
        return cnr_atom.error;
    case CNB_ANS_COUNT:
        return enif_make_uint64(env, o->count);
    case CNB_ANS_ITEMS:
        return items_list(env, res, o->shape);
    case CNB_ANS_META:
        if (!cnr_decode(env, res->items[0].value, res->items[0].value_len, &t))
            return cnr_raise(env, CNB_ECORRUPT);
        return enif_make_tuple2(env, cnr_atom.ok, t);
    case CNB_ANS_REGISTERED:
        return enif_make_tuple2(env, cnr_atom.ok, enif_make_pid(env, &reg->server));
    case CNB_ANS_TAKEN:
        if (!CNR_PID_MAKE(env, &o->holder, &t))
            return cnr_error(env, CNB_ECORRUPT);
        return enif_make_tuple2(env, cnr_atom.error,
                                enif_make_tuple2(env, cnr_atom.already_registered, t));
    case CNB_ANS_FAIL:
        return cnr_error(env, o->code);
    case CNB_ANS_RAISE:
        if (overflowed(o->code)) {
            *again = 1;
            return 0;
        }
        return cnr_raise(env, o->code);
    default:
        return enif_make_badarg(env);
    }
}

static ERL_NIF_TERM table_op(ErlNifEnv *env, struct cnr_reg *reg, const ERL_NIF_TERM argv[],
                             cnb_registry_result_t *res, int *again, int op)
{
    struct nif_args d;
    d.has_k = d.has_v = 0;
    d.vals = NULL;
    d.terms = NULL;
    d.nvals = d.a.nvalues = 0;
    d.a.values = NULL;
    d.selft = 0;
    cnb_regop_out_t o;
    int rc = args_get(env, op, argv, &d);
    if (rc) {
        cnb_regop_bad_term(op, rc, &o);
    } else {
        void *h[2] = {env, &d};
        cnb_regop_ctx_t c = {reg->core, reg->kind, res, holder_dead, h};
        cnb_regop_run(&c, op, &d.a, &o);
    }
    ERL_NIF_TERM r = after_write(env, reg, op, argv, &d, &o);
    if (!r)
        r = answer(env, reg, &o, res, again);
    args_free(&d);
    return r;
}

#define TABLE_NIF(nif, op)                                                                \
    static ERL_NIF_TERM nif##_op(ErlNifEnv *env, struct cnr_reg *reg,                     \
                                 const ERL_NIF_TERM argv[], cnb_registry_result_t *res,   \
                                 int *again)                                              \
    {                                                                                     \
        return table_op(env, reg, argv, res, again, op);                                  \
    }                                                                                     \
    OP_NIF(nif, nif##_op)

TABLE_NIF(cnr_register, CNB_REGOP_REGISTER)
TABLE_NIF(cnr_unregister, CNB_REGOP_UNREGISTER)
TABLE_NIF(cnr_unregister_values, CNB_REGOP_UNREGISTER_VALUES)
TABLE_NIF(cnr_update_value, CNB_REGOP_UPDATE_VALUE)
TABLE_NIF(cnr_values, CNB_REGOP_VALUES)
TABLE_NIF(cnr_keys, CNB_REGOP_KEYS)
TABLE_NIF(cnr_count, CNB_REGOP_COUNT)
TABLE_NIF(cnr_meta, CNB_REGOP_META)
TABLE_NIF(cnr_put_meta, CNB_REGOP_PUT_META)
TABLE_NIF(cnr_delete_meta, CNB_REGOP_DELETE_META)

/* ---- the NIF's own ----------------------------------------------------------------- */

/* cnb_registry_lookup of key term t into res, answering as cnb_regop_run's
 * CNB_REGOP_LOOKUP does: the number of items (0 for a key longer than any
 * entry's), or -1 with *out the answer instead (badarg for a key that is no
 * canonical term, a raise) or *again set (the buffer was too small). */
static ssize_t lookup_term(ErlNifEnv *env, struct cnr_reg *reg, ERL_NIF_TERM t,
                           cnb_registry_result_t *res, int *again, ERL_NIF_TERM *out)
{
    struct cnr_canon k;
    int rc = cnr_canon(env, t, &k);
    if (rc) {
        *out = canon_failed(env, rc);
        return -1;
    }
    ssize_t n = cnb_registry_lookup(reg->core, k.p, k.len, res);
    cnr_canon_free(&k);
    if (n == CNB_ETOOBIG) {
        res->n = 0;
        return 0;
    }
    *out = 0;
    if (overflowed(n))
        *again = 1;
    else if (n < 0)
        *out = cnr_raise(env, (int)n);
    return n < 0 ? -1 : n;
}

/* Value bytes lookup/2 copies onto the stack; a longer value is read again
 * into a buffer of its length. */
#define ONE_VALUE_MAX 256

/* lookup/2 in a unique registry: cnb_registry_lookup_one (no result buffer)
 * and [{Pid, Value}] or [] built here. A value over ONE_VALUE_MAX is read
 * again, with the same canonical key, into a buffer of the length the first
 * read reported. Returns the answer, or 0 when the general path must answer
 * (core finding the registry not unique, no memory for that buffer, or the
 * value grown past it between the two reads). */
static ERL_NIF_TERM lookup_unique(ErlNifEnv *env, struct cnr_reg *reg, ERL_NIF_TERM t)
{
    struct cnr_canon k;
    int rc = cnr_canon(env, t, &k);
    if (rc)
        return canon_failed(env, rc);
    unsigned char vb[ONE_VALUE_MAX], *v = vb, *big = NULL;
    size_t vlen;
    cnb_registry_owner_t ow;
    ssize_t n = cnb_registry_lookup_one(reg->core, k.p, k.len, &ow, vb, sizeof vb, &vlen);
    if (n == CNB_ENOSPC && (big = enif_alloc(vlen)) != NULL) {
        size_t cap = vlen;
        v = big;
        n = cnb_registry_lookup_one(reg->core, k.p, k.len, &ow, big, cap, &vlen);
    }
    cnr_canon_free(&k);
    ERL_NIF_TERM pv[2], r;
    switch (n) {
    case 1:
        if (!cnr_decode(env, v, vlen, &pv[1]) || !CNR_PID_MAKE(env, &ow, &pv[0]))
            r = cnr_raise(env, CNB_ECORRUPT);
        else
            r = enif_make_list_cell(env, enif_make_tuple_from_array(env, pv, 2),
                                    enif_make_list(env, 0));
        break;
    case 0:
    case CNB_ETOOBIG: /* a key longer than any entry's */
        r = enif_make_list(env, 0);
        break;
    case CNB_ENOSPC:
    case CNB_EINVAL:
        r = 0;
        break;
    default:
        r = cnr_raise(env, (int)n);
    }
    if (big)
        enif_free(big);
    return r;
}

/* lookup(Name, Key) -> [{Pid, Value}]: the hottest read, straight to core
 * without the table's walk over argument letters. */
static ERL_NIF_TERM op_lookup(ErlNifEnv *env, struct cnr_reg *reg, const ERL_NIF_TERM argv[],
                              cnb_registry_result_t *res, int *again)
{
    ERL_NIF_TERM r;
    if (lookup_term(env, reg, argv[1], res, again, &r) < 0)
        return r;
    return items_list(env, res, CNB_SHAPE_PID_VALUE);
}

static ERL_NIF_TERM cnr_lookup_dirty(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return run_op_dirty(env, argv, op_lookup);
}

/* A unique registry's lookup needs no result buffer (lookup_unique); the rest,
 * and what lookup_unique leaves, go the way of every operation. */
CNR_NIF(cnr_lookup)
{
    ERL_NIF_TERM r = 0;
    int tok = cnr_table_enter();
    struct cnr_reg *reg = cnr_table_find(argv[0]);
    if (reg && reg->mode != CNR_REMOTE && reg->kind == CNB_REG_UNIQUE)
        r = lookup_unique(env, reg, argv[1]);
    cnr_table_leave(tok);
    if (r)
        return r;
    return run_op(env, argc, argv, op_lookup, "cnr_lookup", cnr_lookup_dirty);
}

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
    if (reg->nlisteners)
        cnr_notify(env, reg,
                   enif_make_tuple4(env, cnr_atom.unregister, reg->name, argv[1],
                                    enif_make_pid(env, &self)));
    return cnr_atom.ok;
}
OP_NIF(cnr_notify_unregister, op_notify_unregister)

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
            r = cnr_raise(env, (int)n);
        } else {
            /* Built from the last key back, so the outer list needs no reversal. */
            r = enif_make_list(env, 0);
            size_t end = res->n;
            for (unsigned i = len; i-- > 0;) {
                ERL_NIF_TERM one;
                if (counts[i] > end ||
                    !items_range(env, res, end - counts[i], end, CNB_SHAPE_PID_VALUE, &one)) {
                    r = cnr_raise(env, CNB_ECORRUPT);
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
    int ok = items_range(env, &s->res, from, to, CNB_SHAPE_PID_VALUE, &list);
    s->left = ok ? from : 0;
    size_t bytes = s->res.cap * sizeof *s->res.items + s->res.buf_cap;
    enif_mutex_unlock(s->lock);
    if (!ok)
        return cnr_raise(env, CNB_ECORRUPT);
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
    unsigned int max;
    if (!enif_get_uint(env, argv[2], &max) || max == 0)
        return enif_make_badarg(env);
    ERL_NIF_TERM r;
    if (lookup_term(env, reg, argv[1], res, again, &r) < 0)
        return r;
    if (res->n <= max)
        return enif_make_tuple2(env, items_list(env, res, CNB_SHAPE_PID_VALUE), cnr_atom.done);
    if (res->alloc == &ops_buf.alloc) {
        /* The per-thread buffer is not ours to keep: copy on a dirty one. */
        *again = 1;
        return 0;
    }
    /* Many entries: keep the copy and hand it out in slices. */
    struct cnr_snap *s = enif_alloc_resource(cnr_g.snap_rt, sizeof *s);
    if (!s)
        return cnr_raise(env, CNB_ENOMEM);
    memset(s, 0, sizeof *s);
    if (!(s->lock = enif_mutex_create("cnr_snap"))) {
        enif_release_resource(s);
        return cnr_raise(env, CNB_ENOMEM);
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
    struct cnr_reg *reg = cnr_table_hold(argv[0]);
    if (!reg)
        return enif_make_badarg(env);
    ssize_t n = reg->core ? cnb_registry_remove_owner(reg->core, &owner) : 0;
    enif_release_resource(reg);
    return n < 0 ? cnr_error(env, (int)n) : enif_make_uint64(env, (uint64_t)n);
}
