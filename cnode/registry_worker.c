/* registry_worker.c: the `cnode_registry' worker of a C node (protocol in
 * registry_worker.h): owns the node's registry segment (a sealed memfd named
 * by a link in /dev/shm, see core/registry.c), tells attaching BEAM nodes
 * where it is, serves the registry operations to attachers on other
 * hosts, and purges the entries of BEAM nodes that detach or die.
 * Tests: tests/integration/nif_tests.erl. */
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnb_term.h"
#include "registry_worker.h"

#define SHM_DIR "/dev/shm"
#define SEG_PREFIX "cnb-"
#define SCAN_BUDGET 256
#define MAX_SCAN 10000
#define MAX_FEED 1024
#define SWEEP_AGE 10 /* seconds */

/* ---- conversions ------------------------------------------------------------ */

int cnb_registry_pid_from_ei(const erlang_pid *in, cnb_pid_t *out)
{
    size_t n = strnlen(in->node, sizeof in->node);
    if (n == 0 || n >= sizeof out->node)
        return CNB_EINVAL;
    memcpy(out->node, in->node, n + 1);
    out->num = in->num;
    out->serial = in->serial;
    out->creation = in->creation;
    return 0;
}

void cnb_registry_pid_to_ei(const cnb_pid_t *in, erlang_pid *out)
{
    memset(out, 0, sizeof *out);
    size_t n = strnlen(in->node, sizeof in->node - 1);
    memcpy(out->node, in->node, n);
    out->node[n] = 0;
    out->num = in->num;
    out->serial = in->serial;
    out->creation = in->creation;
}

/* Canonical bytes of one term, inline when small. */
struct canon {
    unsigned char *p;
    size_t len;
    unsigned char inl[512];
};

static int canon(const char *term, size_t len, struct canon *c)
{
    c->p = c->inl;
    ssize_t n = cnb_term_canonical(term, len, c->inl, sizeof c->inl, NULL);
    if (n == CNB_ENOSPC) {
        void *p;
        size_t l;
        int rc = cnb_term_canonical_alloc(term, len, &p, &l, NULL);
        if (rc)
            return rc;
        c->p = p;
        c->len = l;
        return 0;
    }
    if (n < 0)
        return (int)n;
    c->len = (size_t)n;
    return 0;
}

static void canon_free(struct canon *c)
{
    if (c->p != c->inl)
        free(c->p);
    c->p = c->inl;
}

int cnb_registry_register_term(struct cnb_registry *reg, const erlang_pid *owner,
                               const char *key, size_t key_len, const char *value,
                               size_t value_len)
{
    cnb_pid_t o;
    struct canon k, v;
    int rc = cnb_registry_pid_from_ei(owner, &o);
    if (rc)
        return rc;
    if ((rc = canon(key, key_len, &k)))
        return rc;
    if ((rc = canon(value, value_len, &v)) == 0) {
        rc = cnb_registry_register(reg, k.p, k.len, &o, v.p, v.len, NULL);
        canon_free(&v);
    }
    canon_free(&k);
    return rc;
}

ssize_t cnb_registry_unregister_term(struct cnb_registry *reg, const erlang_pid *owner,
                                     const char *key, size_t key_len)
{
    cnb_pid_t o;
    struct canon k;
    int rc = cnb_registry_pid_from_ei(owner, &o);
    if (rc)
        return rc;
    if ((rc = canon(key, key_len, &k)))
        return rc;
    ssize_t n = cnb_registry_unregister(reg, k.p, k.len, &o);
    canon_free(&k);
    return n;
}

/* Appends canonical bytes (with their 131) as a term without version byte. */
static void put_canon(ei_x_buff *x, const unsigned char *p, size_t len)
{
    if (len > 0 && p[0] == 131) {
        p++;
        len--;
    }
    ei_x_append_buf(x, (const char *)p, (int)len);
}

static void put_pid(ei_x_buff *x, const cnb_pid_t *p)
{
    erlang_pid e;
    cnb_registry_pid_to_ei(p, &e);
    ei_x_encode_pid(x, &e);
}

static void put_owner(ei_x_buff *x, const cnb_registry_owner_t *o)
{
    cnb_pid_t p;
    cnb_registry_owner_pid(o, &p);
    put_pid(x, &p);
}

enum shape { PID_VALUE, VALUE, KEY, KEY_PID_VALUE };

