/* registry_int.h: internals shared by core/registry*.c: the segment layout
 * (offsets, never pointers), the undo log, locks and the seqlock. Tests:
 * tests/unit/test_registry*.c.
 *
 * Segment layout (all offsets from the start of the file):
 *   header      immutable part (checksummed) + global lock G with its undo log,
 *               arena top, file size, node lock N, feed lock F, attach lock A
 *   stripes     nstripes + 1 stripe headers (the last one holds the meta map):
 *               robust lock, seqlock, key table, owner table, allocator, undo log
 *   counts      one uint64 per stripe: live entries (count() sums them)
 *   attach      attach records
 *   nodes       interned node names (append-only) and their hash index
 *   feed        the change-feed ring
 *   arena       chunks handed to stripes by G; each stripe carves its chunks into
 *               blocks (entries, tables) and keeps freed blocks in size classes
 *
 * Memory is addressed in 16-byte granules by 32-bit refs (ref 0 and 1 are never
 * blocks), so a segment holds at most 64 GiB. */
#ifndef CNB_REGISTRY_INT_H
#define CNB_REGISTRY_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "cnb_registry.h"

#define CNB__REG_MAGIC "CNBREG\0\1"
#define CNB__REG_VERSION 1u
#define CNB__REG_ENDIAN 0x01020304u
#define CNB__REG_GSHIFT 4
#define CNB__REG_GRAN (1u << CNB__REG_GSHIFT)
#define CNB__REG_LIMIT ((uint64_t)1 << 36) /* 2^32 granules */
#define CNB__REG_LOG_CAP 96
#define CNB__REG_NCLASS 168
#define CNB__REG_MAX_STRIPES 4096
#define CNB__REG_ATTACH_CAP 256
#define CNB__REG_MIN_BITS 3
#define CNB__REG_CHUNK_MIN_G 256u    /* 4 KiB */
#define CNB__REG_CHUNK_MAX_G 16384u  /* 256 KiB (or what one allocation needs) */

/* Table slots: (tag << 32) | ref; tag = low 32 bits of the hash. */
#define CNB__SLOT_EMPTY 0u
#define CNB__SLOT_TOMB 1u

/* Block tags: kind in the top 4 bits, stripe in the rest. */
#define CNB__TAG_CHUNK 0xC0000000u
#define CNB__TAG_ENTRY 0xE0000000u
#define CNB__TAG_TABLE 0x70000000u
#define CNB__TAG_FREE 0xF0000000u
#define CNB__TAG_KIND(t) ((t)&0xF0000000u)
#define CNB__TAG_STRIPE(t) ((t)&0x0FFFFFFFu)
#define CNB__GLOBAL 0x0FFFFFFFu /* stripe id of a block on G's free lists */
#define CNB__REG_BIG_G 4096u    /* blocks of 64 KiB or more go back to G */

/* Undo log record types (top byte of `where`). */
#define CNB__LOG_W64 1u
#define CNB__LOG_W32 2u
#define CNB__LOG_FEEDVOID 3u /* old = the slot state to CAS to VOID */

/* Feed slot states: (seq << 16) | (status << 14) | stripe. */
#define CNB__FEED_PENDING 1u
#define CNB__FEED_DONE 2u
#define CNB__FEED_VOID 3u
#define CNB__FEED_STATE(seq, st, stripe) \
    (((uint64_t)(seq) << 16) | ((uint64_t)(st) << 14) | (uint64_t)(stripe))
#define CNB__FEED_SEQ(s) ((s) >> 16)
#define CNB__FEED_STATUS(s) ((unsigned)(((s) >> 14) & 3u))
#define CNB__FEED_STRIPE(s) ((uint32_t)((s)&0x3FFFu))

struct cnb__reg_rec {
    uint64_t where; /* byte offset | type << 56 */
    uint64_t old;
};

struct cnb__reg_log {
    _Atomic uint32_t len;
    uint32_t pad;
    struct cnb__reg_rec recs[CNB__REG_LOG_CAP];
};

