/* registry_read.c: lock-free readers (lookup, values, keys, meta_get, count,
 * scan) and the result buffers they fill. A reader reads a stripe between two
 * loads of its sequence number and copies what it returns; a changed number
 * means start again. Everything read is bounds-checked first, since a reader may
 * look at memory a writer is reusing. Tests: tests/unit/test_registry*.c. */
#include <sched.h>

#include "registry_int.h"
#include "cnb_term.h"

#define RETRY (-100000)  /* a read function saw something out of the mapping */
#define SPIN_REPAIR 2048 /* odd sequence spins before checking for a dead writer */
#define MAX_ODD_ROUNDS 8 /* then the stripe lock: an odd number that stays odd is
                            either a writer that takes long (the lock waits for
                            it) or another process's scribble (the locker makes
                            it even) -- never a reader spinning forever */
#define MAX_ATTEMPTS 64  /* torn reads before falling back to the stripe lock */
#define NOPTR SIZE_MAX

/* ---- result buffers ------------------------------------------------------- */

void cnb_registry_result_init(cnb_registry_result_t *res, const cnb_allocator_t *alloc)
{
    memset(res, 0, sizeof *res);
    res->alloc = alloc;
}

void cnb_registry_result_free(cnb_registry_result_t *res)
{
    if (!res)
        return;
    cnb_free(res->alloc, res->items);
    cnb_free(res->alloc, res->buf);
    res->items = NULL;
    res->buf = NULL;
    res->n = res->cap = res->buf_len = res->buf_cap = 0;
}

int cnb__reg_res_reset(cnb_registry_result_t *res)
{
    res->n = 0;
    res->buf_len = 0;
    return 0;
}

int cnb__reg_res_push(cnb_registry_result_t *res, const void *key, size_t klen,
                      const void *val, size_t vlen, cnb_registry_item_t **item)
{
    if (res->n == res->cap) {
        size_t cap = res->cap ? res->cap * 2 : 4;
        void *p = cnb_realloc(res->alloc, res->items, cap * sizeof *res->items);
        if (!p)
            return CNB_ENOMEM;
        res->items = p;
        res->cap = cap;
    }
    size_t need = res->buf_len + klen + vlen;
    if (need > res->buf_cap) {
        size_t cap = res->buf_cap ? res->buf_cap : 256;
        while (cap < need)
            cap *= 2;
        void *p = cnb_realloc(res->alloc, res->buf, cap);
        if (!p)
            return CNB_ENOMEM;
        res->buf = p;
        res->buf_cap = cap;
    }
    cnb_registry_item_t *it = &res->items[res->n++];
    it->owner = (cnb_registry_owner_t){"", 0, 0, 0};
    it->seq = 0;
    it->event = 0;
    it->flags = 0;
    it->hash = 0;
    /* Offsets until cnb__reg_res_fix, since buf may still move. */
    it->key = (const unsigned char *)(uintptr_t)(key ? res->buf_len : NOPTR);
    it->key_len = klen;
    it->value = (const unsigned char *)(uintptr_t)(val ? res->buf_len + klen : NOPTR);
    it->value_len = vlen;
    if (klen + vlen && key && val == (const unsigned char *)key + klen) {
        /* An entry's key and value, side by side there as here: one copy. */
        memcpy(res->buf + res->buf_len, key, klen + vlen);
    } else {
        if (klen && key)
            memcpy(res->buf + res->buf_len, key, klen);
        if (vlen && val)
            memcpy(res->buf + res->buf_len + klen, val, vlen);
    }
    res->buf_len += klen + vlen;
    *item = it;
    return 0;
}

void cnb__reg_res_fix(cnb_registry_result_t *res)
{
    static const unsigned char empty[1];
    for (size_t i = 0; i < res->n; i++) {
        cnb_registry_item_t *it = &res->items[i];
        uintptr_t k = (uintptr_t)it->key, v = (uintptr_t)it->value;
        it->key = k == NOPTR ? NULL : (res->buf ? res->buf + k : empty);
        it->value = v == NOPTR ? NULL : (res->buf ? res->buf + v : empty);
    }
}

