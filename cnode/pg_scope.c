/* pg_scope.c: with opts.visible, one :pg scope process per configured scope
 * (opts.pg_scopes, default "pg"): registered under the scope's name, it answers
 * OTP pg's protocol (discover, sync, join, leave) so that C workers can be
 * members of process groups (cnb_pg_join/leave/members), and keeps what its
 * peers' scopes tell it. Peers drop our members themselves when the
 * connection goes (their monitor on the scope pid); we monitor each peer
 * scope too and drop its members on its DOWN. Facts from OTP 25's pg.erl
 * are in docs/ARCHITECTURE.md ("Visible mode"). Any thread (one mutex).
 * Tests: tests/integration/visible_tests.erl, visible_heal_tests.erl. */
#include "log.h"
#include "node_rt.h"

#include "cnb_term.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define PG_MAX_SCOPES 16
#define PG_MAX_PEERS 4096          /* peer scopes per scope */
#define PG_MAX_REMOTE_MEMBERS 65536 /* members peers told us of, per scope */

typedef struct pg_member {
    unsigned char *group; /* canonical ETF, with 131 */
    size_t glen;
    erlang_pid pid;
    unsigned onum, oserial, ocre; /* the peer scope that told us (0s: local) */
} pg_member_t;

/* A peer scope process (by pid, as pg keeps them), which we monitor as pg
 * does: its DOWN takes its members out. */
typedef struct pg_peer {
    erlang_pid pid;
    erlang_ref mref;
} pg_peer_t;

typedef struct pg_scope {
    char name[MAXATOMLEN_UTF8];
    erlang_pid pid;
    pg_peer_t *peers;
    size_t npeers, peers_cap;
    pg_member_t *m; /* local and remote members */
    size_t nm, m_cap, nremote;
} pg_scope_t;

struct cnb_pg {
    pthread_mutex_t mu;
    pg_scope_t s[PG_MAX_SCOPES];
    int n;
};

static int pid_eq(const erlang_pid *a, const erlang_pid *b)
{
    return a->num == b->num && a->serial == b->serial && a->creation == b->creation &&
           !strcmp(a->node, b->node);
}

int cnb__pg_create(cnb_node_t *n)
{
    struct cnb_pg *g = calloc(1, sizeof *g);
    if (!g)
        return CNB_ENOMEM;
    pthread_mutex_init(&g->mu, NULL);
    const char *list = n->opts.pg_scopes ? n->opts.pg_scopes : "pg";
    for (const char *p = list; *p && g->n < PG_MAX_SCOPES;) {
        size_t len = strcspn(p, ",");
        if (len && len < MAXATOMLEN_UTF8) {
            pg_scope_t *s = &g->s[g->n++];
            memcpy(s->name, p, len);
            cnb_node_make_pid(n, &s->pid);
        }
        p += len + (p[len] == ',');
    }
    n->pg = g;
    return 0;
}

static void drop_member(pg_scope_t *s, size_t i)
{
    free(s->m[i].group);
    s->m[i] = s->m[--s->nm];
}

void cnb__pg_destroy(cnb_node_t *n)
{
    struct cnb_pg *g = n->pg;
    if (!g)
        return;
    for (int k = 0; k < g->n; k++) {
        while (g->s[k].nm)
            drop_member(&g->s[k], 0);
        free(g->s[k].m);
        free(g->s[k].peers);
    }
    pthread_mutex_destroy(&g->mu);
    free(g);
    n->pg = NULL;
}

static pg_scope_t *scope_named(struct cnb_pg *g, const char *name)
{
    for (int k = 0; k < g->n; k++)
        if (!strcmp(g->s[k].name, name))
            return &g->s[k];
    return NULL;
}

static pg_scope_t *scope_of_pid(struct cnb_pg *g, const erlang_pid *p)
{
    for (int k = 0; k < g->n; k++)
        if (pid_eq(&g->s[k].pid, p))
            return &g->s[k];
    return NULL;
}

/* Adds a member (pg allows the same pid in a group more than once). group:
 * canonical bytes, copied. Returns 0 or CNB_ENOMEM. */
