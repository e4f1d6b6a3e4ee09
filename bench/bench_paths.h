/* bench_paths.h: the driver shared by the micro benchmarks of single code
 * paths (bench_term_paths.c, bench_nif_term.c). Each path is a noinline
 * function run(iterations) over a fixed set of inputs, so that
 *   valgrind --tool=callgrind --toggle-collect=path_<name> BIN <name> <iterations>
 * counts its instructions alone; without arguments every path is timed and
 * printed as `<group>.<name>_ns <median ns per input> ns` for scripts/run-bench
 * (median of 7 runs of about 0.05 s or more each). */
#ifndef BENCH_PATHS_H
#define BENCH_PATHS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct bench_path {
    const char *name;
    void (*run)(long iterations);
    size_t inputs; /* inputs per iteration */
} bench_path_t;

static double bench_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double bench_median_ns(const bench_path_t *pa)
{
    long iters = 1000;
    double t[7];
    for (;;) { /* size a run */
        double t0 = bench_now();
        pa->run(iters);
        if (bench_now() - t0 >= 0.05)
            break;
        iters *= 2;
    }
    for (int r = 0; r < 7; r++) {
        double t0 = bench_now();
        pa->run(iters);
        t[r] = (bench_now() - t0) / (double)iters / (double)pa->inputs * 1e9;
    }
    qsort(t, 7, sizeof t[0], bench_cmp_double);
    return t[3];
}

/* main() of a path benchmark: no argument, time every path; NAME, time that
 * one; NAME ITERATIONS, just run it (for callgrind). */
static int bench_paths_main(const char *group, const bench_path_t *paths, size_t n, int argc,
                            char **argv)
{
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], paths[i].name) != 0)
            continue;
        if (argc > 2)
            paths[i].run(atol(argv[2]));
        else
            printf("%s.%s_ns %.1f ns\n", group, paths[i].name, bench_median_ns(&paths[i]));
    }
    return 0;
}

#endif
