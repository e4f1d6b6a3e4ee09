/* worker_types.c: worker types, the C workers BEAM code starts with Erlang's
 * own remote spawn (erlang:spawn_request/5, Node.spawn_link/4,
 * cnode_bridge:start_link/3): the table of registered types
 * (cnb_register_type) and each SPAWN_REQUEST for Type:start/N, whose init
 * runs on a thread of its own (init may block, e.g. on a :global
 * registration, which needs the I/O thread) and whose reply rt_life.c's
 * cnb__spawn sends before the worker goes live. Anything not a registered
 * type stays spawn.c's (notsup). The protocol facts (SPAWN_REQUEST's OptList,
 * SPAWN_REPLY's flags 1 = link, 2 = monitor, its result a pid or an error
 * atom) are ERTS's "Distribution Protocol" chapter's.
 * Tests: tests/integration/supervision_tests.erl, tests/integration/exunit/. */
#include "runtime_int.h"

#include <stdlib.h>
#include <string.h>

/* Spawns whose init runs at one time: past this, system_limit. */
#define MAX_IN_FLIGHT 64

typedef struct wtype {
    struct wtype *next;
    const cnb_worker_ops_t *ops;
    char name[MAXATOMLEN_UTF8];
} wtype_t;

struct cnb_types {
    pthread_mutex_t mu;
    pthread_cond_t idle; /* signalled when in_flight drops to 0 */
    wtype_t *head;
    unsigned in_flight;
};

/* One spawn in flight: what its thread needs, owned by that thread. */
typedef struct job {
    cnb_node_t *node;
    const wtype_t *type;
    cnb_spawn_req_t rq;
    int want_reason;  /* option cnb_error_reason: the reason goes to the requester */
    int argc;
    size_t args_len;
    char args[];      /* the argument list, with version byte */
} job_t;

int cnb__types_create(struct cnb_types **out)
{
    struct cnb_types *t = calloc(1, sizeof(*t));
    if (!t)
        return CNB_ENOMEM;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->idle, NULL);
    *out = t;
    return 0;
}

void cnb__types_destroy(struct cnb_types *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    while (t->in_flight)
        pthread_cond_wait(&t->idle, &t->mu);
    pthread_mutex_unlock(&t->mu);
    for (wtype_t *w = t->head, *nx; w; w = nx) {
        nx = w->next;
        free(w);
    }
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->idle);
    free(t);
}

int cnb_register_type(cnb_node_t *n, const char *type, const cnb_worker_ops_t *ops)
{
    if (!n || !type || !ops || !type[0] || strlen(type) >= MAXATOMLEN_UTF8)
        return CNB_EINVAL;
    struct cnb_types *t = n->rt->types;
    wtype_t *w = calloc(1, sizeof(*w));
    if (!w)
        return CNB_ENOMEM;
    w->ops = ops;
    snprintf(w->name, sizeof(w->name), "%s", type);
    pthread_mutex_lock(&t->mu);
    for (const wtype_t *o = t->head; o; o = o->next)
        if (!strcmp(o->name, type)) {
            pthread_mutex_unlock(&t->mu);
            free(w);
            return CNB_EEXIST;
        }
    w->next = t->head;
    t->head = w;
    pthread_mutex_unlock(&t->mu);
    return 0;
}

/* Types are never removed while the node lives: the entry stays valid. */
static const wtype_t *find_type(struct cnb_types *t, const char *name)
{
    const wtype_t *w;
    pthread_mutex_lock(&t->mu);
    for (w = t->head; w && strcmp(w->name, name); w = w->next)
        ;
    pthread_mutex_unlock(&t->mu);
    return w;
}

/* ------------------------------------------------------------------ options */

/* Spawn options of ERTS that mean nothing for a C worker: accepted and
 * ignored, as the options of one runtime system may be (spawn_request/5). */
static const char *const ignored_opts[] = {
    "priority",    "fullsweep_after", "min_heap_size", "min_bin_vheap_size",
    "max_heap_size", "message_queue_data", "async_dist", "reply", "reply_tag",
};

