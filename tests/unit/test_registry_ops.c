/* test_registry_ops.c: the registry operation layer both the NIF and the C
 * node's worker run (core/registry_ops.c) and the one table of error atoms
 * (cnb_erratom, core/common.c). The servers' answers on the wire and in the
 * VM: tests/integration/nif_tests.erl. */
#include <string.h>

#include <check.h>
#include <ei.h>

#include "check_run.h"
#include "cnb_registry_ops.h"
#include "cnb_term.h"

/* Canonical bytes of the term ei encoded into x. */
static cnb_regop_term_t canon(ei_x_buff *x, unsigned char *buf, size_t cap)
{
    ssize_t n = cnb_term_canonical(x->buff, (size_t)x->index, buf, cap, NULL);
    ck_assert_int_gt(n, 0);
    return (cnb_regop_term_t){buf, (size_t)n};
}

static cnb_regop_term_t atom(const char *a, unsigned char *buf, size_t cap)
{
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_atom(&x, a);
    cnb_regop_term_t t = canon(&x, buf, cap);
    ei_x_free(&x);
    return t;
}

static cnb_regop_term_t integer(long v, unsigned char *buf, size_t cap)
{
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_long(&x, v);
    cnb_regop_term_t t = canon(&x, buf, cap);
    ei_x_free(&x);
    return t;
}

static struct cnb_registry *open_private(int kind)
{
    cnb_registry_opts_t o;
    memset(&o, 0, sizeof o);
    o.flags = CNB_REG_CREATE;
    o.kind = kind;
    struct cnb_registry *r;
    ck_assert_int_eq(cnb_registry_open(&o, &r), 0);
    return r;
}

static void set_pid(cnb_pid_t *p, uint32_t num)
{
    memset(p, 0, sizeof *p);
    strcpy(p->node, "a@host");
    p->num = num;
    p->creation = 1;
}

/* Arguments key k, value v (in the caller's buffers), owner number num. */
static void set_args(cnb_regop_args_t *a, unsigned char *kb, unsigned char *vb, long v,
                     uint32_t num)
{
    memset(a, 0, sizeof *a);
    a->key = atom("k", kb, 64);
    a->value = integer(v, vb, 64);
    set_pid(&a->pid, num);
}

START_TEST(error_atoms_one_per_code)
{
    ck_assert_str_eq(cnb_erratom(CNB_ENOENT), "not_found");
    ck_assert_str_eq(cnb_erratom(CNB_ETOOBIG), "too_big");
    ck_assert_str_eq(cnb_erratom(CNB_ECORRUPT), "corrupt");
    ck_assert_str_eq(cnb_erratom(CNB_EEXIST), "exists");
    ck_assert_str_eq(cnb_erratom(0), "unknown");
    ck_assert_str_eq(cnb_erratom(-1000), "unknown");
    for (int i = 1; i <= CNB_ERRNO_COUNT; i++) {
        ck_assert_str_ne(cnb_erratom(-i), "unknown");
        for (int j = 1; j < i; j++)
            ck_assert_str_ne(cnb_erratom(-i), cnb_erratom(-j));
    }
}
END_TEST

START_TEST(table_names_and_arity)
{
    ck_assert_int_eq(cnb_regop_find("register", 3), CNB_REGOP_REGISTER);
    ck_assert_int_eq(cnb_regop_find("register", 2), -1);
    ck_assert_int_eq(cnb_regop_find("count", 0), CNB_REGOP_COUNT);
    ck_assert_int_eq(cnb_regop_find("lookup_many", 1), -1);
    for (int op = 0; op < CNB_REGOP_N; op++)
        ck_assert_int_eq(cnb_regop_find(cnb_regop_table[op].name,
                                        strlen(cnb_regop_table[op].args)),
                         op);
}
END_TEST

