/* registry_serve.c: the requests the C node's cnode_registry worker answers
 * (protocol in registry_worker.h). A table of requests, by name and number of
 * arguments: the worker's own (info, attach, detach, scan, feed_head,
 * feed_poll) are here; the registry operations are core's table
 * (core/registry_ops.c, which the NIF runs too), so this file only takes their
 * arguments off the wire and writes their outcome as ETF: a remote attacher
 * gets the answers and error atoms a local one gets, a read's failure as
 * {error, {cnode_registry, Reason}}, which cnode_registry_attach raises.
 * Tests: tests/integration/nif_tests.erl (remote_mode_same_results,
 * remote_mode_same_errors). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "registry_worker_int.h"

#define SCAN_BUDGET 256
#define MAX_SCAN 10000
#define MAX_FEED 1024

/* A request being read: buf[0..len), the next term at i. */
struct req {
    const char *buf;
    size_t len;
    int i;
};

/* ---- arguments off the wire --------------------------------------------------------- */

/* The term at r->i, canonicalised into c; r->i moves past it. */
static int take_term(struct req *r, struct cnb__canon *c)
{
    int s = r->i;
    if (ei_skip_term(r->buf, &r->i) < 0)
        return CNB_EMALFORMED;
    return cnb__canon(r->buf + s, (size_t)(r->i - s), c);
}

static int take_pid(struct req *r, erlang_pid *e, cnb_pid_t *p)
{
    if (ei_decode_pid(r->buf, &r->i, e) < 0)
        return CNB_EMALFORMED;
    return cnb_registry_pid_from_ei(e, p);
}

static int take_u64(struct req *r, uint64_t *v)
{
    unsigned long long u;
    if (ei_decode_ulonglong(r->buf, &r->i, &u) < 0)
        return CNB_EMALFORMED;
    *v = (uint64_t)u;
    return 0;
}

/* A table operation's arguments with the buffers they live in. */
struct wire_args {
    cnb_regop_args_t a;
    struct cnb__canon k, v;
    int has_k, has_v;
    struct cnb__canon *vals; /* 'L' */
    cnb_regop_term_t *terms;
    size_t nvals;
    erlang_pid pid; /* 'O', 'P' as ei has it */
};

static void args_free(struct wire_args *d)
{
    if (d->has_k)
        cnb__canon_free(&d->k);
    if (d->has_v)
        cnb__canon_free(&d->v);
    for (size_t j = 0; j < d->nvals; j++)
        cnb__canon_free(&d->vals[j]);
    free(d->vals);
    free(d->terms);
}

/* 'L': a proper list of values. A list of small integers comes as a string:
 * each is then 131 97 N. */
static int take_values(struct req *r, struct wire_args *d)
{
    int type, size, n;
    if (ei_get_type(r->buf, &r->i, &type, &size) < 0)
        return CNB_EMALFORMED;
    char *str = NULL;
    if (type == ERL_STRING_EXT) {
        if (!(str = malloc((size_t)size + 1)))
            return CNB_ENOMEM;
        if (ei_decode_string(r->buf, &r->i, str) < 0) {
            free(str);
            return CNB_EMALFORMED;
        }
        n = size;
    } else if (ei_decode_list_header(r->buf, &r->i, &n) < 0 || (size_t)n > r->len) {
        return CNB_EMALFORMED; /* (each element takes a byte at least) */
    }
    int rc = 0;
    if (n > 0 && (!(d->vals = calloc((size_t)n, sizeof *d->vals)) ||
                  !(d->terms = calloc((size_t)n, sizeof *d->terms))))
        rc = CNB_ENOMEM;
    for (int j = 0; j < n && rc == 0; j++) {
        struct cnb__canon *c = &d->vals[j];
        if (str) {
            c->p = c->inl;
            c->inl[0] = 131;
            c->inl[1] = 97;
            c->inl[2] = (unsigned char)str[j];
            c->len = 3;
        } else if ((rc = take_term(r, c))) {
            break;
        }
        d->terms[j] = (cnb_regop_term_t){c->p, c->len};
        d->nvals++;
    }
    int tail; /* a proper list ends in [] (a string needs no tail) */
    if (rc == 0 && !str && n > 0 && (ei_decode_list_header(r->buf, &r->i, &tail) < 0 || tail))
        rc = CNB_EMALFORMED;
    free(str);
    d->a.values = d->terms;
    d->a.nvalues = d->nvals;
    return rc;
}

