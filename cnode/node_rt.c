/* node_rt.c: a node's life as the public API sees it: the connection layer's
 * node (node.c) with the process runtime on top. Creating a node creates the
 * runtime and registers its callbacks (cnb_upper_t) in the connection layer:
 * the one place the two meet. Tests: tests/unit/test_node.c, test_log.c,
 * tests/integration/dist_tests.erl, runtime_tests.erl. */
#include "log.h"
#include "node_rt.h"

#include <string.h>

/* What the runtime makes of a peer that went away: calls in flight, relays,
 * links and monitors across that connection (cnb__rt_nodedown). */
static void nodedown(cnb_node_t *n, const char *peer)
{
    cnb__visible_nodedown(n, peer);
    cnb__greg_nodedown(n, peer);
    cnb__pg_nodedown(n, peer);
    cnb__rt_nodedown(n, peer);
}

static const cnb_upper_t runtime_upper = {
    .message = cnb__dispatch,
    .nodedown = nodedown,
    .busy = cnb__rt_busy,
    .tick = cnb__visible_tick,
};

/* Frees the runtime's state; the I/O thread has stopped (or never ran).
 * Timers first (they send), then the pool, then what calls may hold. */
static void runtime_free(cnb_node_t *n)
{
    cnb__timers_destroy(n->timers);
    cnb__rt_destroy(n->rt);
    cnb__calls_destroy(n->calls);
    cnb__relay_destroy(n);
    cnb__greg_destroy(n);
    cnb__visible_destroy(n);
    cnb__pg_destroy(n);
    n->timers = NULL;
    n->rt = NULL;
    n->calls = NULL;
}

int cnb_node_create(const cnb_node_opts_t *opts, cnb_node_t **out)
{
    cnb_node_t *n = NULL;
    int rc = cnb__node_create(opts, &n);
    *out = NULL;
    if (rc)
        return rc;
    if (cnb__rt_create(n, opts->threads, &n->rt) || cnb__calls_create(&n->calls) ||
        cnb__timers_create(n, &n->timers) || (opts->visible && (cnb__visible_create(n) || cnb__pg_create(n) ||
                           cnb__greg_create(n, cnb__visible_gt(n))))) {
        cnb__log(n, CNB_LOG_ERROR, "cannot create the process runtime");
        runtime_free(n);
        cnb__node_free(n);
        return CNB_ENOMEM;
    }
    n->upper = runtime_upper;
    *out = n;
    return 0;
}

/* The connection layer's sockets, then the worker pool (as before the loop
 * runs, so that nothing arrives for a pool not yet started). */
static int prepare(cnb_node_t *n)
{
    int rc = cnb__node_prepare(n);
    if (rc)
        return rc;
    if ((rc = cnb__rt_start(n->rt)))
        cnb__log(n, CNB_LOG_ERROR, "cannot start the worker pool");
    return rc;
}

int cnb_node_start(cnb_node_t *n)
{
    int rc = prepare(n);
    return rc ? rc : cnb__node_launch(n);
}

int cnb_node_run(cnb_node_t *n)
{
    int rc = prepare(n);
    if (rc)
        return rc;
    n->thread = pthread_self();
    n->thread_started = 2; /* the loop runs on this (the caller's) thread */
    cnb__loop(n);
    n->thread_started = 0;
    return 0;
}

void cnb_node_destroy(cnb_node_t *n)
{
    if (!n)
        return;
    cnb_node_stop(n);
    cnb_node_join(n);
    runtime_free(n);
    cnb__node_free(n);
}