static int ignored(const char *name)
{
    for (size_t k = 0; k < sizeof(ignored_opts) / sizeof(ignored_opts[0]); k++)
        if (!strcmp(ignored_opts[k], name))
            return 1;
    return 0;
}

/* Reads the OptList at ctrl[*i] into j: link, monitor (or {monitor, Opts}),
 * cnb_error_reason; ERTS's other options ignored. Returns 0, or -1 for
 * anything else (badopt). The control tuple was checked whole on arrival. */
static int read_opts(const char *ctrl, int *i, job_t *j)
{
    int len, type, size, arity;
    char a[MAXATOMLEN_UTF8];
    if (ei_decode_list_header(ctrl, i, &len))
        return -1;
    for (int k = 0; k < len; k++) {
        if (ei_get_type(ctrl, i, &type, &size))
            return -1;
        if (type == ERL_SMALL_TUPLE_EXT || type == ERL_LARGE_TUPLE_EXT) {
            /* {Name, Value}: {monitor, MonitorOpts} or one of ERTS's. */
            if (ei_decode_tuple_header(ctrl, i, &arity) || arity != 2 ||
                ei_decode_atom(ctrl, i, a) || ei_skip_term(ctrl, i))
                return -1;
            if (!strcmp(a, "monitor"))
                j->rq.monitor = 1;
            else if (!ignored(a))
                return -1;
            continue;
        }
        if (ei_decode_atom(ctrl, i, a))
            return -1;
        if (!strcmp(a, "link"))
            j->rq.link = 1;
        else if (!strcmp(a, "monitor"))
            j->rq.monitor = 1;
        else if (!strcmp(a, "cnb_error_reason"))
            j->want_reason = 1;
        else
            return -1;
    }
    return len == 0 || !ei_decode_list_header(ctrl, i, &len) ? 0 : -1; /* the tail: [] */
}

/* ------------------------------------------------------------------ the spawn */

/* {cnb_spawn_error, ReqId, Reason} to the requester (why: the reason with
 * version byte, or empty: init_failed). */
static void send_reason(cnb_node_t *n, const job_t *j, const ei_x_buff *why)
{
    ei_x_buff x;
    int e = ei_x_new_with_version(&x);
    e = e || ei_x_encode_tuple_header(&x, 3) || ei_x_encode_atom(&x, "cnb_spawn_error") ||
        ei_x_encode_ref(&x, &j->rq.id) ||
        (why->buff && why->index > 1 ? ei_x_append_buf(&x, why->buff + 1, why->index - 1)
                                     : ei_x_encode_atom(&x, "init_failed"));
    if (!e)
        cnb_send(n, NULL, &j->rq.from, x.buff, (size_t)x.index);
    ei_x_free(&x);
}

static void job_done(cnb_node_t *n, job_t *j)
{
    struct cnb_types *t = n->rt->types;
    cnb__ln_put(n->rt->ln, j->rq.node);
    free(j);
    pthread_mutex_lock(&t->mu);
    if (--t->in_flight == 0)
        pthread_cond_broadcast(&t->idle);
    pthread_mutex_unlock(&t->mu);
}

static void *spawn_thread(void *arg)
{
    job_t *j = arg;
    cnb_node_t *n = j->node;
    cnb_spawn_args_t sa = {j->args, j->args_len, j->argc, &j->rq.from};
    ei_x_buff why = {0};
    erlang_pid pid;
    int rc = cnb__spawn(n, j->type->ops, &sa, NULL, &j->rq, &pid, &why);
    if (rc && rc != CNB_ENOCONN) {
        /* The requester hears init's failure (its reason first when it asked
         * for it); a spawn that could not be made is system_limit. */
        int in_init = why.buff != NULL || (rc != CNB_ENOMEM && rc != CNB_ECLOSED);
        if (in_init && j->want_reason)
            send_reason(n, j, &why);
        cnb__log(n, in_init ? CNB_LOG_INFO : CNB_LOG_WARNING,
                 "spawn of a %s worker for %s failed: %s", j->type->name, j->rq.from.node,
                 cnb_strerror(rc));
        cnb__spawn_reply(n, j->rq.from.node, &j->rq.id, &j->rq.from, 0, NULL,
                         in_init ? "init_failed" : "system_limit");
    }
    ei_x_free(&why);
    job_done(n, j);
    return NULL;
}

