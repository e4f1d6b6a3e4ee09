/* rt_gen.c: the gen_server and sys protocol of C workers: '$gen_call',
 * '$gen_cast' and {system, From, Req} messages taken apart and handed to the
 * worker's callbacks, replies ({Tag, Reply}, through the caller's alias when
 * its tag is [alias|Ref]), and the request cnb_call sends with such a tag.
 * Tests: tests/integration/runtime_tests.erl, supervision_tests.erl,
 * tests/integration/exunit/. */
#include "runtime_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 1 when tag is [alias|Ref] (OTP 24+ gen:call and cnb_call), with Ref in
 * alias. */
static int tag_alias(const char *tag, erlang_ref *alias)
{
    int i = 0, arity;
    char atom[MAXATOMLEN_UTF8];
    return !ei_decode_list_header(tag, &i, &arity) && arity == 1 &&
           !ei_decode_atom(tag, &i, atom) && !strcmp(atom, "alias") &&
           !ei_decode_ref(tag, &i, alias);
}

int cnb__gen_call_msg(ei_x_buff *x, const erlang_pid *from, const erlang_ref *alias,
                      const char *req, size_t len)
{
    if (ei_x_new_with_version(x))
        return CNB_ENOMEM;
    int e = ei_x_encode_tuple_header(x, 3);
    e |= ei_x_encode_atom(x, "$gen_call");
    e |= ei_x_encode_tuple_header(x, 2);
    e |= ei_x_encode_pid(x, from);
    e |= ei_x_encode_list_header(x, 1); /* the tag: [alias|Ref] */
    e |= ei_x_encode_atom(x, "alias");
    e |= ei_x_encode_ref(x, alias);
    e |= ei_x_append_buf(x, req + 1, (int)len - 1);
    if (e) {
        ei_x_free(x);
        return CNB_ENOMEM;
    }
    return 0;
}

int cnb_reply(cnb_node_t *n, const cnb_from_t *from, const char *term, size_t len)
{
    if (!from || !term || len < 2 || (unsigned char)term[0] != 131 || !from->tag_len)
        return CNB_EINVAL;
    /* {Tag, Reply}: the header measured, then written, by ei's encoders. */
    int hl = 0;
    ei_encode_version(NULL, &hl);
    ei_encode_tuple_header(NULL, &hl, 2);
    size_t total = (size_t)hl + from->tag_len + (len - 1);
    char stackbuf[2048];
    char *b = total <= sizeof(stackbuf) ? stackbuf : malloc(total);
    if (!b)
        return CNB_ENOMEM;
    int i = 0;
    ei_encode_version(b, &i);
    ei_encode_tuple_header(b, &i, 2);
    memcpy(b + i, from->tag, from->tag_len);
    memcpy(b + i + from->tag_len, term + 1, len - 1);
    erlang_ref alias;
    int rc = tag_alias(from->tag, &alias) ? cnb_alias_send(n, NULL, &alias, b, total)
                                          : cnb_send(n, NULL, &from->pid, b, total);
    if (b != stackbuf)
        free(b);
    return rc;
}

/* {status, Pid, {module, cnode_worker}, [PDict, SysState, Parent, Dbg, Misc]}
 * as sys:get_status/1 expects; st: the worker's format_status term, or NULL.
 * Returns the encoders' results OR-ed (nonzero: out of memory). */
static int encode_status(ei_x_buff *x, const cnb_proc_t *p, const ei_x_buff *st)
{
    int e = ei_x_encode_tuple_header(x, 4);
    e |= ei_x_encode_atom(x, "status");
    e |= ei_x_encode_pid(x, &p->pid);
    e |= ei_x_encode_tuple_header(x, 2);
    e |= ei_x_encode_atom(x, "module");
    e |= ei_x_encode_atom(x, "cnode_worker");
    e |= ei_x_encode_list_header(x, 5);
    e |= ei_x_encode_empty_list(x);
    e |= ei_x_encode_atom(x, "running");
    e |= ei_x_encode_pid(x, &p->pid);
    e |= ei_x_encode_empty_list(x);
    e |= ei_x_encode_list_header(x, 2);
    e |= ei_x_encode_tuple_header(x, 2);
    e |= ei_x_encode_atom(x, "header");
    e |= ei_x_encode_string(x, "C worker");
    e |= ei_x_encode_tuple_header(x, 2);
    e |= ei_x_encode_atom(x, "data");
    e |= ei_x_encode_list_header(x, 2);
    e |= ei_x_encode_tuple_header(x, 2);
    e |= ei_x_encode_string(x, "Registered name");
    e |= ei_x_encode_atom(x, p->reg ? p->reg->name : "undefined");
    e |= ei_x_encode_tuple_header(x, 2);
    e |= ei_x_encode_string(x, "State");
    e |= st ? ei_x_append_buf(x, st->buff, st->index) : ei_x_encode_atom(x, "undefined");
    e |= ei_x_encode_empty_list(x);
    e |= ei_x_encode_empty_list(x);
    e |= ei_x_encode_empty_list(x);
    return e;
}

