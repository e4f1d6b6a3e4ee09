/* accept_guard.c: back-off of the accept path under fd exhaustion (see
 * accept_guard.h). At the fd limit the listening socket stays readable; without
 * this the loop would spin and log on every turn.
 * Tests: tests/integration/hostile_conn_tests.erl (fd_exhaustion). */
#include "accept_guard.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>

#include "node_int.h"

#define PAUSE_MS 200       /* the listener rests this long after a resource error */
#define LOG_EVERY_MS 5000  /* one log line per interval while the condition lasts */

static void listener_events(cnb_node_t *n, uint32_t events)
{
    struct epoll_event e = {.events = events, .data.ptr = &n->listen_ev};
    epoll_ctl(n->epfd, EPOLL_CTL_MOD, n->listen_ev.fd, &e);
}

int cnb__accept_failed(cnb_node_t *n, int err)
{
    cnb_accept_guard_t *g = &n->accept_guard;
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)
        return 1;
    /* Errors about the one connection that went away before we took it. */
    int one_conn = err == ECONNABORTED || err == EPROTO || err == EPERM;
    int resource = err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
    g->unlogged++;
    if (n->now - g->last_log >= LOG_EVERY_MS || !g->last_log) {
        cnb__log(n, CNB_LOG_WARNING, "accept: %s (%lu time(s) in the last %d s)%s", strerror(err),
                 g->unlogged, LOG_EVERY_MS / 1000,
                 resource ? "; not accepting for a while" : "");
        g->last_log = n->now;
        g->unlogged = 0;
    }
    if (one_conn)
        return 0;
    if (resource && !g->paused) {
        listener_events(n, 0);
        g->paused = 1;
        g->resume_at = n->now + PAUSE_MS;
    }
    return 1;
}

void cnb__accept_guard_tick(cnb_node_t *n)
{
    cnb_accept_guard_t *g = &n->accept_guard;
    if (g->paused && n->now >= g->resume_at) {
        g->paused = 0;
        listener_events(n, EPOLLIN);
    }
}
