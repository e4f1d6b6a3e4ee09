/* glob_pop.c: global's "prevent overlapping partitions" messages in visible
 * mode, answered as OTP global (vsn 7+) answers them (facts from OTP 25's
 * global.erl; 27 and 29 send the same messages):
 * - {lost_connection, NodeA, XCreationA, OpIdA, NodeB} (plain message to
 *   global_name_server: NodeA lost its connection to NodeB). Seen before
 *   (the same NodeA, NodeB and XCreationA with an OpIdA not newer): ignored.
 *   Else it is passed on to every node we know but NodeA (so that all hear
 *   it), and we drop the node of the pair that is not us, NodeB (or NodeA when
 *   we are NodeB): {remove_connection, node()} goes to its global_name_server,
 *   which disconnects from us; we will not report that nodedown.
 * - {remove_connection, Node} from Node itself: we disconnect from Node (and
 *   do not report that nodedown).
 * - Our own nodedown of a node we knew, not one of the above: {lost_connection,
 *   node(), Creation, OpId, Node} to every node we know, as global's
 *   inform_connection_loss; nodes without prevent_overlapping_partitions
 *   ignore it.
 * "Nodes we know", global's Known (and pending): the nodes whose
 * global_name_server has sent us anything (a session, a lock or registration
 * call, an in_sync: a node that joined us through another node's session
 * sends in_sync first) since their last nodedown. Every send here is
 * "volatile" as global's: only to a node we are connected to, never dialling. I/O thread
 * only. Tests: tests/integration/visible_heal_tests.erl. */
#include "glob_pop.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POP_SEEN 256          /* lost_connection keys remembered */
#define POP_SEEN_MS 3600000   /* global forgets one after an hour */
#define POP_REMOVING 256      /* nodes whose nodedown we will not report */
#define POP_CONN_MAX 1024
#define POP_KNOWN 1024        /* nodes we know */

typedef struct seen {
    char a[MAXATOMLEN_UTF8], b[MAXATOMLEN_UTF8];
    long long xcre, opid;
    long long at_ms;
} seen_t;

struct cnb_pop {
    seen_t seen[POP_SEEN];
    int nseen;
    char removing[POP_REMOVING][MAXATOMLEN_UTF8];
    int nremoving;
    char (*known)[MAXATOMLEN_UTF8];
    int nknown;
    long long next_op;
};

cnb_pop_t *cnb__pop_create(void)
{
    cnb_pop_t *p = calloc(1, sizeof *p);
    if (p && !(p->known = calloc(POP_KNOWN, sizeof *p->known))) {
        free(p);
        return NULL;
    }
    if (p)
        p->next_op = 1;
    return p;
}

void cnb__pop_destroy(cnb_pop_t *p)
{
    if (p)
        free(p->known);
    free(p);
}

static int known_idx(const cnb_pop_t *p, const char *node)
{
    for (int i = 0; i < p->nknown; i++)
        if (!strcmp(p->known[i], node))
            return i;
    return -1;
}

