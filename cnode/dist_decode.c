/* dist_decode.c: see dist_decode.h. Every recursive ei call here runs on a
 * term cnb__etf_skip has accepted (whole, at most CNB_ETF_MAX_DEPTH deep).
 * Tests: tests/unit/test_frame.c, tests/fuzz/fuzz_dispatch.c. */
#include "dist_decode.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cnb_common.h"
#include "etf_check.h"

/* Decodes the pid, or, for MONITOR_P-style "process" fields, an atom name. */
static int decode_proc(const char *b, int *i, erlang_pid *pid, int *has_pid, char *name)
{
    int type, size;
    if (ei_get_type(b, i, &type, &size))
        return -1;
    if (type == ERL_ATOM_EXT || type == ERL_SMALL_ATOM_EXT || type == ERL_ATOM_UTF8_EXT ||
        type == ERL_SMALL_ATOM_UTF8_EXT) {
        *has_pid = 0;
        return ei_decode_atom(b, i, name);
    }
    *has_pid = 1;
    return ei_decode_pid(b, i, pid);
}

/* Copies term bytes t[0..n) into d->owned with a version byte in front and
 * points msg.payload at it. Returns 0 or CNB_ENOMEM. */
static int own_payload(cnb_decoded_t *d, const void *t, size_t n)
{
    uint8_t *c = malloc(n + 1);
    if (!c)
        return CNB_ENOMEM;
    c[0] = 131;
    memcpy(c + 1, t, n);
    free(d->owned);
    d->owned = c;
    d->msg.payload = (const char *)c;
    d->msg.payload_len = n + 1;
    return 0;
}

/* The arity of each control tuple we decode (the ERTS distribution protocol
 * chapter), or 0 for one we do not decode. Checked before any field is read:
 * a short tuple would have ei read the fields past the control term. */
static int ctrl_arity(long op)
{
    switch (op) {
    case CNB_OP_LINK:
    case CNB_OP_UNLINK:
    case CNB_OP_GROUP_LEADER:
    case CNB_OP_SEND:
    case CNB_OP_SEND_SENDER:
    case CNB_OP_PAYLOAD_EXIT:
    case CNB_OP_PAYLOAD_EXIT2:
    case CNB_OP_ALIAS_SEND:
        return 3;
    case CNB_OP_SEND_TT:
    case CNB_OP_SEND_SENDER_TT:
    case CNB_OP_REG_SEND:
    case CNB_OP_EXIT:
    case CNB_OP_EXIT2:
    case CNB_OP_PAYLOAD_EXIT_TT:
    case CNB_OP_PAYLOAD_EXIT2_TT:
    case CNB_OP_MONITOR_P:
    case CNB_OP_DEMONITOR_P:
    case CNB_OP_PAYLOAD_MONITOR_P_EXIT:
    case CNB_OP_ALIAS_SEND_TT:
    case CNB_OP_UNLINK_ID:
    case CNB_OP_UNLINK_ID_ACK:
        return 4;
    case CNB_OP_REG_SEND_TT:
    case CNB_OP_EXIT_TT:
    case CNB_OP_EXIT2_TT:
    case CNB_OP_MONITOR_P_EXIT:
        return 5;
    case CNB_OP_SPAWN_REQUEST:
        return 6;
    case CNB_OP_SPAWN_REQUEST_TT:
        return 7;
    case CNB_OP_SPAWN_REPLY:
        return 5;
    case CNB_OP_SPAWN_REPLY_TT:
        return 6;
    default: /* also ALTACT_SIG_SEND: 4 or 5, by its flags (decode_altact) */
        return 0;
    }
}

/* The atom term_too_deep (SMALL_ATOM_UTF8_EXT) standing in for a reason. */
static const uint8_t too_deep_atom[] = {119, 13, 't', 'e', 'r', 'm', '_', 't', 'o',
                                        'o', '_', 'd', 'e', 'e', 'p'};