/* Copy entry e into res: klen and vlen are the lengths the caller loaded and
 * checked (never read again: another process may change them meanwhile). */
int cnb__reg_res_add(struct cnb_registry *reg, cnb_registry_result_t *res,
                     const struct cnb__reg_entry *e, uint32_t klen, uint32_t vlen)
{
    cnb_registry_item_t *it;
    int rc = cnb__reg_res_push(res, e->data, klen, e->data + klen, vlen, &it);
    if (rc)
        return rc;
    it->hash = CNB__LD(e->hash);
    it->owner = (cnb_registry_owner_t){cnb__reg_node_str(reg, CNB__LD(e->node)),
                                       CNB__LD(e->num), CNB__LD(e->serial),
                                       CNB__LD(e->creation)};
    return 0;
}

/* ---- the seqlock read loop --------------------------------------------------- */

typedef int (*read_fn)(struct cnb_registry *reg, uint32_t si, void *arg,
                       cnb_registry_result_t *res);

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

/* Runs fn on a consistent snapshot of stripe si, appending to res. Returns fn's
 * result (>= 0 items, or a negative code). Inlined into each caller, so that
 * fn, a constant there, is a direct call (a one-key lookup is ~100
 * instructions of real work; every call and copy on its way shows). */
static inline __attribute__((always_inline)) int
stripe_read(struct cnb_registry *reg, uint32_t si, read_fn fn, void *arg,
            cnb_registry_result_t *res)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    size_t n0 = res->n, b0 = res->buf_len;
    unsigned spins = 0;
    for (int attempt = 0;; attempt++) {
        res->n = n0;
        res->buf_len = b0;
        if (attempt >= MAX_ATTEMPTS || spins >= SPIN_REPAIR * MAX_ODD_ROUNDS) {
            int rc = cnb__reg_stripe_lock(reg, si);
            if (rc)
                return rc;
            rc = fn(reg, si, arg, res);
            cnb__reg_stripe_unlock(reg, si);
            return rc == RETRY ? CNB_ECORRUPT : rc;
        }
        uint64_t s1 = atomic_load_explicit(&st->seq, memory_order_acquire);
        if (s1 & 1) {
            attempt--;
            if (++spins % SPIN_REPAIR == 0) {
                cnb__reg_stripe_try_repair(reg, si);
                sched_yield();
            } else {
                cpu_relax();
            }
            continue;
        }
        int rc = fn(reg, si, arg, res);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&st->seq, memory_order_relaxed) != s1)
            continue;
        if (rc == RETRY) {
            uint64_t before = atomic_load_explicit(&reg->mapped, memory_order_acquire);
            (void)cnb__reg_remap(reg);
            if (atomic_load_explicit(&reg->mapped, memory_order_acquire) == before)
                return CNB_ECORRUPT;
            continue;
        }
        return rc;
    }
}

/* ---- key lookups ------------------------------------------------------------ */

/* The key and value lengths of the entry e at eoff (its header mapped), each
 * loaded once: within the registry's limits and mapped, 1; else 0 (a torn
 * read, or memory another process wrote). */
static int entry_lens(struct cnb_registry *reg, uint64_t eoff, const struct cnb__reg_entry *e,
                      uint32_t *klen, uint32_t *vlen)
{
    *klen = CNB__LD(e->klen);
    *vlen = CNB__LD(e->vlen);
    return *klen <= reg->max_key && *vlen <= reg->max_value &&
           cnb__reg_in_map(reg, eoff + CNB__ENTRY_HDR, (uint64_t)*klen + *vlen);
}

/* Copies the chain `which` starting at head into res (owner-filtered when p is
 * an owner probe and which is 0). Returns items added, RETRY or a code. */
