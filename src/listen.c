// SPDX-License-Identifier: MIT
/*
 * Listening sockets for the standalone path (no socket activation): create
 * with SOCK_CLOEXEC, set SO_REUSEADDR / IPV6_V6ONLY, bind, listen. Runs in
 * the master only; the workers inherit the descriptors across fork().
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "listen.h"

/* A Unix socket file left by a dead daemon would make bind() fail with
 * EADDRINUSE. Remove it only if it is a socket nobody accepts on: a live
 * daemon's socket must not be stolen. */
static void remove_stale_unix(const struct addr *a)
{
	const struct sockaddr_un *un = (const struct sockaddr_un *)&a->sa;
	struct stat st;
	int fd;

	if (lstat(un->sun_path, &st) < 0 || !S_ISSOCK(st.st_mode))
		return;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (connect(fd, (const struct sockaddr *)&a->sa, a->len) < 0 && errno == ECONNREFUSED)
		unlink(un->sun_path);
	close(fd);
}

int listen_open(struct listener *l, const char *spec, int backlog, char *err, size_t errlen)
{
	struct sockaddr_storage bound;
	socklen_t blen = sizeof(bound);
	char why[160];
	struct addr a;
	int fd, one = 1;

	l->fd = -1;
	snprintf(l->spec, sizeof(l->spec), "%s", spec);
	if (addr_parse(spec, &a, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s: %s", spec, why);
		return -1;
	}
	l->is_unix = a.sa.ss_family == AF_UNIX;

	fd = socket(a.sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "%s: socket: %s", spec, strerror(errno));
		return -1;
	}
	if (!l->is_unix && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		goto fail_errno;
	/* V6ONLY so that [::]:P and 0.0.0.0:P are two independent sockets,
	 * whatever net.ipv6.bindv6only says. */
	if (a.sa.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		goto fail_errno;
	if (l->is_unix)
		remove_stale_unix(&a);
	if (bind(fd, (const struct sockaddr *)&a.sa, a.len) < 0) {
		snprintf(err, errlen, "cannot listen on %s: bind: %s", spec, strerror(errno));
		close(fd);
		return -1;
	}
	if (listen(fd, backlog) < 0)
		goto fail_errno;
	if (getsockname(fd, (struct sockaddr *)&bound, &blen) < 0)
		goto fail_errno;
	addr_format((struct sockaddr *)&bound, blen, l->bound, sizeof(l->bound));
	l->fd = fd;
	return 0;

fail_errno:
	snprintf(err, errlen, "cannot listen on %s: %s", spec, strerror(errno));
	close(fd);
	return -1;
}

int listen_adopt(struct listener *l, int fd, const char *name, char *err, size_t errlen)
{
	struct sockaddr_storage bound;
	socklen_t blen = sizeof(bound);

	memset(l, 0, sizeof(*l));
	l->fd = fd;
	l->inherited = 1;
	snprintf(l->name, sizeof(l->name), "%s", name);
	if (getsockname(fd, (struct sockaddr *)&bound, &blen) < 0) {
		snprintf(err, errlen, "inherited fd %d: getsockname: %s", fd, strerror(errno));
		return -1;
	}
	l->is_unix = bound.ss_family == AF_UNIX;
	addr_format((struct sockaddr *)&bound, blen, l->bound, sizeof(l->bound));
	/* Workers poll it and accept non-blocking, as for our own sockets. */
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return 0;
}

int listen_matches(const struct listener *l, const char *spec)
{
	char why[160], canon[ADDR_STRLEN];
	struct addr a;

	if (l->fd < 0)
		return 0;
	if (strcmp(l->spec, spec) == 0)
		return 1;
	if (!l->inherited || addr_parse(spec, &a, why, sizeof(why)) < 0)
		return 0;
	addr_format((struct sockaddr *)&a.sa, a.len, canon, sizeof(canon));
	return strcmp(canon, l->bound) == 0;
}

void listen_close(struct listener *l)
{
	if (l->fd < 0)
		return;
	/* systemd keeps its own copy of an inherited socket: closing ours
	 * leaves it listening (connections queue for the next start). */
	if (l->is_unix && !l->inherited)
		unlink(l->bound);
	close(l->fd);
	l->fd = -1;
}

int listen_queued(const struct listener *l)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	/* On a listening socket, Linux reports the accept queue's length as
	 * tcpi_unacked (and its limit as tcpi_sacked). */
	if (l->fd < 0 || l->is_unix ||
	    getsockopt(l->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
	    ti.tcpi_state != TCP_LISTEN)
		return 0;
	return (int)ti.tcpi_unacked;
}