/* The argument list (version byte first) into j->args as a proper list
 * (LIST_EXT or NIL), which init decodes with ei_decode_list_header: ERTS
 * sends a list of small integers as a string (STRING_EXT). Returns its length
 * or -1. The payload was checked whole on arrival. */
static int copy_args(job_t *j, const char *args, size_t len)
{
    int i = 0, ver, type, size, n;
    if (ei_decode_version(args, &i, &ver) || ei_get_type(args, &i, &type, &size))
        return -1;
    if (type != ERL_STRING_EXT) {
        if (ei_decode_list_header(args, &i, &n))
            return -1;
        memcpy(j->args, args, len);
        j->args_len = len;
        return n;
    }
    /* "abc" -> [97, 98, 99]: a tag and a 4-byte count, 2 bytes per integer
     * and the NIL: 1 + 5 + 2 * size + 1 bytes, 3 * size + 7 reserved. */
    char *s = malloc((size_t)size + 1);
    int k = 0;
    if (!s || ei_decode_string(args, &i, s)) {
        free(s);
        return -1;
    }
    ei_encode_version(j->args, &k);
    ei_encode_list_header(j->args, &k, size);
    for (int c = 0; c < size; c++)
        ei_encode_long(j->args, &k, (unsigned char)s[c]);
    ei_encode_empty_list(j->args, &k);
    free(s);
    j->args_len = (size_t)k;
    return size;
}

int cnb__types_spawn(cnb_node_t *n, const char *peer, const erlang_ref *req,
                     const erlang_pid *from, const char *type, const char *fun, long arity,
                     const char *ctrl, int opts_at, const char *args, size_t args_len)
{
    struct cnb_types *t = n->rt ? n->rt->types : NULL;
    const wtype_t *w = t ? find_type(t, type) : NULL;
    if (!w || strcmp(fun, "start"))
        return 0;
    const char *err = NULL;
    job_t *j = NULL;
    /* The requester must be a process of the node it came from: the link
     * and monitor belong to that connection. */
    if (strcmp(from->node, peer) || !args) {
        err = "badarg";
        goto reply;
    }
    if (!(j = calloc(1, sizeof(*j) + 3 * args_len + 8))) {
        err = "system_limit";
        goto reply;
    }
    if ((j->argc = copy_args(j, args, args_len)) != arity) {
        err = "badarg";
        goto reply;
    }
    int o = opts_at;
    if (read_opts(ctrl, &o, j)) {
        err = "badopt";
        goto reply;
    }
    j->node = n;
    j->type = w;
    j->rq.from = *from;
    j->rq.id = *req;
    if (!(j->rq.node = cnb__ln_get(n->rt->ln, peer))) {
        err = "system_limit";
        goto reply;
    }
    j->rq.epoch = cnb__ln_epoch(n->rt->ln, j->rq.node);
    pthread_mutex_lock(&t->mu);
    int room = t->in_flight < MAX_IN_FLIGHT;
    t->in_flight += room;
    pthread_mutex_unlock(&t->mu);
    pthread_t th;
    if (!room) {
        err = "system_limit";
    } else if (cnb__thread_create(&th, spawn_thread, j)) {
        err = "system_limit";
        pthread_mutex_lock(&t->mu);
        t->in_flight--;
        pthread_mutex_unlock(&t->mu);
    } else {
        pthread_detach(th);
        return 1;
    }
reply:
    if (j) {
        cnb__ln_put(n->rt->ln, j->rq.node);
        free(j);
    }
    cnb__log(n, CNB_LOG_INFO, "refused a spawn of a %s worker from %s: %s", type, peer, err);
    cnb__spawn_reply(n, peer, req, from, 0, NULL, err);
    return 1;
}
