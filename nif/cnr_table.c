/* cnr_table.c: the NIF-global table of registries by name (an atom). It lives
 * in the library's static storage, so a code upgrade of cnode_registry_nif
 * (which loads the same library again) keeps every registry working.
 *
 * Reads are on every operation's path and must not contend, so the table is
 * an immutable snapshot published through one atomic pointer. A reader marks
 * itself active in a sequence slot of its own (one cache line per thread, odd
 * while inside), loads the snapshot, uses what it found, and leaves. A writer
 * (creating or dropping a registry: rare) builds a new snapshot under a mutex,
 * publishes it, then waits until every reader that was inside has left before
 * freeing the old snapshot and releasing a removed registry. Threads beyond
 * the slots fall back to a read-write lock that writers also take.
 *
 * The reader's mark must be visible before it reads the snapshot, and the
 * writer's new snapshot before it reads the marks (a store then a load on each
 * side). Where the kernel has membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)
 * (Linux 4.14+), the writer pays for both sides: it calls membarrier, which
 * makes every running thread of the VM pass a full barrier, and the reader
 * needs only a compiler barrier (no fence instruction on every lookup; the
 * same asymmetric scheme as userspace RCU's membarrier flavour). Without it
 * (an older kernel, a seccomp filter), each reader fences as before.
 * Tests: tests/integration/nif_tests.erl (code reload, server death, a
 * lookup loop racing registries made and dropped). */
#include <linux/membarrier.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cnr.h"

#define MAX_READERS 512

struct reader {
    _Atomic uint64_t seq; /* odd while the thread is inside */
    char pad[56];
} __attribute__((aligned(64)));

struct tab {
    size_t cap, n;
    struct cnr_slot slots[]; /* open addressing; reg NULL = empty */
};

static struct reader readers[MAX_READERS];
static _Atomic uint32_t nreaders;
static _Atomic(struct tab *) current;
/* -1: not yet claimed; -2: none left. Initial-exec: read on every call, and
 * 4 bytes of the static TLS that glibc keeps for libraries loaded later. */
static __thread int my_reader __attribute__((tls_model("initial-exec"))) = -1;
/* 1 once this process registered for private expedited membarrier; never
 * goes back to 0. Set at load, before any registry exists. */
static _Atomic int asym;

void cnr_table_init(void)
{
    if (atomic_load(&asym))
        return;
    long cmds = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0);
    if (cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
        syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0)
        atomic_store(&asym, 1);
}

int cnr_table_asym(void)
{
    return atomic_load(&asym);
}

static size_t slot_of(ERL_NIF_TERM name, size_t cap)
{
    uint64_t h = (uint64_t)name * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 32) & (cap - 1);
}

int cnr_table_enter(void)
{
    int r = my_reader;
    if (r == -1) {
        uint32_t i = atomic_fetch_add(&nreaders, 1);
        r = my_reader = i < MAX_READERS ? (int)i : -2;
    }
    if (r < 0) {
        enif_rwlock_rlock(cnr_g.table_lock);
        return r;
    }
    struct reader *rd = &readers[r];
    uint64_t s = atomic_load_explicit(&rd->seq, memory_order_relaxed);
    atomic_store_explicit(&rd->seq, s + 1, memory_order_relaxed);
    /* The mark must be visible before the snapshot is read: the writer's
     * membarrier sees to it, or this fence. */
    if (atomic_load_explicit(&asym, memory_order_relaxed))
        atomic_signal_fence(memory_order_seq_cst);
    else
        atomic_thread_fence(memory_order_seq_cst);
    return r;
}

void cnr_table_leave(int r)
{
    if (r < 0) {
        enif_rwlock_runlock(cnr_g.table_lock);
        return;
    }
    struct reader *rd = &readers[r];
    uint64_t s = atomic_load_explicit(&rd->seq, memory_order_relaxed);
    atomic_store_explicit(&rd->seq, s + 1, memory_order_release);
}

struct cnr_reg *cnr_table_find(ERL_NIF_TERM name)
{
    struct tab *t = atomic_load_explicit(&current, memory_order_acquire);
    if (!t)
        return NULL;
    size_t mask = t->cap - 1;
    for (size_t j = slot_of(name, t->cap);; j = (j + 1) & mask) {
        const struct cnr_slot *s = &t->slots[j];
        if (!s->reg)
            return NULL;
        if (s->name == name)
            return s->reg;
    }
}

struct cnr_reg *cnr_table_hold(ERL_NIF_TERM name)
{
    int tok = cnr_table_enter();
    struct cnr_reg *reg = cnr_table_find(name);
    if (reg)
        enif_keep_resource(reg);
    cnr_table_leave(tok);
    return reg;
}