static int add_member(pg_scope_t *s, const void *group, size_t glen, const erlang_pid *pid,
                      const erlang_pid *owner)
{
    int remote = owner != NULL;
    if (remote && s->nremote >= PG_MAX_REMOTE_MEMBERS)
        return CNB_ENOSPC;
    if (s->nm == s->m_cap) {
        size_t cap = s->m_cap ? s->m_cap * 2 : 16;
        pg_member_t *m = realloc(s->m, cap * sizeof *m);
        if (!m)
            return CNB_ENOMEM;
        s->m = m;
        s->m_cap = cap;
    }
    unsigned char *copy = malloc(glen);
    if (!copy)
        return CNB_ENOMEM;
    memcpy(copy, group, glen);
    pg_member_t *e = &s->m[s->nm++];
    e->group = copy; /* owned by the scope from now on (drop_member frees it) */
    e->glen = glen;
    e->pid = *pid;
    e->onum = owner ? owner->num : 0;
    e->oserial = owner ? owner->serial : 0;
    e->ocre = owner ? owner->creation : 0;
    s->nremote += remote != 0;
    return 0;
}

static int owned_by(const pg_member_t *e, const erlang_pid *o)
{
    return o && e->onum == o->num && e->oserial == o->serial && e->ocre == o->creation &&
           !strcmp(e->pid.node, o->node);
}

/* Removes one membership of pid in group told by owner (NULL: local)
 * (group NULL: every one of pid's; node non-NULL: every member of that node;
 * pid NULL: every member owner told us of). Returns how many went. */
static size_t remove_members(pg_scope_t *s, const void *group, size_t glen,
                             const erlang_pid *pid, const char *node, const char *self,
                             const erlang_pid *owner)
{
    size_t gone = 0;
    for (size_t i = s->nm; i-- > 0;) {
        pg_member_t *e = &s->m[i];
        int hit = node    ? !strcmp(e->pid.node, node)
                  : !pid  ? owned_by(e, owner)
                          : pid_eq(&e->pid, pid) && (!owner || owned_by(e, owner)) &&
                               (!group || (e->glen == glen && !memcmp(e->group, group, glen)));
        if (!hit)
            continue;
        if (strcmp(e->pid.node, self))
            s->nremote--;
        drop_member(s, i);
        gone++;
        if (group && pid)
            break;
    }
    return gone;
}

/* Canonical bytes of the ETF term at b[i..] (no version byte) into *out
 * (malloc'd); i moves past it. Returns 0 or an error. */
static int canon_at(const char *b, int *i, void **out, size_t *len)
{
    int start = *i;
    if (ei_skip_term(b, i))
        return CNB_EMALFORMED;
    return cnb_term_canonical_alloc(b + start, (size_t)(*i - start), out, len, NULL);
}

/* Sends x (with version byte) to pid; a failure is logged. */
static void send_to(cnb_node_t *n, const erlang_pid *to, ei_x_buff *x, const char *what)
{
    int rc = cnb_send(n, NULL, to, x->buff, (size_t)x->index);
    if (rc && rc != CNB_ECLOSED)
        cnb__log(n, CNB_LOG_WARNING, "pg %s to %s not sent: %s", what, to->node, cnb_strerror(rc));
}

/* Encodes a canonical group term (skipping its 131). */
static int put_group(ei_x_buff *x, const pg_member_t *e)
{
    return ei_x_append_buf(x, (const char *)e->group + 1, (int)e->glen - 1);
}

