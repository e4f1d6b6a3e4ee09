/* runtime.h: internals of the process runtime (runtime.c: processes,
 * mailboxes, the worker pool; links.c with proc_links.c and link_names.c:
 * links, monitors; calls.c: calls from C and replies; timer.c: send_after).
 * Not part of the public API.
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

/* Control-message encoders shared by runtime.c and calls.c: each sends one
 * signal to the node that owns `to` (this node included, by loopback). */
int cnb__sig_link(cnb_node_t *n, const erlang_pid *from, const erlang_pid *to);
int cnb__sig_unlink(cnb_node_t *n, uint64_t id, const erlang_pid *from, const erlang_pid *to);
int cnb__sig_unlink_ack(cnb_node_t *n, uint64_t id, const erlang_pid *from,
                        const erlang_pid *to);
int cnb__sig_exit(cnb_node_t *n, int op, const erlang_pid *from, const erlang_pid *to,
                  const char *reason, size_t len);
/* to_name != NULL: monitor by name on node `peer`. */
int cnb__sig_monitor(cnb_node_t *n, int op, const erlang_pid *from, const erlang_pid *to,
                     const char *to_name, const char *peer, const erlang_ref *ref);
/* DOWN: obj_name != NULL when the monitor was set by name. */
int cnb__sig_down(cnb_node_t *n, const erlang_pid *obj, const char *obj_name,
                  const erlang_pid *to, const erlang_ref *ref, const char *reason, size_t len);

/* Pid and ref equality (node, numbers, creation). */
int cnb__pid_eq(const erlang_pid *a, const erlang_pid *b);
int cnb__ref_eq(const erlang_ref *a, const erlang_ref *b);

/* Encodes an atom as a complete term with version byte into buf (>= 300
 * bytes). Returns its length. */
size_t cnb__atom_term(char *buf, const char *atom);

#endif /* CNB_RUNTIME_H */
