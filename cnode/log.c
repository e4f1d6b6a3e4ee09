/* log.c: the node's logger: one line per event on stderr, text from peers
 * escaped so it can never forge a line, and each call site's lines rate
 * limited (see log.h). Tests: tests/unit/test_log.c, and
 * tests/integration/hostile_auth_tests.erl (forged lines, floods). */
#include "log.h"
#include "etf_check.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "node_int.h"

/* ---------------------------------------------------------------- escaping */

/* Length of the valid UTF-8 sequence at p (n bytes left) and its code point,
 * or 0 when p does not start one (overlong forms and surrogates included). */
static size_t utf8_seq(const unsigned char *p, size_t n, uint32_t *cp)
{
    size_t len;
    uint32_t v, min;
    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        len = 2, v = p[0] & 0x1f, min = 0x80;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        len = 3, v = p[0] & 0x0f, min = 0x800;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        len = 4, v = p[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (p[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

/* Code points that are not control bytes but still break or reorder lines on
 * a terminal or in a log viewer. */
static int harmful_cp(uint32_t cp)
{
    return (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
           (cp >= 0x200e && cp <= 0x200f) || (cp >= 0x202a && cp <= 0x202e) ||
           (cp >= 0x2066 && cp <= 0x2069);
}

size_t cnb__log_escape(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)in;
    size_t left = strlen(in), o = 0;
    while (left) {
        char esc[16];
        size_t elen = 0, take = 1;
        uint32_t cp;
        size_t sl;
        if (*p == '\\') {
            esc[0] = '\\', esc[1] = '\\', elen = 2;
        } else if (*p == '\n') {
            esc[0] = '\\', esc[1] = 'n', elen = 2;
        } else if (*p == '\r') {
            esc[0] = '\\', esc[1] = 'r', elen = 2;
        } else if (*p == '\t') {
            esc[0] = '\\', esc[1] = 't', elen = 2;
        } else if (*p >= 0x20 && *p < 0x7f) {
            esc[0] = (char)*p, elen = 1;
        } else if (*p >= 0x80 && (sl = utf8_seq(p, left, &cp)) && !harmful_cp(cp)) {
            memcpy(esc, p, sl);
            elen = take = sl;
        } else {
            /* A control byte, or the bytes of an invalid or harmful
             * sequence one at a time. */
            esc[0] = '\\', esc[1] = 'x', esc[2] = hex[*p >> 4], esc[3] = hex[*p & 15];
            elen = 4;
        }
        if (o + elen >= cap)
            break;
        memcpy(out + o, esc, elen);
        o += elen;
        p += take;
        left -= take;
    }
    out[o] = 0;
    return o;
}

/* ---------------------------------------------------------------- limiting */

static void fill_report(const cnb_rl_slot_t *s, int64_t now, cnb_rl_report_t *rep)
{
    rep->suppressed = s->suppressed;
    rep->level = s->level;
    rep->window_ms = now - s->win_start;
    rep->fmt = s->fmt;
    memcpy(rep->who, s->who, sizeof(rep->who));
    rep->owner = s->owner;
}

static void slot_start(cnb_rl_slot_t *s, const void *key, int level, const char *fmt, int64_t now)
{
    s->key = key;
    s->level = level;
    s->fmt = fmt;
    s->win_start = now;
    s->count = 0;
    s->suppressed = 0;
}

#define RL_PROBE 8

int cnb__rl_admit(cnb_rl_t *rl, const void *key, int level, const char *who, const void *owner,
                  const char *fmt, int64_t now, cnb_rl_report_t *rep)
{
    rep->suppressed = 0;
    uintptr_t h = ((uintptr_t)key >> 3) * 2654435761u + (unsigned)level;
    cnb_rl_slot_t *s = NULL, *victim = NULL;
    for (unsigned i = 0; i < RL_PROBE && !s; i++) {
        cnb_rl_slot_t *x = &rl->slot[(h + i) % CNB_RL_SLOTS];
        if (x->key == key && x->level == level)
            s = x;
        else if (!x->key && (!victim || victim->key))
            victim = x; /* the first free slot */
        else if (x->key && (!victim || (victim->key && x->win_start < victim->win_start)))
            victim = x; /* else the oldest window */
    }
    if (!s) {
        /* A free slot, else the one idle longest: whatever it had held back
         * is reported now rather than lost. */
        s = victim;
        if (s->key && s->suppressed)
            fill_report(s, now, rep);
        slot_start(s, key, level, fmt, now);
    } else if (now - s->win_start >= CNB_RL_WINDOW_MS) {
        if (s->suppressed)
            fill_report(s, now, rep);
        slot_start(s, key, level, fmt, now);
    }
    snprintf(s->who, sizeof(s->who), "%s", who);
    s->owner = owner;
    if (s->count < CNB_RL_BURST) {
        s->count++;
        return 1;
    }
    s->suppressed++;
    return 0;
}

int cnb__rl_expired(cnb_rl_t *rl, int64_t now, cnb_rl_report_t *rep)
{
    for (unsigned i = 0; i < CNB_RL_SLOTS; i++) {
        cnb_rl_slot_t *s = &rl->slot[i];
        if (s->key && s->suppressed && now - s->win_start >= CNB_RL_WINDOW_MS) {
            fill_report(s, now, rep);
            s->key = NULL;
            return 1;
        }
    }
    return 0;
}

int cnb__rl_take_owner(cnb_rl_t *rl, const void *owner, int64_t now, cnb_rl_report_t *rep)
{
    for (unsigned i = 0; i < CNB_RL_SLOTS; i++) {
        cnb_rl_slot_t *s = &rl->slot[i];
        if (s->key && s->owner == owner) {
            int had = s->suppressed != 0;
            if (had)
                fill_report(s, now, rep);
            s->key = NULL;
            s->owner = NULL;
            if (had)
                return 1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- the logger */

/* One limiter for the process: lines of every node pass through it, keyed by
 * the call site's format and level. */
static cnb_rl_t limiter;
static pthread_mutex_t limiter_mu = PTHREAD_MUTEX_INITIALIZER;

static const char *level_name(int level)
{
    switch (level) {
    case CNB_LOG_ERROR:
        return "error";
    case CNB_LOG_WARNING:
        return "warning";
    case CNB_LOG_INFO:
        return "info";
    default:
        return "debug";
    }
}

/* Writes one line: msg escaped, to the node's log hook (opts.log) when it
 * has one, else to stderr with a timestamp, the level and who. The escaped
 * text is capped at 4 KB so a line stays far below the 8 KB line limit of the
 * supervising port (erlang_side/src/cnode_bridge_cnode.erl), which would
 * otherwise split it and read the tail as a line of its own. */
static void write_line(const cnb_node_t *n, int level, const char *who, const char *msg)
{
    char safe[4096];
    cnb__log_escape(msg, safe, sizeof(safe));
    if (n && n->opts.log) {
        n->opts.log(level, who, safe, n->opts.log_user);
        return;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    /* One write per line so lines from several threads never interleave. */
    char line[4096 + 400];
    int len = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] %s: %s\n",
                       tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                       tm.tm_sec, (long)(tv.tv_usec / 1000), level_name(level), who, safe);
    if (len < 0)
        return;
    if (len >= (int)sizeof(line)) {
        len = (int)sizeof(line);
        line[len - 1] = '\n';
    }
    ssize_t w = write(STDERR_FILENO, line, (size_t)len);
    (void)w;
}

/* Writes a limiter report to the sink of the node that logged last at that
 * site. Called with limiter_mu held, so cnb__log_forget (which takes it too)
 * knows no report for a node being destroyed is still on its way. */
static void write_report(const cnb_rl_report_t *rep)
{
    char msg[400];
    snprintf(msg, sizeof(msg), "suppressed %lu similar lines in %lld ms (\"%.120s\")",
             rep->suppressed, (long long)rep->window_ms, rep->fmt ? rep->fmt : "?");
    write_line(rep->owner, rep->level, rep->who, msg);
}

static void vlog(const cnb_node_t *n, int level, const char *fmt, va_list ap)
{
    if (n && level > n->log_level)
        return;
    /* A node being created has no name yet, but already its hook. */
    const char *who = n && n->name[0] ? n->name : "cnode";
    cnb_rl_report_t rep;
    pthread_mutex_lock(&limiter_mu);
    int admit = cnb__rl_admit(&limiter, fmt, level, who, n, fmt, cnb__now_ms(), &rep);
    if (rep.suppressed)
        write_report(&rep);
    pthread_mutex_unlock(&limiter_mu);
    if (!admit)
        return;
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    write_line(n, level, who, msg);
}

void cnb__log_tick(void)
{
    cnb_rl_report_t rep;
    pthread_mutex_lock(&limiter_mu);
    while (cnb__rl_expired(&limiter, cnb__now_ms(), &rep))
        write_report(&rep);
    pthread_mutex_unlock(&limiter_mu);
}

void cnb__log_forget(const void *node)
{
    cnb_rl_report_t rep;
    pthread_mutex_lock(&limiter_mu);
    while (cnb__rl_take_owner(&limiter, node, cnb__now_ms(), &rep))
        write_report(&rep);
    pthread_mutex_unlock(&limiter_mu);
}

int cnb__log_on(const cnb_node_t *n, int level)
{
    return !n || level <= n->log_level;
}

const char *cnb__log_term(const char *t, size_t len, char *out, size_t cap)
{
    char *s = NULL;
    int i = len && (unsigned char)t[0] == 131;
    snprintf(out, cap, "?");
    /* Checked whole before ei reads it; a large one is only measured. */
    long tl = cnb__etf_skip((const uint8_t *)t + i, len - (size_t)i);
    if (tl < 0)
        return out;
    if (tl > 65536) {
        snprintf(out, cap, "(a term of %ld bytes)", tl);
        return out;
    }
    if (ei_s_print_term(&s, t, &i) < 0) {
        free(s);
        return out;
    }
    size_t n = strlen(s);
    if (n < cap)
        memcpy(out, s, n + 1);
    else if (cap > 4)
        snprintf(out, cap, "%.*s...", (int)(cap - 4), s);
    free(s);
    return out;
}

void cnb__log(const cnb_node_t *n, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(n, level, fmt, ap);
    va_end(ap);
}

void cnb_node_log(const cnb_node_t *n, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(n, level, fmt, ap);
    va_end(ap);
}
