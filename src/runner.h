/* SPDX-License-Identifier: MIT */
/*
 * The command child: built from the policy's exec argv, started in its own
 * process group with a clean environment, reset signals, only
 * stdin/stdout/stderr open, optional uid/gid, working directory and
 * rlimits. Called from a worker's session.
 */
#ifndef TCPEXECD_RUNNER_H
#define TCPEXECD_RUNNER_H

#include <stdint.h>
#include <sys/types.h>

#include "policy.h"

struct runner {
	pid_t pid;        /* also the process group id */
	int pidfd;        /* readable once the command exits */
	int in_fd;        /* write end of its stdin, -1 if none or closed */
	int out_fd;       /* read end of its stdout */
	int err_fd;       /* read end of its stderr; -1 when merged into stdout */
	/* Set by the session: a pipe seen full (then grown), so that short
	 * commands never pay for the large pipes and splices of a stream. */
	int in_grown, out_big, err_big;
	uint64_t started_ms;
};

struct runner_opts {
	const char *remote_addr;   /* TCPEXEC_REMOTE_ADDR */
	unsigned remote_port;      /* TCPEXEC_REMOTE_PORT */
	char *const *client_env;   /* NAME=value, already allowed by the policy */
	int nclient_env;
	int with_stdin;            /* else stdin is /dev/null */
	int merge_stderr;          /* line mode: one stream, in order */
};

/* Once at start, before the first fork: give up the controlling terminal
 * (if any), so that commands never have one. */
void runner_detach_terminal(void);
/* Once in each worker, before its first command: run the worker under
 * SCHED_BATCH, and its commands under the policy it had. 1 if switched, 0
 * if the daemon runs under a policy other than SCHED_OTHER (kept for both),
 * -1 with errno. */
int runner_worker_batch(void);
/* Start the command. 0, or -1 with a reason in err (nothing left running).
 * The descriptors in r belong to the caller (runner_close). */
int runner_start(const struct policy_exec *ex, const struct runner_opts *o,
		 struct runner *r, char *err, size_t errlen);
/* Give a command pipe the larger size a stream wants. */
void runner_grow_pipe(int fd);
/* Signal the whole process group. */
void runner_signal(const struct runner *r, int sig);
/* Exit status without reaping (the zombie keeps the process group id
 * reserved until runner_reap). 1 if exited, 0 if not yet. */
int runner_peek(const struct runner *r, int *status);
/* Kill what is left of the group, reap the command, close every fd. */
void runner_finish(struct runner *r);
void runner_close_fd(int *fd);

#endif