/* [Item] for items[0..n) in reverse (core lists the newest entry of a key
 * first; Erlang sees registration order). */
static void put_items(ei_x_buff *x, const cnb_registry_result_t *res, enum shape s)
{
    if (res->n)
        ei_x_encode_list_header(x, (long)res->n);
    for (size_t i = res->n; i-- > 0;) {
        const cnb_registry_item_t *it = &res->items[i];
        switch (s) {
        case PID_VALUE:
            ei_x_encode_tuple_header(x, 2);
            put_owner(x, &it->owner);
            put_canon(x, it->value, it->value_len);
            break;
        case VALUE:
            put_canon(x, it->value, it->value_len);
            break;
        case KEY:
            put_canon(x, it->key, it->key_len);
            break;
        case KEY_PID_VALUE:
            ei_x_encode_tuple_header(x, 3);
            put_canon(x, it->key, it->key_len);
            put_owner(x, &it->owner);
            put_canon(x, it->value, it->value_len);
            break;
        }
    }
    ei_x_encode_empty_list(x);
}

int cnb_registry_encode_lookup(struct cnb_registry *reg, const char *key, size_t key_len,
                               ei_x_buff *out)
{
    struct canon k;
    cnb_registry_result_t res;
    int rc = canon(key, key_len, &k);
    if (rc)
        return rc;
    cnb_registry_result_init(&res, NULL);
    ssize_t n = cnb_registry_lookup(reg, k.p, k.len, &res);
    canon_free(&k);
    if (n == CNB_ETOOBIG)
        n = 0; /* longer than any key the registry holds */
    if (n >= 0)
        put_items(out, &res, PID_VALUE);
    cnb_registry_result_free(&res);
    return n < 0 ? (int)n : 0;
}

/* ---- the worker's state ------------------------------------------------------- */

struct mon {
    erlang_pid pid;
    erlang_ref ref;
};

struct mons {
    struct mon *v;
    size_t n, cap;
};

typedef struct rw {
    cnb_node_t *node;
    struct cnb_registry *reg;
    int owns_handle;
    int created; /* we created the segment: unlink it on a clean stop */
    int *inited; /* set by init (then cleared): tells the starter who cleans up */
    char path[512];
    char host[256];
    struct mons attachers; /* proxies of attached BEAM nodes */
    struct mons owners;    /* owners on other nodes registered through us */
} rw_t;

static int mons_add(struct mons *m, const erlang_pid *pid, const erlang_ref *ref)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        struct mon *v = realloc(m->v, cap * sizeof *v);
        if (!v)
            return CNB_ENOMEM;
        m->v = v;
        m->cap = cap;
    }
    m->v[m->n].pid = *pid;
    m->v[m->n].ref = *ref;
    m->n++;
    return 0;
}

static int pid_eq(const erlang_pid *a, const erlang_pid *b)
{
    return a->num == b->num && a->serial == b->serial && a->creation == b->creation &&
           strcmp(a->node, b->node) == 0;
}

static int ref_eq(const erlang_ref *a, const erlang_ref *b)
{
    if (a->len != b->len || a->creation != b->creation || strcmp(a->node, b->node) != 0)
        return 0;
    for (int i = 0; i < a->len && i < 5; i++)
        if (a->n[i] != b->n[i])
            return 0;
    return 1;
}

static ssize_t mons_find_pid(const struct mons *m, const erlang_pid *pid)
{
    for (size_t i = 0; i < m->n; i++)
        if (pid_eq(&m->v[i].pid, pid))
            return (ssize_t)i;
    return -1;
}

static ssize_t mons_find_ref(const struct mons *m, const erlang_ref *ref)
{
    for (size_t i = 0; i < m->n; i++)
        if (ref_eq(&m->v[i].ref, ref))
            return (ssize_t)i;
    return -1;
}

static void mons_del(struct mons *m, size_t i)
{
    m->v[i] = m->v[--m->n];
}

/* The entries of pid's node (and creation) go, unless another proxy of that
 * node and creation is still attached. */
static void purge_node_of(rw_t *w, const erlang_pid *pid)
{
    for (size_t i = 0; i < w->attachers.n; i++) {
        const erlang_pid *o = &w->attachers.v[i].pid;
        if (o->creation == pid->creation && strcmp(o->node, pid->node) == 0)
            return;
    }
    ssize_t n = cnb_registry_remove_node(w->reg, pid->node, pid->creation);
    cnb_node_log(w->node, CNB_LOG_INFO, "cnode_registry: %s detached, %zd entries purged",
                 pid->node, n);
}

