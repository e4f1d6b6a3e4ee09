/* fuzz_check.h: CHECK(cond) for the libFuzzer targets in tests/fuzz/: a
 * failed property aborts with its file and line, which libFuzzer reports as a
 * crash and keeps the input (scripts/run-fuzz). */
#ifndef CNB_FUZZ_CHECK_H
#define CNB_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
            abort();                                                                   \
        }                                                                              \
    } while (0)

#endif /* CNB_FUZZ_CHECK_H */
