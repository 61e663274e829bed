// SPDX-License-Identifier: MIT
/*
 * Every libsystemd call of tcpexecd, all made by the master (and by the
 * single process of inetd mode): detection of a systemd supervisor,
 * socket activation, sd_notify and the watchdog, and records to the
 * native journal with structured fields. Built with -Dsystemd=disabled,
 * detection says "no" and the rest are no-ops.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "systemd.h"
#include "tcpexecd.h"

#if HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#endif

static const char *const supervisor_env[] = {
	"NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES",
	"WATCHDOG_PID", "WATCHDOG_USEC",
};


int systemd_detect(void)
{
	const char *pid = getenv("LISTEN_PID");

	if (getenv("NOTIFY_SOCKET"))
		return 1;
	return pid && atol(pid) == (long)getpid();
}

void systemd_scrub_env(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(supervisor_env); i++)
		unsetenv(supervisor_env[i]);
}

#if HAVE_SYSTEMD
static struct {
	char *notify_socket;    /* cached NOTIFY_SOCKET, NULL when unsupervised */
	uint64_t watchdog_usec;
} sd;

int systemd_take(struct systemd_socket *out, int max, char *err, size_t errlen)
{
	char **names = NULL;
	uint64_t usec = 0;
	const char *ns;
	int n, kept = 0, rc = 0;

	if (sd_watchdog_enabled(0, &usec) > 0)
		sd.watchdog_usec = usec;
	ns = getenv("NOTIFY_SOCKET");
	if (ns && !sd.notify_socket)
		sd.notify_socket = strdup(ns);

	n = sd_listen_fds_with_names(0, &names);
	if (n < 0) {
		snprintf(err, errlen, "socket activation: %s", strerror(-n));
		rc = -1;
	}
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		const char *name = names && names[i] ? names[i] : "";

		if (rc == 0 && sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
			snprintf(err, errlen,
				 "inherited fd %d (%s) is not a listening stream socket; "
				 "tcpexecd.socket needs ListenStream= and Accept=no", fd,
				 name[0] ? name : "unnamed");
			rc = -1;
		}
		if (rc == 0 && kept == max) {
			snprintf(err, errlen, "more than %d inherited sockets", max);
			rc = -1;
		}
		if (rc == 0) {
			out[kept].fd = fd;
			snprintf(out[kept].name, sizeof(out[kept].name), "%s", name);
			kept++;
		}
		free(names ? names[i] : NULL);
	}
	free(names);
	systemd_scrub_env();
	return rc < 0 ? -1 : kept;
}

uint64_t systemd_watchdog_usec(void)
{
	return sd.watchdog_usec;
}

void systemd_notify(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (!sd.notify_socket)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* sd_notify reads the socket from the environment, which the master
	 * cleared so that no child inherits it: put it back for the call. The
	 * master is single-threaded, so nobody sees the window. */
	setenv("NOTIFY_SOCKET", sd.notify_socket, 1);
	sd_notify(1, msg);
}

/* JOURNAL_STREAM is "device:inode" of the stream systemd connected. */
int systemd_journal_stream(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
		return 0;
	return st.st_dev == dev && st.st_ino == ino;
}

int systemd_stderr_prefix(void)
{
	return getenv("INVOCATION_ID") && !isatty(STDERR_FILENO);
}

int systemd_journal_send(int prio, const char *msg, const char *msgid, const char *fields)
{
	struct iovec iov[40];
	char pbuf[16], mbuf[2100], idbuf[64];
	const char *p = fields;
	int n = 0;

	snprintf(pbuf, sizeof(pbuf), "PRIORITY=%d", prio);
	snprintf(mbuf, sizeof(mbuf), "MESSAGE=%s", msg);
	iov[n++] = (struct iovec){ pbuf, strlen(pbuf) };
	iov[n++] = (struct iovec){ mbuf, strlen(mbuf) };
	iov[n++] = (struct iovec){ (void *)"SYSLOG_IDENTIFIER=tcpexecd",
				   sizeof("SYSLOG_IDENTIFIER=tcpexecd") - 1 };
	if (msgid) {
		snprintf(idbuf, sizeof(idbuf), "MESSAGE_ID=%s", msgid);
		iov[n++] = (struct iovec){ idbuf, strlen(idbuf) };
	}
	while (p && *p && n < (int)ARRAY_SIZE(iov)) {
		size_t len = strcspn(p, "\n");
		if (len)
			iov[n++] = (struct iovec){ (void *)p, len };
		p += len + (p[len] == '\n');
	}
	return sd_journal_sendv(iov, n) < 0 ? -1 : 0;
}
#else
int systemd_take(struct systemd_socket *out, int max, char *err, size_t errlen)
{
	(void)out;
	(void)max;
	(void)err;
	(void)errlen;
	systemd_scrub_env();
	return 0;
}

uint64_t systemd_watchdog_usec(void)
{
	return 0;
}

void systemd_notify(const char *fmt, ...)
{
	(void)fmt;
}

int systemd_journal_stream(void)
{
	return 0;
}

int systemd_stderr_prefix(void)
{
	return 0;
}

int systemd_journal_send(int prio, const char *msg, const char *msgid, const char *fields)
{
	(void)prio;
	(void)msg;
	(void)msgid;
	(void)fields;
	return -1;
}
#endif
