/* registry_worker.h: the C node's side of cnode_registry: a worker, registered
 * locally as `cnode_registry', that owns the node's key registry (core/registry,
 * a shared-memory segment) and serves BEAM nodes that attach to it: the
 * protocol below. Its C API (starting it, helpers that register terms) is
 * public, in include/cnb_registry_worker.h. Implementation:
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

#include "cnb_registry_worker.h"

#endif /* CNB_REGISTRY_WORKER_H */