/* Takes op's arguments (its letters, cnb_registry_ops.h) off the wire.
 * Returns 0, or a code for cnb_regop_bad_term. */
static int args_take(int op, struct req *r, struct wire_args *d)
{
    int rc = 0;
    for (const char *l = cnb_regop_table[op].args; *l && rc == 0; l++) {
        switch (*l) {
        case 'K':
        case 'M':
            rc = take_term(r, &d->k);
            d->has_k = rc == 0;
            d->a.key = (cnb_regop_term_t){d->k.p, d->k.len};
            break;
        case 'V':
            rc = take_term(r, &d->v);
            d->has_v = rc == 0;
            d->a.value = (cnb_regop_term_t){d->v.p, d->v.len};
            break;
        case 'O':
        case 'P':
            rc = take_pid(r, &d->pid, &d->a.pid);
            break;
        case 'L':
            rc = take_values(r, d);
            break;
        }
    }
    return rc;
}

/* ---- answers as ETF ------------------------------------------------------------------- */

/* The outcome (cnb_registry_ops.h says which term). Returns 0, -1 (ei could
 * not grow x) or CNB_ECORRUPT (the result's bytes: cnb__put_canon). */
static int put_answer(cnb_proc_t *self, const cnb_regop_out_t *o,
                      const cnb_registry_result_t *res, ei_x_buff *x)
{
    switch (o->answer) {
    case CNB_ANS_OK:
        return ei_x_encode_atom(x, "ok") < 0 ? -1 : 0;
    case CNB_ANS_ERROR:
        return ei_x_encode_atom(x, "error") < 0 ? -1 : 0;
    case CNB_ANS_COUNT:
        return ei_x_encode_ulonglong(x, (unsigned long long)o->count) < 0 ? -1 : 0;
    case CNB_ANS_ITEMS:
        return cnb__put_items(x, res, o->shape);
    case CNB_ANS_META:
        if (ei_x_encode_tuple_header(x, 2) < 0 || ei_x_encode_atom(x, "ok") < 0)
            return -1;
        return cnb__put_canon(x, res->items[0].value, res->items[0].value_len);
    case CNB_ANS_REGISTERED:
        return ei_x_encode_tuple_header(x, 2) < 0 || ei_x_encode_atom(x, "ok") < 0 ||
                       ei_x_encode_pid(x, cnb_self(self)) < 0
                   ? -1
                   : 0;
    case CNB_ANS_TAKEN:
        if (ei_x_encode_tuple_header(x, 2) < 0 || ei_x_encode_atom(x, "error") < 0 ||
            ei_x_encode_tuple_header(x, 2) < 0 || ei_x_encode_atom(x, "already_registered") < 0)
            return -1;
        return cnb__put_pid(x, &o->holder);
    case CNB_ANS_FAIL:
        return cnb__put_error(x, cnb_erratom(o->code));
    case CNB_ANS_RAISE:
        return cnb__put_raise(x, cnb_erratom(o->code));
    default:
        return cnb__put_error(x, "badarg");
    }
}