/* {'$gen_cast', {sync, Scope, [{Group, [Pid]}]}} of our own members, grouped. */
static int encode_sync(const cnb_node_t *n, const pg_scope_t *s, ei_x_buff *x)
{
    if (ei_x_new_with_version(x) || ei_x_encode_tuple_header(x, 2) ||
        ei_x_encode_atom(x, "$gen_cast") || ei_x_encode_tuple_header(x, 3) ||
        ei_x_encode_atom(x, "sync") || ei_x_encode_pid(x, &s->pid))
        return -1;
    char *done = calloc(s->nm ? s->nm : 1, 1);
    if (!done)
        return -1;
    for (size_t i = 0; i < s->nm; i++) {
        const pg_member_t *e = &s->m[i];
        if (done[i] || strcmp(e->pid.node, n->name))
            continue;
        int cnt = 0;
        for (size_t j = i; j < s->nm; j++)
            cnt += !done[j] && !strcmp(s->m[j].pid.node, n->name) && s->m[j].glen == e->glen &&
                   !memcmp(s->m[j].group, e->group, e->glen);
        if (ei_x_encode_list_header(x, 1) || ei_x_encode_tuple_header(x, 2) || put_group(x, e) ||
            ei_x_encode_list_header(x, cnt))
            goto fail;
        for (size_t j = i; j < s->nm; j++)
            if (!done[j] && !strcmp(s->m[j].pid.node, n->name) && s->m[j].glen == e->glen &&
                !memcmp(s->m[j].group, e->group, e->glen)) {
                done[j] = 1;
                if (ei_x_encode_pid(x, &s->m[j].pid))
                    goto fail;
            }
        if (ei_x_encode_empty_list(x))
            goto fail;
    }
    free(done);
    return ei_x_encode_empty_list(x);
fail:
    free(done);
    return -1;
}

/* {join, Scope, Group, Pid} or {leave, Scope, Pid, [Group]} to every peer. */
static void broadcast(cnb_node_t *n, const pg_scope_t *s, const pg_member_t *e, int join)
{
    ei_x_buff x;
    int bad = ei_x_new_with_version(&x) || ei_x_encode_tuple_header(&x, 4) ||
              ei_x_encode_atom(&x, join ? "join" : "leave") || ei_x_encode_pid(&x, &s->pid);
    if (!bad && join)
        bad = put_group(&x, e) || ei_x_encode_pid(&x, &e->pid);
    else if (!bad)
        bad = ei_x_encode_pid(&x, &e->pid) || ei_x_encode_list_header(&x, 1) ||
              put_group(&x, e) || ei_x_encode_empty_list(&x);
    if (bad) {
        cnb__log(n, CNB_LOG_ERROR, "out of memory: pg %s not sent", join ? "join" : "leave");
    } else {
        for (size_t k = 0; k < s->npeers; k++)
            send_to(n, &s->peers[k].pid, &x, join ? "join" : "leave");
    }
    ei_x_free(&x);
}

static pg_peer_t *peer_find(pg_scope_t *s, const erlang_pid *peer)
{
    for (size_t k = 0; k < s->npeers; k++)
        if (pid_eq(&s->peers[k].pid, peer))
            return &s->peers[k];
    return NULL;
}

/* Adds peer to the scope's peers (by pid, as pg's remote map), monitored
 * from our scope pid. Returns 1 when it was not known before, 0 when it
 * was, -1 when there is no room. */
static int peer_add(cnb_node_t *n, pg_scope_t *s, const erlang_pid *peer)
{
    if (peer_find(s, peer))
        return 0;
    if (!s->peers || s->npeers == s->peers_cap) {
        size_t cap = s->peers_cap ? s->peers_cap * 2 : 8;
        if (cap > PG_MAX_PEERS)
            return -1;
        pg_peer_t *p = realloc(s->peers, cap * sizeof *p);
        if (!p)
            return -1;
        s->peers = p;
        s->peers_cap = cap;
    }
    pg_peer_t *e = &s->peers[s->npeers++];
    e->pid = *peer;
    cnb_node_make_ref(n, &e->mref);
    if (cnb__sig_monitor(n, CNB_OP_MONITOR_P, &s->pid, peer, NULL, NULL, &e->mref))
        cnb__log(n, CNB_LOG_WARNING, "pg scope %s: no monitor on a peer scope of %s", s->name,
                 peer->node);
    return 1;
}

/* The DOWN of a peer scope we monitor: it and the members it told us of go,
 * as pg's handle_info({'DOWN', ...}) drops them. */
