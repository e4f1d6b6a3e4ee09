/* cnr.h: internals shared by the files of the cnode_registry NIF (nif/): the
 * private data (atoms, resource type, the table of registries by name), the
 * registry resource, term conversions. Tests: tests/integration/nif_tests.erl,
 * tests/integration/exunit/registry_compat_test.exs. */
#ifndef CNR_H
#define CNR_H

#include <stddef.h>
#include <stdint.h>

#include <erl_nif.h>

#include "cnb_common.h"
#include "cnb_registry.h"

/* ---- atoms (made once at load; atoms are global, so the terms are kept in
 * static storage and shared by every loaded instance of the library) ------- */

#define CNR_ATOMS(X)                                                           \
    X(ok, "ok") X(error, "error") X(true_, "true") X(false_, "false")          \
    X(undefined, "undefined") X(unique, "unique") X(duplicate, "duplicate")    \
    X(already_registered, "already_registered") X(register_, "register")       \
    X(unregister, "unregister") X(update, "update") X(done, "done")            \
    X(kind, "kind") X(mode, "mode") X(cnode_registry, "cnode_registry")        \
    X(listeners, "listeners") X(server, "server") X(count, "count")            \
    X(private_, "private") X(shared, "shared") X(remote, "remote")             \
    X(path, "path") X(cnr_remote, "$cnr_remote") X(missed, "missed")           \
    X(value_omitted, "value_omitted") X(key_omitted, "key_omitted")            \
    X(cnode, "cnode") X(owner_down, "$cnr_owner_down")

struct cnr_atoms {
#define CNR__ATOM_FIELD(a, text) ERL_NIF_TERM a;
    CNR_ATOMS(CNR__ATOM_FIELD)
#undef CNR__ATOM_FIELD
};

extern struct cnr_atoms cnr_atom;

/* The atoms of core's error codes (cnb_erratom), made at load from the same
 * list: cnr_err_atom[-code], [0] for a code not in the list. */
extern ERL_NIF_TERM cnr_err_atom[CNB_ERRNO_COUNT + 1];

/* ---- the registry resource ------------------------------------------------ */

enum cnr_mode {
    CNR_PRIVATE = 1, /* process-private segment, this VM only */
    CNR_SHARED = 2,  /* a C node's segment mapped on this host */
    CNR_REMOTE = 3   /* a C node on another host: ops go through messages */
};

#define CNR_MAX_LISTENERS 64

/* One owner process of this VM that the registry monitors (so its entries go
 * when it dies). Kept in an open-addressing set keyed by the pid term. */
struct cnr_owner {
    ERL_NIF_TERM pid; /* a local pid: an immediate, valid in any environment */
    ErlNifMonitor mon;
    uint64_t entries; /* registrations made here minus removals seen (about) */
    cnb_pid_t cpid;
};

/* A registry: a resource object. The name table holds one reference while the
 * name is registered; yielding scans hold one while they run. The core handle
 * is closed by the destructor, so it outlives every user. Its monitors (the
 * server, the owners) are set on its watch, a resource of their own: ERTS
 * keeps a resource with monitors (even demonitored ones) until each
 * monitored process has handled its signals, which a process busy in a loop
 * of new/drop never does, so each dropped registry's mapping (68 GiB of
 * address space) stayed until the address space ran out. The watch is what
 * such monitors now keep (a few bytes). */
struct cnr_reg {
    struct cnb_registry *core; /* NULL in CNR_REMOTE mode */
    ERL_NIF_TERM name;         /* atom */
    int kind;                  /* CNB_REG_UNIQUE / CNB_REG_DUPLICATE */
    int mode;                  /* enum cnr_mode */
    ERL_NIF_TERM cnode;        /* atom: the C node of an attached registry, else [] */
    ErlNifPid server;          /* the process that owns the registry */
    ErlNifMonitor server_mon;
    int server_monitored;
    unsigned nlisteners;
    ERL_NIF_TERM listeners[CNR_MAX_LISTENERS]; /* atoms */
    ErlNifMutex *owners_lock;
    struct cnr_watch *watch;  /* one reference; NULL only while reg_alloc fails */
    struct cnr_owner *owners; /* open addressing; pid 0 = empty */
    size_t owners_cap, owners_n;
};