static int add_chain(struct cnb_registry *reg, uint32_t head, int which,
                     const struct cnb__reg_probe *filter, cnb_registry_result_t *res)
{
    struct cnb__reg_walk w;
    cnb__reg_walk_init(&w, reg);
    int n = 0;
    for (uint32_t r = head; r;) {
        uint64_t eoff = CNB__REF_OFF(r) + 8;
        /* A loop or an overlong chain is a torn read, or memory another
         * process wrote: RETRY tells them apart (the sequence number). */
        if (!cnb__reg_walk_step(&w, r) || !cnb__reg_in_map(reg, eoff, CNB__ENTRY_HDR))
            return RETRY;
        const struct cnb__reg_entry *e = CNB__AT(reg, eoff);
        uint32_t klen, vlen;
        if (!entry_lens(reg, eoff, e, &klen, &vlen))
            return RETRY;
        if (!filter || cnb__reg_probe_match(filter, e)) {
            int rc = cnb__reg_res_add(reg, res, e, klen, vlen);
            if (rc)
                return rc;
            n++;
        }
        r = CNB__LD(e->next[which]);
    }
    return n;
}

/* Finds p's chain head in stripe si's table (lock-free). Returns the head ref,
 * 0 if absent, or RETRY. */
static int64_t find_head(struct cnb_registry *reg, uint32_t si,
                         const struct cnb__reg_probe *p)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    uint64_t t = atomic_load_explicit(p->which ? &st->otab : &st->ktab, memory_order_relaxed);
    uint32_t ref = cnb__tab_ref(t);
    unsigned bits = cnb__tab_bits(t);
    if (!ref)
        return 0;
    if (!cnb__reg_tab_ok(reg, t))
        return RETRY;
    const uint64_t *slots = cnb__reg_data(reg, ref);
    uint64_t mask = ((uint64_t)1 << bits) - 1;
    uint64_t j = cnb__reg_probe_home(reg, p, bits);
    uint32_t tag = (uint32_t)p->h;
    for (uint64_t k = 0; k <= mask; k++, j = (j + 1) & mask) {
        uint64_t v = __atomic_load_n(&slots[j], __ATOMIC_RELAXED);
        if (v == CNB__SLOT_EMPTY)
            return 0;
        if ((uint32_t)(v >> 32) != tag || (uint32_t)v <= CNB__SLOT_TOMB)
            continue;
        uint64_t eoff = CNB__REF_OFF((uint32_t)v) + 8;
        if (!cnb__reg_in_map(reg, eoff, CNB__ENTRY_HDR))
            return RETRY;
        const struct cnb__reg_entry *e = CNB__AT(reg, eoff);
        if (!p->which) {
            /* klen loaded once: the compare reads p->klen bytes, checked
             * mapped here. */
            uint32_t klen = CNB__LD(e->klen);
            if (CNB__LD(e->hash) != p->h || klen != p->klen)
                continue;
            if (!cnb__reg_in_map(reg, eoff + CNB__ENTRY_HDR, klen))
                return RETRY;
            if (cnb__reg_bytes_eq(e->data, p->key, klen))
                return (uint32_t)v;
        } else if (cnb__reg_probe_match(p, e)) {
            return (uint32_t)v;
        }
    }
    return 0;
}

struct key_arg {
    struct cnb__reg_probe key;
    int by_owner;
    struct cnb__reg_probe owner;
};

static int key_fn(struct cnb_registry *reg, uint32_t si, void *argp,
                  cnb_registry_result_t *res)
{
    struct key_arg *a = argp;
    int64_t head = find_head(reg, si, &a->key);
    if (head <= 0)
        return (int)head;
    return add_chain(reg, (uint32_t)head, 0, a->by_owner ? &a->owner : NULL, res);
}

static uint64_t key_hash(const void *key, size_t klen)
{
    return cnb__reg_mix(cnb_term_hash(key, klen));
}

/* Appends key's chain to res (si: its stripe, or -1 for the key's own), the
 * key put in the registry's form (-0.0 as 0.0) first; a->owner filters when
 * a->by_owner. Returns items added or a negative code. */
static int key_append(struct cnb_registry *reg, int64_t si, const void *key, size_t key_len,
                      struct key_arg *a, cnb_registry_result_t *res)
{
    struct cnb__reg_key k;
    int rc = cnb__reg_key_norm(reg, &k, key, key_len);
    if (rc == 0) {
        cnb__reg_probe_key(&a->key, key_hash(k.p, k.len), k.p, (uint32_t)k.len);
        rc = stripe_read(reg, si < 0 ? cnb__reg_stripe_of(reg, a->key.h) : (uint32_t)si,
                         key_fn, a, res);
    }
    cnb__reg_key_done(reg, &k);
    return rc;
}

