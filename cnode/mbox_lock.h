/* mbox_lock.h: the lock of a worker's mailbox, 4 bytes where a
 * pthread_mutex_t takes 40 (an idle worker's size counts: docs/BENCHMARKS.md,
 * "Idle memory and NIF lookups"). A futex lock with three states (0 free,
 * 1 held, 2 held with waiters): taking a free lock is one compare-exchange,
 * releasing it one atomic exchange (as glibc's own mutex); a thread that finds it held sleeps in
 * the kernel. The sections it guards are a few pointer stores, so it is
 * almost never contended. Zeroed = free; nothing to destroy. */
#ifndef CNB_MBOX_LOCK_H
#define CNB_MBOX_LOCK_H

#include <linux/futex.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct cnb_mbox_lock {
    atomic_int v;
} cnb_mbox_lock_t;

static inline void cnb__mbox_lock(cnb_mbox_lock_t *l)
{
    int c = 0;
    if (atomic_compare_exchange_strong_explicit(&l->v, &c, 1, memory_order_acquire,
                                                memory_order_relaxed))
        return;
    if (c != 2)
        c = atomic_exchange_explicit(&l->v, 2, memory_order_acquire);
    while (c != 0) {
        syscall(SYS_futex, &l->v, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
        c = atomic_exchange_explicit(&l->v, 2, memory_order_acquire);
    }
}

static inline void cnb__mbox_unlock(cnb_mbox_lock_t *l)
{
    if (atomic_exchange_explicit(&l->v, 0, memory_order_release) == 2)
        syscall(SYS_futex, &l->v, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

#endif /* CNB_MBOX_LOCK_H */