/* Writer side (cnr_g.table_lock held for writing): waits until every reader
 * inside when the new snapshot was published has left. Returns 1, or 0 when
 * that cannot be known (membarrier failed after registering, which the
 * kernel does not do): the caller then never frees what it unpublished. */
static int synchronize(void)
{
    atomic_thread_fence(memory_order_seq_cst);
    /* Every reader that fenced with a compiler barrier only is now past its
     * mark store, or not yet at its snapshot load. */
    if (atomic_load(&asym) && syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) != 0)
        return 0;
    uint32_t n = atomic_load(&nreaders);
    if (n > MAX_READERS)
        n = MAX_READERS;
    for (uint32_t i = 0; i < n; i++) {
        if ((int)i == my_reader)
            continue; /* never waits for itself (writers do not nest in reads) */
        uint64_t s = atomic_load_explicit(&readers[i].seq, memory_order_acquire);
        if (!(s & 1))
            continue;
        while (atomic_load_explicit(&readers[i].seq, memory_order_acquire) == s)
            sched_yield();
    }
    return 1;
}

static struct tab *tab_new(size_t cap)
{
    struct tab *t = enif_alloc(sizeof *t + cap * sizeof t->slots[0]);
    if (t) {
        t->cap = cap;
        t->n = 0;
        memset(t->slots, 0, cap * sizeof t->slots[0]);
    }
    return t;
}

static void tab_add(struct tab *t, ERL_NIF_TERM name, struct cnr_reg *reg)
{
    size_t j = slot_of(name, t->cap);
    while (t->slots[j].reg)
        j = (j + 1) & (t->cap - 1);
    t->slots[j].name = name;
    t->slots[j].reg = reg;
    t->n++;
}

/* A copy of old without `skip` (a name, or 0), sized for n + extra entries at
 * most half full. */
static struct tab *tab_copy(const struct tab *old, ERL_NIF_TERM skip, size_t extra)
{
    size_t n = old ? old->n : 0, cap = 16;
    while (cap < (n + extra) * 2)
        cap *= 2;
    struct tab *t = tab_new(cap);
    if (!t)
        return NULL;
    for (size_t i = 0; old && i < old->cap; i++)
        if (old->slots[i].reg && old->slots[i].name != skip)
            tab_add(t, old->slots[i].name, old->slots[i].reg);
    return t;
}

/* Publishes t (write lock held) and frees the snapshot it replaces once no
 * reader can see it. Returns synchronize's answer (0: old kept). */
static int publish(struct tab *t)
{
    struct tab *old = atomic_exchange_explicit(&current, t, memory_order_seq_cst);
    if (!synchronize())
        return 0;
    enif_free(old);
    return 1;
}

int cnr_table_put(ERL_NIF_TERM name, struct cnr_reg *reg)
{
    int rc = 0;
    enif_rwlock_rwlock(cnr_g.table_lock);
    struct tab *old = atomic_load(&current);
    if (cnr_table_find(name)) {
        rc = CNB_EEXIST;
        goto out;
    }
    struct tab *t = tab_copy(old, 0, 1);
    if (!t) {
        rc = CNB_ENOMEM;
        goto out;
    }
    enif_keep_resource(reg);
    tab_add(t, name, reg);
    publish(t);
out:
    enif_rwlock_rwunlock(cnr_g.table_lock);
    return rc;
}

struct cnr_reg *cnr_table_take(ERL_NIF_TERM name, struct cnr_reg *reg)
{
    struct cnr_reg *gone = NULL;
    enif_rwlock_rwlock(cnr_g.table_lock);
    struct cnr_reg *cur = cnr_table_find(name);
    if (cur && (!reg || cur == reg)) {
        struct tab *t = tab_copy(atomic_load(&current), name, 0);
        if (t && publish(t)) /* after this no reader holds cur without a reference */
            gone = cur;
    }
    enif_rwlock_rwunlock(cnr_g.table_lock);
    return gone; /* released outside the lock (it may run the destructor) */
}

void cnr_table_clear(void)
{
    enif_rwlock_rwlock(cnr_g.table_lock);
    struct tab *old = atomic_exchange(&current, NULL);
    if (!synchronize())
        old = NULL;
    enif_rwlock_rwunlock(cnr_g.table_lock);
    for (size_t i = 0; old && i < old->cap; i++)
        if (old->slots[i].reg)
            enif_release_resource(old->slots[i].reg);
    enif_free(old);
}