struct cnb__reg_stripe {
    pthread_mutex_t lock;
    _Atomic uint64_t seq;  /* odd while a writer changes what readers see */
    _Atomic uint64_t ktab; /* key table: ref << 8 | log2(slots); 0 = none */
    _Atomic uint64_t otab; /* owner table, same encoding */
    uint32_t ktomb, otomb; /* tombstones in each table */
    uint32_t klive, olive; /* chains (distinct keys, owners) in each table */
    uint32_t bump_cur, bump_end; /* unallocated tail of the current chunk */
    uint32_t chunk_g;      /* size of the next chunk to ask for */
    uint32_t big_freed;    /* big blocks freed since the last donation to G */
    uint64_t feed_pending; /* state of a feed slot to publish after commit */
    uint32_t heads[CNB__REG_NCLASS]; /* free lists by size class */
    struct cnb__reg_log log;
} __attribute__((aligned(64)));

struct cnb__reg_node {
    uint32_t len;
    uint32_t hash;
    char name[256];
};

#define CNB__ATT_FREE 0u
#define CNB__ATT_LIVE 1u
#define CNB__ATT_DEAD 2u /* process gone; its entries are being removed */

struct cnb__reg_attach {
    _Atomic uint32_t state;
    int32_t pid;
    uint64_t start;    /* /proc/<pid>/stat starttime */
    uint32_t node;     /* interned owner node, 0 = none */
    uint32_t creation;
    uint64_t when_ns;
};

struct cnb__reg_feed_slot {
    _Atomic uint64_t state;
    uint32_t event, flags;
    uint32_t klen, vlen;
    uint32_t node, num, serial, creation;
    uint64_t khash;
    unsigned char data[]; /* key then value */
};
#define CNB__FEED_HDR 48u

struct cnb__reg_hdr {
    /* immutable, covered by checksum */
    char magic[8];
    uint32_t version;
    uint32_t hdr_size;
    uint32_t endian;
    uint32_t mutex_size;
    uint32_t stripe_size;
    uint32_t page_size;
    uint32_t kind;
    uint32_t nstripes;
    uint32_t sbits;
    uint32_t node_cap;
    uint32_t feed_slots;
    uint32_t feed_slot_size;
    uint32_t attach_cap;
    uint32_t max_key;
    uint32_t max_value;
    uint32_t pad0;
    uint64_t max_size;
    uint64_t stripes_off, counts_off, attach_off, nodes_off, nodeidx_off, feed_off,
        arena_off;
    uint64_t created_ns;
    uint64_t checksum;
    /* mutable */
    pthread_mutex_t glock __attribute__((aligned(64)));
    struct cnb__reg_log glog;
    _Atomic uint64_t top;       /* arena: bytes handed out end here */
    _Atomic uint64_t file_size; /* bytes every attacher may map */
    _Atomic uint64_t generation;
    uint32_t gheads[CNB__REG_NCLASS]; /* big free blocks any stripe may adopt */
    pthread_mutex_t nlock __attribute__((aligned(64)));
    _Atomic uint32_t ncount; /* node names interned, index 0 is "no node" */
    pthread_mutex_t flock __attribute__((aligned(64)));
    _Atomic uint64_t feed_head; /* next sequence number; starts at 1 */
    pthread_mutex_t alock __attribute__((aligned(64)));
};

struct cnb_registry {
    cnb_allocator_t alloc;
    int fd;
    char *base;
    uint64_t reserve;
    _Atomic uint64_t mapped;
    pthread_mutex_t map_lock;
    struct cnb__reg_hdr *hdr;
    struct cnb__reg_stripe *stripes;
    _Atomic uint64_t *counts;
    struct cnb__reg_attach *attach;
    struct cnb__reg_node *nodes;
    _Atomic uint32_t *nodeidx;
    char *feed;
    /* Copies of the header's immutable fields, taken once at open after the
     * checks: another process may rewrite the header, and every bound used
     * below (region offsets, sizes, divisors) must stay what was checked. */
    uint32_t nstripes, sbits, kind, max_key, max_value;
    uint32_t node_cap, feed_slots, feed_slot_size;
    uint32_t attach_cap, page_size;
    uint64_t arena_off, feed_off, max_size;
    int attach_slot;
    uint32_t owner_node;
    uint32_t owner_creation;
};

/* ---- small helpers ---------------------------------------------------------- */

/* The checks every key operation opens with (no value: NULL, 0): CNB_EINVAL
 * for no registry or a NULL key or value with a length, then CNB_ETOOBIG for
 * a key or value over the registry's limits; else 0. */
static inline int cnb__reg_args(const struct cnb_registry *reg, const void *key,
                                size_t key_len, const void *value, size_t value_len)
{
    if (!reg || (!key && key_len) || (!value && value_len))
        return CNB_EINVAL;
    if (key_len > reg->max_key || value_len > reg->max_value)
        return CNB_ETOOBIG;
    return 0;
}

