/* registry_check.c: cnb_registry_check, the invariant checker the tests (and the
 * NIF, on demand) run: with every lock held it walks the arena block by block and
 * every table slot by slot, and proves that nothing overlaps, leaks or dangles.
 * Tests: tests/unit/test_registry*.c. */
#include <stdlib.h>

#include "registry_int.h"

struct blk {
    uint32_t ref, size, tag;
    uint8_t kseen, oseen;
};

/* A stripe's bump region, met during the arena walk. */
struct bump {
    uint32_t start, end, si;
    int seen;
};

struct ck {
    struct cnb_registry *reg;
    char *msg;
    size_t msglen;
    struct blk *b;
    size_t n, cap;
    struct bump *bumps; /* the non-empty bump regions, by start */
    size_t nbumps;
};

static int bump_cmp(const void *a, const void *b)
{
    uint32_t x = ((const struct bump *)a)->start, y = ((const struct bump *)b)->start;
    return x < y ? -1 : x > y;
}

static int add_blk(struct ck *c, uint32_t ref, uint32_t size, uint32_t tag)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        void *p = cnb_realloc(&c->reg->alloc, c->b, cap * sizeof *c->b);
        if (!p)
            return CNB_ENOMEM;
        c->b = p;
        c->cap = cap;
    }
    c->b[c->n++] = (struct blk){ref, size, tag, 0, 0};
    return 0;
}

static struct blk *find_blk(struct ck *c, uint32_t ref)
{
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c->b[mid].ref == ref)
            return &c->b[mid];
        if (c->b[mid].ref < ref)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

#define FAIL(...) return cnb__reg_fail(c->msg, c->msglen, __VA_ARGS__)

static int walk_arena(struct ck *c)
{
    struct cnb_registry *reg = c->reg;
    struct cnb__reg_hdr *h = reg->hdr;
    uint64_t top = atomic_load(&h->top), fs = atomic_load(&h->file_size);
    /* The handle's checked copy of arena_off: the header's may be rewritten. */
    if (top < reg->arena_off || top > fs || fs > reg->reserve ||
        fs > atomic_load(&reg->mapped))
        FAIL("arena bounds: top %llu, file size %llu", (unsigned long long)top,
             (unsigned long long)fs);
    uint32_t p = (uint32_t)(reg->arena_off >> CNB__REG_GSHIFT);
    uint32_t end = (uint32_t)(top >> CNB__REG_GSHIFT);
    /* Each stripe's bump region: the end of one of its chunks, or a free block
     * it took over (anywhere in the arena); walked over, and found once. The
     * walk goes up the arena, and so does a cursor in the regions by start. */
    c->bumps = cnb_alloc(&reg->alloc, sizeof *c->bumps * (reg->nstripes + 1));
    if (!c->bumps)
        return CNB_ENOMEM;
    c->nbumps = 0;
    for (uint32_t si = 0; si <= reg->nstripes; si++) {
        const struct cnb__reg_stripe *st = &reg->stripes[si];
        uint32_t cur = CNB__LD(st->bump_cur), bend = CNB__LD(st->bump_end);
        if (cur > bend)
            FAIL("stripe %u bump region inverted", si);
        if (cur != bend)
            c->bumps[c->nbumps++] = (struct bump){cur, bend, si, 0};
    }
    qsort(c->bumps, c->nbumps, sizeof *c->bumps, bump_cmp);
    size_t bi = 0;
    while (p < end) {
        /* Every field is loaded once: other processes write while we check. */
        struct cnb__reg_block *cb = cnb__reg_block(reg, p);
        uint32_t ctag = CNB__LD(cb->tag), si = CNB__TAG_STRIPE(ctag);
        uint32_t cg = CNB__LD(*(uint32_t *)cnb__reg_data(reg, p));
        if (CNB__TAG_KIND(ctag) != CNB__TAG_CHUNK || CNB__LD(cb->size_g) != 1 ||
            si > reg->nstripes || cg < 2 || cg > end - p)
            FAIL("chunk header at granule %u is bad (tag %08x, size %u)", p, ctag, cg);
        uint32_t q = p + 1, cend = p + cg;
        while (q < cend) {
            while (bi < c->nbumps && c->bumps[bi].start < q)
                bi++; /* started inside a block: never met, reported below */
            if (bi < c->nbumps && c->bumps[bi].start == q) {
                struct bump *bp = &c->bumps[bi++];
                if (bp->end > cend)
                    FAIL("stripe %u bump region [%u,%u) crosses chunk %u's end %u", bp->si,
                         bp->start, bp->end, p, cend);
                bp->seen = 1;
                q = bp->end;
                continue;
            }
            struct cnb__reg_block *b = cnb__reg_block(reg, q);
            uint32_t tag = CNB__LD(b->tag), size = CNB__LD(b->size_g);
            uint32_t kind = CNB__TAG_KIND(tag);
            if (size == 0 || size > cend - q)
                FAIL("block at %u (chunk %u) has size %u beyond its chunk", q, p, size);
            /* Big blocks move between stripes through G's lists, and a stripe
             * may carve blocks out of one it took over as its bump region. */
            uint32_t bs = CNB__TAG_STRIPE(tag);
            if ((kind != CNB__TAG_ENTRY && kind != CNB__TAG_TABLE && kind != CNB__TAG_FREE) ||
                (bs > reg->nstripes &&
                 !(bs == CNB__GLOBAL && kind == CNB__TAG_FREE && size >= CNB__REG_BIG_G)))
                FAIL("block at %u has tag %08x in a chunk of stripe %u", q, tag, si);
            int rc = add_blk(c, q, size, tag);
            if (rc)
                return rc;
            q += size;
        }
        p = cend;
    }
    if (p != end)
        FAIL("chunks overrun the arena top");
    for (size_t i = 0; i < c->nbumps; i++)
        if (!c->bumps[i].seen)
            FAIL("stripe %u bump region [%u,%u) does not start between blocks of a chunk",
                 c->bumps[i].si, c->bumps[i].start, c->bumps[i].end);
    return 0;
}

