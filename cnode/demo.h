/* demo.h: the demo workers of the `cnode` program (demo.c). */
#ifndef CNB_DEMO_H
#define CNB_DEMO_H

#include "cnb_registry.h"
#include "cnode_bridge.h"

/* Starts `echo`, `cache_sup` and `probe` and registers the worker type
 * `cache_worker` (see demo.c). reg: the node's key
 * registry (from cnb_registry_worker_start), where cache workers register
 * {cache, MediaId} and that echo's {lookup, Key} reads; NULL for none.
 * Returns 0 or a CNB_E* code. */
int cnb_demo_start(cnb_node_t *node, struct cnb_registry *reg);

#endif
