/* cnb_registry.h: the key registry (Elixir Registry semantics) in a shared-memory
 * segment that the C node and a BEAM VM on one host map together. Implementation:
 * core/registry*.c. Tests: tests/unit/test_registry.c,
 * tests/unit/test_registry_concurrency.c. Bench: bench/bench_registry.c.
 *
 * Keys and values are CANONICAL external term format bytes (cnb_term_canonical);
 * the registry compares keys byte for byte after writing every -0.0 in them as
 * 0.0 (cnb_term_zero_sign), so equality is OTP 25's =:= (1 and 1.0 are different
 * keys; -0.0 and 0.0 are one key, stored as 0.0, as in ETS and Elixir's
 * Registry). Values are opaque bytes, kept as given. Owners are Erlang pids of
 * any node.
 *
 * Threads: one struct cnb_registry may be used by any number of threads at once.
 * Readers never block and never write shared memory (a seqlock per stripe); after
 * many failed attempts against a busy writer a reader falls back to the stripe
 * lock. Writers take one of the striped robust process-shared locks; a process
 * killed in the middle of any write leaves an undo log that the next locker rolls
 * back. A handle must not be used across fork(); open a new one in the child.
 *
 * Hostile memory: another process of the same user can write anything into the
 * segment. No call crashes or hangs on that: offsets, lengths and links read
 * from the segment are bounds-checked, loops over them bounded, lock waits
 * bounded (2 s) and a reader's wait on a stripe whose sequence number stays
 * odd bounded (it falls back to the lock, whose taker makes it even). What
 * such writes break is reported as CNB_ECORRUPT (a write that meets it is
 * rolled back); the data read may be wrong, never out of bounds. */
#ifndef CNB_REGISTRY_H
#define CNB_REGISTRY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cnb_common.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cnb_registry;

/* An Erlang pid; the fields match ei's erlang_pid. node is UTF-8, NUL-terminated,
 * 1 to 255 bytes. */
typedef struct cnb_pid {
    char node[256];
    uint32_t num;
    uint32_t serial;
    uint32_t creation;
} cnb_pid_t;

enum cnb_registry_kind {
    CNB_REG_UNIQUE = 1,   /* at most one entry per key */
    CNB_REG_DUPLICATE = 2 /* any number of entries per key, even of one owner */
};

/* opts.flags */
#define CNB_REG_CREATE 0x1u /* create the segment when the path does not exist */
#define CNB_REG_EXCL 0x2u   /* with CNB_REG_CREATE: CNB_EEXIST if it exists */

/* Options for cnb_registry_open. Zero fields mean "default". The sizing fields
 * are used only when the segment is created; an attacher takes the creator's. */
typedef struct cnb_registry_opts {
    /* The segment's name (e.g. "/dev/shm/myreg"); or NULL for a process-private
     * registry (same code). A segment is a memfd sealed against shrinking
     * (F_SEAL_SHRINK | F_SEAL_SEAL), mode 0600, so that no process can truncate
     * it under another's mapping (SIGBUS). Creating with a path makes path a
     * symbolic link to /proc/<creator pid>/fd/<fd>: other processes of the user
     * attach through it while the creator keeps the handle open, and the
     * segment goes with the last process that has it open (a dangling name is
     * ENOENT, and taken over by CNB_REG_CREATE). Attaching opens whatever path
     * names (a /proc/PID/fd/N path works too) and refuses, before mapping it,
     * a file that is not sealed so (CNB_EPERM): a plain file is refused. */
    const char *path;
    unsigned flags;          /* CNB_REG_CREATE, CNB_REG_EXCL */
    int kind;                /* creating: CNB_REG_UNIQUE (default) or DUPLICATE;
                                attaching: 0 accepts either, else must match
                                (CNB_EINVAL otherwise) */
    uint32_t stripes;        /* writer lock stripes, power of two <= 4096; 64 */
    uint32_t max_key_size;   /* bytes; default 1 MiB */
    uint32_t max_value_size; /* bytes; default 64 MiB */
    uint64_t initial_capacity; /* entries to size the tables for; default 0 */
    uint64_t max_size;       /* the largest the segment may grow (address space
                                reserved by every attacher); default and limit
                                64 GiB */
    uint32_t feed_slots;     /* change feed ring length, power of two; 4096 */
    uint32_t feed_slot_size; /* bytes per ring slot, multiple of 64; 256 */
    uint32_t node_capacity;  /* distinct owner node names ever seen; 4096 */
    /* Who attaches (optional): when this OS process is later found dead by another
     * attacher, every entry owned by pids of (owner_node, owner_creation) is
     * removed. NULL: entries are left alone. */
    const char *owner_node;
    uint32_t owner_creation;
    /* Process-local bookkeeping memory (the handle, result buffers); NULL: malloc.
     * Copied; must stay valid until close. */
    const cnb_allocator_t *alloc;
    /* Optional: on failure, a sentence saying what was wrong (NUL-terminated). */
    char *errbuf;
    size_t errbuf_len;
} cnb_registry_opts_t;

