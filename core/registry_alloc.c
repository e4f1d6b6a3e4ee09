/* registry_alloc.c: the registry's arena. G hands whole chunks to stripes; each
 * stripe carves its chunks into blocks with its own lock held, and keeps freed
 * blocks on free lists by size class (exact sizes up to 1 KiB, then four classes
 * per power of two). Every change is undo-logged, so a crash leaks nothing.
 * Tests: tests/unit/test_registry*.c (cnb_registry_check walks the arena). */
#include <errno.h>
#include <fcntl.h>

#include "registry_int.h"

static unsigned log2_floor(uint64_t v)
{
    return 63u - (unsigned)__builtin_clzll(v);
}

unsigned cnb__reg_class_ceil(uint32_t g)
{
    if (g <= 64)
        return g ? g - 1 : 0;
    unsigned e = log2_floor((uint64_t)g - 1); /* 2^e < g <= 2^(e+1) */
    uint64_t base = (uint64_t)1 << e, step = base >> 2;
    unsigned q = (unsigned)(((uint64_t)g - base + step - 1) / step); /* 1..4 */
    return 64 + (e - 6) * 4 + (q - 1);
}

unsigned cnb__reg_class_floor(uint32_t g)
{
    if (g <= 64)
        return g ? g - 1 : 0;
    unsigned e = log2_floor(g); /* 2^e <= g < 2^(e+1) */
    uint64_t base = (uint64_t)1 << e, step = base >> 2;
    unsigned q = (unsigned)(((uint64_t)g - base) / step); /* 0..3 */
    if (q == 0)
        return e == 6 ? 63 : 64 + (e - 7) * 4 + 3;
    return 64 + (e - 6) * 4 + (q - 1);
}

uint64_t cnb__reg_class_size(unsigned c)
{
    if (c < 64)
        return c + 1;
    unsigned e = 6 + (c - 64) / 4, q = (c - 64) % 4 + 1;
    return ((uint64_t)1 << e) + (uint64_t)q * ((uint64_t)1 << (e - 2));
}

uint64_t cnb__reg_alloc_cost(uint64_t bytes)
{
    uint64_t g = (bytes + 8 + CNB__REG_GRAN - 1) >> CNB__REG_GSHIFT;
    if (g >= ((uint64_t)1 << 31))
        return (uint64_t)1 << 33; /* more than any segment: reserve fails */
    return cnb__reg_class_size(cnb__reg_class_ceil((uint32_t)g));
}

/* Free block lists hold refs that another process may have rewritten: the next
 * link of block ref, or 0 (and the operation marked bad) when ref is not a
 * mapped arena block. */
static uint32_t next_free(struct cnb_registry *reg, uint32_t ref)
{
    if (!cnb__reg_ref_chk(reg, ref, 4))
        return 0;
    return CNB__LD(*(uint32_t *)cnb__reg_data(reg, ref));
}

/* Is [ref, ref + size_g) granules a mapped arena region? (Marks bad if not.) */
static int span_chk(struct cnb_registry *reg, uint32_t ref, uint64_t size_g)
{
    if (size_g == 0 || (uint64_t)ref + size_g > ((uint64_t)1 << 32)) {
        cnb__reg_bad = 1;
        return 0;
    }
    return cnb__reg_ref_chk(reg, ref, (size_g << CNB__REG_GSHIFT) - 8);
}

/* The rest of stripe si's bump region becomes a free block (logged in log). It
 * was bump space, unreachable, so its header needs no log. */
static void bump_retire(struct cnb_registry *reg, struct cnb__reg_stripe *st, uint32_t si,
                        struct cnb__reg_log *log)
{
    uint32_t r = CNB__LD(st->bump_cur), end = CNB__LD(st->bump_end);
    if (end == r)
        return;
    uint32_t rem = end - r;
    if (end < r || !span_chk(reg, r, rem)) {
        cnb__reg_bad = 1;
        return;
    }
    unsigned c = cnb__reg_class_floor(rem);
    struct cnb__reg_block *b = cnb__reg_block(reg, r);
    b->size_g = rem;
    b->tag = CNB__TAG_FREE | si;
    *(uint32_t *)cnb__reg_data(reg, r) = st->heads[c];
    cnb__reg_log_w32(reg, log, &st->heads[c], r);
}

