// SPDX-License-Identifier: MIT
/*
 * The control socket: the master listens on a Unix stream socket and
 * writes its status report to whoever connects; `tcpexecd -s` is that
 * client. Only the report travels here: signals remain the control API.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "tcpexecd.h"

static int fill(struct sockaddr_un *un, const char *path)
{
	memset(un, 0, sizeof(*un));
	un->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(un->sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(un->sun_path, path, strlen(path) + 1);
	return 0;
}

int control_listen(const char *path)
{
	struct sockaddr_un un;
	mode_t old;
	int fd;

	if (fill(&un, path) < 0)
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	/* The status names peers and commands: owner only. A running daemon
	 * on the same path answers connect() and is left alone; a stale
	 * socket file is replaced. */
	if (connect(fd, (struct sockaddr *)&un, sizeof(un)) == 0) {
		close(fd);
		errno = EADDRINUSE;
		return -1;
	}
	unlink(path);
	old = umask(077);
	if (bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0 || listen(fd, 8) < 0) {
		int e = errno;
		umask(old);
		close(fd);
		errno = e;
		return -1;
	}
	umask(old);
	return fd;
}

int control_query(const char *path)
{
	struct sockaddr_un un;
	char buf[8192];
	ssize_t n;
	int fd;

	if (!path[0]) {
		fprintf(stderr, "tcpexecd: no control_socket is configured\n");
		return EXIT_RUNTIME;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || fill(&un, path) < 0 || connect(fd, (struct sockaddr *)&un, sizeof(un)) < 0) {
		fprintf(stderr, "tcpexecd: no daemon answers on %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return EXIT_RUNTIME;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		fwrite(buf, 1, (size_t)n, stdout);
	close(fd);
	return n < 0 ? EXIT_RUNTIME : EXIT_OK;
}
