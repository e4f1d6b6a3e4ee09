/* node_rt.h: the runtime side of the node, above the connection layer
 * (node_int.h): the policy for incoming messages (dispatch.c), spawn requests
 * and global resolver relays (spawn.c, spawn_relay.c), and the node's life
 * (node_rt.c), which creates the runtime and plugs it into the connection
 * layer through cnb_upper_t. Arrows: these files call the connection layer
 * and the runtime (runtime.h); the connection layer calls none of them.
 * Not part of the public API. Tests: tests/integration/dist_tests.erl,
 * global_resolver_tests.erl, hostile_signals_tests.erl. */
#ifndef CNB_NODE_RT_H
#define CNB_NODE_RT_H

#include "node_int.h"
#include "runtime.h"

/* spawn.c: SPAWN_REQUEST (erpc) -- global:resolve_it relayed, others notsup.
 * payload: the argument list with its version byte (NULL if none). */
void cnb__spawn_request(cnb_node_t *n, const char *peer, const char *ctrl, const char *payload,
                        size_t payload_len);
/* SPAWN_REPLY {31, Req, To, Flags, Pid} (pid != NULL) or {.., Flags, Err}. */
void cnb__spawn_reply(cnb_node_t *n, const char *peer, const erlang_ref *req,
                      const erlang_pid *to, int flags, const erlang_pid *pid, const char *err);

/* worker_types.c: a SPAWN_REQUEST whose module is a registered worker type
 * (ctrl: the control tuple; opts_at: where its OptList starts; args: the
 * argument list with version byte, or NULL). Returns 1 when it was one (it is
 * answered from then on), 0 when not. I/O thread. */
int cnb__types_spawn(cnb_node_t *n, const char *peer, const erlang_ref *req,
                     const erlang_pid *from, const char *type, const char *fun, long arity,
                     const char *ctrl, int opts_at, const char *args, size_t args_len);

/* spawn_relay.c: global:resolve_it run by the requesting node for us. All on
 * the I/O thread. relay_start returns 0 (the relay owns the request from then
 * on: it answers it) or CNB_ENOMEM (too many in flight, out of memory). The
 * _spawn_reply and _down calls return 1 when the message was a relay's. */
int cnb__relay_start(cnb_node_t *n, const char *peer, const erlang_ref *req,
                     const erlang_pid *from, const erlang_pid *gl, const char *args,
                     size_t args_len, const char *name, size_t name_len);
int cnb__relay_spawn_reply(cnb_node_t *n, const char *peer, const char *ctrl);
int cnb__relay_down(cnb_node_t *n, const cnb_msg_t *m);
void cnb__relay_nodedown(cnb_node_t *n, const char *peer);
void cnb__relay_destroy(cnb_node_t *n); /* after the I/O thread has stopped */
/* Prints the term t (no version byte) for a log line, truncated to cap. */
void cnb__name_text(const char *t, size_t len, char *out, size_t cap);

/* dispatch.c: the runtime's cnb_upper_t.message (see node_int.h): answers
 * what the node itself owns, hands signals to the runtime, the rest to
 * opts.on_message. */
/* dispatch.c: answers the '$gen_call' in m (From's tag at payload[tag_start,
 * tag_end)) with {Tag, reply}, through the caller's alias when the tag is
 * [alias|Ref]. Returns 0 or the send's error (logged). */
int cnb__gen_reply_atom(cnb_node_t *n, const cnb_msg_t *m, const erlang_pid *from,
                        int tag_start, int tag_end, const char *reply);

/* visible.c: the node's global_name_server when opts.visible (n->vis set by
 * cnb__visible_create). take: 1 when m was for it (answered or dropped), 0
 * when not. nodedown: forgets the peer's sync session. I/O thread. */
int cnb__visible_create(cnb_node_t *n);
void cnb__visible_destroy(cnb_node_t *n);
int cnb__visible_take(cnb_node_t *n, const cnb_msg_t *m);
void cnb__visible_nodedown(cnb_node_t *n, const char *peer);
/* The names (and lock holds) of our own pid go when it ends; whereis reads the
 * local name table (CNB_ESTATE when not visible). */
void cnb__visible_proc_exit(cnb_node_t *n, const erlang_pid *pid);
int cnb__visible_whereis(cnb_node_t *n, const char *name, size_t len, erlang_pid *pid);

/* Every 100 ms (I/O thread): init_connects held past their time are answered
 * (visible.c). Nothing when not visible. */
void cnb__visible_tick(cnb_node_t *n);

/* visible.c: the name and lock tables (glob_table.h) of a visible node. */
struct cnb_gtab *cnb__visible_gt(cnb_node_t *n);

/* glob_reg.c: the registrar of a visible node (n->greg, made after n->vis):
 * cnb_global_register/re_register/unregister through global's protocol.
 * run: any thread but the I/O thread (CNB_ESTATE there, as cnb_call); blocks
 * for at most timeout_ms; returns as cnb_global_register (CNB_ETIMEDOUT too).
 * take: 1 when m was for the registrar's pid. known: node is now in global's
 * `known` (visible.c, at the end of a sync session and on new_nodes);
 * nodedown: it is not, and counts as answered. I/O thread but run. */
enum cnb__greg_op { CNB__GREG_REGISTER, CNB__GREG_RE_REGISTER, CNB__GREG_UNREGISTER };
int cnb__greg_create(cnb_node_t *n, struct cnb_gtab *gt);
void cnb__greg_destroy(cnb_node_t *n);
int cnb__greg_run(cnb_node_t *n, int op, const char *name, size_t len, const erlang_pid *pid,
                  int resolve, unsigned timeout_ms, erlang_pid *owner);
int cnb__greg_take(cnb_node_t *n, const cnb_msg_t *m);
void cnb__greg_known(cnb_node_t *n, const char *node);
int cnb__greg_is_known(cnb_node_t *n, const char *node);
/* The k-th node in known (NULL past the last); valid until known changes. */
const char *cnb__greg_known_at(cnb_node_t *n, size_t k);
void cnb__greg_nodedown(cnb_node_t *n, const char *peer);

/* pg_scope.c: the scope processes of pg when opts.visible (n->pg set by
 * cnb__pg_create). take: 1 when m was for a scope. nodedown: the peer's scopes
 * and members go. proc_exit: a local worker's memberships go (runtime.h). */
int cnb__pg_create(cnb_node_t *n);
void cnb__pg_destroy(cnb_node_t *n);
int cnb__pg_take(cnb_node_t *n, const cnb_msg_t *m);
void cnb__pg_nodedown(cnb_node_t *n, const char *peer);
void cnb__pg_proc_exit(cnb_node_t *n, const erlang_pid *pid);

void cnb__dispatch(cnb_node_t *n, const cnb_decoded_t *d, size_t len, int from_wire);

#endif /* CNB_NODE_RT_H */