/* Free block ref (linked from *link on one of stripe si's lists) becomes the
 * stripe's bump region, in one committed transaction of the stripe's log. */
static void bump_take(struct cnb_registry *reg, uint32_t si, uint32_t *link, uint32_t ref)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    struct cnb__reg_log *log = &st->log;
    if (!cnb__reg_ref_chk(reg, ref, 8))
        return;
    uint32_t size = CNB__LD(cnb__reg_block(reg, ref)->size_g);
    if (!span_chk(reg, ref, size))
        return;
    cnb__reg_log_w32(reg, log, link, next_free(reg, ref));
    bump_retire(reg, st, si, log);
    cnb__reg_log_w32(reg, log, &st->bump_cur, ref);
    cnb__reg_log_w32(reg, log, &st->bump_end, ref + size);
    if (cnb__reg_bad)
        cnb__reg_log_rollback(reg, log);
    else
        cnb__reg_log_commit(log);
}

#define BUMP_REUSE_MIN_G 256u /* 4 KiB: smaller free blocks stay for their class */

/* Makes a free block of at least want (< 2^31) granules from stripe si's lists
 * (not one of the first skip[class], promised to a plan) its bump region, in
 * one committed transaction of the stripe's (empty) log. Returns 1 if it did. */
static int bump_from_free(struct cnb_registry *reg, uint32_t si, uint64_t want,
                          const uint8_t *skip)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    for (unsigned x = cnb__reg_class_ceil((uint32_t)want); x < CNB__REG_NCLASS; x++) {
        uint32_t *link = &st->heads[x], ref = CNB__LD(*link);
        for (unsigned k = skip ? skip[x] : 0; ref && k > 0; k--) {
            if (!cnb__reg_ref_chk(reg, ref, 4))
                return 0;
            link = cnb__reg_data(reg, ref);
            ref = CNB__LD(*link);
        }
        if (!ref)
            continue;
        if (!cnb__reg_ref_chk(reg, ref, 8))
            return 0;
        if (CNB__LD(cnb__reg_block(reg, ref)->size_g) < want)
            continue;
        bump_take(reg, si, link, ref);
        return 1;
    }
    return 0;
}

/* Moves one big free block of class c or above from G's lists to the head of
 * stripe si's list of its class. Returns that class, or CNB__REG_NCLASS. */
static unsigned adopt_global_min(struct cnb_registry *reg, uint32_t si, unsigned c);

