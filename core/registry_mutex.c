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
 * itself, here in shared memory. glibc's unlock reads them back and writes
 * through them: a pointer another process wrote in the meantime is a SIGSEGV,
 * and no saving and restoring around the call closes the window between the
 * restore and glibc's read. Nor does glibc's unlock take the mutex off the list
 * when the lock word no longer holds our thread id (EPERM): the list then keeps
 * a pointer into the segment, and the next robust mutex this thread locks after
 * the segment is unmapped writes through it. So this file unlocks by itself,
 * the way glibc does (list_op_pending, the unlink, owner, the lock word, the
 * futex wake), but from the pointers glibc's lock wrote, kept in thread-local
 * memory: the list head before the lock (read from this thread's
 * robust_list_head, found once with get_robust_list) and the head itself, or
 * the mutex locked after it when locks are released out of order. It falls
 * back to glibc's unlock when it cannot know what glibc wrote (no robust list,
 * more than HELD_MAX locks, or a robust mutex locked after it by other code:
 * then the list pointer it can know is put back first). The kind field picks glibc's code path when locking (a PI kind
 * would have it call futex_lock_pi on a scribbled owner): checked against a
 * mutex made here, and put back, before each lock call. */
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
    void *next;   /* the robust list's head before the lock: what glibc put in m */
    int enqueued; /* glibc's lock put m at the head of the list */
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

/* The list entry glibc links m by: its __next field. */
static void *entry_of(pthread_mutex_t *m)
{
    return &m->__data.__list.__next;
}

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

/* The robust list's head now (before a lock call), NULL without a list. */
static void *list_head(void)
{
    struct robust_list_head *h = robust_head();
    return h ? (void *)h->list.next : NULL;
}

static void held_save(pthread_mutex_t *m, void *before)
{
    struct robust_list_head *h = rhead;
    if (nheld < HELD_MAX)
        held[nheld++] = (struct held){m, before, h && (void *)h->list.next == entry_of(m)};
}

/* Unlocks m as glibc does, from what its lock wrote rather than from what is in
 * the mutex now: m is unlinked from between `prev` (the robust list head h, or
 * the entry of the mutex locked right after m) and `next` (the head before m
 * was locked). With prev NULL, m is not on the list: only released. */
static void own_unlock(pthread_mutex_t *m, struct robust_list_head *h, void *prev, void *next)
{
    if (prev) {
        h->list_op_pending = entry_of(m);
        atomic_signal_fence(memory_order_seq_cst);
        /* glibc's unlink: the next entry's __prev becomes prev, prev's __next
         * (h->list.next when prev is h) becomes next. */
        void **next_prev = (void **)((char *)((uintptr_t)next & ~(uintptr_t)1) -
                                     offsetof(__pthread_list_t, __next));
        *next_prev = prev;
        *(void **)prev = next;
        atomic_signal_fence(memory_order_seq_cst);
    }
    __atomic_store_n(&m->__data.__owner, 0, __ATOMIC_RELAXED);
    __atomic_fetch_sub(&m->__data.__nusers, 1, __ATOMIC_RELAXED);
    unsigned old = __atomic_exchange_n((unsigned *)&m->__data.__lock, 0u, __ATOMIC_RELEASE);
    if (old & FUTEX_WAITERS) /* process-shared: no FUTEX_PRIVATE_FLAG */
        syscall(SYS_futex, &m->__data.__lock, FUTEX_WAKE, 1, NULL, NULL, 0);
    atomic_signal_fence(memory_order_seq_cst);
    if (prev)
        h->list_op_pending = NULL;
}

static void unlock_held(pthread_mutex_t *m)
{
    struct robust_list_head *h = rhead;
    unsigned i = nheld;
    while (i-- > 0 && held[i].m != m)
        ;
    if (i >= nheld || !h) { /* not ours to know (more than HELD_MAX, no list) */
        kind_fix(m);
        pthread_mutex_unlock(m);
        return;
    }
    struct held hd = held[i];
    struct held *newer = i + 1 < nheld && held[i + 1].enqueued ? &held[i + 1] : NULL;
    void *prev = NULL; /* not on the list: glibc's lock took a path without it */
    if (hd.enqueued && (void *)h->list.next == entry_of(m))
        prev = h;
    else if (hd.enqueued && newer)
        prev = entry_of(newer->m); /* locks released out of order */
    if (hd.enqueued && newer)
        newer->next = hd.next; /* what its own unlink will need */
    for (unsigned j = i + 1; j < nheld; j++)
        held[j - 1] = held[j];
    nheld--;
    if (hd.enqueued && !prev) { /* after a robust mutex not locked here */
        m->__data.__list.__next = hd.next;
        kind_fix(m);
        pthread_mutex_unlock(m);
        return;
    }
    own_unlock(m, h, prev, hd.next);
}
#else
static void kind_fix(pthread_mutex_t *m) { (void)m; }
static void *list_head(void) { return NULL; }
static void held_save(pthread_mutex_t *m, void *before) { (void)m; (void)before; }
static void unlock_held(pthread_mutex_t *m) { pthread_mutex_unlock(m); }
#endif

int cnb__reg_mutex_trylock(pthread_mutex_t *m)
{
    void *before = list_head();
    kind_fix(m);
    int rc = pthread_mutex_trylock(m);
    if (rc == 0 || rc == EOWNERDEAD)
        held_save(m, before);
    return rc;
}

void cnb__reg_mutex_unlock(pthread_mutex_t *m)
{
    unlock_held(m);
}

int cnb__reg_mutex_lock(pthread_mutex_t *m)
{
    int rc = cnb__reg_mutex_trylock(m);
    if (rc != EBUSY)
        return rc;
    struct timespec ts;
    cnb__deadline(CLOCK_REALTIME, cnb__reg_lock_wait_ms, &ts);
    void *before = list_head();
    kind_fix(m);
    rc = pthread_mutex_timedlock(m, &ts);
    if (rc == 0 || rc == EOWNERDEAD)
        held_save(m, before);
    return rc;
}
