/* runtime_int.h: internals shared by the files of the process runtime:
 * runtime.c (table, mailboxes, pool, gen_server/sys, termination) and
 * links.c (links, monitors and exit signals). Not part of the public API.
 * Tests: tests/integration/runtime_tests.erl, hostile_signals_tests.erl. */
#ifndef CNB_RUNTIME_INT_H
#define CNB_RUNTIME_INT_H

#include <pthread.h>
#include <stdint.h>

#include "node_rt.h"
#include "proc_links.h"

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
    SIG_SHUTDOWN
};

/* What a signal says besides its data; every name in it is interned (one
 * reference each, dropped by free_sig). */
typedef struct sig_meta {
    cnb_cpid_t from;
    cnb_cref_t ref;
    uint64_t id;
    cnb_lname_t *name;     /* MONITOR by name: our name it used; NODEDOWN: the node */
    int reserved;          /* LINK/MONITOR: holds a count on from's node until a record takes it */
    uint32_t epoch;        /* from's node epoch on arrival; NODEDOWN: the epoch that ended */
    int by_name;           /* MONITOR/DEMONITOR/DOWN by name */
} sig_meta_t;

typedef struct sig {
    struct sig *next;
    int kind;
    sig_meta_t *meta; /* NULL for plain messages */
    size_t len;
    char data[]; /* message or reason: ETF with version byte */
} sig_t;

struct cnb_proc {
    cnb_rt_t *rt;
    cnb_node_t *node;
    uint64_t key; /* pid counter: num | serial << 15 */
    erlang_pid pid;
    const cnb_worker_ops_t *ops;
    void *state;
    char *name; /* registered name (malloc'd), or NULL */
    int trap_exit;
    /* mailbox */
    pthread_mutex_t mu;
    sig_t *head, *tail;
    int scheduled;
    int dead;
    struct cnb_proc *rq_next;
    struct cnb_proc *hnext; /* pid table chain */
    struct cnb_proc *nnext; /* name table chain */
    /* owned by the running thread (pl.holds: under the names' lock) */
    cnb_plinks_t pl;
    ei_x_buff reason;
    int has_reason;
    uint64_t unlink_seq;
};

struct cnb_rt {
    cnb_node_t *node;
    pthread_rwlock_t tab_lock;
    cnb_proc_t **tab;
    size_t tab_size, count;
    cnb_proc_t **names;
    size_t names_size;
    pthread_mutex_t rq_mu;
    pthread_cond_t rq_cv;
    pthread_cond_t idle_cv; /* count reached 0 */
    cnb_proc_t *rq_head, *rq_tail;
    int stop;
    unsigned nthreads;
    pthread_t *threads;
    int started;
    cnb_lnames_t *ln;  /* names of link and monitor records; per-peer counts */
    size_t forged;     /* link/monitor signals whose sender is not the peer */
};

/* runtime.c: the reason a worker will end with (a term with version byte),
 * whether a term is a given atom, and handle_info (a failed or stopping
 * callback marks the worker dead). */
void cnb__rt_set_reason(cnb_proc_t *p, const char *t, size_t len);
void cnb__rt_set_reason_atom(cnb_proc_t *p, const char *atom);
int cnb__rt_is_atom(const char *t, size_t len, const char *atom);
void cnb__rt_info(cnb_proc_t *p, const char *t, size_t len);
/* 1 when peer (or this node) has the distribution flag. */
int cnb__rt_peer_has(cnb_node_t *n, const char *peer, uint64_t flag);

/* links.c, I/O thread: 1 when m is a link, monitor or exit signal naming a
 * sender that is not on the peer it came from (dropped and logged now and
 * then). */
int cnb__links_forged(cnb_node_t *n, const cnb_msg_t *m);
/* Answers a link or monitor from m that cannot be made: an exit or a DOWN
 * with reason why (noproc: no such process; system_limit: the peer's cap). */
void cnb__links_refuse(cnb_node_t *n, const cnb_msg_t *m, const char *why);
/* Fills s's meta from m (names interned) and, for a link or a monitor,
 * reserves its count on the sender's node, refusing it at the per-peer cap.
 * Returns 0, or nonzero when s must be dropped (a refusal already sent). */
int cnb__links_meta(cnb_node_t *n, cnb_proc_t *p, sig_t *s, const cnb_msg_t *m);

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