/* ---- segment files ------------------------------------------------------------ */

/* "cnb-<node>-" with characters other than [A-Za-z0-9._@-] as '_'. */
static void seg_prefix(const char *node, char *out, size_t cap)
{
    size_t o = 0;
    const char *pre = SEG_PREFIX;
    while (*pre && o + 1 < cap)
        out[o++] = *pre++;
    for (const char *s = node; *s && o + 2 < cap; s++) {
        char ch = *s;
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '.' || ch == '_' || ch == '@' || ch == '-';
        out[o++] = ok ? ch : '_';
    }
    out[o++] = '-';
    out[o] = 0;
}

/* Removes registry segment names (ours: /dev/shm/cnb-*) that lead nowhere any
 * more. A name is a link to its creator's fd (/proc/PID/fd/N, see
 * core/registry.c): when the creator (a C node killed with SIGKILL, say) is
 * gone, the link dangles and is removed. A name that still opens is left
 * alone unless only we attach to it. A live C node keeps its own segment open,
 * so it is never removed; a name changed in the last SWEEP_AGE seconds is left
 * alone too (its creator links it into place a moment before it records
 * itself as an attacher). */
static void sweep_old(cnb_node_t *node, const char *prefix, const char *mine)
{
    DIR *d = opendir(SHM_DIR);
    if (!d)
        return;
    struct dirent *e;
    size_t pl = strlen(prefix);
    while ((e = readdir(d)) != NULL) {
        char path[512];
        if (strncmp(e->d_name, prefix, pl) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", SHM_DIR, e->d_name);
        struct stat st, lst;
        time_t now = time(NULL);
        if (strcmp(path, mine) == 0 || lstat(path, &lst) != 0 ||
            now - lst.st_mtime < SWEEP_AGE || now - lst.st_ctime < SWEEP_AGE)
            continue;
        if (S_ISLNK(lst.st_mode) && lst.st_uid == geteuid() && stat(path, &st) != 0) {
            if (unlink(path) == 0)
                cnb_node_log(node, CNB_LOG_INFO, "cnode_registry: removed dangling name %s",
                             path);
            continue;
        }
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        cnb_registry_opts_t o;
        memset(&o, 0, sizeof o);
        o.path = path;
        struct cnb_registry *r;
        if (cnb_registry_open(&o, &r) != 0)
            continue;
        cnb_registry_info_t info;
        cnb_registry_info(r, &info);
        cnb_registry_close(r);
        if (info.attached <= 1 && cnb_registry_unlink(path) == 0)
            cnb_node_log(node, CNB_LOG_INFO, "cnode_registry: removed stale segment %s", path);
    }
    closedir(d);
}

/* ---- request helpers ---------------------------------------------------------- */

static void reply_error(ei_x_buff *x, const char *why)
{
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "error");
    ei_x_encode_atom(x, why);
}

static const char *code_atom(int code)
{
    switch (code) {
    case CNB_ENOMEM:
        return "enomem";
    case CNB_ETOOBIG:
        return "too_big";
    case CNB_ECORRUPT:
        return "corrupt";
    case CNB_EINVAL:
        return "einval";
    case CNB_ESYS:
        return "esys";
    default:
        return "failed";
    }
}

/* The term at req[*i]: canonicalised into c, *i moved past it. */
static int take_term(const char *req, int *i, struct canon *c)
{
    int s = *i;
    if (ei_skip_term(req, i) < 0)
        return CNB_EMALFORMED;
    return canon(req + s, (size_t)(*i - s), c);
}

static int take_pid(const char *req, int *i, erlang_pid *e, cnb_pid_t *p)
{
    if (ei_decode_pid(req, i, e) < 0)
        return CNB_EMALFORMED;
    return cnb_registry_pid_from_ei(e, p);
}

static int take_u64(const char *req, int *i, uint64_t *v)
{
    unsigned long long u;
    if (ei_decode_ulonglong(req, i, &u) < 0)
        return CNB_EMALFORMED;
    *v = (uint64_t)u;
    return 0;
}