#define CNB__AT(reg, off) ((void *)((reg)->base + (off)))
#define CNB__OFF(reg, p) ((uint64_t)((const char *)(p) - (reg)->base))
#define CNB__REF_OFF(ref) ((uint64_t)(ref) << CNB__REG_GSHIFT)

struct cnb__reg_block {
    uint32_t size_g;
    uint32_t tag;
};

/* An entry. Each table slot holds the head of a chain: [0] links the entries of
 * one key (several only in duplicate registries), [1] those of one owner. */
struct cnb__reg_entry {
    uint64_t hash;
    uint32_t klen, vlen;
    uint32_t node, num, serial, creation;
    uint32_t next[2], prev[2];
    unsigned char data[];
};
#define CNB__ENTRY_HDR 48u

static inline struct cnb__reg_block *cnb__reg_block(struct cnb_registry *reg, uint32_t ref)
{
    return (struct cnb__reg_block *)CNB__AT(reg, CNB__REF_OFF(ref));
}

static inline void *cnb__reg_data(struct cnb_registry *reg, uint32_t ref)
{
    return reg->base + CNB__REF_OFF(ref) + 8;
}

static inline uint64_t cnb__reg_mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static inline uint32_t cnb__reg_stripe_of(const struct cnb_registry *reg, uint64_t h)
{
    return reg->sbits ? (uint32_t)(h >> (64 - reg->sbits)) : 0;
}

/* Home slot of hash h in a table of 2^bits slots: the bits just below the
 * stripe bits, so that home order is hash order (scans rely on it). */
static inline uint64_t cnb__reg_home(const struct cnb_registry *reg, uint64_t h,
                                     unsigned bits)
{
    return (h << reg->sbits) >> (64 - bits);
}

/* Owner-table home: the top bits of the owner hash. */
static inline uint64_t cnb__reg_ohome(uint64_t oh, unsigned bits)
{
    return oh >> (64 - bits);
}

static inline uint64_t cnb__reg_owner_hash(uint32_t node, uint32_t num, uint32_t serial,
                                           uint32_t creation)
{
    uint64_t a = ((uint64_t)node << 32) | num;
    uint64_t b = ((uint64_t)serial << 32) | creation;
    return cnb__reg_mix(a * 0x9E3779B97F4A7C15ULL ^ cnb__reg_mix(b + 0x632BE59BD9B4E019ULL));
}

static inline uint32_t cnb__reg_gran(uint64_t bytes)
{
    return (uint32_t)((bytes + CNB__REG_GRAN - 1) >> CNB__REG_GSHIFT);
}

static inline int cnb__reg_in_map(struct cnb_registry *reg, uint64_t off, uint64_t len)
{
    uint64_t m = atomic_load_explicit(&reg->mapped, memory_order_acquire);
    return off <= m && len <= m - off;
}

/* ---- hostile memory ------------------------------------------------------------
 * Any process of the same user can write anything into the segment at any time.
 * Nothing read from it may crash or hang us: every ref is checked before it is
 * followed (cnb__reg_ref_ok), every loop over shared links is bounded
 * (cnb__reg_walk), and a value is loaded once (CNB__LD) before it is checked and
 * used. The address range after the mapped file is reserved read-only (zero
 * pages), so a stray read anywhere a 32-bit ref and length reach cannot fault;
 * stray writes are what the checks prevent. */

#define CNB__LD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* Set by a writer that met a bad ref or a full undo log in the middle of an
 * operation: the store was skipped, and the operation must roll back and
 * return CNB_ECORRUPT (cnb__reg_tx_end). Per thread: a thread runs one
 * operation at a time. */
extern __thread int cnb__reg_bad;

/* Is ref a block in the arena whose 8-byte header and `bytes` data bytes are
 * mapped? */
static inline int cnb__reg_ref_ok(struct cnb_registry *reg, uint32_t ref, uint64_t bytes)
{
    uint64_t off = CNB__REF_OFF(ref);
    return off >= reg->arena_off && cnb__reg_in_map(reg, off, bytes + 8);
}

/* cnb__reg_ref_ok for a writer: a bad ref marks the operation bad. */
static inline int cnb__reg_ref_chk(struct cnb_registry *reg, uint32_t ref, uint64_t bytes)
{
    if (cnb__reg_ref_ok(reg, ref, bytes))
        return 1;
    cnb__reg_bad = 1;
    return 0;
}

