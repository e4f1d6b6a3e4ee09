/* send.c: building outgoing frames and the public send functions, from any
 * thread (inbox.c hands the frames to the I/O thread).
 * Tests: tests/integration/dist_tests.erl, bench/bench_dist.c. */
#include "node_int.h"

#include <stdlib.h>
#include <string.h>

cnb_chunk_t *cnb__chunk_frame(const char *peer, const char *ctrl, size_t ctrl_len,
                              const char *payload, size_t payload_len)
{
    /* ctrl and payload come with their 131 version bytes; after a distribution
     * header the terms go without them. Every peer we accept negotiated
     * FRAGMENTS, and erts then insists on a header (131 68, no atom cache
     * references) on every message: the pass-through form (112) is refused. */
    ctrl++, ctrl_len--;
    if (payload) {
        payload++;
        payload_len--;
    } else {
        payload_len = 0;
    }
    size_t body = 3 + ctrl_len + payload_len;
    size_t dest_len = peer ? strlen(peer) + 1 : 0;
    if (body > UINT32_MAX)
        return NULL;
    cnb_chunk_t *ch = malloc(sizeof(*ch) + 4 + body + dest_len);
    if (!ch)
        return NULL;
    ch->next = NULL;
    ch->dest = NULL;
    if (peer) { /* after the frame bytes: the wire never sees it */
        memcpy(ch->data + 4 + body, peer, dest_len);
        ch->dest = (const char *)ch->data + 4 + body;
    }
    ch->off = 0;
    ch->len = 4 + body;
    cnb__put32(ch->data, (uint32_t)body);
    ch->data[4] = 131;
    ch->data[5] = 68;
    ch->data[6] = 0; /* NumberOfAtomCacheRefs */
    memcpy(ch->data + 7, ctrl, ctrl_len);
    if (payload_len)
        memcpy(ch->data + 7 + ctrl_len, payload, payload_len);
    return ch;
}

int cnb_send_ctrl(cnb_node_t *n, const char *peer, const char *ctrl, size_t ctrl_len,
                  const char *payload, size_t payload_len)
{
    if (!peer || !ctrl || ctrl_len < 2 || (unsigned char)ctrl[0] != 131 ||
        (payload && (payload_len < 2 || (unsigned char)payload[0] != 131)))
        return CNB_EINVAL;
    if (strlen(peer) >= CNB_NAME_MAX || !strchr(peer, '@'))
        return CNB_EINVAL;
    cnb_chunk_t *ch = cnb__chunk_frame(peer, ctrl, ctrl_len, payload, payload_len);
    if (!ch)
        return CNB_ENOMEM;
    return cnb__submit(n, ch);
}

int cnb_send(cnb_node_t *n, const erlang_pid *from, const erlang_pid *to, const char *msg,
             size_t len)
{
    if (!to || !msg)
        return CNB_EINVAL;
    char buf[2 * MAXATOMLEN_UTF8 + 64];
    int i = 0;
    /* SEND {2, '', To}: every node accepts it; SEND_SENDER only adds the
     * sender for tracing, and would need the peer's flags here. */
    if (ei_encode_version(buf, &i) || ei_encode_tuple_header(buf, &i, 3) ||
        ei_encode_long(buf, &i, CNB_OP_SEND) || ei_encode_atom(buf, &i, ""))
        return CNB_EINVAL;
    if (ei_encode_pid(buf, &i, to))
        return CNB_EINVAL;
    (void)from; /* SEND carries no sender */
    return cnb_send_ctrl(n, to->node, buf, (size_t)i, msg, len);
}

/* The sender a signal names: from, or (from NULL) a fresh pid of the node's
 * made in *own. */
static const erlang_pid *sender(cnb_node_t *n, const erlang_pid *from, erlang_pid *own)
{
    if (from)
        return from;
    cnb_node_make_pid(n, own);
    return own;
}

int cnb_reg_send(cnb_node_t *n, const erlang_pid *from, const char *peer, const char *name,
                 const char *msg, size_t len)
{
    if (!peer || !name || !msg || strlen(name) >= MAXATOMLEN_UTF8)
        return CNB_EINVAL;
    char buf[3 * MAXATOMLEN_UTF8 + 64];
    int i = 0;
    erlang_pid own;
    from = sender(n, from, &own);
    if (ei_encode_version(buf, &i) || ei_encode_tuple_header(buf, &i, 4) ||
        ei_encode_long(buf, &i, CNB_OP_REG_SEND) || ei_encode_pid(buf, &i, from) ||
        ei_encode_atom(buf, &i, "") || ei_encode_atom(buf, &i, name))
        return CNB_EINVAL;
    return cnb_send_ctrl(n, peer, buf, (size_t)i, msg, len);
}

int cnb_alias_send(cnb_node_t *n, const erlang_pid *from, const erlang_ref *alias,
                   const char *msg, size_t len)
{
    if (!alias || !msg)
        return CNB_EINVAL;
    char buf[3 * MAXATOMLEN_UTF8 + 64];
    int i = 0;
    erlang_pid own;
    from = sender(n, from, &own);
    /* ALIAS_SEND {33, From, Alias} is deprecated since OTP 28 (EEP 76) and
     * due to go in OTP 30: a peer that offers ALTACT_SIG gets
     * ALTACT_SIG_SEND {37, ALIAS, From, Alias} instead. */
    int altact = (cnb_node_peer_flags(n, alias->node) & CNB_DFLAG_ALTACT_SIG) != 0;
    if (ei_encode_version(buf, &i) || ei_encode_tuple_header(buf, &i, altact ? 4 : 3) ||
        ei_encode_long(buf, &i, altact ? CNB_OP_ALTACT_SIG_SEND : CNB_OP_ALIAS_SEND) ||
        (altact && ei_encode_long(buf, &i, CNB_ALTACT_ALIAS)) || ei_encode_pid(buf, &i, from) ||
        ei_encode_ref(buf, &i, alias))
        return CNB_EINVAL;
    return cnb_send_ctrl(n, alias->node, buf, (size_t)i, msg, len);
}