/* An owner as results give it. node points at the registry's interned copy of
 * the node name (NUL-terminated, "" for meta entries), valid until the handle is
 * closed: a result item costs no 256-byte name. */
typedef struct cnb_registry_owner {
    const char *node;
    uint32_t num;
    uint32_t serial;
    uint32_t creation;
} cnb_registry_owner_t;

/* Copies an owner into a cnb_pid_t (for the calls that take one). */
void cnb_registry_owner_pid(const cnb_registry_owner_t *owner, cnb_pid_t *out);

/* One entry (or one feed event) copied out of the registry. key and value point
 * into the owning cnb_registry_result_t and stay valid until its next use or free. */
typedef struct cnb_registry_item {
    cnb_registry_owner_t owner; /* node "" and zeros for meta entries */
    const unsigned char *key;
    size_t key_len;
    const unsigned char *value; /* NULL for a feed event whose value was omitted */
    size_t value_len;         /* real length, even when the value was omitted */
    uint64_t hash;            /* the registry's hash of the key */
    /* feed events only: */
    uint64_t seq;
    int event;                /* CNB_REG_EV_* */
    unsigned flags;           /* CNB_REG_EVF_* */
} cnb_registry_item_t;

/* A reusable output buffer. Initialise with cnb_registry_result_init; every
 * reading call resets it and fills items[0..n). Free with cnb_registry_result_free. */
typedef struct cnb_registry_result {
    cnb_registry_item_t *items;
    size_t n;
    size_t cap;
    unsigned char *buf;
    size_t buf_len;
    size_t buf_cap;
    const cnb_allocator_t *alloc;
} cnb_registry_result_t;

void cnb_registry_result_init(cnb_registry_result_t *res, const cnb_allocator_t *alloc);
void cnb_registry_result_free(cnb_registry_result_t *res);

/* ---- open, close ---------------------------------------------------------- */

/* Opens (attaches to) or creates a registry. On success *out is a handle the
 * caller frees with cnb_registry_close. Attaching records this OS process in the
 * segment and purges leftovers of attachers that are gone (cnb_registry_purge).
 * Errors: CNB_EINVAL (bad option), CNB_ENOENT (no such segment and no
 * CNB_REG_CREATE), CNB_EEXIST (CNB_REG_EXCL and it exists), CNB_EBADFILE (not a
 * registry segment: bad magic, or a layout this build cannot map), CNB_EVERSION
 * (another format version), CNB_ECORRUPT (header checksum or region bounds
 * wrong), CNB_EPERM (not a regular file owned by this user with mode 0600),
 * CNB_ENOMEM, CNB_ESYS. */
int cnb_registry_open(const cnb_registry_opts_t *opts, struct cnb_registry **out);

/* Detaches and frees the handle (NULL is fine). The segment stays. */
void cnb_registry_close(struct cnb_registry *reg);

/* Removes the segment's name. Attached processes keep their mapping. Returns 0,
 * CNB_ENOENT or CNB_ESYS. */
int cnb_registry_unlink(const char *path);

typedef struct cnb_registry_info {
    int kind;
    uint32_t stripes;
    uint32_t max_key_size;
    uint32_t max_value_size;
    uint64_t count;       /* entries (meta excluded) */
    uint64_t file_size;   /* bytes of the segment file */
    uint64_t arena_used;  /* bytes handed out to stripes (top of the arena) */
    uint64_t generation;  /* bumped by every growth of the file */
    uint64_t feed_head;   /* the next feed sequence number */
    uint32_t nodes;       /* owner node names interned */
    uint32_t attached;    /* live attach records */
} cnb_registry_info_t;

/* Fills *info. Returns 0. */
int cnb_registry_info(struct cnb_registry *reg, cnb_registry_info_t *info);

/* ---- writers (take one stripe lock; may block on another writer) --------- */

/* Adds {key, owner, value}. Unique registries: if the key is taken, returns
 * CNB_EEXIST and copies the current owner to *current (if not NULL); a second
 * registration by the same owner is also CNB_EEXIST. Duplicate registries always
 * add. Returns 0, CNB_EEXIST, CNB_EINVAL (bad owner), CNB_ETOOBIG (key or value
 * over the limits, or the node table full), CNB_ENOMEM (segment full), CNB_ESYS,
 * CNB_ECORRUPT. */