#define ALTACT_KNOWN                                                                    \
    (CNB_ALTACT_PRIO | CNB_ALTACT_TOKEN | CNB_ALTACT_ALIAS | CNB_ALTACT_NAME | CNB_ALTACT_EXIT)

/* ALTACT_SIG_SEND {37, Flags, From, To[, Token]} of the given arity (index *i
 * just past the op), then the message or, with EXIT, the exit reason: into
 * the op of what it carries, the flags kept in sig_flags. Flags we do not
 * know (a later release's) leave the signal ignored rather than misread.
 * Returns 0, or non-zero when it does not decode. */
static int decode_altact(const char *b, int *i, int arity, cnb_decoded_t *d, long *opp,
                         int *reason_payload)
{
    cnb_msg_t *m = &d->msg;
    long fl;
    if (ei_decode_long(b, i, &fl) || fl < 0 || fl > INT_MAX)
        return -1;
    if (fl & ~(long)ALTACT_KNOWN) {
        d->kind = CNB_DEC_IGNORED;
        return 0;
    }
    if (arity != ((fl & CNB_ALTACT_TOKEN) ? 5 : 4) ||
        (fl & (CNB_ALTACT_ALIAS | CNB_ALTACT_NAME)) == (CNB_ALTACT_ALIAS | CNB_ALTACT_NAME) ||
        !m->payload || ei_decode_pid(b, i, &m->from))
        return -1;
    m->has_from = 1;
    m->sig_flags = (unsigned)fl;
    int rc;
    if (fl & CNB_ALTACT_ALIAS) {
        rc = ei_decode_ref(b, i, &m->ref);
        m->has_ref = 1;
    } else if (fl & CNB_ALTACT_NAME) {
        rc = ei_decode_atom(b, i, m->toname);
    } else {
        rc = ei_decode_pid(b, i, &m->to);
        m->has_to = 1;
    }
    if (!rc && (fl & CNB_ALTACT_TOKEN))
        rc = ei_skip_term(b, i); /* trace tokens are ignored, as for the _TT ops */
    if (fl & CNB_ALTACT_EXIT) {
        *reason_payload = 1;
        /* An exit through an alias has no process to name here. */
        *opp = (fl & CNB_ALTACT_ALIAS) ? CNB_OP_ALTACT_SIG_SEND : CNB_OP_EXIT2;
    } else {
        *opp = (fl & CNB_ALTACT_ALIAS)  ? CNB_OP_ALIAS_SEND
               : (fl & CNB_ALTACT_NAME) ? CNB_OP_REG_SEND
                                        : CNB_OP_SEND;
    }
    return rc;
}

/* Decodes the fields of the control tuple of operation *op (index *i just past
 * the op) into d->msg and sets d->kind; *op becomes its plain form (the _TT
 * and PAYLOAD_ forms folded). *reason_at: where an exit reason inside the
 * tuple starts (left alone when none); *reason_payload: the payload is an
 * exit reason. Returns 0, or non-zero when a field does not decode. */
