/* registry_table.c: a stripe's two open-addressing tables (linear probing, 64-bit
 * slots of hash tag and entry ref, tombstones on removal). A slot holds the head
 * of a doubly linked chain: in the key table the entries of one key, in the
 * owner table those of one owner, so a key with many entries or an owner with
 * many keys costs one slot, not a long probe run. A key's home slot is taken
 * from the top hash bits, so table order is hash order and survives doubling:
 * scans rely on that. Tests: tests/unit/test_registry*.c. */
#include "registry_int.h"
#include "cnb_term.h"

void cnb__reg_probe_owner(struct cnb__reg_probe *p, uint32_t node, uint32_t num,
                          uint32_t serial, uint32_t creation)
{
    memset(p, 0, sizeof *p);
    p->which = 1;
    p->h = cnb__reg_owner_hash(node, num, serial, creation);
    p->node = node;
    p->num = num;
    p->serial = serial;
    p->creation = creation;
}

void cnb__reg_probe_entry(struct cnb__reg_probe *p, int which,
                          const struct cnb__reg_entry *e)
{
    if (which)
        cnb__reg_probe_owner(p, e->node, e->num, e->serial, e->creation);
    else
        cnb__reg_probe_key(p, e->hash, e->data, e->klen);
}


uint64_t cnb__reg_entry_ohash(const struct cnb__reg_entry *e)
{
    return cnb__reg_owner_hash(e->node, e->num, e->serial, e->creation);
}

static struct cnb__reg_entry *entry(struct cnb_registry *reg, uint32_t ref)
{
    return cnb__reg_data(reg, ref);
}

static uint64_t *tab_word(struct cnb__reg_stripe *st, int which)
{
    return (uint64_t *)(which ? &st->otab : &st->ktab);
}

/* The slots of table word t (*bits set), or NULL (the operation marked bad)
 * when t does not name a mapped table. */
static uint64_t *tab_slots(struct cnb_registry *reg, uint64_t t, unsigned *bits)
{
    if (!cnb__reg_tab_ok(reg, t)) {
        cnb__reg_bad = 1;
        return NULL;
    }
    *bits = cnb__tab_bits(t);
    return cnb__reg_data(reg, cnb__tab_ref(t));
}

/* Is slot value v's entry one p looks for? Checks the entry is mapped (with
 * the key bytes compared) first; a bad ref marks the operation bad. */
static int slot_match(struct cnb_registry *reg, const struct cnb__reg_probe *p, uint64_t v)
{
    if ((uint32_t)(v >> 32) != (uint32_t)p->h)
        return 0;
    uint64_t need = CNB__ENTRY_HDR + (p->which ? 0 : (uint64_t)p->klen);
    if (!cnb__reg_ref_chk(reg, (uint32_t)v, need))
        return 0;
    return cnb__reg_probe_match(p, entry(reg, (uint32_t)v));
}

/* Finds p's slot (stripe locked). Returns a pointer to it and sets *head, or
 * returns NULL and sets *free_slot (if asked) to where a new chain would go
 * (NULL when the table is full or corrupt). */
static uint64_t *find_slot(struct cnb_registry *reg, uint32_t si,
                           const struct cnb__reg_probe *p, uint32_t *head,
                           uint64_t **free_slot)
{
    uint64_t t = CNB__LD(*tab_word(&reg->stripes[si], p->which));
    *head = 0;
    if (free_slot)
        *free_slot = NULL;
    if (!cnb__tab_ref(t))
        return NULL;
    if (!p->which && p->klen > reg->max_key) {
        cnb__reg_bad = 1;
        return NULL;
    }
    unsigned bits;
    uint64_t *slots = tab_slots(reg, t, &bits);
    if (!slots)
        return NULL;
    uint64_t mask = ((uint64_t)1 << bits) - 1;
    uint64_t j = cnb__reg_probe_home(reg, p, bits);
    for (uint64_t k = 0; k <= mask; k++, j = (j + 1) & mask) {
        uint64_t v = CNB__LD(slots[j]);
        if ((uint32_t)v <= CNB__SLOT_TOMB) {
            if (free_slot && !*free_slot)
                *free_slot = &slots[j];
            if (v == CNB__SLOT_EMPTY)
                return NULL;
            continue;
        }
        if (slot_match(reg, p, v)) {
            *head = (uint32_t)v;
            return &slots[j];
        }
        if (cnb__reg_bad)
            return NULL;
    }
    return NULL;
}

