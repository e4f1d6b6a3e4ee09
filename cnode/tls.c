/* tls.c: TLS distribution's configuration: the SSL_CTX made from the node's
 * tls_* options and swapped on reload, a new SSL per connection, peer host
 * checks and failure causes for the log (see tls.h).
 * Tests: tests/unit/test_tls.c, tests/integration/tls_tests.erl. */
#include "tls.h"
#include "node_int.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cnb_tls {
    pthread_mutex_t mu; /* guards ctx: reload runs on any thread */
    SSL_CTX *ctx;
    char *cert, *key, *cacert; /* the files, read again on reload */
    char *ciphers12, *ciphers13; /* --tls-ciphers split by protocol (NULL: defaults) */
    int verify;                /* verify peers (mutual authentication) */
    int vmin, vmax;            /* protocol versions */
    cnb_tls_sess_t *sess;      /* the client's sessions (tls_sess.c) */
};

int cnb__tls_versions(const char *spec, int *min, int *max)
{
    *min = TLS1_2_VERSION;
    *max = TLS1_3_VERSION;
    if (!spec)
        return 0;
    int lo = 0, hi = 0;
    const char *p = spec;
    for (;;) {
        size_t len = strcspn(p, ",");
        int v;
        if (len == 3 && !strncmp(p, "1.2", 3))
            v = TLS1_2_VERSION;
        else if (len == 3 && !strncmp(p, "1.3", 3))
            v = TLS1_3_VERSION;
        else
            return CNB_EINVAL;
        if (!lo || v < lo)
            lo = v;
        if (v > hi)
            hi = v;
        if (!p[len])
            break;
        p += len + 1;
    }
    *min = lo;
    *max = hi;
    return 0;
}

/* The first error OpenSSL queued, as text (clears the queue). */
static const char *ossl_err(char *buf, size_t cap)
{
    unsigned long e = ERR_get_error();
    if (!e)
        snprintf(buf, cap, "unknown error");
    else
        ERR_error_string_n(e, buf, cap);
    ERR_clear_error();
    return buf;
}

/* OpenSSL's new-session callback: a client session goes to the peer's slot
 * (the peer's name is the SSL's app data, set by cnb__tls_ssl); the server's
 * own stay in OpenSSL's cache. Returns 1 when the reference was taken. */
static int new_session(SSL *ssl, SSL_SESSION *s)
{
    if (SSL_is_server(ssl))
        return 0;
    return cnb__tls_sess_put(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)), SSL_get_app_data(ssl), s);
}

/* Session resumption where the peer allows it (see tls_sess.c): the id
 * context lets a client whose certificate was verified resume (OpenSSL
 * refuses the handshake without one); client and server sessions reach
 * new_session; the server's cache is kept small. */
static void set_sessions(SSL_CTX *ctx, cnb_tls_sess_t *sess)
{
    static const unsigned char sid_ctx[] = "cnode_bridge";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_BOTH);
    SSL_CTX_sess_set_cache_size(ctx, 1024);
    SSL_CTX_set_app_data(ctx, sess);
    SSL_CTX_sess_set_new_cb(ctx, new_session);
}

