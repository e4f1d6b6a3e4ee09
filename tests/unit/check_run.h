/* check_run.h: runs one Check suite and turns its result into the exit status
 * scripts/run-tests expects; shared by the unit suites (tests/unit/test_*.c). */
#ifndef CNB_CHECK_RUN_H
#define CNB_CHECK_RUN_H

#include <check.h>

/* Runs every test of s (forked, as Check does by default), frees it, and
 * returns 0 when all passed, 1 otherwise. */
static inline int cnb_check_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

#endif /* CNB_CHECK_RUN_H */