uint32_t cnb__reg_chain_head(struct cnb_registry *reg, uint32_t si,
                             const struct cnb__reg_probe *p)
{
    uint32_t head;
    find_slot(reg, si, p, &head, NULL);
    return head;
}

static unsigned bits_for(uint64_t n)
{
    unsigned b = CNB__REG_MIN_BITS;
    while (((uint64_t)1 << b) < n)
        b++;
    return b;
}

unsigned cnb__reg_rehash_bits(uint64_t tab, uint64_t live, uint64_t used)
{
    /* live comes from shared memory, which another process may have
     * scribbled on: a new table is sized from at most what the old one can
     * hold (every live chain has a slot in it), so a forged count cannot make
     * the segment grow without bound. Without a table there is nothing live. */
    if (!cnb__tab_ref(tab) || cnb__tab_bits(tab) > 31)
        return bits_for((live < 64 ? live + 1 : 65) * 2);
    uint64_t size = (uint64_t)1 << cnb__tab_bits(tab);
    if (live > size)
        live = size;
    if ((used + 1) * 4 <= size * 3)
        return 0;
    return bits_for((live + 1) * 2);
}

uint64_t cnb__reg_table_build(struct cnb_registry *reg, uint32_t si, uint64_t old,
                              unsigned bits, int which, uint32_t *chains)
{
    *chains = 0;
    uint64_t size = (uint64_t)1 << bits, mask = size - 1;
    uint32_t ref = cnb__reg_alloc(reg, si, size * 8, CNB__TAG_TABLE);
    if (!ref)
        return 0;
    uint64_t *slots = cnb__reg_data(reg, ref);
    memset(slots, 0, size * 8);
    uint32_t oref = cnb__tab_ref(old);
    if (oref) {
        unsigned obits;
        const uint64_t *os = tab_slots(reg, old, &obits);
        if (!os)
            return 0;
        uint64_t osize = (uint64_t)1 << obits;
        for (uint64_t i = 0; i < osize; i++) {
            uint64_t v = CNB__LD(os[i]);
            if ((uint32_t)v <= CNB__SLOT_TOMB)
                continue;
            if (!cnb__reg_ref_chk(reg, (uint32_t)v, CNB__ENTRY_HDR))
                return 0;
            struct cnb__reg_probe p;
            cnb__reg_probe_entry(&p, which, entry(reg, (uint32_t)v));
            uint64_t j = cnb__reg_probe_home(reg, &p, bits), k = 0;
            while (slots[j] != CNB__SLOT_EMPTY && k++ < size)
                j = (j + 1) & mask;
            if (k >= size) { /* more chains than the old table's count said */
                cnb__reg_bad = 1;
                return 0;
            }
            slots[j] = v;
            ++*chains;
        }
    }
    return ((uint64_t)ref << 8) | bits;
}

void cnb__reg_chain_link(struct cnb_registry *reg, uint32_t si, int which, uint32_t ref)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    struct cnb__reg_log *log = &st->log;
    struct cnb__reg_entry *e = entry(reg, ref);
    struct cnb__reg_probe p;
    cnb__reg_probe_entry(&p, which, e);
    uint32_t head;
    uint64_t *free_slot;
    uint64_t *slot = find_slot(reg, si, &p, &head, &free_slot);
    e->prev[which] = 0; /* e is fresh memory: plain stores */
    if (slot) {
        e->next[which] = head;
        cnb__reg_log_w32(reg, log, &entry(reg, head)->prev[which], ref);
        cnb__reg_log_w64(reg, log, slot, ((p.h & 0xFFFFFFFFu) << 32) | ref);
        return;
    }
    e->next[which] = 0;
    if (!free_slot) { /* a full or corrupt table: planning made room */
        cnb__reg_bad = 1;
        return;
    }
    if (CNB__LD(*free_slot) == CNB__SLOT_TOMB) {
        uint32_t *tomb = which ? &st->otomb : &st->ktomb;
        cnb__reg_log_w32(reg, log, tomb, *tomb - 1);
    }
    uint32_t *live = which ? &st->olive : &st->klive;
    cnb__reg_log_w32(reg, log, live, *live + 1);
    cnb__reg_log_w64(reg, log, free_slot, ((p.h & 0xFFFFFFFFu) << 32) | ref);
}

