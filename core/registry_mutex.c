/* registry_mutex.c: locking and unlocking the robust process-shared mutexes that
 * live in the registry segment, where another process may write anything into
 * them at any time. Every lock of a mutex in the segment goes through
 * cnb__reg_mutex_trylock, cnb__reg_mutex_lock and cnb__reg_mutex_unlock.
 * Tests: tests/unit/test_registry_hostile.c (mutex_scribbler,
 * lock_word_scribbled_while_held, unlock_out_of_order),
 * test_registry_concurrency.c (kill -9).
 *
 * glibc links a held robust mutex into the thread's robust list (which the
 * kernel walks when the thread dies) through two pointers stored in the mutex
 * itself, here in shared memory; its unlock reads them back and writes through
 * them (a pointer another process wrote in the meantime: SIGSEGV), and leaves
 * the mutex on the list when the lock word no longer holds our thread id
 * (EPERM; after the segment is unmapped, the thread's next robust lock writes
 * into the hole). Its lock reads the kind field, which picks the code path: a
 * kind rewritten between our check and glibc's read took it into PI code that
 * asserts (the one SIGABRT seen in mutex_scribbler after the unlock alone was
 * fixed) or into lock elision (SIGILL on a CPU without TSX).
 *
 * So both are done here, with the futex protocol glibc and the kernel use (the
 * owner's thread id in the lock word, FUTEX_WAITERS, FUTEX_OWNER_DIED set by the
 * kernel for a dead owner, list_op_pending around each change) and the list
 * kept as glibc keeps it, but from thread-local memory only: this thread's
 * robust_list_head (found once with get_robust_list) and, per held mutex, the
 * entry it was linked in front of. Nothing read from a mutex is followed or
 * decides a code path; the kernel's own walk of the list at thread death
 * tolerates anything. glibc's calls remain only for a thread without a robust
 * list, or beyond HELD_MAX held locks (the kind put back first). */
#include <errno.h>
#include <stddef.h>
#include <time.h>

#include "registry_int.h"
#include "deadline.h"

int cnb__reg_lock_wait_ms = 2000;

#ifdef __GLIBC__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Locks nest at most three deep (stripe -> G -> F). */
#define HELD_MAX 8
struct held {
    pthread_mutex_t *m;
    void *next; /* the entry after m on the robust list */
};
static __thread struct held held[HELD_MAX];
static __thread unsigned nheld;
static __thread struct robust_list_head *rhead; /* this thread's, NULL: none */
static __thread int rhead_known;
static _Atomic int ref_kind = -1;

static struct robust_list_head *robust_head(void)
{
    if (!rhead_known) {
        struct robust_list_head *h = NULL;
        size_t len = 0;
        rhead_known = 1;
        if (syscall(SYS_get_robust_list, 0, &h, &len) == 0 && len == sizeof *h)
            rhead = h;
    }
    return rhead;
}

/* The list entry m is linked by: its __next field. */
static void *entry_of(pthread_mutex_t *m)
{
    return &m->__data.__list.__next;
}

static void *unmark(void *entry)
{
    return (void *)((uintptr_t)entry & ~(uintptr_t)1); /* bit 0: a PI mutex */
}

/* For glibc's calls (the fallback): the kind picks glibc's code path. */
static void kind_fix(pthread_mutex_t *m)
{
    int k = atomic_load_explicit(&ref_kind, memory_order_relaxed);
    if (k < 0) {
        pthread_mutexattr_t a;
        pthread_mutex_t t;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
        pthread_mutex_init(&t, &a);
        k = t.__data.__kind;
        pthread_mutex_destroy(&t);
        pthread_mutexattr_destroy(&a);
        atomic_store_explicit(&ref_kind, k, memory_order_relaxed);
    }
    if (__atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED) != k)
        __atomic_store_n(&m->__data.__kind, k, __ATOMIC_RELAXED);
}

static struct held *held_of_entry(void *entry)
{
    for (unsigned i = 0; i < nheld; i++)
        if (entry_of(held[i].m) == entry)
            return &held[i];
    return NULL;
}

/* Links m at the head of the list, as glibc's ENQUEUE_MUTEX does. */
static void enqueue(pthread_mutex_t *m, struct robust_list_head *h)
{
    void *next = h->list.next;
    *(void **)((char *)unmark(next) - offsetof(__pthread_list_t, __next)) = entry_of(m);
    m->__data.__list.__next = next;
    m->__data.__list.__prev = (void *)h;
    atomic_signal_fence(memory_order_seq_cst);
    h->list.next = entry_of(m);
    held[nheld++] = (struct held){m, next};
}

/* Locks m (robust, process-shared) as glibc does: the lock word holds the
 * owner's thread id, FUTEX_WAITERS when someone may sleep on it, and
 * FUTEX_OWNER_DIED after the kernel found its owner dead. until NULL: a try.
 * Returns 0, EOWNERDEAD, EBUSY or ETIMEDOUT. */
