/* registry_ops.c: the registry's operations as BEAM code sees them, once for the
 * NIF and the C node's registry worker (cnb_registry_ops.h): the table of
 * operations, argument checks, the core call and the outcome. Tests:
 * tests/unit/test_registry_ops.c, tests/integration/nif_tests.erl. */
#include <string.h>

#include "cnb_registry_ops.h"
#include "term_read.h"

const cnb_regop_desc_t cnb_regop_table[CNB_REGOP_N] = {
    [CNB_REGOP_REGISTER] = {"register", "KOV", 0},
    [CNB_REGOP_UNREGISTER] = {"unregister", "KO", 0},
    [CNB_REGOP_UNREGISTER_VALUES] = {"unregister_values", "KOL", 0},
    [CNB_REGOP_UPDATE_VALUE] = {"update_value", "KOV", 0},
    [CNB_REGOP_LOOKUP] = {"lookup", "K", 1},
    [CNB_REGOP_VALUES] = {"values", "KP", 1},
    [CNB_REGOP_KEYS] = {"keys", "P", 1},
    [CNB_REGOP_COUNT] = {"count", "", 1},
    [CNB_REGOP_META] = {"meta", "M", 1},
    [CNB_REGOP_PUT_META] = {"put_meta", "MV", 0},
    [CNB_REGOP_DELETE_META] = {"delete_meta", "M", 0},
};

int cnb_regop_find(const char *name, size_t nargs)
{
    for (int op = 0; op < CNB_REGOP_N; op++)
        if (strcmp(cnb_regop_table[op].name, name) == 0 &&
            strlen(cnb_regop_table[op].args) == nargs)
            return op;
    return -1;
}

/* As Elixir's Registry: a dead local owner whose exit is still being processed
 * does not hold the key; its entry gives way at most this many times. */
#define MAX_DEAD_RETRIES 8

static void answer(cnb_regop_out_t *out, int ans)
{
    out->answer = ans;
}

static void fail(cnb_regop_out_t *out, int read, int code)
{
    out->answer = read ? CNB_ANS_RAISE : CNB_ANS_FAIL;
    out->code = code;
}

/* Meta keys are atoms or tuples (Elixir's Registry.meta/2). */
static int meta_key_ok(const cnb_regop_term_t *k)
{
    const unsigned char *p = k->p;
    size_t len = k->len;
    if (len > 0 && p[0] == CNB__TAG_VERSION) {
        p++;
        len--;
    }
    return len > 0 && (cnb__term_is_atom_tag(p[0]) || p[0] == CNB__TAG_SMALL_TUPLE ||
                       p[0] == CNB__TAG_LARGE_TUPLE);
}

static void op_register(const cnb_regop_ctx_t *c, const cnb_regop_args_t *a,
                        cnb_regop_out_t *out)
{
    for (int tries = 0;; tries++) {
        int rc = cnb_registry_register(c->reg, a->key.p, a->key.len, &a->pid, a->value.p,
                                       a->value.len, &out->holder);
        if (rc == 0) {
            answer(out, CNB_ANS_REGISTERED);
            return;
        }
        if (rc != CNB_EEXIST) {
            fail(out, 0, rc);
            return;
        }
        if (tries < MAX_DEAD_RETRIES && c->holder_dead &&
            c->holder_dead(c->hctx, &out->holder, &a->pid)) {
            (void)cnb_registry_unregister(c->reg, a->key.p, a->key.len, &out->holder);
            continue;
        }
        answer(out, CNB_ANS_TAKEN);
        return;
    }
}

/* unregister_values: whether an entry's value is one of the arguments. */
static int value_in(void *ctx, const void *value, size_t len)
{
    const cnb_regop_args_t *a = ctx;
    for (size_t i = 0; i < a->nvalues; i++)
        if (a->values[i].len == len && memcmp(a->values[i].p, value, len) == 0)
            return 1;
    return 0;
}

/* The end of a read that lists items. */
static void items(const cnb_regop_ctx_t *c, ssize_t n, int shape, cnb_regop_out_t *out)
{
    if (n == CNB_ETOOBIG) { /* a key longer than any the registry holds */
        c->res->n = 0;
        n = 0;
    }
    if (n < 0) {
        fail(out, 1, (int)n);
        return;
    }
    out->answer = CNB_ANS_ITEMS;
    out->shape = shape;
}

