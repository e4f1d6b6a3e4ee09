/* dispatch.c: decodes incoming control messages (after checking each term is
 * whole), answers what the node itself owns (net_kernel's is_auth, signals to
 * pids of an older creation of this node, and, with no handler installed, links
 * and monitors to processes that do not exist), and hands the rest to
 * on_message. Tests: tests/integration/dist_*_tests.erl. */
#include "etf_check.h"
#include "node_int.h"

#include <stdlib.h>
#include <string.h>

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

/* Sends an exit-style signal back for a process that does not exist. */
static void reply_noproc(cnb_node_t *n, const char *peer, int op, const cnb_msg_t *m)
{
    char buf[3 * MAXATOMLEN_UTF8 + 128];
    char reason[16];
    int i = 0, r = 0;
    ei_encode_version(reason, &r);
    ei_encode_atom(reason, &r, "noproc");
    ei_encode_version(buf, &i);
    if (op == CNB_OP_LINK) {
        /* PAYLOAD_EXIT {24, From, To} + noproc, from the dead "to" to "from". */
        ei_encode_tuple_header(buf, &i, 3);
        ei_encode_long(buf, &i, CNB_OP_PAYLOAD_EXIT);
        ei_encode_pid(buf, &i, &m->to);
        ei_encode_pid(buf, &i, &m->from);
    } else { /* MONITOR_P: PAYLOAD_MONITOR_P_EXIT {28, ToProc, FromPid, Ref} */
        ei_encode_tuple_header(buf, &i, 4);
        ei_encode_long(buf, &i, CNB_OP_PAYLOAD_MONITOR_P_EXIT);
        if (m->has_to)
            ei_encode_pid(buf, &i, &m->to);
        else
            ei_encode_atom(buf, &i, m->toname);
        ei_encode_pid(buf, &i, &m->from);
        ei_encode_ref(buf, &i, &m->ref);
    }
    cnb_send_ctrl(n, peer, buf, (size_t)i, reason, (size_t)r);
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
    /* Reply {Tag, yes}. */
    ei_x_buff x;
    if (ei_x_new_with_version(&x))
        return;
    ei_x_encode_tuple_header(&x, 2);
    ei_x_append_buf(&x, b + tag_start, tag_end - tag_start);
    ei_x_encode_atom(&x, "yes");
    /* A tag [alias|Ref] is answered through the alias (OTP 24+ gen:call). */
    int t = tag_start, type, size;
    erlang_ref alias;
    int via_alias = 0;
    if (!ei_get_type(b, &t, &type, &size) && type == ERL_LIST_EXT &&
        (cnb_node_peer_flags(n, m->peer) & CNB_DFLAG_ALIAS)) {
        int len;
        if (!ei_decode_list_header(b, &t, &len) && len == 1 && !ei_decode_atom(b, &t, atom) &&
            !strcmp(atom, "alias") && !ei_decode_ref(b, &t, &alias))
            via_alias = 1;
    }
    if (via_alias)
        cnb_alias_send(n, NULL, &alias, x.buff, (size_t)x.index);
    else
        cnb_send(n, NULL, &from, x.buff, (size_t)x.index);
    ei_x_free(&x);
    return;
ignore:
    cnb__log(n, CNB_LOG_DEBUG, "ignored a net_kernel request from %s", m->peer);
}

static int stale_pid(const cnb_node_t *n, const erlang_pid *p)
{
    return !strcmp(p->node, n->name) && p->creation != n->creation;
}