/* A walk along links read from shared memory: at most as many steps as the
 * mapping holds entries, and a cycle is found (Brent: the saved ref moves to
 * the current one at every power of two of steps) within twice its length. */
struct cnb__reg_walk {
    uint32_t saved;
    uint64_t power, lam, left;
};

static inline void cnb__reg_walk_init(struct cnb__reg_walk *w, struct cnb_registry *reg)
{
    w->saved = 0;
    w->power = w->lam = 1;
    w->left = atomic_load_explicit(&reg->mapped, memory_order_relaxed) >> 6;
}

/* Returns 1 to go on to ref, 0 when the links loop or run too long. */
static inline int cnb__reg_walk_step(struct cnb__reg_walk *w, uint32_t ref)
{
    if (ref == w->saved || w->left == 0)
        return 0;
    w->left--;
    if (w->lam == w->power) {
        w->saved = ref;
        w->power <<= 1;
        w->lam = 0;
    }
    w->lam++;
    return 1;
}

/* Writes text into msg (snprintf-style); returns CNB_ECORRUPT. */
int cnb__reg_fail(char *msg, size_t msglen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- registry.c: mapping ---------------------------------------------------- */

/* Maps the file up to its current size in the header. Returns 0, CNB_ESYS. */
int cnb__reg_remap(struct cnb_registry *reg);
/* Grows the file to at least `need` bytes (G held). Returns 0, CNB_ENOMEM, CNB_ESYS. */
int cnb__reg_grow(struct cnb_registry *reg, uint64_t need);
uint64_t cnb__reg_now_ns(void);

/* ---- registry_tx.c: locks, undo log, seqlock, repair ------------------------ */

/* Crash injection: a test program may define this function; every writer calls
 * it at each point where it may die between two logged stores (before and after
 * each log record, and at commit). In every other program it is undefined, a
 * null weak symbol, and costs one predictable branch. */
void cnb__reg_fault_point(void) __attribute__((weak));

/* Every lock wait is bounded: a lock word another process scribbled on, or a
 * holder that never lets go, makes the call fail with CNB_ECORRUPT after
 * cnb__reg_lock_wait_ms (2000; tests lower it) rather than block forever. */
extern int cnb__reg_lock_wait_ms;
/* registry_mutex.c: pthread_mutex_timedlock with that bound. Returns 0,
 * EOWNERDEAD or another errno value. Every lock of a mutex in the segment goes
 * through these three: the unlock never follows a pointer read from the mutex
 * (another process may have written it), and never leaves the mutex on this
 * thread's robust list. */
int cnb__reg_mutex_lock(pthread_mutex_t *m);
int cnb__reg_mutex_trylock(pthread_mutex_t *m);
void cnb__reg_mutex_unlock(pthread_mutex_t *m);

/* Ends a write transaction of stripe si (seqlock odd): commits, or rolls back
 * when cnb__reg_bad was set during it. Returns 0 or CNB_ECORRUPT. Clears the
 * flag. */
int cnb__reg_tx_end(struct cnb_registry *reg, uint32_t si);

/* Lock a stripe (repairing what a dead holder left). Returns 0 or CNB_ECORRUPT. */
int cnb__reg_stripe_lock(struct cnb_registry *reg, uint32_t si);
void cnb__reg_stripe_unlock(struct cnb_registry *reg, uint32_t si);
/* If the stripe's lock is free or owned by a dead thread, repair it. Never blocks. */
void cnb__reg_stripe_try_repair(struct cnb_registry *reg, uint32_t si);
int cnb__reg_glock(struct cnb_registry *reg);
void cnb__reg_gunlock(struct cnb_registry *reg);
/* Lock a plain robust mutex whose data needs no repair beyond `repair` (may be
 * NULL). Returns 0 or CNB_ECORRUPT. */
int cnb__reg_lock_simple(pthread_mutex_t *m, void (*repair)(struct cnb_registry *),
                         struct cnb_registry *reg);

void cnb__reg_log_w64(struct cnb_registry *reg, struct cnb__reg_log *log, void *p,
                      uint64_t v);
void cnb__reg_log_w32(struct cnb_registry *reg, struct cnb__reg_log *log, void *p,
                      uint32_t v);
void cnb__reg_log_feedvoid(struct cnb_registry *reg, struct cnb__reg_log *log,
                           uint64_t slot_off, uint64_t state);
void cnb__reg_log_commit(struct cnb__reg_log *log);
void cnb__reg_log_rollback(struct cnb_registry *reg, struct cnb__reg_log *log);

void cnb__reg_seq_begin(struct cnb__reg_stripe *st);
void cnb__reg_seq_end(struct cnb__reg_stripe *st);

/* ---- registry_alloc.c: the arena -------------------------------------------- */

unsigned cnb__reg_class_ceil(uint32_t g);
unsigned cnb__reg_class_floor(uint32_t g);
uint64_t cnb__reg_class_size(unsigned c);
/* Make sure the stripe can allocate `need_g` granules from its bump region
 * (called with the stripe's undo log empty). A free block of 4 KiB or more (of
 * the stripe's lists, beyond the skip[class] first ones a plan has promised, or
 * adopted from G's) becomes the bump region before a new chunk is cut from the
 * top: old tables left by table growth are reused for entries. skip may be
 * NULL. Returns 0, CNB_ENOMEM, CNB_ESYS. */
int cnb__reg_reserve(struct cnb_registry *reg, uint32_t si, uint64_t need_g,
                     const uint8_t *skip);
/* Make sure the n allocations of bytes[i] data bytes can be made, from free
 * lists or the bump region (log empty). Returns as cnb__reg_reserve. */
int cnb__reg_reserve_for(struct cnb_registry *reg, uint32_t si, const uint64_t *bytes,
                         int n);
/* Granules one allocation of `bytes` consumes at worst. */
uint64_t cnb__reg_alloc_cost(uint64_t bytes);
/* Allocate a block with `bytes` of data (reserved beforehand). Returns its ref,
 * or 0 (and cnb__reg_bad set) when the stripe's allocator state is corrupt. */
uint32_t cnb__reg_alloc(struct cnb_registry *reg, uint32_t si, uint64_t bytes,
                        uint32_t kind);
void cnb__reg_free(struct cnb_registry *reg, uint32_t si, uint32_t ref);
/* After commit (log empty): hand big free blocks of stripe si to G's lists. */
void cnb__reg_donate(struct cnb_registry *reg, uint32_t si);

/* ---- registry_table.c: open-addressing tables of chains ---------------------- */

static inline uint32_t cnb__tab_ref(uint64_t t) { return (uint32_t)(t >> 8); }
static inline unsigned cnb__tab_bits(uint64_t t) { return (unsigned)(t & 0xFF); }

/* Is table word t (nonzero ref) a mapped table of a size the registry makes?
 * (Also keeps the home-slot shifts, 64 - bits - stripe bits, in range.) */
static inline int cnb__reg_tab_ok(struct cnb_registry *reg, uint64_t t)
{
    unsigned bits = cnb__tab_bits(t);
    return bits >= CNB__REG_MIN_BITS && bits <= 31 && bits + reg->sbits < 64 &&
           cnb__reg_ref_ok(reg, cnb__tab_ref(t), (uint64_t)8 << bits);
}

/* What a chain is looked up by: a key (which 0) or an owner (which 1). */
struct cnb__reg_probe {
    int which;
    uint64_t h; /* key hash, or owner hash */
    const void *key;
    uint32_t klen;
    uint32_t node, num, serial, creation;
};

static inline void cnb__reg_probe_key(struct cnb__reg_probe *p, uint64_t h, const void *key,
                                      uint32_t klen)
{
    *p = (struct cnb__reg_probe){.which = 0, .h = h, .key = key, .klen = klen};
}
void cnb__reg_probe_owner(struct cnb__reg_probe *p, uint32_t node, uint32_t num,
                          uint32_t serial, uint32_t creation);
void cnb__reg_probe_entry(struct cnb__reg_probe *p, int which,
                          const struct cnb__reg_entry *e);
/* Are the n bytes at a and b equal? Keys are mostly short (a {cache, I}
 * tuple is 15 bytes): up to 32 bytes in 8-byte words inline, with no call into
 * libc's memcmp, whose dispatch costs more than the compare; memcmp beyond. */
static inline int cnb__reg_bytes_eq(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    if (n > 32)
        return memcmp(x, y, n) == 0;
    if (n >= 8) {
        uint64_t u, v, d = 0;
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            memcpy(&u, x + i, 8);
            memcpy(&v, y + i, 8);
            d |= u ^ v;
        }
        if (i < n) { /* the last 8 bytes, overlapping what was compared */
            memcpy(&u, x + n - 8, 8);
            memcpy(&v, y + n - 8, 8);
            d |= u ^ v;
        }
        return d == 0;
    }
    if (n >= 4) {
        uint32_t u1, v1, u2, v2;
        memcpy(&u1, x, 4);
        memcpy(&v1, y, 4);
        memcpy(&u2, x + n - 4, 4);
        memcpy(&v2, y + n - 4, 4);
        return ((u1 ^ v1) | (u2 ^ v2)) == 0;
    }
    unsigned d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned)(x[i] ^ y[i]);
    return d == 0;
}

