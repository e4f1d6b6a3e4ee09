/* cnr_scan.c: the long operations of the cnode_registry NIF. scan/3 walks the
 * whole registry with core's cursor scan in small batches, giving the scheduler
 * back (enif_consume_timeslice + enif_schedule_nif) whenever a time slice is
 * used up; feed_head/1 and feed_poll/3 read the change feed for listener
 * dispatch. Tests: tests/integration/nif_tests.erl (yielding over 1M entries,
 * listeners of C-side registrations). */
#include <string.h>
#include <time.h>

#include "cnb_registry_ops.h"
#include "cnr.h"

#define SCAN_BUDGET 256  /* table positions per core call */
#define FEED_MAX 256     /* events per feed_poll call, at most */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Conses {Key, Pid, Value} for each item onto *acc. Returns 0 or a code. */
static int add_items(ErlNifEnv *env, const cnb_registry_result_t *res, ERL_NIF_TERM *acc)
{
    for (size_t i = 0; i < res->n; i++) {
        const cnb_registry_item_t *it = &res->items[i];
        ERL_NIF_TERM k, p, v;
        if (!cnr_decode(env, it->key, it->key_len, &k) ||
            !cnr_decode(env, it->value, it->value_len, &v) || !CNR_PID_MAKE(env, &it->owner, &p))
            return CNB_ECORRUPT;
        *acc = enif_make_list_cell(env, enif_make_tuple3(env, k, p, v), *acc);
    }
    return 0;
}

/* The continuation: argv = [RegResource, Pos, Max, Acc, Count]. */
static ERL_NIF_TERM scan_step(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

/* One batch with an unbounded buffer, on a dirty scheduler (a key with so many
 * entries that one batch exceeds the normal buffer), then back to scan_step. */
static ERL_NIF_TERM scan_dirty(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    struct cnr_reg *reg;
    ErlNifUInt64 pos, count;
    ERL_NIF_TERM acc = argv[3], nargv[5];
    (void)argc;
    if (!enif_get_resource(env, argv[0], cnr_g.reg_rt, (void **)&reg) ||
        !enif_get_uint64(env, argv[1], &pos) || !enif_get_uint64(env, argv[4], &count))
        return enif_make_badarg(env);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, &cnr_g.alloc);
    cnb_registry_cursor_t cur = {pos, 0};
    ssize_t n = cnb_registry_scan(reg->core, &cur, SCAN_BUDGET, NULL, NULL, &res);
    int rc = n < 0 ? (int)n : add_items(env, &res, &acc);
    cnb_registry_result_free(&res);
    if (rc)
        return cnr_raise(env, rc);
    if (cur.done)
        return enif_make_tuple2(env, acc, cnr_atom.done);
    nargv[0] = argv[0];
    nargv[1] = enif_make_uint64(env, cur.pos);
    nargv[2] = argv[2];
    nargv[3] = acc;
    nargv[4] = enif_make_uint64(env, count + (uint64_t)n);
    return enif_schedule_nif(env, "scan", 0, scan_step, 5, nargv);
}

/* Scans keep a capped buffer of their own per scheduler thread (cnr_ops.c's
 * holds an operation's result while it runs). */
static __thread struct cnr_capped scan_buf = {.cap = (size_t)1 << 20};

static ERL_NIF_TERM scan_step(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    struct cnr_reg *reg;
    ErlNifUInt64 pos, max, count;
    ERL_NIF_TERM acc = argv[3], nargv[5];
    (void)argc;
    if (!enif_get_resource(env, argv[0], cnr_g.reg_rt, (void **)&reg) ||
        !enif_get_uint64(env, argv[1], &pos) || !enif_get_uint64(env, argv[2], &max) ||
        !enif_get_uint64(env, argv[4], &count))
        return enif_make_badarg(env);
    uint64_t t0 = now_us();
    cnb_registry_cursor_t cur = {pos, 0};
    for (;;) {
        cnb_registry_result_t *res = cnr_capped_res(&scan_buf);
        ssize_t n = cnb_registry_scan(reg->core, &cur, SCAN_BUDGET, NULL, NULL, res);
        if (n == CNB_ENOMEM && scan_buf.hit) {
            nargv[0] = argv[0];
            nargv[1] = enif_make_uint64(env, cur.pos);
            nargv[2] = argv[2];
            nargv[3] = acc;
            nargv[4] = enif_make_uint64(env, count);
            return enif_schedule_nif(env, "scan", ERL_NIF_DIRTY_JOB_CPU_BOUND, scan_dirty, 5,
                                     nargv);
        }
        if (n < 0)
            return cnr_raise(env, (int)n);
        int rc = add_items(env, res, &acc);
        if (rc)
            return cnr_raise(env, rc);
        count += (uint64_t)n;
        if (cur.done)
            return enif_make_tuple2(env, acc, cnr_atom.done);
        if (count >= max)
            return enif_make_tuple2(env, acc, enif_make_uint64(env, cur.pos));
        uint64_t t1 = now_us();
        int pct = (int)((t1 - t0) / 10); /* a time slice is about 1 ms */
        t0 = t1;
        if (enif_consume_timeslice(env, pct < 1 ? 1 : pct > 100 ? 100 : pct)) {
            nargv[0] = argv[0];
            nargv[1] = enif_make_uint64(env, cur.pos);
            nargv[2] = argv[2];
            nargv[3] = acc;
            nargv[4] = enif_make_uint64(env, count);
            return enif_schedule_nif(env, "scan", 0, scan_step, 5, nargv);
        }
    }
}

