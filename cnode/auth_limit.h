/* auth_limit.h: back-off for addresses that fail the cookie check. Each
 * address (an IPv4 address, or an IPv6 /64) may fail CNB_AUTH_FREE times;
 * each failure after that blocks it for CNB_AUTH_BASE_MS, doubling per
 * failure up to CNB_AUTH_MAX_MS. While blocked its connections are closed at
 * accept, and a handshake of it that was already under way gets no answer,
 * right or wrong, so parallel guesses gain nothing. An address quiet for
 * CNB_AUTH_FORGET_MS is forgotten. The table is fixed-size (no allocation
 * per address). Tests: tests/unit/test_auth_limit.c,
 * tests/integration/hostile_auth_tests.erl. */
#ifndef CNB_AUTH_LIMIT_H
#define CNB_AUTH_LIMIT_H

#include <stdint.h>
#include <sys/socket.h>

#include "cnb_common.h"

#define CNB_AUTH_FREE 3
#define CNB_AUTH_BASE_MS 200
#define CNB_AUTH_MAX_MS 10000
#define CNB_AUTH_FORGET_MS 600000
#define CNB_AUTH_BUCKETS 64
#define CNB_AUTH_WAYS 8

typedef struct cnb_auth_entry {
    uint8_t key[16];   /* see cnb__auth_key */
    int used;
    uint32_t fails;    /* failed cookie checks, not forgotten yet */
    int64_t last_fail; /* ms */
    int64_t until;     /* ms: blocked before this */
} cnb_auth_entry_t;

typedef struct cnb_auth_limit {
    cnb_auth_entry_t e[CNB_AUTH_BUCKETS * CNB_AUTH_WAYS];
} cnb_auth_limit_t;

/* The key of a peer address: IPv4 (also IPv4-mapped IPv6) as ::ffff:a.b.c.d,
 * IPv6 cut to its /64 (one host usually holds a whole /64). Returns 0, or
 * CNB_EINVAL for another family. */
int cnb__auth_key(const struct sockaddr *sa, uint8_t key[16]);

/* The back-off after `fails` failures (0 while fails <= CNB_AUTH_FREE). */
int64_t cnb__auth_backoff(uint32_t fails);

/* Milliseconds the address must still wait at time now (0: not blocked);
 * *fails (may be NULL) gets its failure count. */
int64_t cnb__auth_wait(cnb_auth_limit_t *t, const uint8_t key[16], int64_t now, uint32_t *fails);

/* Counts a failed cookie check of the address at now and starts its
 * back-off. Returns the failure count. When the table is full the entry idle
 * longest gives way. */
uint32_t cnb__auth_fail(cnb_auth_limit_t *t, const uint8_t key[16], int64_t now);

/* ---- the two calls of the I/O thread (conn_life.c at accept, conn_io.c in the
 * handshake); the table lives in the node */
struct cnb_node;
struct cnb_hs;

/* At accept: returns 1 (after one rate-limited log line) when the address is
 * blocked and the caller must close the socket, 0 to go on. */
int cnb__auth_accept(struct cnb_node *n, const struct sockaddr *sa);

/* After each cnb__hs_input of an accepted connection, with its result rc:
 * counts a wrong cookie (and says so in hs->err), and turns a handshake that
 * completed while its address is blocked into a failure (CNB_EAGAIN) before
 * the acknowledgement leaves. Returns rc or that failure. */
int cnb__auth_filter(struct cnb_node *n, struct cnb_hs *hs, int fd, int rc);

/* Frees the node's table (NULL is fine). */
void cnb__auth_free(struct cnb_auth_limit *t);

#endif /* CNB_AUTH_LIMIT_H */