/* Does e belong to the chain p looks for? (e's lengths must be in bounds.)
 * Inline: every probe of every lookup asks. */
static inline int cnb__reg_probe_match(const struct cnb__reg_probe *p,
                                       const struct cnb__reg_entry *e)
{
    if (p->which)
        return e->node == p->node && e->num == p->num && e->serial == p->serial &&
               e->creation == p->creation;
    return e->hash == p->h && e->klen == p->klen && cnb__reg_bytes_eq(e->data, p->key, p->klen);
}
/* Home slot of p in a table of 2^bits slots. */
static inline uint64_t cnb__reg_probe_home(struct cnb_registry *reg,
                                           const struct cnb__reg_probe *p, unsigned bits)
{
    return p->which ? cnb__reg_ohome(p->h, bits) : cnb__reg_home(reg, p->h, bits);
}
uint64_t cnb__reg_entry_ohash(const struct cnb__reg_entry *e);

/* Head of p's chain in stripe si (locked), or 0. */
uint32_t cnb__reg_chain_head(struct cnb_registry *reg, uint32_t si,
                             const struct cnb__reg_probe *p);
/* Bits of the table to build before adding a chain, 0 if none is needed. */
unsigned cnb__reg_rehash_bits(uint64_t tab, uint64_t live, uint64_t used);
/* Build a new table of 2^bits slots holding the chains of `old` (pre-phase:
 * only new memory is written), their number in *chains: the live count the
 * stripe takes with the table (the count in shared memory may be forged).
 * Returns the new table word, 0 if corrupt. */