/* key's chain alone in res (as key_append), after the argument checks;
 * owner (NULL: any) filters, meta reads the meta stripe. */
static ssize_t key_read(struct cnb_registry *reg, const void *key, size_t key_len,
                        const cnb_pid_t *owner, int meta, cnb_registry_result_t *res)
{
    int rc = res ? cnb__reg_args(reg, key, key_len, NULL, 0) : CNB_EINVAL;
    if (rc)
        return rc;
    cnb__reg_res_reset(res);
    struct key_arg a; /* a.key: set by key_append; a.owner: read if by_owner */
    a.by_owner = 0;
    if (owner) {
        uint32_t node = cnb__reg_node_find(reg, owner->node);
        if (!node)
            return 0;
        a.by_owner = 1;
        cnb__reg_probe_owner(&a.owner, node, owner->num, owner->serial, owner->creation);
    }
    rc = key_append(reg, meta ? (int64_t)reg->nstripes : -1, key, key_len, &a, res);
    if (rc < 0) {
        res->n = 0;
        return rc;
    }
    cnb__reg_res_fix(res);
    return (ssize_t)res->n;
}

ssize_t cnb_registry_lookup(struct cnb_registry *reg, const void *key, size_t key_len,
                            cnb_registry_result_t *res)
{
    return key_read(reg, key, key_len, NULL, 0, res);
}

/* ---- one entry, no result buffer ---------------------------------------------- */

struct one_arg {
    struct cnb__reg_probe key;
    cnb_registry_owner_t *owner;
    unsigned char *value;
    size_t cap;
    size_t *vlen;
};

/* key_fn for cnb_registry_lookup_one: the chain's head alone (a unique
 * registry has no other), checked as add_chain checks an entry (entry_lens). Returns 1, 0,
 * RETRY, or CNB_ENOSPC after setting *vlen. */
static int one_fn(struct cnb_registry *reg, uint32_t si, void *argp,
                  cnb_registry_result_t *res)
{
    (void)res;
    struct one_arg *a = argp;
    int64_t head = find_head(reg, si, &a->key);
    if (head <= 0)
        return (int)head;
    uint64_t eoff = CNB__REF_OFF((uint32_t)head) + 8; /* mapped: find_head checked */
    const struct cnb__reg_entry *e = CNB__AT(reg, eoff);
    uint32_t klen, vlen;
    if (!entry_lens(reg, eoff, e, &klen, &vlen))
        return RETRY;
    *a->vlen = vlen;
    if (vlen > a->cap)
        return CNB_ENOSPC;
    memcpy(a->value, e->data + klen, vlen);
    a->owner->node = cnb__reg_node_str(reg, CNB__LD(e->node));
    a->owner->num = CNB__LD(e->num);
    a->owner->serial = CNB__LD(e->serial);
    a->owner->creation = CNB__LD(e->creation);
    return 1;
}

ssize_t cnb_registry_lookup_one(struct cnb_registry *reg, const void *key, size_t key_len,
                                cnb_registry_owner_t *owner, void *value, size_t value_cap,
                                size_t *value_len)
{
    int rc = cnb__reg_args(reg, key, key_len, NULL, 0);
    if (rc)
        return rc;
    if (!owner || !value_len || (!value && value_cap) || reg->kind != CNB_REG_UNIQUE)
        return CNB_EINVAL;
    struct cnb__reg_key k;
    rc = cnb__reg_key_norm(reg, &k, key, key_len);
    if (rc == 0) {
        struct one_arg a = {.owner = owner, .value = value, .cap = value_cap,
                            .vlen = value_len};
        cnb_registry_result_t none = {0}; /* stripe_read's, unused */
        cnb__reg_probe_key(&a.key, key_hash(k.p, k.len), k.p, (uint32_t)k.len);
        rc = stripe_read(reg, cnb__reg_stripe_of(reg, a.key.h), one_fn, &a, &none);
    }
    cnb__reg_key_done(reg, &k);
    return rc;
}