/* The slot whose chain starts at ref, or NULL. */
static uint64_t *head_slot(struct cnb_registry *reg, uint32_t si, int which, uint32_t ref)
{
    struct cnb__reg_probe p;
    cnb__reg_probe_entry(&p, which, entry(reg, ref));
    uint32_t head;
    uint64_t *slot = find_slot(reg, si, &p, &head, NULL);
    return head == ref ? slot : NULL;
}

/* A link field of entry ref (checked), or NULL (the operation marked bad). */
static uint32_t *link_of(struct cnb_registry *reg, uint32_t ref, int next, int which)
{
    if (!cnb__reg_ref_chk(reg, ref, CNB__ENTRY_HDR))
        return NULL;
    return next ? &entry(reg, ref)->next[which] : &entry(reg, ref)->prev[which];
}

void cnb__reg_chain_unlink(struct cnb_registry *reg, uint32_t si, int which, uint32_t ref)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    struct cnb__reg_log *log = &st->log;
    struct cnb__reg_entry *e = entry(reg, ref);
    uint32_t next = CNB__LD(e->next[which]), prev = CNB__LD(e->prev[which]);
    uint32_t *l;
    if (prev) {
        if ((l = link_of(reg, prev, 1, which)))
            cnb__reg_log_w32(reg, log, l, next);
    } else {
        uint64_t *slot = head_slot(reg, si, which, ref);
        if (!slot) { /* not where it should be: checked and reported by the checker */
            cnb__reg_bad = 1;
            return;
        }
        if (next) {
            cnb__reg_log_w64(reg, log, slot, (CNB__LD(*slot) & 0xFFFFFFFF00000000ULL) | next);
        } else {
            uint32_t *tomb = which ? &st->otomb : &st->ktomb;
            uint32_t *live = which ? &st->olive : &st->klive;
            cnb__reg_log_w64(reg, log, slot, CNB__SLOT_TOMB);
            cnb__reg_log_w32(reg, log, tomb, *tomb + 1);
            cnb__reg_log_w32(reg, log, live, *live - 1);
        }
    }
    if (next && (l = link_of(reg, next, 0, which)))
        cnb__reg_log_w32(reg, log, l, prev);
}

void cnb__reg_chain_replace(struct cnb_registry *reg, uint32_t si, int which,
                            uint32_t old_ref, uint32_t new_ref)
{
    struct cnb__reg_log *log = &reg->stripes[si].log;
    struct cnb__reg_entry *o = entry(reg, old_ref), *n = entry(reg, new_ref);
    uint32_t next = CNB__LD(o->next[which]), prev = CNB__LD(o->prev[which]);
    uint32_t *l;
    n->next[which] = next; /* fresh memory */
    n->prev[which] = prev;
    if (prev) {
        if ((l = link_of(reg, prev, 1, which)))
            cnb__reg_log_w32(reg, log, l, new_ref);
    } else {
        uint64_t *slot = head_slot(reg, si, which, old_ref);
        if (!slot) {
            cnb__reg_bad = 1;
            return;
        }
        cnb__reg_log_w64(reg, log, slot, (CNB__LD(*slot) & 0xFFFFFFFF00000000ULL) | new_ref);
    }
    if (next && (l = link_of(reg, next, 0, which)))
        cnb__reg_log_w32(reg, log, l, new_ref);
}

/* cnb__reg_key_norm's slow path: k->p holds a key that may hold a float. */
int cnb__reg_key_norm_float(struct cnb_registry *reg, struct cnb__reg_key *k)
{
    const void *key = k->p;
    size_t len = k->len;
    unsigned char *buf = k->inl;
    if (len > sizeof k->inl && !(buf = k->heap = cnb_alloc(&reg->alloc, len)))
        return CNB_ENOMEM;
    memcpy(buf, key, len);
    ssize_t n = cnb_term_zero_sign(buf, len);
    if (n == CNB_ENOMEM) {
        cnb__reg_key_done(reg, k);
        return CNB_ENOMEM;
    }
    if (n > 0)
        k->p = buf; /* else the caller's bytes: no -0.0, or not canonical at all */
    return 0;
}

void cnb__reg_key_free(struct cnb_registry *reg, struct cnb__reg_key *k)
{
    cnb_free(&reg->alloc, k->heap);
    k->heap = NULL;
}
