/* demo.h: the demo workers of the `cnode` program (demo.c). */
#ifndef CNB_DEMO_H
#define CNB_DEMO_H

#include "cnode_bridge.h"

/* Starts `echo` and `cache_sup` (see demo.c). Returns 0 or a CNB_E* code. */
int cnb_demo_start(cnb_node_t *node);

#endif
