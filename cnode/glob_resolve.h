/* glob_resolve.h: the name side of a :global sync session in visible mode
 * (glob_resolve.c): a peer's exchanged names into our table, clashes with our
 * own workers' names resolved as global's exchange_names does, and our
 * `resolved` cast. visible.c calls it. */
#ifndef CNB_GLOB_RESOLVE_H
#define CNB_GLOB_RESOLVE_H

#include "glob_table.h"

typedef struct cnb_gres cnb_gres_t;

cnb_gres_t *cnb__gres_create(void); /* NULL when out of memory */
/* Waits for resolver threads still running (each ends within its rpc
 * timeout), then frees. */
void cnb__gres_destroy(cnb_gres_t *g);

/* The peer's {exchange, Node, Names, _, Tag}: names (ETF at b[i..], a list
 * of {Name, Pid, Method}) go into t; clashes are resolved when our name
 * sorts below the peer's; then {resolved, node(), Res, [], unused, [],
 * HisTag} (tag: his_tag, tlen bytes of ETF) goes to the peer, at once or,
 * when a resolver must run on an Erlang node, from a resolver thread. I/O
 * thread. */
void cnb__gres_exchange(cnb_node_t *n, cnb_gres_t *g, cnb_gtab_t *t, const erlang_pid *locker,
                        const char *peer, const char *b, int i, const char *his_tag, int tlen);

#endif