int cnb__reg_reserve(struct cnb_registry *reg, uint32_t si, uint64_t need_g,
                     const uint8_t *skip)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    struct cnb__reg_hdr *hdr = reg->hdr;
    uint32_t cur = CNB__LD(st->bump_cur), end = CNB__LD(st->bump_end);
    if (need_g == 0)
        return 0;
    if (end >= cur && (uint64_t)(end - cur) >= need_g)
        return span_chk(reg, cur, need_g) ? 0 : (cnb__reg_bad = 0, CNB_ECORRUPT);
    uint64_t want = need_g > BUMP_REUSE_MIN_G ? need_g : BUMP_REUSE_MIN_G;
    if (want < ((uint64_t)1 << 31) && atomic_load(&st->log.len) == 0) {
        int took = bump_from_free(reg, si, want, skip);
        unsigned x = CNB__REG_NCLASS;
        /* Adopted blocks go to the head of their list: take that one, not one
         * a plan has promised. */
        if (!took && !cnb__reg_bad &&
            (x = adopt_global_min(reg, si, cnb__reg_class_ceil((uint32_t)want))) <
                CNB__REG_NCLASS) {
            bump_take(reg, si, &st->heads[x], CNB__LD(st->heads[x]));
            took = 1;
        }
        if (cnb__reg_bad) {
            cnb__reg_bad = 0;
            return CNB_ECORRUPT;
        }
        if (took)
            return 0;
    }
    int rc = cnb__reg_glock(reg);
    if (rc)
        return rc;
    uint64_t chunk_g = CNB__LD(st->chunk_g);
    if (chunk_g < CNB__REG_CHUNK_MIN_G || chunk_g > CNB__REG_CHUNK_MAX_G)
        chunk_g = CNB__REG_CHUNK_MIN_G;
    if (chunk_g < need_g + 1)
        chunk_g = need_g + 1;
    uint64_t page_g = reg->page_size >> CNB__REG_GSHIFT;
    chunk_g = (chunk_g + page_g - 1) / page_g * page_g;
    uint64_t top = atomic_load_explicit(&hdr->top, memory_order_relaxed);
    uint64_t bytes = chunk_g << CNB__REG_GSHIFT;
    if (top < reg->arena_off || top % reg->page_size) {
        rc = CNB_ECORRUPT;
        goto out;
    }
    if (bytes > reg->reserve || top > reg->reserve - bytes || chunk_g >= ((uint64_t)1 << 32)) {
        rc = CNB_ENOMEM;
        goto out;
    }
    rc = cnb__reg_grow(reg, top + bytes);
    if (rc)
        goto out;
    if (!cnb__reg_in_map(reg, top, bytes)) {
        rc = CNB_ECORRUPT; /* the file is not as long as the header says */
        goto out;
    }
    /* Back the chunk with memory now, so that a full tmpfs is an error here
     * rather than a SIGBUS later. Not every file system can. */
    if (fallocate(reg->fd, 0, (off_t)top, (off_t)bytes) != 0 && errno != EOPNOTSUPP &&
        errno != ENOSYS) {
        rc = errno == ENOSPC ? CNB_ENOMEM : CNB_ESYS;
        goto out;
    }
    /* Beyond top nothing refers to this memory: plain writes. */
    uint32_t cref = (uint32_t)(top >> CNB__REG_GSHIFT);
    struct cnb__reg_block *cb = cnb__reg_block(reg, cref);
    cb->size_g = 1;
    cb->tag = CNB__TAG_CHUNK | si;
    *(uint32_t *)cnb__reg_data(reg, cref) = (uint32_t)chunk_g;

    struct cnb__reg_log *log = &hdr->glog;
    cnb__reg_log_w64(reg, log, (void *)&hdr->top, top + bytes);
    bump_retire(reg, st, si, log); /* the rest of the old region */
    cnb__reg_log_w32(reg, log, &st->bump_cur, cref + 1);
    cnb__reg_log_w32(reg, log, &st->bump_end, (uint32_t)(cref + chunk_g));
    uint64_t next = (uint64_t)(st->chunk_g ? st->chunk_g : CNB__REG_CHUNK_MIN_G) * 2;
    cnb__reg_log_w32(reg, log, &st->chunk_g,
                     (uint32_t)(next > CNB__REG_CHUNK_MAX_G ? CNB__REG_CHUNK_MAX_G : next));
    if (cnb__reg_bad) {
        cnb__reg_bad = 0;
        cnb__reg_log_rollback(reg, log);
        rc = CNB_ECORRUPT;
    } else {
        cnb__reg_log_commit(log);
    }
out:
    cnb__reg_gunlock(reg);
    return rc;
}

/* The free list an allocation of class c takes from: c itself, or for blocks
 * over 1 KiB one of the next three classes; NCLASS when all are empty. `skip`
 * (may be NULL) counts blocks already promised per class by a plan. */
static unsigned pick_class(struct cnb_registry *reg, const struct cnb__reg_stripe *st,
                           unsigned c, const uint8_t *skip)
{
    unsigned last = c >= 64 ? c + 3 : c;
    for (unsigned x = c; x <= last && x < CNB__REG_NCLASS; x++) {
        uint32_t ref = CNB__LD(st->heads[x]);
        for (unsigned k = skip ? skip[x] : 0; ref && k > 0; k--)
            ref = next_free(reg, ref);
        if (ref)
            return x;
    }
    return CNB__REG_NCLASS;
}

