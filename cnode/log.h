/* log.h: the node's logger's two safety pieces, kept pure so they can be
 * tested alone (tests/unit/test_log.c): escaping a formatted line so that text
 * from a peer can never start a new log line or drive a terminal, and a
 * per-call-site rate limiter. cnb__log (log.c) applies both to every line. */
#ifndef CNB_LOG_H
#define CNB_LOG_H

#include <stddef.h>
#include <stdint.h>

/* Copies the NUL-terminated text in into out (cap bytes, cap >= 1, always
 * NUL-terminated) with every byte that could break a line-based log made
 * visible: '\\' as "\\\\", '\n' '\r' '\t' as "\\n" "\\r" "\\t", other control
 * characters (C0, DEL), invalid UTF-8 and the code points that reorder or
 * break lines (C1 controls, U+2028/2029, bidi controls) as "\\xNN" per byte.
 * Valid UTF-8 otherwise passes unchanged. An escape is never cut in half when
 * out is too small. Returns the length written (without the NUL). */
size_t cnb__log_escape(const char *in, char *out, size_t cap);

/* The limiter: at most CNB_RL_BURST lines per key (a call site's format) in
 * each window of CNB_RL_WINDOW_MS; the rest are counted, and the count is
 * reported once when the key's window ends. */
#define CNB_RL_BURST 20
#define CNB_RL_WINDOW_MS 1000
#define CNB_RL_SLOTS 128
#define CNB_RL_WHO 256

typedef struct cnb_rl_slot {
    const void *key;          /* NULL: free */
    int level;
    int64_t win_start;        /* ms */
    unsigned count;           /* lines admitted in this window */
    unsigned long suppressed; /* lines dropped in this window */
    char who[CNB_RL_WHO];     /* node name of the last line, for the report */
    const void *owner;        /* the node of the last line (NULL: none), for the report */
    const char *fmt;          /* the call site's format, for the report */
} cnb_rl_slot_t;

typedef struct cnb_rl {
    cnb_rl_slot_t slot[CNB_RL_SLOTS];
} cnb_rl_t;

/* What a window that ended had suppressed, for the caller to report. */
typedef struct cnb_rl_report {
    unsigned long suppressed;
    int level;
    int64_t window_ms;
    char who[CNB_RL_WHO];
    const void *owner;
    const char *fmt;
} cnb_rl_report_t;

/* Decides about one line of key (with its level, node name who and node
 * owner, kept opaque for the report) at time now (ms). Returns 1 when the line is to be written, 0 when it is
 * suppressed. When the key's previous window ended with lines suppressed,
 * fills *rep (rep->suppressed > 0) so the caller reports them first. */
int cnb__rl_admit(cnb_rl_t *rl, const void *key, int level, const char *who, const void *owner,
                  const char *fmt, int64_t now, cnb_rl_report_t *rep);

/* Finds one key whose last line came from owner with lines suppressed, fills
 * *rep and frees the slot, whatever its window. Returns 1 when it found one,
 * 0 when none is left. */
int cnb__rl_take_owner(cnb_rl_t *rl, const void *owner, int64_t now, cnb_rl_report_t *rep);

/* Finds one key whose window has ended with lines suppressed, fills *rep and
 * starts it afresh. Returns 1 when it found one, 0 when none is left: call it
 * until it returns 0 (the I/O loop does, on its 100 ms timer). */
int cnb__rl_expired(cnb_rl_t *rl, int64_t now, cnb_rl_report_t *rep);

/* Reports what the process-wide limiter has left to report (see
 * cnb__rl_expired). Called by the I/O loop's timer; any thread may call it. */
void cnb__log_tick(void);

/* Reports now what the limiter holds back from node (an opaque cnb_node_t *)
 * and forgets it: after this returns, no report is sent to that node's log
 * hook. cnb_node_destroy calls it. */
void cnb__log_forget(const void *node);

#endif /* CNB_LOG_H */