int cnb_registry_register(struct cnb_registry *reg, const void *key, size_t key_len,
                          const cnb_pid_t *owner, const void *value, size_t value_len,
                          cnb_pid_t *current);

/* Removes every entry of key owned by owner. Returns how many (0 is not an
 * error) or a negative CNB_E* code. */
ssize_t cnb_registry_unregister(struct cnb_registry *reg, const void *key,
                                size_t key_len, const cnb_pid_t *owner);

/* Decides whether an entry's value matches: 1 yes, 0 no, negative: stop with
 * that error. Called with the stripe lock held: it must be short and must not
 * call the registry. */
typedef int (*cnb_registry_value_pred)(void *ctx, const void *value, size_t value_len);

/* Removes the entries of key owned by owner whose value pred accepts. Returns
 * how many, or a negative code (entries removed before pred failed stay removed). */
ssize_t cnb_registry_unregister_match(struct cnb_registry *reg, const void *key,
                                      size_t key_len, const cnb_pid_t *owner,
                                      cnb_registry_value_pred pred, void *ctx);

/* Replaces the value of every entry of key owned by owner (one in a unique
 * registry). Returns how many (>= 1), CNB_ENOENT when there is none, or another
 * negative code. */
ssize_t cnb_registry_update_value(struct cnb_registry *reg, const void *key,
                                  size_t key_len, const cnb_pid_t *owner,
                                  const void *value, size_t value_len);

/* Removes every entry of owner (its process died). Returns how many. */
ssize_t cnb_registry_remove_owner(struct cnb_registry *reg, const cnb_pid_t *owner);

/* Removes every entry whose owner lives on node (name) with that creation;
 * creation 0 means every creation. O(entries). Returns how many, or a negative
 * code (e.g. CNB_ECORRUPT: the segment was written over). */
ssize_t cnb_registry_remove_node(struct cnb_registry *reg, const char *node,
                                 uint32_t creation);

/* Registry metadata: a unique key -> value map beside the entries (no owner, not
 * counted, not in the feed). put replaces. Returns 0 or a negative code;
 * meta_delete returns CNB_ENOENT for a missing key. */
int cnb_registry_meta_put(struct cnb_registry *reg, const void *key, size_t key_len,
                          const void *value, size_t value_len);
int cnb_registry_meta_delete(struct cnb_registry *reg, const void *key, size_t key_len);

/* ---- readers (never block, no system call) -------------------------------- */

/* Every {owner, value} of key: fills res; returns the number of items (0 when
 * absent) or CNB_ENOMEM / CNB_ETOOBIG / CNB_ECORRUPT. */
ssize_t cnb_registry_lookup(struct cnb_registry *reg, const void *key, size_t key_len,
                            cnb_registry_result_t *res);

/* The one entry of key in a unique registry, without a result buffer (the
 * NIF's lookup/2): *owner (node as in cnb_registry_owner_t) and the value's
 * length in *value_len, its bytes copied into value when they fit in
 * value_cap. Returns 1 (found), 0 (absent), CNB_ENOSPC (found, but the value
 * is longer than value_cap: nothing copied; *value_len says how long),
 * CNB_EINVAL (also for a duplicate registry), CNB_ENOMEM, CNB_ETOOBIG or
 * CNB_ECORRUPT. */
ssize_t cnb_registry_lookup_one(struct cnb_registry *reg, const void *key, size_t key_len,
                                cnb_registry_owner_t *owner, void *value, size_t value_cap,
                                size_t *value_len);

/* One key of a batched lookup: canonical ETF bytes. */
typedef struct cnb_registry_key {
    const void *key;
    size_t len;
} cnb_registry_key_t;

/* Looks up n keys at once: the same answers as n cnb_registry_lookup calls, each
 * key read from a consistent snapshot of its stripe, but faster on big
 * registries, where each lookup waits on memory: the loads of up to 16 keys are
 * in flight together. res gets the items of keys[0], then those of keys[1], and
 * so on; counts[i] gets how many items keys[i] has (0 when absent, and for a key
 * longer than max_key_size, which no entry can have). Returns the total number
 * of items, or CNB_EINVAL (a NULL key with a length), CNB_ENOMEM, CNB_ECORRUPT,
 * with no items then. */
ssize_t cnb_registry_lookup_many(struct cnb_registry *reg, const cnb_registry_key_t *keys,
                                 size_t n, cnb_registry_result_t *res, size_t *counts);

/* The values of key owned by owner. Returns the number of items. */
ssize_t cnb_registry_values(struct cnb_registry *reg, const void *key, size_t key_len,
                            const cnb_pid_t *owner, cnb_registry_result_t *res);

