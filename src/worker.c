// SPDX-License-Identifier: MIT
/*
 * A worker process, forked by the master. It polls every inherited
 * listening socket plus its master pipe, accepts one connection at a time
 * and hands it to session.c. It leaves when its pipe reaches EOF (retired,
 * or the master died), after max_requests connections, or at once on
 * SIGTERM. A worker is disposable: fatal() is allowed here.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "log.h"
#include "session.h"
#include "systemd.h"
#include "tcpexecd.h"
#include "worker.h"

#define ACCEPT_PAUSE_MS 500

static void test_fault(void)
{
	const char *f = getenv("TCPEXECD_TEST_FAULT");

	if (!f)
		return;
	if (strcmp(f, "worker-exit") == 0)
		_exit(EXIT_RUNTIME);
	if (strcmp(f, "worker-config") == 0)
		_exit(EXIT_CONFIG);
}

/* The worker takes SIGTERM (abort now) and SIGUSR1 (reopen the log) through
 * a signalfd. Terminal-generated INT/QUIT and the master's own control
 * signals are ignored: the master alone decides what the pool does. */
static int worker_signals(void)
{
	static const int ignored[] = { SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGPIPE };
	sigset_t set;
	int fd;

	for (size_t i = 0; i < ARRAY_SIZE(ignored); i++)
		signal(ignored[i], SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGUSR1);
	fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (fd < 0 || sigprocmask(SIG_SETMASK, &set, NULL) < 0)
		fatal(EXIT_RUNTIME, "worker: signals: %s", strerror(errno));
	return fd;
}

/* Returns -1 on SIGTERM. */
static int worker_read_signals(int sigfd)
{
	struct signalfd_siginfo si;

	while (read(sigfd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGTERM)
			return -1;
		if (si.ssi_signo == SIGUSR1)
			log_reopen();
	}
	return 0;
}

/* Errors that concern one connection, or none (accept(2) lists the network
 * errors that a pending connection may already carry). */
static int accept_transient(int e)
{
	switch (e) {
	case EAGAIN:
	case EINTR:
	case ECONNABORTED:
	case EPROTO:
	case ENETDOWN:
	case ENOPROTOOPT:
	case EHOSTDOWN:
	case ENONET:
	case EHOSTUNREACH:
	case EOPNOTSUPP:
	case ENETUNREACH:
	case EPERM: /* firewall rules */
		return 1;
	}
	return 0;
}

void worker_run(const struct worker_ctx *ctx)
{
	struct pollfd pfd[2 + LISTEN_MAX];
	struct slot *slot = ctx->slot;
	struct session_ctx sctx;
	uint64_t pause_until = 0;
	int sigfd;

	test_fault();
	sigfd = worker_signals();
	sctx = (struct session_ctx){ .cfg = ctx->cfg, .slot = slot, .sigfd = sigfd,
				     .master_fd = ctx->master_fd };

	slot->heartbeat_ms = now_ms();
	slot->state = WS_IDLE;

	for (;;) {
		uint64_t now = now_ms();
		int n = 0, timeout = 1000, stop = 0;

		slot->heartbeat_ms = now;
		if (ctx->cfg->max_requests && slot->requests >= (uint64_t)ctx->cfg->max_requests)
			break;
		pfd[n++] = (struct pollfd){ .fd = ctx->master_fd, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = sigfd, .events = POLLIN };
		if (now >= pause_until) {
			for (int i = 0; i < ctx->nlisteners; i++)
				if (ctx->listeners[i].fd >= 0)
					pfd[n++] = (struct pollfd){ .fd = ctx->listeners[i].fd,
								    .events = POLLIN };
		} else {
			timeout = (int)(pause_until - now);
		}
		if (poll(pfd, (nfds_t)n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			fatal(EXIT_RUNTIME, "worker: poll: %s", strerror(errno));
		}
		if (pfd[1].revents && worker_read_signals(sigfd) < 0)
			_exit(EXIT_OK);
		if (pfd[0].revents)
			break; /* EOF: retired, or the master is gone */

		for (int i = 2; i < n && !stop; i++) {
			struct sockaddr_storage peer;
			socklen_t plen = sizeof(peer);
			int conn;

			if (!(pfd[i].revents & POLLIN))
				continue;
			conn = accept4(pfd[i].fd, (struct sockaddr *)&peer, &plen,
				       SOCK_CLOEXEC | SOCK_NONBLOCK);
			if (conn < 0) {
				if (accept_transient(errno))
					continue;
				/* EMFILE/ENFILE/ENOBUFS/ENOMEM: the connection stays
				 * queued; polling again at once would spin. */
				log_warn("accept: %s; pausing accepts for %d ms", strerror(errno),
					 ACCEPT_PAUSE_MS);
				pause_until = now_ms() + ACCEPT_PAUSE_MS;
				break;
			}
			if (peer.ss_family != AF_UNIX) {
				/* Replies are small and come in a few writes: without
				 * NODELAY, Nagle and the peer's delayed ACK would add
				 * tens of milliseconds to each command. */
				int one = 1;
				setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			}
			slot->busy_since_ms = now_ms();
			addr_format((struct sockaddr *)&peer, plen, slot->peer, sizeof(slot->peer));
			slot->requests++;
			slot->state = WS_BUSY;
			if (session_serve(&sctx, conn, (struct sockaddr *)&peer, plen) < 0)
				_exit(EXIT_OK);
			slot->peer[0] = '\0';
			slot->command[0] = '\0';
			slot->heartbeat_ms = now_ms();
			slot->state = WS_IDLE;
			/* One connection per wakeup: look at the master pipe between
			 * connections, so a retired worker leaves promptly. */
			stop = 1;
		}
	}
	slot->state = WS_EXITING;
	_exit(EXIT_OK);
}

/* Inetd mode (-i): this process is the whole server for the one connection
 * on standard input, as sshd -i. Same session, policy and logging; no
 * master, no scoreboard (a private slot stands in). */
int worker_inetd(const struct config *cfg)
{
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	struct slot slot = { .pid = getpid(), .state = WS_BUSY };
	struct session_ctx sctx = { .cfg = cfg, .slot = &slot, .master_fd = -1 };
	int fd, rc;

	systemd_scrub_env();
	if (getpeername(STDIN_FILENO, (struct sockaddr *)&peer, &plen) < 0) {
		log_err("-i: standard input is not a connected socket: %s", strerror(errno));
		return EXIT_USAGE;
	}
	/* The session owns and closes its descriptor; fd 0 and 1 may be the
	 * same socket (inetd) or two (systemd gives both): keep 0, and point
	 * 1 at /dev/null so that nothing else writes into the stream. */
	fd = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		fatal(EXIT_RUNTIME, "-i: %s", strerror(errno));
	rc = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (rc >= 0) {
		dup2(rc, STDIN_FILENO);
		dup2(rc, STDOUT_FILENO);
		close(rc);
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	if (peer.ss_family != AF_UNIX) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	sctx.sigfd = worker_signals();
	addr_format((struct sockaddr *)&peer, plen, slot.peer, sizeof(slot.peer));
	session_serve(&sctx, fd, (struct sockaddr *)&peer, plen);
	close(sctx.sigfd);
	return EXIT_OK;
}
