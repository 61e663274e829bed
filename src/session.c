// SPDX-License-Identifier: MIT
/*
 * One client connection inside a worker. This placeholder greets the
 * client with the serving worker's pid and echoes what it sends until it
 * half-closes: enough to exercise the process model end to end.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "log.h"
#include "session.h"
#include "tcpexecd.h"

static int check_term(int sigfd)
{
	struct signalfd_siginfo si;

	while (read(sigfd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGTERM)
			return -1;
		log_reopen();
	}
	return 0;
}

/* 0 sent, -1 connection error, -2 SIGTERM */
static int send_all(int fd, const char *buf, size_t len, int sigfd)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return -1;
		struct pollfd p[2] = { { .fd = fd, .events = POLLOUT }, { .fd = sigfd, .events = POLLIN } };
		if (poll(p, 2, 1000) < 0 && errno != EINTR)
			return -1;
		if (p[1].revents && check_term(sigfd) < 0)
			return -2;
	}
	return 0;
}

int session_serve(const struct session_ctx *ctx, int conn, const struct sockaddr *peer,
		  socklen_t peerlen)
{
	char buf[16384];
	int len, rc = 0;

	len = snprintf(buf, sizeof(buf), "tcpexecd worker %ld\n", (long)getpid());
	if (send_all(conn, buf, (size_t)len, ctx->sigfd) == -2) {
		rc = -1;
		goto out;
	}
	for (;;) {
		struct pollfd p[2] = { { .fd = conn, .events = POLLIN },
				       { .fd = ctx->sigfd, .events = POLLIN } };
		ssize_t n;

		ctx->slot->heartbeat_ms = now_ms();
		if (poll(p, 2, 1000) < 0 && errno != EINTR)
			break;
		if (p[1].revents && check_term(ctx->sigfd) < 0) {
			rc = -1;
			break;
		}
		if (!p[0].revents)
			continue;
		n = read(conn, buf, sizeof(buf));
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			break;
		}
		int s = send_all(conn, buf, (size_t)n, ctx->sigfd);
		if (s == -2)
			rc = -1;
		if (s < 0)
			break;
	}
out:
	close(conn);
	(void)peer;
	(void)peerlen;
	return rc;
}
