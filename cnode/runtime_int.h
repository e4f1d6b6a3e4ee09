/* runtime_int.h: internals shared by the files of the process runtime, one
 * job each: runtime.c (entry points, delivery), rt_table.c (pids, names),
 * rt_sched.c (mailboxes, run queue, pool), rt_signals.c (signals sent),
 * rt_life.c (spawn, callbacks, termination), rt_gen.c (gen_server, sys),
 * links.c (links, monitors and exit signals) and rt_worker_ops.c (links and
 * monitors asked from other threads). Not part of the public API.
 * Tests: tests/integration/runtime_tests.erl, hostile_signals_tests.erl. */
#ifndef CNB_RUNTIME_INT_H
#define CNB_RUNTIME_INT_H

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>

#include "mbox_lock.h"
#include "node_rt.h"
#include "proc_links.h"
#include "runtime.h"

enum sig_kind {
    SIG_MSG = 1,
    SIG_LINK,
    SIG_UNLINK,
    SIG_UNLINK_ID,
    SIG_UNLINK_ID_ACK,
    SIG_EXIT,
    SIG_EXIT2,
    SIG_MONITOR,
    SIG_DEMONITOR,
    SIG_DOWN,
    SIG_NODEDOWN,
    SIG_SHUTDOWN,
    SIG_WORKER_OP /* a link or monitor asked from another thread (rt_worker_ops.c) */
};

/* What a signal says besides its data; every name in it is interned (one
 * reference each, dropped by free_sig). */
typedef struct sig_meta {
    cnb_cpid_t from;
    cnb_cref_t ref;
    uint64_t id;
    cnb_lname_t *name;     /* MONITOR by name: our name it used; NODEDOWN: the node */
    int reserved;          /* LINK/MONITOR: holds a count on from's node until a record takes it */
    int releasing;         /* DEMONITOR/UNLINK from a capped peer: counted in from's node's
                            * releasing until the signal is freed (cnb__ln_releasing) */
    uint32_t epoch;        /* from's node epoch on arrival; NODEDOWN: the epoch that ended */
    int by_name;           /* MONITOR/DEMONITOR/DOWN by name */
} sig_meta_t;

typedef struct sig {
    struct sig *next;
    int kind;
    int call; /* a '$gen_call' counted in rt->calls_in until it is freed */
    sig_meta_t *meta; /* NULL for plain messages */
    size_t len;
    char data[]; /* message or reason: ETF with version byte */
} sig_t;

/* A worker. Laid out small for idle workers (docs/BENCHMARKS.md, "Idle
 * memory and NIF lookups"): the pid's 1,036 bytes (ei's erlang_pid, whose
 * node name is an inline array) first, the byte-wide flags in the 4 bytes
 * after it, then the mailbox's 4-byte lock and prio_in, no holes; the runtime comes from node->rt, the table key is
 * pl.key, a registered name is its own allocation (named workers only), and
 * whether the reason was set or lost is read off `reason` (rt_life.c). The
 * flags are separate bytes, not bit-fields: each is written by one thread at
 * a time (under mu or by the running thread) and read by others. */
struct cnb_proc {
    erlang_pid pid;
    unsigned char trap_exit;
    unsigned char run_inline; /* cnb_spawn_opts_t.run_inline: the I/O thread runs it when idle */
    unsigned char scheduled;  /* under mu */
    unsigned char dead;       /* under mu */
    cnb_mbox_lock_t mu;       /* the mailbox's */
    atomic_int prio_in;       /* prio_last set: a batch of ordinary signals taken
                               * out stops for it (read without mu) */
    cnb_node_t *node;
    const cnb_worker_ops_t *ops;
    void *state;
    struct cnb_pname *reg; /* registered name (rt_table.c), or NULL */
    /* mailbox (under mu) */
    sig_t *head, *tail;
    sig_t *prio_last; /* the last priority signal queued (EEP 76), or NULL */
    struct cnb_proc *rq_next;
    struct cnb_proc *hnext; /* pid table chain */
    /* owned by the running thread (pl.holds: under the names' lock); pl.key
     * is cnb__pt_key of pid, unique among live workers */
    cnb_plinks_t pl;
    ei_x_buff reason; /* buff set: the reason; buff NULL and index -1: lost for
                       * want of memory; else not set yet */
    uint64_t unlink_seq;
};

/* A registered name: the chain of its bucket in rt->names, its worker. */
typedef struct cnb_pname {
    struct cnb_pname *next;
    struct cnb_proc *proc;
    char name[];
} cnb_pname_t;