/* scan(Name, Cursor, Max) -> {[{Key, Pid, Value}], NextCursor | done}: at least
 * Max entries (unless the end comes first) from Cursor on (0 to start). Every
 * entry present for the whole walk is delivered exactly once. */
CNR_NIF(cnr_scan)
{
    (void)argc;
    ErlNifUInt64 pos, max;
    if (!enif_get_uint64(env, argv[1], &pos) || !enif_get_uint64(env, argv[2], &max) || max == 0)
        return enif_make_badarg(env);
    int tok = cnr_table_enter();
    struct cnr_reg *reg = cnr_table_find(argv[0]);
    ERL_NIF_TERM rt = 0;
    int remote = 0;
    if (reg) {
        remote = reg->mode == CNR_REMOTE;
        rt = enif_make_resource(env, reg);
    }
    cnr_table_leave(tok);
    if (!reg)
        return enif_make_badarg(env);
    if (remote)
        return cnr_atom.cnr_remote;
    ERL_NIF_TERM nargv[5] = {rt, argv[1], argv[2], enif_make_list(env, 0),
                             enif_make_uint64(env, 0)};
    return scan_step(env, 5, nargv);
}

/* ---- the change feed ---------------------------------------------------------- */

static struct cnr_reg *find_local(ErlNifEnv *env, ERL_NIF_TERM name, ERL_NIF_TERM *rt)
{
    int tok = cnr_table_enter();
    struct cnr_reg *reg = cnr_table_find(name);
    if (reg && reg->mode != CNR_REMOTE)
        *rt = enif_make_resource(env, reg); /* keeps it alive for this call */
    else
        reg = NULL;
    cnr_table_leave(tok);
    return reg;
}

/* feed_head(Name) -> Seq: the sequence number the next event will get. */
CNR_NIF(cnr_feed_head)
{
    (void)argc;
    ERL_NIF_TERM rt;
    struct cnr_reg *reg = find_local(env, argv[0], &rt);
    if (!reg)
        return enif_make_badarg(env);
    return enif_make_uint64(env, cnb_registry_feed_head(reg->core));
}

/* feed_poll(Name, Seq, Max) -> {Events, NextSeq, Missed}: the events from Seq
 * on, oldest first: {register, Key, Pid, Value}, {unregister, Key, Pid},
 * {update, Key, Pid, Value}. An event whose value did not fit the feed's slot
 * carries the value the entry has now (or is dropped if the entry is gone);
 * one whose key did not fit is counted in Missed. */
CNR_NIF(cnr_feed_poll)
{
    (void)argc;
    ErlNifUInt64 pos, max;
    ERL_NIF_TERM rt;
    if (!enif_get_uint64(env, argv[1], &pos) || !enif_get_uint64(env, argv[2], &max))
        return enif_make_badarg(env);
    struct cnr_reg *reg = find_local(env, argv[0], &rt);
    if (!reg)
        return enif_make_badarg(env);
    if (max == 0 || max > FEED_MAX)
        max = FEED_MAX;
    cnb_registry_result_t res, vres;
    cnb_registry_result_init(&res, &cnr_g.alloc);
    cnb_registry_result_init(&vres, &cnr_g.alloc);
    uint64_t missed = 0, p = pos;
    ERL_NIF_TERM list = enif_make_list(env, 0), r;
    ssize_t n = cnb_registry_feed_poll(reg->core, &p, (size_t)max, &res, &missed);
    if (n < 0) {
        r = cnr_raise(env, (int)n);
        goto out;
    }
    for (size_t i = res.n; i-- > 0;) {
        const cnb_registry_item_t *it = &res.items[i];
        ERL_NIF_TERM k, pid, v, ev;
        const unsigned char *vp;
        size_t vl;
        int use = cnb_regop_feed_value(reg->core, it, &vres, &vp, &vl);
        if (use <= 0 || !cnr_decode(env, it->key, it->key_len, &k) ||
            !CNR_PID_MAKE(env, &it->owner, &pid)) {
            missed += use != 0; /* an entry gone since is no event */
            continue;
        }
        if (it->event == CNB_REG_EV_UNREGISTER) {
            ev = enif_make_tuple3(env, cnr_atom.unregister, k, pid);
        } else {
            if (!cnr_decode(env, vp, vl, &v)) {
                missed++;
                continue;
            }
            ev = enif_make_tuple4(env, it->event == CNB_REG_EV_REGISTER ? cnr_atom.register_
                                                                        : cnr_atom.update,
                                  k, pid, v);
        }
        list = enif_make_list_cell(env, ev, list);
    }
    r = enif_make_tuple3(env, list, enif_make_uint64(env, p), enif_make_uint64(env, missed));
out:
    cnb_registry_result_free(&res);
    cnb_registry_result_free(&vres);
    return r;
}