ssize_t cnb_registry_values(struct cnb_registry *reg, const void *key, size_t key_len,
                            const cnb_pid_t *owner, cnb_registry_result_t *res)
{
    if (!owner)
        return CNB_EINVAL;
    return key_read(reg, key, key_len, owner, 0, res);
}

ssize_t cnb_registry_meta_get(struct cnb_registry *reg, const void *key, size_t key_len,
                              cnb_registry_result_t *res)
{
    ssize_t n = key_read(reg, key, key_len, NULL, 1, res);
    return n == 0 ? CNB_ENOENT : n;
}

/* ---- keys of an owner ------------------------------------------------------- */

static int owner_fn(struct cnb_registry *reg, uint32_t si, void *argp,
                    cnb_registry_result_t *res)
{
    const struct cnb__reg_probe *p = argp;
    int64_t head = find_head(reg, si, p);
    if (head <= 0)
        return (int)head;
    return add_chain(reg, (uint32_t)head, 1, NULL, res);
}

ssize_t cnb_registry_keys(struct cnb_registry *reg, const cnb_pid_t *owner,
                          cnb_registry_result_t *res)
{
    if (!reg || !res || !owner)
        return CNB_EINVAL;
    cnb__reg_res_reset(res);
    uint32_t node = cnb__reg_node_find(reg, owner->node);
    if (!node)
        return 0;
    struct cnb__reg_probe a;
    cnb__reg_probe_owner(&a, node, owner->num, owner->serial, owner->creation);
    for (uint32_t si = 0; si < reg->nstripes; si++) {
        int rc = stripe_read(reg, si, owner_fn, &a, res);
        if (rc < 0) {
            res->n = 0;
            return rc;
        }
    }
    cnb__reg_res_fix(res);
    return (ssize_t)res->n;
}

uint64_t cnb_registry_count(struct cnb_registry *reg)
{
    uint64_t n = 0;
    for (uint32_t si = 0; si < reg->nstripes; si++)
        n += atomic_load_explicit(&reg->counts[si], memory_order_relaxed);
    return n;
}

/* ---- scan ------------------------------------------------------------------- */

struct scan_arg {
    uint64_t pos;     /* in: first hash to deliver */
    uint64_t budget;  /* in: home positions to visit */
    uint64_t end;     /* out: first hash not covered (when !stripe_end) */
    uint64_t visited; /* out */
    int stripe_end;   /* out: the rest of the stripe was covered */
};

static uint64_t stripe_base(const struct cnb_registry *reg, uint32_t si)
{
    return reg->sbits ? (uint64_t)si << (64 - reg->sbits) : 0;
}

static int scan_fn(struct cnb_registry *reg, uint32_t si, void *argp,
                   cnb_registry_result_t *res)
{
    struct scan_arg *a = argp;
    struct cnb__reg_stripe *st = &reg->stripes[si];
    uint64_t t = atomic_load_explicit(&st->ktab, memory_order_relaxed);
    uint32_t ref = cnb__tab_ref(t);
    unsigned bits = cnb__tab_bits(t);
    a->visited = 1;
    a->stripe_end = 1;
    if (!ref)
        return 0;
    if (!cnb__reg_tab_ok(reg, t))
        return RETRY;
    const uint64_t *slots = cnb__reg_data(reg, ref);
    uint64_t size = (uint64_t)1 << bits, mask = size - 1;
    uint64_t first = cnb__reg_home(reg, a->pos, bits);
    uint64_t nh = size - first;
    if (nh > a->budget)
        nh = a->budget;
    uint64_t last = first + nh; /* homes [first, last) */
    a->visited = nh;
    a->stripe_end = last == size;
    a->end = a->stripe_end ? 0 : stripe_base(reg, si) | (last << (64 - reg->sbits - bits));
    int n = 0;
    for (uint64_t k = 0; k < size; k++) {
        uint64_t v = __atomic_load_n(&slots[(first + k) & mask], __ATOMIC_RELAXED);
        if (v == CNB__SLOT_EMPTY) {
            if (k + 1 >= nh)
                break; /* no entry with a home in range lies beyond */
            continue;
        }
        if ((uint32_t)v <= CNB__SLOT_TOMB)
            continue;
        uint64_t eoff = CNB__REF_OFF((uint32_t)v) + 8;
        if (!cnb__reg_in_map(reg, eoff, CNB__ENTRY_HDR))
            return RETRY;
        const struct cnb__reg_entry *e = CNB__AT(reg, eoff);
        uint64_t h = e->hash;
        if (h < a->pos || cnb__reg_stripe_of(reg, h) != si ||
            (!a->stripe_end && h >= a->end))
            continue;
        int rc = add_chain(reg, (uint32_t)v, 0, NULL, res);
        if (rc < 0)
            return rc;
        n += rc;
    }
    return n;
}

