/* SPDX-License-Identifier: MIT */
/*
 * One client connection inside a worker, from accept to close.
 */
#ifndef TCPEXECD_SESSION_H
#define TCPEXECD_SESSION_H

#include <sys/socket.h>

#include "config.h"
#include "scoreboard.h"

struct listener;
struct tls_server;

struct session_ctx {
	const struct config *cfg;
	struct tls_server *tls; /* NULL when no TLS is configured */
	struct slot *slot;
	int sigfd;      /* the worker's signalfd: SIGTERM aborts the session */
	int master_fd;  /* EOF: finish the request, then exit; a byte: leave
			 * when the connection ends (see session_master_pipe) */
	/* The worker's listening sockets (NULL in inetd mode): a connection
	 * whose last request is answered is set aside only when none of them
	 * has a connection waiting (see session_sweep). */
	const struct listener *listeners;
	int nlisteners;
};

/* Serve conn (owned: closed before return). Returns -1 if the worker must
 * exit now (SIGTERM), 0 otherwise. lo: the options of the listener it came
 * from (TLS or not), NULL for none. */
int session_serve(const struct session_ctx *ctx, int conn,
		  const struct sockaddr *peer, socklen_t peerlen, const struct listen_opts *lo);

/* The master pipe is readable. Returns 1 at EOF (retired, or the master is
 * gone: finish the current request, then exit). A byte is the master giving
 * the worker back gently: it is noted in the worker's slot (leaving), and
 * the worker leaves once its connection ends, however many requests that
 * connection still makes; returns 0. */
int session_master_pipe(const struct session_ctx *ctx);

/* Connections set aside: the client said its request was the last one
 * (REQUEST flag LAST), the final status is sent and our side is shut down,
 * so the worker goes back to accepting at once instead of waiting for the
 * client to close. They are not watched (the client's FIN must not take
 * the next connection's wake-up away from this worker); each call closes
 * those whose client has closed, or all of them when all is set (the
 * worker exits), and drops anything late they received. Returns the
 * milliseconds until one must be closed anyway, or -1 when none is left. */
int session_sweep(int all);

#endif
