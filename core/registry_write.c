/* registry_write.c: the writers: register, unregister(_match), update_value,
 * remove_owner, remove_node, meta put/delete. Each change to one entry is one
 * transaction on its stripe: reserve arena space (log empty), build new memory
 * (tables, entry) that nothing refers to yet, then with the seqlock odd make the
 * logged stores that link it in, commit, publish the feed event.
 * Tests: tests/unit/test_registry*.c. */
#include "registry_int.h"
#include "cnb_term.h"

static uint64_t key_hash(const void *key, size_t klen)
{
    return cnb__reg_mix(cnb_term_hash(key, klen));
}

static int is_meta(const struct cnb_registry *reg, uint32_t si)
{
    return si == reg->nstripes;
}

static uint64_t slot_count(struct cnb_registry *reg, uint32_t si)
{
    return atomic_load_explicit(&reg->counts[si], memory_order_relaxed);
}

/* Head of key's chain in stripe si (locked), or 0. */
static uint32_t key_head(struct cnb_registry *reg, uint32_t si, uint64_t h, const void *key,
                         size_t klen)
{
    struct cnb__reg_probe p;
    cnb__reg_probe_key(&p, h, key, (uint32_t)klen);
    return cnb__reg_chain_head(reg, si, &p);
}

static struct cnb__reg_entry *entry(struct cnb_registry *reg, uint32_t ref)
{
    return cnb__reg_data(reg, ref);
}

static int owner_is(const struct cnb__reg_entry *e, uint32_t node, const cnb_pid_t *o)
{
    return e->node == node && e->num == o->num && e->serial == o->serial &&
           e->creation == o->creation;
}

/* Pre-phase of an insert: rehash decisions, reserve, new tables. */
struct plan {
    unsigned kbits, obits;
    uint64_t nk, no;
    uint32_t kchains, ochains; /* chains in nk, no: the live counts they take */
};

static int plan_insert(struct cnb_registry *reg, uint32_t si, uint64_t h, const void *key,
                       size_t klen, uint32_t node, const cnb_pid_t *owner,
                       uint64_t entry_bytes, struct plan *p)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    p->kbits = p->obits = 0;
    p->nk = p->no = 0;
    if (!key_head(reg, si, h, key, klen))
        p->kbits = cnb__reg_rehash_bits(st->ktab, st->klive, (uint64_t)st->klive + st->ktomb);
    if (!is_meta(reg, si) && owner) {
        struct cnb__reg_probe op;
        cnb__reg_probe_owner(&op, node, owner->num, owner->serial, owner->creation);
        if (!cnb__reg_chain_head(reg, si, &op))
            p->obits =
                cnb__reg_rehash_bits(st->otab, st->olive, (uint64_t)st->olive + st->otomb);
    }
    /* Tables are allocated first, then the entry: the same order as below. */
    uint64_t sizes[3];
    int n = 0;
    if (p->kbits)
        sizes[n++] = (uint64_t)8 << p->kbits;
    if (p->obits)
        sizes[n++] = (uint64_t)8 << p->obits;
    sizes[n++] = entry_bytes;
    int rc = cnb__reg_bad ? CNB_ECORRUPT : cnb__reg_reserve_for(reg, si, sizes, n);
    if (rc)
        return rc;
    uint64_t kt = atomic_load_explicit(&st->ktab, memory_order_relaxed);
    uint64_t ot = atomic_load_explicit(&st->otab, memory_order_relaxed);
    if (p->kbits)
        p->nk = cnb__reg_table_build(reg, si, kt, p->kbits, 0, &p->kchains);
    if (p->obits && !cnb__reg_bad)
        p->no = cnb__reg_table_build(reg, si, ot, p->obits, 1, &p->ochains);
    return cnb__reg_bad ? CNB_ECORRUPT : 0;
}

/* Logs the switch of one stripe table (*tab, its tombstones and live chains)
 * to the one built at t, and frees the old table. */
static void publish_one(struct cnb_registry *reg, uint32_t si, _Atomic uint64_t *tab,
                        uint32_t *tomb, uint32_t *live, uint64_t t, uint32_t chains)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    uint32_t old = cnb__tab_ref(*tab);
    cnb__reg_log_w64(reg, &st->log, (void *)tab, t);
    cnb__reg_log_w32(reg, &st->log, tomb, 0);
    cnb__reg_log_w32(reg, &st->log, live, chains);
    if (old)
        cnb__reg_free(reg, si, old);
}