/* Monitors an owner on another node the first time it registers through us. */
static void watch_owner(cnb_proc_t *self, rw_t *w, const erlang_pid *pid)
{
    if (cnb_node_is_local_pid(w->node, pid) || mons_find_pid(&w->owners, pid) >= 0)
        return;
    erlang_ref ref;
    if (cnb_monitor(self, pid, &ref) == 0)
        (void)mons_add(&w->owners, pid, &ref);
}

static void put_info(rw_t *w, ei_x_buff *x)
{
    cnb_registry_info_t info;
    cnb_registry_info(w->reg, &info);
    ei_x_encode_map_header(x, 6);
    ei_x_encode_atom(x, "path");
    ei_x_encode_binary(x, w->path, (long)strlen(w->path));
    ei_x_encode_atom(x, "kind");
    ei_x_encode_atom(x, info.kind == CNB_REG_DUPLICATE ? "duplicate" : "unique");
    ei_x_encode_atom(x, "host");
    ei_x_encode_binary(x, w->host, (long)strlen(w->host));
    ei_x_encode_atom(x, "node");
    ei_x_encode_atom(x, cnb_node_name(w->node));
    ei_x_encode_atom(x, "creation");
    ei_x_encode_ulong(x, cnb_node_creation(w->node));
    ei_x_encode_atom(x, "os_pid");
    ei_x_encode_long(x, (long)getpid());
}

struct values_ctx {
    struct canon *v;
    size_t n;
};

static int value_in(void *ctx, const void *value, size_t len)
{
    const struct values_ctx *c = ctx;
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i].len == len && memcmp(c->v[i].p, value, len) == 0)
            return 1;
    return 0;
}

/* {unregister_values, Key, Pid, Values}: i is just past the op atom. */
static int op_unregister_values(rw_t *w, const char *req, int *i, ei_x_buff *x)
{
    struct canon k;
    erlang_pid e;
    cnb_pid_t o;
    int arity, rc;
    struct values_ctx c = {NULL, 0};
    if ((rc = take_term(req, i, &k)))
        return rc;
    int type, size;
    if ((rc = take_pid(req, i, &e, &o)) || ei_get_type(req, i, &type, &size) < 0) {
        rc = rc ? rc : CNB_EMALFORMED;
        goto out;
    }
    if (type == ERL_STRING_EXT) {
        /* A list of small integers comes as a string: each is 131 97 N. */
        char *str = malloc((size_t)size + 1);
        if (!str || ei_decode_string(req, i, str) < 0 ||
            (size > 0 && !(c.v = calloc((size_t)size, sizeof *c.v)))) {
            free(str);
            rc = str ? CNB_EMALFORMED : CNB_ENOMEM;
            goto out;
        }
        for (int j = 0; j < size; j++, c.n++) {
            c.v[j].p = c.v[j].inl;
            c.v[j].inl[0] = 131;
            c.v[j].inl[1] = 97;
            c.v[j].inl[2] = (unsigned char)str[j];
            c.v[j].len = 3;
        }
        free(str);
        arity = size;
    } else {
        if (ei_decode_list_header(req, i, &arity) < 0) {
            rc = CNB_EMALFORMED;
            goto out;
        }
        if (arity > 0 && !(c.v = calloc((size_t)arity, sizeof *c.v))) {
            rc = CNB_ENOMEM;
            goto out;
        }
        for (int j = 0; j < arity; j++, c.n++)
            if ((rc = take_term(req, i, &c.v[j])))
                goto out;
    }
    ssize_t n = arity ? cnb_registry_unregister_match(w->reg, k.p, k.len, &o, value_in, &c) : 0;
    if (n < 0)
        reply_error(x, code_atom((int)n));
    else
        ei_x_encode_ulonglong(x, (unsigned long long)n);
out:
    for (size_t j = 0; j < c.n; j++)
        canon_free(&c.v[j]);
    free(c.v);
    canon_free(&k);
    return rc;
}