uint64_t cnb__reg_table_build(struct cnb_registry *reg, uint32_t si, uint64_t old,
                              unsigned bits, int which, uint32_t *chains);
/* Seqlock odd, logged: link the new entry ref into its chain of table `which`
 * (adding a slot if the chain is new); unlink ref; put new_ref in old_ref's place
 * (new_ref is fresh memory). */
void cnb__reg_chain_link(struct cnb_registry *reg, uint32_t si, int which, uint32_t ref);
void cnb__reg_chain_unlink(struct cnb_registry *reg, uint32_t si, int which, uint32_t ref);
void cnb__reg_chain_replace(struct cnb_registry *reg, uint32_t si, int which,
                            uint32_t old_ref, uint32_t new_ref);

/* A key as the registry hashes, stores and compares it: the caller's canonical
 * bytes, or a copy with every -0.0 made 0.0 (cnb_term_zero_sign), since on OTP
 * 25 -0.0 =:= 0.0 and Elixir's Registry takes them for one key. */
struct cnb__reg_key {
    const void *p;
    size_t len;
    void *heap;
    unsigned char inl[256];
};

/* Is there a NEW_FLOAT_EXT tag byte (70) among the n >= 8 bytes at p? Inline
 * by 8-byte words (a zero byte of w ^ 0x46...46 is a 70), memchr beyond 64. */
static inline int cnb__reg_has_70(const unsigned char *p, size_t n)
{
    if (n > 64)
        return memchr(p, 70, n) != NULL;
    const uint64_t ones = 0x0101010101010101ULL, tag = 70 * ones, high = 0x80 * ones;
    uint64_t w, hit = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        w ^= tag;
        hit |= (w - ones) & ~w & high;
    }
    if (i < n) { /* the last 8 bytes, overlapping */
        memcpy(&w, p + n - 8, 8);
        w ^= tag;
        hit |= (w - ones) & ~w & high;
    }
    return hit != 0;
}

int cnb__reg_key_norm_float(struct cnb_registry *reg, struct cnb__reg_key *k);