/* Seqlock odd: switch to the tables built by plan_insert. */
static void plan_publish(struct cnb_registry *reg, uint32_t si, const struct plan *p)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    if (p->nk)
        publish_one(reg, si, &st->ktab, &st->ktomb, &st->klive, p->nk, p->kchains);
    if (p->no)
        publish_one(reg, si, &st->otab, &st->otomb, &st->olive, p->no, p->ochains);
}

static uint32_t new_entry(struct cnb_registry *reg, uint32_t si, uint64_t h,
                          const void *key, size_t klen, uint32_t node, uint32_t num,
                          uint32_t serial, uint32_t creation, const void *val,
                          size_t vlen)
{
    uint32_t ref = cnb__reg_alloc(reg, si, CNB__ENTRY_HDR + klen + vlen, CNB__TAG_ENTRY);
    if (!ref)
        return 0;
    struct cnb__reg_entry *e = cnb__reg_data(reg, ref);
    e->hash = h;
    e->klen = (uint32_t)klen;
    e->vlen = (uint32_t)vlen;
    e->node = node;
    e->num = num;
    e->serial = serial;
    e->creation = creation;
    e->next[0] = e->next[1] = e->prev[0] = e->prev[1] = 0;
    if (klen)
        memcpy(e->data, key, klen);
    if (vlen)
        memcpy(e->data + klen, val, vlen);
    return ref;
}

/* Ends stripe si's transaction (committed, or rolled back if it met corrupt
 * memory) and publishes its feed event. Returns 0 or CNB_ECORRUPT. */
static int finish(struct cnb_registry *reg, uint32_t si)
{
    int rc = cnb__reg_tx_end(reg, si);
    cnb__reg_feed_publish(reg, si);
    return rc;
}

/* The pre-phase met corrupt memory: undo what it did (nothing reachable). */
static int abandon(struct cnb_registry *reg, uint32_t si, int rc)
{
    cnb__reg_bad = 0;
    cnb__reg_log_rollback(reg, &reg->stripes[si].log);
    return rc;
}

static int insert_locked(struct cnb_registry *reg, uint32_t si, uint64_t h,
                         const void *key, size_t klen, uint32_t node,
                         const cnb_pid_t *owner, const void *val, size_t vlen)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    struct plan p;
    int rc = plan_insert(reg, si, h, key, klen, node, owner, CNB__ENTRY_HDR + klen + vlen, &p);
    if (rc)
        return abandon(reg, si, rc); /* nothing reachable changed yet */
    uint32_t ref = new_entry(reg, si, h, key, klen, node, owner ? owner->num : 0,
                             owner ? owner->serial : 0, owner ? owner->creation : 0,
                             val, vlen);
    if (!ref)
        return abandon(reg, si, CNB_ECORRUPT);
    const struct cnb__reg_entry *e = cnb__reg_data(reg, ref);
    if (!is_meta(reg, si))
        cnb__reg_feed_append(reg, si, CNB_REG_EV_REGISTER, e);
    cnb__reg_seq_begin(st);
    plan_publish(reg, si, &p);
    cnb__reg_chain_link(reg, si, 0, ref);
    if (!is_meta(reg, si))
        cnb__reg_chain_link(reg, si, 1, ref);
    cnb__reg_log_w64(reg, &st->log, (void *)&reg->counts[si], slot_count(reg, si) + 1);
    return finish(reg, si);
}

int cnb__reg_remove_entry(struct cnb_registry *reg, uint32_t si, uint32_t ref, int feed)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    const struct cnb__reg_entry *e = cnb__reg_data(reg, ref);
    if (feed)
        cnb__reg_feed_append(reg, si, CNB_REG_EV_UNREGISTER, e);
    cnb__reg_seq_begin(st);
    cnb__reg_chain_unlink(reg, si, 0, ref);
    if (!is_meta(reg, si))
        cnb__reg_chain_unlink(reg, si, 1, ref);
    cnb__reg_log_w64(reg, &st->log, (void *)&reg->counts[si], slot_count(reg, si) - 1);
    cnb__reg_free(reg, si, ref);
    return finish(reg, si);
}

/* Replace entry ref by a copy with a new value (stripe locked). Returns 0 or a
 * negative code (nothing changed then). */
