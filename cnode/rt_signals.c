/* rt_signals.c: the control messages the runtime sends (link, unlink, exit,
 * monitor, DOWN), each encoded once here, and the one answer to a link or
 * monitor that cannot be made (cnb__sig_refuse: noproc, system_limit).
 * Tests: tests/integration/runtime_tests.erl, hostile_signals_tests.erl. */
#include "runtime_int.h"

#include <string.h>

size_t cnb__atom_term(char *buf, const char *atom)
{
    int i = 0;
    ei_encode_version(buf, &i);
    ei_encode_atom(buf, &i, atom);
    return (size_t)i;
}

int cnb__rt_peer_has(cnb_node_t *n, const char *peer, uint64_t flag)
{
    if (!strcmp(peer, cnb_node_name(n)))
        return 1;
    return (cnb_node_peer_flags(n, peer) & flag) != 0;
}

/* The burst this thread holds (cnb__sig_burst_begin): on while set. */
static __thread int burst_on;
static __thread cnb_chunk_t *burst_head, *burst_tail;

void cnb__sig_burst_begin(void)
{
    burst_on = 1;
    burst_head = burst_tail = NULL;
}

void cnb__sig_burst_end(cnb_node_t *n)
{
    cnb_chunk_t *ch = burst_head;
    burst_on = 0;
    burst_head = burst_tail = NULL;
    while (ch) {
        cnb_chunk_t *nx = ch->next;
        cnb__submit(n, ch); /* takes ch; ECLOSED only when the node stops */
        ch = nx;
    }
}

/* In a burst: ctrl and payload framed for peer and held. Returns as
 * cnb_send_ctrl (whose checks the runtime's own signals always pass). */
static int burst_add(const char *peer, const ei_x_buff *ctrl, const char *payload, size_t plen)
{
    if (strlen(peer) >= CNB_NAME_MAX || !strchr(peer, '@'))
        return CNB_EINVAL;
    cnb_chunk_t *ch = cnb__chunk_frame(peer, ctrl->buff, (size_t)ctrl->index, payload, plen);
    if (!ch)
        return CNB_ENOMEM;
    if (burst_tail)
        burst_tail->next = ch;
    else
        burst_head = ch;
    burst_tail = ch;
    return 0;
}

/* Sends the control tuple in ctrl (err: its encoders' results OR-ed) with
 * payload to peer, and frees ctrl. Returns cnb_send_ctrl's result, or
 * CNB_ENOMEM when an encoder failed: nothing sent, and a line logged, since
 * most callers owe the signal and have nobody to hand the error to. */
static int send_ctrl(cnb_node_t *n, const char *peer, ei_x_buff *ctrl, int err,
                     const char *payload, size_t plen)
{
    int rc = CNB_ENOMEM;
    if (err)
        cnb__log(n, CNB_LOG_WARNING, "out of memory: a signal to %s was not sent", peer);
    else if (burst_on)
        rc = burst_add(peer, ctrl, payload, plen);
    else
        rc = cnb_send_ctrl(n, peer, ctrl->buff, (size_t)ctrl->index, payload, plen);
    ei_x_free(ctrl);
    return rc;
}

/* {Op, From, To} or, with id, {Op, Id, From, To}: the shape of LINK, UNLINK,
 * UNLINK_ID, UNLINK_ID_ACK and the EXITs. */
static int send_pair(cnb_node_t *n, long op, const uint64_t *id, const erlang_pid *from,
                     const erlang_pid *to, const char *payload, size_t plen)
{
    ei_x_buff x;
    if (ei_x_new_with_version(&x))
        return CNB_ENOMEM;
    int e = ei_x_encode_tuple_header(&x, id ? 4 : 3);
    e |= ei_x_encode_long(&x, op);
    if (id)
        e |= ei_x_encode_ulonglong(&x, *id);
    e |= ei_x_encode_pid(&x, from);
    e |= ei_x_encode_pid(&x, to);
    return send_ctrl(n, to->node, &x, e, payload, plen);
}

int cnb__sig_send(cnb_node_t *n, const erlang_pid *to, const char *msg, size_t len)
{
    ei_x_buff x; /* SEND {2, '', To}, as cnb_send */
    if (ei_x_new_with_version(&x))
        return CNB_ENOMEM;
    int e = ei_x_encode_tuple_header(&x, 3);
    e |= ei_x_encode_long(&x, CNB_OP_SEND);
    e |= ei_x_encode_atom(&x, "");
    e |= ei_x_encode_pid(&x, to);
    return send_ctrl(n, to->node, &x, e, msg, len);
}