/* Fills k (k->p, k->len: the key to use). Arguments the operation itself will
 * refuse (NULL, too long) are passed through untouched. Returns 0 or
 * CNB_ENOMEM. Free with cnb__reg_key_done. Inline: a key with no float (no
 * tag byte 70 anywhere) is used as it is, and every lookup asks. */
static inline int cnb__reg_key_norm(struct cnb_registry *reg, struct cnb__reg_key *k,
                                    const void *key, size_t len)
{
    k->p = key;
    k->len = len;
    k->heap = NULL;
    if (!reg || !key || len < 9 || len > reg->max_key || !cnb__reg_has_70(key, len))
        return 0;
    return cnb__reg_key_norm_float(reg, k);
}

void cnb__reg_key_free(struct cnb_registry *reg, struct cnb__reg_key *k);
static inline void cnb__reg_key_done(struct cnb_registry *reg, struct cnb__reg_key *k)
{
    if (k->heap)
        cnb__reg_key_free(reg, k);
}

/* ---- registry_node.c -------------------------------------------------------- */

/* Interned index of a node name (>= 1), interning it if needed. Returns the
 * index, CNB_EINVAL, CNB_ETOOBIG (table full) or CNB_ECORRUPT. */
int cnb__reg_node_intern(struct cnb_registry *reg, const char *name);
/* Index of a node name without interning: >= 1, or 0 if unknown. Lock-free. */
uint32_t cnb__reg_node_find(struct cnb_registry *reg, const char *name);
void cnb__reg_node_repair(struct cnb_registry *reg);
/* Node idx's interned name, NUL-terminated ("" for 0 or out of range). */
const char *cnb__reg_node_str(struct cnb_registry *reg, uint32_t idx);
/* Copy node idx's name into dst[256] (empty for 0 or out of range). */
void cnb__reg_node_name(struct cnb_registry *reg, uint32_t idx, char *dst);

/* ---- registry_feed.c -------------------------------------------------------- */

/* Write an event into the ring (stripe si locked, before commit): claims a
 * sequence number under F, logs its voiding, sets feed_pending. */
void cnb__reg_feed_append(struct cnb_registry *reg, uint32_t si, int event,
                          const struct cnb__reg_entry *e);
/* After commit: publish the pending event of stripe si. */
void cnb__reg_feed_publish(struct cnb_registry *reg, uint32_t si);

/* ---- registry_read.c -------------------------------------------------------- */

int cnb__reg_res_reset(cnb_registry_result_t *res);
/* Append an item copied from entry e: klen and vlen as loaded and checked by
 * the caller (key and value bytes copied). */
int cnb__reg_res_add(struct cnb_registry *reg, cnb_registry_result_t *res,
                     const struct cnb__reg_entry *e, uint32_t klen, uint32_t vlen);
/* Point items' key/value at buf (after the buffer stopped moving). */
void cnb__reg_res_fix(cnb_registry_result_t *res);
int cnb__reg_res_push(cnb_registry_result_t *res, const void *key, size_t klen,
                      const void *val, size_t vlen, cnb_registry_item_t **item);

/* ---- registry_write.c ------------------------------------------------------- */

/* Remove one entry (stripe locked): its own transaction and feed event.
 * Returns 0 or CNB_ECORRUPT (nothing changed then). */
int cnb__reg_remove_entry(struct cnb_registry *reg, uint32_t si, uint32_t ref,
                           int feed);
ssize_t cnb__reg_remove_node_idx(struct cnb_registry *reg, uint32_t node,
                                 uint32_t creation);
/* Size stripe si's tables for `entries` (at creation). */
int cnb__reg_presize(struct cnb_registry *reg, uint32_t si, uint64_t entries);

/* ---- registry_attach.c ------------------------------------------------------ */

int cnb__reg_attach(struct cnb_registry *reg);
void cnb__reg_detach(struct cnb_registry *reg);
/* Repair every lock whose holder died (trylock only, never blocks). */
void cnb__reg_sweep_locks(struct cnb_registry *reg);
/* The start time (clock ticks after boot) of OS process pid, or 0 when it is
 * gone (see cnb__reg_stat_start). */
uint64_t cnb__reg_proc_start(int pid);
/* The same from the text of a /proc/<pid>/stat: 0 when it is unreadable, a
 * zombie, or exiting (PF_EXITING). */
uint64_t cnb__reg_stat_start(const char *stat);

#endif /* CNB_REGISTRY_INT_H */