static int replace_value(struct cnb_registry *reg, uint32_t si, uint32_t ref,
                         const void *val, size_t vlen, int feed)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    const struct cnb__reg_entry *e = cnb__reg_data(reg, ref);
    uint32_t klen = CNB__LD(e->klen);
    if (klen > reg->max_key || !cnb__reg_ref_ok(reg, ref, CNB__ENTRY_HDR + (uint64_t)klen))
        return CNB_ECORRUPT;
    uint64_t bytes = CNB__ENTRY_HDR + (uint64_t)klen + vlen;
    int rc = cnb__reg_reserve_for(reg, si, &bytes, 1);
    if (rc)
        return rc;
    uint32_t nref = new_entry(reg, si, e->hash, e->data, klen, e->node, e->num,
                              e->serial, e->creation, val, vlen);
    if (!nref)
        return abandon(reg, si, CNB_ECORRUPT);
    const struct cnb__reg_entry *ne = cnb__reg_data(reg, nref);
    if (feed)
        cnb__reg_feed_append(reg, si, CNB_REG_EV_UPDATE, ne);
    cnb__reg_seq_begin(st);
    cnb__reg_chain_replace(reg, si, 0, ref, nref);
    if (!is_meta(reg, si))
        cnb__reg_chain_replace(reg, si, 1, ref, nref);
    cnb__reg_free(reg, si, ref);
    return finish(reg, si);
}

static int check_owner(const cnb_pid_t *owner)
{
    if (!owner)
        return CNB_EINVAL;
    size_t n = strnlen(owner->node, sizeof owner->node);
    return n == 0 || n >= sizeof owner->node ? CNB_EINVAL : 0;
}

static int register_key(struct cnb_registry *reg, const void *key, size_t key_len,
                        const cnb_pid_t *owner, const void *value, size_t value_len,
                        cnb_pid_t *current)
{
    int rc = check_owner(owner);
    if (rc || (rc = cnb__reg_args(reg, key, key_len, value, value_len)))
        return rc;
    int node = cnb__reg_node_intern(reg, owner->node);
    if (node < 0)
        return node;
    uint64_t h = key_hash(key, key_len);
    uint32_t si = cnb__reg_stripe_of(reg, h);
    rc = cnb__reg_stripe_lock(reg, si);
    if (rc)
        return rc;
    if (reg->kind == CNB_REG_UNIQUE) {
        uint32_t ref = key_head(reg, si, h, key, key_len);
        if (cnb__reg_bad) {
            rc = abandon(reg, si, CNB_ECORRUPT);
            goto out;
        }
        if (ref) {
            if (current) {
                const struct cnb__reg_entry *e = cnb__reg_data(reg, ref);
                cnb__reg_node_name(reg, e->node, current->node);
                current->num = e->num;
                current->serial = e->serial;
                current->creation = e->creation;
            }
            rc = CNB_EEXIST;
            goto out;
        }
    }
    rc = insert_locked(reg, si, h, key, key_len, (uint32_t)node, owner, value, value_len);
out:
    cnb__reg_stripe_unlock(reg, si);
    return rc;
}

/* What each_owned does to one entry of the owner: returns 1 (counted), 0
 * (passed over) or a negative code (the walk stops and returns it). Runs under
 * the stripe lock; the entry's next link is read before it is called, so it
 * may remove the entry. */
typedef ssize_t (*owned_fn)(struct cnb_registry *reg, uint32_t si, uint32_t ref,
                            const struct cnb__reg_entry *e, void *ctx);

/* Under key's stripe lock, calls fn on every entry of key (already checked
 * against the limits) owned by owner, whose node is interned as node. Returns
 * how many fn counted, or the first negative code (fn's, or CNB_ECORRUPT for a
 * bad link, the stripe's transaction then rolled back). */
