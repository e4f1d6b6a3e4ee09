/* runtime.h: the process runtime as the rest of the node sees it (runtime.c
 * and the rt_*.c files: processes, mailboxes, the worker pool, signals,
 * gen_server/sys; links.c with proc_links.c and link_names.c: links,
 * monitors; calls.c: calls from C; timer.c: send_after). Not part of the
 * public API.
 * Tests: tests/integration/runtime_tests.erl, hostile_signals_tests.erl. */
#ifndef CNB_RUNTIME_H
#define CNB_RUNTIME_H

#include <pthread.h>
#include <stdint.h>

#include "cnode_bridge.h"

typedef struct cnb_rt cnb_rt_t;
typedef struct cnb_timers cnb_timers_t;

/* Created with the node, started with it. */
int cnb__rt_create(cnb_node_t *n, unsigned threads, cnb_rt_t **out);
int cnb__rt_start(cnb_rt_t *rt);
void cnb__rt_destroy(cnb_rt_t *rt); /* after the I/O thread has stopped */

/* I/O thread: a decoded control message. Returns 1 when the runtime took it
 * (a worker, a call in flight, or a reply it owes), 0 when nothing of the
 * runtime is addressed. */
int cnb__rt_deliver(cnb_node_t *n, const cnb_msg_t *m);
/* I/O thread: a connection went down (or could not be made). */
void cnb__rt_nodedown(cnb_node_t *n, const char *peer);
/* Any thread, lock-free: nonzero while a '$gen_call' delivered is not
 * handled yet (its reply may come soon: the I/O thread spins for it). */
int cnb__rt_busy(cnb_node_t *n);
/* A pool thread about to wait long for other nodes (glob_reg.c's callers):
 * the '$gen_call' it handles, if any, stops counting for cnb__rt_busy, so
 * that the I/O thread does not spin for a reply that will not come soon.
 * Off the pool (a user's thread) it does nothing. */
void cnb__rt_wait_begin(cnb_node_t *n);

/* calls.c */
typedef struct cnb_calls cnb_calls_t;
int cnb__calls_create(cnb_calls_t **out);
void cnb__calls_destroy(cnb_calls_t *c);
/* Returns 1 if m completed a call in flight. */
int cnb__calls_deliver(cnb_node_t *n, const cnb_msg_t *m);
void cnb__calls_nodedown(cnb_node_t *n, const char *peer);

/* timer.c */
int cnb__timers_create(cnb_node_t *n, cnb_timers_t **out);
void cnb__timers_destroy(cnb_timers_t *t);

/* rt_signals.c: control-message encoders shared by the runtime and calls.c:
 * each sends one signal to the node that owns `to` (this node included, by
 * loopback). Each returns 0 once queued, or a negative CNB_E* code
 * (CNB_ENOMEM: not encoded, and logged). */
int cnb__sig_link(cnb_node_t *n, const erlang_pid *from, const erlang_pid *to);
int cnb__sig_unlink(cnb_node_t *n, uint64_t id, const erlang_pid *from, const erlang_pid *to);
int cnb__sig_unlink_ack(cnb_node_t *n, uint64_t id, const erlang_pid *from,
                        const erlang_pid *to);
int cnb__sig_exit(cnb_node_t *n, int op, const erlang_pid *from, const erlang_pid *to,
                  const char *reason, size_t len);
/* to_name != NULL: monitor by name on node `peer`. */
int cnb__sig_monitor(cnb_node_t *n, int op, const erlang_pid *from, const erlang_pid *to,
                     const char *to_name, const char *peer, const erlang_ref *ref);
/* A message msg (len bytes, version byte first) to pid to, or to name at
 * peer from from: what cnb_send and cnb_reg_send send, through here so that
 * a burst holds them too. */
int cnb__sig_send(cnb_node_t *n, const erlang_pid *to, const char *msg, size_t len);
int cnb__sig_reg_send(cnb_node_t *n, const erlang_pid *from, const char *peer, const char *name,
                      const char *msg, size_t len);
/* DOWN: obj_name != NULL when the monitor was set by name. */
int cnb__sig_down(cnb_node_t *n, const erlang_pid *obj, const char *obj_name,
                  const erlang_pid *to, const erlang_ref *ref, const char *reason, size_t len);

/* rt_signals.c: a worker's end sends its exits, DOWNs and demonitors in one
 * burst: between begin and end, the signals this thread sends are framed
 * and held, and end hands them all to the I/O thread back to back, in
 * order, so that one wake-up of it sends them all (handed one by one as
 * they were encoded, each could cost a wake-up of its own). Only the
 * thread that began the burst is affected. */
void cnb__sig_burst_begin(void);
void cnb__sig_burst_end(cnb_node_t *n);

/* rt_signals.c: the one answer to a link or monitor m that cannot be made:
 * an exit (LINK) or a DOWN (MONITOR_P, by pid or name) with reason why, an
 * atom (noproc: no such process; system_limit: the peer's cap), from m's
 * target to m's sender. Returns as the encoders above. */
int cnb__sig_refuse(cnb_node_t *n, const cnb_msg_t *m, const char *why);

/* rt_gen.c: {'$gen_call', {From, [alias|Alias]}, Req} (Req with version
 * byte, len bytes) into x, made here (the caller frees it on 0). The reply
 * comes back through the alias: cnb_reply's side of the same tag. Returns 0
 * or CNB_ENOMEM (x freed). */
int cnb__gen_call_msg(ei_x_buff *x, const erlang_pid *from, const erlang_ref *alias,
                      const char *req, size_t len);

/* rt_table.c: pid and ref equality (node, numbers, creation). */
int cnb__pid_eq(const erlang_pid *a, const erlang_pid *b);
int cnb__ref_eq(const erlang_ref *a, const erlang_ref *b);

/* rt_signals.c: an atom as a complete term with version byte into buf
 * (at least the atom's length + 5 bytes). Returns its length. */
size_t cnb__atom_term(char *buf, const char *atom);

#endif /* CNB_RUNTIME_H */
