/* SPDX-License-Identifier: MIT */
/*
 * One client connection inside a worker, from accept to close.
 */
#ifndef TCPEXECD_SESSION_H
#define TCPEXECD_SESSION_H

#include <sys/socket.h>

#include "config.h"
#include "scoreboard.h"

struct session_ctx {
	const struct config *cfg;
	struct slot *slot;
	int sigfd;      /* the worker's signalfd: SIGTERM aborts the session */
	int master_fd;  /* EOF means: finish, then exit (already finishing) */
};

/* Serve conn (owned: closed before return). Returns -1 if the worker must
 * exit now (SIGTERM), 0 otherwise. */
int session_serve(const struct session_ctx *ctx, int conn,
		  const struct sockaddr *peer, socklen_t peerlen);

#endif
