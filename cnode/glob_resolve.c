/* glob_resolve.c: the names of a :global sync session in visible mode, as
 * OTP global's exchange_names/4 handles them. The peer's exchange brings
 * [{Name, Pid, Method}]: a name we lack goes into our table; a name we hold
 * with the same pid is left; a name we hold with another pid is a clash,
 * which the node whose name sorts lower resolves (global: `node() < Node`).
 * We present ourselves as a partition of our own (our exchange carries our
 * workers' names only, our Known is []), so we resolve only clashes with our
 * own workers' names; a clash with another node's pid that our table holds
 * is left to the Erlang nodes' sessions, which carry that name.
 *
 * Resolving runs the Method of our entry with (Name, HisPid, OurPid) as
 * global's resolve_it would on the node of our pid, i.e. here:
 * global's three built-ins (the export funs global:random_exit_name/3,
 * random_notify_name/3, notify_all_name/3, which is what {global, F} becomes
 * in global's table) are carried out here, with the exit signal or the
 * messages global sends; any other Method (a local or user fun) cannot run
 * in C, so rpc:call(Peer, global, resolve_it, [...]) asks the session's peer
 * (connected, and running global) to run it, from a resolver thread (as
 * global's resolver process, so the I/O thread never waits). The outcome, as
 * exchange_names: his pid wins -> he keeps it, we insert his; ours wins ->
 * {insert, {Name, OurPid, OurMethod}} in Res; none, or an answer that is no
 * pid -> delete here and in Res; {badrpc, _} (or no answer in RPC_MS) -> his.
 * Res goes to the peer in our {resolved, ...}. Tests:
 * tests/integration/visible_heal_tests.erl. */
#include "glob_resolve.h"

#include "log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define RPC_MS 10000 /* one user resolver run by the peer (global waits forever) */
#define MAX_THREADS 64 /* resolver threads at once; past it a clash keeps his pid */
#define TAG_MAX 64

struct cnb_gres {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int running;
};

enum { M_OTHER, M_EXIT, M_NOTIFY, M_NOTIFY_ALL };
enum { R_HIS, R_OURS, R_NONE, R_BADRPC };

typedef struct clash {
    char *name; /* ETF, no 131 */
    int nlen;
    erlang_pid his, ours;
    char *hmeth, *ometh; /* ETF, no 131 */
    int hmlen, omlen;
} clash_t;

typedef struct job {
    cnb_node_t *n;
    cnb_gres_t *g;
    cnb_gtab_t *t;
    erlang_pid locker;
    char peer[MAXATOMLEN_UTF8];
    char tag[TAG_MAX];
    int tlen;
    clash_t *c;
    int nc, cap;
} job_t;

cnb_gres_t *cnb__gres_create(void)
{
    cnb_gres_t *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    return g;
}