static void peer_down(cnb_node_t *n, pg_scope_t *s, const cnb_msg_t *m)
{
    pg_peer_t *e = m->has_from ? peer_find(s, &m->from) : NULL;
    if (!e || !m->has_ref || !cnb__ref_eq(&e->mref, &m->ref))
        return;
    remove_members(s, NULL, 0, NULL, NULL, n->name, &m->from);
    *e = s->peers[--s->npeers];
    cnb__log(n, CNB_LOG_DEBUG, "pg scope %s: a peer scope of %s went down", s->name,
             m->from.node);
}

/* {discover, Peer}: our members to it as a sync; a peer new to us also gets
 * {discover, OurScope}, as pg does (it then syncs us its members). */
static void discover(cnb_node_t *n, pg_scope_t *s, const erlang_pid *peer)
{
    int fresh = peer_add(n, s, peer);
    if (fresh < 0) {
        cnb__log(n, CNB_LOG_WARNING, "pg scope %s: no room for a peer from %s", s->name,
                 peer->node);
        return;
    }
    ei_x_buff x;
    if (encode_sync(n, s, &x)) {
        cnb__log(n, CNB_LOG_ERROR, "out of memory: pg sync to %s not sent", peer->node);
        ei_x_free(&x);
        return;
    }
    send_to(n, peer, &x, "sync");
    ei_x_free(&x);
    if (!fresh)
        return;
    if (ei_x_new_with_version(&x) || ei_x_encode_tuple_header(&x, 2) ||
        ei_x_encode_atom(&x, "discover") || ei_x_encode_pid(&x, &s->pid))
        cnb__log(n, CNB_LOG_ERROR, "out of memory: pg discover to %s not sent", peer->node);
    else
        send_to(n, peer, &x, "discover");
    ei_x_free(&x);
}

/* Adds (join) or removes one membership for each pid of PidOrPids at b[*i]
 * in the canonical group g; pids must be of the peer's node (pg lets a scope
 * speak for its own node's processes only). Returns 0 or -1 (malformed). */
static int each_pid(cnb_node_t *n, pg_scope_t *s, const char *b, int *i, const void *g,
                    size_t glen, const erlang_pid *owner, int join)
{
    int type, size, len = 1, list = 0;
    erlang_pid p;
    if (ei_get_type(b, i, &type, &size))
        return -1;
    if (type == ERL_LIST_EXT || type == ERL_NIL_EXT) {
        if (ei_decode_list_header(b, i, &len))
            return -1;
        list = 1;
    }
    for (int k = 0; k < len; k++) {
        if (ei_decode_pid(b, i, &p))
            return -1;
        if (strcmp(p.node, owner->node))
            continue;
        if (!join)
            remove_members(s, g, glen, &p, NULL, n->name, owner);
        else if (add_member(s, g, glen, &p, owner))
            cnb__log(n, CNB_LOG_WARNING, "pg scope %s: a member from %s not kept (limit %d)",
                     s->name, owner->node, PG_MAX_REMOTE_MEMBERS);
    }
    return list && len ? ei_skip_term(b, i) : 0; /* the list's tail */
}

/* {join, Peer, Group, PidOrPids}: i at Group. */
static void remote_join(cnb_node_t *n, pg_scope_t *s, const char *b, int i,
                        const erlang_pid *peer)
{
    void *g;
    size_t glen;
    if (canon_at(b, &i, &g, &glen))
        return;
    (void)each_pid(n, s, b, &i, g, glen, peer, 1);
    free(g);
}

/* {leave, Peer, PidOrPids, Groups}: i at PidOrPids. */
static void remote_leave(cnb_node_t *n, pg_scope_t *s, const char *b, int i,
                         const erlang_pid *peer)
{
    int pids = i, len;
    if (ei_skip_term(b, &i) || ei_decode_list_header(b, &i, &len))
        return;
    for (int k = 0; k < len; k++) {
        void *g;
        size_t glen;
        int j = pids;
        if (canon_at(b, &i, &g, &glen))
            return;
        (void)each_pid(n, s, b, &j, g, glen, peer, 0);
        free(g);
    }
}

/* {'$gen_cast', {sync, Peer, [{Group, [Pid]}]}}: i at the list; what the peer
 * told us before is replaced. */