ssize_t cnb_registry_scan(struct cnb_registry *reg, cnb_registry_cursor_t *cur,
                          size_t budget, cnb_registry_scan_pred pred, void *ctx,
                          cnb_registry_result_t *res)
{
    if (!reg || !cur || !res)
        return CNB_EINVAL;
    cnb__reg_res_reset(res);
    if (budget == 0)
        budget = 256;
    cnb_registry_cursor_t c = *cur;
    uint64_t visited = 0;
    while (!c.done && visited < budget) {
        uint32_t si = cnb__reg_stripe_of(reg, c.pos);
        struct scan_arg a = {.pos = c.pos, .budget = budget - visited};
        int rc = stripe_read(reg, si, scan_fn, &a, res);
        if (rc < 0) {
            res->n = 0;
            return rc;
        }
        visited += a.visited;
        if (!a.stripe_end)
            c.pos = a.end;
        else if (si + 1 >= reg->nstripes)
            c.done = 1;
        else
            c.pos = stripe_base(reg, si + 1);
    }
    cnb__reg_res_fix(res);
    if (pred) {
        size_t k = 0;
        for (size_t i = 0; i < res->n; i++) {
            int keep = pred(ctx, &res->items[i]);
            if (keep < 0) {
                res->n = 0;
                return keep;
            }
            if (keep)
                res->items[k++] = res->items[i];
        }
        res->n = k;
    }
    *cur = c;
    return (ssize_t)res->n;
}

/* ---- batched lookups -------------------------------------------------------- */

/* Keys in flight at once. Each lookup waits on two dependent loads (the table
 * slot, then the entry) that miss the cache in a big registry; a group's loads
 * are issued together (prefetched) so that their misses overlap. */
#define DIST ((size_t)8)
#define RING ((size_t)32) /* a power of two > 2 * DIST */

struct pend {
    uint64_t h;
    uint64_t s1;          /* the stripe's sequence number before the reads */
    const uint64_t *slots; /* key table; NULL: no table (absent) */
    uint64_t mask, j;     /* probe position */
    uint64_t eoff;        /* candidate entry (0: absent) */
    uint32_t si, ref;
    int slow;             /* redo with the one-key path */
    int none;             /* cannot be present: no items */
};

/* Stage 1: hash, read the stripe's table word, prefetch the home slot. */
static void pend_start(struct cnb_registry *reg, const cnb_registry_key_t *k,
                       struct pend *p)
{
    memset(p, 0, sizeof *p);
    if (k->len > reg->max_key) {
        p->none = 1; /* longer than any key the registry can hold */
        return;
    }
    struct cnb__reg_key nk; /* a key with a -0.0: the one-key path puts it in form */
    int differs = cnb__reg_key_norm(reg, &nk, k->key, k->len) != 0 || nk.p != k->key;
    cnb__reg_key_done(reg, &nk);
    if (differs) {
        p->slow = 1;
        return;
    }
    p->h = key_hash(k->key, k->len);
    p->si = cnb__reg_stripe_of(reg, p->h);
    struct cnb__reg_stripe *st = &reg->stripes[p->si];
    p->s1 = atomic_load_explicit(&st->seq, memory_order_acquire);
    if (p->s1 & 1) {
        p->slow = 1;
        return;
    }
    uint64_t t = atomic_load_explicit(&st->ktab, memory_order_relaxed);
    uint32_t ref = cnb__tab_ref(t);
    unsigned bits = cnb__tab_bits(t);
    if (!ref)
        return;
    if (!cnb__reg_tab_ok(reg, t)) {
        p->slow = 1;
        return;
    }
    p->slots = cnb__reg_data(reg, ref);
    p->mask = ((uint64_t)1 << bits) - 1;
    p->j = cnb__reg_home(reg, p->h, bits);
    __builtin_prefetch(&p->slots[p->j]);
}

