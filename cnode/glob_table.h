/* glob_table.h: visible mode's copy of :global's name table and lock table
 * (glob_table.c); visible.c feeds them. Terms are ETF without version byte
 * unless said. */
#ifndef CNB_GLOB_TABLE_H
#define CNB_GLOB_TABLE_H

#include "node_rt.h"

typedef struct cnb_gtab cnb_gtab_t;

/* locker: the pid our monitors come from. NULL when out of memory. */
cnb_gtab_t *cnb__gt_create(const erlang_pid *locker);
void cnb__gt_destroy(cnb_gtab_t *t);
/* name: nlen bytes (with or without 131); method: mlen bytes, no 131.
 * Replaces an entry of the same name. 0, CNB_ENOSPC (full), CNB_ENOMEM, or
 * a canonicalisation error. */
int cnb__gt_name_put(cnb_node_t *n, cnb_gtab_t *t, const char *name, size_t nlen,
                     const erlang_pid *pid, const char *method, int mlen);
int cnb__gt_name_del(cnb_node_t *n, cnb_gtab_t *t, const char *name, size_t nlen);
/* 0 (pid set if not NULL) or CNB_ENOENT. */
int cnb__gt_name_find(cnb_gtab_t *t, const char *name, size_t nlen, erlang_pid *pid);
/* 1 when pid holds a name here (global's check_dupname), else 0. */
int cnb__gt_pid_named(cnb_gtab_t *t, const erlang_pid *pid);
/* Appends the list of every name here to x. Nonzero: an encoder failed. */
int cnb__gt_encode_names(cnb_gtab_t *t, ei_x_buff *x);
/* As find, with a malloc'd copy of the entry's Method (*method, *mlen bytes,
 * no 131; the caller frees it). 0, CNB_ENOENT or CNB_ENOMEM. */
int cnb__gt_name_get(cnb_gtab_t *t, const char *name, size_t nlen, erlang_pid *pid,
                     char **method, int *mlen);
/* Decodes {Name, Pid, Method} at b[*i] (i moves past it): Name is
 * b[*n0..*n1), Method b[*m0..*i). Nonzero when malformed. */
int cnb__gt_triple(const char *b, int *i, int *n0, int *n1, erlang_pid *pid, int *m0);
/* A pid ended (its names and lock holds go) / a node went down (all of its pids'). */
void cnb__gt_drop_pid(cnb_node_t *n, cnb_gtab_t *t, const erlang_pid *pid);
void cnb__gt_drop_node(cnb_node_t *n, cnb_gtab_t *t, const char *node);
/* Appends [{Name, Pid, Method}] of our own node's pids to x. Nonzero: an
 * encoder failed. */
int cnb__gt_encode_ours(cnb_node_t *n, cnb_gtab_t *t, ei_x_buff *x);
/* The lock id {ResourceId, LockRequesterId} at b[i..], for from: set_lock
 * answers 1 (true) or 0 (false: another requester holds the resource);
 * del_lock drops from's hold. */
int cnb__gt_set_lock(cnb_node_t *n, cnb_gtab_t *t, const char *b, int i, const erlang_pid *from);
void cnb__gt_del_lock(cnb_node_t *n, cnb_gtab_t *t, const char *b, int i, const erlang_pid *from);

#endif