static ssize_t each_owned(struct cnb_registry *reg, const void *key, size_t key_len,
                          uint32_t node, const cnb_pid_t *owner, owned_fn fn, void *ctx)
{
    uint64_t h = key_hash(key, key_len);
    uint32_t si = cnb__reg_stripe_of(reg, h);
    int rc = cnb__reg_stripe_lock(reg, si);
    if (rc)
        return rc;
    ssize_t n = 0;
    uint32_t ref, next;
    struct cnb__reg_walk w;
    cnb__reg_walk_init(&w, reg);
    for (ref = key_head(reg, si, h, key, key_len); ref; ref = next) {
        if (!cnb__reg_walk_step(&w, ref) || !cnb__reg_ref_ok(reg, ref, CNB__ENTRY_HDR)) {
            n = CNB_ECORRUPT;
            break;
        }
        const struct cnb__reg_entry *e = entry(reg, ref);
        next = CNB__LD(e->next[0]);
        if (!owner_is(e, node, owner))
            continue;
        ssize_t m = fn(reg, si, ref, e, ctx);
        if (m < 0) {
            n = m;
            break;
        }
        n += m;
    }
    if (cnb__reg_bad)
        n = abandon(reg, si, CNB_ECORRUPT);
    cnb__reg_stripe_unlock(reg, si);
    return n;
}

struct unreg_ctx {
    cnb_registry_value_pred pred; /* NULL: every entry */
    void *ctx;
};

/* each_owned's step of unregister_key: removes the entry if pred accepts it. */
static ssize_t unregister_one(struct cnb_registry *reg, uint32_t si, uint32_t ref,
                              const struct cnb__reg_entry *e, void *arg)
{
    const struct unreg_ctx *u = arg;
    if (u->pred) {
        uint32_t klen = CNB__LD(e->klen), vlen = CNB__LD(e->vlen);
        if (klen > reg->max_key || vlen > reg->max_value ||
            !cnb__reg_ref_ok(reg, ref, CNB__ENTRY_HDR + (uint64_t)klen + vlen))
            return CNB_ECORRUPT;
        int m = u->pred(u->ctx, e->data + klen, vlen);
        if (m <= 0)
            return m;
    }
    return cnb__reg_remove_entry(reg, si, ref, 1) ? CNB_ECORRUPT : 1;
}

/* Removes (pred NULL: every) entry of key owned by owner whose value pred accepts. */
static ssize_t unregister_key(struct cnb_registry *reg, const void *key, size_t key_len,
                               const cnb_pid_t *owner, cnb_registry_value_pred pred,
                               void *ctx)
{
    int rc = check_owner(owner);
    if (rc || (rc = cnb__reg_args(reg, key, key_len, NULL, 0)))
        return rc;
    uint32_t node = cnb__reg_node_find(reg, owner->node);
    if (!node)
        return 0;
    struct unreg_ctx u = {pred, ctx};
    return each_owned(reg, key, key_len, node, owner, unregister_one, &u);
}

/* ---- the public writers: keys in the registry's form (-0.0 as 0.0) -------------- */

static ssize_t update_key(struct cnb_registry *reg, const void *key, size_t key_len,
                          const cnb_pid_t *owner, const void *value, size_t value_len);
static int meta_key(struct cnb_registry *reg, const void *key, size_t key_len,
                    const void *value, size_t value_len, int del);

/* Runs `call` with key, key_len replaced by the registry's form of the key. */
#define WITH_KEY(reg, key, key_len, rc, call)                                  \
    do {                                                                       \
        struct cnb__reg_key k_;                                                \
        (rc) = cnb__reg_key_norm((reg), &k_, (key), (key_len));                \
        if ((rc) == 0) {                                                       \
            const void *nkey_ = k_.p;                                          \
            (rc) = (call);                                                     \
        }                                                                      \
        cnb__reg_key_done((reg), &k_);                                         \
    } while (0)

int cnb_registry_register(struct cnb_registry *reg, const void *key, size_t key_len,
                          const cnb_pid_t *owner, const void *value, size_t value_len,
                          cnb_pid_t *current)
{
    int rc;
    WITH_KEY(reg, key, key_len, rc,
             register_key(reg, nkey_, key_len, owner, value, value_len, current));
    return rc;
}

static ssize_t unregister_impl(struct cnb_registry *reg, const void *key, size_t key_len,
                               const cnb_pid_t *owner, cnb_registry_value_pred pred,
                               void *ctx)
{
    ssize_t rc;
    WITH_KEY(reg, key, key_len, rc, unregister_key(reg, nkey_, key_len, owner, pred, ctx));
    return rc;
}

ssize_t cnb_registry_update_value(struct cnb_registry *reg, const void *key,
                                  size_t key_len, const cnb_pid_t *owner,
                                  const void *value, size_t value_len)
{
    ssize_t rc;
    WITH_KEY(reg, key, key_len, rc, update_key(reg, nkey_, key_len, owner, value, value_len));
    return rc;
}