static int decode_fields(const char *b, int *i, int arity, cnb_decoded_t *d, long *opp,
                         int *reason_at, int *reason_payload)
{
    cnb_msg_t *m = &d->msg;
    long op = *opp;
    int rc = 0, has;
    switch (op) {
    case CNB_OP_LINK:
    case CNB_OP_UNLINK:
    case CNB_OP_GROUP_LEADER:
        rc = ei_decode_pid(b, i, &m->from) || ei_decode_pid(b, i, &m->to);
        m->has_from = m->has_to = 1;
        break;
    case CNB_OP_SEND:
    case CNB_OP_SEND_TT:
        rc = ei_skip_term(b, i) || ei_decode_pid(b, i, &m->to);
        m->has_to = 1;
        op = CNB_OP_SEND;
        break;
    case CNB_OP_SEND_SENDER:
    case CNB_OP_SEND_SENDER_TT:
        rc = ei_decode_pid(b, i, &m->from) || ei_decode_pid(b, i, &m->to);
        m->has_from = m->has_to = 1;
        op = CNB_OP_SEND;
        break;
    case CNB_OP_REG_SEND:
    case CNB_OP_REG_SEND_TT:
        rc = ei_decode_pid(b, i, &m->from) || ei_skip_term(b, i) ||
             ei_decode_atom(b, i, m->toname);
        m->has_from = 1;
        op = CNB_OP_REG_SEND;
        break;
    case CNB_OP_EXIT:
    case CNB_OP_EXIT2:
    case CNB_OP_EXIT_TT:
    case CNB_OP_EXIT2_TT:
        rc = ei_decode_pid(b, i, &m->from) || ei_decode_pid(b, i, &m->to);
        if (!rc && (op == CNB_OP_EXIT_TT || op == CNB_OP_EXIT2_TT))
            rc = ei_skip_term(b, i);
        *reason_at = *i;
        m->has_from = m->has_to = 1;
        op = (op == CNB_OP_EXIT || op == CNB_OP_EXIT_TT) ? CNB_OP_EXIT : CNB_OP_EXIT2;
        break;
    case CNB_OP_PAYLOAD_EXIT:
    case CNB_OP_PAYLOAD_EXIT_TT:
    case CNB_OP_PAYLOAD_EXIT2:
    case CNB_OP_PAYLOAD_EXIT2_TT:
        rc = ei_decode_pid(b, i, &m->from) || ei_decode_pid(b, i, &m->to) || !m->payload;
        m->has_from = m->has_to = 1;
        *reason_payload = 1;
        op = (op == CNB_OP_PAYLOAD_EXIT || op == CNB_OP_PAYLOAD_EXIT_TT) ? CNB_OP_EXIT
                                                                           : CNB_OP_EXIT2;
        break;
    case CNB_OP_MONITOR_P:
    case CNB_OP_DEMONITOR_P:
        rc = ei_decode_pid(b, i, &m->from) || decode_proc(b, i, &m->to, &has, m->toname) ||
             ei_decode_ref(b, i, &m->ref);
        m->has_from = 1;
        m->has_to = !rc && has;
        m->has_ref = 1;
        break;
    case CNB_OP_MONITOR_P_EXIT:
    case CNB_OP_PAYLOAD_MONITOR_P_EXIT:
        /* {21, FromProc, ToPid, Ref, Reason}: "from" is the monitored process
         * (pid or name), "to" the monitoring pid here. */
        rc = decode_proc(b, i, &m->from, &has, m->toname) || ei_decode_pid(b, i, &m->to) ||
             ei_decode_ref(b, i, &m->ref);
        m->has_from = !rc && has;
        m->has_to = m->has_ref = 1;
        if (op == CNB_OP_MONITOR_P_EXIT)
            *reason_at = *i;
        else
            rc = rc || !m->payload;
        *reason_payload = op == CNB_OP_PAYLOAD_MONITOR_P_EXIT;
        op = CNB_OP_MONITOR_P_EXIT;
        break;
    case CNB_OP_ALIAS_SEND:
    case CNB_OP_ALIAS_SEND_TT:
        rc = ei_decode_pid(b, i, &m->from) || ei_decode_ref(b, i, &m->ref);
        m->has_from = m->has_ref = 1;
        op = CNB_OP_ALIAS_SEND;
        break;
    case CNB_OP_UNLINK_ID:
    case CNB_OP_UNLINK_ID_ACK: {
        EI_ULONGLONG id;
        rc = ei_decode_ulonglong(b, i, &id) || ei_decode_pid(b, i, &m->from) ||
             ei_decode_pid(b, i, &m->to);
        m->unlink_id = (uint64_t)id;
        m->has_from = m->has_to = 1;
        break;
    }
    case CNB_OP_ALTACT_SIG_SEND:
        rc = decode_altact(b, i, arity, d, &op, reason_payload);
        break;
    case CNB_OP_SPAWN_REQUEST:
    case CNB_OP_SPAWN_REQUEST_TT:
        d->kind = CNB_DEC_SPAWN;
        break;
    case CNB_OP_SPAWN_REPLY:
    case CNB_OP_SPAWN_REPLY_TT:
        d->kind = CNB_DEC_SPAWN_REPLY;
        break;
    default:
        d->kind = CNB_DEC_IGNORED;
        break;
    }
    *opp = op;
    return rc;
}

