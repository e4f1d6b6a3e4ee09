/* registry_tx.c: the registry's robust locks (taken through registry_mutex.c),
 * per-lock undo logs, the stripe seqlock, and the repair a locker does when the
 * previous holder died.
 * Tests: tests/unit/test_registry_concurrency.c (kill -9 loop).
 *
 * A writer logs {where, old value} before every store to memory that was
 * reachable before its operation began, and empties the log at commit. A thread
 * killed at any instruction leaves a prefix of its stores done, each preceded by
 * its record, so applying the records backwards restores the state before the
 * operation. Lock order: stripe -> G (global arena) -> F (feed); N (nodes) and A
 * (attach) are taken alone. A stripe's repair takes G first, because a G
 * transaction (a chunk grant) may have written the stripe's allocator fields. */
#include <errno.h>

#include "registry_int.h"

#define WHERE_MASK (((uint64_t)1 << 48) - 1)

static inline void fault_point(void)
{
    if (cnb__reg_fault_point)
        cnb__reg_fault_point();
}

/* Returns 1 if recorded; 0 (the operation marked bad) when the log is full,
 * which only a length another process wrote into it can make happen: every
 * operation is sized to fit. */
static int log_rec(struct cnb__reg_log *log, uint64_t where, uint64_t old)
{
    fault_point(); /* the previous store done, this one not recorded */
    uint32_t n = atomic_load_explicit(&log->len, memory_order_relaxed);
    if (n >= CNB__REG_LOG_CAP) {
        cnb__reg_bad = 1;
        return 0;
    }
    log->recs[n].where = where;
    log->recs[n].old = old;
    atomic_store_explicit(&log->len, n + 1, memory_order_release);
    atomic_signal_fence(memory_order_seq_cst);
    fault_point(); /* recorded, not stored */
    return 1;
}

/* May a logged store of `size` bytes go to p? Only inside the mapped file and
 * aligned; else the operation is marked bad and the store skipped. */
static int store_ok(struct cnb_registry *reg, const void *p, uint64_t size)
{
    uint64_t off = CNB__OFF(reg, p);
    if ((const char *)p >= reg->base && off % size == 0 && cnb__reg_in_map(reg, off, size))
        return 1;
    cnb__reg_bad = 1;
    return 0;
}

/* Logs the size-byte word at p (its old value) before a store to it, tagged
 * tag. Returns 0, the operation marked bad, when p is not the registry's to
 * write or the log is full. */
static int log_old(struct cnb_registry *reg, struct cnb__reg_log *log, void *p, size_t size,
                   uint64_t tag)
{
    if (!store_ok(reg, p, size))
        return 0;
    uint64_t old = size == 8 ? __atomic_load_n((uint64_t *)p, __ATOMIC_RELAXED)
                             : __atomic_load_n((uint32_t *)p, __ATOMIC_RELAXED);
    return log_rec(log, CNB__OFF(reg, p) | (tag << 56), old);
}

void cnb__reg_log_w64(struct cnb_registry *reg, struct cnb__reg_log *log, void *p,
                      uint64_t v)
{
    if (log_old(reg, log, p, 8, CNB__LOG_W64))
        __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED);
}

void cnb__reg_log_w32(struct cnb_registry *reg, struct cnb__reg_log *log, void *p,
                      uint32_t v)
{
    if (log_old(reg, log, p, 4, CNB__LOG_W32))
        __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELAXED);
}

void cnb__reg_log_feedvoid(struct cnb_registry *reg, struct cnb__reg_log *log,
                           uint64_t slot_off, uint64_t state)
{
    (void)reg;
    (void)log_rec(log, slot_off | ((uint64_t)CNB__LOG_FEEDVOID << 56), state);
}

void cnb__reg_log_commit(struct cnb__reg_log *log)
{
    fault_point(); /* every store done, not committed */
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&log->len, 0, memory_order_release);
    atomic_signal_fence(memory_order_seq_cst);
}

void cnb__reg_log_rollback(struct cnb_registry *reg, struct cnb__reg_log *log)
{
    uint32_t n = atomic_load_explicit(&log->len, memory_order_acquire);
    if (n > CNB__REG_LOG_CAP)
        n = CNB__REG_LOG_CAP;
    for (uint32_t i = n; i-- > 0;) {
        uint64_t where = CNB__LD(log->recs[i].where), old = CNB__LD(log->recs[i].old);
        uint64_t off = where & WHERE_MASK;
        unsigned type = (unsigned)(where >> 56);
        /* Every logged address was mapped and aligned when written; a record
         * that says otherwise was written by someone else: skipped. */
        if (!cnb__reg_in_map(reg, off, 8) || off % (type == CNB__LOG_W32 ? 4 : 8))
            continue;
        if (type == CNB__LOG_W64) {
            __atomic_store_n((uint64_t *)CNB__AT(reg, off), old, __ATOMIC_RELAXED);
        } else if (type == CNB__LOG_W32) {
            __atomic_store_n((uint32_t *)CNB__AT(reg, off), (uint32_t)old,
                             __ATOMIC_RELAXED);
        } else if (type == CNB__LOG_FEEDVOID) {
            _Atomic uint64_t *state = CNB__AT(reg, off);
            uint64_t expect = old;
            uint64_t v = CNB__FEED_STATE(CNB__FEED_SEQ(old), CNB__FEED_VOID,
                                         CNB__FEED_STRIPE(old));
            atomic_compare_exchange_strong(state, &expect, v);
        }
    }
    cnb__reg_log_commit(log);
}