int cnb_registry_meta_put(struct cnb_registry *reg, const void *key, size_t key_len,
                          const void *value, size_t value_len)
{
    int rc;
    WITH_KEY(reg, key, key_len, rc, meta_key(reg, nkey_, key_len, value, value_len, 0));
    return rc;
}

int cnb_registry_meta_delete(struct cnb_registry *reg, const void *key, size_t key_len)
{
    int rc;
    WITH_KEY(reg, key, key_len, rc, meta_key(reg, nkey_, key_len, NULL, 0, 1));
    return rc;
}

ssize_t cnb_registry_unregister(struct cnb_registry *reg, const void *key,
                                size_t key_len, const cnb_pid_t *owner)
{
    return unregister_impl(reg, key, key_len, owner, NULL, NULL);
}

ssize_t cnb_registry_unregister_match(struct cnb_registry *reg, const void *key,
                                      size_t key_len, const cnb_pid_t *owner,
                                      cnb_registry_value_pred pred, void *ctx)
{
    if (!pred)
        return CNB_EINVAL;
    return unregister_impl(reg, key, key_len, owner, pred, ctx);
}

struct update_ctx {
    const void *value;
    size_t len;
};

/* each_owned's step of update_key: the entry gets the new value. */
static ssize_t update_one(struct cnb_registry *reg, uint32_t si, uint32_t ref,
                          const struct cnb__reg_entry *e, void *arg)
{
    const struct update_ctx *u = arg;
    int rc = replace_value(reg, si, ref, u->value, u->len, 1);
    return rc ? rc : 1;
}

static ssize_t update_key(struct cnb_registry *reg, const void *key, size_t key_len,
                          const cnb_pid_t *owner, const void *value, size_t value_len)
{
    int rc = check_owner(owner);
    if (rc || (rc = cnb__reg_args(reg, key, key_len, value, value_len)))
        return rc;
    uint32_t node = cnb__reg_node_find(reg, owner->node);
    if (!node)
        return CNB_ENOENT;
    struct update_ctx u = {value, value_len};
    ssize_t n = each_owned(reg, key, key_len, node, owner, update_one, &u);
    return n == 0 ? CNB_ENOENT : n;
}

ssize_t cnb_registry_remove_owner(struct cnb_registry *reg, const cnb_pid_t *owner)
{
    if (!reg || check_owner(owner))
        return CNB_EINVAL;
    uint32_t node = cnb__reg_node_find(reg, owner->node);
    if (!node)
        return 0;
    struct cnb__reg_probe op;
    cnb__reg_probe_owner(&op, node, owner->num, owner->serial, owner->creation);
    ssize_t n = 0;
    for (uint32_t si = 0; si < reg->nstripes; si++) {
        struct cnb__reg_stripe *st = &reg->stripes[si];
        if (!cnb__tab_ref(atomic_load_explicit(&st->otab, memory_order_relaxed)) ||
            slot_count(reg, si) == 0)
            continue;
        int rc = cnb__reg_stripe_lock(reg, si);
        if (rc)
            return rc;
        uint32_t ref;
        while ((ref = cnb__reg_chain_head(reg, si, &op)) != 0 &&
               (rc = cnb__reg_remove_entry(reg, si, ref, 1)) == 0)
            n++;
        if (cnb__reg_bad)
            rc = abandon(reg, si, CNB_ECORRUPT);
        cnb__reg_stripe_unlock(reg, si);
        if (rc)
            return rc;
    }
    return n;
}

/* Removes the entries of (node, creation) found from stripe si's key table
 * (locked), counting them in *n. Returns 0 or CNB_ECORRUPT. */
static int remove_node_table(struct cnb_registry *reg, uint32_t si, const uint64_t *slots,
                             uint64_t size, uint32_t node, uint32_t creation, ssize_t *n)
{
    for (uint64_t j = 0; j < size; j++) {
        uint64_t v = CNB__LD(slots[j]);
        if ((uint32_t)v <= CNB__SLOT_TOMB)
            continue;
        uint32_t next;
        struct cnb__reg_walk w;
        cnb__reg_walk_init(&w, reg);
        for (uint32_t ref = (uint32_t)v; ref; ref = next) {
            if (!cnb__reg_walk_step(&w, ref) || !cnb__reg_ref_ok(reg, ref, CNB__ENTRY_HDR))
                return CNB_ECORRUPT;
            const struct cnb__reg_entry *e = entry(reg, ref);
            next = CNB__LD(e->next[0]);
            if (e->node == node && (creation == 0 || e->creation == creation)) {
                if (cnb__reg_remove_entry(reg, si, ref, 1))
                    return CNB_ECORRUPT;
                (*n)++;
            }
        }
    }
    return 0;
}