/* Every entry owned by owner (items carry key and value). Visits each stripe's
 * owner index: O(stripes + result). Returns the number of items. */
ssize_t cnb_registry_keys(struct cnb_registry *reg, const cnb_pid_t *owner,
                          cnb_registry_result_t *res);

/* The number of entries, in O(stripes) loads from one packed array (independent
 * of the number of entries). */
uint64_t cnb_registry_count(struct cnb_registry *reg);

/* Meta value of key: 1 item in res, or CNB_ENOENT. */
ssize_t cnb_registry_meta_get(struct cnb_registry *reg, const void *key, size_t key_len,
                              cnb_registry_result_t *res);

/* ---- scanning: match, select, count_match, dispatch ------------------------ */

/* A scan position. Start with {0, 0}; done becomes 1 at the end. A cursor is a
 * position in the key-hash order, so it survives any writes and table growth:
 * every entry present for the whole scan is delivered exactly once; entries
 * added or removed during the scan may or may not be. */
typedef struct cnb_registry_cursor {
    uint64_t pos;
    int done;
} cnb_registry_cursor_t;

/* Decides whether a scanned entry is kept in the result: 1 keep, 0 drop,
 * negative: abort the call with that code (the cursor is not advanced). Called
 * on copied, validated data, with no lock held. */
typedef int (*cnb_registry_scan_pred)(void *ctx, const cnb_registry_item_t *item);

/* Delivers the next batch of entries: about `budget` table positions (at least
 * one; 0 means 256) are visited, all entries of one key always in one batch.
 * Entries that pred (NULL: all) keeps are in res. Returns how many were kept
 * (0 does not mean the end: test cur->done). */
ssize_t cnb_registry_scan(struct cnb_registry *reg, cnb_registry_cursor_t *cur,
                          size_t budget, cnb_registry_scan_pred pred, void *ctx,
                          cnb_registry_result_t *res);

/* ---- change feed ----------------------------------------------------------- */

enum cnb_registry_event {
    CNB_REG_EV_REGISTER = 1,
    CNB_REG_EV_UNREGISTER = 2, /* also for remove_owner, remove_node, unregister_match */
    CNB_REG_EV_UPDATE = 3      /* update_value; value is the new one */
};
#define CNB_REG_EVF_VALUE_OMITTED 0x1u /* key + value did not fit the ring slot:
                                          value is NULL, look the key up */
#define CNB_REG_EVF_KEY_OMITTED 0x2u   /* the key alone did not fit: key is NULL,
                                          hash and key_len are set */

/* The sequence number the next event will get: subscribe by remembering it. */
uint64_t cnb_registry_feed_head(struct cnb_registry *reg);

/* Events with seq >= *pos, at most max (0: 1024), in seq order, into res (items
 * carry seq, event, flags, key, owner, value). Advances *pos past what was
 * returned or skipped. *missed (if not NULL) gets how many events were
 * overwritten before they could be read. Stops early at an event still being
 * written. Returns the number of events. */
ssize_t cnb_registry_feed_poll(struct cnb_registry *reg, uint64_t *pos, size_t max,
                               cnb_registry_result_t *res, uint64_t *missed);

/* ---- maintenance ----------------------------------------------------------- */

/* Purges leftovers of attachers whose OS process is gone (by pid and start time
 * from /proc, so a reused pid is not mistaken): their attach records, any lock
 * they died holding (rolled back), and, if they declared owner_node, the entries
 * of that node and creation. Returns how many attachers were purged. */
ssize_t cnb_registry_purge(struct cnb_registry *reg);

/* 1 when OS process pid runs, 0 when it is gone: no such process, a zombie,
 * or one already exiting (the kernel's PF_EXITING: a process killed with
 * SIGKILL closes its sockets, so its peers see it go, before it is a zombie).
 * What cnb_registry_purge takes for "gone"; attachers that learn of an
 * owner's death by other means (a dropped connection) ask this before they
 * purge its entries. */
int cnb_registry_os_pid_alive(int pid);

/* Walks the whole segment with every lock held (repairing as needed) and checks
 * the invariants: arena blocks tile the chunks, free lists hold exactly the free
 * blocks, every entry is in exactly one key slot and one owner slot and is
 * reachable by probing, counts match, unique keys are unique, node names are
 * unique. Returns 0, or CNB_ECORRUPT with a description in msg (may be NULL),
 * or CNB_ENOMEM. O(segment size); for tests and diagnostics. */
int cnb_registry_check(struct cnb_registry *reg, char *msg, size_t msglen);

#ifdef __cplusplus
}
#endif
#endif /* CNB_REGISTRY_H */