/* Stage 2: probe for the first slot with the key's tag; prefetch its entry. */
static void pend_probe(struct cnb_registry *reg, struct pend *p)
{
    if (p->slow || p->none || !p->slots)
        return;
    uint32_t tag = (uint32_t)p->h;
    uint64_t j = p->j;
    for (uint64_t k = 0; k <= p->mask; k++, j = (j + 1) & p->mask) {
        uint64_t v = __atomic_load_n(&p->slots[j], __ATOMIC_RELAXED);
        if (v == CNB__SLOT_EMPTY)
            return;
        if ((uint32_t)(v >> 32) != tag || (uint32_t)v <= CNB__SLOT_TOMB)
            continue;
        uint64_t eoff = CNB__REF_OFF((uint32_t)v) + 8;
        if (!cnb__reg_in_map(reg, eoff, 128)) {
            p->slow = 1;
            return;
        }
        p->eoff = eoff;
        p->ref = (uint32_t)v;
        __builtin_prefetch(reg->base + eoff);
        __builtin_prefetch(reg->base + eoff + 64);
        return;
    }
}

/* Stage 3: check the candidate, copy its chain, validate the snapshot. Returns
 * items added, or RETRY when the key needs the one-key path, or a code. */
static int pend_finish(struct cnb_registry *reg, const cnb_registry_key_t *k,
                       const struct pend *p, cnb_registry_result_t *res)
{
    if (p->none)
        return 0;
    if (p->slow)
        return RETRY;
    int n = 0;
    if (p->eoff) {
        const struct cnb__reg_entry *e = CNB__AT(reg, p->eoff);
        uint32_t klen = CNB__LD(e->klen);
        if (e->hash != p->h || klen != k->len ||
            !cnb__reg_in_map(reg, p->eoff + CNB__ENTRY_HDR, klen) ||
            !cnb__reg_bytes_eq(e->data, k->key, klen))
            return RETRY; /* a tag collision or a moving table: rare */
        n = add_chain(reg, p->ref, 0, NULL, res);
        if (n < 0 && n != RETRY)
            return n;
    }
    atomic_thread_fence(memory_order_acquire);
    if (n == RETRY ||
        atomic_load_explicit(&reg->stripes[p->si].seq, memory_order_relaxed) != p->s1)
        return RETRY;
    return n;
}

ssize_t cnb_registry_lookup_many(struct cnb_registry *reg, const cnb_registry_key_t *keys,
                                 size_t n, cnb_registry_result_t *res, size_t *counts)
{
    if (!reg || !res || (!keys && n) || (!counts && n))
        return CNB_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!keys[i].key && keys[i].len)
            return CNB_EINVAL;
    cnb__reg_res_reset(res);
    /* A software pipeline: key i starts while key i - DIST is probed and key
     * i - 2 * DIST finishes, so each load has had DIST keys' work to arrive. */
    struct pend ring[RING];
    for (size_t i = 0; i < n + 2 * DIST; i++) {
        if (i < n)
            pend_start(reg, &keys[i], &ring[i % RING]);
        if (i >= DIST && i - DIST < n)
            pend_probe(reg, &ring[(i - DIST) % RING]);
        if (i < 2 * DIST || i - 2 * DIST >= n)
            continue;
        size_t f = i - 2 * DIST;
        const cnb_registry_key_t *k = &keys[f];
        struct pend *p = &ring[f % RING];
        size_t n0 = res->n, b0 = res->buf_len;
        int rc = pend_finish(reg, k, p, res);
        if (rc == RETRY) {
            res->n = n0;
            res->buf_len = b0;
            struct key_arg a;
            memset(&a, 0, sizeof a);
            rc = key_append(reg, -1, k->key, k->len, &a, res);
        }
        if (rc < 0) {
            res->n = 0;
            return rc;
        }
        counts[f] = res->n - n0;
    }
    cnb__reg_res_fix(res);
    return (ssize_t)res->n;
}
