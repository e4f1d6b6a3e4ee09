/* main.c: the `cnode` program: a C node that joins a cluster, prints
 * "READY <node>" once published and listening, and runs until SIGTERM/SIGINT.
 * With --demo it runs the demo workers of demo.c (echo, cache_sup, probe).
 * Tests: tests/integration/dist_tests.erl (flags, --connect, exit statuses),
 * hostile_auth_tests.erl (cookie sources); every integration suite runs it
 * through tests/integration/support/cnb_cluster.erl. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnode_bridge.h"
#include "demo.h"
#include "registry_worker.h"

#define MAX_CONNECT 64

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cnode (--sname NAME[@HOST] | --name NAME[@HOST]) [options]\n"
            "       cnode -h | --help | --version\n"
            "  --cookie C          the distribution cookie (other users can see it in ps\n"
            "                      until the program wipes it at start: prefer the next two)\n"
            "  --cookie-file F     read the cookie from F (mode 0400 or 0600, as erl wants)\n"
            "                      (default: $CNB_COOKIE, else ~/.erlang.cookie)\n"
            "  --connect NODE      connect at start (repeatable); NODE@HOST:PORT with --no-epmd\n"
            "  --port N            listen on port N (default: any free port)\n"
            "  --listen ADDR       listen on the interface of IP address ADDR only (default:\n"
            "                      every interface), as inet_dist_use_interface\n"
            "  --no-epmd           do not register with epmd\n"
            "  --ipv6              listen on IPv6 (dual stack) and prefer IPv6 for peers\n"
            "  --ticktime S        net_ticktime in seconds (default 60)\n"
            "  --setuptime S       seconds a connection set-up may take (default 7)\n"
            "  --max-message B     largest incoming message in bytes (default 268435456)\n"
            "  --log-level L       error | warning | info | debug (default info)\n"
            "  --threads N         worker threads (default 2)\n"
            "  --max-links-per-peer N  links + monitors one node may hold here (default 1048576)\n"
            "  --spin-us N         microseconds an idle thread spins before it sleeps, for a\n"
            "                      hand-off without a wake-up (default 100; 0: never spin)\n"
            "  --tls-cert F        run TLS distribution (as -proto_dist inet_tls) with this PEM\n"
            "                      certificate; peers on plain TCP are refused\n"
            "  --tls-key F         its PEM private key (default: in the --tls-cert file)\n"
            "  --tls-cacert F      PEM CA certificates peers' certificates must chain to\n"
            "  --tls-verify V      peer (default: verify peers both ways; a peer's certificate\n"
            "                      must name the host of its node name) | none\n"
            "  --tls-versions L    1.2, 1.3 or 1.2,1.3 (default 1.2,1.3)\n"
            "  --tls-ciphers L     allowed ciphers, OpenSSL names separated by ':' (TLS 1.3\n"
            "                      suites, TLS_..., may be mixed in; default OpenSSL's)\n"
            "  --exit-on-eof       exit when stdin reaches end of file\n"
            "  --demo              run the demo workers (echo, cache_sup, probe)\n"
            "  --visible           a visible node (in nodes(); answers :global's and :pg's protocols)\n"
            "  --pg-scopes A,B     with --visible: the :pg scopes to take part in (default pg)\n"
            "  -h, --help          print this and exit\n"
            "  --version           print the version (cnode X.Y.Z) and exit\n"
            "Environment: CNB_COOKIE  the cookie, when neither --cookie nor --cookie-file is\n"
            "                         given (read, then wiped from the environment)\n"
            "Prints \"READY <node>\" on stdout once it is published and listening.\n"
            "SIGHUP re-reads the TLS files for new connections (live ones stay).\n"
            "Exit status: 0 after SIGTERM/SIGINT, 2 for bad arguments, name or cookie, 1 else.\n");
}

/* Each parser takes NULL (no argument) as a bad value. */
static int parse_level(const char *s)
{
    if (!s)
        return -1;
    if (!strcmp(s, "error"))
        return CNB_LOG_ERROR;
    if (!strcmp(s, "warning"))
        return CNB_LOG_WARNING;
    if (!strcmp(s, "info"))
        return CNB_LOG_INFO;
    if (!strcmp(s, "debug"))
        return CNB_LOG_DEBUG;
    return -1;
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    if (!s)
        return -1;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || !*s || *end || v > max || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

/* Takes a secret off argv or the environment: copies it (the caller frees it
 * with free_secret) and overwrites the original bytes, so /proc/PID/cmdline
 * and /proc/PID/environ no longer show it. Returns NULL when out of memory. */
static char *take_secret(char *s)
{
    char *copy = strdup(s);
    explicit_bzero(s, strlen(s));
    return copy;
}

static void free_secret(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

static void *eof_watch(void *arg)
{
    (void)arg;
    char buf[256];
    while (read(STDIN_FILENO, buf, sizeof(buf)) > 0)
        ;
    kill(getpid(), SIGTERM);
    return NULL;
}

/* What the command line asked for. */
typedef struct args {
    cnb_node_opts_t o;
    const char *connects[MAX_CONNECT];
    int nconnect;
    int demo;
    int exit_on_eof;
    char *cookie_arg; /* the last --cookie's text, inside argv */
} args_t;

static const struct option longopts[] = {
    {"sname", required_argument, 0, 's'},     {"name", required_argument, 0, 'n'},
    {"cookie", required_argument, 0, 'c'},    {"cookie-file", required_argument, 0, 'f'},
    {"connect", required_argument, 0, 'C'},   {"port", required_argument, 0, 'p'},
    {"no-epmd", no_argument, 0, 'E'},         {"ipv6", no_argument, 0, '6'},
    {"ticktime", required_argument, 0, 't'},  {"setuptime", required_argument, 0, 'u'},
    {"max-message", required_argument, 0, 'm'}, {"log-level", required_argument, 0, 'l'},
    {"threads", required_argument, 0, 'T'},   {"exit-on-eof", no_argument, 0, 'e'},
    {"demo", no_argument, 0, 'D'},            {"help", no_argument, 0, 'h'},
    {"version", no_argument, 0, 'v'},
    {"listen", required_argument, 0, 'L'},
    {"max-links-per-peer", required_argument, 0, 'K'}, {"spin-us", required_argument, 0, 'S'},
    {"tls-cert", required_argument, 0, 'X'},  {"tls-key", required_argument, 0, 'k'},
    {"tls-cacert", required_argument, 0, 'A'}, {"tls-verify", required_argument, 0, 'V'},
    {"tls-versions", required_argument, 0, 'R'}, {"tls-ciphers", required_argument, 0, 'P'},
    {"visible", no_argument, 0, 'W'},         {"pg-scopes", required_argument, 0, 'G'},
    {0, 0, 0, 0}};

/* The flag of longopts letter c, for messages. */
static const char *flag_name(int c)
{
    for (const struct option *f = longopts; f->name; f++)
        if (f->val == c)
            return f->name;
    return "?";
}

/* The numeric flags and their ranges. */
static const struct range {
    int c;
    unsigned long min, max;
} ranges[] = {{'p', 0, 65535},          {'t', 1, 86400}, {'u', 1, 3600},
              {'m', 1024, 0xffffffffUL}, {'T', 1, 1024}, {'K', 1, 0xffffffffUL},
              {'S', 0, 1000000}};

/* Stores numeric flag c's value v (in its range). */
static void set_number(cnb_node_opts_t *o, int c, unsigned long v)
{
    switch (c) {
    case 'p': o->port = (unsigned)v; break;
    case 't': o->net_ticktime = (unsigned)v; break;
    case 'u': o->net_setuptime = (unsigned)v; break;
    case 'm': o->max_message = (size_t)v; break;
    case 'T': o->threads = (unsigned)v; break;
    case 'S': o->spin_us = v ? (int)v : -1; break;
    default: o->max_links_per_peer = (size_t)v; break; /* 'K' */
    }
}

/* Sets what option c (a longopts letter; not 'h' or 'v') with argument arg
 * asks for. Returns 0, or -1 for a bad value with what the flag wants in
 * why (cap bytes). */
static int set_option(args_t *a, int c, char *arg, char *why, size_t cap)
{
    cnb_node_opts_t *o = &a->o;
    for (size_t k = 0; k < sizeof(ranges) / sizeof(ranges[0]); k++) {
        unsigned long v;
        if (ranges[k].c != c)
            continue;
        if (parse_uint(arg, ranges[k].max, &v) || v < ranges[k].min) {
            snprintf(why, cap, "a whole number from %lu to %lu", ranges[k].min, ranges[k].max);
            return -1;
        }
        set_number(o, c, v);
        return 0;
    }
    switch (c) {
    case 's': o->sname = arg; break;
    case 'n': o->name = arg; break;
    case 'c':
        if (a->cookie_arg) /* an earlier --cookie: only the last one counts */
            explicit_bzero(a->cookie_arg, strlen(a->cookie_arg));
        a->cookie_arg = arg;
        break;
    case 'f': o->cookie_file = arg; break;
    case 'C': a->connects[a->nconnect++] = arg; break; /* parse_args checked the room */
    case 'L': o->listen_addr = arg; break;
    case 'E': o->no_epmd = 1; break;
    case '6': o->ipv6 = 1; break;
    case 'l':
        if ((o->log_level = parse_level(arg)) < 0) {
            snprintf(why, cap, "error, warning, info or debug");
            return -1;
        }
        break;
    case 'X': o->tls_cert = arg; break;
    case 'k': o->tls_key = arg; break;
    case 'A': o->tls_cacert = arg; break;
    case 'V':
        if (strcmp(arg, "none") && strcmp(arg, "peer")) {
            snprintf(why, cap, "peer or none");
            return -1;
        }
        o->tls_verify_none = !strcmp(arg, "none");
        break;
    case 'R': o->tls_versions = arg; break;
    case 'P': o->tls_ciphers = arg; break;
    case 'e': a->exit_on_eof = 1; break;
    case 'W': o->visible = 1; break;
    case 'G': o->pg_scopes = arg; break;
    default: a->demo = 1; break; /* 'D' */
    }
    return 0;
}

/* One line on stderr saying what is wrong with the command line (printf
 * style), and where the flags are listed. Returns the exit status, 2. */
static int bad_args(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_args(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("cnode: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (cnode --help lists the flags)\n", stderr);
    va_end(ap);
    return 2;
}

/* Reads the options into *a (log level info unless given). Returns -1 to go
 * on, or the status to exit with now: 0 after --help or --version, 2 for a
 * bad option or value (one line on stderr naming it and why). */
static int parse_args(int argc, char **argv, args_t *a)
{
    memset(a, 0, sizeof(*a));
    a->o.log_level = CNB_LOG_INFO;
    opterr = 0;
    int c;
    /* ':' first: a missing value comes back as ':', an unknown flag as '?'. */
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        char why[96];
        if (c == 'h') {
            usage(stdout);
            return 0;
        }
        if (c == 'v') {
            printf("cnode %s\n", CNB_VERSION);
            return 0;
        }
        if (c == ':')
            return bad_args("--%s needs a value", flag_name(optopt));
        if (c == '?') {
            const char *arg = argv[optind - 1];
            if (optopt && !strncmp(arg, "--", 2)) /* --demo=x */
                return bad_args("--%s takes no value", flag_name(optopt));
            return bad_args("unknown or ambiguous flag '%s'", arg);
        }
        if (c == 'C' && a->nconnect == MAX_CONNECT)
            return bad_args("at most %d --connect", MAX_CONNECT);
        if (set_option(a, c, optarg, why, sizeof(why)))
            return bad_args("bad value '%s' for --%s: want %s", optarg, flag_name(c), why);
    }
    if (optind != argc)
        return bad_args("unexpected argument '%s'", argv[optind]);
    if (!a->o.sname == !a->o.name)
        return bad_args("give exactly one of --sname NAME[@HOST] or --name NAME[@HOST]");
    return -1;
}

/* The cookie leaves argv and the environment before anything else runs:
 * every user can read /proc/PID/cmdline; environ only this user. Sets *cookie
 * to a copy of the last --cookie, else of $CNB_COOKIE unless --cookie-file is
 * given, else NULL (free it with free_secret). Returns 0, or -1 when out of
 * memory. */
static int take_cookie(const args_t *a, char **cookie)
{
    char *env_cookie = getenv("CNB_COOKIE");
    int wanted = a->cookie_arg || (env_cookie && !a->o.cookie_file);
    *cookie = NULL;
    if (a->cookie_arg)
        *cookie = take_secret(a->cookie_arg);
    else if (env_cookie && !a->o.cookie_file)
        *cookie = take_secret(env_cookie);
    if (env_cookie) {
        explicit_bzero(env_cookie, strlen(env_cookie));
        unsetenv("CNB_COOKIE");
    }
    return wanted && !*cookie ? -1 : 0;
}

/* Starts the created node, its registry worker, the demo workers if asked, and
 * the keep-connected peers. Returns -1 when all runs (*regp set), or the status
 * to exit with (2: a bad --listen address; 1: anything else), the node
 * destroyed then. */
static int start_node(cnb_node_t *node, const args_t *a, struct cnb_registry **regp)
{
    int rc;
    if ((rc = cnb_node_start(node))) {
        fprintf(stderr, "cnode: cannot start: %s\n", cnb_strerror(rc));
        cnb_node_destroy(node);
        return rc == CNB_EINVAL ? 2 : 1; /* e.g. a bad --listen address */
    }
    /* Every C node serves its key registry (cnode_registry:attach/2). */
    struct cnb_registry *reg = NULL;
    if ((rc = cnb_registry_worker_start(node, NULL, &reg))) {
        fprintf(stderr, "cnode: cannot start the registry: %s\n", cnb_strerror(rc));
        cnb_node_destroy(node);
        return 1;
    }
    if (a->demo && (rc = cnb_demo_start(node, reg))) {
        fprintf(stderr, "cnode: cannot start the demo workers: %s\n", cnb_strerror(rc));
        cnb_node_shutdown(node, 5000); /* the registry worker removes its segment */
        cnb_node_destroy(node);
        cnb_registry_close(reg);
        return 1;
    }
    for (int k = 0; k < a->nconnect; k++)
        if (cnb_node_keep_connected(node, a->connects[k]))
            cnb_node_log(node, CNB_LOG_WARNING, "bad --connect %s", a->connects[k]);
    *regp = reg;
    return -1;
}

int main(int argc, char **argv)
{
    args_t a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0)
        return rc;
    char *cookie;
    if (take_cookie(&a, &cookie)) {
        fprintf(stderr, "cnode: out of memory\n");
        return 1;
    }
    a.o.cookie = cookie;

    /* Signals: SIGPIPE ignored (sockets use MSG_NOSIGNAL too); SIGTERM/SIGINT
     * and SIGHUP are taken synchronously by this thread with sigwait (blocked before any
     * thread starts, so every thread inherits the mask). */
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP); /* re-read the TLS files */
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    cnb_node_t *node;
    rc = cnb_node_create(&a.o, &node);
    free_secret(cookie); /* the node keeps its own copy */
    if (rc) {
        /* CNB_EINVAL: a bad name or cookie, which a log line explained. */
        fprintf(stderr, "cnode: %s\n", cnb_strerror(rc));
        return rc == CNB_EINVAL ? 2 : 1;
    }
    struct cnb_registry *reg;
    if ((rc = start_node(node, &a, &reg)) >= 0)
        return rc;
    printf("READY %s\n", cnb_node_name(node));
    fflush(stdout);
    if (a.exit_on_eof) {
        pthread_t t;
        pthread_create(&t, NULL, eof_watch, NULL);
        pthread_detach(t);
    }
    int sig = 0;
    while (sigwait(&set, &sig) == 0 && sig == SIGHUP)
        if (cnb_node_tls_reload(node) == CNB_ESTATE)
            cnb_node_log(node, CNB_LOG_INFO, "SIGHUP: nothing to reload (TLS is off)");
    cnb_node_log(node, CNB_LOG_INFO, "stopping on signal %d", sig);
    /* Every worker's terminate runs; links and monitors fire with shutdown. */
    cnb_node_shutdown(node, 5000);
    cnb_node_destroy(node);
    cnb_registry_close(reg);
    return 0;
}