/* {terminate, Reason} (sys:terminate/2): p stops with Reason. */
static void sys_terminate(cnb_proc_t *p, const char *req)
{
    int j = 0, ar;
    if (ei_decode_tuple_header(req, &j, &ar) || ar != 2 || ei_skip_term(req, &j))
        return;
    int s0 = j;
    if (ei_skip_term(req, &j))
        return;
    cnb__rt_set_reason_body(p, req + s0, (size_t)(j - s0));
    p->dead = 1;
}

/* 1 when the sys module on the caller's node wants get_state answered
 * {ok, State}: STDLIB 5.1 (OTP 26.1) and later match {ok, State} in
 * sys:get_state (OTP-18627; read in 27's and 29's sys.erl), older ones take
 * the state itself. The handshake flags tell 28+ (ALTACT_SIG) apart; for older
 * peers the version comes from the peer (rpc application:get_key(stdlib, vsn),
 * a round trip per get_state, which is a debugging call). Unknown: the
 * modern form. */
static int caller_wants_ok_state(cnb_node_t *n, const erlang_pid *caller)
{
    if (cnb__rt_peer_has(n, caller->node, CNB_DFLAG_ALTACT_SIG))
        return 1;
    char args[32], vsn[32] = "";
    int i = 0;
    ei_encode_version(args, &i);
    ei_encode_list_header(args, &i, 2);
    ei_encode_atom(args, &i, "stdlib");
    ei_encode_atom(args, &i, "vsn");
    ei_encode_empty_list(args, &i);
    ei_x_buff r;
    int rc = cnb_rpc(n, caller->node, "application", "get_key", args, (size_t)i, 2000, &r);
    int v = 0, ar, type, size;
    char ok[MAXATOMLEN_UTF8];
    if (!rc && !ei_decode_version(r.buff, &v, NULL) && !ei_decode_tuple_header(r.buff, &v, &ar) &&
        ar == 2 && !ei_decode_atom(r.buff, &v, ok) && !strcmp(ok, "ok") &&
        !ei_get_type(r.buff, &v, &type, &size) && type == ERL_STRING_EXT &&
        size < (int)sizeof(vsn))
        ei_decode_string(r.buff, &v, vsn);
    ei_x_free(&r);
    unsigned major = 0, minor = 0;
    if (sscanf(vsn, "%u.%u", &major, &minor) < 1)
        return 1;
    return major > 5 || (major == 5 && minor >= 1);
}

/* sys messages: {system, From, Request}; Request (req_len bytes, no version
 * byte) is an atom or a tuple led by one. */
static void handle_system(cnb_proc_t *p, const cnb_from_t *from, const char *req, int req_len)
{
    int i = 0, arity;
    char atom[MAXATOMLEN_UTF8] = "";
    if (ei_decode_atom(req, &i, atom)) {
        i = 0;
        if (!ei_decode_tuple_header(req, &i, &arity) && arity >= 1 && ei_decode_atom(req, &i, atom))
            atom[0] = 0;
    }
    ei_x_buff x, st;
    int e = ei_x_new_with_version(&x);
    e |= ei_x_new(&st);
    int have_state = !e && p->ops->format_status &&
                     p->ops->format_status(p, p->state, &st) == 0 && st.index > 0;
    if (e) {
        /* nothing to encode into */
    } else if (!strcmp(atom, "get_state")) {
        if (caller_wants_ok_state(p->node, &from->pid))
            e = ei_x_encode_tuple_header(&x, 2) || ei_x_encode_atom(&x, "ok");
        if (e) {
            /* nothing to encode into */
        } else if (have_state)
            e = ei_x_append_buf(&x, st.buff, st.index);
        else
            e = ei_x_encode_tuple_header(&x, 2) || ei_x_encode_atom(&x, "cnode_worker") ||
                ei_x_encode_pid(&x, &p->pid);
    } else if (!strcmp(atom, "get_status")) {
        e = encode_status(&x, p, have_state ? &st : NULL);
    } else if (!strcmp(atom, "suspend") || !strcmp(atom, "resume")) {
        e = ei_x_encode_atom(&x, "ok");
    } else if (!strcmp(atom, "terminate")) {
        sys_terminate(p, req);
        e = ei_x_encode_atom(&x, "ok");
    } else {
        /* Refused cleanly: {error, {unsupported_system_message, Request}} */
        e = ei_x_encode_tuple_header(&x, 2) || ei_x_encode_atom(&x, "error") ||
            ei_x_encode_tuple_header(&x, 2) || ei_x_encode_atom(&x, "unsupported_system_message") ||
            ei_x_append_buf(&x, req, req_len);
    }
    if (e)
        cnb__log(p->node, CNB_LOG_WARNING, "worker <%u.%u>: out of memory, sys reply not sent",
                 p->pid.num, p->pid.serial);
    else
        cnb_reply(p->node, from, x.buff, (size_t)x.index);
    ei_x_free(&x);
    ei_x_free(&st);
}

