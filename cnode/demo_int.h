/* demo_int.h: what the demo workers' files (demo.c, demo_probe.c) share. */
#ifndef CNB_DEMO_INT_H
#define CNB_DEMO_INT_H

#include "cnode_bridge.h"

/* A handle_call's result once it has encoded its reply: e, the encoders'
 * results OR-ed, nonzero when one ran out of memory (then the worker fails
 * with CNB_ENOMEM instead of sending half a reply). */
static inline int replied(int e, int rc)
{
    return e ? CNB_ENOMEM : rc;
}

/* {error, Why} as the reply. */
static inline int error_reply(ei_x_buff *reply, const char *why)
{
    int e = ei_x_encode_tuple_header(reply, 2);
    e |= ei_x_encode_atom(reply, "error");
    e |= ei_x_encode_atom(reply, why);
    return replied(e, CNB_REPLY);
}

/* {ok, Pid} as the reply. */
static inline int ok_pid(ei_x_buff *reply, const erlang_pid *pid)
{
    int e = ei_x_encode_tuple_header(reply, 2);
    e |= ei_x_encode_atom(reply, "ok");
    e |= ei_x_encode_pid(reply, pid);
    return replied(e, CNB_REPLY);
}

/* The `probe` worker (demo_probe.c). */
extern const cnb_worker_ops_t cnb__demo_probe_ops;

#endif