/* si == CNB__GLOBAL: G's lists. */
static int check_free(struct ck *c, uint32_t si)
{
    struct cnb_registry *reg = c->reg;
    const uint32_t *heads =
        si == CNB__GLOBAL ? reg->hdr->gheads : reg->stripes[si].heads;
    for (unsigned cl = 0; cl < CNB__REG_NCLASS; cl++) {
        size_t guard = 0;
        for (uint32_t r = heads[cl]; r; r = *(uint32_t *)cnb__reg_data(reg, r)) {
            struct blk *b = find_blk(c, r);
            if (!b || CNB__TAG_KIND(b->tag) != CNB__TAG_FREE || CNB__TAG_STRIPE(b->tag) != si)
                FAIL("stripe %u free list %u holds %u, not a free block of it", si, cl, r);
            if (cnb__reg_class_floor(b->size) != cl)
                FAIL("free block %u of %u granules on list %u", r, b->size, cl);
            if (b->kseen++)
                FAIL("free block %u listed twice", r);
            if (++guard > c->n)
                FAIL("stripe %u free list %u loops", si, cl);
        }
    }
    return 0;
}

static int check_table(struct ck *c, uint32_t si, int which)
{
    struct cnb_registry *reg = c->reg;
    struct cnb__reg_stripe *st = &reg->stripes[si];
    uint64_t t = which ? st->otab : st->ktab;
    uint32_t tref = cnb__tab_ref(t);
    unsigned bits = cnb__tab_bits(t);
    uint64_t count = atomic_load(&reg->counts[si]);
    uint32_t live_want = which ? st->olive : st->klive;
    uint32_t tomb_want = which ? st->otomb : st->ktomb;
    const char *name = which ? "owner" : "key";
    if (!tref) {
        if (count || live_want || tomb_want || t)
            FAIL("stripe %u has no %s table but %llu entries", si, name,
                 (unsigned long long)count);
        return 0;
    }
    struct blk *tb = find_blk(c, tref);
    if (!tb || CNB__TAG_KIND(tb->tag) != CNB__TAG_TABLE || bits < CNB__REG_MIN_BITS ||
        bits > 31 || (uint64_t)tb->size * 16 - 8 < ((uint64_t)8 << bits))
        FAIL("stripe %u %s table %u is not a table block of %u bits", si, name, tref, bits);
    if (tb->oseen++)
        FAIL("table block %u used twice", tref);
    const uint64_t *slots = cnb__reg_data(reg, tref);
    uint64_t size = (uint64_t)1 << bits, mask = size - 1, nlive = 0, ntomb = 0, nent = 0;
    for (uint64_t j = 0; j < size; j++) {
        uint64_t v = CNB__LD(slots[j]);
        if (v == CNB__SLOT_EMPTY)
            continue;
        if (v == CNB__SLOT_TOMB) {
            ntomb++;
            continue;
        }
        nlive++;
        uint32_t head = (uint32_t)v, prev = 0;
        struct cnb__reg_probe p;
        uint64_t chain = 0;
        for (uint32_t r = head; r;
             r = ((const struct cnb__reg_entry *)cnb__reg_data(reg, r))->next[which]) {
            struct blk *b = find_blk(c, r);
            if (!b || CNB__TAG_KIND(b->tag) != CNB__TAG_ENTRY || CNB__TAG_STRIPE(b->tag) != si)
                FAIL("stripe %u %s chain at slot %llu reaches %u, not an entry of it", si, name,
                     (unsigned long long)j, r);
            const struct cnb__reg_entry *e = cnb__reg_data(reg, r);
            struct cnb__reg_entry eh; /* its header, loaded once: checked, then used */
            memcpy(&eh, e, sizeof eh);
            if (eh.klen > reg->max_key || eh.vlen > reg->max_value ||
                (uint64_t)b->size * 16 < 8 + CNB__ENTRY_HDR + (uint64_t)eh.klen + eh.vlen)
                FAIL("entry %u lengths %u/%u do not fit its block", r, eh.klen, eh.vlen);
            if (eh.prev[which] != prev)
                FAIL("entry %u %s chain back link %u, expected %u", r, name, eh.prev[which],
                     prev);
            if (r == head) {
                if (which)
                    cnb__reg_probe_owner(&p, eh.node, eh.num, eh.serial, eh.creation);
                else
                    cnb__reg_probe_key(&p, eh.hash, e->data, eh.klen);
                if ((uint32_t)(v >> 32) != (uint32_t)p.h)
                    FAIL("stripe %u %s slot %llu tag mismatch", si, name,
                         (unsigned long long)j);
                uint64_t home = cnb__reg_probe_home(reg, &p, bits);
                for (uint64_t x = home; x != j; x = (x + 1) & mask) {
                    uint64_t vx = CNB__LD(slots[x]);
                    if (vx == CNB__SLOT_EMPTY)
                        FAIL("stripe %u %s slot %llu unreachable from its home %llu", si,
                             name, (unsigned long long)j, (unsigned long long)home);
                    if ((uint32_t)vx > CNB__SLOT_TOMB && find_blk(c, (uint32_t)vx) &&
                        cnb__reg_probe_match(&p, cnb__reg_data(reg, (uint32_t)vx)))
                        FAIL("stripe %u: one %s has two chains (slots %llu and %llu)", si,
                             name, (unsigned long long)x, (unsigned long long)j);
                }
            } else if (!cnb__reg_probe_match(&p, e)) {
                FAIL("entry %u is in the wrong %s chain", r, name);
            }
            if (si < reg->nstripes && cnb__reg_stripe_of(reg, eh.hash) != si)
                FAIL("entry %u hashed to stripe %u sits in %u", r,
                     cnb__reg_stripe_of(reg, eh.hash), si);
            if (si < reg->nstripes ? (eh.node == 0 ||
                                      eh.node >= atomic_load(&reg->hdr->ncount))
                                   : eh.node != 0)
                FAIL("entry %u has node index %u", r, eh.node);
            if (which ? b->oseen++ : b->kseen++)
                FAIL("entry %u twice in %s chains", r, name);
            prev = r;
            chain++;
            nent++;
        }
        if (!which && chain > 1 && (reg->kind == CNB_REG_UNIQUE || si == reg->nstripes))
            FAIL("unique key with %llu entries (slot %llu of stripe %u)",
                 (unsigned long long)chain, (unsigned long long)j, si);
    }
    if (nlive != live_want)
        FAIL("stripe %u %s table holds %llu chains, header says %u", si, name,
             (unsigned long long)nlive, live_want);
    if (ntomb != tomb_want)
        FAIL("stripe %u %s table holds %llu tombstones, header says %u", si, name,
             (unsigned long long)ntomb, tomb_want);
    if (nent != count)
        FAIL("stripe %u %s chains hold %llu entries, count says %llu", si, name,
             (unsigned long long)nent, (unsigned long long)count);
    return 0;
}

