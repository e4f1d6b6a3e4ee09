/* test_cookie.c: Check tests of reading the cookie (cnode/cookie.c): the
 * checks erl makes on ~/.erlang.cookie (owner-only mode, a regular file,
 * printable text), an empty or NUL-starting cookie refused, and the default
 * places (HOME, then the XDG config directory). */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_run.h"
#include "cookie.h"

static char dir[] = "/tmp/cnb_test_cookie_XXXXXX";

static const char *put(const char *name, const char *text, size_t len, mode_t mode)
{
    static char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    ck_assert_int_eq(chmod(path, mode), 0);
    return path;
}

static int load_file(const char *path, char *out)
{
    cnb_node_opts_t o;
    memset(&o, 0, sizeof(o));
    o.cookie_file = path;
    return cnb__cookie_load(NULL, &o, out, 64);
}

static void setup(void)
{
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

START_TEST(good_files)
{
    char out[64];
    ck_assert_int_eq(load_file(put("a", "SECRET\n", 7, 0400), out), 0);
    ck_assert_str_eq(out, "SECRET");
    /* As erl: spaces inside and before the newline belong to the cookie. */
    ck_assert_int_eq(load_file(put("b", "two words \r\n\n ", 14, 0600), out), 0);
    ck_assert_str_eq(out, "two words ");
    ck_assert_int_eq(load_file(put("c", "x", 1, 0600), out), 0);
    ck_assert_str_eq(out, "x");
}
END_TEST

START_TEST(bad_files)
{
    char out[64];
    ck_assert_int_eq(load_file(put("m1", "SECRET\n", 7, 0644), out), CNB_EINVAL);
    ck_assert_int_eq(load_file(put("m2", "SECRET\n", 7, 0640), out), CNB_EINVAL);
    ck_assert_int_eq(load_file(put("m3", "SECRET\n", 7, 0602), out), CNB_EINVAL);
    ck_assert_int_eq(load_file(put("e1", "", 0, 0600), out), CNB_EINVAL);
    ck_assert_int_eq(load_file(put("e2", "\n \r\n", 4, 0600), out), CNB_EINVAL);
    ck_assert_int_eq(load_file(put("n1", "\0SECRET", 7, 0600), out), CNB_EINVAL);
    ck_assert_int_eq(load_file(put("n2", "SEC\0RET", 7, 0600), out), CNB_EINVAL);
    ck_assert_int_eq(load_file(put("c1", "SEC\nRET", 7, 0600), out), CNB_EINVAL);
    ck_assert_int_eq(load_file(put("c2", "SEC\x1b[0m", 7, 0600), out), CNB_EINVAL);
    ck_assert_int_eq(load_file(put("u1", "caf\xc3\xa9", 5, 0600), out), CNB_EINVAL);
    char big[100];
    memset(big, 'x', sizeof(big));
    ck_assert_int_eq(load_file(put("long", big, sizeof(big), 0600), out), CNB_EINVAL);
    ck_assert_int_eq(load_file("/nonexistent/cookie", out), CNB_EINVAL);
    ck_assert_int_eq(load_file(dir, out), CNB_EINVAL); /* a directory */
}
END_TEST

START_TEST(text_cookie)
{
    char out[64];
    cnb_node_opts_t o;
    memset(&o, 0, sizeof(o));
    o.cookie = "given";
    o.cookie_file = "/nonexistent/cookie"; /* the text wins */
    ck_assert_int_eq(cnb__cookie_load(NULL, &o, out, sizeof(out)), 0);
    ck_assert_str_eq(out, "given");
    o.cookie = "";
    ck_assert_int_eq(cnb__cookie_load(NULL, &o, out, sizeof(out)), CNB_EINVAL);
}
END_TEST

START_TEST(default_places)
{
    char out[64], xdg[300];
    cnb_node_opts_t o;
    memset(&o, 0, sizeof(o));
    setenv("HOME", dir, 1);
    snprintf(xdg, sizeof(xdg), "%s/cfg", dir);
    setenv("XDG_CONFIG_HOME", xdg, 1);
    ck_assert_int_eq(cnb__cookie_load(NULL, &o, out, sizeof(out)), CNB_EINVAL); /* none */
    ck_assert_int_eq(mkdir(xdg, 0700), 0);
    snprintf(xdg, sizeof(xdg), "%s/cfg/erlang", dir);
    ck_assert_int_eq(mkdir(xdg, 0700), 0);
    put("cfg/erlang/.erlang.cookie", "XDG\n", 4, 0400);
    ck_assert_int_eq(cnb__cookie_load(NULL, &o, out, sizeof(out)), 0);
    ck_assert_str_eq(out, "XDG");
    put(".erlang.cookie", "HOME\n", 5, 0400);
    ck_assert_int_eq(cnb__cookie_load(NULL, &o, out, sizeof(out)), 0);
    ck_assert_str_eq(out, "HOME");
    /* A bad home file is an error, not a reason to look further. */
    put(".erlang.cookie", "HOME\n", 5, 0644);
    ck_assert_int_eq(cnb__cookie_load(NULL, &o, out, sizeof(out)), CNB_EINVAL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cookie");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, good_files);
    tcase_add_test(tc, bad_files);
    tcase_add_test(tc, text_cookie);
    tcase_add_test(tc, default_places);
    suite_add_tcase(s, tc);
    return cnb_check_run(s);
}
