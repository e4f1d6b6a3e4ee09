/* calls.c: gen_server:call and rpc:call from C. Each call gets a fresh pid and
 * a reference that serves as monitor and alias ([alias|Ref] tag): the reply
 * comes back through ALIAS_SEND (or to the pid, from old nodes), a DOWN ends
 * the call with the reason, and after a timeout the slot is gone, so a late
 * reply is dropped instead of reaching anyone. Tests:
 * tests/integration/runtime_tests.erl. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node_int.h"
#include "runtime.h"
#include "../core/deadline.h"

typedef struct slot {
    struct slot *next;
    erlang_pid tmp;
    erlang_ref ref;
    char peer[CNB_NAME_MAX];
    int done;
    int result; /* 0, CNB_ENOPROC, CNB_ENOCONN */
    ei_x_buff reply;
} slot_t;

struct cnb_calls {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    slot_t *slots;
};

int cnb__calls_create(cnb_calls_t **out)
{
    cnb_calls_t *c = calloc(1, sizeof(*c));
    if (!c)
        return CNB_ENOMEM;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    *out = c;
    return 0;
}

void cnb__calls_destroy(cnb_calls_t *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

/* Ends s with result, its reply the term of len bytes at t (with version
 * byte: body 0) or, without memory for it, with CNB_ENOMEM. */
static void finish_slot(cnb_node_t *n, slot_t *s, int result, const char *t, size_t len, int body)
{
    s->done = 1;
    s->result = result;
    if ((body ? ei_x_new_with_version(&s->reply) : ei_x_new(&s->reply)) ||
        ei_x_append_buf(&s->reply, t, (int)len)) {
        ei_x_free(&s->reply);
        s->result = CNB_ENOMEM;
        cnb__log(n, CNB_LOG_WARNING, "out of memory: the reply to a call was lost");
    }
}

/* Takes the Reply of a {Tag, Reply} message into s; anything else is not a
 * reply, and s waits on. */
static void take_reply(cnb_node_t *n, slot_t *s, const char *b, size_t len)
{
    int i = 0, ver, arity;
    if (ei_decode_version(b, &i, &ver) || ei_decode_tuple_header(b, &i, &arity) || arity != 2 ||
        ei_skip_term(b, &i))
        return;
    finish_slot(n, s, 0, b + i, len - (size_t)i, 1);
}

int cnb__calls_deliver(cnb_node_t *n, const cnb_msg_t *m)
{
    cnb_calls_t *c = n->calls;
    int hit = 0;
    pthread_mutex_lock(&c->mu);
    for (slot_t *s = c->slots; s; s = s->next) {
        if (s->done)
            continue;
        if (m->op == CNB_OP_ALIAS_SEND && m->has_ref && cnb__ref_eq(&m->ref, &s->ref)) {
            if (m->payload)
                take_reply(n, s, m->payload, m->payload_len);
            hit = 1;
        } else if (m->op == CNB_OP_SEND && m->has_to && cnb__pid_eq(&m->to, &s->tmp)) {
            if (m->payload)
                take_reply(n, s, m->payload, m->payload_len);
            hit = 1;
        } else if (m->op == CNB_OP_MONITOR_P_EXIT && m->has_ref && cnb__ref_eq(&m->ref, &s->ref)) {
            if (m->payload)
                finish_slot(n, s, CNB_ENOPROC, m->payload, m->payload_len, 0);
            else {
                s->done = 1;
                s->result = CNB_ENOPROC;
            }
            hit = 1;
        }
        if (hit)
            break;
    }
    if (hit)
        pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void cnb__calls_nodedown(cnb_node_t *n, const char *peer)
{
    cnb_calls_t *c = n->calls;
    pthread_mutex_lock(&c->mu);
    for (slot_t *s = c->slots; s; s = s->next)
        if (!s->done && !strcmp(s->peer, peer)) {
            s->done = 1;
            s->result = CNB_ENOCONN;
        }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

int cnb_call(cnb_node_t *n, const erlang_pid *to, const char *name, const char *peer,
             const char *req, size_t len, unsigned timeout_ms, ei_x_buff *reply)
{
    cnb_calls_t *c = n->calls;
    if ((!to && (!name || !peer)) || !req || len < 2 || (unsigned char)req[0] != 131 || !reply)
        return CNB_EINVAL;
    if (name && (strlen(name) >= MAXATOMLEN_UTF8 || strlen(peer) >= CNB_NAME_MAX))
        return CNB_EINVAL;
    memset(reply, 0, sizeof(*reply)); /* ei_x_free takes it, whatever comes */
    if (cnb_on_io_thread(n))
        return CNB_ESTATE; /* the reply could only come in through this thread */
    slot_t *s = calloc(1, sizeof(*s));
    if (!s)
        return CNB_ENOMEM;
    cnb_node_make_pid(n, &s->tmp);
    cnb_node_make_ref(n, &s->ref);
    snprintf(s->peer, sizeof(s->peer), "%s", to ? to->node : peer);
    pthread_mutex_lock(&c->mu);
    s->next = c->slots;
    c->slots = s;
    pthread_mutex_unlock(&c->mu);

    /* Monitor first (same ref), then {'$gen_call', {Tmp, [alias|Ref]}, Req}:
     * encoded and queued ahead of the request, both handed to the I/O thread
     * in one burst (one wake-up sends both). */
    ei_x_buff x;
    int rc = cnb__gen_call_msg(&x, &s->tmp, &s->ref, req, len);
    if (!rc) {
        cnb__sig_burst_begin();
        rc = cnb__sig_monitor(n, CNB_OP_MONITOR_P, &s->tmp, to, to ? NULL : name, s->peer,
                              &s->ref);
        if (!rc && to)
            rc = cnb__sig_send(n, to, x.buff, (size_t)x.index);
        else if (!rc)
            rc = cnb__sig_reg_send(n, &s->tmp, peer, name, x.buff, (size_t)x.index);
        cnb__sig_burst_end(n);
        ei_x_free(&x);
    }

    struct timespec dl;
    cnb__deadline(CLOCK_MONOTONIC, timeout_ms, &dl);
    pthread_mutex_lock(&c->mu);
    while (!rc && !s->done) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT)
            break;
    }
    if (!rc)
        rc = s->done ? s->result : CNB_ETIMEDOUT;
    for (slot_t **pp = &c->slots; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    pthread_mutex_unlock(&c->mu);
    /* The monitor (and alias) go away with the slot, as gen_server:call
     * demonitors once answered: left, each call would leave a monitor on
     * the callee (rex, for every cnb_rpc) until the connection ends. After
     * ENOMEM it may have been made, so it goes too (a DEMONITOR of none is
     * harmless); a DOWN or a lost connection took it already. */
    if (rc == 0 || rc == CNB_ETIMEDOUT || rc == CNB_ENOMEM)
        cnb__sig_monitor(n, CNB_OP_DEMONITOR_P, &s->tmp, to, to ? NULL : name, s->peer, &s->ref);
    if (s->reply.buff && (rc == 0 || rc == CNB_ENOPROC))
        *reply = s->reply; /* handed over */
    else {
        ei_x_free(&s->reply);
        if (ei_x_new_with_version(reply) && !rc)
            rc = CNB_ENOMEM;
    }
    free(s);
    return rc;
}

int cnb_rpc(cnb_node_t *n, const char *peer, const char *mod, const char *fun, const char *args,
            size_t len, unsigned timeout_ms, ei_x_buff *reply)
{
    if (!peer || !mod || !fun || !args || len < 2 || (unsigned char)args[0] != 131)
        return CNB_EINVAL;
    /* {call, Mod, Fun, Args, user}: rex runs it with `user` as group leader
     * (no I/O comes back to us) and replies with the result. */
    ei_x_buff x;
    int e = ei_x_new_with_version(&x);
    e |= ei_x_encode_tuple_header(&x, 5);
    e |= ei_x_encode_atom(&x, "call");
    e |= ei_x_encode_atom(&x, mod);
    e |= ei_x_encode_atom(&x, fun);
    e |= ei_x_append_buf(&x, args + 1, (int)len - 1);
    e |= ei_x_encode_atom(&x, "user");
    int rc = CNB_ENOMEM;
    if (e)
        memset(reply, 0, sizeof(*reply)); /* as cnb_call leaves it: ei_x_free takes it */
    else
        rc = cnb_call(n, NULL, "rex", peer, x.buff, (size_t)x.index, timeout_ms, reply);
    ei_x_free(&x);
    return rc;
}