void cnb__dispatch(cnb_node_t *n, cnb_conn_t *c, const uint8_t *body, size_t len, int versioned)
{
    const char *peer = c ? c->peer : n->name;
    const char *b = (const char *)body;
    size_t off = 0;
    if (versioned) {
        if (len < 1 || body[0] != 131)
            goto malformed;
        off = 1;
    }
    long clen = cnb__etf_skip(body + off, len - off);
    if (clen < 0)
        goto malformed;
    size_t ctrl_end = off + (size_t)clen;
    const uint8_t *pl = NULL;
    size_t pl_len = 0;
    uint8_t *pl_copy = NULL;
    if (ctrl_end < len) {
        size_t poff = ctrl_end;
        if (versioned) {
            if (body[poff] != 131)
                goto malformed;
            poff++;
        }
        long plen = cnb__etf_skip(body + poff, len - poff);
        if (plen < 0 || poff + (size_t)plen != len)
            goto malformed;
        if (versioned) {
            pl = body + ctrl_end;
            pl_len = len - ctrl_end;
        } else { /* give handlers one form: with the version byte */
            pl_copy = malloc(len - ctrl_end + 1);
            if (!pl_copy)
                return;
            pl_copy[0] = 131;
            memcpy(pl_copy + 1, body + ctrl_end, len - ctrl_end);
            pl = pl_copy;
            pl_len = len - ctrl_end + 1;
        }
    }

    cnb_msg_t m;
    memset(&m, 0, sizeof(m));
    m.peer = peer;
    m.ctrl = b + off;
    m.ctrl_len = (size_t)clen;
    m.payload = (const char *)pl;
    m.payload_len = pl_len;
    int i = (int)off, arity;
    long op;
    char dummy[MAXATOMLEN_UTF8];
    if (ei_decode_tuple_header(b, &i, &arity) || arity < 1 || ei_decode_long(b, &i, &op))
        goto bad_ctrl;
    int rc = 0, has;
    /* Reasons of non-payload EXIT variants sit in the control tuple. */
    int reason_at = -1;
    switch (op) {
    case CNB_OP_LINK:
    case CNB_OP_UNLINK:
    case CNB_OP_GROUP_LEADER:
        rc = arity != 3 || ei_decode_pid(b, &i, &m.from) || ei_decode_pid(b, &i, &m.to);
        m.has_from = m.has_to = 1;
        break;
    case CNB_OP_SEND:
    case CNB_OP_SEND_TT:
        rc = ei_skip_term(b, &i) || ei_decode_pid(b, &i, &m.to);
        m.has_to = 1;
        op = CNB_OP_SEND;
        break;
    case CNB_OP_SEND_SENDER:
    case CNB_OP_SEND_SENDER_TT:
        rc = ei_decode_pid(b, &i, &m.from) || ei_decode_pid(b, &i, &m.to);
        m.has_from = m.has_to = 1;
        op = CNB_OP_SEND;
        break;
    case CNB_OP_REG_SEND:
    case CNB_OP_REG_SEND_TT:
        rc = ei_decode_pid(b, &i, &m.from) || ei_skip_term(b, &i) ||
             ei_decode_atom(b, &i, m.toname);
        m.has_from = 1;
        op = CNB_OP_REG_SEND;
        break;
    case CNB_OP_EXIT:
    case CNB_OP_EXIT2:
    case CNB_OP_EXIT_TT:
    case CNB_OP_EXIT2_TT:
        rc = ei_decode_pid(b, &i, &m.from) || ei_decode_pid(b, &i, &m.to);
        if (!rc && (op == CNB_OP_EXIT_TT || op == CNB_OP_EXIT2_TT))
            rc = ei_skip_term(b, &i);
        reason_at = i;
        m.has_from = m.has_to = 1;
        op = (op == CNB_OP_EXIT || op == CNB_OP_EXIT_TT) ? CNB_OP_EXIT : CNB_OP_EXIT2;
        break;
    case CNB_OP_PAYLOAD_EXIT:
    case CNB_OP_PAYLOAD_EXIT_TT:
    case CNB_OP_PAYLOAD_EXIT2:
    case CNB_OP_PAYLOAD_EXIT2_TT:
        rc = ei_decode_pid(b, &i, &m.from) || ei_decode_pid(b, &i, &m.to) || !pl;
        m.has_from = m.has_to = 1;
        op = (op == CNB_OP_PAYLOAD_EXIT || op == CNB_OP_PAYLOAD_EXIT_TT) ? CNB_OP_EXIT
                                                                           : CNB_OP_EXIT2;
        break;
    case CNB_OP_MONITOR_P:
    case CNB_OP_DEMONITOR_P:
        rc = ei_decode_pid(b, &i, &m.from) || decode_proc(b, &i, &m.to, &has, m.toname) ||
             ei_decode_ref(b, &i, &m.ref);
        m.has_from = 1;
        m.has_to = !rc && has;
        m.has_ref = 1;
        break;
    case CNB_OP_MONITOR_P_EXIT:
    case CNB_OP_PAYLOAD_MONITOR_P_EXIT:
        /* {21, FromProc, ToPid, Ref, Reason}: "from" is the monitored process
         * (pid or name), "to" the monitoring pid here. */
        rc = decode_proc(b, &i, &m.from, &has, m.toname) || ei_decode_pid(b, &i, &m.to) ||
             ei_decode_ref(b, &i, &m.ref);
        m.has_from = !rc && has;
        m.has_to = m.has_ref = 1;
        if (op == CNB_OP_MONITOR_P_EXIT)
            reason_at = i;
        else
            rc = rc || !pl;
        op = CNB_OP_MONITOR_P_EXIT;
        break;
    case CNB_OP_ALIAS_SEND:
    case CNB_OP_ALIAS_SEND_TT:
        rc = ei_decode_pid(b, &i, &m.from) || ei_decode_ref(b, &i, &m.ref);
        m.has_from = m.has_ref = 1;
        op = CNB_OP_ALIAS_SEND;
        break;
    case CNB_OP_UNLINK_ID:
    case CNB_OP_UNLINK_ID_ACK: {
        EI_ULONGLONG id;
        rc = ei_decode_ulonglong(b, &i, &id) || ei_decode_pid(b, &i, &m.from) ||
             ei_decode_pid(b, &i, &m.to);
        m.unlink_id = (uint64_t)id;
        m.has_from = m.has_to = 1;
        break;
    }
    case CNB_OP_SPAWN_REQUEST:
    case CNB_OP_SPAWN_REQUEST_TT:
        cnb__spawn_request(n, peer, b + off, m.payload, m.payload_len);
        goto out;
    case CNB_OP_SPAWN_REPLY:
    case CNB_OP_SPAWN_REPLY_TT:
        if (!cnb__relay_spawn_reply(n, peer, b + off))
            cnb__log(n, CNB_LOG_DEBUG, "ignored a spawn reply from %s", peer);
        goto out;
    default:
        cnb__log(n, CNB_LOG_DEBUG, "ignored control message %ld from %s", op, peer);
        goto out;
    }
    (void)dummy;
    if (rc)
        goto bad_ctrl;
    m.op = (int)op;
    if (reason_at >= 0) {
        /* Move the reason into payload form (with a version byte). */
        int e = reason_at;
        if (ei_skip_term(b, &e))
            goto bad_ctrl;
        free(pl_copy);
        pl_copy = malloc((size_t)(e - reason_at) + 1);
        if (!pl_copy)
            return;
        pl_copy[0] = 131;
        memcpy(pl_copy + 1, b + reason_at, (size_t)(e - reason_at));
        m.payload = (const char *)pl_copy;
        m.payload_len = (size_t)(e - reason_at) + 1;
    }

    /* Signals to a pid of an older incarnation of this node: dropped; links
     * and monitors answered as for a dead process. */
    if (m.has_to && stale_pid(n, &m.to) && op != CNB_OP_MONITOR_P_EXIT) {
        cnb__log(n, CNB_LOG_DEBUG, "dropped op %d from %s to a pid of an older creation (%u)",
                 m.op, peer, m.to.creation);
        if ((op == CNB_OP_LINK || op == CNB_OP_MONITOR_P) && c)
            reply_noproc(n, peer, (int)op, &m);
        goto out;
    }
    if (m.has_ref && op == CNB_OP_ALIAS_SEND && !strcmp(m.ref.node, n->name) &&
        m.ref.creation != n->creation)
        goto out;

    if (!m.has_to && !strcmp(m.toname, "net_kernel")) {
        /* Our net_kernel "process" lives as long as the connection: a monitor
         * on it (gen:call sets one) needs no record, since the caller's node
         * fires noconnection itself when the connection goes. */
        if (op == CNB_OP_REG_SEND && m.payload)
            net_kernel(n, &m);
        if (op == CNB_OP_REG_SEND || op == CNB_OP_MONITOR_P || op == CNB_OP_DEMONITOR_P)
            goto out;
    }
    if (cnb__relay_down(n, &m) || cnb__rt_deliver(n, &m))
        goto out;
    if (n->opts.on_message) {
        n->opts.on_message(n, &m, n->opts.user);
    } else if ((op == CNB_OP_LINK || op == CNB_OP_MONITOR_P) && c) {
        reply_noproc(n, peer, (int)op, &m);
    }
out:
    free(pl_copy);
    return;
bad_ctrl:
    free(pl_copy);
malformed:
    cnb__log(n, CNB_LOG_WARNING, "malformed control message from %s (%zu bytes): dropped", peer,
             len);
}
