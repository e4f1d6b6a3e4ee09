/* etf_check.h: bounds-checked skipping of one external-format term, so that
 * every term off the wire is known to be whole before ei (which takes no
 * lengths) decodes it. Tests: tests/unit/test_frame.c. */
#ifndef CNB_ETF_CHECK_H
#define CNB_ETF_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* Returns the length in bytes of the one term at p (no version byte), or
 * CNB_EMALFORMED / CNB_ETRUNC. Never reads outside [p, p+len). Rejects atom
 * cache references and compressed terms, which never appear on connections
 * set up by this node. Funs are checked inside too (ei_decode_fun reads their
 * module, indexes and pid without a bound): those fields and the free
 * variables must fill exactly the fun's Size; funs nested in free variables
 * more than 64 deep are refused. Iterative: no recursion whatever the nesting. */
long cnb__etf_skip(const uint8_t *p, size_t len);

#endif