struct cnb_rt {
    cnb_node_t *node;
    pthread_rwlock_t tab_lock;
    cnb_proc_t **tab;
    size_t tab_size, count;
    cnb_pname_t **names;
    size_t names_size;
    pthread_mutex_t rq_mu;
    sem_t rq_sem;         /* pool threads sleep on it */
    cnb_proc_t *rq_head, *rq_tail;
    int sleepers;         /* pool threads asleep and not yet posted for (under rq_mu) */
    atomic_int rq_len;    /* workers in the run queue (read without the lock) */
    atomic_int spinning;  /* a pool thread spins for work (at most one) */
    atomic_int stopping;  /* stop, for the spinner */
    atomic_int calls_in;  /* '$gen_call's delivered and not yet handled: the I/O
                           * thread spins for their replies (cnb__rt_busy) */
    int inline_running;   /* the I/O thread runs an inline worker (I/O thread only) */
    int stop;
    unsigned nthreads;
    pthread_t *threads;
    int started;
    cnb_lnames_t *ln;  /* names of link and monitor records; per-peer counts */
    size_t forged;     /* link/monitor signals whose sender is not the peer */
    struct cnb_types *types; /* worker types (worker_types.c) */
};

/* rt_table.c: the table's key of a pid; lookups (tab_lock held, read or
 * write); a pid for a new worker whose key no live worker holds (the pid
 * counter wraps after 2^28); insertion and a name for p (tab_lock
 * write-locked; the name: 0 or CNB_ENOMEM); p's removal from both (takes
 * tab_lock). */
uint64_t cnb__pt_key(const erlang_pid *p);
cnb_proc_t *cnb__pt_find_key_locked(cnb_rt_t *rt, uint64_t k);
cnb_proc_t *cnb__pt_find_locked(cnb_rt_t *rt, const erlang_pid *pid);
cnb_proc_t *cnb__pt_find_name_locked(cnb_rt_t *rt, const char *name);
void cnb__pt_fresh_pid(cnb_rt_t *rt, erlang_pid *pid);
void cnb__pt_insert_locked(cnb_rt_t *rt, cnb_proc_t *p);
int cnb__pt_name_add_locked(cnb_rt_t *rt, cnb_proc_t *p, const char *name);
void cnb__pt_remove(cnb_rt_t *rt, cnb_proc_t *p);

/* rt_sched.c: a signal (data copied; meta zeroed when with_meta), NULL when
 * out of memory; freeing one with what its meta holds (names, a count
 * reserved on p); appending one to p's mailbox (takes s; schedules p if it
 * was idle); p going live after spawn (scheduled if signals came
 * meanwhile); taking p's whole queue at its end; the pool's threads. */
sig_t *cnb__sig_new(int kind, const char *data, size_t len, int with_meta);
void cnb__sig_free(cnb_proc_t *p, sig_t *s);
void cnb__mbox_push(cnb_proc_t *p, sig_t *s);
/* A priority signal (ALTACT_SIG_SEND's PRIO flag, EEP 76): queued after the
 * priority signals already waiting and ahead of all others. */
void cnb__mbox_push_prio(cnb_proc_t *p, sig_t *s);
/* From the I/O thread (cnb__rt_deliver): as the two above, but when p is an
 * inline worker that was idle (and no inline worker runs already on this
 * thread), p is claimed as a pool thread would take it from the run queue
 * and 1 returned: the caller then runs it with cnb__mbox_run_inline once it
 * holds no lock. Else 0. */
int cnb__mbox_push_io(cnb_proc_t *p, sig_t *s, int prio);
/* The I/O thread runs p, claimed by cnb__mbox_push_io: up to a batch of its
 * signals, then into the run queue if more wait (or p ends). */
void cnb__mbox_run_inline(cnb_proc_t *p);
void cnb__mbox_go_live(cnb_proc_t *p);
sig_t *cnb__mbox_take_all(cnb_proc_t *p);
int cnb__pool_start(cnb_rt_t *rt); /* 0, or CNB_ESYS when no thread started */
void cnb__pool_stop(cnb_rt_t *rt); /* joins the threads */

/* rt_life.c: a spawn that a process of another node asked for (a
 * SPAWN_REQUEST, worker_types.c): the link and the monitor (ref: the request
 * id) its options make on the new worker before it goes live, over the
 * connection the request came on (node, one reference the request holds, at
 * epoch), and the spawn reply sent then. */
typedef struct cnb_spawn_req {
    erlang_pid from;
    erlang_ref id;
    int link, monitor;
    cnb_lname_t *node;
    uint32_t epoch;
} cnb_spawn_req_t;