static void remote_sync(cnb_node_t *n, pg_scope_t *s, const char *b, int i, const erlang_pid *peer)
{
    int len, arity;
    if (peer_add(n, s, peer) < 0)
        return;
    remove_members(s, NULL, 0, NULL, NULL, n->name, peer);
    if (ei_decode_list_header(b, &i, &len))
        return;
    for (int k = 0; k < len; k++) {
        void *g;
        size_t glen;
        if (ei_decode_tuple_header(b, &i, &arity) || arity != 2 || canon_at(b, &i, &g, &glen))
            return;
        int bad = each_pid(n, s, b, &i, g, glen, peer, 1);
        free(g);
        if (bad)
            return;
    }
}

/* One message for a scope: {discover, Peer}, {join, ..}, {leave, ..} or
 * {'$gen_cast', {sync, ..}}; anything else, or from a peer not on the
 * connection it came over, is dropped. Called with the lock held. */
static void scope_message(cnb_node_t *n, pg_scope_t *s, const cnb_msg_t *m)
{
    const char *b = m->payload;
    int i = 0, ver, arity;
    char tag[MAXATOMLEN_UTF8];
    erlang_pid peer;
    if (ei_decode_version(b, &i, &ver) || ei_decode_tuple_header(b, &i, &arity) ||
        ei_decode_atom(b, &i, tag))
        goto ignore;
    if (!strcmp(tag, "$gen_cast") && arity == 2) {
        if (ei_decode_tuple_header(b, &i, &arity) || arity != 3 || ei_decode_atom(b, &i, tag) ||
            strcmp(tag, "sync"))
            goto ignore;
        strcpy(tag, "sync");
        arity = 3;
    }
    if (ei_decode_pid(b, &i, &peer) || strcmp(peer.node, m->peer))
        goto ignore;
    if (!strcmp(tag, "discover") && (arity == 2 || arity == 3)) /* 3: OTP 26+ may add a version */
        discover(n, s, &peer);
    else if (!strcmp(tag, "sync") && arity == 3)
        remote_sync(n, s, b, i, &peer);
    else if (peer_find(s, &peer) && arity == 4 && (!strcmp(tag, "join") || !strcmp(tag, "leave")))
        (tag[0] == 'j' ? remote_join : remote_leave)(n, s, b, i, &peer);
    else
        goto ignore;
    return;
ignore:
    cnb__log(n, CNB_LOG_DEBUG, "pg scope %s: ignored a message from %s", s->name, m->peer);
}

int cnb__pg_take(cnb_node_t *n, const cnb_msg_t *m)
{
    struct cnb_pg *g = n->pg;
    if (!g)
        return 0;
    pthread_mutex_lock(&g->mu);
    pg_scope_t *s = m->has_to ? scope_of_pid(g, &m->to)
                              : (m->op == CNB_OP_REG_SEND || m->op == CNB_OP_MONITOR_P ||
                                 m->op == CNB_OP_DEMONITOR_P)
                                    ? scope_named(g, m->toname)
                                    : NULL;
    if (s && m->op == CNB_OP_MONITOR_P_EXIT && m->has_to)
        peer_down(n, s, m);
    else if (s && (m->op == CNB_OP_SEND || m->op == CNB_OP_SEND_SENDER || m->op == CNB_OP_REG_SEND) &&
        m->payload)
        scope_message(n, s, m);
    pthread_mutex_unlock(&g->mu);
    /* Monitors on a scope need no record (the peer's node fires noconnection
     * when the connection goes); links and exits to it are dropped. */
    return s != NULL;
}

void cnb__pg_nodedown(cnb_node_t *n, const char *peer)
{
    struct cnb_pg *g = n->pg;
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    for (int k = 0; k < g->n; k++) {
        pg_scope_t *s = &g->s[k];
        for (size_t i = s->npeers; i-- > 0;)
            if (!strcmp(s->peers[i].pid.node, peer))
                s->peers[i] = s->peers[--s->npeers];
        remove_members(s, NULL, 0, NULL, peer, n->name, NULL);
    }
    pthread_mutex_unlock(&g->mu);
}