static int op_scan(rw_t *w, const char *req, int *i, ei_x_buff *x)
{
    uint64_t pos, max;
    if (take_u64(req, i, &pos) || take_u64(req, i, &max))
        return CNB_EMALFORMED;
    if (max == 0 || max > MAX_SCAN)
        max = MAX_SCAN;
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    cnb_registry_cursor_t cur = {pos, 0};
    int rc = 0;
    ei_x_buff items; /* the list's elements, batch after batch */
    ei_x_new(&items);
    size_t count = 0;
    while (!cur.done && count < max) {
        ssize_t n = cnb_registry_scan(w->reg, &cur, SCAN_BUDGET, NULL, NULL, &res);
        if (n < 0) {
            rc = (int)n;
            break;
        }
        for (size_t j = 0; j < res.n; j++) {
            const cnb_registry_item_t *it = &res.items[j];
            ei_x_encode_tuple_header(&items, 3);
            put_canon(&items, it->key, it->key_len);
            put_owner(&items, &it->owner);
            put_canon(&items, it->value, it->value_len);
        }
        count += res.n;
    }
    if (rc) {
        reply_error(x, code_atom(rc));
    } else {
        ei_x_encode_tuple_header(x, 2);
        if (count)
            ei_x_encode_list_header(x, (long)count);
        ei_x_append_buf(x, items.buff, items.index);
        ei_x_encode_empty_list(x);
        if (cur.done)
            ei_x_encode_atom(x, "done");
        else
            ei_x_encode_ulonglong(x, (unsigned long long)cur.pos);
    }
    ei_x_free(&items);
    cnb_registry_result_free(&res);
    return 0;
}

static int op_feed_poll(rw_t *w, const char *req, int *i, ei_x_buff *x)
{
    uint64_t pos, max, missed = 0;
    if (take_u64(req, i, &pos) || take_u64(req, i, &max))
        return CNB_EMALFORMED;
    if (max == 0 || max > MAX_FEED)
        max = MAX_FEED;
    cnb_registry_result_t res, vres;
    cnb_registry_result_init(&res, NULL);
    cnb_registry_result_init(&vres, NULL);
    ssize_t n = cnb_registry_feed_poll(w->reg, &pos, (size_t)max, &res, &missed);
    if (n < 0) {
        reply_error(x, code_atom((int)n));
        goto out;
    }
    ei_x_buff evs;
    ei_x_new(&evs);
    long count = 0;
    for (size_t j = 0; j < res.n; j++) {
        const cnb_registry_item_t *it = &res.items[j];
        if (!it->key) {
            missed++;
            continue;
        }
        if (it->event == CNB_REG_EV_UNREGISTER) {
            ei_x_encode_tuple_header(&evs, 3);
            ei_x_encode_atom(&evs, "unregister");
            put_canon(&evs, it->key, it->key_len);
            put_owner(&evs, &it->owner);
        } else {
            const unsigned char *vp = it->value;
            size_t vl = it->value_len;
            if (!vp) {
                cnb_pid_t owner;
                cnb_registry_owner_pid(&it->owner, &owner);
                if (cnb_registry_values(w->reg, it->key, it->key_len, &owner, &vres) <= 0)
                    continue;
                vp = vres.items[0].value;
                vl = vres.items[0].value_len;
            }
            ei_x_encode_tuple_header(&evs, 4);
            ei_x_encode_atom(&evs, it->event == CNB_REG_EV_REGISTER ? "register" : "update");
            put_canon(&evs, it->key, it->key_len);
            put_owner(&evs, &it->owner);
            put_canon(&evs, vp, vl);
        }
        count++;
    }
    ei_x_encode_tuple_header(x, 3);
    if (count)
        ei_x_encode_list_header(x, count);
    ei_x_append_buf(x, evs.buff, evs.index);
    ei_x_encode_empty_list(x);
    ei_x_encode_ulonglong(x, (unsigned long long)pos);
    ei_x_encode_ulonglong(x, (unsigned long long)missed);
    ei_x_free(&evs);
out:
    cnb_registry_result_free(&res);
    cnb_registry_result_free(&vres);
    return 0;
}

/* Dispatches one request; encodes the reply into x. Returns 0, or
 * CNB_EMALFORMED (and the like) for a request that does not parse: the caller
 * then replies {error, badarg}. */