/* What a registry's monitors are set on (a resource). Its down callback
 * reaches the registry under lock while the registry lives; the registry's
 * destructor clears reg (under lock) before it goes. */
struct cnr_watch {
    ErlNifMutex *lock;
    struct cnr_reg *reg;
};

/* A copied lookup result handed out in slices (lookup_open/lookup_next), for
 * keys with more entries than one call should turn into terms. */
struct cnr_snap {
    ErlNifMutex *lock;
    cnb_registry_result_t res;
    size_t left; /* items not handed out yet: res.items[0..left) */
};

struct cnr_slot {
    ERL_NIF_TERM name;
    struct cnr_reg *reg;
};

struct cnr_global {
    ErlNifResourceType *reg_rt;
    ErlNifResourceType *snap_rt;
    ErlNifResourceType *watch_rt;
    cnb_allocator_t alloc; /* built on enif_alloc */
    /* Writers of the name table (cnr_table.c, whose snapshots survive code
     * upgrade: they live in the library's static storage, which every module
     * instance shares while the library stays loaded). */
    ErlNifRWLock *table_lock;
    unsigned loads; /* module instances that loaded the library */
};

extern struct cnr_global cnr_g;

/* ---- cnr_table.c ------------------------------------------------------------ */

/* At load: readers use the cheaper barrier if the kernel allows (see
 * cnr_table.c); cnr_table_asym() says whether they do. */
void cnr_table_init(void);
int cnr_table_asym(void);
/* Adds name -> reg (keeping a reference on reg). Returns 0, CNB_EEXIST or
 * CNB_ENOMEM. */
int cnr_table_put(ERL_NIF_TERM name, struct cnr_reg *reg);
/* Readers stay inside enter/leave while they use a registry they found (short
 * calls), or take a reference (enif_keep_resource) before leaving (yielding
 * and dirty calls). enter returns the token leave takes. Never create or drop
 * a registry while inside. */
int cnr_table_enter(void);
void cnr_table_leave(int token);
/* The registry of name (inside enter/leave), or NULL. */
struct cnr_reg *cnr_table_find(ERL_NIF_TERM name);
/* The registry of name with a reference taken (the caller releases it with
 * enif_release_resource), or NULL; outside enter/leave. */
struct cnr_reg *cnr_table_hold(ERL_NIF_TERM name);
/* Removes name if it maps to reg (reg NULL: whatever it maps to). Returns the
 * registry removed, whose reference the table held is now the caller's (to
 * release, outside any lock the destructor takes), or NULL. */
struct cnr_reg *cnr_table_take(ERL_NIF_TERM name, struct cnr_reg *reg);
/* Removes every name (the last module instance is unloading). */
void cnr_table_clear(void);

/* ---- cnr_term.c: conversions ------------------------------------------------ */

/* Canonical bytes of a term, in a buffer that starts inline and grows with
 * enif_alloc. */
struct cnr_canon {
    unsigned char *p;
    size_t len;
    unsigned char inl[256];
};

/* Encodes t into c (free with cnr_canon_free). Returns 0 or a negative CNB_E*
 * code (CNB_EDEPTH, CNB_ETOOBIG, CNB_ENOMEM). */
int cnr_canon(ErlNifEnv *env, ERL_NIF_TERM t, struct cnr_canon *c);
void cnr_canon_free(struct cnr_canon *c);

/* Decodes canonical bytes into a term. Returns 1, or 0 if they are not a term. */
int cnr_decode(ErlNifEnv *env, const unsigned char *p, size_t len, ERL_NIF_TERM *out);