/* cnb_spawn, and for a remote spawn (rq not NULL) its records and reply; a
 * failed init's reason into *why (a term with version byte; the caller frees
 * it; left empty when there is no memory for it). Returns as cnb_spawn, and
 * CNB_ENOCONN when rq's connection went down during init (no reply sent; a
 * linked worker has ended with noconnection). */
int cnb__spawn(cnb_node_t *n, const cnb_worker_ops_t *ops, void *arg, const cnb_spawn_opts_t *o,
               const cnb_spawn_req_t *rq, erlang_pid *out, ei_x_buff *why);

/* worker_types.c: the registered types and the remote spawns in flight;
 * destroy waits for those to end. */
struct cnb_types;
int cnb__types_create(struct cnb_types **out);
void cnb__types_destroy(struct cnb_types *t);

/* rt_life.c, the worker's thread: what s does to p; p's end (terminate,
 * out of the table, queued signals answered, links and monitors fired,
 * freed). */
void cnb__proc_handle(cnb_proc_t *p, sig_t *s);
void cnb__proc_finish(cnb_proc_t *p);
/* rt_life.c: the reason p will end with (a term with version byte; body:
 * without it), whether a term is a given atom, a callback's result (a failed
 * or stopping callback marks p dead; failed: {callback_failed, Cb, Reason},
 * Reason the code's atom or {unknown_error, Code}),
 * and handle_info. Out of memory, the reason is lost and p ends with
 * out_of_memory (logged). */
void cnb__rt_set_reason(cnb_proc_t *p, const char *t, size_t len);
void cnb__rt_set_reason_body(cnb_proc_t *p, const char *body, size_t len);
void cnb__rt_set_reason_atom(cnb_proc_t *p, const char *atom);
int cnb__rt_is_atom(const char *t, size_t len, const char *atom);
void cnb__rt_callback_failed(cnb_proc_t *p, const char *cb, int code);
void cnb__rt_after_callback(cnb_proc_t *p, const char *cb, int rc);
void cnb__rt_info(cnb_proc_t *p, const char *t, size_t len);
/* rt_signals.c: 1 when peer (or this node) has the distribution flag. */
int cnb__rt_peer_has(cnb_node_t *n, const char *peer, uint64_t flag);

/* rt_gen.c, the worker's thread: a message (with version byte) taken as a
 * gen_server call or cast, a sys message, or else handed to handle_info. */
void cnb__gen_msg(cnb_proc_t *p, const char *b, size_t len);
/* rt_gen.c: 1 when a message (with version byte) is {'$gen_call', _, _}
 * (a look at its first bytes only: a reply is likely to follow). */
int cnb__gen_is_call(const char *b, size_t len);

/* links.c, I/O thread: 1 when m is a link, monitor or exit signal naming a
 * sender that is not on the peer it came from (dropped and logged now and
 * then). */
int cnb__links_forged(cnb_node_t *n, const cnb_msg_t *m);
/* Fills s's meta from m (names interned) and, for a link or a monitor,
 * reserves its count on the sender's node, refusing it at the per-peer cap.
 * Returns 0, or nonzero when s must be dropped (a refusal already sent). */
int cnb__links_meta(cnb_node_t *n, cnb_proc_t *p, sig_t *s, const cnb_msg_t *m);

/* rt_worker_ops.c, the worker's thread: carries out a SIG_WORKER_OP. */
void cnb__worker_op_sig(cnb_proc_t *p, const sig_t *s);
/* links.c, the worker's thread: cnb_monitor with the reference given. */
int cnb__links_monitor_ref(cnb_proc_t *p, const erlang_pid *to, const erlang_ref *ref);
/* links.c, the worker's thread: what a link, monitor, exit or node-down
 * signal does to p. */
void cnb__links_sig(cnb_proc_t *p, sig_t *s);
/* A link to pid made from C before p goes live. 0 or CNB_ENOMEM. */
int cnb__links_add(cnb_proc_t *p, const erlang_pid *pid);
/* p ended with reason: s, still queued, gets its answer (a LINK an exit, a
 * MONITOR a DOWN, an UNLINK_ID its ack) if its connection is still there. */
void cnb__links_unanswered(cnb_proc_t *p, const sig_t *s, const char *reason, size_t rlen);
/* p ended with reason: its links and the monitors on it fire, the monitors it
 * holds are cancelled (each only over the connection it was made over), and
 * every record is freed. */
void cnb__links_end(cnb_proc_t *p, const char *reason, size_t rlen);
/* p's init failed (reason set): its links get the reason, nothing else is
 * told; every record is freed. */
void cnb__links_abort(cnb_proc_t *p);

#endif /* CNB_RUNTIME_INT_H */