/* The first of G's lists from class c to c + span with a block. */
static unsigned pick_global_span(struct cnb_registry *reg, unsigned c, unsigned span)
{
    for (unsigned x = c; x <= c + span && x < CNB__REG_NCLASS; x++)
        if (reg->hdr->gheads[x])
            return x;
    return CNB__REG_NCLASS;
}

/* Move one big free block of a class from c to c + span from G's lists to the
 * head of stripe si's list of its class (one G transaction). Returns that
 * class, or CNB__REG_NCLASS. */
static unsigned adopt_global_span(struct cnb_registry *reg, uint32_t si, unsigned c,
                                  unsigned span)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    struct cnb__reg_hdr *hdr = reg->hdr;
    if (pick_global_span(reg, c, span) == CNB__REG_NCLASS) /* racy peek, redone under G */
        return CNB__REG_NCLASS;
    if (cnb__reg_glock(reg) != 0)
        return CNB__REG_NCLASS;
    unsigned x = pick_global_span(reg, c, span);
    if (x < CNB__REG_NCLASS) {
        struct cnb__reg_log *log = &hdr->glog;
        uint32_t ref = CNB__LD(hdr->gheads[x]);
        if (cnb__reg_ref_chk(reg, ref, 4)) {
            uint32_t *next = cnb__reg_data(reg, ref);
            cnb__reg_log_w32(reg, log, &hdr->gheads[x], CNB__LD(*next));
            cnb__reg_log_w32(reg, log, &cnb__reg_block(reg, ref)->tag, CNB__TAG_FREE | si);
            cnb__reg_log_w32(reg, log, next, CNB__LD(st->heads[x]));
            cnb__reg_log_w32(reg, log, &st->heads[x], ref);
        }
        if (cnb__reg_bad) {
            cnb__reg_log_rollback(reg, log);
            x = CNB__REG_NCLASS; /* the caller sees cnb__reg_bad */
        } else {
            cnb__reg_log_commit(log);
        }
    }
    cnb__reg_gunlock(reg);
    return x;
}

/* One that can serve class c (c to c + 3). Returns 1 if it moved one. */
static int adopt_global(struct cnb_registry *reg, uint32_t si, unsigned c)
{
    return adopt_global_span(reg, si, c, 3) < CNB__REG_NCLASS;
}

static unsigned adopt_global_min(struct cnb_registry *reg, uint32_t si, unsigned c)
{
    return adopt_global_span(reg, si, c, CNB__REG_NCLASS);
}

void cnb__reg_donate(struct cnb_registry *reg, uint32_t si)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    struct cnb__reg_hdr *hdr = reg->hdr;
    if (!st->big_freed || cnb__reg_glock(reg) != 0)
        return;
    struct cnb__reg_log *log = &hdr->glog;
    int bad = cnb__reg_bad; /* this runs after the operation's own end */
    cnb__reg_bad = 0;
    for (unsigned c = cnb__reg_class_floor(CNB__REG_BIG_G); c < CNB__REG_NCLASS; c++) {
        uint32_t ref;
        struct cnb__reg_walk w;
        cnb__reg_walk_init(&w, reg);
        /* Only blocks tagged as this stripe's free ones move: a list another
         * process looped or pointed elsewhere stops here. */
        while ((ref = CNB__LD(st->heads[c])) != 0 && cnb__reg_walk_step(&w, ref) &&
               cnb__reg_ref_ok(reg, ref, 4) &&
               CNB__LD(cnb__reg_block(reg, ref)->tag) == (CNB__TAG_FREE | si)) {
            uint32_t *next = cnb__reg_data(reg, ref);
            cnb__reg_log_w32(reg, log, &st->heads[c], CNB__LD(*next));
            cnb__reg_log_w32(reg, log, &cnb__reg_block(reg, ref)->tag,
                             CNB__TAG_FREE | CNB__GLOBAL);
            cnb__reg_log_w32(reg, log, next, CNB__LD(hdr->gheads[c]));
            cnb__reg_log_w32(reg, log, &hdr->gheads[c], ref);
            if (cnb__reg_bad) {
                cnb__reg_log_rollback(reg, log);
                break;
            }
            cnb__reg_log_commit(log);
        }
        cnb__reg_bad = 0;
    }
    cnb__reg_bad = bad;
    cnb__reg_log_w32(reg, log, &st->big_freed, 0);
    cnb__reg_log_commit(log);
    cnb__reg_gunlock(reg);
}