void cnb__gres_destroy(cnb_gres_t *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    while (g->running)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

static void job_free(job_t *j)
{
    for (int k = 0; k < j->nc; k++) {
        free(j->c[k].name);
        free(j->c[k].hmeth);
        free(j->c[k].ometh);
    }
    free(j->c);
    free(j);
}

/* Which of global's built-ins Method (ETF) is: only the export funs
 * global:F/3 count (a local fun's index means nothing to us). */
static int builtin(const char *m, int mlen)
{
    int i = 1;
    long ar;
    char mod[MAXATOMLEN_UTF8], fun[MAXATOMLEN_UTF8];
    if (mlen < 1 || (unsigned char)m[0] != ERL_EXPORT_EXT || ei_decode_atom(m, &i, mod) ||
        ei_decode_atom(m, &i, fun) || ei_decode_long(m, &i, &ar) || i != mlen || ar != 3 ||
        strcmp(mod, "global"))
        return M_OTHER;
    return !strcmp(fun, "random_exit_name")     ? M_EXIT
           : !strcmp(fun, "random_notify_name") ? M_NOTIFY
           : !strcmp(fun, "notify_all_name")    ? M_NOTIFY_ALL
                                                : M_OTHER;
}

/* to ! {global_name_conflict, Name} or, with other, {..., Name, Other}. */
static void notify(job_t *j, const clash_t *c, const erlang_pid *to, const erlang_pid *other)
{
    ei_x_buff x;
    if (!ei_x_new_with_version(&x) && !ei_x_encode_tuple_header(&x, other ? 3 : 2) &&
        !ei_x_encode_atom(&x, "global_name_conflict") &&
        !ei_x_append_buf(&x, c->name, c->nlen) && !(other && ei_x_encode_pid(&x, other)))
        (void)cnb_send(j->n, &j->locker, to, x.buff, (size_t)x.index);
    else
        cnb__log(j->n, CNB_LOG_ERROR, "out of memory: a global_name_conflict not sent");
    ei_x_free(&x);
}

/* global's minmax/2: the pid of the node whose name sorts lower is Min. */
static int his_is_min(const clash_t *c)
{
    return strcmp(c->his.node, c->ours.node) < 0;
}

/* Runs a built-in resolver here, as global's code does. */
static int run_builtin(job_t *j, const clash_t *c, int m)
{
    const erlang_pid *min = his_is_min(c) ? &c->his : &c->ours;
    const erlang_pid *max = his_is_min(c) ? &c->ours : &c->his;
    char text[CNB_NAME_TEXT];
    if (m == M_NOTIFY_ALL) {
        notify(j, c, &c->his, &c->ours);
        notify(j, c, &c->ours, &c->his);
        return R_NONE;
    }
    if (m == M_NOTIFY) {
        notify(j, c, max, NULL);
    } else {
        static const char kill[] = {(char)131, (char)ERL_SMALL_ATOM_UTF8_EXT, 4, 'k', 'i', 'l', 'l'};
        cnb__name_text(c->name, (size_t)c->nlen, text, sizeof text);
        cnb__log(j->n, CNB_LOG_INFO, "global: Name conflict terminating {%s, <%s.%u.%u>}", text,
                 max->node, max->num, max->serial);
        (void)cnb_exit(j->n, &j->locker, max, kill, sizeof kill);
    }
    return min == &c->his ? R_HIS : R_OURS;
}

/* global:resolve_it(OurMethod, Name, His, Ours) run by the peer (rpc). */
static int run_remote(job_t *j, const clash_t *c)
{
    ei_x_buff a, r;
    int out = R_BADRPC, rc = CNB_ENOMEM;
    memset(&r, 0, sizeof r);
    if (!ei_x_new_with_version(&a) && !ei_x_encode_list_header(&a, 4) &&
        !ei_x_append_buf(&a, c->ometh, c->omlen) && !ei_x_append_buf(&a, c->name, c->nlen) &&
        !ei_x_encode_pid(&a, &c->his) && !ei_x_encode_pid(&a, &c->ours) &&
        !ei_x_encode_empty_list(&a))
        rc = cnb_rpc(j->n, j->peer, "global", "resolve_it", a.buff, (size_t)a.index, RPC_MS, &r);
    ei_x_free(&a);
    char text[CNB_NAME_TEXT];
    cnb__name_text(c->name, (size_t)c->nlen, text, sizeof text);
    int i = 0, ver, type, size;
    erlang_pid p;
    if (rc || ei_decode_version(r.buff, &i, &ver) || ei_get_type(r.buff, &i, &type, &size)) {
        cnb__log(j->n, CNB_LOG_WARNING, "global: the resolver for the conflicting name %s did "
                 "not run on %s (%s): %s keeps it", text, j->peer, cnb_strerror(rc), j->peer);
    } else if (!ei_decode_pid(r.buff, &i, &p)) {
        out = cnb__pid_eq(&p, &c->his) ? R_HIS : cnb__pid_eq(&p, &c->ours) ? R_OURS : R_NONE;
    } else if (type == ERL_SMALL_TUPLE_EXT) {
        cnb__log(j->n, CNB_LOG_WARNING, "global: the resolver for the conflicting name %s "
                 "failed on %s (badrpc): %s keeps it", text, j->peer, j->peer);
    } else {
        out = R_NONE; /* none, or any other value: global deletes the name */
    }
    ei_x_free(&r);
    return out;
}

/* Res element for one clash; applies what is ours to apply. */
static int outcome(job_t *j, const clash_t *c, int res, ei_x_buff *x, int *nres)
{
    if (res == R_HIS || res == R_BADRPC) {
        (void)cnb__gt_name_put(j->n, j->t, c->name, (size_t)c->nlen, &c->his, c->hmeth, c->hmlen);
        return 0;
    }
    ++*nres;
    if (res == R_OURS)
        return ei_x_encode_list_header(x, 1) || ei_x_encode_tuple_header(x, 2) ||
               ei_x_encode_atom(x, "insert") || ei_x_encode_tuple_header(x, 3) ||
               ei_x_append_buf(x, c->name, c->nlen) || ei_x_encode_pid(x, &c->ours) ||
               ei_x_append_buf(x, c->ometh, c->omlen);
    (void)cnb__gt_name_del(j->n, j->t, c->name, (size_t)c->nlen);
    return ei_x_encode_list_header(x, 1) || ei_x_encode_tuple_header(x, 2) ||
           ei_x_encode_atom(x, "delete") || ei_x_append_buf(x, c->name, c->nlen);
}

/* Every clash resolved, then {resolved, node(), Res, [], unused, [], HisTag}. */
static void resolve_all(job_t *j)
{
    ei_x_buff x;
    int nres = 0;
    int bad = ei_x_new_with_version(&x) || ei_x_encode_tuple_header(&x, 2) ||
              ei_x_encode_atom(&x, "$gen_cast") || ei_x_encode_tuple_header(&x, 7) ||
              ei_x_encode_atom(&x, "resolved") || ei_x_encode_atom(&x, cnb_node_name(j->n));
    for (int k = 0; k < j->nc; k++) {
        const clash_t *c = &j->c[k];
        int m = builtin(c->ometh, c->omlen);
        int res = m != M_OTHER ? run_builtin(j, c, m) : run_remote(j, c);
        bad |= outcome(j, c, res, &x, &nres);
    }
    bad = bad || ei_x_encode_empty_list(&x) || ei_x_encode_empty_list(&x) ||
          ei_x_encode_atom(&x, "unused") || ei_x_encode_empty_list(&x) ||
          ei_x_append_buf(&x, j->tag, j->tlen);
    int rc = bad ? CNB_ENOMEM
                 : cnb_reg_send(j->n, &j->locker, j->peer, "global_name_server", x.buff,
                                (size_t)x.index);
    if (rc && rc != CNB_ECLOSED)
        cnb__log(j->n, CNB_LOG_WARNING, "global resolved to %s not sent: %s", j->peer,
                 cnb_strerror(rc));
    ei_x_free(&x);
}

static void *resolver(void *arg)
{
    job_t *j = arg;
    cnb_gres_t *g = j->g;
    resolve_all(j);
    job_free(j);
    pthread_mutex_lock(&g->mu);
    g->running--;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

static char *dup_bytes(const char *b, int len)
{
    char *p = malloc(len > 0 ? (size_t)len : 1);
    if (p)
        memcpy(p, b, (size_t)len);
    return p;
}

/* A clash to resolve: copies of what it needs. Takes ometh. */
static int add_clash(job_t *j, const char *b, int n0, int n1, const erlang_pid *his, int m0,
                     int m1, const erlang_pid *ours, char *ometh, int omlen)
{
    if (j->nc == j->cap) {
        int cap = j->cap ? j->cap * 2 : 8;
        clash_t *c = realloc(j->c, (size_t)cap * sizeof *c);
        if (!c)
            goto nomem;
        j->c = c;
        j->cap = cap;
    }
    clash_t *c = &j->c[j->nc];
    c->name = dup_bytes(b + n0, n1 - n0);
    c->hmeth = dup_bytes(b + m0, m1 - m0);
    if (!c->name || !c->hmeth) {
        free(c->name);
        free(c->hmeth);
        goto nomem;
    }
    c->nlen = n1 - n0;
    c->hmlen = m1 - m0;
    c->his = *his;
    c->ours = *ours;
    c->ometh = ometh;
    c->omlen = omlen;
    j->nc++;
    return 0;
nomem:
    free(ometh);
    return CNB_ENOMEM;
}

/* One {Name, Pid, Method} of his list at b[*i]. Returns nonzero when malformed. */
static int one_name(job_t *j, int resolve, const char *b, int *i)
{
    int n0, n1, m0;
    erlang_pid pid, ours;
    char *ometh = NULL;
    int omlen = 0;
    if (cnb__gt_triple(b, i, &n0, &n1, &pid, &m0))
        return -1;
    int rc = cnb__gt_name_get(j->t, b + n0, (size_t)(n1 - n0), &ours, &ometh, &omlen);
    if (rc == CNB_ENOENT) { /* a new name */
        (void)cnb__gt_name_put(j->n, j->t, b + n0, (size_t)(n1 - n0), &pid, b + m0, *i - m0);
        return 0;
    }
    if (rc || cnb__pid_eq(&ours, &pid) || !resolve || !cnb_node_is_local_pid(j->n, &ours)) {
        free(ometh); /* the same, or his to resolve, or not ours to resolve */
        return 0;
    }
    if (add_clash(j, b, n0, n1, &pid, m0, *i, &ours, ometh, omlen))
        cnb__log(j->n, CNB_LOG_ERROR, "out of memory: a global name conflict not resolved");
    return 0;
}

void cnb__gres_exchange(cnb_node_t *n, cnb_gres_t *g, cnb_gtab_t *t, const erlang_pid *locker,
                        const char *peer, const char *b, int i, const char *his_tag, int tlen)
{
    int len;
    job_t *j = calloc(1, sizeof *j);
    if (!j || tlen > TAG_MAX || strlen(peer) >= sizeof j->peer) {
        free(j);
        cnb__log(n, CNB_LOG_ERROR, "global exchange from %s not answered", peer);
        return;
    }
    j->n = n;
    j->g = g;
    j->t = t;
    j->locker = *locker;
    snprintf(j->peer, sizeof j->peer, "%s", peer);
    memcpy(j->tag, his_tag, (size_t)tlen);
    j->tlen = tlen;
    int resolve = strcmp(cnb_node_name(n), peer) < 0; /* global: node() < Node */
    if (!ei_decode_list_header(b, &i, &len))
        for (int k = 0; k < len && !one_name(j, resolve, b, &i); k++)
            ;
    int remote = 0;
    for (int k = 0; k < j->nc; k++)
        remote |= builtin(j->c[k].ometh, j->c[k].omlen) == M_OTHER;
    if (remote) {
        pthread_t th;
        pthread_attr_t at;
        pthread_mutex_lock(&g->mu);
        int room = g->running < MAX_THREADS;
        g->running += room;
        pthread_mutex_unlock(&g->mu);
        if (room && !pthread_attr_init(&at)) {
            pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
            int rc = pthread_create(&th, &at, resolver, j);
            pthread_attr_destroy(&at);
            if (!rc)
                return;
        }
        if (room) {
            pthread_mutex_lock(&g->mu);
            g->running--;
            pthread_mutex_unlock(&g->mu);
        }
        cnb__log(n, CNB_LOG_WARNING, "global: no resolver thread for %s: its resolvers "
                 "run here as {badrpc, _}", peer);
    }
    resolve_all(j); /* built-ins only (or no thread: run_remote's rpc fails at once) */
    job_free(j);
}
