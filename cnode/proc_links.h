/* proc_links.h: internals of the runtime's link and monitor records: interned
 * names with per-node connection epochs, holders and the per-peer cap
 * (link_names.c), and each process's hashed tables of compact records
 * (proc_links.c). Not part of the public API.
 * Tests: tests/integration/hostile_signals_tests.erl, runtime_tests.erl. */
#ifndef CNB_PROC_LINKS_H
#define CNB_PROC_LINKS_H

#include <stddef.h>
#include <stdint.h>

#include <ei.h>

/* ------------------------------------------------------------ link_names.c */

/* One interned name (a node name, or a registered name a monitor was set
 * by), shared by every record that names it and freed with its last
 * reference. A node's entry also holds its connection epoch: +1 each time
 * the connection goes down, so a record made over a connection that is gone
 * is told apart from one made over the current one. */
typedef struct cnb_lname cnb_lname_t;
/* One process holding records (or reserved signals) on one node. */
typedef struct cnb_hold cnb_hold_t;
/* The table of names; thread-safe (one mutex). */
typedef struct cnb_lnames cnb_lnames_t;

/* cap: the most records plus reservations one node may have here (>= 1).
 * Returns 0 or CNB_ENOMEM. */
int cnb__ln_create(size_t cap, uint64_t seed, cnb_lnames_t **out);
void cnb__ln_destroy(cnb_lnames_t *L); /* every reference must be put back */
size_t cnb__ln_cap(const cnb_lnames_t *L);

/* Interns s: returns its entry with one more reference, or NULL (no memory). */
cnb_lname_t *cnb__ln_get(cnb_lnames_t *L, const char *s);
/* One more reference on e (not NULL); returns e. */
cnb_lname_t *cnb__ln_dup(cnb_lnames_t *L, cnb_lname_t *e);
/* Drops a reference (e may be NULL). */
void cnb__ln_put(cnb_lnames_t *L, cnb_lname_t *e);
const char *cnb__ln_str(const cnb_lname_t *e);
uint64_t cnb__ln_hash(const cnb_lname_t *e);

/* Node e's connection epoch now. */
uint32_t cnb__ln_epoch(cnb_lnames_t *L, const cnb_lname_t *e);
/* 1 when epoch is node e's current one: a signal owed to a record made at
 * that epoch still has its connection to go over. */
int cnb__ln_current(cnb_lnames_t *L, const cnb_lname_t *e, uint32_t epoch);

/* Counts one more record or reserved signal of process `key` (whose hold
 * list is *holds) on node e, and makes the process one of e's holders, so a
 * nodedown of e reaches it. limited: refuse when e is at the cap. Returns 0
 * and *epoch (e's current epoch), CNB_ETOOBIG when refused (*first is 1 for
 * the first refusal since e's connection came up), or CNB_ENOMEM. */
int cnb__ln_hold(cnb_lnames_t *L, cnb_hold_t **holds, uint64_t key, cnb_lname_t *e,
                 int limited, uint32_t *epoch, int *first);
/* delta +1: a DEMONITOR/UNLINK from node e is queued (the room it will make
 * counts toward e's cap at once); -1: it has run (or was dropped). */
void cnb__ln_releasing(cnb_lnames_t *L, cnb_lname_t *e, int delta);
/* Undoes one cnb__ln_hold. */
void cnb__ln_release(cnb_lnames_t *L, cnb_hold_t **holds, cnb_lname_t *e);

/* The connection to `node` is gone: its epoch moves on. Returns how many
 * processes hold records there, with their keys in *keys (malloc'd: the
 * caller frees), the entry in *e (one reference, for the caller to put back)
 * and the epoch that ended in *ended; 0 (nothing set) when none does. */
size_t cnb__ln_nodedown(cnb_lnames_t *L, const char *node, uint64_t **keys, cnb_lname_t **e,
                        uint32_t *ended);

/* n records were just freed: past a threshold the allocator is asked to give
 * free pages back to the system (malloc_trim), so that a peer's flood of links
 * leaves no resident memory behind once it is gone. */
void cnb__ln_freed(cnb_lnames_t *L, size_t n);

/* ------------------------------------------------------------ proc_links.c */

/* A pid or a ref without ei's 1 KB node-name buffer: the node is interned. */
typedef struct cnb_cpid {
    cnb_lname_t *node;
    uint32_t num, serial, creation;
} cnb_cpid_t;

typedef struct cnb_cref {
    cnb_lname_t *node;
    uint32_t creation;
    uint32_t len;
    uint32_t n[5];
} cnb_cref_t;