/* An operation of core's table. */
static int table_op(cnb_proc_t *self, cnb__rw_t *w, int op, struct req *r, ei_x_buff *x)
{
    struct wire_args d;
    memset(&d, 0, sizeof d);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    cnb_regop_out_t o;
    int rc = args_take(op, r, &d);
    if (rc) {
        cnb_regop_bad_term(op, rc, &o);
    } else {
        cnb_regop_ctx_t c = {w->reg, w->kind, &res, NULL, NULL};
        cnb_regop_run(&c, op, &d.a, &o);
    }
    if (op == CNB_REGOP_REGISTER && o.answer == CNB_ANS_REGISTERED)
        cnb__rw_watch_owner(self, w, &d.pid);
    int at = x->index;
    rc = put_answer(self, &o, &res, x);
    if (rc == CNB_ECORRUPT) { /* raised, as the NIF does for such bytes */
        x->index = at;
        rc = cnb__put_raise(x, cnb_erratom(rc));
    }
    rc = rc ? CNB_ENOMEM : 0;
    args_free(&d);
    cnb_registry_result_free(&res);
    return rc;
}

/* ---- the worker's own requests ---------------------------------------------------------- */

/* {ok, Info} */
static int put_info(cnb__rw_t *w, ei_x_buff *x)
{
    cnb_registry_info_t info;
    cnb_registry_info(w->reg, &info);
    int bad = ei_x_encode_tuple_header(x, 2) < 0 || ei_x_encode_atom(x, "ok") < 0 ||
              ei_x_encode_map_header(x, 6) < 0 || ei_x_encode_atom(x, "path") < 0 ||
              ei_x_encode_binary(x, w->path, (long)strlen(w->path)) < 0 ||
              ei_x_encode_atom(x, "kind") < 0 ||
              ei_x_encode_atom(x, info.kind == CNB_REG_DUPLICATE ? "duplicate" : "unique") < 0 ||
              ei_x_encode_atom(x, "host") < 0 ||
              ei_x_encode_binary(x, w->host, (long)strlen(w->host)) < 0 ||
              ei_x_encode_atom(x, "node") < 0 ||
              ei_x_encode_atom(x, cnb_node_name(w->node)) < 0 ||
              ei_x_encode_atom(x, "creation") < 0 ||
              ei_x_encode_ulong(x, cnb_node_creation(w->node)) < 0 ||
              ei_x_encode_atom(x, "os_pid") < 0 || ei_x_encode_long(x, (long)getpid()) < 0;
    return bad ? CNB_ENOMEM : 0;
}

static int op_info(cnb_proc_t *self, cnb__rw_t *w, struct req *r, ei_x_buff *x)
{
    (void)self;
    (void)r;
    return put_info(w, x);
}

static int op_attach(cnb_proc_t *self, cnb__rw_t *w, struct req *r, ei_x_buff *x)
{
    erlang_pid e;
    if (ei_decode_pid(r->buf, &r->i, &e) < 0)
        return CNB_EMALFORMED;
    int rc = cnb__rw_attach(self, w, &e);
    if (rc)
        return cnb__put_error(x, cnb_erratom(rc)) ? CNB_ENOMEM : 0;
    return put_info(w, x);
}

static int op_detach(cnb_proc_t *self, cnb__rw_t *w, struct req *r, ei_x_buff *x)
{
    erlang_pid e;
    if (ei_decode_pid(r->buf, &r->i, &e) < 0)
        return CNB_EMALFORMED;
    cnb__rw_detach(self, w, &e);
    return ei_x_encode_atom(x, "ok") < 0 ? CNB_ENOMEM : 0;
}

static int op_feed_head(cnb_proc_t *self, cnb__rw_t *w, struct req *r, ei_x_buff *x)
{
    (void)self;
    (void)r;
    uint64_t head = cnb_registry_feed_head(w->reg);
    return ei_x_encode_ulonglong(x, (unsigned long long)head) < 0 ? CNB_ENOMEM : 0;
}

/* {Elements, Tail...}: a list whose elements were encoded into items. */
static int put_list(ei_x_buff *x, const ei_x_buff *items, size_t count)
{
    return (count && ei_x_encode_list_header(x, (long)count) < 0) ||
                   ei_x_append_buf(x, items->buff, items->index) < 0 ||
                   ei_x_encode_empty_list(x) < 0
               ? -1
               : 0;
}

