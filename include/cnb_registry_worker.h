/* cnb_registry_worker.h: the C node's shared key registry for C code: the
 * `cnode_registry' worker that owns it (the registry BEAM code attaches to
 * with cnode_registry:attach/2) and helpers that register ei terms in it.
 * The registry's own calls (lookups, scans, the change feed) are in
 * cnb_registry.h; the worker's protocol for BEAM nodes in
 * cnode/registry_worker.h. Implementation: cnode/registry_worker.c,
 * registry_terms.c. Tests: tests/integration/nif_tests.erl,
 * tests/integration/c_service_tests.erl (examples/c_service). */
#ifndef CNB_REGISTRY_WORKER_PUBLIC_H
#define CNB_REGISTRY_WORKER_PUBLIC_H

#include <stddef.h>
#include <sys/types.h>

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
 * returns. Returns 0 or a negative code (out is then unchanged): among them
 * CNB_ECORRUPT when an entry's bytes, which any process with the segment can
 * write, are no whole term or its owner's node no atom's text (nothing a
 * peer's VM could not decode is appended). */
int cnb_registry_encode_lookup(struct cnb_registry *reg, const char *key, size_t key_len,
                               ei_x_buff *out);

#ifdef __cplusplus
}
#endif
#endif /* CNB_REGISTRY_WORKER_PUBLIC_H */
