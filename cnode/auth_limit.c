/* auth_limit.c: per-address back-off after failed cookie checks (see
 * auth_limit.h for the policy). The table is the node's, used by the I/O
 * thread only. Tests: tests/unit/test_auth_limit.c,
 * tests/integration/hostile_auth_tests.erl. */
#include "auth_limit.h"

#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node_int.h"

int cnb__auth_key(const struct sockaddr *sa, uint8_t key[16])
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memset(key, 0, 16);
    if (sa->sa_family == AF_INET) {
        memcpy(key, mapped, 12);
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        if (!memcmp(a, mapped, 12))
            memcpy(key, a, 16);
        else
            memcpy(key, a, 8);
        return 0;
    }
    return CNB_EINVAL;
}

int64_t cnb__auth_backoff(uint32_t fails)
{
    if (fails <= CNB_AUTH_FREE)
        return 0;
    uint32_t k = fails - CNB_AUTH_FREE - 1;
    if (k >= 16)
        return CNB_AUTH_MAX_MS;
    int64_t d = (int64_t)CNB_AUTH_BASE_MS << k;
    return d < CNB_AUTH_MAX_MS ? d : CNB_AUTH_MAX_MS;
}

static cnb_auth_entry_t *bucket(cnb_auth_limit_t *t, const uint8_t key[16])
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    return &t->e[(size_t)(h % CNB_AUTH_BUCKETS) * CNB_AUTH_WAYS];
}

static int live(const cnb_auth_entry_t *e, int64_t now)
{
    return e->used && now - e->last_fail < CNB_AUTH_FORGET_MS;
}

static cnb_auth_entry_t *find(cnb_auth_limit_t *t, const uint8_t key[16], int64_t now)
{
    cnb_auth_entry_t *b = bucket(t, key);
    for (int i = 0; i < CNB_AUTH_WAYS; i++)
        if (live(&b[i], now) && !memcmp(b[i].key, key, 16))
            return &b[i];
    return NULL;
}

int64_t cnb__auth_wait(cnb_auth_limit_t *t, const uint8_t key[16], int64_t now, uint32_t *fails)
{
    cnb_auth_entry_t *e = find(t, key, now);
    if (fails)
        *fails = e ? e->fails : 0;
    return e && e->until > now ? e->until - now : 0;
}

uint32_t cnb__auth_fail(cnb_auth_limit_t *t, const uint8_t key[16], int64_t now)
{
    cnb_auth_entry_t *e = find(t, key, now);
    if (!e) {
        cnb_auth_entry_t *b = bucket(t, key);
        e = &b[0];
        for (int i = 0; i < CNB_AUTH_WAYS; i++) {
            if (!live(&b[i], now)) {
                e = &b[i];
                break;
            }
            if (b[i].last_fail < e->last_fail)
                e = &b[i];
        }
        memset(e, 0, sizeof(*e));
        memcpy(e->key, key, 16);
        e->used = 1;
    }
    e->fails++;
    e->last_fail = now;
    e->until = now + cnb__auth_backoff(e->fails);
    return e->fails;
}

void cnb__auth_free(cnb_auth_limit_t *t)
{
    free(t);
}

/* ---------------------------------------------------------------- the loop's calls */

/* The node's table, made on first use (NULL when out of memory: then no
 * back-off, and the handshake itself still refuses every wrong cookie). */
static cnb_auth_limit_t *table(cnb_node_t *n)
{
    if (!n->auth)
        n->auth = calloc(1, sizeof(*n->auth));
    return n->auth;
}

int cnb__auth_accept(cnb_node_t *n, const struct sockaddr *sa)
{
    uint8_t key[16];
    uint32_t fails;
    if (!n->auth || cnb__auth_key(sa, key))
        return 0;
    int64_t left = cnb__auth_wait(n->auth, key, n->now, &fails);
    if (!left)
        return 0;
    char host[64] = "?";
    getnameinfo(sa, sa->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                              : sizeof(struct sockaddr_in6),
                host, sizeof(host), NULL, 0, NI_NUMERICHOST);
    cnb__log(n, CNB_LOG_WARNING,
             "refused a connection from %s: %u failed cookie checks from this address, "
             "%lld ms of back-off left",
             host, fails, (long long)left);
    return 1;
}

int cnb__auth_filter(cnb_node_t *n, cnb_hs_t *hs, int fd, int rc)
{
    if (rc != CNB_ECOOKIE && rc != CNB_HS_DONE)
        return rc;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    uint8_t key[16];
    memset(&ss, 0, sizeof(ss));
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) || cnb__auth_key((struct sockaddr *)&ss, key))
        return rc;
    char why[sizeof(hs->err)];
    if (rc == CNB_ECOOKIE) {
        if (!table(n))
            return rc;
        uint32_t fails = cnb__auth_fail(n->auth, key, n->now);
        snprintf(why, sizeof(why), "%s; %u from this address, which waits %lld ms", hs->err,
                 fails, (long long)cnb__auth_backoff(fails));
        return cnb__hs_refuse(hs, rc, why);
    }
    uint32_t fails;
    if (!n->auth || !cnb__auth_wait(n->auth, key, n->now, &fails))
        return rc;
    snprintf(why, sizeof(why),
             "not answered: the address is in its back-off after %u failed cookie checks", fails);
    return cnb__hs_refuse(hs, CNB_EAGAIN, why);
}
