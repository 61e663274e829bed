// SPDX-License-Identifier: MIT
/*
 * Logging for every process (master, workers, the client's error paths):
 * stderr in the foreground, syslog in daemon mode, or an O_APPEND file.
 * A record is formatted into one buffer and written with one write(), so
 * lines from workers sharing a descriptor never interleave.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

static struct {
	const char *ident;
	enum log_target target;
	int fd;          /* stderr or the log file; -1 for syslog */
	char path[256];  /* log file, for reopen */
	int level;
	int startup_fd;  /* readiness pipe in daemon mode, else -1 */
	int prefix;      /* "<N>" priority prefixes for systemd's stderr parser */
	log_journal_fn journal;
	int forward_fd;  /* worker: journal records go to the master here */
} lg = { "tcpexecd", LOG_TARGET_STDERR, 2, "", LOG_INFO, -1, 0, NULL, -1 };

void log_init(const char *ident)
{
	lg.ident = ident;
	lg.target = LOG_TARGET_STDERR;
	lg.fd = STDERR_FILENO;
}

static int open_file(const char *path)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
}

int log_open(enum log_target target, const char *path)
{
	int fd = -1;

	if (target == LOG_TARGET_FILE) {
		fd = open_file(path);
		if (fd < 0)
			return -1;
		snprintf(lg.path, sizeof(lg.path), "%s", path);
	}
	if (lg.target == LOG_TARGET_FILE && lg.fd >= 0)
		close(lg.fd);
	if (lg.target == LOG_TARGET_SYSLOG)
		closelog();

	lg.target = target;
	switch (target) {
	case LOG_TARGET_STDERR:
		lg.fd = STDERR_FILENO;
		break;
	case LOG_TARGET_SYSLOG:
		lg.fd = -1;
		openlog(lg.ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
		break;
	case LOG_TARGET_FILE:
		lg.fd = fd;
		break;
	case LOG_TARGET_JOURNAL:
		lg.fd = STDERR_FILENO; /* the fallback if the journal refuses */
		break;
	}
	return 0;
}

void log_set_journal(log_journal_fn fn)
{
	lg.journal = fn;
}

void log_set_prefix(int on)
{
	lg.prefix = on;
}

void log_set_forward(int fd)
{
	lg.forward_fd = fd;
}

int log_journal_target(void)
{
	return lg.target == LOG_TARGET_JOURNAL;
}

/* One datagram: priority, MESSAGE_ID (may be empty), message, then the
 * fields, separated by '\n'. */
static int forward(int prio, const char *msg, const char *msgid, const char *fields)
{
	char buf[4096];
	int n = snprintf(buf, sizeof(buf), "%d\n%s\n%s\n%s", prio, msgid ? msgid : "", msg,
			 fields ? fields : "");

	if (n < 0 || n >= (int)sizeof(buf))
		return -1;
	return send(lg.forward_fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) == n ? 0 : -1;
}

int log_forwarded(const char *dgram, size_t len)
{
	char buf[4096], *msgid, *msg, *fields, *end;
	long prio;

	if (!lg.journal || len >= sizeof(buf))
		return -1;
	memcpy(buf, dgram, len);
	buf[len] = '\0';
	prio = strtol(buf, &end, 10);
	if (*end != '\n' || prio < 0 || prio > LOG_DEBUG)
		return -1;
	msgid = end + 1;
	if (!(msg = strchr(msgid, '\n')))
		return -1;
	*msg++ = '\0';
	if (!(fields = strchr(msg, '\n')))
		return -1;
	*fields++ = '\0';
	return lg.journal((int)prio, msg, msgid[0] ? msgid : NULL, fields);
}

int log_reopen(void)
{
	int fd;

	if (lg.target != LOG_TARGET_FILE)
		return 0;
	fd = open_file(lg.path);
	if (fd < 0)
		return -1;
	/* dup3 keeps the descriptor number, so nothing that cached it breaks. */
	if (dup3(fd, lg.fd, O_CLOEXEC) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	close(fd);
	return 0;
}

void log_set_level(int prio)
{
	lg.level = prio;
}

int log_enabled(int prio)
{
	return prio <= lg.level;
}

void log_set_startup_fd(int fd)
{
	lg.startup_fd = fd;
}

int log_level_parse(const char *name)
{
	static const struct { const char *name; int prio; } levels[] = {
		{ "err", LOG_ERR }, { "warning", LOG_WARNING },
		{ "notice", LOG_NOTICE }, { "info", LOG_INFO },
		{ "debug", LOG_DEBUG },
	};
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (strcmp(name, levels[i].name) == 0)
			return levels[i].prio;
	return -1;
}

static const char *prio_prefix(int prio)
{
	if (prio <= LOG_ERR)
		return "error: ";
	if (prio == LOG_WARNING)
		return "warning: ";
	return "";
}

static void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		buf += n;
		len -= (size_t)n;
	}
}

static void vevent(int prio, const char *msgid, const char *fields, const char *fmt, va_list ap)
	__attribute__((format(printf, 4, 0)));

static void vevent(int prio, const char *msgid, const char *fields, const char *fmt, va_list ap)
{
	char msg[2048], line[2200];
	int saved = errno;
	int n;

	if (prio > lg.level && lg.startup_fd < 0)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);

	if (prio <= LOG_ERR && lg.startup_fd >= 0) {
		/* The launcher prints these as the daemon's own error. */
		n = snprintf(line, sizeof(line), "E%s\n", msg);
		write_all(lg.startup_fd, line, n < (int)sizeof(line) ? (size_t)n : sizeof(line) - 1);
	}
	if (prio > lg.level)
		goto out;

	if (lg.target == LOG_TARGET_SYSLOG) {
		syslog(prio, "%s", msg);
		goto out;
	}
	/* A worker may exit right after its record: journald, which looks up
	 * the sender's unit when the record arrives, would find no process
	 * and file it under no unit. The long-lived master sends it instead. */
	if (lg.target == LOG_TARGET_JOURNAL && lg.forward_fd >= 0 &&
	    forward(prio, msg, msgid, fields) == 0)
		goto out;
	if (lg.target == LOG_TARGET_JOURNAL && lg.journal &&
	    lg.journal(prio, msg, msgid, fields) == 0)
		goto out;
	if (lg.prefix)
		n = snprintf(line, sizeof(line), "<%d>%s[%ld]: %s\n", prio, lg.ident,
			     (long)getpid(), msg);
	else
		n = snprintf(line, sizeof(line), "%s[%ld]: %s%s\n", lg.ident, (long)getpid(),
			     prio_prefix(prio), msg);
	if (n >= (int)sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	write_all(lg.fd, line, (size_t)n);
out:
	errno = saved;
}

void log_vmsg(int prio, const char *fmt, va_list ap)
{
	vevent(prio, NULL, NULL, fmt, ap);
}

void log_event(int prio, const char *msgid, const char *fields, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vevent(prio, msgid, fields, fmt, ap);
	va_end(ap);
}

void log_msg(int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(prio, fmt, ap);
	va_end(ap);
}

void fatal(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_ERR, fmt, ap);
	va_end(ap);
	if (lg.startup_fd >= 0) {
		char x[16];
		int n = snprintf(x, sizeof(x), "X%d\n", code);
		write_all(lg.startup_fd, x, (size_t)n);
	}
	exit(code);
}
