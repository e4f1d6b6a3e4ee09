/* accept_guard.h: the accept path's back-off when the process runs out of file
 * descriptors (or memory for sockets): the listener is taken out of epoll for
 * a while instead of spinning on a socket that stays readable, and the
 * condition is logged once per interval. Tests: tests/integration/hostile_conn_tests.erl. */
#ifndef CNB_ACCEPT_GUARD_H
#define CNB_ACCEPT_GUARD_H

#include <stdint.h>

typedef struct cnb_accept_guard {
    int paused;             /* the listener is out of epoll until resume_at */
    int64_t resume_at;      /* ms */
    int64_t last_log;       /* ms: when the condition was last logged */
    unsigned long unlogged; /* failures since that line */
} cnb_accept_guard_t;

struct cnb_node;

/* accept4 failed with err on the I/O thread. Returns 1 when the caller should
 * stop accepting this turn (always, except for errors about one connection
 * only, such as ECONNABORTED). Pauses the listener for resource errors. */
int cnb__accept_failed(struct cnb_node *n, int err);

/* From the timer tick: puts the listener back into epoll once the pause is over. */
void cnb__accept_guard_tick(struct cnb_node *n);

#endif /* CNB_ACCEPT_GUARD_H */