/* Writes other than register. */
static void op_write(const cnb_regop_ctx_t *c, int op, const cnb_regop_args_t *a,
                     cnb_regop_out_t *out)
{
    const cnb_regop_term_t *k = &a->key, *v = &a->value;
    ssize_t n = 0;
    switch (op) {
    case CNB_REGOP_UNREGISTER:
        n = cnb_registry_unregister(c->reg, k->p, k->len, &a->pid);
        if (n == CNB_ETOOBIG) /* no entry can have such a key */
            n = 0;
        break;
    case CNB_REGOP_UNREGISTER_VALUES:
        if (a->nvalues)
            n = cnb_registry_unregister_match(c->reg, k->p, k->len, &a->pid, value_in,
                                              (void *)a);
        break;
    case CNB_REGOP_UPDATE_VALUE:
        if (c->kind != CNB_REG_UNIQUE) {
            answer(out, CNB_ANS_BADARG);
            return;
        }
        n = cnb_registry_update_value(c->reg, k->p, k->len, &a->pid, v->p, v->len);
        if (n == CNB_ENOENT) {
            answer(out, CNB_ANS_ERROR);
            return;
        }
        break;
    case CNB_REGOP_PUT_META:
        n = cnb_registry_meta_put(c->reg, k->p, k->len, v->p, v->len);
        break;
    case CNB_REGOP_DELETE_META:
        n = cnb_registry_meta_delete(c->reg, k->p, k->len);
        if (n == CNB_ENOENT || n == CNB_ETOOBIG)
            n = 0;
        break;
    }
    if (n < 0) {
        fail(out, 0, (int)n);
        return;
    }
    out->count = (uint64_t)n;
    answer(out, op == CNB_REGOP_UNREGISTER_VALUES ? CNB_ANS_COUNT : CNB_ANS_OK);
}

static void op_meta(const cnb_regop_ctx_t *c, const cnb_regop_args_t *a, cnb_regop_out_t *out)
{
    ssize_t n = cnb_registry_meta_get(c->reg, a->key.p, a->key.len, c->res);
    if (n == CNB_ENOENT || n == CNB_ETOOBIG || n == 0)
        answer(out, CNB_ANS_ERROR);
    else if (n < 0)
        fail(out, 1, (int)n);
    else
        answer(out, CNB_ANS_META);
}

void cnb_regop_run(const cnb_regop_ctx_t *c, int op, const cnb_regop_args_t *a,
                   cnb_regop_out_t *out)
{
    const cnb_regop_term_t *k = &a->key;
    out->count = 0;
    out->code = 0;
    if (op < 0 || op >= CNB_REGOP_N ||
        (strchr(cnb_regop_table[op].args, 'M') && !meta_key_ok(k))) {
        answer(out, CNB_ANS_BADARG);
        return;
    }
    switch (op) {
    case CNB_REGOP_REGISTER:
        op_register(c, a, out);
        break;
    case CNB_REGOP_LOOKUP:
        items(c, cnb_registry_lookup(c->reg, k->p, k->len, c->res), CNB_SHAPE_PID_VALUE, out);
        break;
    case CNB_REGOP_VALUES:
        items(c, cnb_registry_values(c->reg, k->p, k->len, &a->pid, c->res), CNB_SHAPE_VALUE,
              out);
        break;
    case CNB_REGOP_KEYS:
        items(c, cnb_registry_keys(c->reg, &a->pid, c->res), CNB_SHAPE_KEY, out);
        break;
    case CNB_REGOP_COUNT:
        out->count = cnb_registry_count(c->reg);
        answer(out, CNB_ANS_COUNT);
        break;
    case CNB_REGOP_META:
        op_meta(c, a, out);
        break;
    default:
        op_write(c, op, a, out);
        break;
    }
}

void cnb_regop_bad_term(int op, int rc, cnb_regop_out_t *out)
{
    if (rc == CNB_ENOMEM)
        fail(out, op >= 0 && op < CNB_REGOP_N && cnb_regop_table[op].read, rc);
    else
        answer(out, CNB_ANS_BADARG);
}

int cnb_regop_feed_value(struct cnb_registry *reg, const cnb_registry_item_t *it,
                         cnb_registry_result_t *vres, const unsigned char **vp, size_t *vl)
{
    if (!it->key || (it->flags & CNB_REG_EVF_KEY_OMITTED))
        return -1;
    *vp = it->value;
    *vl = it->value_len;
    if (it->event == CNB_REG_EV_UNREGISTER || it->value)
        return 1;
    /* The value did not fit the slot: the entry's current one, if any. */
    cnb_pid_t owner;
    cnb_registry_owner_pid(&it->owner, &owner);
    if (cnb_registry_values(reg, it->key, it->key_len, &owner, vres) <= 0)
        return 0;
    *vp = vres->items[0].value;
    *vl = vres->items[0].value_len;
    return 1;
}
