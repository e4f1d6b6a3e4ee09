/* cookie.c: reading and checking the node's cookie (see cookie.h).
 * Tests: tests/unit/test_cookie.c, tests/integration/hostile_auth_tests.erl. */
#include "cookie.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node_int.h"

/* The file's text as erl's auth module reads a cookie file: the longest run
 * of printable characters from the start is the cookie; after it only
 * '\n', '\r' and ' ' may follow. Returns 0 or CNB_EINVAL with *why set. */
static int parse(const char *buf, size_t len, char *out, size_t cap, const char **why)
{
    size_t i = 0;
    while (i < len && buf[i] >= 0x20 && buf[i] <= 0x7e)
        i++;
    for (size_t j = i; j < len; j++)
        if (buf[j] != '\n' && buf[j] != '\r' && buf[j] != ' ') {
            *why = buf[j] ? "it holds a byte that is not a printable ASCII character"
                          : "it holds a NUL byte";
            return CNB_EINVAL;
        }
    if (i == 0) {
        *why = "the cookie in it is empty";
        return CNB_EINVAL;
    }
    if (i >= cap) {
        *why = "the cookie in it is too long";
        return CNB_EINVAL;
    }
    memcpy(out, buf, i);
    out[i] = 0;
    return 0;
}

static int read_file(const cnb_node_t *n, const char *path, char *out, size_t cap)
{
    char buf[2048];
    const char *why = NULL;
    int rc = CNB_EINVAL;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            return CNB_ENOENT;
        cnb__log(n, CNB_LOG_ERROR, "cannot read the cookie file %s: %s", path, strerror(errno));
        return CNB_EINVAL;
    }
    if (fstat(fd, &st) != 0) {
        why = strerror(errno);
    } else if (!S_ISREG(st.st_mode)) {
        why = "not a regular file";
    } else if (st.st_mode & 077) {
        cnb__log(n, CNB_LOG_ERROR,
                 "refused the cookie file %s: mode 0%03o lets others read or change it; it "
                 "must be accessible by its owner only (chmod 400 %s)",
                 path, (unsigned)(st.st_mode & 0777), path);
        goto out;
    } else {
        ssize_t len = read(fd, buf, sizeof(buf));
        if (len < 0)
            why = strerror(errno);
        else if ((size_t)len == sizeof(buf))
            why = "it is too long";
        else
            rc = parse(buf, (size_t)len, out, cap, &why);
    }
    if (rc)
        cnb__log(n, CNB_LOG_ERROR, "refused the cookie file %s: %s", path, why);
out:
    explicit_bzero(buf, sizeof(buf));
    close(fd);
    return rc;
}

int cnb__cookie_load(const cnb_node_t *n, const cnb_node_opts_t *opts, char *out, size_t cap)
{
    if (opts->cookie) {
        if (!opts->cookie[0] || strlen(opts->cookie) >= cap) {
            cnb__log(n, CNB_LOG_ERROR, "bad cookie: empty or longer than %zu bytes", cap - 1);
            return CNB_EINVAL;
        }
        snprintf(out, cap, "%s", opts->cookie);
        return 0;
    }
    if (opts->cookie_file) {
        int rc = read_file(n, opts->cookie_file, out, cap);
        if (rc == CNB_ENOENT)
            cnb__log(n, CNB_LOG_ERROR, "the cookie file %s does not exist", opts->cookie_file);
        return rc ? CNB_EINVAL : 0;
    }
    /* erl's order: ~/.erlang.cookie, then the XDG config directory's. */
    char path[2][1024];
    int np = 0, rc = CNB_ENOENT;
    const char *home = getenv("HOME"), *xdg = getenv("XDG_CONFIG_HOME");
    if (home && home[0])
        snprintf(path[np++], sizeof(path[0]), "%s/.erlang.cookie", home);
    if (xdg && xdg[0])
        snprintf(path[np++], sizeof(path[0]), "%s/erlang/.erlang.cookie", xdg);
    else if (home && home[0])
        snprintf(path[np++], sizeof(path[0]), "%s/.config/erlang/.erlang.cookie", home);
    for (int i = 0; i < np && rc == CNB_ENOENT; i++)
        rc = read_file(n, path[i], out, cap);
    if (rc == CNB_ENOENT) {
        cnb__log(n, CNB_LOG_ERROR, "no cookie: give --cookie-file or CNB_COOKIE, or create %s",
                 np ? path[0] : "~/.erlang.cookie");
        rc = CNB_EINVAL;
    }
    return rc;
}