static int handle(cnb_proc_t *self, rw_t *w, const char *req, ei_x_buff *x)
{
    int i = 0, ver, arity = 0, type, size, rc = 0;
    char op[MAXATOMLEN_UTF8];
    struct canon k = {0}, v = {0};
    k.p = k.inl;
    v.p = v.inl;
    erlang_pid e;
    cnb_pid_t o;
    cnb_registry_result_t res;
    cnb_registry_result_init(&res, NULL);
    ssize_t n;
    if (ei_decode_version(req, &i, &ver) < 0 || ei_get_type(req, &i, &type, &size) < 0)
        return CNB_EMALFORMED;
    if (type == ERL_SMALL_TUPLE_EXT || type == ERL_LARGE_TUPLE_EXT) {
        if (ei_decode_tuple_header(req, &i, &arity) < 0 || arity < 1)
            return CNB_EMALFORMED;
    }
    if (ei_decode_atom(req, &i, op) < 0)
        return CNB_EMALFORMED;

    if (arity == 0 && !strcmp(op, "info")) {
        ei_x_encode_tuple_header(x, 2);
        ei_x_encode_atom(x, "ok");
        put_info(w, x);
    } else if (arity == 0 && !strcmp(op, "count")) {
        ei_x_encode_ulonglong(x, (unsigned long long)cnb_registry_count(w->reg));
    } else if (arity == 0 && !strcmp(op, "feed_head")) {
        ei_x_encode_ulonglong(x, (unsigned long long)cnb_registry_feed_head(w->reg));
    } else if (arity == 2 && !strcmp(op, "attach")) {
        erlang_ref ref;
        if (ei_decode_pid(req, &i, &e) < 0)
            return CNB_EMALFORMED;
        if ((rc = cnb_monitor(self, &e, &ref)) || (rc = mons_add(&w->attachers, &e, &ref))) {
            reply_error(x, code_atom(rc));
            return 0;
        }
        cnb_node_log(w->node, CNB_LOG_INFO, "cnode_registry: %s attached", e.node);
        ei_x_encode_tuple_header(x, 2);
        ei_x_encode_atom(x, "ok");
        put_info(w, x);
    } else if (arity == 2 && !strcmp(op, "detach")) {
        if (ei_decode_pid(req, &i, &e) < 0)
            return CNB_EMALFORMED;
        ssize_t j = mons_find_pid(&w->attachers, &e);
        if (j >= 0) {
            (void)cnb_demonitor(self, &w->attachers.v[j].ref);
            mons_del(&w->attachers, (size_t)j);
            purge_node_of(w, &e);
        }
        ei_x_encode_atom(x, "ok");
    } else if (arity == 4 && !strcmp(op, "register")) {
        cnb_pid_t cur;
        if ((rc = take_term(req, &i, &k)) || (rc = take_pid(req, &i, &e, &o)) ||
            (rc = take_term(req, &i, &v)))
            goto out;
        int r = cnb_registry_register(w->reg, k.p, k.len, &o, v.p, v.len, &cur);
        if (r == CNB_EEXIST) {
            ei_x_encode_tuple_header(x, 2);
            ei_x_encode_atom(x, "error");
            ei_x_encode_tuple_header(x, 2);
            ei_x_encode_atom(x, "already_registered");
            put_pid(x, &cur);
        } else if (r) {
            reply_error(x, code_atom(r));
        } else {
            watch_owner(self, w, &e);
            ei_x_encode_tuple_header(x, 2);
            ei_x_encode_atom(x, "ok");
            ei_x_encode_pid(x, cnb_self(self));
        }
    } else if (arity == 3 && !strcmp(op, "unregister")) {
        if ((rc = take_term(req, &i, &k)) || (rc = take_pid(req, &i, &e, &o)))
            goto out;
        n = cnb_registry_unregister(w->reg, k.p, k.len, &o);
        if (n < 0 && n != CNB_ETOOBIG)
            reply_error(x, code_atom((int)n));
        else
            ei_x_encode_atom(x, "ok");
    } else if (arity == 4 && !strcmp(op, "unregister_values")) {
        rc = op_unregister_values(w, req, &i, x);
    } else if (arity == 2 && !strcmp(op, "lookup")) {
        if ((rc = take_term(req, &i, &k)))
            goto out;
        n = cnb_registry_lookup(w->reg, k.p, k.len, &res);
        if (n < 0 && n != CNB_ETOOBIG)
            reply_error(x, code_atom((int)n));
        else
            put_items(x, &res, PID_VALUE);
    } else if (arity == 3 && !strcmp(op, "values")) {
        if ((rc = take_term(req, &i, &k)) || (rc = take_pid(req, &i, &e, &o)))
            goto out;
        n = cnb_registry_values(w->reg, k.p, k.len, &o, &res);
        if (n < 0 && n != CNB_ETOOBIG)
            reply_error(x, code_atom((int)n));
        else
            put_items(x, &res, VALUE);
    } else if (arity == 2 && !strcmp(op, "keys")) {
        if ((rc = take_pid(req, &i, &e, &o)))
            goto out;
        n = cnb_registry_keys(w->reg, &o, &res);
        if (n < 0)
            reply_error(x, code_atom((int)n));
        else
            put_items(x, &res, KEY);
    } else if (arity == 4 && !strcmp(op, "update_value")) {
        if ((rc = take_term(req, &i, &k)) || (rc = take_pid(req, &i, &e, &o)) ||
            (rc = take_term(req, &i, &v)))
            goto out;
        n = cnb_registry_update_value(w->reg, k.p, k.len, &o, v.p, v.len);
        if (n == CNB_ENOENT)
            ei_x_encode_atom(x, "error");
        else if (n < 0)
            reply_error(x, code_atom((int)n));
        else
            ei_x_encode_atom(x, "ok");
    } else if (arity == 3 && !strcmp(op, "scan")) {
        rc = op_scan(w, req, &i, x);
    } else if (arity == 2 && !strcmp(op, "meta")) {
        if ((rc = take_term(req, &i, &k)))
            goto out;
        n = cnb_registry_meta_get(w->reg, k.p, k.len, &res);
        if (n <= 0) {
            ei_x_encode_atom(x, "error");
        } else {
            ei_x_encode_tuple_header(x, 2);
            ei_x_encode_atom(x, "ok");
            put_canon(x, res.items[0].value, res.items[0].value_len);
        }
    } else if (arity == 3 && !strcmp(op, "put_meta")) {
        if ((rc = take_term(req, &i, &k)) || (rc = take_term(req, &i, &v)))
            goto out;
        int r = cnb_registry_meta_put(w->reg, k.p, k.len, v.p, v.len);
        if (r)
            reply_error(x, code_atom(r));
        else
            ei_x_encode_atom(x, "ok");
    } else if (arity == 2 && !strcmp(op, "delete_meta")) {
        if ((rc = take_term(req, &i, &k)))
            goto out;
        (void)cnb_registry_meta_delete(w->reg, k.p, k.len);
        ei_x_encode_atom(x, "ok");
    } else if (arity == 3 && !strcmp(op, "feed_poll")) {
        rc = op_feed_poll(w, req, &i, x);
    } else {
        rc = CNB_EINVAL;
    }
out:
    canon_free(&k);
    canon_free(&v);
    cnb_registry_result_free(&res);
    return rc;
}

