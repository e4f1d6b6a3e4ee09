/* test_auth_limit.c: Check tests of the per-address back-off after failed
 * cookie checks (cnode/auth_limit.c): the schedule, address keys (IPv4,
 * IPv4-mapped IPv6, IPv6 /64), blocking, forgetting, and a full table. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "auth_limit.h"
#include "check_run.h"

static void key4(const char *ip, uint8_t key[16])
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    ck_assert_int_eq(inet_pton(AF_INET, ip, &a.sin_addr), 1);
    ck_assert_int_eq(cnb__auth_key((struct sockaddr *)&a, key), 0);
}

static void key6(const char *ip, uint8_t key[16])
{
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof(a));
    a.sin6_family = AF_INET6;
    ck_assert_int_eq(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
    ck_assert_int_eq(cnb__auth_key((struct sockaddr *)&a, key), 0);
}

START_TEST(schedule)
{
    for (uint32_t f = 0; f <= CNB_AUTH_FREE; f++)
        ck_assert_int_eq(cnb__auth_backoff(f), 0);
    ck_assert_int_eq(cnb__auth_backoff(CNB_AUTH_FREE + 1), CNB_AUTH_BASE_MS);
    ck_assert_int_eq(cnb__auth_backoff(CNB_AUTH_FREE + 2), 2 * CNB_AUTH_BASE_MS);
    ck_assert_int_eq(cnb__auth_backoff(CNB_AUTH_FREE + 3), 4 * CNB_AUTH_BASE_MS);
    ck_assert_int_eq(cnb__auth_backoff(1000), CNB_AUTH_MAX_MS);
    ck_assert_int_eq(cnb__auth_backoff(UINT32_MAX), CNB_AUTH_MAX_MS);
    for (uint32_t f = 1; f < 100; f++)
        ck_assert_int_ge(cnb__auth_backoff(f + 1), cnb__auth_backoff(f));
}
END_TEST

START_TEST(keys)
{
    uint8_t a[16], b[16];
    key4("127.0.0.1", a);
    key6("::ffff:127.0.0.1", b);
    ck_assert_mem_eq(a, b, 16); /* a dual-stack listener sees the same peer */
    key4("127.0.0.2", b);
    ck_assert(memcmp(a, b, 16) != 0);
    key6("2001:db8:1:2::1", a);
    key6("2001:db8:1:2:ffff::9", b);
    ck_assert_mem_eq(a, b, 16); /* one /64 */
    key6("2001:db8:1:3::1", b);
    ck_assert(memcmp(a, b, 16) != 0);
    struct sockaddr sa = {.sa_family = AF_UNIX};
    ck_assert_int_eq(cnb__auth_key(&sa, a), CNB_EINVAL);
}
END_TEST

START_TEST(blocks_and_grows)
{
    cnb_auth_limit_t *t = calloc(1, sizeof(*t));
    uint8_t bad[16], good[16];
    uint32_t fails;
    key4("10.0.0.1", bad);
    key4("10.0.0.2", good);
    int64_t now = 1000000;
    for (int i = 0; i < CNB_AUTH_FREE; i++) {
        cnb__auth_fail(t, bad, now);
        ck_assert_int_eq(cnb__auth_wait(t, bad, now, NULL), 0);
    }
    ck_assert_uint_eq(cnb__auth_fail(t, bad, now), CNB_AUTH_FREE + 1);
    ck_assert_int_eq(cnb__auth_wait(t, bad, now, &fails), CNB_AUTH_BASE_MS);
    ck_assert_uint_eq(fails, CNB_AUTH_FREE + 1);
    ck_assert_int_eq(cnb__auth_wait(t, bad, now + CNB_AUTH_BASE_MS - 1, NULL), 1);
    ck_assert_int_eq(cnb__auth_wait(t, bad, now + CNB_AUTH_BASE_MS, NULL), 0);
    /* Another address is untouched. */
    ck_assert_int_eq(cnb__auth_wait(t, good, now, &fails), 0);
    ck_assert_uint_eq(fails, 0);
    /* The next failure doubles the wait; failures while blocked count too. */
    now += CNB_AUTH_BASE_MS;
    cnb__auth_fail(t, bad, now);
    ck_assert_int_eq(cnb__auth_wait(t, bad, now, NULL), 2 * CNB_AUTH_BASE_MS);
    for (int i = 0; i < 100; i++)
        cnb__auth_fail(t, bad, now);
    ck_assert_int_eq(cnb__auth_wait(t, bad, now, NULL), CNB_AUTH_MAX_MS);
    /* Quiet long enough: forgotten, the free failures are back. */
    now += CNB_AUTH_FORGET_MS;
    ck_assert_int_eq(cnb__auth_wait(t, bad, now, &fails), 0);
    ck_assert_uint_eq(fails, 0);
    ck_assert_uint_eq(cnb__auth_fail(t, bad, now), 1);
    cnb__auth_free(t);
}
END_TEST

/* Many more addresses than entries: nothing breaks, and the address failing
 * right now is always remembered (the one idle longest gives way). */
START_TEST(full_table)
{
    cnb_auth_limit_t *t = calloc(1, sizeof(*t));
    uint8_t k[16];
    for (uint32_t i = 0; i < 20000; i++) {
        struct sockaddr_in a;
        memset(&a, 0, sizeof(a));
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(0x0a000000u + i);
        cnb__auth_key((struct sockaddr *)&a, k);
        for (int j = 0; j <= CNB_AUTH_FREE; j++)
            cnb__auth_fail(t, k, 5000 + i);
        ck_assert_int_eq(cnb__auth_wait(t, k, 5000 + i, NULL), CNB_AUTH_BASE_MS);
    }
    cnb__auth_free(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("auth_limit");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, schedule);
    tcase_add_test(tc, keys);
    tcase_add_test(tc, blocks_and_grows);
    tcase_add_test(tc, full_table);
    suite_add_tcase(s, tc);
    return cnb_check_run(s);
}