/* Any pid term -> cnb_pid_t (node, number, serial, creation). Returns 1 or 0. */
int cnr_pid_get(ErlNifEnv *env, ERL_NIF_TERM t, cnb_pid_t *out);
/* (node, number, serial, creation) -> pid term. Returns 1 or 0. */
int cnr_pid_make(ErlNifEnv *env, const char *node, uint32_t num, uint32_t serial,
                 uint32_t creation, ERL_NIF_TERM *out);
/* The same for a cnb_pid_t and for an owner in a registry result. */
#define CNR_PID_MAKE(env, p, out) \
    cnr_pid_make((env), (p)->node, (p)->num, (p)->serial, (p)->creation, (out))

/* ---- cnode_registry_nif.c: errors ------------------------------------------- */

/* The atom of a CNB_E* code (cnb_erratom's text). */
ERL_NIF_TERM cnr_code_atom(int code);
/* {error, Atom}: a write's runtime failure. */
ERL_NIF_TERM cnr_error(ErlNifEnv *env, int code);
/* Raises error({cnode_registry, Atom}): a read's runtime failure (a read's
 * result has no error case). */
ERL_NIF_TERM cnr_raise(ErlNifEnv *env, int code);

/* ---- cnr_reg.c: the resource's listeners and owners ----------------------------- */

/* Sends msg to every listener of reg. */
void cnr_notify(ErlNifEnv *env, const struct cnr_reg *reg, ERL_NIF_TERM msg);
/* Makes sure reg monitors owner pid (a local process that just registered),
 * so that its entries go when it dies; counts the registration. Returns 0,
 * CNB_ENOMEM or CNB_EINVAL. */
int cnr_owner_watch(ErlNifEnv *env, struct cnr_reg *reg, const ErlNifPid *pid,
                    const cnb_pid_t *cp);
/* Counts n entries of owner pid gone (unregister). */
void cnr_owner_forget(ErlNifEnv *env, struct cnr_reg *reg, const ErlNifPid *pid, uint64_t n);

/* ---- cnr_ops.c, cnr_scan.c: the NIF functions --------------------------------- */

/* A result buffer whose allocator refuses to grow past cap bytes and notes
 * the refusal in hit, so a caller tells it from a real shortage of memory.
 * Kept per scheduler thread (__thread), zeroed but for cap. */
struct cnr_capped {
    size_t cap;
    int hit, ready;
    cnb_allocator_t alloc;
    cnb_registry_result_t res;
};
/* c's buffer (made on first use), hit cleared. */
cnb_registry_result_t *cnr_capped_res(struct cnr_capped *c);


#define CNR_NIF(f) ERL_NIF_TERM f(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])

CNR_NIF(cnr_new);
CNR_NIF(cnr_attach);
CNR_NIF(cnr_add_remote);
CNR_NIF(cnr_drop);
CNR_NIF(cnr_info);
CNR_NIF(cnr_register);
CNR_NIF(cnr_unregister);
CNR_NIF(cnr_unregister_values);
CNR_NIF(cnr_notify_unregister);
CNR_NIF(cnr_lookup);
CNR_NIF(cnr_lookup_many);
CNR_NIF(cnr_values);
CNR_NIF(cnr_keys);
CNR_NIF(cnr_update_value);
CNR_NIF(cnr_count);
CNR_NIF(cnr_meta);
CNR_NIF(cnr_put_meta);
CNR_NIF(cnr_delete_meta);
CNR_NIF(cnr_remove_node);
CNR_NIF(cnr_canonical);
CNR_NIF(cnr_lookup_open);
CNR_NIF(cnr_lookup_next);
CNR_NIF(cnr_remove_owner);
CNR_NIF(cnr_scan);
CNR_NIF(cnr_feed_head);
CNR_NIF(cnr_feed_poll);

/* Resource callbacks (cnr_reg.c; the snapshot's in cnr_ops.c). */
void cnr_reg_dtor(ErlNifEnv *env, void *obj);
void cnr_watch_dtor(ErlNifEnv *env, void *obj);
void cnr_watch_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon);
void cnr_snap_dtor(ErlNifEnv *env, void *obj);


#endif /* CNR_H */
