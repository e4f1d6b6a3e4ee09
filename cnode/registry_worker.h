/* registry_worker.h: the C node's side of cnode_registry: a worker, registered
 * locally as `cnode_registry', that owns the node's key registry (core/registry,
 * a shared-memory segment) and serves BEAM nodes that attach to it; plus
 * helpers for C code that registers terms in that registry. Implementation:
 * cnode/registry_worker.c, registry_serve.c (the requests), registry_terms.c
 * (terms). Tests: tests/integration/nif_tests.erl.
 *
 * Protocol: gen_server calls to {cnode_registry, CNode}. Keys, values and pids
 * are ordinary terms; replies are those of Elixir's Registry where one exists.
 *   info                       -> {ok, #{path => <<Path>>, kind => unique | duplicate,
 *                                         host => <<Hostname>>, node => CNode,
 *                                         creation => C, os_pid => OsPid}}
 *   {attach, Proxy}            -> {ok, Info}: the worker monitors Proxy; when it
 *                                 goes (detach, crash, its node dies or the
 *                                 connection drops) and no other proxy of the same
 *                                 node and creation is attached, every entry owned
 *                                 by that node (and creation) is removed.
 *   {detach, Proxy}            -> ok (the same, at once)
 * The operations, for attachers on another host (same-host attachers map the
 * segment instead; Path is readable only by this OS user):
 *   {register, Key, Pid, Value}        -> {ok, WorkerPid} | {error, {already_registered, Pid}}
 *                                         (Pid, if not of this node, is monitored:
 *                                         its entries go when it dies)
 *   {unregister, Key, Pid}             -> ok
 *   {unregister_values, Key, Pid, Vs}  -> N removed (entries of Key and Pid whose
 *                                         value is one of Vs)
 *   {lookup, Key}                      -> [{Pid, Value}]   (registration order)
 *   {values, Key, Pid}                 -> [Value]
 *   {keys, Pid}                        -> [Key]
 *   {update_value, Key, Pid, Value}    -> ok | error
 *   count                              -> N
 *   {scan, Cursor, Max}                -> {[{Key, Pid, Value}], NextCursor | done}
 *                                         (Cursor 0 starts)
 *   {meta, Key}                        -> {ok, Value} | error
 *   {put_meta, Key, Value}             -> ok
 *   {delete_meta, Key}                 -> ok
 *   feed_head                          -> Seq
 *   {feed_poll, Seq, Max}              -> {Events, NextSeq, Missed}, events
 *                                         {register | update, Key, Pid, Value} and
 *                                         {unregister, Key, Pid}, oldest first
 * The operations from register to delete_meta are core's (core/registry_ops.c,
 * which the NIF runs too), so they answer as the NIF does: a bad argument (a
 * meta key that is neither an atom nor a tuple, update_value on a duplicate
 * registry, a term over the limits) gets {error, badarg}; a write's runtime
 * failure {error, Reason}; a read's (lookup, values, keys, meta, scan,
 * feed_poll) {error, {cnode_registry, Reason}}, which cnode_registry_attach
 * raises as the NIF raises it. Reason is cnb_erratom's atom for the code
 * (core's one list). A malformed or unknown request gets {error, badarg}.
 */
#ifndef CNB_REGISTRY_WORKER_H
#define CNB_REGISTRY_WORKER_H

#include <stddef.h>

#include "cnb_registry.h"
#include "cnode_bridge.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Starts the `cnode_registry' worker of node (after cnb_node_start). It opens
 * the registry segment at segment_path, or when NULL creates one named
 * /dev/shm/cnb-<node>-<creation in hex> (unique keys, mode 0600; the name is a
 * link to this process's sealed memfd, see cnb_registry.h), first removing
 * /dev/shm/cnb-* names that lead nowhere any more (left by C nodes killed with
 * SIGKILL). The name is unlinked when the worker stops cleanly; the segment
 * itself goes with the last process that has it open.
 *
 * out: if not NULL, *out gets the registry handle for other C code of this
 * program (cnb_registry_*_term below); the caller then owns the handle and
 * closes it with cnb_registry_close after cnb_node_shutdown. If NULL, the
 * worker closes the handle when it stops.
 *
 * Returns 0, or CNB_EEXIST (the name cnode_registry is taken), a
 * cnb_registry_open error, CNB_ENOMEM, CNB_ECLOSED. */
int cnb_registry_worker_start(cnb_node_t *node, const char *segment_path,
                              struct cnb_registry **out);

/* Conversions between ei's erlang_pid and the registry's cnb_pid_t. Return 0,
 * or CNB_EINVAL for a node name the registry cannot hold (empty or over 255
 * bytes). */
int cnb_registry_pid_from_ei(const erlang_pid *in, cnb_pid_t *out);
void cnb_registry_pid_to_ei(const cnb_pid_t *in, erlang_pid *out);

/* Registers owner under key with value; key and value are ETF (with or without
 * the 131 version byte), e.g. an ei_x_buff's buff/index. Returns as
 * cnb_registry_register (0, CNB_EEXIST, ...) or a cnb_term_canonical error. */
int cnb_registry_register_term(struct cnb_registry *reg, const erlang_pid *owner,
                               const char *key, size_t key_len, const char *value,
                               size_t value_len);

/* Removes owner's entries under key. Returns how many, or a negative code. */
ssize_t cnb_registry_unregister_term(struct cnb_registry *reg, const erlang_pid *owner,
                                     const char *key, size_t key_len);

/* Appends to out the term [{Pid, Value}] of the entries under key (ETF, with
 * or without version byte), in registration order: what a lookup from Erlang
 * returns. Returns 0 or a negative code (out is then unchanged). */
int cnb_registry_encode_lookup(struct cnb_registry *reg, const char *key, size_t key_len,
                               ei_x_buff *out);

#ifdef __cplusplus
}
#endif
#endif /* CNB_REGISTRY_WORKER_H */
