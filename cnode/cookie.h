/* cookie.h: where a node's cookie comes from, checked as erl checks
 * ~/.erlang.cookie. Tests: tests/unit/test_cookie.c and
 * tests/integration/hostile_auth_tests.erl. */
#ifndef CNB_COOKIE_H
#define CNB_COOKIE_H

#include <stddef.h>

#include "cnode_bridge.h"

/* Fills out (cap bytes) with the cookie: opts->cookie when given (not empty,
 * shorter than cap), else the file opts->cookie_file, else ~/.erlang.cookie
 * or, when that does not exist, $XDG_CONFIG_HOME/erlang/.erlang.cookie (as
 * erl). A file must be a regular file that only its owner may read or write
 * (no group or other bits) and hold one line of printable ASCII characters,
 * optionally followed by newlines, carriage returns and spaces: an empty
 * cookie, a NUL or any other byte is refused. Returns 0, or CNB_EINVAL
 * (bad cookie or file: one log line through n says why) or CNB_ENOENT (no
 * file). */
int cnb__cookie_load(const cnb_node_t *n, const cnb_node_opts_t *opts, char *out, size_t cap);

#endif /* CNB_COOKIE_H */
