/* cnb_registry_ops.h: the registry's operations as BEAM code sees them, written
 * once for both of their servers: the cnode_registry NIF (a registry mapped in
 * the VM) and the C node's cnode_registry worker (the same operations asked by
 * message, cnode/registry_worker.h). One table names each operation, its
 * arguments and whether it is a read; cnb_regop_run checks the arguments, makes
 * the core call and says what the caller answers (an outcome), so a local and a
 * remote attacher get the same answer, error atoms included (cnb_erratom).
 * Each server keeps only its representation: it turns its input (NIF terms,
 * ETF off the wire) into arguments and the outcome into its output.
 * Implementation: core/registry_ops.c. Tests: tests/unit/test_registry_ops.c,
 * tests/integration/nif_tests.erl (remote_mode_same_errors). */
#ifndef CNB_REGISTRY_OPS_H
#define CNB_REGISTRY_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "cnb_registry.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The operations both servers run. */
enum cnb_regop {
    CNB_REGOP_REGISTER,          /* {register, Key, Owner, Value} */
    CNB_REGOP_UNREGISTER,        /* {unregister, Key, Owner} */
    CNB_REGOP_UNREGISTER_VALUES, /* {unregister_values, Key, Owner, [Value]} */
    CNB_REGOP_UPDATE_VALUE,      /* {update_value, Key, Owner, Value} */
    CNB_REGOP_LOOKUP,            /* {lookup, Key} */
    CNB_REGOP_VALUES,            /* {values, Key, Pid} */
    CNB_REGOP_KEYS,              /* {keys, Pid} */
    CNB_REGOP_COUNT,             /* count */
    CNB_REGOP_META,              /* {meta, MetaKey} */
    CNB_REGOP_PUT_META,          /* {put_meta, MetaKey, Value} */
    CNB_REGOP_DELETE_META,       /* {delete_meta, MetaKey} */
    CNB_REGOP_N
};

/* Argument letters of cnb_regop_desc_t.args, in request order:
 *   'K' a key: any term          'M' a meta key: an atom or a tuple
 *   'V' a value: any term        'L' a proper list of values
 *   'O' the owner: the calling process for the NIF, a pid in a request
 *   'P' a pid */
typedef struct cnb_regop_desc {
    const char *name; /* the request's atom and the NIF function's name */
    const char *args;
    int read;         /* a read: its failures raise error({cnode_registry, R})
                         (a read's result has no error case); a write's
                         return {error, R} */
} cnb_regop_desc_t;

extern const cnb_regop_desc_t cnb_regop_table[CNB_REGOP_N];

/* The operation named name with nargs arguments, or -1. */
int cnb_regop_find(const char *name, size_t nargs);

/* A term argument: canonical ETF (cnb_term_canonical), 131 included. */
typedef struct cnb_regop_term {
    const unsigned char *p;
    size_t len;
} cnb_regop_term_t;

/* The decoded arguments; only those the operation's letters name are read. */
typedef struct cnb_regop_args {
    cnb_regop_term_t key;          /* 'K', 'M' */
    cnb_regop_term_t value;        /* 'V' */
    cnb_pid_t pid;                 /* 'O', 'P' */
    const cnb_regop_term_t *values; /* 'L' */
    size_t nvalues;
} cnb_regop_args_t;

/* What the caller answers. */
enum cnb_regop_answer {
    CNB_ANS_OK,         /* ok */
    CNB_ANS_ERROR,      /* the atom error: no such entry (update_value, meta) */
    CNB_ANS_COUNT,      /* the integer out->count */
    CNB_ANS_ITEMS,      /* the list of res->items[0..n) in reverse (core lists
                           the newest entry first; BEAM sees registration
                           order), each shaped as out->shape says */
    CNB_ANS_META,       /* {ok, Value}, Value res->items[0].value */
    CNB_ANS_REGISTERED, /* {ok, Server}: the pid of the registry's server
                           (the NIF's owning process, the C node's worker) */
    CNB_ANS_TAKEN,      /* {error, {already_registered, out->holder}} */
    CNB_ANS_FAIL,       /* {error, cnb_erratom(out->code)} */
    CNB_ANS_RAISE,      /* raise error({cnode_registry, cnb_erratom(out->code)}) */
    CNB_ANS_BADARG      /* raise error(badarg) */
};

enum cnb_regop_shape {
    CNB_SHAPE_PID_VALUE, /* {Pid, Value} */
    CNB_SHAPE_VALUE,     /* Value */
    CNB_SHAPE_KEY        /* Key */
};

typedef struct cnb_regop_out {
    int answer;       /* enum cnb_regop_answer */
    int code;         /* CNB_ANS_FAIL, CNB_ANS_RAISE: the CNB_E* code */
    int shape;        /* CNB_ANS_ITEMS: enum cnb_regop_shape */
    uint64_t count;   /* CNB_ANS_COUNT; also how many entries a write removed */
    cnb_pid_t holder; /* CNB_ANS_TAKEN */
} cnb_regop_out_t;

/* What cnb_regop_run needs besides the arguments. */
typedef struct cnb_regop_ctx {
    struct cnb_registry *reg;
    int kind;                   /* the registry's CNB_REG_UNIQUE / DUPLICATE */
    cnb_registry_result_t *res; /* the reads' result buffer */
    /* register: whether holder, which holds the key the caller (me) asks for,
     * is a process known to be dead whose exit is still being processed; its
     * entry then gives way, as in Elixir's Registry. NULL: never. */
    int (*holder_dead)(void *hctx, const cnb_pid_t *holder, const cnb_pid_t *me);
    void *hctx;
} cnb_regop_ctx_t;

/* Runs operation op with arguments a. Returns the outcome in *out (res holds
 * the items of CNB_ANS_ITEMS and CNB_ANS_META until its next use). Never fails
 * itself: every failure is an outcome. */
void cnb_regop_run(const cnb_regop_ctx_t *c, int op, const cnb_regop_args_t *a,
                   cnb_regop_out_t *out);

/* The outcome of an argument the caller could not turn into canonical bytes
 * (rc: its cnb_term_canonical error): CNB_ENOMEM is a failure as the
 * operation's others are (answered or raised); a term over the limits of the
 * canonical form (nesting, size) or malformed is a bad argument. */
void cnb_regop_bad_term(int op, int rc, cnb_regop_out_t *out);

/* A change-feed event's value (cnb_registry_feed_poll): the value the event
 * carries, or when it did not fit the feed's slot the entry's current value
 * (read into vres). Returns 1 with *vp, *vl set; 0 when the event is to be
 * skipped (an omitted value whose entry is gone); -1 when it counts as missed
 * (its key did not fit either). */
int cnb_regop_feed_value(struct cnb_registry *reg, const cnb_registry_item_t *it,
                         cnb_registry_result_t *vres, const unsigned char **vp, size_t *vl);

#ifdef __cplusplus
}
#endif
#endif /* CNB_REGISTRY_OPS_H */
