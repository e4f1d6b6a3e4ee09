/* etf_check.h: the bounds- and depth-checked skipper of one external-format
 * term: every term off the wire is checked with it, whole, before ei (which
 * takes no lengths and recurses once per nesting level) decodes it.
 * Tests: tests/unit/test_frame.c, tests/fuzz/fuzz_dist.c, fuzz_dispatch.c. */
#ifndef CNB_ETF_CHECK_H
#define CNB_ETF_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* The deepest nesting a term off the wire may have (a leaf alone is depth 1,
 * [x] and {x} are 2). ei's decoders recurse once per level: ei_skip_term takes
 * about 64 bytes of stack per level, ei_print_term about 2 KB, so 1,000 levels
 * fit in 2 MB, a quarter of the 8 MiB stack the node's own threads get. It is
 * also core/term's limit (CNB__DEFAULT_MAX_DEPTH) for registry keys and values. */
#define CNB_ETF_MAX_DEPTH 1000u

/* Returns the length in bytes of the one term at p (no version byte), or a
 * negative code: CNB_ETRUNC (the term runs past len), CNB_EMALFORMED (not a
 * term ei decodes whole), CNB_EDEPTH (nested deeper than max_depth; the term
 * is otherwise not known to be well formed), CNB_ENOMEM. Never reads outside
 * [p, p+len). Iterative, with an explicit stack: no recursion whatever the
 * nesting. Besides the layout it enforces what ei needs to decode the term
 * without losing its place: atoms of at most 255 characters (255 bytes
 * latin-1, 1,020 bytes UTF-8), EXPORT_EXT as atom, atom, small integer,
 * NEW_FUN_EXT fields of the right types ending exactly at its Size. It
 * rejects what never appears on connections this node sets up: atom cache
 * references, compressed terms, old floats (NEW_FLOATS is mandatory) and
 * old funs. */
long cnb__etf_skip_limit(const uint8_t *p, size_t len, unsigned max_depth);

/* cnb__etf_skip_limit with CNB_ETF_MAX_DEPTH. */
long cnb__etf_skip(const uint8_t *p, size_t len);

#endif