/* {scan, Cursor, Max} -> {[{Key, Pid, Value}], NextCursor | done}. */
static int op_scan(cnb_proc_t *self, cnb__rw_t *w, struct req *r, ei_x_buff *x)
{
    (void)self;
    uint64_t pos, max;
    if (take_u64(r, &pos) || take_u64(r, &max))
        return CNB_EMALFORMED;
    if (max == 0 || max > MAX_SCAN)
        max = MAX_SCAN;
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    cnb_registry_cursor_t cur = {pos, 0};
    int rc = 0;
    ei_x_buff items; /* the list's elements, batch after batch */
    if (ei_x_new(&items) < 0)
        return CNB_ENOMEM;
    size_t count = 0;
    while (!cur.done && count < max && rc == 0) {
        ssize_t n = cnb_registry_scan(w->reg, &cur, SCAN_BUDGET, NULL, NULL, &res);
        if (n < 0) {
            rc = (int)n;
            break;
        }
        for (size_t j = 0; j < res.n && rc == 0; j++) {
            const cnb_registry_item_t *it = &res.items[j];
            rc = ei_x_encode_tuple_header(&items, 3) < 0 ? CNB_ENOMEM
                                                         : cnb__put_canon(&items, it->key, it->key_len);
            if (!rc)
                rc = cnb__put_owner(&items, &it->owner);
            if (!rc)
                rc = cnb__put_canon(&items, it->value, it->value_len);
        }
        count += res.n;
    }
    int bad;
    if (rc)
        bad = cnb__put_raise(x, cnb_erratom(rc));
    else
        bad = ei_x_encode_tuple_header(x, 2) < 0 || put_list(x, &items, count) ||
              (cur.done ? ei_x_encode_atom(x, "done")
                        : ei_x_encode_ulonglong(x, (unsigned long long)cur.pos)) < 0;
    ei_x_free(&items);
    cnb_registry_result_free(&res);
    return bad ? CNB_ENOMEM : 0;
}

/* One feed event into evs. Returns 1 (written), 0 (skipped), -1 (missed: also
 * an event whose bytes are no term, nothing of it written) or CNB_ENOMEM. */
static int put_event(cnb__rw_t *w, const cnb_registry_item_t *it, cnb_registry_result_t *vres,
                     ei_x_buff *evs)
{
    const unsigned char *vp;
    size_t vl;
    int use = cnb_regop_feed_value(w->reg, it, vres, &vp, &vl);
    if (use <= 0)
        return use;
    int at = evs->index, unreg = it->event == CNB_REG_EV_UNREGISTER;
    const char *what = unreg ? "unregister" : it->event == CNB_REG_EV_REGISTER ? "register" : "update";
    int rc = ei_x_encode_tuple_header(evs, unreg ? 3 : 4) < 0 || ei_x_encode_atom(evs, what) < 0
                 ? CNB_ENOMEM
                 : cnb__put_canon(evs, it->key, it->key_len);
    if (!rc)
        rc = cnb__put_owner(evs, &it->owner);
    if (!rc && !unreg)
        rc = cnb__put_canon(evs, vp, vl);
    if (rc == CNB_ECORRUPT) {
        evs->index = at;
        return -1;
    }
    return rc ? CNB_ENOMEM : 1;
}