ssize_t cnb__reg_remove_node_idx(struct cnb_registry *reg, uint32_t node,
                                 uint32_t creation)
{
    ssize_t n = 0;
    for (uint32_t si = 0; si < reg->nstripes; si++) {
        struct cnb__reg_stripe *st = &reg->stripes[si];
        if (slot_count(reg, si) == 0)
            continue;
        int rc = cnb__reg_stripe_lock(reg, si);
        if (rc)
            return rc;
        uint64_t t = atomic_load_explicit(&st->ktab, memory_order_relaxed);
        unsigned bits = cnb__tab_bits(t);
        if (cnb__tab_ref(t) && !cnb__reg_tab_ok(reg, t))
            rc = CNB_ECORRUPT;
        else if (cnb__tab_ref(t))
            rc = remove_node_table(reg, si, cnb__reg_data(reg, cnb__tab_ref(t)),
                                   (uint64_t)1 << bits, node, creation, &n);
        if (cnb__reg_bad)
            rc = abandon(reg, si, CNB_ECORRUPT);
        cnb__reg_stripe_unlock(reg, si);
        if (rc)
            return rc;
    }
    return n;
}

ssize_t cnb_registry_remove_node(struct cnb_registry *reg, const char *node,
                                 uint32_t creation)
{
    if (!reg || !node)
        return CNB_EINVAL;
    uint32_t idx = cnb__reg_node_find(reg, node);
    return idx ? cnb__reg_remove_node_idx(reg, idx, creation) : 0;
}

/* Puts value under key in the meta stripe, or (del) removes key from it. */
static int meta_key(struct cnb_registry *reg, const void *key, size_t key_len,
                    const void *value, size_t value_len, int del)
{
    int rc = cnb__reg_args(reg, key, key_len, value, value_len);
    if (rc)
        return rc;
    uint64_t h = key_hash(key, key_len);
    uint32_t si = reg->nstripes;
    if ((rc = cnb__reg_stripe_lock(reg, si)))
        return rc;
    uint32_t ref = key_head(reg, si, h, key, key_len);
    if (cnb__reg_bad)
        rc = abandon(reg, si, CNB_ECORRUPT);
    else if (ref)
        rc = del ? cnb__reg_remove_entry(reg, si, ref, 0)
                 : replace_value(reg, si, ref, value, value_len, 0);
    else
        rc = del ? CNB_ENOENT : insert_locked(reg, si, h, key, key_len, 0, NULL, value, value_len);
    cnb__reg_stripe_unlock(reg, si);
    return rc;
}

int cnb__reg_presize(struct cnb_registry *reg, uint32_t si, uint64_t entries)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    int rc = cnb__reg_stripe_lock(reg, si);
    if (rc)
        return rc;
    unsigned bits = CNB__REG_MIN_BITS;
    while (((uint64_t)1 << bits) < entries * 2)
        bits++;
    struct plan p = {bits, is_meta(reg, si) ? 0 : bits, 0, 0, 0, 0};
    if (cnb__tab_ref(st->ktab)) /* already there: someone else sized it */
        goto out;
    uint64_t need = cnb__reg_alloc_cost((uint64_t)8 << bits) * 2;
    rc = cnb__reg_reserve(reg, si, need, NULL);
    if (rc)
        goto out;
    p.nk = cnb__reg_table_build(reg, si, 0, p.kbits, 0, &p.kchains);
    if (p.obits)
        p.no = cnb__reg_table_build(reg, si, 0, p.obits, 1, &p.ochains);
    if (cnb__reg_bad) {
        rc = abandon(reg, si, CNB_ECORRUPT);
        goto out;
    }
    cnb__reg_seq_begin(st);
    plan_publish(reg, si, &p);
    rc = finish(reg, si);
out:
    cnb__reg_stripe_unlock(reg, si);
    return rc;
}