int cnb__dist_decode(const uint8_t *body, size_t len, int versioned, cnb_decoded_t *d)
{
    memset(d, 0, sizeof(*d));
    if (len > INT_MAX) /* ei indexes with int */
        return CNB_ETOOBIG;
    const char *b = (const char *)body;
    size_t off = 0;
    if (versioned) {
        if (len < 1 || body[0] != 131)
            return CNB_EMALFORMED;
        off = 1;
    }
    long clen = cnb__etf_skip(body + off, len - off);
    if (clen < 0)
        return clen == CNB_EDEPTH || clen == CNB_ENOMEM ? (int)clen : CNB_EMALFORMED;
    size_t ctrl_end = off + (size_t)clen;
    size_t poff = ctrl_end; /* payload term, without its version byte */
    int payload_deep = 0;
    cnb_msg_t *m = &d->msg;
    int rc = 0;
    if (ctrl_end < len) {
        if (versioned) {
            if (body[poff] != 131)
                return CNB_EMALFORMED;
            poff++;
        }
        long plen = cnb__etf_skip(body + poff, len - poff);
        if (plen == CNB_EDEPTH) {
            /* Whole but too deep? Known only from a pass without the limit
             * (iterative too; its stack is on the heap). */
            payload_deep = 1;
            plen = cnb__etf_skip_limit(body + poff, len - poff, UINT_MAX);
        }
        if (plen == CNB_ENOMEM)
            return CNB_ENOMEM;
        if (plen < 0 || poff + (size_t)plen != len)
            return CNB_EMALFORMED;
        if (versioned) {
            m->payload = b + ctrl_end;
            m->payload_len = len - ctrl_end;
        } else if ((rc = own_payload(d, body + poff, len - poff))) { /* one form: versioned */
            return rc;
        }
    }
    m->ctrl = b + off;
    m->ctrl_len = (size_t)clen;

    int i = (int)off, arity;
    long op;
    if (ei_decode_tuple_header(b, &i, &arity) || arity < 1 || ei_decode_long(b, &i, &op))
        goto bad;
    d->raw_op = op;
    d->kind = CNB_DEC_SIGNAL;
    if (ctrl_arity(op) && arity != ctrl_arity(op))
        goto bad;
    int reason_at = -1; /* reasons of the non-payload EXIT variants sit in the control tuple */
    int reason_payload = 0; /* the payload is an exit reason */
    rc = decode_fields(b, &i, arity, d, &op, &reason_at, &reason_payload);
    if (rc)
        goto bad;
    m->op = (int)op;
    if (payload_deep) {
        if (!reason_payload) { /* a message or spawn arguments: dropped */
            cnb__dist_decoded_free(d);
            return CNB_EDEPTH;
        }
        if ((rc = own_payload(d, too_deep_atom, sizeof(too_deep_atom))))
            goto fail;
        d->reason_replaced = 1;
    }
    if (reason_at >= 0) {
        /* Move the reason into payload form (with a version byte). */
        int e = reason_at;
        if (ei_skip_term(b, &e) || (size_t)e > ctrl_end)
            goto bad;
        if ((rc = own_payload(d, b + reason_at, (size_t)(e - reason_at))))
            goto fail;
    }
    return 0;
bad:
    rc = CNB_EMALFORMED;
fail:
    cnb__dist_decoded_free(d);
    return rc;
}

void cnb__dist_decoded_free(cnb_decoded_t *d)
{
    free(d->owned);
    d->owned = NULL;
}