void cnb__reg_seq_begin(struct cnb__reg_stripe *st)
{
    uint64_t s = atomic_load_explicit(&st->seq, memory_order_relaxed);
    atomic_store_explicit(&st->seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

void cnb__reg_seq_end(struct cnb__reg_stripe *st)
{
    uint64_t s = atomic_load_explicit(&st->seq, memory_order_relaxed);
    atomic_store_explicit(&st->seq, s + 1, memory_order_release);
}

static void sync_map(struct cnb_registry *reg)
{
    if (atomic_load_explicit(&reg->hdr->file_size, memory_order_acquire) >
        atomic_load_explicit(&reg->mapped, memory_order_acquire))
        (void)cnb__reg_remap(reg);
}

static void glog_repair(struct cnb_registry *reg)
{
    cnb__reg_log_rollback(reg, &reg->hdr->glog);
}

int cnb__reg_tx_end(struct cnb_registry *reg, uint32_t si)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    int bad = cnb__reg_bad;
    cnb__reg_bad = 0;
    if (bad)
        cnb__reg_log_rollback(reg, &st->log);
    else
        cnb__reg_log_commit(&st->log);
    cnb__reg_seq_end(st);
    return bad ? CNB_ECORRUPT : 0;
}

int cnb__reg_lock_simple(pthread_mutex_t *m, void (*repair)(struct cnb_registry *),
                         struct cnb_registry *reg)
{
    int rc = cnb__reg_mutex_lock(m);
    if (rc == EOWNERDEAD) {
        sync_map(reg);
        if (repair)
            repair(reg);
        pthread_mutex_consistent(m);
        rc = 0;
    }
    return rc == 0 ? 0 : CNB_ECORRUPT;
}

int cnb__reg_glock(struct cnb_registry *reg)
{
    int rc = cnb__reg_lock_simple(&reg->hdr->glock, glog_repair, reg);
    if (rc == 0)
        sync_map(reg);
    return rc;
}

void cnb__reg_gunlock(struct cnb_registry *reg)
{
    cnb__reg_mutex_unlock(&reg->hdr->glock);
}

/* The holder of stripe si died: undo its half-done operation, or finish the
 * publication of a committed one. */
static void stripe_repair(struct cnb_registry *reg, uint32_t si)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    if (cnb__reg_glock(reg) == 0)
        cnb__reg_gunlock(reg); /* G's rollback restores stripe fields it wrote */
    sync_map(reg);
    uint64_t s = atomic_load_explicit(&st->seq, memory_order_relaxed);
    if (atomic_load_explicit(&st->log.len, memory_order_acquire) > 0) {
        if (!(s & 1))
            cnb__reg_seq_begin(st);
        cnb__reg_log_rollback(reg, &st->log);
        cnb__reg_seq_end(st);
    } else if (s & 1) {
        cnb__reg_seq_end(st);
    }
    if (st->feed_pending)
        cnb__reg_feed_publish(reg, si);
}

int cnb__reg_stripe_lock(struct cnb_registry *reg, uint32_t si)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    int rc = cnb__reg_mutex_lock(&st->lock);
    if (rc == EOWNERDEAD) {
        stripe_repair(reg, si);
        pthread_mutex_consistent(&st->lock);
        rc = 0;
    }
    if (rc != 0)
        return CNB_ECORRUPT;
    cnb__reg_bad = 0;
    /* Holding the lock, with no dead holder to repair: an odd sequence number
     * or a non-empty log can only have been written by another process. Made
     * even (readers would wait on it) and emptied (never applied). */
    if (atomic_load_explicit(&st->seq, memory_order_relaxed) & 1)
        cnb__reg_seq_end(st);
    if (atomic_load_explicit(&st->log.len, memory_order_relaxed))
        atomic_store_explicit(&st->log.len, 0, memory_order_relaxed);
    sync_map(reg);
    return 0;
}

void cnb__reg_stripe_unlock(struct cnb_registry *reg, uint32_t si)
{
    if (reg->stripes[si].big_freed)
        cnb__reg_donate(reg, si);
    cnb__reg_mutex_unlock(&reg->stripes[si].lock);
}

void cnb__reg_stripe_try_repair(struct cnb_registry *reg, uint32_t si)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    int rc = cnb__reg_mutex_trylock(&st->lock);
    if (rc == EOWNERDEAD) {
        stripe_repair(reg, si);
        pthread_mutex_consistent(&st->lock);
        cnb__reg_mutex_unlock(&st->lock);
    } else if (rc == 0) {
        cnb__reg_mutex_unlock(&st->lock);
    }
}