static int own_lock(pthread_mutex_t *m, struct robust_list_head *h, const struct timespec *until)
{
    unsigned *lock = (unsigned *)&m->__data.__lock;
    unsigned id = (unsigned)syscall(SYS_gettid) & FUTEX_TID_MASK;
    unsigned waiters = 0; /* FUTEX_WAITERS once we slept: others may sleep too */
    int rc = 0;
    h->list_op_pending = entry_of(m);
    atomic_signal_fence(memory_order_seq_cst);
    unsigned old = __atomic_load_n(lock, __ATOMIC_ACQUIRE);
    for (;;) {
        if (old == 0 || (old & FUTEX_OWNER_DIED)) {
            unsigned nv = id | (old & FUTEX_WAITERS) | waiters;
            if (!__atomic_compare_exchange_n(lock, &old, nv, 0, __ATOMIC_ACQUIRE,
                                             __ATOMIC_RELAXED))
                continue;
            rc = old ? EOWNERDEAD : 0;
            break;
        }
        struct timespec now;
        if (until)
            clock_gettime(CLOCK_REALTIME, &now);
        if (!until || now.tv_sec > until->tv_sec ||
            (now.tv_sec == until->tv_sec && now.tv_nsec >= until->tv_nsec)) {
            atomic_signal_fence(memory_order_seq_cst);
            h->list_op_pending = NULL;
            return until ? ETIMEDOUT : EBUSY;
        }
        if (!(old & FUTEX_WAITERS)) {
            if (!__atomic_compare_exchange_n(lock, &old, old | FUTEX_WAITERS, 0,
                                             __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                continue;
            old |= FUTEX_WAITERS;
        }
        waiters = FUTEX_WAITERS;
        /* process-shared: no FUTEX_PRIVATE_FLAG; an absolute real-time bound */
        syscall(SYS_futex, lock, FUTEX_WAIT_BITSET | FUTEX_CLOCK_REALTIME, old, until, NULL,
                FUTEX_BITSET_MATCH_ANY);
        old = __atomic_load_n(lock, __ATOMIC_ACQUIRE);
    }
    enqueue(m, h);
    atomic_signal_fence(memory_order_seq_cst);
    h->list_op_pending = NULL;
    __atomic_store_n(&m->__data.__owner, rc ? 0x7fffffff /* inconsistent */ : (int)id,
                     __ATOMIC_RELAXED);
    return rc;
}

/* The entry before m's on the list (the head h, or a newer mutex's entry),
 * walking newer entries from the head: those locked here by what they were
 * linked to, others (robust mutexes of other code) by their own link. NULL if
 * m is not found within a bound. */
static void *entry_before(struct robust_list_head *h, pthread_mutex_t *m)
{
    void *prev = h, *cur = h->list.next;
    for (int steps = 0; steps < 64 && unmark(cur) != (void *)&h->list; steps++) {
        if (unmark(cur) == entry_of(m))
            return prev;
        struct held *o = held_of_entry(unmark(cur));
        prev = unmark(cur);
        cur = o ? o->next : *(void **)prev;
    }
    return NULL;
}

/* Unlinks m from between prev (h or an entry) and next, as glibc's
 * DEQUEUE_MUTEX does, and releases it. prev NULL: only released. */
static void own_unlock(pthread_mutex_t *m, struct robust_list_head *h, void *prev, void *next)
{
    h->list_op_pending = entry_of(m);
    atomic_signal_fence(memory_order_seq_cst);
    if (prev) {
        *(void **)((char *)unmark(next) - offsetof(__pthread_list_t, __next)) = prev;
        *(void **)prev = next; /* h->list.next when prev is h */
        atomic_signal_fence(memory_order_seq_cst);
    }
    __atomic_store_n(&m->__data.__owner, 0, __ATOMIC_RELAXED);
    unsigned old = __atomic_exchange_n((unsigned *)&m->__data.__lock, 0u, __ATOMIC_RELEASE);
    if (old & FUTEX_WAITERS)
        syscall(SYS_futex, &m->__data.__lock, FUTEX_WAKE, 1, NULL, NULL, 0);
    atomic_signal_fence(memory_order_seq_cst);
    h->list_op_pending = NULL;
}

static int lock_any(pthread_mutex_t *m, const struct timespec *until)
{
    struct robust_list_head *h = robust_head();
    if (h && nheld < HELD_MAX)
        return own_lock(m, h, until);
    kind_fix(m); /* no robust list to keep by hand: glibc's lock */
    return until ? pthread_mutex_timedlock(m, until) : pthread_mutex_trylock(m);
}

static void unlock_any(pthread_mutex_t *m)
{
    struct robust_list_head *h = rhead;
    struct held *hd = h ? held_of_entry(entry_of(m)) : NULL;
    if (!hd) { /* locked by glibc */
        kind_fix(m);
        pthread_mutex_unlock(m);
        return;
    }
    void *next = hd->next;
    void *prev = entry_before(h, m);
    for (unsigned i = 0; i < nheld; i++) /* a newer one of ours linked to m */
        if (held[i].next == entry_of(m))
            held[i].next = next;
    *hd = held[--nheld];
    own_unlock(m, h, prev, next);
}
#else
static int lock_any(pthread_mutex_t *m, const struct timespec *until)
{
    return until ? pthread_mutex_timedlock(m, until) : pthread_mutex_trylock(m);
}
static void unlock_any(pthread_mutex_t *m) { pthread_mutex_unlock(m); }
#endif

int cnb__reg_mutex_trylock(pthread_mutex_t *m)
{
    return lock_any(m, NULL);
}

void cnb__reg_mutex_unlock(pthread_mutex_t *m)
{
    unlock_any(m);
}

int cnb__reg_mutex_lock(pthread_mutex_t *m)
{
    int rc = cnb__reg_mutex_trylock(m);
    if (rc != EBUSY)
        return rc;
    struct timespec ts;
    cnb__deadline(CLOCK_REALTIME, cnb__reg_lock_wait_ms, &ts);
    return lock_any(m, &ts);
}
