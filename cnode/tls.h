/* tls.h: TLS distribution's configuration (inet_tls_dist's peer): the
 * SSL_CTX built from the node's tls_* options, rebuilt on reload without
 * touching live connections, a new SSL per connection (SNI and host-name
 * check for the initiator), the acceptor's check of a client certificate
 * against the host of the name it claims, and one readable cause for a
 * failed TLS handshake. The bytes themselves go through transport.h.
 * Tests: tests/unit/test_tls.c, tests/integration/tls_tests.erl. */
#ifndef CNB_TLS_H
#define CNB_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

#include "cnode_bridge.h"

typedef struct cnb_tls cnb_tls_t;

/* Parses "1.2,1.3" (any of 1.2 and 1.3, comma separated) into the lowest
 * and highest protocol version (TLS1_2_VERSION, TLS1_3_VERSION); a gap
 * such as "1.3,1.2" is fine, an unknown or empty item is not. NULL: both.
 * Returns 0 or CNB_EINVAL. */
int cnb__tls_versions(const char *spec, int *min, int *max);

/* Builds the TLS state from opts (tls_cert set: TLS is on; else *out is
 * NULL and 0 is returned). Files are read now. Returns 0, or CNB_EINVAL
 * after a log line naming the file or option at fault, or CNB_ENOMEM. */
int cnb__tls_create(const cnb_node_t *n, const cnb_node_opts_t *opts, cnb_tls_t **out);

/* Re-reads the certificate, key and CA files into a new SSL_CTX for the
 * connections made from now on; live ones keep theirs. Thread-safe. On
 * failure the old context stays. Returns 0 or CNB_EINVAL (logged). */
int cnb__tls_reload(const cnb_node_t *n, cnb_tls_t *t);

void cnb__tls_free(cnb_tls_t *t);

/* A new SSL for a connected socket fd, on the current context. server: the
 * acceptor's side; else the initiator's, which sends host as SNI (unless
 * it is an IP address) and, when verifying, requires the server's
 * certificate to be for host, and offers the session it last had with peer
 * (its node name, kept by the caller for the SSL's life: the sessions the
 * server then issues are filed under it). NULL when out of memory (logged). */
SSL *cnb__tls_ssl(const cnb_node_t *n, cnb_tls_t *t, int fd, int server, const char *host,
                  const char *peer);

/* Acceptor, once the peer's node name is known: 1 when verification is off
 * or the client's certificate names host (DNS name or IP address), else 0
 * with the cause in why (cap bytes). */
int cnb__tls_peer_host_ok(const cnb_tls_t *t, SSL *ssl, const char *host, char *why,
                          size_t cap);

/* After SSL_do_handshake/SSL_read/SSL_write failed with ret: one line
 * saying why (a certificate verification error, an alert from the peer,
 * a protocol mismatch), written into buf (cap bytes); returns buf. Clears
 * the thread's OpenSSL error queue. */
const char *cnb__tls_why(SSL *ssl, int ret, char *buf, size_t cap);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384" of an established connection, with
 * ", session resumed" when it resumed one, for logs. */
void cnb__tls_describe(SSL *ssl, char *buf, size_t cap);

/* ---- tls_sess.c: the client's sessions, per peer node ------------------------ */

/* Sessions, as a server: tickets (TLS 1.3 and 1.2) and OpenSSL's session
 * cache (TLS 1.2 session IDs, which OTP's clients offer); as a client: each
 * peer's last resumable session, offered on the next connection to it. A
 * reload drops them all (the new trust settings decide from then on). */
typedef struct cnb_tls_sess cnb_tls_sess_t;

cnb_tls_sess_t *cnb__tls_sess_new(void); /* NULL when out of memory */
void cnb__tls_sess_free(cnb_tls_sess_t *c);
void cnb__tls_sess_clear(cnb_tls_sess_t *c);
/* Files s, a session the server gave on a connection to peer, replacing
 * peer's older one (the least recently used peer's when full). Returns 1
 * when it took the caller's reference on s, 0 when not (s not resumable, no
 * peer). */
int cnb__tls_sess_put(cnb_tls_sess_t *c, const char *peer, SSL_SESSION *s);
/* Sets peer's session on the client ssl; a TLS 1.3 ticket leaves the cache
 * then (offered once). Returns 1 when one was set. */
int cnb__tls_sess_offer(cnb_tls_sess_t *c, SSL *ssl, const char *peer);
size_t cnb__tls_sess_count(cnb_tls_sess_t *c); /* sessions held, for tests */

#endif /* CNB_TLS_H */
