// SPDX-License-Identifier: MIT
/*
 * The fallback when no systemd runs us: daemon(7)'s SysV steps with a
 * readiness pipe, so that the launching process exits 0 only once the
 * daemon serves, and otherwise prints the daemon's own error and fails.
 * Also the pidfile: written atomically, kept locked while we run.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemonize.h"
#include "log.h"
#include "tcpexecd.h"

/* Readiness pipe messages, one per line: "E<text>" an error message to
 * print, "R" ready, "X<code>" failed with that exit code. */

static int launcher_wait(int fd, pid_t child)
{
	char buf[4096], line[4096];
	size_t used = 0;
	ssize_t n;

	waitpid(child, NULL, 0); /* the intermediate process exits at once */
	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] != '\n') {
				if (used < sizeof(line) - 1)
					line[used++] = buf[i];
				continue;
			}
			line[used] = '\0';
			used = 0;
			if (line[0] == 'E')
				fprintf(stderr, "tcpexecd: %s\n", line + 1);
			else if (line[0] == 'R')
				return EXIT_OK;
			else if (line[0] == 'X')
				return atoi(line + 1) ? atoi(line + 1) : EXIT_RUNTIME;
		}
	}
	fprintf(stderr, "tcpexecd: the daemon exited before it was ready\n");
	return EXIT_RUNTIME;
}

int daemonize(void)
{
	struct sigaction sa = { .sa_handler = SIG_DFL };
	sigset_t all;
	int p[2], null;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		fatal(EXIT_RUNTIME, "pipe: %s", strerror(errno));
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		fatal(EXIT_RUNTIME, "fork: %s", strerror(errno));
	if (pid > 0) {
		close(p[1]);
		exit(launcher_wait(p[0], pid));
	}
	close(p[0]);
	if (setsid() < 0)
		_exit(EXIT_RUNTIME);
	/* The second fork makes sure we can never reacquire a terminal. */
	pid = fork();
	if (pid < 0)
		_exit(EXIT_RUNTIME);
	if (pid > 0)
		_exit(EXIT_OK);

	for (int sig = 1; sig < _NSIG; sig++)
		sigaction(sig, &sa, NULL); /* fails harmlessly for KILL, STOP, RT */
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	if (chdir("/") < 0)
		_exit(EXIT_RUNTIME);
	umask(022);

	null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
	/* Whatever the launcher's caller left open is not ours. */
	if (p[1] > 3)
		close_range(3, (unsigned)p[1] - 1, 0);
	close_range((unsigned)p[1] + 1, ~0U, 0);
	return p[1];
}

static void pipe_say(int fd, const char *msg)
{
	ssize_t n;

	do
		n = write(fd, msg, strlen(msg));
	while (n < 0 && errno == EINTR);
}

void daemonize_ready(int fd)
{
	pipe_say(fd, "R\n");
	close(fd);
}


/* An existing pidfile whose lock nobody holds is stale (its daemon died)
 * and is replaced. The new one is written to a temporary file, locked, and
 * renamed into place, so readers never see a partial pid. Two instances
 * racing through the rename are told apart by comparing inodes after it. */
int pidfile_acquire(const char *path, char *err, size_t errlen)
{
	char tmp[4096], pidtext[32];
	struct stat a, b;
	int old, fd, len;

	old = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (old >= 0) {
		if (flock(old, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK) {
			ssize_t n = read(old, pidtext, sizeof(pidtext) - 1);
			pidtext[n > 0 ? n : 0] = '\0';
			pidtext[strcspn(pidtext, "\n")] = '\0';
			snprintf(err, errlen, "pidfile %s is locked: tcpexecd is already running (pid %s)",
				 path, pidtext);
			close(old);
			return -1;
		}
		close(old);
	}
	snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path);
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "pidfile %s: %s", path, strerror(errno));
		return -1;
	}
	len = snprintf(pidtext, sizeof(pidtext), "%ld\n", (long)getpid());
	if (flock(fd, LOCK_EX | LOCK_NB) < 0 || fchmod(fd, 0644) < 0 ||
	    write(fd, pidtext, (size_t)len) != len || rename(tmp, path) < 0) {
		snprintf(err, errlen, "pidfile %s: %s", path, strerror(errno));
		unlink(tmp);
		close(fd);
		return -1;
	}
	if (stat(path, &a) < 0 || fstat(fd, &b) < 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
		snprintf(err, errlen, "pidfile %s: another tcpexecd took it while starting", path);
		close(fd);
		return -1;
	}
	return fd;
}

void pidfile_release(const char *path, int fd)
{
	struct stat a, b;

	if (stat(path, &a) == 0 && fstat(fd, &b) == 0 && a.st_ino == b.st_ino &&
	    a.st_dev == b.st_dev)
		unlink(path);
	close(fd);
}
