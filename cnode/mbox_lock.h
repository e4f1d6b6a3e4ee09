/* mbox_lock.h: the lock of a worker's mailbox, 4 bytes where a
 * pthread_mutex_t takes 40 (an idle worker's size counts: docs/BENCHMARKS.md,
 * "Idle memory and NIF lookups"). A futex lock with three states (0 free,
 * 1 held, 2 held with waiters): taking a free lock is one compare-exchange,
 * releasing it one atomic exchange (as glibc's own mutex). The sections it
 * guards are a few pointer stores, but the I/O thread pushing a stream into
 * a worker and the pool thread taking it (rt_sched.c, linger) meet on it
 * often, so a thread that finds it held looks again up to
 * CNB_MBOX_LOCK_SPINS times before it sleeps in the kernel (a futex wait
 * and the holder's wake: two system calls). Zeroed = free; nothing to
 * destroy. */
#ifndef CNB_MBOX_LOCK_H
#define CNB_MBOX_LOCK_H

#include <linux/futex.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

#define CNB_MBOX_LOCK_SPINS 100 /* looks at a held lock before sleeping */
#if defined(__x86_64__) || defined(__i386__)
#define CNB_MBOX_RELAX() __builtin_ia32_pause()
#else
#define CNB_MBOX_RELAX() atomic_signal_fence(memory_order_seq_cst)
#endif

typedef struct cnb_mbox_lock {
    atomic_int v;
} cnb_mbox_lock_t;

static inline void cnb__mbox_lock(cnb_mbox_lock_t *l)
{
    int c = 0;
    if (atomic_compare_exchange_strong_explicit(&l->v, &c, 1, memory_order_acquire,
                                                memory_order_relaxed))
        return;
    /* Held: the holder is most likely on another CPU for a few stores, so
     * look again a bounded number of times before sleeping in the kernel
     * (a futex wait and the holder's wake cost two system calls). */
    for (int i = 0; i < CNB_MBOX_LOCK_SPINS && c == 1; i++) {
        CNB_MBOX_RELAX();
        c = atomic_load_explicit(&l->v, memory_order_relaxed);
        if (c == 0 && atomic_compare_exchange_strong_explicit(&l->v, &c, 1, memory_order_acquire,
                                                              memory_order_relaxed))
            return;
    }
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
