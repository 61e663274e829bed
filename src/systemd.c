// SPDX-License-Identifier: MIT
/*
 * Every libsystemd call of tcpexecd: detection of a systemd supervisor and
 * sd_notify from the master. Built with -Dsystemd=disabled, detection says
 * "no" and notifications are no-ops, leaving the foreground and daemon
 * modes.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "systemd.h"
#include "tcpexecd.h"

#if HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
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

void systemd_notify(const char *fmt, ...)
{
#if HAVE_SYSTEMD
	char msg[1024];
	va_list ap;

	if (!getenv("NOTIFY_SOCKET"))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	sd_notify(0, msg);
#else
	(void)fmt;
#endif
}