/* Decodes {Pid, Tag} at b[*i] into from. */
static int decode_from(const char *b, int *i, cnb_from_t *from)
{
    int arity;
    if (ei_decode_tuple_header(b, i, &arity) || arity != 2 || ei_decode_pid(b, i, &from->pid))
        return -1;
    int t0 = *i;
    if (ei_skip_term(b, i) || (size_t)(*i - t0) > sizeof(from->tag))
        return -1;
    memcpy(from->tag, b + t0, (size_t)(*i - t0));
    from->tag_len = (size_t)(*i - t0);
    return 0;
}

/* The term of len bytes at body (no version byte) as a term of its own, in
 * sbuf when it fits, else malloc'd (the caller frees a result != sbuf).
 * NULL: out of memory. */
static char *as_term(const char *body, size_t len, char *sbuf, size_t ssize, size_t *out_len)
{
    int v = 0;
    ei_encode_version(NULL, &v);
    *out_len = (size_t)v + len;
    char *t = *out_len <= ssize ? sbuf : malloc(*out_len);
    if (!t)
        return NULL;
    v = 0;
    ei_encode_version(t, &v);
    memcpy(t + v, body, len);
    return t;
}

/* {'$gen_call', From, Request} with Request at b[r0, r1): handle_call, and
 * its reply. */
static void gen_call(cnb_proc_t *p, const char *b, int r0, int r1, const cnb_from_t *from)
{
    if (!p->ops->handle_call) {
        /* No call handler: the caller gets an exit, as a gen_server
         * crashing on an unknown call would give. */
        cnb__rt_callback_failed(p, "handle_call", CNB_EINVAL);
        return;
    }
    char sbuf[512];
    size_t rl;
    char *req = as_term(b + r0, (size_t)(r1 - r0), sbuf, sizeof(sbuf), &rl);
    ei_x_buff reply;
    if (!req || ei_x_new_with_version(&reply)) {
        if (req != sbuf)
            free(req);
        cnb__rt_callback_failed(p, "handle_call", CNB_ENOMEM);
        return;
    }
    int rc = p->ops->handle_call(p, p->state, req, rl, from, &reply);
    if ((rc == CNB_REPLY || rc == CNB_STOP) && reply.index > 1)
        cnb_reply(p->node, from, reply.buff, (size_t)reply.index);
    ei_x_free(&reply);
    if (req != sbuf)
        free(req);
    cnb__rt_after_callback(p, "handle_call", rc == CNB_REPLY ? 0 : rc);
}

/* {'$gen_cast', Msg} with Msg at b[m0, m1). */
static void gen_cast(cnb_proc_t *p, const char *b, int m0, int m1)
{
    char sbuf[512];
    size_t ml;
    char *m = as_term(b + m0, (size_t)(m1 - m0), sbuf, sizeof(sbuf), &ml);
    if (!m) {
        cnb__log(p->node, CNB_LOG_WARNING, "worker <%u.%u>: out of memory, a cast was lost",
                 p->pid.num, p->pid.serial);
        return;
    }
    cnb__rt_after_callback(p, "handle_cast", p->ops->handle_cast(p, p->state, m, ml));
    if (m != sbuf)
        free(m);
}

int cnb__gen_is_call(const char *b, size_t len)
{
    static const char tag[] = "$gen_call";
    const unsigned char *u = (const unsigned char *)b;
    size_t at; /* where the atom's text starts */
    if (len < 4 || u[0] != 131 || u[1] != ERL_SMALL_TUPLE_EXT || u[2] != 3)
        return 0;
    if (u[3] == ERL_SMALL_ATOM_UTF8_EXT || u[3] == ERL_SMALL_ATOM_EXT)
        at = 5;
    else if (u[3] == ERL_ATOM_UTF8_EXT || u[3] == ERL_ATOM_EXT)
        at = 6;
    else
        return 0;
    return len >= at + sizeof(tag) - 1 && u[at - 1] == sizeof(tag) - 1 &&
           (at == 5 || u[4] == 0) && !memcmp(b + at, tag, sizeof(tag) - 1);
}

void cnb__gen_msg(cnb_proc_t *p, const char *b, size_t len)
{
    int i = 0, ver, arity;
    char atom[MAXATOMLEN_UTF8];
    cnb_from_t from;
    if (ei_decode_version(b, &i, &ver) || ei_decode_tuple_header(b, &i, &arity) || arity < 2 ||
        ei_decode_atom(b, &i, atom))
        goto info;
    if (arity == 3 && !strcmp(atom, "$gen_call")) {
        if (decode_from(b, &i, &from))
            goto info;
        int r0 = i;
        if (ei_skip_term(b, &i))
            goto info;
        gen_call(p, b, r0, i, &from);
        return;
    }
    if (arity == 2 && !strcmp(atom, "$gen_cast") && p->ops->handle_cast) {
        int m0 = i;
        if (ei_skip_term(b, &i))
            goto info;
        gen_cast(p, b, m0, i);
        return;
    }
    if (arity == 3 && !strcmp(atom, "system")) {
        if (decode_from(b, &i, &from))
            goto info;
        int q0 = i;
        if (ei_skip_term(b, &i))
            goto info;
        handle_system(p, &from, b + q0, i - q0);
        return;
    }
info:
    cnb__rt_info(p, b, len);
}
