/* registry_worker.c: the `cnode_registry' worker of a C node (protocol in
 * registry_worker.h): owns the node's registry segment (a sealed memfd named
 * by a link in /dev/shm, see core/registry.c), keeps the attached BEAM nodes
 * and the remote owners it monitors, and purges the entries of BEAM nodes that
 * detach or die. Its requests are answered by registry_serve.c.
 * Tests: tests/integration/nif_tests.erl. */
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "registry_worker_int.h"

#define SHM_DIR "/dev/shm"
#define SEG_PREFIX "cnb-"
#define SWEEP_AGE 10 /* seconds */

/* ---- the worker's state ------------------------------------------------------- */

static int mons_add(struct cnb__mons *m, const erlang_pid *pid, const erlang_ref *ref)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        struct cnb__mon *v = realloc(m->v, cap * sizeof *v);
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

static ssize_t mons_find_pid(const struct cnb__mons *m, const erlang_pid *pid)
{
    for (size_t i = 0; i < m->n; i++)
        if (pid_eq(&m->v[i].pid, pid))
            return (ssize_t)i;
    return -1;
}

static ssize_t mons_find_ref(const struct cnb__mons *m, const erlang_ref *ref)
{
    for (size_t i = 0; i < m->n; i++)
        if (ref_eq(&m->v[i].ref, ref))
            return (ssize_t)i;
    return -1;
}

static void mons_del(struct cnb__mons *m, size_t i)
{
    m->v[i] = m->v[--m->n];
}

/* The entries of pid's node (and creation) go, unless another proxy of that
 * node and creation is still attached. */
static void purge_node_of(cnb__rw_t *w, const erlang_pid *pid)
{
    for (size_t i = 0; i < w->attachers.n; i++) {
        const erlang_pid *o = &w->attachers.v[i].pid;
        if (o->creation == pid->creation && strcmp(o->node, pid->node) == 0)
            return;
    }
    ssize_t n = cnb_registry_remove_node(w->reg, pid->node, pid->creation);
    if (n < 0) /* a code, not a count (e.g. corrupt: the segment was written over) */
        cnb_node_log(w->node, CNB_LOG_WARNING,
                     "cnode_registry: %s detached, its entries not purged: %s", pid->node,
                     cnb_strerror((int)n));
    else
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

/* ---- attachers and remote owners ---------------------------------------------------- */

int cnb__rw_attach(cnb_proc_t *self, cnb__rw_t *w, const erlang_pid *pid)
{
    erlang_ref ref;
    int rc = cnb_monitor(self, pid, &ref);
    if (rc)
        return rc;
    if ((rc = mons_add(&w->attachers, pid, &ref))) {
        (void)cnb_demonitor(self, &ref);
        return rc;
    }
    cnb_node_log(w->node, CNB_LOG_INFO, "cnode_registry: %s attached", pid->node);
    return 0;
}

void cnb__rw_detach(cnb_proc_t *self, cnb__rw_t *w, const erlang_pid *pid)
{
    ssize_t j = mons_find_pid(&w->attachers, pid);
    if (j < 0)
        return;
    (void)cnb_demonitor(self, &w->attachers.v[j].ref);
    mons_del(&w->attachers, (size_t)j);
    purge_node_of(w, pid);
}

void cnb__rw_watch_owner(cnb_proc_t *self, cnb__rw_t *w, const erlang_pid *pid)
{
    if (cnb_node_is_local_pid(w->node, pid) || mons_find_pid(&w->owners, pid) >= 0)
        return;
    erlang_ref ref;
    if (cnb_monitor(self, pid, &ref) == 0 && mons_add(&w->owners, pid, &ref) != 0) {
        (void)cnb_demonitor(self, &ref);
        cnb_node_log(w->node, CNB_LOG_WARNING,
                     "cnode_registry: out of memory: %s's entries stay when it dies",
                     pid->node);
    }
}

/* ---- callbacks ---------------------------------------------------------------- */

/* {'DOWN', Ref, process, Pid, Reason}: an attached proxy or a remote owner. */
static int rw_info(cnb_proc_t *self, void *state, const char *msg, size_t len)
{
    (void)self;
    (void)len;
    cnb__rw_t *w = state;
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
    cnb__rw_t *w = state;
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
    cnb__rw_t *w = state;
    int bad = ei_x_encode_tuple_header(out, 4) < 0 || ei_x_encode_atom(out, "cnode_registry") < 0 ||
              ei_x_encode_binary(out, w->path, (long)strlen(w->path)) < 0 ||
              ei_x_encode_ulonglong(out, (unsigned long long)cnb_registry_count(w->reg)) < 0 ||
              ei_x_encode_ulong(out, (unsigned long)w->attachers.n) < 0;
    return bad ? CNB_ENOMEM : 0;
}

static int rw_init(cnb_proc_t *self, void *arg, void **state)
{
    (void)self;
    cnb__rw_t *w = arg;
    *w->inited = 1;
    w->inited = NULL;
    *state = w;
    return 0;
}

static const cnb_worker_ops_t rw_ops = {
    .init = rw_init,
    .handle_call = cnb__rw_call,
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
    cnb__rw_t *w = calloc(1, sizeof *w);
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
    cnb_registry_info_t info;
    cnb_registry_info(w->reg, &info);
    w->kind = info.kind;
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
