/* test_log.c: Check tests of the logger (cnode/log.c): escaping of text that
 * came from a peer (newlines, ANSI escapes, invalid and line-breaking UTF-8),
 * the per-call-site rate limiter, and both together through cnb__log, whose
 * output (fd 2) is read back from a temporary file. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_run.h"
#include "log.h"
#include "node_int.h"

static const char *esc(const char *in)
{
    static char out[512];
    cnb__log_escape(in, out, sizeof(out));
    return out;
}

START_TEST(escape_controls)
{
    ck_assert_str_eq(esc("plain text: a@b 1.2"), "plain text: a@b 1.2");
    ck_assert_str_eq(esc("a\nb\rc\td"), "a\\nb\\rc\\td");
    ck_assert_str_eq(esc("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
    ck_assert_str_eq(esc("bell\a del\x7f"), "bell\\x07 del\\x7f");
    /* The escape character itself is escaped, so "\\n" in the input cannot
     * pass for an escaped newline. */
    ck_assert_str_eq(esc("back\\slash\\n"), "back\\\\slash\\\\n");
}
END_TEST

START_TEST(escape_utf8)
{
    ck_assert_str_eq(esc("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
                     "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    ck_assert_str_eq(esc("bad \xff\xfe end"), "bad \\xff\\xfe end");
    ck_assert_str_eq(esc("cut \xe2\x82"), "cut \\xe2\\x82");
    ck_assert_str_eq(esc("overlong \xc0\xaf"), "overlong \\xc0\\xaf");
    ck_assert_str_eq(esc("surrogate \xed\xa0\x80"), "surrogate \\xed\\xa0\\x80");
    /* C1 CSI, LINE SEPARATOR, RIGHT-TO-LEFT OVERRIDE. */
    ck_assert_str_eq(esc("c1 \xc2\x9b"), "c1 \\xc2\\x9b");
    ck_assert_str_eq(esc("ls \xe2\x80\xa8"), "ls \\xe2\\x80\\xa8");
    ck_assert_str_eq(esc("rlo \xe2\x80\xae"), "rlo \\xe2\\x80\\xae");
}
END_TEST

START_TEST(escape_truncates_whole)
{
    char out[6];
    size_t n = cnb__log_escape("\n\n\n", out, sizeof(out));
    ck_assert_uint_eq(n, 4);
    ck_assert_str_eq(out, "\\n\\n");
    n = cnb__log_escape("ab\x01", out, sizeof(out));
    ck_assert_str_eq(out, "ab"); /* "\\x01" does not fit: left out whole */
    char one[1];
    ck_assert_uint_eq(cnb__log_escape("x", one, 1), 0);
    ck_assert_str_eq(one, "");
}
END_TEST

static const char site_a[] = "site a %d", site_b[] = "site b %d";

START_TEST(limiter_burst_then_report)
{
    static cnb_rl_t rl;
    memset(&rl, 0, sizeof(rl));
    cnb_rl_report_t rep;
    int admitted = 0;
    for (int i = 0; i < 1000; i++) {
        admitted += cnb__rl_admit(&rl, site_a, 1, "n@h", NULL, site_a, 5000 + i % 500, &rep);
        ck_assert_uint_eq(rep.suppressed, 0);
    }
    ck_assert_int_eq(admitted, CNB_RL_BURST);
    /* Another site is not held back by the first. */
    ck_assert_int_eq(cnb__rl_admit(&rl, site_b, 1, "n@h", NULL, site_b, 5100, &rep), 1);
    /* Nothing to report before the window ends. */
    ck_assert_int_eq(cnb__rl_expired(&rl, 5999, &rep), 0);
    /* The next line after the window gets the count of the last one. */
    ck_assert_int_eq(cnb__rl_admit(&rl, site_a, 1, "n@h", NULL, site_a, 6000, &rep), 1);
    ck_assert_uint_eq(rep.suppressed, 1000 - CNB_RL_BURST);
    ck_assert_str_eq(rep.who, "n@h");
    ck_assert_ptr_eq(rep.fmt, site_a);
    ck_assert_int_eq(rep.level, 1);
}
END_TEST

START_TEST(limiter_reports_when_quiet)
{
    static cnb_rl_t rl;
    memset(&rl, 0, sizeof(rl));
    cnb_rl_report_t rep;
    for (int i = 0; i < CNB_RL_BURST + 7; i++)
        cnb__rl_admit(&rl, site_a, 2, "n@h", NULL, site_a, 100, &rep);
    ck_assert_int_eq(cnb__rl_expired(&rl, 1099, &rep), 0);
    ck_assert_int_eq(cnb__rl_expired(&rl, 1100, &rep), 1);
    ck_assert_uint_eq(rep.suppressed, 7);
    ck_assert_int_eq(rep.window_ms, 1000);
    ck_assert_int_eq(cnb__rl_expired(&rl, 1100, &rep), 0); /* reported once */
    /* The level is part of the key. */
    for (int i = 0; i < CNB_RL_BURST; i++)
        ck_assert_int_eq(cnb__rl_admit(&rl, site_b, 1, "n@h", NULL, site_b, 2000, &rep), 1);
    ck_assert_int_eq(cnb__rl_admit(&rl, site_b, 2, "n@h", NULL, site_b, 2000, &rep), 1);
}
END_TEST

START_TEST(limiter_full_table_loses_no_count)
{
    static cnb_rl_t rl;
    memset(&rl, 0, sizeof(rl));
    static char keys[4 * CNB_RL_SLOTS];
    cnb_rl_report_t rep;
    unsigned long dropped = 0, reported = 0;
    for (int round = 0; round < 3; round++)
        for (int k = 0; k < (int)sizeof(keys); k++)
            for (int i = 0; i < CNB_RL_BURST + 1; i++) {
                if (!cnb__rl_admit(&rl, &keys[k], 1, "n@h", NULL, "x", round * 10 + k % 7, &rep))
                    dropped++;
                reported += rep.suppressed;
            }
    while (cnb__rl_expired(&rl, 1 << 20, &rep))
        reported += rep.suppressed;
    ck_assert_uint_gt(dropped, 0);
    ck_assert_uint_eq(reported, dropped);
}
END_TEST

/* Runs f with fd 2 sent to a temporary file; returns what was written. */
static char *capture_stderr(void (*f)(void))
{
    char path[] = "/tmp/cnb_test_log_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    int saved = dup(2);
    dup2(fd, 2);
    f();
    dup2(saved, 2);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)len + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(pread(fd, buf, (size_t)len, 0), len);
    close(fd);
    return buf;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void log_forgery(void)
{
    cnb__log(NULL, CNB_LOG_WARNING, "refused %s: bad name",
             "x\n2026-01-01T00:00:00.000Z [error] cnode: forged\x1b[2J");
}

START_TEST(logger_escapes_peer_text)
{
    char *out = capture_stderr(log_forgery);
    ck_assert_int_eq(count_lines(out), 1);
    ck_assert_ptr_nonnull(strstr(out, "[warning] cnode: refused x\\n2026-01-01T00:00:00.000Z "
                                      "[error] cnode: forged\\x1b[2J: bad name\n"));
    free(out);
}
END_TEST

static void log_flood(void)
{
    for (int i = 0; i < 5000; i++)
        cnb__log(NULL, CNB_LOG_ERROR, "flood line %d", i);
    usleep((CNB_RL_WINDOW_MS + 50) * 1000);
    cnb__log_tick();
}

START_TEST(logger_rate_limits_a_flood)
{
    char *out = capture_stderr(log_flood);
    ck_assert_int_eq(count_lines(out), CNB_RL_BURST + 1);
    char want[96];
    snprintf(want, sizeof(want), "suppressed %d similar lines in ", 5000 - CNB_RL_BURST);
    ck_assert_ptr_nonnull(strstr(out, want));
    ck_assert_ptr_nonnull(strstr(out, "(\"flood line %d\")\n"));
    free(out);
}
END_TEST

/* What a host's log hook received. */
typedef struct sink {
    int lines;
    int level[8];
    char node[8][64];
    char text[8][256];
} sink_t;

static void hook(int level, const char *node, const char *line, void *user)
{
    sink_t *k = user;
    if (k->lines < 8) {
        k->level[k->lines] = level;
        snprintf(k->node[k->lines], sizeof(k->node[0]), "%s", node);
        snprintf(k->text[k->lines], sizeof(k->text[0]), "%s", line);
    }
    k->lines++;
}

static sink_t hook_sink;

static void log_through_hook(void)
{
    memset(&hook_sink, 0, sizeof(hook_sink));
    cnb_node_opts_t o = {.sname = "hooked@localhost", .cookie = "c", .log_level = CNB_LOG_INFO,
                         .log = hook, .log_user = &hook_sink};
    cnb_node_t *n = NULL;
    ck_assert_int_eq(cnb_node_create(&o, &n), 0);
    cnb_node_log(n, CNB_LOG_WARNING, "peer said %s", "a\n[error] forged");
    cnb_node_log(n, CNB_LOG_DEBUG, "below the level: %d", 1);
    for (int i = 0; i < CNB_RL_BURST + 30; i++)
        cnb_node_log(n, CNB_LOG_INFO, "hook flood %d", i);
    /* What the limiter held back is reported to the hook at destroy, and
     * nothing comes after. */
    cnb_node_destroy(n);
    /* Errors of a node that cannot be created reach its hook too. */
    o.sname = "bad name@localhost";
    ck_assert_int_eq(cnb_node_create(&o, &n), CNB_EINVAL);
}

START_TEST(log_hook_gets_lines_not_stderr)
{
    char *out = capture_stderr(log_through_hook);
    ck_assert_str_eq(out, ""); /* stderr stays silent: every line went to the hook */
    free(out);
    sink_t *k = &hook_sink;
    /* warning + a burst of the flood + the report + the create error */
    ck_assert_int_eq(k->lines, 1 + CNB_RL_BURST + 1 + 1);
    ck_assert_int_eq(k->level[0], CNB_LOG_WARNING);
    ck_assert_str_eq(k->node[0], "hooked@localhost");
    ck_assert_str_eq(k->text[0], "peer said a\\n[error] forged");
    ck_assert_str_eq(k->text[1], "hook flood 0");
    ck_assert_int_eq(k->level[1], CNB_LOG_INFO);
}
END_TEST

/* The last line a hook received, for the two lines past the 8 the sink
 * above keeps: the limiter's report and a create error. */
static struct {
    int level;
    char node[64], text[256];
} last;

static void last_hook(int level, const char *node, const char *line, void *user)
{
    (void)user;
    last.level = level;
    snprintf(last.node, sizeof(last.node), "%s", node);
    snprintf(last.text, sizeof(last.text), "%s", line);
}

START_TEST(log_hook_gets_reports_and_create_errors)
{
    memset(&last, 0, sizeof(last));
    cnb_node_opts_t o = {.sname = "tail@localhost", .cookie = "c", .log_level = CNB_LOG_INFO,
                         .log = last_hook};
    cnb_node_t *n = NULL;
    ck_assert_int_eq(cnb_node_create(&o, &n), 0);
    for (int i = 0; i < CNB_RL_BURST + 30; i++)
        cnb_node_log(n, CNB_LOG_INFO, "tail flood %d", i);
    cnb_node_destroy(n);
    ck_assert_int_eq(last.level, CNB_LOG_INFO);
    ck_assert_str_eq(last.node, "tail@localhost");
    ck_assert_ptr_nonnull(strstr(last.text, "suppressed 30 similar lines in "));
    ck_assert_ptr_nonnull(strstr(last.text, "(\"tail flood %d\")"));
    o.sname = "bad name@localhost";
    ck_assert_int_eq(cnb_node_create(&o, &n), CNB_EINVAL);
    ck_assert_int_eq(last.level, CNB_LOG_ERROR);
    ck_assert_str_eq(last.node, "cnode");
    ck_assert_ptr_nonnull(strstr(last.text, "bad node name"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, escape_controls);
    tcase_add_test(tc, log_hook_gets_lines_not_stderr);
    tcase_add_test(tc, log_hook_gets_reports_and_create_errors);
    tcase_add_test(tc, escape_utf8);
    tcase_add_test(tc, escape_truncates_whole);
    tcase_add_test(tc, limiter_burst_then_report);
    tcase_add_test(tc, limiter_reports_when_quiet);
    tcase_add_test(tc, limiter_full_table_loses_no_count);
    tcase_add_test(tc, logger_escapes_peer_text);
    tcase_add_test(tc, logger_rate_limits_a_flood);
    suite_add_tcase(s, tc);
    return cnb_check_run(s);
}
