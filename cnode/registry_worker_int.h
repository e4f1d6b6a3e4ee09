/* registry_worker_int.h: what the files of the C node's cnode_registry worker
 * share: the worker's state (registry_worker.c), canonical bytes of terms
 * off the wire and the registry's results as ETF (registry_terms.c), and the
 * request handler (registry_serve.c). Tests: tests/integration/nif_tests.erl. */
#ifndef CNB_REGISTRY_WORKER_INT_H
#define CNB_REGISTRY_WORKER_INT_H

#include <stddef.h>

#include "../core/cnb_registry_ops.h"
#include "registry_worker.h"

/* ---- registry_terms.c ------------------------------------------------------- */

/* Canonical bytes of one term, inline when small. */
struct cnb__canon {
    unsigned char *p;
    size_t len;
    unsigned char inl[512];
};

/* Canonicalises the ETF term[0..len) into c (free with cnb__canon_free).
 * Returns 0 or a cnb_term_canonical error. */
int cnb__canon(const char *term, size_t len, struct cnb__canon *c);
void cnb__canon_free(struct cnb__canon *c);

/* Appenders to x of what a registry result holds (bytes copied out of the
 * segment: anyone's memory). Each returns 0, CNB_ENOMEM (ei could not grow
 * the buffer) or CNB_ECORRUPT (the bytes are no whole term core's reader
 * takes, or the pid's node is no atom's text; nothing goes to a peer that its
 * VM could not decode). On an error x holds part of the term: the caller
 * sets x->index back. */
/* Canonical bytes (with or without their 131) as a term. */
int cnb__put_canon(ei_x_buff *x, const unsigned char *p, size_t len);
int cnb__put_pid(ei_x_buff *x, const cnb_pid_t *p);
int cnb__put_owner(ei_x_buff *x, const cnb_registry_owner_t *o);
/* The list of res->items[0..n) in reverse, each shaped as enum cnb_regop_shape
 * says. */
int cnb__put_items(ei_x_buff *x, const cnb_registry_result_t *res, int shape);
/* Each returns 0 or -1 (ei could not grow the buffer). */
/* {error, Reason} and {error, {cnode_registry, Reason}}, Reason an atom. */
int cnb__put_error(ei_x_buff *x, const char *why);
int cnb__put_raise(ei_x_buff *x, const char *why);

/* ---- registry_worker.c --------------------------------------------------------- */

struct cnb__mon {
    erlang_pid pid;
    erlang_ref ref;
};

struct cnb__mons {
    struct cnb__mon *v;
    size_t n, cap;
};

typedef struct cnb__rw {
    cnb_node_t *node;
    struct cnb_registry *reg;
    int kind;
    int owns_handle;
    int created; /* we created the segment: unlink it on a clean stop */
    int *inited; /* set by init (then cleared): tells the starter who cleans up */
    char path[512];
    char host[256];
    struct cnb__mons attachers; /* proxies of attached BEAM nodes */
    struct cnb__mons owners;    /* owners on other nodes registered through us */
} cnb__rw_t;

/* Starts monitoring pid (an attacher's proxy) and remembers it. Returns 0 or
 * a negative code. */
int cnb__rw_attach(cnb_proc_t *self, cnb__rw_t *w, const erlang_pid *pid);
/* Forgets the attacher pid (and purges its node's entries if it was the
 * node's last). */
void cnb__rw_detach(cnb_proc_t *self, cnb__rw_t *w, const erlang_pid *pid);
/* Monitors an owner on another node the first time it registers through us. */
void cnb__rw_watch_owner(cnb_proc_t *self, cnb__rw_t *w, const erlang_pid *pid);

/* ---- registry_serve.c ---------------------------------------------------------- */

/* The worker's handle_call: one request of registry_worker.h's protocol. */
int cnb__rw_call(cnb_proc_t *self, void *state, const char *req, size_t len,
                 const cnb_from_t *from, ei_x_buff *reply);

#endif /* CNB_REGISTRY_WORKER_INT_H */