/* ---- callbacks ---------------------------------------------------------------- */

static int rw_call(cnb_proc_t *self, void *state, const char *req, size_t len,
                   const cnb_from_t *from, ei_x_buff *reply)
{
    (void)len;
    (void)from;
    rw_t *w = state;
    ei_x_buff x;
    ei_x_new(&x);
    int rc = handle(self, w, req, &x);
    if (rc) {
        reply_error(reply, "badarg");
    } else {
        ei_x_append_buf(reply, x.buff, x.index);
    }
    ei_x_free(&x);
    return CNB_REPLY;
}

/* {'DOWN', Ref, process, Pid, Reason}: an attached proxy or a remote owner. */
static int rw_info(cnb_proc_t *self, void *state, const char *msg, size_t len)
{
    (void)self;
    (void)len;
    rw_t *w = state;
    int i = 0, ver, arity;
    char atom[MAXATOMLEN_UTF8];
    erlang_ref ref;
    if (ei_decode_version(msg, &i, &ver) < 0 || ei_decode_tuple_header(msg, &i, &arity) < 0 ||
        arity != 5 || ei_decode_atom(msg, &i, atom) < 0 || strcmp(atom, "DOWN") ||
        ei_decode_ref(msg, &i, &ref) < 0)
        return CNB_CONTINUE;
    ssize_t j = mons_find_ref(&w->attachers, &ref);
    if (j >= 0) {
        erlang_pid p = w->attachers.v[j].pid;
        mons_del(&w->attachers, (size_t)j);
        purge_node_of(w, &p);
        return CNB_CONTINUE;
    }
    if ((j = mons_find_ref(&w->owners, &ref)) >= 0) {
        cnb_pid_t o;
        if (cnb_registry_pid_from_ei(&w->owners.v[j].pid, &o) == 0)
            (void)cnb_registry_remove_owner(w->reg, &o);
        mons_del(&w->owners, (size_t)j);
    }
    return CNB_CONTINUE;
}

