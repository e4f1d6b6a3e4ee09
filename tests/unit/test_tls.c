/* test_tls.c: Check tests of TLS distribution's configuration (cnode/tls.c)
 * without peers: --tls-versions parsing, the options cnb_node_create refuses
 * (missing or broken files, a key without a certificate, verification
 * without a CA, bad versions or ciphers), and reload (a broken file leaves the old
 * context; TLS off: CNB_ESTATE). The certificate is made with the openssl
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

int main(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, versions);
    tcase_add_test(tc, create_refusals);
    tcase_add_test(tc, reload);
    suite_add_tcase(s, tc);
    return cnb_check_run(s);
}