int cnb__reg_reserve_for(struct cnb_registry *reg, uint32_t si, const uint64_t *bytes,
                         int n)
{
    uint8_t skip[CNB__REG_NCLASS];
    for (int round = 0;; round++) {
        memset(skip, 0, sizeof skip);
        uint64_t need = 0;
        int adopted = 0;
        for (int i = 0; i < n; i++) {
            uint64_t cost = cnb__reg_alloc_cost(bytes[i]);
            if (cost > ((uint64_t)1 << 32)) {
                need += cost;
                continue;
            }
            unsigned c = cnb__reg_class_ceil((uint32_t)cost);
            unsigned x = pick_class(reg, &reg->stripes[si], c, skip);
            if (x < CNB__REG_NCLASS)
                skip[x]++;
            else if (round < 4 && cost >= CNB__REG_BIG_G && adopt_global(reg, si, c))
                adopted = 1;
            else
                need += cost;
        }
        if (adopted)
            continue; /* the stripe's lists changed: plan again */
        return need ? cnb__reg_reserve(reg, si, need, skip) : 0;
    }
}

uint32_t cnb__reg_alloc(struct cnb_registry *reg, uint32_t si, uint64_t bytes,
                        uint32_t kind)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    struct cnb__reg_log *log = &st->log;
    uint32_t g = (uint32_t)((bytes + 8 + CNB__REG_GRAN - 1) >> CNB__REG_GSHIFT);
    unsigned c = cnb__reg_class_ceil(g);
    unsigned x = pick_class(reg, st, c, NULL);
    uint32_t ref = x < CNB__REG_NCLASS ? CNB__LD(st->heads[x]) : 0;
    if (cnb__reg_bad)
        return 0;
    if (ref) {
        c = x;
        /* The caller writes `bytes` into it: all of them must be mapped. */
        if (!span_chk(reg, ref, g))
            return 0;
        uint32_t *link = cnb__reg_data(reg, ref);
        uint32_t next = CNB__LD(*link);
        /* The caller overwrites the block; should the operation be rolled back
         * the block is back on the list and needs its link: log it as is. */
        cnb__reg_log_w32(reg, log, link, next);
        cnb__reg_log_w32(reg, log, &st->heads[c], next);
        cnb__reg_log_w32(reg, log, &cnb__reg_block(reg, ref)->tag, kind | si);
        return ref;
    }
    uint32_t gs = (uint32_t)cnb__reg_class_size(c);
    ref = CNB__LD(st->bump_cur);
    uint32_t end = CNB__LD(st->bump_end);
    /* Reserved beforehand: only another process's writes make it short. */
    if (end < ref || end - ref < gs || !span_chk(reg, ref, gs)) {
        cnb__reg_bad = 1;
        return 0;
    }
    cnb__reg_log_w32(reg, log, &st->bump_cur, ref + gs);
    struct cnb__reg_block *b = cnb__reg_block(reg, ref);
    b->size_g = gs;
    b->tag = kind | si;
    return ref;
}

void cnb__reg_free(struct cnb_registry *reg, uint32_t si, uint32_t ref)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    struct cnb__reg_log *log = &st->log;
    if (!cnb__reg_ref_chk(reg, ref, 4))
        return;
    struct cnb__reg_block *b = cnb__reg_block(reg, ref);
    uint32_t size_g = CNB__LD(b->size_g);
    unsigned c = cnb__reg_class_floor(size_g);
    if (size_g >= CNB__REG_BIG_G && !st->big_freed)
        cnb__reg_log_w32(reg, log, &st->big_freed, 1);
    cnb__reg_log_w32(reg, log, cnb__reg_data(reg, ref), CNB__LD(st->heads[c]));
    cnb__reg_log_w32(reg, log, &b->tag, CNB__TAG_FREE | si);
    cnb__reg_log_w32(reg, log, &st->heads[c], ref);
}
