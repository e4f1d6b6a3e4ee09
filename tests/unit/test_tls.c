/* test_tls.c: Check tests of TLS distribution's configuration (cnode/tls.c)
 * without peers: --tls-versions parsing, the options cnb_node_create refuses
 * (missing or broken files, a key without a certificate, verification
 * without a CA, bad versions or ciphers), and reload (a broken file leaves the old
 * context; TLS off: CNB_ESTATE), the client's session cache (tls_sess.c).
 * The certificate is made with the openssl
 * program in a temporary directory. Handshakes: tests/integration/tls_tests.erl. */
#include <check.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_run.h"
#include "cnode_bridge.h"
#include "tls.h"

static char dir[64], cert[128], key[128];

static void make_cert(void)
{
    snprintf(dir, sizeof(dir), "/tmp/cnb_test_tls_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(cert, sizeof(cert), "%s/c.pem", dir);
    snprintf(key, sizeof(key), "%s/c.key", dir);
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s "
             "-out %s -days 2 -subj /CN=localhost >/dev/null 2>&1",
             key, cert);
    ck_assert_int_eq(system(cmd), 0);
}

static void remove_cert(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static cnb_node_opts_t opts(void)
{
    cnb_node_opts_t o;
    memset(&o, 0, sizeof(o));
    o.sname = "tlsunit@localhost";
    o.cookie = "unit-cookie";
    o.no_epmd = 1;
    o.log_level = CNB_LOG_ERROR;
    o.tls_cert = cert;
    o.tls_key = key;
    o.tls_cacert = cert; /* self-signed: its own CA */
    return o;
}

static int create(const cnb_node_opts_t *o)
{
    cnb_node_t *n = NULL;
    int rc = cnb_node_create(o, &n);
    if (n)
        cnb_node_destroy(n);
    return rc;
}

START_TEST(versions)
{
    int lo, hi;
    ck_assert_int_eq(cnb__tls_versions(NULL, &lo, &hi), 0);
    ck_assert_int_eq(lo, TLS1_2_VERSION);
    ck_assert_int_eq(hi, TLS1_3_VERSION);
    ck_assert_int_eq(cnb__tls_versions("1.3", &lo, &hi), 0);
    ck_assert_int_eq(lo, TLS1_3_VERSION);
    ck_assert_int_eq(hi, TLS1_3_VERSION);
    ck_assert_int_eq(cnb__tls_versions("1.2", &lo, &hi), 0);
    ck_assert_int_eq(hi, TLS1_2_VERSION);
    ck_assert_int_eq(cnb__tls_versions("1.3,1.2", &lo, &hi), 0);
    ck_assert_int_eq(lo, TLS1_2_VERSION);
    ck_assert_int_eq(hi, TLS1_3_VERSION);
    const char *bad[] = {"", "1.1", "1.2,", ",1.3", "1.2,,1.3", "1.3 ", "tls1.3", "1.33"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(cnb__tls_versions(bad[i], &lo, &hi) == CNB_EINVAL, "accepted '%s'", bad[i]);
}
END_TEST

START_TEST(create_refusals)
{
    make_cert();
    cnb_node_opts_t o = opts();
    ck_assert_int_eq(create(&o), 0);
    o.tls_cert = "/nonexistent/c.pem";
    ck_assert_int_eq(create(&o), CNB_EINVAL);
    o = opts();
    o.tls_cert = NULL; /* a key and CA without a certificate */
    ck_assert_int_eq(create(&o), CNB_EINVAL);
    o = opts();
    o.tls_cacert = NULL; /* verifying peers needs a CA */
    ck_assert_int_eq(create(&o), CNB_EINVAL);
    o.tls_verify_none = 1;
    ck_assert_int_eq(create(&o), 0);
    o = opts();
    o.tls_key = cert; /* no key in the certificate's file */
    ck_assert_int_eq(create(&o), CNB_EINVAL);
    o = opts();
    o.tls_versions = "1.4";
    ck_assert_int_eq(create(&o), CNB_EINVAL);
    o = opts();
    o.tls_ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256::TLS_AES_128_GCM_SHA256";
    ck_assert_int_eq(create(&o), 0);
    o.tls_ciphers = "TLS_AES_128_GCM_SHA256"; /* 1.3 suites only: 1.2 keeps its defaults */
    ck_assert_int_eq(create(&o), 0);
    o.tls_ciphers = "NO-SUCH-CIPHER";
    ck_assert_int_eq(create(&o), CNB_EINVAL);
    o.tls_ciphers = "TLS_NO_SUCH_SUITE";
    ck_assert_int_eq(create(&o), CNB_EINVAL);
    remove_cert();
}
END_TEST

START_TEST(reload)
{
    make_cert();
    cnb_node_opts_t o = opts();
    cnb_node_t *n = NULL;
    ck_assert_int_eq(cnb_node_create(&o, &n), 0);
    ck_assert_int_eq(cnb_node_tls_reload(n), 0);
    /* A broken certificate file: refused, the old context stays. */
    char saved[160];
    snprintf(saved, sizeof(saved), "%s.saved", cert);
    ck_assert_int_eq(rename(cert, saved), 0);
    FILE *f = fopen(cert, "w");
    ck_assert_ptr_nonnull(f);
    fputs("not a certificate\n", f);
    fclose(f);
    ck_assert_int_eq(cnb_node_tls_reload(n), CNB_EINVAL);
    ck_assert_int_eq(rename(saved, cert), 0);
    ck_assert_int_eq(cnb_node_tls_reload(n), 0);
    cnb_node_destroy(n);
    /* TLS off: nothing to reload. */
    o.tls_cert = o.tls_key = o.tls_cacert = NULL;
    ck_assert_int_eq(cnb_node_create(&o, &n), 0);
    ck_assert_int_eq(cnb_node_tls_reload(n), CNB_ESTATE);
    cnb_node_destroy(n);
    remove_cert();
}
END_TEST

/* A resumable session (it has an ID) of protocol version v, id byte k. */
static SSL_SESSION *session(int v, unsigned char k)
{
    SSL_SESSION *s = SSL_SESSION_new();
    ck_assert_ptr_nonnull(s);
    unsigned char id[8] = {k, 1, 2, 3, 4, 5, 6, 7};
    ck_assert_int_eq(SSL_SESSION_set1_id(s, id, sizeof(id)), 1);
    ck_assert_int_eq(SSL_SESSION_set_protocol_version(s, v), 1);
    return s;
}

/* The client's session cache: one session per peer, the newest replacing
 * the older; a TLS 1.2 session offered again and again, a TLS 1.3 ticket
 * once; bounded (the least recently used peer goes); emptied by clear. */
START_TEST(client_sessions)
{
    cnb_tls_sess_t *c = cnb__tls_sess_new();
    ck_assert_ptr_nonnull(c);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    ck_assert_ptr_nonnull(ctx);
    SSL_SESSION *s12 = session(TLS1_2_VERSION, 1), *s12b = session(TLS1_2_VERSION, 2);
    ck_assert_int_eq(cnb__tls_sess_put(c, "a@h", s12), 1);
    ck_assert_int_eq(cnb__tls_sess_put(c, "a@h", s12b), 1); /* replaces s12 (freed) */
    ck_assert_uint_eq(cnb__tls_sess_count(c), 1);
    for (int k = 0; k < 2; k++) {
        SSL *ssl = SSL_new(ctx);
        ck_assert_int_eq(cnb__tls_sess_offer(c, ssl, "a@h"), 1);
        ck_assert_ptr_eq(SSL_get0_session(ssl), s12b);
        SSL_free(ssl);
    }
    SSL *ssl = SSL_new(ctx);
    ck_assert_int_eq(cnb__tls_sess_offer(c, ssl, "b@h"), 0);
    ck_assert_ptr_null(SSL_get0_session(ssl));
    SSL_free(ssl);

    SSL_SESSION *s13 = session(TLS1_3_VERSION, 3);
    ck_assert_int_eq(cnb__tls_sess_put(c, "b@h", s13), 1);
    ssl = SSL_new(ctx);
    ck_assert_int_eq(cnb__tls_sess_offer(c, ssl, "b@h"), 1);
    ck_assert_ptr_eq(SSL_get0_session(ssl), s13);
    SSL_free(ssl);
    ssl = SSL_new(ctx);
    ck_assert_int_eq(cnb__tls_sess_offer(c, ssl, "b@h"), 0); /* offered once */
    SSL_free(ssl);

    /* Not resumable (no ID, no ticket), or no peer: not taken. */
    SSL_SESSION *bare = SSL_SESSION_new();
    ck_assert_int_eq(cnb__tls_sess_put(c, "c@h", bare), 0);
    ck_assert_int_eq(cnb__tls_sess_put(c, NULL, bare), 0);
    SSL_SESSION_free(bare);

    /* 300 peers: 256 kept; a@h, used last before them, went first. */
    char peer[32];
    for (int i = 0; i < 300; i++) {
        snprintf(peer, sizeof(peer), "p%d@h", i);
        ck_assert_int_eq(cnb__tls_sess_put(c, peer, session(TLS1_2_VERSION, 9)), 1);
    }
    ck_assert_uint_eq(cnb__tls_sess_count(c), 256);
    ssl = SSL_new(ctx);
    ck_assert_int_eq(cnb__tls_sess_offer(c, ssl, "a@h"), 0);
    ck_assert_int_eq(cnb__tls_sess_offer(c, ssl, "p299@h"), 1);
    ck_assert_int_eq(cnb__tls_sess_offer(c, ssl, "p43@h"), 0);
    ck_assert_int_eq(cnb__tls_sess_offer(c, ssl, "p44@h"), 1);
    SSL_free(ssl);
    cnb__tls_sess_clear(c);
    ck_assert_uint_eq(cnb__tls_sess_count(c), 0);
    cnb__tls_sess_free(c);
    SSL_CTX_free(ctx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, versions);
    tcase_add_test(tc, create_refusals);
    tcase_add_test(tc, reload);
    tcase_add_test(tc, client_sessions);
    suite_add_tcase(s, tc);
    return cnb_check_run(s);
}