/* A context from t's files and settings, or NULL after a log line. */
static SSL_CTX *make_ctx(const cnb_node_t *n, const cnb_tls_t *t)
{
    char e[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (!ctx) {
        cnb__log(n, CNB_LOG_ERROR, "TLS: cannot make a context: %s", ossl_err(e, sizeof(e)));
        return NULL;
    }
    const char *what = "";
    SSL_CTX_set_min_proto_version(ctx, t->vmin);
    SSL_CTX_set_max_proto_version(ctx, t->vmax);
    /* Renegotiation is refused: nothing in distribution needs it. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    /* A peer that drops the socket without close_notify is a closed
     * connection, as on TCP (distribution frames delimit themselves). */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Writes may be partial (a full socket) and retried from a queue that
     * has moved (transport.c). */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    set_sessions(ctx, t->sess);
    if (t->ciphers12 && SSL_CTX_set_cipher_list(ctx, t->ciphers12) != 1) {
        what = "--tls-ciphers (TLS 1.2 names)";
        goto bad;
    }
    if (t->ciphers13 && SSL_CTX_set_ciphersuites(ctx, t->ciphers13) != 1) {
        what = "--tls-ciphers (TLS 1.3 suites)";
        goto bad;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1) {
        what = t->cert;
        goto bad;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1) {
        what = t->key;
        goto bad;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        what = "the key does not match the certificate";
        goto bad;
    }
    if (t->cacert && SSL_CTX_load_verify_locations(ctx, t->cacert, NULL) != 1) {
        what = t->cacert;
        goto bad;
    }
    /* Both roles share the context: as a server it asks for the client's
     * certificate and refuses a client without one (fail_if_no_peer_cert). */
    SSL_CTX_set_verify(ctx,
                       t->verify ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                 : SSL_VERIFY_NONE,
                       NULL);
    return ctx;
bad:
    cnb__log(n, CNB_LOG_ERROR, "TLS: %s: %s", what, ossl_err(e, sizeof(e)));
    SSL_CTX_free(ctx);
    return NULL;
}

/* Splits "A:B:TLS_X" into the TLS 1.2 list ("A:B") and the TLS 1.3 suites
 * ("TLS_X": their names start with TLS_), each NULL when empty. Returns 0
 * or CNB_ENOMEM. */
static int split_ciphers(const char *spec, char **c12, char **c13)
{
    size_t cap = strlen(spec) + 1;
    char *a = calloc(1, cap), *b = calloc(1, cap);
    if (!a || !b) {
        free(a);
        free(b);
        return CNB_ENOMEM;
    }
    for (const char *p = spec; *p;) {
        size_t len = strcspn(p, ":");
        if (len) { /* each list is at most as long as spec: no overflow */
            char *dst = strncmp(p, "TLS_", 4) ? a : b;
            size_t at = strlen(dst);
            if (at)
                dst[at++] = ':';
            memcpy(dst + at, p, len);
            dst[at + len] = 0;
        }
        p += len + (p[len] == ':');
    }
    *c12 = a;
    *c13 = b;
    if (!*a) {
        free(a);
        *c12 = NULL;
    }
    if (!*b) {
        free(b);
        *c13 = NULL;
    }
    return 0;
}

void cnb__tls_free(cnb_tls_t *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    cnb__tls_sess_free(t->sess);
    free(t->cert);
    free(t->key);
    free(t->cacert);
    free(t->ciphers12);
    free(t->ciphers13);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

int cnb__tls_create(const cnb_node_t *n, const cnb_node_opts_t *o, cnb_tls_t **out)
{
    *out = NULL;
    if (!o->tls_cert) {
        if (o->tls_key || o->tls_cacert) {
            cnb__log(n, CNB_LOG_ERROR, "TLS: a key or CA file without --tls-cert");
            return CNB_EINVAL;
        }
        return 0;
    }
    cnb_tls_t *t = calloc(1, sizeof(*t));
    if (!t)
        return CNB_ENOMEM;
    pthread_mutex_init(&t->mu, NULL);
    t->verify = !o->tls_verify_none;
    if (cnb__tls_versions(o->tls_versions, &t->vmin, &t->vmax)) {
        cnb__log(n, CNB_LOG_ERROR, "TLS: bad versions '%s' (give 1.2, 1.3 or 1.2,1.3)",
                 o->tls_versions);
        cnb__tls_free(t);
        return CNB_EINVAL;
    }
    if (t->verify && !o->tls_cacert) {
        cnb__log(n, CNB_LOG_ERROR,
                 "TLS: verifying peers needs their CA (--tls-cacert), or --tls-verify none");
        cnb__tls_free(t);
        return CNB_EINVAL;
    }
    if (o->tls_ciphers && split_ciphers(o->tls_ciphers, &t->ciphers12, &t->ciphers13)) {
        cnb__tls_free(t);
        return CNB_ENOMEM;
    }
    t->cert = strdup(o->tls_cert);
    t->key = strdup(o->tls_key ? o->tls_key : o->tls_cert);
    t->cacert = o->tls_cacert ? strdup(o->tls_cacert) : NULL;
    t->sess = cnb__tls_sess_new();
    if (!t->cert || !t->key || (o->tls_cacert && !t->cacert) || !t->sess) {
        cnb__tls_free(t);
        return CNB_ENOMEM;
    }
    if (!(t->ctx = make_ctx(n, t))) {
        cnb__tls_free(t);
        return CNB_EINVAL;
    }
    *out = t;
    return 0;
}

int cnb__tls_reload(const cnb_node_t *n, cnb_tls_t *t)
{
    SSL_CTX *ctx = make_ctx(n, t);
    if (!ctx)
        return CNB_EINVAL;
    pthread_mutex_lock(&t->mu);
    SSL_CTX *old = t->ctx;
    t->ctx = ctx;
    pthread_mutex_unlock(&t->mu);
    SSL_CTX_free(old); /* live connections hold their own reference */
    cnb__tls_sess_clear(t->sess);
    return 0;
}

static int is_ip(const char *host)
{
    unsigned char a[16];
    return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

SSL *cnb__tls_ssl(const cnb_node_t *n, cnb_tls_t *t, int fd, int server, const char *host,
                  const char *peer)
{
    char e[256];
    pthread_mutex_lock(&t->mu);
    SSL *ssl = SSL_new(t->ctx);
    pthread_mutex_unlock(&t->mu);
    if (!ssl || SSL_set_fd(ssl, fd) != 1)
        goto bad;
    if (server) {
        SSL_set_accept_state(ssl);
        return ssl;
    }
    SSL_set_connect_state(ssl);
    int ip = is_ip(host);
    if (!ip && SSL_set_tlsext_host_name(ssl, host) != 1)
        goto bad;
    if (t->verify) {
        int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host)
                    : SSL_set1_host(ssl, host);
        if (ok != 1)
            goto bad;
    }
    SSL_set_app_data(ssl, (void *)peer);
    cnb__tls_sess_offer(t->sess, ssl, peer);
    return ssl;
bad:
    cnb__log(n, CNB_LOG_ERROR, "TLS: cannot set up a connection: %s", ossl_err(e, sizeof(e)));
    SSL_free(ssl);
    return NULL;
}

int cnb__tls_peer_host_ok(const cnb_tls_t *t, SSL *ssl, const char *host, char *why, size_t cap)
{
    if (!t->verify)
        return 1;
    X509 *cert = SSL_get0_peer_certificate(ssl);
    if (!cert) {
        snprintf(why, cap, "TLS: the peer sent no certificate");
        return 0;
    }
    int ok = is_ip(host) ? X509_check_ip_asc(cert, host, 0) : X509_check_host(cert, host, 0, 0, NULL);
    if (ok == 1)
        return 1;
    snprintf(why, cap, "TLS: the peer's certificate is not for host %s, the host of its node name",
             host);
    return 0;
}

const char *cnb__tls_why(SSL *ssl, int ret, char *buf, size_t cap)
{
    int err = SSL_get_error(ssl, ret);
    long vr = SSL_get_verify_result(ssl);
    unsigned long e = ERR_peek_error();
    if (vr != X509_V_OK) {
        snprintf(buf, cap, "TLS: the peer's certificate was refused: %s",
                 X509_verify_cert_error_string(vr));
    } else if (err == SSL_ERROR_SSL && e &&
               (ERR_GET_REASON(e) == SSL_R_TLSV1_ALERT_PROTOCOL_VERSION ||
                ERR_GET_REASON(e) == SSL_R_UNSUPPORTED_PROTOCOL ||
                ERR_GET_REASON(e) == SSL_R_NO_PROTOCOLS_AVAILABLE ||
                ERR_GET_REASON(e) == SSL_R_WRONG_SSL_VERSION)) {
        snprintf(buf, cap, "TLS: no protocol version in common with the peer (this node allows "
                           "%s; --tls-versions)",
                 SSL_get_min_proto_version(ssl) == SSL_get_max_proto_version(ssl)
                     ? (SSL_get_max_proto_version(ssl) == TLS1_3_VERSION ? "TLS 1.3 only"
                                                                         : "TLS 1.2 only")
                     : "TLS 1.2 and 1.3");
    } else if (err == SSL_ERROR_SSL && e &&
               (ERR_GET_REASON(e) == SSL_R_NO_SHARED_CIPHER ||
                ERR_GET_REASON(e) == SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE)) {
        snprintf(buf, cap, "TLS: no cipher in common with the peer (%s)",
                 ERR_reason_error_string(e));
    } else if (err == SSL_ERROR_SSL && e && ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
        snprintf(buf, cap, "TLS: the peer sent no certificate and this node verifies peers "
                           "(--tls-verify peer)");
    } else if (err == SSL_ERROR_SSL && e) {
        char t[200];
        ERR_error_string_n(e, t, sizeof(t));
        const char *reason = ERR_reason_error_string(e);
        snprintf(buf, cap, "TLS: %s (%s)", reason ? reason : "error", t);
    } else if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN) {
        snprintf(buf, cap, "TLS: the peer closed the connection");
    } else {
        snprintf(buf, cap, "TLS: error %d", err);
    }
    ERR_clear_error();
    return buf;
}

void cnb__tls_describe(SSL *ssl, char *buf, size_t cap)
{
    const SSL_CIPHER *ci = SSL_get_current_cipher(ssl);
    snprintf(buf, cap, "%s %s%s", SSL_get_version(ssl), ci ? SSL_CIPHER_get_name(ci) : "?",
             SSL_session_reused(ssl) ? ", session resumed" : "");
}