static int check_nodes(struct ck *c)
{
    struct cnb_registry *reg = c->reg;
    uint32_t count = atomic_load(&reg->hdr->ncount);
    if (count < 1 || count > reg->node_cap)
        FAIL("node count %u out of range", count);
    for (uint32_t i = 1; i < count; i++) {
        struct cnb__reg_node *nd = &reg->nodes[i];
        uint32_t len = CNB__LD(nd->len);
        if (len == 0 || len > 255 || nd->name[len] != 0)
            FAIL("node %u has a bad name length %u", i, len);
        if (cnb__reg_node_find(reg, nd->name) != i)
            FAIL("node %u (%.255s) is not found by its name, or is a duplicate", i, nd->name);
    }
    return 0;
}

static int run(struct ck *c)
{
    struct cnb_registry *reg = c->reg;
    int rc = walk_arena(c);
    for (uint32_t si = 0; rc == 0 && si <= reg->nstripes; si++) {
        struct cnb__reg_stripe *st = &reg->stripes[si];
        if (atomic_load(&st->log.len) || (atomic_load(&st->seq) & 1) || st->feed_pending)
            return cnb__reg_fail(c->msg, c->msglen, "stripe %u left mid-write", si);
        rc = check_free(c, si);
        if (rc == 0)
            rc = check_table(c, si, 0);
        if (rc == 0 && si < reg->nstripes)
            rc = check_table(c, si, 1);
    }
    if (rc == 0)
        rc = check_free(c, CNB__GLOBAL);
    if (rc)
        return rc;
    for (size_t i = 0; i < c->n; i++) {
        struct blk *b = &c->b[i];
        uint32_t kind = CNB__TAG_KIND(b->tag), si = CNB__TAG_STRIPE(b->tag);
        if (kind == CNB__TAG_ENTRY &&
            (b->kseen != 1 || (si < reg->nstripes ? b->oseen != 1 : b->oseen != 0)))
            FAIL("entry block %u is in %u key and %u owner slots (leaked?)", b->ref, b->kseen,
                 b->oseen);
        if (kind == CNB__TAG_TABLE && b->oseen != 1)
            FAIL("table block %u is not any stripe's table (leaked)", b->ref);
        if (kind == CNB__TAG_FREE && b->kseen != 1)
            FAIL("free block %u is on no free list (leaked)", b->ref);
    }
    if (atomic_load(&reg->hdr->glog.len))
        FAIL("global allocator left mid-write");
    if (atomic_load(&reg->hdr->feed_head) < 1)
        FAIL("feed head is 0");
    return check_nodes(c);
}