/* Set: interns the node (a reference held by c); 0 or CNB_ENOMEM. Get: fills
 * ei's struct. Put: drops the reference (c may be zeroed). */
int cnb__cpid_set(cnb_lnames_t *L, cnb_cpid_t *c, const erlang_pid *p);
void cnb__cpid_get(const cnb_cpid_t *c, erlang_pid *p);
void cnb__cpid_put(cnb_lnames_t *L, cnb_cpid_t *c);
int cnb__cpid_eq(const cnb_cpid_t *a, const cnb_cpid_t *b);
int cnb__cref_set(cnb_lnames_t *L, cnb_cref_t *c, const erlang_ref *r);
void cnb__cref_get(const cnb_cref_t *c, erlang_ref *r);
void cnb__cref_put(cnb_lnames_t *L, cnb_cref_t *c);

/* Records are chained in their table's buckets (next) and, once taken out,
 * in the lists the take functions return (next again). */
typedef struct cnb_link {
    struct cnb_link *next;
    cnb_cpid_t pid;
    uint32_t epoch;     /* pid's node epoch when the link was made */
    int active;         /* 0: we sent UNLINK_ID and wait for its ack */
    uint64_t unlink_id; /* that UNLINK_ID when !active */
} cnb_link_t;

typedef struct cnb_mon {
    struct cnb_mon *next;
    cnb_cref_t ref;
    cnb_cpid_t pid;     /* on_me: the monitoring pid; held: the target (not by name) */
    cnb_lname_t *node;  /* the node the monitor crosses to */
    cnb_lname_t *name;  /* by name: held: the target's name; on_me: ours. Else NULL */
    uint32_t epoch;     /* node's epoch when it was made */
} cnb_mon_t;

typedef struct cnb_ltab {
    void **b;
    uint32_t size, count; /* a process's records: at most the per-peer cap's sum */
} cnb_ltab_t;

/* A process's links, monitors on it (on_me) and monitors it holds (held).
 * The tables belong to the thread running the process; holds is shared
 * with the I/O thread under the names table's lock. Zeroed = empty. */
typedef struct cnb_plinks {
    cnb_ltab_t links, on_me, held;
    cnb_hold_t *holds;
    uint64_t key; /* the process's key in the runtime's table */
} cnb_plinks_t;

/* The link to pid, or NULL. */
cnb_link_t *cnb__pl_link(cnb_plinks_t *pl, const cnb_cpid_t *pid);
/* A new active link to pid (there must be none). epoch: NULL for the node's
 * current one. adopt (epoch given): the record takes over a hold the caller
 * has on pid's node (a reserved signal's) instead of taking one more, so the
 * per-peer count never counts one link twice. Returns it, or NULL (no
 * memory; an adopted hold stays the caller's). */
cnb_link_t *cnb__pl_link_add(cnb_lnames_t *L, cnb_plinks_t *pl, const cnb_cpid_t *pid,
                             const uint32_t *epoch, int adopt);
/* Takes l out of the table and frees it. */
void cnb__pl_link_drop(cnb_lnames_t *L, cnb_plinks_t *pl, cnb_link_t *l);
/* Frees a record already taken out of its table. */
void cnb__pl_link_free(cnb_lnames_t *L, cnb_plinks_t *pl, cnb_link_t *l);

/* A new monitor record in t (&pl->on_me or &pl->held); pid may be NULL (by
 * name), name NULL (by pid); epoch and adopt as for links (adopt: a hold on
 * node). Returns it, or NULL (no memory). */
cnb_mon_t *cnb__pl_mon_add(cnb_lnames_t *L, cnb_plinks_t *pl, cnb_ltab_t *t,
                           const cnb_cref_t *ref, const cnb_cpid_t *pid, cnb_lname_t *node,
                           cnb_lname_t *name, const uint32_t *epoch, int adopt);
/* Takes the monitor with ref out of t: returns it (free it), or NULL. */
cnb_mon_t *cnb__pl_mon_take(cnb_ltab_t *t, const cnb_cref_t *ref);
void cnb__pl_mon_free(cnb_lnames_t *L, cnb_plinks_t *pl, cnb_mon_t *m);

/* Take every record (node NULL), or those crossing to node made at an epoch
 * up to `upto`, out of their table: a list to walk and free. */
cnb_link_t *cnb__pl_links_take(cnb_plinks_t *pl, const cnb_lname_t *node, uint32_t upto);
cnb_mon_t *cnb__pl_mons_take(cnb_ltab_t *t, const cnb_lname_t *node, uint32_t upto);

/* Frees every record of pl. */
void cnb__pl_clear(cnb_lnames_t *L, cnb_plinks_t *pl);

#endif /* CNB_PROC_LINKS_H */
