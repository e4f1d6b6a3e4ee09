/* registry_node.c: owner node names interned once in the segment, so that an
 * entry holds a 32-bit index. The table is append-only (a name is written, then
 * the count is published, then the hash index slot), so readers need no lock and
 * a crash leaves at most one unindexed name, which N's next holder indexes.
 * Tests: tests/unit/test_registry.c. */
#include "registry_int.h"

static uint32_t name_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static uint32_t find(struct cnb_registry *reg, const char *name, size_t n, uint32_t h)
{
    uint32_t mask = reg->node_cap * 2 - 1;
    uint32_t count = atomic_load_explicit(&reg->hdr->ncount, memory_order_acquire);
    if (count > reg->node_cap)
        count = reg->node_cap; /* the index table is bounded, whatever the count says */
    uint32_t i = h & mask;
    for (uint32_t k = 0; k <= mask; k++, i = (i + 1) & mask) {
        uint32_t v = atomic_load_explicit(&reg->nodeidx[i], memory_order_acquire);
        if (v == 0)
            return 0;
        if (v < count && reg->nodes[v].hash == h && reg->nodes[v].len == n &&
            memcmp(reg->nodes[v].name, name, n) == 0)
            return v;
    }
    return 0;
}

static void index_insert(struct cnb_registry *reg, uint32_t idx)
{
    uint32_t mask = reg->node_cap * 2 - 1;
    uint32_t i = reg->nodes[idx].hash & mask;
    /* Twice as many slots as names: a free one, unless another process filled
     * the index; then the name stays unindexed (found by nobody, harmless). */
    for (uint32_t k = 0; k <= mask; k++, i = (i + 1) & mask) {
        if (atomic_load_explicit(&reg->nodeidx[i], memory_order_relaxed) == 0) {
            atomic_store_explicit(&reg->nodeidx[i], idx, memory_order_release);
            return;
        }
    }
}

uint32_t cnb__reg_node_find(struct cnb_registry *reg, const char *name)
{
    size_t n = strnlen(name, 256);
    if (n == 0 || n > 255)
        return 0;
    return find(reg, name, n, name_hash(name, n));
}

void cnb__reg_node_repair(struct cnb_registry *reg)
{
    uint32_t count = atomic_load_explicit(&reg->hdr->ncount, memory_order_acquire);
    if (count > reg->node_cap)
        return; /* cnb_registry_check reports it */
    for (uint32_t idx = 1; idx < count; idx++) {
        struct cnb__reg_node *nd = &reg->nodes[idx];
        uint32_t len = CNB__LD(nd->len); /* checked, then used: loaded once */
        if (len == 0 || len > 255)
            continue;
        if (find(reg, nd->name, len, CNB__LD(nd->hash)) != idx)
            index_insert(reg, idx);
    }
}

int cnb__reg_node_intern(struct cnb_registry *reg, const char *name)
{
    size_t n = strnlen(name, 256);
    if (n == 0 || n > 255)
        return CNB_EINVAL;
    uint32_t h = name_hash(name, n);
    uint32_t idx = find(reg, name, n, h);
    if (idx)
        return (int)idx;
    int rc = cnb__reg_lock_simple(&reg->hdr->nlock, cnb__reg_node_repair, reg);
    if (rc)
        return rc;
    idx = find(reg, name, n, h);
    if (!idx) {
        uint32_t count = atomic_load_explicit(&reg->hdr->ncount, memory_order_relaxed);
        if (count == 0 || count >= reg->node_cap) {
            rc = count ? CNB_ETOOBIG : CNB_ECORRUPT;
        } else {
            struct cnb__reg_node *nd = &reg->nodes[count];
            memset(nd->name, 0, sizeof nd->name);
            memcpy(nd->name, name, n);
            nd->len = (uint32_t)n;
            nd->hash = h;
            atomic_store_explicit(&reg->hdr->ncount, count + 1, memory_order_release);
            index_insert(reg, count);
            idx = count;
        }
    }
    cnb__reg_mutex_unlock(&reg->hdr->nlock);
    return rc ? rc : (int)idx;
}

const char *cnb__reg_node_str(struct cnb_registry *reg, uint32_t idx)
{
    if (idx == 0 || idx >= reg->node_cap)
        return "";
    const struct cnb__reg_node *nd = &reg->nodes[idx];
    uint32_t len = CNB__LD(nd->len);
    /* Names are written once, NUL-terminated, before they are published; a
     * name that is not is taken as none rather than read past. */
    return len <= 255 && nd->name[len] == 0 ? nd->name : "";
}

void cnb_registry_owner_pid(const cnb_registry_owner_t *owner, cnb_pid_t *out)
{
    memset(out, 0, sizeof *out);
    size_t n = owner->node ? strnlen(owner->node, sizeof out->node - 1) : 0;
    if (n)
        memcpy(out->node, owner->node, n);
    out->num = owner->num;
    out->serial = owner->serial;
    out->creation = owner->creation;
}

void cnb__reg_node_name(struct cnb_registry *reg, uint32_t idx, char *dst)
{
    if (idx == 0 || idx >= reg->node_cap) {
        dst[0] = 0;
        return;
    }
    const struct cnb__reg_node *nd = &reg->nodes[idx];
    uint32_t len = CNB__LD(nd->len);
    if (len > 255)
        len = 255;
    memcpy(dst, nd->name, len);
    dst[len] = 0;
}