int cnb_registry_check(struct cnb_registry *reg, char *msg, size_t msglen)
{
    if (!reg)
        return CNB_EINVAL;
    if (msg && msglen)
        msg[0] = 0;
    uint32_t locked = 0;
    int rc = 0, g = 0, nl = 0, fl = 0;
    for (; locked <= reg->nstripes; locked++)
        if ((rc = cnb__reg_stripe_lock(reg, locked)) != 0)
            goto out;
    if ((rc = cnb__reg_glock(reg)) != 0)
        goto out;
    g = 1;
    if ((rc = cnb__reg_lock_simple(&reg->hdr->nlock, cnb__reg_node_repair, reg)) != 0)
        goto out;
    nl = 1;
    if ((rc = cnb__reg_lock_simple(&reg->hdr->flock, NULL, reg)) != 0)
        goto out;
    fl = 1;
    struct ck c = {reg, msg, msglen, NULL, 0, 0, NULL, 0};
    rc = run(&c);
    cnb_free(&reg->alloc, c.b);
    cnb_free(&reg->alloc, c.bumps);
out:
    if (fl)
        cnb__reg_mutex_unlock(&reg->hdr->flock);
    if (nl)
        cnb__reg_mutex_unlock(&reg->hdr->nlock);
    if (g)
        cnb__reg_gunlock(reg);
    while (locked-- > 0)
        cnb__reg_stripe_unlock(reg, locked);
    return rc;
}