void cnb__pop_heard(cnb_pop_t *p, const char *peer)
{
    if (known_idx(p, peer) < 0 && p->nknown < POP_KNOWN && strlen(peer) < MAXATOMLEN_UTF8)
        snprintf(p->known[p->nknown++], MAXATOMLEN_UTF8, "%s", peer);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Is node connected to us now? (A volatile send goes only there.) */
static int connected(cnb_node_t *n, const char *node)
{
    char (*c)[MAXATOMLEN_UTF8] = malloc(POP_CONN_MAX * sizeof *c);
    int hit = 0;
    if (!c)
        return 0;
    int k = cnb_node_connected(n, c, POP_CONN_MAX);
    for (int i = 0; i < k && i < POP_CONN_MAX && !hit; i++)
        hit = !strcmp(c[i], node);
    free(c);
    return hit;
}

static void volatile_send(cnb_node_t *n, const erlang_pid *from, const char *node,
                          const char *msg, size_t len)
{
    if (connected(n, node))
        (void)cnb_reg_send(n, from, node, "global_name_server", msg, len);
}

static void removing_add(cnb_pop_t *p, const char *node)
{
    for (int i = 0; i < p->nremoving; i++)
        if (!strcmp(p->removing[i], node))
            return;
    if (p->nremoving == POP_REMOVING)
        memmove(p->removing[0], p->removing[1], (POP_REMOVING - 1) * sizeof p->removing[0]);
    else
        p->nremoving++;
    snprintf(p->removing[p->nremoving - 1], MAXATOMLEN_UTF8, "%s", node);
}

/* Is node one we asked to go (its nodedown is not reported)? Forgets it. */
static int removing_take(cnb_pop_t *p, const char *node)
{
    for (int i = 0; i < p->nremoving; i++)
        if (!strcmp(p->removing[i], node)) {
            memcpy(p->removing[i], p->removing[--p->nremoving], sizeof p->removing[0]);
            return 1;
        }
    return 0;
}

/* Records (a, b, xcre, opid); returns 0 when it was handled before. */
static int seen_new(cnb_pop_t *p, const char *a, const char *b, long long xcre, long long opid)
{
    long long now = now_ms();
    seen_t *e = NULL;
    int old = 0;
    for (int i = 0; i < p->nseen; i++) {
        seen_t *s = &p->seen[i];
        if (!strcmp(s->a, a) && !strcmp(s->b, b) && now - s->at_ms < POP_SEEN_MS) {
            if (s->xcre == xcre && opid <= s->opid)
                return 0;
            e = s;
        }
        if (p->seen[i].at_ms < p->seen[old].at_ms)
            old = i;
    }
    if (!e)
        e = p->nseen < POP_SEEN ? &p->seen[p->nseen++] : &p->seen[old];
    snprintf(e->a, sizeof e->a, "%s", a);
    snprintf(e->b, sizeof e->b, "%s", b);
    e->xcre = xcre;
    e->opid = opid;
    e->at_ms = now;
    return 1;
}

void cnb__pop_lost(cnb_node_t *n, cnb_pop_t *p, const erlang_pid *locker, const char *msg,
                   size_t len, const char *b, int i)
{
    char na[MAXATOMLEN_UTF8], nb[MAXATOMLEN_UTF8];
    long long xcre, opid;
    if (ei_decode_atom(b, &i, na) || ei_decode_longlong(b, &i, &xcre) ||
        ei_decode_longlong(b, &i, &opid) || ei_decode_atom(b, &i, nb))
        return;
    if (!seen_new(p, na, nb, xcre, opid))
        return;
    /* Every node we know hears it too (but NodeA, who sent it first). */
    for (int j = 0; j < p->nknown; j++)
        if (strcmp(p->known[j], na))
            volatile_send(n, locker, p->known[j], msg, len);
    const char *rm = strcmp(cnb_node_name(n), nb) ? nb : na;
    if (known_idx(p, rm) < 0)
        return;
    ei_x_buff x;
    if (ei_x_new_with_version(&x) || ei_x_encode_tuple_header(&x, 2) ||
        ei_x_encode_atom(&x, "remove_connection") || ei_x_encode_atom(&x, cnb_node_name(n))) {
        ei_x_free(&x);
        cnb__log(n, CNB_LOG_ERROR, "out of memory: remove_connection to %s not sent", rm);
        return;
    }
    volatile_send(n, locker, rm, x.buff, (size_t)x.index);
    ei_x_free(&x);
    removing_add(p, rm);
    cnb__log(n, CNB_LOG_WARNING, "'global' at node %s requested disconnect from node %s in "
             "order to prevent overlapping partitions", cnb_node_name(n), rm);
}

void cnb__pop_remove(cnb_node_t *n, cnb_pop_t *p, const char *from, const char *b, int i)
{
    char node[MAXATOMLEN_UTF8];
    /* global sends it with its own name: from any other node it is forged. */
    if (ei_decode_atom(b, &i, node) || strcmp(node, from) || known_idx(p, node) < 0)
        return;
    removing_add(p, node);
    (void)cnb_node_disconnect(n, node);
    cnb__log(n, CNB_LOG_WARNING, "'global' at node %s disconnected node %s in order to prevent "
             "overlapping partitions", cnb_node_name(n), node);
}

void cnb__pop_nodedown(cnb_node_t *n, cnb_pop_t *p, const erlang_pid *locker, const char *peer)
{
    int k = known_idx(p, peer);
    if (k >= 0)
        memcpy(p->known[k], p->known[--p->nknown], sizeof p->known[0]);
    if (removing_take(p, peer) || k < 0)
        return;
    ei_x_buff x;
    if (ei_x_new_with_version(&x) || ei_x_encode_tuple_header(&x, 5) ||
        ei_x_encode_atom(&x, "lost_connection") || ei_x_encode_atom(&x, cnb_node_name(n)) ||
        ei_x_encode_longlong(&x, (long long)cnb_node_creation(n)) ||
        ei_x_encode_longlong(&x, p->next_op++) || ei_x_encode_atom(&x, peer)) {
        ei_x_free(&x);
        cnb__log(n, CNB_LOG_ERROR, "out of memory: lost_connection for %s not sent", peer);
        return;
    }
    for (int j = 0; j < p->nknown; j++)
        volatile_send(n, locker, p->known[j], x.buff, (size_t)x.index);
    ei_x_free(&x);
}