int cnb__sig_reg_send(cnb_node_t *n, const erlang_pid *from, const char *peer, const char *name,
                      const char *msg, size_t len)
{
    ei_x_buff x; /* REG_SEND {6, From, '', Name}, as cnb_reg_send */
    if (ei_x_new_with_version(&x))
        return CNB_ENOMEM;
    int e = ei_x_encode_tuple_header(&x, 4);
    e |= ei_x_encode_long(&x, CNB_OP_REG_SEND);
    e |= ei_x_encode_pid(&x, from);
    e |= ei_x_encode_atom(&x, "");
    e |= ei_x_encode_atom(&x, name);
    return send_ctrl(n, peer, &x, e, msg, len);
}

int cnb__sig_link(cnb_node_t *n, const erlang_pid *from, const erlang_pid *to)
{
    return send_pair(n, CNB_OP_LINK, NULL, from, to, NULL, 0);
}

int cnb__sig_unlink(cnb_node_t *n, uint64_t id, const erlang_pid *from, const erlang_pid *to)
{
    if (cnb__rt_peer_has(n, to->node, CNB_DFLAG_UNLINK_ID))
        return send_pair(n, CNB_OP_UNLINK_ID, &id, from, to, NULL, 0);
    return send_pair(n, CNB_OP_UNLINK, NULL, from, to, NULL, 0);
}

int cnb__sig_unlink_ack(cnb_node_t *n, uint64_t id, const erlang_pid *from, const erlang_pid *to)
{
    return send_pair(n, CNB_OP_UNLINK_ID_ACK, &id, from, to, NULL, 0);
}

int cnb__sig_exit(cnb_node_t *n, int op, const erlang_pid *from, const erlang_pid *to,
                  const char *reason, size_t len)
{
    return send_pair(n, op == CNB_OP_EXIT2 ? CNB_OP_PAYLOAD_EXIT2 : CNB_OP_PAYLOAD_EXIT, NULL,
                     from, to, reason, len);
}

/* {Op, A, B, Ref} where A (or B) is a name when a_name (b_name) is set. */
static int send_mon(cnb_node_t *n, const char *peer, long op, const erlang_pid *a,
                    const char *a_name, const erlang_pid *b, const char *b_name,
                    const erlang_ref *ref, const char *payload, size_t plen)
{
    ei_x_buff x;
    if (ei_x_new_with_version(&x))
        return CNB_ENOMEM;
    int e = ei_x_encode_tuple_header(&x, 4);
    e |= ei_x_encode_long(&x, op);
    e |= a_name ? ei_x_encode_atom(&x, a_name) : ei_x_encode_pid(&x, a);
    e |= b_name ? ei_x_encode_atom(&x, b_name) : ei_x_encode_pid(&x, b);
    e |= ei_x_encode_ref(&x, ref);
    return send_ctrl(n, peer, &x, e, payload, plen);
}

int cnb__sig_monitor(cnb_node_t *n, int op, const erlang_pid *from, const erlang_pid *to,
                     const char *to_name, const char *peer, const erlang_ref *ref)
{
    return send_mon(n, to_name ? peer : to->node, op, from, NULL, to, to_name, ref, NULL, 0);
}

int cnb__sig_down(cnb_node_t *n, const erlang_pid *obj, const char *obj_name,
                  const erlang_pid *to, const erlang_ref *ref, const char *reason, size_t len)
{
    return send_mon(n, to->node, CNB_OP_PAYLOAD_MONITOR_P_EXIT, obj, obj_name, to, NULL, ref,
                    reason, len);
}

int cnb__sig_refuse(cnb_node_t *n, const cnb_msg_t *m, const char *why)
{
    char r[MAXATOMLEN_UTF8 + 8];
    size_t rl = cnb__atom_term(r, why);
    if (m->op == CNB_OP_LINK)
        return cnb__sig_exit(n, CNB_OP_EXIT, &m->to, &m->from, r, rl);
    return cnb__sig_down(n, &m->to, m->has_to ? NULL : m->toname, &m->from, &m->ref, r, rl);
}
