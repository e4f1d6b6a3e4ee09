/* glob_pop.h: global's prevent_overlapping_partitions messages in visible
 * mode (glob_pop.c); visible.c calls it on the I/O thread. */
#ifndef CNB_GLOB_POP_H
#define CNB_GLOB_POP_H

#include "node_rt.h"

typedef struct cnb_pop cnb_pop_t;

cnb_pop_t *cnb__pop_create(void); /* NULL when out of memory */
void cnb__pop_destroy(cnb_pop_t *p);
/* peer's global_name_server sent us something: peer is a node we know. */
void cnb__pop_heard(cnb_pop_t *p, const char *peer);
/* {lost_connection, NodeA, XCreationA, OpIdA, NodeB}: msg/len is the whole
 * message (with 131, passed on as it came), b[i..] its elements after the
 * tag. */
void cnb__pop_lost(cnb_node_t *n, cnb_pop_t *p, const erlang_pid *locker, const char *msg,
                   size_t len, const char *b, int i);
/* {remove_connection, Node} from the node from: b[i..] at Node. */
void cnb__pop_remove(cnb_node_t *n, cnb_pop_t *p, const char *from, const char *b, int i);
/* Our nodedown of peer: reported to the nodes we know unless we asked for it. */
void cnb__pop_nodedown(cnb_node_t *n, cnb_pop_t *p, const erlang_pid *locker, const char *peer);

#endif
