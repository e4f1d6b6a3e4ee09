/* dispatch.c: the runtime's policy for incoming messages, which the
 * connection layer hands up decoded and checked (cnb_upper_t.message, see
 * cnb__deliver_up in loop.c): answers what the node itself owns (net_kernel's
 * is_auth, signals to pids of an older creation of this node, and, with no
 * handler installed, links and monitors to processes that do not exist),
 * passes spawn requests and relays on, signals to the runtime, and the rest
 * to on_message. It is part of the runtime, not of the connection layer: it
 * applies process policy. Tests: tests/integration/dist_tests.erl,
 * hostile_signals_tests.erl, global_resolver_tests.erl. */
#include "etf_check.h"
#include "node_rt.h"

#include <stdlib.h>
#include <string.h>

/* A LINK or MONITOR_P for a process that does not exist gets the runtime's
 * one refusal (an exit or DOWN `noproc`), and only when its sender is on the
 * peer it came over: a forged sender gets nothing, as the runtime drops it. */
static void reply_noproc(cnb_node_t *n, const char *peer, const cnb_msg_t *m)
{
    if (!strcmp(m->from.node, peer))
        (void)cnb__sig_refuse(n, m, "noproc");
}

int cnb__gen_reply_atom(cnb_node_t *n, const cnb_msg_t *m, const erlang_pid *from,
                        int tag_start, int tag_end, const char *reply)
{
    const char *b = m->payload;
    ei_x_buff x;
    if (ei_x_new_with_version(&x))
        goto nomem;
    if (ei_x_encode_tuple_header(&x, 2) ||
        ei_x_append_buf(&x, b + tag_start, tag_end - tag_start) || ei_x_encode_atom(&x, reply)) {
        ei_x_free(&x);
        goto nomem;
    }
    /* A tag [alias|Ref] is answered through the alias (OTP 24+ gen:call). */
    int t = tag_start, type, size;
    erlang_ref alias;
    char atom[MAXATOMLEN_UTF8];
    int via_alias = 0;
    if (!ei_get_type(b, &t, &type, &size) && type == ERL_LIST_EXT &&
        (cnb_node_peer_flags(n, m->peer) & CNB_DFLAG_ALIAS)) {
        int len;
        if (!ei_decode_list_header(b, &t, &len) && len == 1 && !ei_decode_atom(b, &t, atom) &&
            !strcmp(atom, "alias") && !ei_decode_ref(b, &t, &alias))
            via_alias = 1;
    }
    int rc = via_alias ? cnb_alias_send(n, NULL, &alias, x.buff, (size_t)x.index)
                       : cnb_send(n, NULL, from, x.buff, (size_t)x.index);
    ei_x_free(&x);
    if (rc && rc != CNB_ECLOSED)
        cnb__log(n, CNB_LOG_WARNING, "a call from %s to %s not answered: %s", m->peer,
                 m->toname, cnb_strerror(rc));
    return rc;
nomem:
    cnb__log(n, CNB_LOG_ERROR, "out of memory: a call from %s to %s not answered", m->peer,
             m->toname);
    return CNB_ENOMEM;
}

/* net_kernel: {'$gen_call', {From, Tag}, {is_auth, Node}} -> reply yes. */
static void net_kernel(cnb_node_t *n, const cnb_msg_t *m)
{
    const char *b = m->payload;
    int i = 0, ver, arity;
    char atom[MAXATOMLEN_UTF8];
    erlang_pid from;
    if (ei_decode_version(b, &i, &ver) || ei_decode_tuple_header(b, &i, &arity) || arity != 3 ||
        ei_decode_atom(b, &i, atom) || strcmp(atom, "$gen_call") ||
        ei_decode_tuple_header(b, &i, &arity) || arity != 2 || ei_decode_pid(b, &i, &from))
        goto ignore;
    int tag_start = i;
    if (ei_skip_term(b, &i))
        goto ignore;
    int tag_end = i;
    if (ei_decode_tuple_header(b, &i, &arity) || arity != 2 || ei_decode_atom(b, &i, atom) ||
        strcmp(atom, "is_auth"))
        goto ignore;
    (void)cnb__gen_reply_atom(n, m, &from, tag_start, tag_end, "yes");
    return;
ignore:
    cnb__log(n, CNB_LOG_DEBUG, "ignored a net_kernel request from %s", m->peer);
}

static int stale_pid(const cnb_node_t *n, const erlang_pid *p)
{
    return !strcmp(p->node, n->name) && p->creation != n->creation;
}

void cnb__dispatch(cnb_node_t *n, const cnb_decoded_t *d, size_t len, int from_wire)
{
    const char *peer = d->msg.peer;
    cnb_msg_t m = d->msg;
    int op = m.op;
    if (d->kind == CNB_DEC_SPAWN) {
        cnb__spawn_request(n, peer, m.ctrl, m.payload, m.payload_len);
        return;
    }
    if (d->kind == CNB_DEC_SPAWN_REPLY) {
        if (!cnb__relay_spawn_reply(n, peer, m.ctrl))
            cnb__log(n, CNB_LOG_DEBUG, "ignored a spawn reply from %s", peer);
        return;
    }
    if (d->kind == CNB_DEC_IGNORED) {
        cnb__log(n, CNB_LOG_DEBUG, "ignored control message %ld from %s", d->raw_op, peer);
        return;
    }
    if (d->reason_replaced)
        cnb__log(n, CNB_LOG_WARNING,
                 "exit reason from %s (%zu bytes) nested deeper than %u levels: delivered as "
                 "term_too_deep",
                 peer, len, CNB_ETF_MAX_DEPTH);

    /* Signals to a pid of an older incarnation of this node: dropped; links
     * and monitors answered as for a dead process. */
    if (m.has_to && stale_pid(n, &m.to) && op != CNB_OP_MONITOR_P_EXIT) {
        cnb__log(n, CNB_LOG_DEBUG, "dropped op %d from %s to a pid of an older creation (%u)",
                 m.op, peer, m.to.creation);
        if ((op == CNB_OP_LINK || op == CNB_OP_MONITOR_P) && from_wire)
            reply_noproc(n, peer, &m);
        return;
    }
    if (m.has_ref && op == CNB_OP_ALIAS_SEND && !strcmp(m.ref.node, n->name) &&
        m.ref.creation != n->creation)
        return;

    if (!m.has_to && !strcmp(m.toname, "net_kernel")) {
        /* Our net_kernel "process" lives as long as the connection: a monitor
         * on it (gen:call sets one) needs no record, since the caller's node
         * fires noconnection itself when the connection goes. */
        if (op == CNB_OP_REG_SEND && m.payload)
            net_kernel(n, &m);
        if (op == CNB_OP_REG_SEND || op == CNB_OP_MONITOR_P || op == CNB_OP_DEMONITOR_P)
            return;
    }
    if (cnb__visible_take(n, &m) || cnb__greg_take(n, &m) || cnb__pg_take(n, &m) ||
        cnb__relay_down(n, &m) || cnb__rt_deliver(n, &m))
        return;
    if (n->opts.on_message) {
        n->opts.on_message(n, &m, n->opts.user);
    } else if ((op == CNB_OP_LINK || op == CNB_OP_MONITOR_P) && from_wire) {
        reply_noproc(n, peer, &m);
    }
}
