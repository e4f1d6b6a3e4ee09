/* registry_feed.c: the change feed, a ring of fixed-size slots with a global
 * sequence number. A writer (stripe locked) claims a number and fills the slot
 * under F, state PENDING, then commits its operation and marks the slot DONE; a
 * rolled-back operation turns its slot VOID. An event whose key and value do not
 * fit a slot carries only what fits (CNB_REG_EVF_*). Listeners read without locks
 * and learn how many events the ring overwrote before they read them.
 * Tests: tests/unit/test_registry.c (feed), test_registry_concurrency.c. */
#include "registry_int.h"

static struct cnb__reg_feed_slot *slot_of(struct cnb_registry *reg, uint64_t seq,
                                          uint64_t *off)
{
    uint64_t o = reg->feed_off + (seq & (reg->feed_slots - 1)) * reg->feed_slot_size;
    if (off)
        *off = o;
    return CNB__AT(reg, o);
}

void cnb__reg_feed_append(struct cnb_registry *reg, uint32_t si, int event,
                          const struct cnb__reg_entry *e)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    if (cnb__reg_lock_simple(&reg->hdr->flock, NULL, reg) != 0)
        return; /* F unusable: the event is lost, the operation goes on */
    uint64_t seq = atomic_load_explicit(&reg->hdr->feed_head, memory_order_relaxed);
    uint64_t off;
    struct cnb__reg_feed_slot *s = slot_of(reg, seq, &off);
    uint64_t pending = CNB__FEED_STATE(seq, CNB__FEED_PENDING, si);
    cnb__reg_log_feedvoid(reg, &st->log, off, pending);
    atomic_store_explicit(&s->state, pending, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    size_t cap = reg->feed_slot_size - CNB__FEED_HDR;
    unsigned flags = 0;
    /* e's lengths are loaded once: the copies below must stay in the slot. */
    uint32_t klen = CNB__LD(e->klen), vlen = CNB__LD(e->vlen);
    if (!cnb__reg_in_map(reg, CNB__OFF(reg, e), CNB__ENTRY_HDR + (uint64_t)klen + vlen))
        klen = vlen = 0; /* cannot be for an entry a writer checked; stays in bounds */
    s->event = (uint32_t)event;
    s->klen = klen;
    s->vlen = vlen;
    s->node = e->node;
    s->num = e->num;
    s->serial = e->serial;
    s->creation = e->creation;
    s->khash = e->hash;
    if ((uint64_t)klen + vlen <= cap) {
        memcpy(s->data, e->data, (size_t)klen + vlen);
    } else if (klen <= cap) {
        memcpy(s->data, e->data, klen);
        flags = CNB_REG_EVF_VALUE_OMITTED;
    } else {
        flags = CNB_REG_EVF_KEY_OMITTED | CNB_REG_EVF_VALUE_OMITTED;
    }
    s->flags = flags;
    atomic_store_explicit(&reg->hdr->feed_head, seq + 1, memory_order_release);
    cnb__reg_mutex_unlock(&reg->hdr->flock);
    cnb__reg_log_w64(reg, &st->log, &st->feed_pending, pending);
}

void cnb__reg_feed_publish(struct cnb_registry *reg, uint32_t si)
{
    struct cnb__reg_stripe *st = &reg->stripes[si];
    uint64_t p = st->feed_pending;
    if (!p)
        return;
    struct cnb__reg_feed_slot *s = slot_of(reg, CNB__FEED_SEQ(p), NULL);
    uint64_t expect = p;
    /* Fails harmlessly when the ring already reused the slot. */
    atomic_compare_exchange_strong(&s->state, &expect,
                                   CNB__FEED_STATE(CNB__FEED_SEQ(p), CNB__FEED_DONE, si));
    __atomic_store_n(&st->feed_pending, 0, __ATOMIC_RELEASE);
}

uint64_t cnb_registry_feed_head(struct cnb_registry *reg)
{
    return atomic_load_explicit(&reg->hdr->feed_head, memory_order_acquire);
}

ssize_t cnb_registry_feed_poll(struct cnb_registry *reg, uint64_t *pos, size_t max,
                               cnb_registry_result_t *res, uint64_t *missed)
{
    if (!reg || !pos || !res)
        return CNB_EINVAL;
    cnb__reg_res_reset(res);
    if (max == 0)
        max = 1024;
    uint64_t head = atomic_load_explicit(&reg->hdr->feed_head, memory_order_acquire);
    uint64_t p = *pos ? *pos : 1, miss = 0, n = reg->feed_slots;
    size_t cap = reg->feed_slot_size - CNB__FEED_HDR;
    int rc = 0, repaired = 0;
    /* A slot whose state keeps changing under the reader (another process
     * writing it) is not read forever. */
    unsigned rereads = 0;
    if (p > head)
        p = head;
    if (head > n && p < head - n) {
        miss += head - n - p;
        p = head - n;
    }
    while (p < head && res->n < max) {
        struct cnb__reg_feed_slot *s = slot_of(reg, p, NULL);
        uint64_t st1 = atomic_load_explicit(&s->state, memory_order_acquire);
        uint64_t sseq = CNB__FEED_SEQ(st1);
        if (sseq > p) { /* overwritten by a later lap */
            miss++;
            p++;
            continue;
        }
        if (sseq < p)
            break;
        unsigned status = CNB__FEED_STATUS(st1);
        if (status == CNB__FEED_VOID) {
            p++;
            continue;
        }
        if (status != CNB__FEED_DONE) {
            /* Still being written, or its writer died: repair once, then stop. */
            uint32_t si = CNB__FEED_STRIPE(st1);
            if (!repaired && si < reg->nstripes) {
                repaired = 1;
                cnb__reg_stripe_try_repair(reg, si);
                continue;
            }
            break;
        }
        uint32_t klen = s->klen, vlen = s->vlen, flags = s->flags;
        uint32_t node = s->node, num = s->num, serial = s->serial, creation = s->creation;
        uint32_t event = s->event;
        uint64_t khash = s->khash;
        int torn = klen > reg->max_key || vlen > reg->max_value ||
                   (!(flags & CNB_REG_EVF_KEY_OMITTED) &&
                    klen + ((flags & CNB_REG_EVF_VALUE_OMITTED) ? 0 : (uint64_t)vlen) > cap);
        size_t n0 = res->n, b0 = res->buf_len;
        if (!torn) {
            cnb_registry_item_t *it;
            const unsigned char *k = (flags & CNB_REG_EVF_KEY_OMITTED) ? NULL : s->data;
            const unsigned char *v =
                (flags & CNB_REG_EVF_VALUE_OMITTED) ? NULL : s->data + klen;
            rc = cnb__reg_res_push(res, k, k ? klen : 0, v, v ? vlen : 0, &it);
            if (rc)
                break;
            it->key_len = klen;
            it->value_len = vlen;
            it->hash = khash;
            it->seq = p;
            it->event = (int)event;
            it->flags = flags;
            it->owner = (cnb_registry_owner_t){cnb__reg_node_str(reg, node), num, serial,
                                               creation};
        }
        atomic_thread_fence(memory_order_acquire);
        uint64_t st2 = atomic_load_explicit(&s->state, memory_order_relaxed);
        if (st2 != st1 || torn) {
            res->n = n0; /* changed under us: look at the slot again */
            res->buf_len = b0;
            if (st2 == st1 || ++rereads > 64)
                break; /* torn with a stable state: cannot be, stop */
            continue;
        }
        p++;
    }
    cnb__reg_res_fix(res);
    *pos = p;
    if (missed)
        *missed = miss;
    return rc ? rc : (ssize_t)res->n;
}