/* {feed_poll, Seq, Max} -> {Events, NextSeq, Missed}. */
static int op_feed_poll(cnb_proc_t *self, cnb__rw_t *w, struct req *r, ei_x_buff *x)
{
    (void)self;
    uint64_t pos, max, missed = 0;
    if (take_u64(r, &pos) || take_u64(r, &max))
        return CNB_EMALFORMED;
    if (max == 0 || max > MAX_FEED)
        max = MAX_FEED;
    cnb_registry_result_t res, vres;
    cnb_registry_result_init(&res, NULL);
    cnb_registry_result_init(&vres, NULL);
    ei_x_buff evs;
    int bad = ei_x_new(&evs) < 0;
    ssize_t n = bad ? 0 : cnb_registry_feed_poll(w->reg, &pos, (size_t)max, &res, &missed);
    size_t count = 0;
    for (size_t j = 0; n >= 0 && j < res.n && !bad; j++) {
        int put = put_event(w, &res.items[j], &vres, &evs);
        bad = put == CNB_ENOMEM;
        missed += put == -1;
        count += put == 1;
    }
    if (!bad && n < 0)
        bad = cnb__put_raise(x, cnb_erratom((int)n));
    else if (!bad)
        bad = ei_x_encode_tuple_header(x, 3) < 0 || put_list(x, &evs, count) ||
              ei_x_encode_ulonglong(x, (unsigned long long)pos) < 0 ||
              ei_x_encode_ulonglong(x, (unsigned long long)missed) < 0;
    ei_x_free(&evs);
    cnb_registry_result_free(&res);
    cnb_registry_result_free(&vres);
    return bad ? CNB_ENOMEM : 0;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

static const struct own_op {
    const char *name;
    size_t nargs;
    int (*fn)(cnb_proc_t *self, cnb__rw_t *w, struct req *r, ei_x_buff *x);
} own_ops[] = {
    {"info", 0, op_info},           {"attach", 1, op_attach},     {"detach", 1, op_detach},
    {"scan", 2, op_scan},           {"feed_head", 0, op_feed_head}, {"feed_poll", 2, op_feed_poll},
};

/* Answers one request {Op, Args...} (or a bare Op) into x. Returns 0, CNB_ENOMEM,
 * or CNB_EMALFORMED / CNB_EINVAL for a request that does not parse or names no
 * operation (the caller then answers {error, badarg}). */
static int handle(cnb_proc_t *self, cnb__rw_t *w, struct req *r, ei_x_buff *x)
{
    int ver, arity = 0, type, size;
    char op[MAXATOMLEN_UTF8];
    if (ei_decode_version(r->buf, &r->i, &ver) < 0 ||
        ei_get_type(r->buf, &r->i, &type, &size) < 0)
        return CNB_EMALFORMED;
    if ((type == ERL_SMALL_TUPLE_EXT || type == ERL_LARGE_TUPLE_EXT) &&
        (ei_decode_tuple_header(r->buf, &r->i, &arity) < 0 || arity < 1))
        return CNB_EMALFORMED;
    if (ei_decode_atom(r->buf, &r->i, op) < 0)
        return CNB_EMALFORMED;
    size_t nargs = arity ? (size_t)arity - 1 : 0;
    for (size_t j = 0; j < sizeof own_ops / sizeof *own_ops; j++)
        if (own_ops[j].nargs == nargs && strcmp(own_ops[j].name, op) == 0)
            return own_ops[j].fn(self, w, r, x);
    int t = cnb_regop_find(op, nargs);
    return t < 0 ? CNB_EINVAL : table_op(self, w, t, r, x);
}

int cnb__rw_call(cnb_proc_t *self, void *state, const char *req, size_t len,
                 const cnb_from_t *from, ei_x_buff *reply)
{
    (void)from;
    cnb__rw_t *w = state;
    struct req r = {req, len, 0};
    ei_x_buff x;
    int rc = ei_x_new(&x) < 0 ? CNB_ENOMEM : handle(self, w, &r, &x);
    int index = reply->index;
    if (rc == 0 && ei_x_append_buf(reply, x.buff, x.index) < 0)
        rc = CNB_ENOMEM;
    if (rc) {
        reply->index = index;
        if (cnb__put_error(reply, rc == CNB_ENOMEM ? cnb_erratom(rc) : "badarg"))
            cnb_node_log(w->node, CNB_LOG_WARNING,
                         "cnode_registry: out of memory: a request is not answered");
    }
    ei_x_free(&x);
    return CNB_REPLY;
}
