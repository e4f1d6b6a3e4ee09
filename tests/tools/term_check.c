/* term_check: drives core/term from tests/integration/term_prop_tests.erl.
 *
 * Reads records from stdin (or from the file named by the last argument):
 * [u32 big-endian length][ETF bytes], repeated, until end of input or a length
 * of 0xFFFFFFFF. For each record it writes one line to stdout:
 *   OK <hex of canonical bytes> <cnb_term_hash as 16 hex digits>
 *   ERR <error name, e.g. CNB_EMALFORMED>
 * With --compare the records come in pairs (A, B), each canonicalised first,
 * and the line is `CMP <-1|0|1>` (cnb_term_compare) or `ERR <name>`.
 * Options --max-depth N, --max-size N, --max-decompressed N set the limits.
 * Built by the Makefile into build/tests/tools/term_check. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnb_term.h"

typedef struct outbuf {
    char *b;
    size_t len, cap;
} outbuf_t;

static void out_flush(outbuf_t *o)
{
    if (o->len && fwrite(o->b, 1, o->len, stdout) != o->len) {
        perror("term_check: write");
        exit(2);
    }
    o->len = 0;
    fflush(stdout);
}

static void out_room(outbuf_t *o, size_t n)
{
    if (o->cap - o->len >= n)
        return;
    if (o->len)
        out_flush(o);
    if (o->cap < n) {
        free(o->b);
        o->cap = n + (1 << 20);
        o->b = malloc(o->cap);
        if (!o->b) {
            fputs("term_check: out of memory\n", stderr);
            exit(2);
        }
    }
}

static void out_str(outbuf_t *o, const char *s)
{
    size_t n = strlen(s);
    out_room(o, n);
    memcpy(o->b + o->len, s, n);
    o->len += n;
}

static void out_hex(outbuf_t *o, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    out_room(o, 2 * n);
    char *w = o->b + o->len;
    for (size_t i = 0; i < n; i++) {
        w[2 * i] = digits[p[i] >> 4];
        w[2 * i + 1] = digits[p[i] & 15];
    }
    o->len += 2 * n;
}

/* Reads exactly n bytes; returns 0 at a clean end of input before any byte. */
static int read_full(FILE *in, void *buf, size_t n)
{
    size_t got = fread(buf, 1, n, in);
    if (got == n)
        return 1;
    if (got == 0 && feof(in))
        return 0;
    fprintf(stderr, "term_check: truncated record (%zu of %zu bytes)\n", got, n);
    exit(2);
}

/* Next record into *buf (grown as needed). Returns 1, or 0 at the end. */
static int next_record(FILE *in, uint8_t **buf, size_t *cap, size_t *len)
{
    uint8_t h[4];
    if (!read_full(in, h, 4))
        return 0;
    uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (n == UINT32_MAX)
        return 0;
    if (n > *cap) {
        free(*buf);
        *cap = n;
        *buf = malloc(n ? n : 1);
        if (!*buf) {
            fputs("term_check: out of memory\n", stderr);
            exit(2);
        }
    }
    if (n && !read_full(in, *buf, n)) {
        fputs("term_check: truncated record\n", stderr);
        exit(2);
    }
    *len = n;
    return 1;
}

/* Canonicalises into *canon (grown as needed). Returns the length or an error. */
static ssize_t canonicalise(const uint8_t *in, size_t len, uint8_t **canon, size_t *cap,
                            const cnb_term_opts_t *opts)
{
    ssize_t r = cnb_term_canonical(in, len, *canon, *cap, opts);
    if (r == CNB_ENOSPC) {
        r = cnb_term_canonical(in, len, NULL, 0, opts);
        if (r < 0)
            return r;
        free(*canon);
        *cap = (size_t)r;
        *canon = malloc(*cap);
        if (!*canon) {
            fputs("term_check: out of memory\n", stderr);
            exit(2);
        }
        r = cnb_term_canonical(in, len, *canon, *cap, opts);
    }
    return r;
}

static size_t parse_size(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || !*s) {
        fprintf(stderr, "term_check: bad number %s\n", s);
        exit(2);
    }
    return (size_t)v;
}

int main(int argc, char **argv)
{
    cnb_term_opts_t opts = {0, 0, 0, NULL};
    int compare = 0;
    FILE *in = stdin;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--compare")) {
            compare = 1;
        } else if (!strcmp(argv[i], "--max-depth") && i + 1 < argc) {
            opts.max_depth = parse_size(argv[++i]);
        } else if (!strcmp(argv[i], "--max-size") && i + 1 < argc) {
            opts.max_size = parse_size(argv[++i]);
        } else if (!strcmp(argv[i], "--max-decompressed") && i + 1 < argc) {
            opts.max_decompressed = parse_size(argv[++i]);
        } else if (argv[i][0] != '-' && i == argc - 1) {
            in = fopen(argv[i], "rb");
            if (!in) {
                perror(argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr,
                    "usage: %s [--compare] [--max-depth N] [--max-size N] "
                    "[--max-decompressed N] [FILE]\n",
                    argv[0]);
            return 2;
        }
    }

    outbuf_t o = {NULL, 0, 0};
    uint8_t *rec = NULL, *rec2 = NULL, *canon = NULL, *canon2 = NULL;
    size_t rec_cap = 0, rec2_cap = 0, canon_cap = 4096, canon2_cap = 4096, len, len2;
    canon = malloc(canon_cap);
    canon2 = malloc(canon2_cap);
    if (!canon || !canon2)
        return 2;
    out_room(&o, 1 << 20);

    while (next_record(in, &rec, &rec_cap, &len)) {
        if (!compare) {
            ssize_t r = canonicalise(rec, len, &canon, &canon_cap, &opts);
            if (r < 0) {
                out_str(&o, "ERR ");
                out_str(&o, cnb_errname((int)r));
                out_str(&o, "\n");
                continue;
            }
            char hash[20];
            snprintf(hash, sizeof(hash), " %016" PRIx64 "\n", cnb_term_hash(canon, (size_t)r));
            out_str(&o, "OK ");
            out_hex(&o, canon, (size_t)r);
            out_str(&o, hash);
            continue;
        }
        if (!next_record(in, &rec2, &rec2_cap, &len2)) {
            fputs("term_check: --compare needs records in pairs\n", stderr);
            return 2;
        }
        ssize_t ra = canonicalise(rec, len, &canon, &canon_cap, &opts);
        ssize_t rb = ra < 0 ? ra : canonicalise(rec2, len2, &canon2, &canon2_cap, &opts);
        int order = 0, r = rb < 0 ? (int)rb : 0;
        if (!r)
            r = cnb_term_compare(canon, (size_t)ra, canon2, (size_t)rb, &order);
        if (r) {
            out_str(&o, "ERR ");
            out_str(&o, cnb_errname(r));
            out_str(&o, "\n");
        } else {
            out_str(&o, order < 0 ? "CMP -1\n" : order > 0 ? "CMP 1\n" : "CMP 0\n");
        }
    }
    out_flush(&o);
    free(o.b);
    free(rec);
    free(rec2);
    free(canon);
    free(canon2);
    if (in != stdin)
        fclose(in);
    return 0;
}
