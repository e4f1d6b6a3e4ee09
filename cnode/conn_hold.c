/* conn_hold.c: messages held per peer while no authenticated connection to it
 * exists (see conn_policy.h). Only the I/O thread touches them.
 * Tests: tests/integration/simultaneous_tests.erl. */
#include "conn_policy.h"

#include <stdlib.h>
#include <string.h>

cnb_hold_t *cnb__hold_find(cnb_node_t *n, const char *peer)
{
    for (cnb_hold_t *h = n->holds; h; h = h->next)
        if (!strcmp(h->peer, peer))
            return h;
    return NULL;
}

cnb_hold_t *cnb__hold_push(cnb_node_t *n, const char *peer, const char *spec, cnb_chunk_t *ch)
{
    cnb_hold_t *h = cnb__hold_find(n, peer);
    size_t held = h ? h->bytes : 0;
    if (held + ch->len > n->opts.max_pending) {
        size_t refused = h ? h->dropped++ : 0;
        if (refused % 1000 == 0)
            cnb__log(n, CNB_LOG_WARNING,
                     "queue for %s (still connecting) is full (%zu bytes): message dropped", peer,
                     held);
        free(ch);
        return NULL;
    }
    if (!h) {
        if (!(h = calloc(1, sizeof(*h)))) {
            cnb__log(n, CNB_LOG_ERROR, "out of memory: message for %s dropped", peer);
            free(ch);
            return NULL;
        }
        snprintf(h->peer, sizeof(h->peer), "%s", peer);
        snprintf(h->spec, sizeof(h->spec), "%s", spec);
        h->since = n->now;
        h->next = n->holds;
        n->holds = h;
    }
    cnb__chunk_append(&h->head, &h->tail, ch);
    h->bytes += ch->len - ch->off;
    h->count++;
    return h;
}

static void unlink_hold(cnb_node_t *n, cnb_hold_t *h)
{
    for (cnb_hold_t **pp = &n->holds; *pp; pp = &(*pp)->next)
        if (*pp == h) {
            *pp = h->next;
            return;
        }
}

size_t cnb__hold_move_to(cnb_node_t *n, cnb_conn_t *c)
{
    cnb_hold_t *h = cnb__hold_find(n, c->peer);
    if (!h)
        return 0;
    size_t cnt = h->count;
    if (h->head) { /* held ones were sent first: they go first */
        h->tail->next = c->wq_head;
        if (!c->wq_tail)
            c->wq_tail = h->tail;
        c->wq_head = h->head;
        c->wq_bytes += h->bytes;
        c->wq_count += h->count;
    }
    unlink_hold(n, h);
    free(h);
    return cnt;
}

int cnb__hold_drop(cnb_node_t *n, const char *peer, const char *why)
{
    cnb_hold_t *h = cnb__hold_find(n, peer);
    if (!h)
        return 0;
    if (h->count)
        cnb__log(n, CNB_LOG_WARNING, "dropped %zu queued message(s) for %s: %s", h->count, peer,
                 why);
    cnb__chunks_free(h->head);
    unlink_hold(n, h);
    free(h);
    return 1;
}

void cnb__hold_free_all(cnb_node_t *n)
{
    while (n->holds) {
        cnb_hold_t *h = n->holds;
        n->holds = h->next;
        cnb__chunks_free(h->head);
        free(h);
    }
}