START_TEST(outcomes)
{
    struct cnb_registry *r = open_private(CNB_REG_UNIQUE);
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    cnb_regop_ctx_t c = {r, CNB_REG_UNIQUE, &res, NULL, NULL};
    unsigned char kb[64], vb[64];
    cnb_regop_args_t a;
    set_args(&a, kb, vb, 7, 1);
    cnb_regop_out_t o;

    cnb_regop_run(&c, CNB_REGOP_REGISTER, &a, &o);
    ck_assert_int_eq(o.answer, CNB_ANS_REGISTERED);
    cnb_pid_t me = a.pid;
    set_pid(&a.pid, 2);
    cnb_regop_run(&c, CNB_REGOP_REGISTER, &a, &o);
    ck_assert_int_eq(o.answer, CNB_ANS_TAKEN);
    ck_assert_uint_eq(o.holder.num, me.num);

    cnb_regop_run(&c, CNB_REGOP_LOOKUP, &a, &o);
    ck_assert_int_eq(o.answer, CNB_ANS_ITEMS);
    ck_assert_int_eq(o.shape, CNB_SHAPE_PID_VALUE);
    ck_assert_uint_eq(res.n, 1);

    /* No entry: the atom error; a meta key that is neither atom nor tuple: badarg. */
    cnb_regop_run(&c, CNB_REGOP_UPDATE_VALUE, &a, &o);
    ck_assert_int_eq(o.answer, CNB_ANS_ERROR);
    cnb_regop_run(&c, CNB_REGOP_META, &a, &o);
    ck_assert_int_eq(o.answer, CNB_ANS_ERROR);
    unsigned char bb[64];
    cnb_regop_args_t bad = a;
    bad.key = integer(1, bb, sizeof bb);
    cnb_regop_run(&c, CNB_REGOP_PUT_META, &bad, &o);
    ck_assert_int_eq(o.answer, CNB_ANS_BADARG);
    cnb_regop_run(&c, CNB_REGOP_DELETE_META, &bad, &o);
    ck_assert_int_eq(o.answer, CNB_ANS_BADARG);

    /* Arguments that are no canonical term: bad, unless memory ran out
     * (answered by a write, raised by a read). */
    cnb_regop_bad_term(CNB_REGOP_LOOKUP, CNB_EDEPTH, &o);
    ck_assert_int_eq(o.answer, CNB_ANS_BADARG);
    cnb_regop_bad_term(CNB_REGOP_LOOKUP, CNB_ENOMEM, &o);
    ck_assert_int_eq(o.answer, CNB_ANS_RAISE);
    cnb_regop_bad_term(CNB_REGOP_REGISTER, CNB_ENOMEM, &o);
    ck_assert_int_eq(o.answer, CNB_ANS_FAIL);
    ck_assert_int_eq(o.code, CNB_ENOMEM);

    a.pid = me;
    cnb_regop_run(&c, CNB_REGOP_UNREGISTER, &a, &o);
    ck_assert_int_eq(o.answer, CNB_ANS_OK);
    ck_assert_uint_eq(o.count, 1);
    cnb_regop_run(&c, CNB_REGOP_COUNT, &a, &o);
    ck_assert_int_eq(o.answer, CNB_ANS_COUNT);
    ck_assert_uint_eq(o.count, 0);
    cnb_registry_result_free(&res);
    cnb_registry_close(r);
}
END_TEST

/* update_value is for unique registries only. */
START_TEST(update_value_on_duplicate_is_badarg)
{
    struct cnb_registry *r = open_private(CNB_REG_DUPLICATE);
    cnb_regop_ctx_t c = {r, CNB_REG_DUPLICATE, NULL, NULL, NULL};
    unsigned char kb[64], vb[64];
    cnb_regop_args_t a;
    set_args(&a, kb, vb, 1, 1);
    cnb_regop_out_t o;
    cnb_regop_run(&c, CNB_REGOP_UPDATE_VALUE, &a, &o);
    ck_assert_int_eq(o.answer, CNB_ANS_BADARG);
    cnb_registry_close(r);
}
END_TEST

static int always_dead(void *hctx, const cnb_pid_t *holder, const cnb_pid_t *me)
{
    (void)me;
    (void)holder;
    ++*(int *)hctx;
    return 1;
}

/* A holder the caller knows dead gives way. */
START_TEST(dead_holder_gives_way)
{
    struct cnb_registry *r = open_private(CNB_REG_UNIQUE);
    int asked = 0;
    cnb_regop_ctx_t c = {r, CNB_REG_UNIQUE, NULL, always_dead, &asked};
    unsigned char kb[64], vb[64];
    cnb_regop_args_t a;
    set_args(&a, kb, vb, 1, 1);
    cnb_regop_out_t o;
    cnb_regop_run(&c, CNB_REGOP_REGISTER, &a, &o);
    set_pid(&a.pid, 2);
    cnb_regop_run(&c, CNB_REGOP_REGISTER, &a, &o);
    ck_assert_int_eq(o.answer, CNB_ANS_REGISTERED);
    ck_assert_int_eq(asked, 1);
    cnb_registry_close(r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("registry_ops");
    TCase *tc = tcase_create("ops");
    tcase_add_test(tc, error_atoms_one_per_code);
    tcase_add_test(tc, table_names_and_arity);
    tcase_add_test(tc, outcomes);
    tcase_add_test(tc, update_value_on_duplicate_is_badarg);
    tcase_add_test(tc, dead_holder_gives_way);
    suite_add_tcase(s, tc);
    return cnb_check_run(s);
}
