/* tls_sess.c: the TLS client's session cache: the last resumable session of
 * each peer node this node dialled, offered again on the next connection to
 * it (a session ticket or a TLS 1.2 session ID, whichever the peer's server
 * gave), bounded, dropped on reload (see tls.h).
 * Tests: tests/unit/test_tls.c, tests/integration/tls_tests.erl. */
#include "tls.h"
#include "node_int.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Peers remembered at most; the least recently used one makes room. */
#define SESS_MAX 256

struct cnb_tls_sess {
    pthread_mutex_t mu; /* put runs on the I/O thread, clear on any */
    uint64_t clock;     /* stamps of use, for eviction */
    struct sess_slot {
        char peer[CNB_NAME_MAX]; /* "" when free */
        SSL_SESSION *s;
        uint64_t used;
    } slots[SESS_MAX];
};

cnb_tls_sess_t *cnb__tls_sess_new(void)
{
    cnb_tls_sess_t *c = calloc(1, sizeof(*c));
    if (c)
        pthread_mutex_init(&c->mu, NULL);
    return c;
}

static void slot_drop(struct sess_slot *sl)
{
    SSL_SESSION_free(sl->s);
    sl->s = NULL;
    sl->peer[0] = 0;
}

void cnb__tls_sess_clear(cnb_tls_sess_t *c)
{
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < SESS_MAX; i++)
        if (c->slots[i].s)
            slot_drop(&c->slots[i]);
    pthread_mutex_unlock(&c->mu);
}

void cnb__tls_sess_free(cnb_tls_sess_t *c)
{
    if (!c)
        return;
    cnb__tls_sess_clear(c);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* peer's slot (mu held), or NULL. */
static struct sess_slot *find(cnb_tls_sess_t *c, const char *peer)
{
    for (size_t i = 0; i < SESS_MAX; i++)
        if (c->slots[i].s && !strcmp(c->slots[i].peer, peer))
            return &c->slots[i];
    return NULL;
}

int cnb__tls_sess_put(cnb_tls_sess_t *c, const char *peer, SSL_SESSION *s)
{
    if (!c || !peer || !*peer || strlen(peer) >= CNB_NAME_MAX || !SSL_SESSION_is_resumable(s))
        return 0;
    pthread_mutex_lock(&c->mu);
    struct sess_slot *sl = find(c, peer);
    if (!sl) { /* a free slot, else the least recently used */
        sl = &c->slots[0];
        for (size_t i = 0; i < SESS_MAX && sl->s; i++)
            if (!c->slots[i].s || c->slots[i].used < sl->used)
                sl = &c->slots[i];
    }
    if (sl->s)
        slot_drop(sl);
    memcpy(sl->peer, peer, strlen(peer) + 1); /* fits: checked above */
    sl->s = s;
    sl->used = ++c->clock;
    pthread_mutex_unlock(&c->mu);
    return 1;
}

int cnb__tls_sess_offer(cnb_tls_sess_t *c, SSL *ssl, const char *peer)
{
    int offered = 0;
    if (!c || !peer)
        return 0;
    pthread_mutex_lock(&c->mu);
    struct sess_slot *sl = find(c, peer);
    if (sl && SSL_set_session(ssl, sl->s) == 1) {
        offered = 1;
        sl->used = ++c->clock;
        /* A TLS 1.3 ticket is offered once (RFC 8446, C.4): the server
         * sends fresh ones on the connection it resumes. */
        if (SSL_SESSION_get_protocol_version(sl->s) >= TLS1_3_VERSION)
            slot_drop(sl);
    }
    pthread_mutex_unlock(&c->mu);
    return offered;
}

size_t cnb__tls_sess_count(cnb_tls_sess_t *c)
{
    size_t n = 0;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < SESS_MAX; i++)
        n += c->slots[i].s != NULL;
    pthread_mutex_unlock(&c->mu);
    return n;
}
