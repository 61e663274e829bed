/* SPDX-License-Identifier: MIT */
/*
 * A worker process: accepts on the inherited listening sockets, serves one
 * connection at a time, and exits when told (its master pipe closes), when
 * the master dies, or after max_requests connections.
 */
#ifndef TCPEXECD_WORKER_H
#define TCPEXECD_WORKER_H

#include "config.h"
#include "listen.h"
#include "scoreboard.h"

struct tls_server;

struct worker_ctx {
	const struct config *cfg;
	const struct listener *listeners; /* fd -1 entries are skipped */
	int nlisteners;
	struct slot *slot;                /* our scoreboard slot */
	const struct slot *slots;         /* all of them: per-source counts */
	int nslots;
	struct tls_server *tls;           /* NULL when no TLS is configured */
	int master_fd;                    /* read end of the master pipe */
	int wake_fd;                      /* write end of the master's wake pipe */
};

_Noreturn void worker_run(const struct worker_ctx *ctx);
/* -i: serve the connection on standard input in this process; exit code. */
int worker_inetd(const struct config *cfg);

#endif