static void rw_terminate(cnb_proc_t *self, void *state, const char *reason, size_t len)
{
    (void)self;
    (void)reason;
    (void)len;
    rw_t *w = state;
    if (w->created && cnb_registry_unlink(w->path) == 0)
        cnb_node_log(w->node, CNB_LOG_INFO, "cnode_registry: removed %s", w->path);
    if (w->owns_handle)
        cnb_registry_close(w->reg);
    free(w->attachers.v);
    free(w->owners.v);
    free(w);
}

static int rw_status(cnb_proc_t *self, void *state, ei_x_buff *out)
{
    (void)self;
    rw_t *w = state;
    ei_x_encode_tuple_header(out, 4);
    ei_x_encode_atom(out, "cnode_registry");
    ei_x_encode_binary(out, w->path, (long)strlen(w->path));
    ei_x_encode_ulonglong(out, (unsigned long long)cnb_registry_count(w->reg));
    ei_x_encode_ulong(out, (unsigned long)w->attachers.n);
    return 0;
}

static int rw_init(cnb_proc_t *self, void *arg, void **state)
{
    (void)self;
    rw_t *w = arg;
    *w->inited = 1;
    w->inited = NULL;
    *state = w;
    return 0;
}

static const cnb_worker_ops_t rw_ops = {
    .init = rw_init,
    .handle_call = rw_call,
    .handle_info = rw_info,
    .terminate = rw_terminate,
    .format_status = rw_status,
};

int cnb_registry_worker_start(cnb_node_t *node, const char *segment_path,
                              struct cnb_registry **out)
{
    erlang_pid other;
    if (cnb_whereis(node, "cnode_registry", &other) == 0)
        return CNB_EEXIST;
    rw_t *w = calloc(1, sizeof *w);
    if (!w)
        return CNB_ENOMEM;
    w->node = node;
    if (gethostname(w->host, sizeof w->host - 1) != 0)
        strcpy(w->host, "localhost");
    char prefix[300];
    seg_prefix(cnb_node_name(node), prefix, sizeof prefix);
    cnb_registry_opts_t o;
    memset(&o, 0, sizeof o);
    char err[200] = "";
    o.errbuf = err;
    o.errbuf_len = sizeof err;
    o.owner_node = cnb_node_name(node);
    o.owner_creation = cnb_node_creation(node);
    if (segment_path) {
        snprintf(w->path, sizeof w->path, "%s", segment_path);
        o.flags = CNB_REG_CREATE;
    } else {
        snprintf(w->path, sizeof w->path, "%s/%s%08x", SHM_DIR, prefix,
                 (unsigned)cnb_node_creation(node));
        o.flags = CNB_REG_CREATE | CNB_REG_EXCL;
        sweep_old(node, SEG_PREFIX, w->path);
        w->created = 1;
    }
    o.path = w->path;
    o.kind = CNB_REG_UNIQUE;
    int rc = cnb_registry_open(&o, &w->reg);
    if (rc) {
        cnb_node_log(node, CNB_LOG_ERROR, "cnode_registry: cannot open %s: %s (%s)", w->path,
                     cnb_strerror(rc), err);
        free(w);
        return rc;
    }
    /* From a successful init on, the worker owns w: if cnb_spawn then fails
     * (another worker took the name meanwhile), terminate has already run. */
    w->owns_handle = out == NULL;
    struct cnb_registry *reg = w->reg;
    int created = w->created, inited = 0;
    char path[sizeof w->path];
    memcpy(path, w->path, sizeof path);
    w->inited = &inited;
    erlang_pid pid;
    cnb_spawn_opts_t so = {.name = "cnode_registry"};
    rc = cnb_spawn(node, &rw_ops, w, &so, &pid);
    if (rc) {
        if (!inited) {
            if (created)
                (void)cnb_registry_unlink(path);
            cnb_registry_close(reg);
            free(w);
        } else if (out) {
            cnb_registry_close(reg);
        }
        return rc;
    }
    cnb_node_log(node, CNB_LOG_INFO, "cnode_registry: serving %s", path);
    if (out)
        *out = reg;
    return 0;
}
