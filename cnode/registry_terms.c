/* registry_terms.c: the registry in ETF, for the C node: pids between ei and
 * the registry, terms off the wire made canonical, results written as terms,
 * and the helpers C code of the program registers terms with
 * (registry_worker.h). Tests: tests/integration/nif_tests.erl (the demo
 * workers register and look up through these). */
#include <stdlib.h>
#include <string.h>

#include "cnb_term.h"
#include "registry_worker_int.h"

int cnb_registry_pid_from_ei(const erlang_pid *in, cnb_pid_t *out)
{
    size_t n = strnlen(in->node, sizeof in->node);
    if (n == 0 || n >= sizeof out->node)
        return CNB_EINVAL;
    memcpy(out->node, in->node, n + 1);
    out->num = in->num;
    out->serial = in->serial;
    out->creation = in->creation;
    return 0;
}

void cnb_registry_pid_to_ei(const cnb_pid_t *in, erlang_pid *out)
{
    memset(out, 0, sizeof *out);
    size_t n = strnlen(in->node, sizeof in->node - 1);
    memcpy(out->node, in->node, n);
    out->node[n] = 0;
    out->num = in->num;
    out->serial = in->serial;
    out->creation = in->creation;
}

int cnb__canon(const char *term, size_t len, struct cnb__canon *c)
{
    c->p = c->inl;
    ssize_t n = cnb_term_canonical(term, len, c->inl, sizeof c->inl, NULL);
    if (n == CNB_ENOSPC) {
        void *p;
        size_t l;
        int rc = cnb_term_canonical_alloc(term, len, &p, &l, NULL);
        if (rc)
            return rc;
        c->p = p;
        c->len = l;
        return 0;
    }
    if (n < 0)
        return (int)n;
    c->len = (size_t)n;
    return 0;
}

void cnb__canon_free(struct cnb__canon *c)
{
    if (c->p != c->inl)
        free(c->p);
    c->p = c->inl;
}

int cnb_registry_register_term(struct cnb_registry *reg, const erlang_pid *owner,
                               const char *key, size_t key_len, const char *value,
                               size_t value_len)
{
    cnb_pid_t o;
    struct cnb__canon k, v;
    int rc = cnb_registry_pid_from_ei(owner, &o);
    if (rc)
        return rc;
    if ((rc = cnb__canon(key, key_len, &k)))
        return rc;
    if ((rc = cnb__canon(value, value_len, &v)) == 0) {
        rc = cnb_registry_register(reg, k.p, k.len, &o, v.p, v.len, NULL);
        cnb__canon_free(&v);
    }
    cnb__canon_free(&k);
    return rc;
}

ssize_t cnb_registry_unregister_term(struct cnb_registry *reg, const erlang_pid *owner,
                                     const char *key, size_t key_len)
{
    cnb_pid_t o;
    struct cnb__canon k;
    int rc = cnb_registry_pid_from_ei(owner, &o);
    if (rc)
        return rc;
    if ((rc = cnb__canon(key, key_len, &k)))
        return rc;
    ssize_t n = cnb_registry_unregister(reg, k.p, k.len, &o);
    cnb__canon_free(&k);
    return n;
}

/* ---- results as terms ------------------------------------------------------------ */

/* Bytes that came out of the segment (a result's copies of keys, values and
 * owners: anyone's memory) go out only as one whole term that core's reader
 * takes, as a peer's binary_to_term does: a term a peer's VM cannot decode
 * makes it drop the connection, and everything else on it. */
static int sound(const void *p, size_t len)
{
    return len > 0 && cnb_term_canonical(p, len, NULL, 0, NULL) >= 0;
}

int cnb__put_canon(ei_x_buff *x, const unsigned char *p, size_t len)
{
    if (!sound(p, len))
        return CNB_ECORRUPT;
    if (p[0] == 131) {
        p++;
        len--;
    }
    return ei_x_append_buf(x, (const char *)p, (int)len) < 0 ? CNB_ENOMEM : 0;
}

int cnb__put_pid(ei_x_buff *x, const cnb_pid_t *p)
{
    erlang_pid e;
    /* NEW_PID_EXT: a tag, the node atom (3 + at most 255 * 2 bytes when ei
     * widens Latin-1; cnb_registry_pid_to_ei keeps at most 255), 12 bytes. */
    char buf[1 + 3 + 255 * 2 + 12];
    int n = 0;
    cnb_registry_pid_to_ei(p, &e);
    if (ei_encode_pid(buf, &n, &e) < 0 || !sound(buf, (size_t)n))
        return CNB_ECORRUPT; /* a node name that is no atom's text */
    return ei_x_append_buf(x, buf, n) < 0 ? CNB_ENOMEM : 0;
}

int cnb__put_owner(ei_x_buff *x, const cnb_registry_owner_t *o)
{
    cnb_pid_t p;
    cnb_registry_owner_pid(o, &p); /* a private copy: the name is the segment's */
    return cnb__put_pid(x, &p);
}

int cnb__put_items(ei_x_buff *x, const cnb_registry_result_t *res, int shape)
{
    if (res->n && ei_x_encode_list_header(x, (long)res->n) < 0)
        return CNB_ENOMEM;
    int rc = 0;
    for (size_t i = res->n; i-- > 0 && !rc;) {
        const cnb_registry_item_t *it = &res->items[i];
        switch (shape) {
        case CNB_SHAPE_PID_VALUE:
            rc = ei_x_encode_tuple_header(x, 2) < 0 ? CNB_ENOMEM : cnb__put_owner(x, &it->owner);
            if (!rc)
                rc = cnb__put_canon(x, it->value, it->value_len);
            break;
        case CNB_SHAPE_VALUE:
            rc = cnb__put_canon(x, it->value, it->value_len);
            break;
        default:
            rc = cnb__put_canon(x, it->key, it->key_len);
            break;
        }
    }
    return rc ? rc : ei_x_encode_empty_list(x) < 0 ? CNB_ENOMEM : 0;
}

int cnb__put_error(ei_x_buff *x, const char *why)
{
    return ei_x_encode_tuple_header(x, 2) < 0 || ei_x_encode_atom(x, "error") < 0 ||
                   ei_x_encode_atom(x, why) < 0
               ? -1
               : 0;
}

int cnb__put_raise(ei_x_buff *x, const char *why)
{
    return ei_x_encode_tuple_header(x, 2) < 0 || ei_x_encode_atom(x, "error") < 0 ||
                   ei_x_encode_tuple_header(x, 2) < 0 ||
                   ei_x_encode_atom(x, "cnode_registry") < 0 || ei_x_encode_atom(x, why) < 0
               ? -1
               : 0;
}

int cnb_registry_encode_lookup(struct cnb_registry *reg, const char *key, size_t key_len,
                               ei_x_buff *out)
{
    struct cnb__canon k;
    cnb_registry_result_t res;
    int rc = cnb__canon(key, key_len, &k);
    if (rc)
        return rc;
    cnb_registry_result_init(&res, NULL);
    cnb_regop_ctx_t c = {reg, 0, &res, NULL, NULL};
    cnb_regop_args_t a = {.key = {k.p, k.len}};
    cnb_regop_out_t o;
    cnb_regop_run(&c, CNB_REGOP_LOOKUP, &a, &o);
    cnb__canon_free(&k);
    int index = out->index;
    if (o.answer != CNB_ANS_ITEMS)
        rc = o.code;
    else if ((rc = cnb__put_items(out, &res, o.shape)))
        out->index = index;
    cnb_registry_result_free(&res);
    return rc;
}
