/* deadline.h: an absolute time some milliseconds from now on a given clock,
 * for pthread's timed waits. Core-private; cnode/ includes it too. No tests of
 * its own: the timed waits of core/registry_mutex.c, cnode/calls.c and
 * cnode/timer.c use it. */
#ifndef CNB_DEADLINE_H
#define CNB_DEADLINE_H

#include <stdint.h>
#include <time.h>

/* Sets *ts to ms milliseconds (>= 0) from now on clock. */
static inline void cnb__deadline(clockid_t clock, int64_t ms, struct timespec *ts)
{
    clock_gettime(clock, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

#endif /* CNB_DEADLINE_H */