/* A local worker ended: its memberships go, and every peer hears a leave. */
void cnb__pg_proc_exit(cnb_node_t *n, const erlang_pid *pid)
{
    struct cnb_pg *g = n->pg;
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    for (int k = 0; k < g->n; k++) {
        pg_scope_t *s = &g->s[k];
        for (size_t i = s->nm; i-- > 0;)
            if (pid_eq(&s->m[i].pid, pid)) {
                broadcast(n, s, &s->m[i], 0);
                drop_member(s, i);
            }
    }
    pthread_mutex_unlock(&g->mu);
}

/* The scope and the canonical group of a public call; with pid (join,
 * leave), that it is a local pid first. Returns 0, CNB_EINVAL (no local pid,
 * no group), CNB_ESTATE (not visible), CNB_ENOENT (no such scope) or the
 * canonical form's error. */
static int api_args(cnb_node_t *n, const erlang_pid *pid, const char *scope, const char *group,
                    size_t len, pg_scope_t **s, void **g, size_t *glen)
{
    if (pid && !cnb_node_is_local_pid(n, pid))
        return CNB_EINVAL;
    if (!n->pg)
        return CNB_ESTATE;
    if (!group || !len)
        return CNB_EINVAL;
    int rc = cnb_term_canonical_alloc(group, len, g, glen, NULL);
    if (rc)
        return rc;
    *s = scope_named(n->pg, scope ? scope : "pg");
    if (!*s) {
        free(*g);
        return CNB_ENOENT;
    }
    return 0;
}

int cnb_pg_join(cnb_node_t *n, const char *scope, const char *group, size_t len,
                const erlang_pid *pid)
{
    pg_scope_t *s;
    void *g;
    size_t glen;
    if (!pid)
        return CNB_EINVAL;
    int rc = api_args(n, pid, scope, group, len, &s, &g, &glen);
    if (rc)
        return rc;
    pthread_mutex_lock(&n->pg->mu);
    if (!(rc = add_member(s, g, glen, pid, NULL)))
        broadcast(n, s, &s->m[s->nm - 1], 1);
    pthread_mutex_unlock(&n->pg->mu);
    free(g);
    return rc;
}

int cnb_pg_leave(cnb_node_t *n, const char *scope, const char *group, size_t len,
                 const erlang_pid *pid)
{
    pg_scope_t *s;
    void *g;
    size_t glen;
    if (!pid)
        return CNB_EINVAL;
    int rc = api_args(n, pid, scope, group, len, &s, &g, &glen);
    if (rc)
        return rc;
    pg_member_t e = {g, glen, *pid, 0, 0, 0};
    pthread_mutex_lock(&n->pg->mu);
    if (remove_members(s, g, glen, pid, NULL, n->name, NULL))
        broadcast(n, s, &e, 0);
    else
        rc = CNB_ENOENT;
    pthread_mutex_unlock(&n->pg->mu);
    free(g);
    return rc;
}

int cnb_pg_members(cnb_node_t *n, const char *scope, const char *group, size_t len,
                   ei_x_buff *out)
{
    pg_scope_t *s;
    void *g;
    size_t glen;
    int rc = api_args(n, NULL, scope, group, len, &s, &g, &glen);
    if (rc)
        return rc;
    pthread_mutex_lock(&n->pg->mu);
    int cnt = 0;
    for (size_t i = 0; i < s->nm; i++)
        cnt += s->m[i].glen == glen && !memcmp(s->m[i].group, g, glen);
    if (ei_x_new_with_version(out) || (cnt && ei_x_encode_list_header(out, cnt)))
        rc = CNB_ENOMEM;
    for (size_t i = 0; !rc && i < s->nm; i++)
        if (s->m[i].glen == glen && !memcmp(s->m[i].group, g, glen) &&
            ei_x_encode_pid(out, &s->m[i].pid))
            rc = CNB_ENOMEM;
    if (!rc && ei_x_encode_empty_list(out))
        rc = CNB_ENOMEM;
    pthread_mutex_unlock(&n->pg->mu);
    free(g);
    return rc;
}
