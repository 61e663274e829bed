/* SPDX-License-Identifier: MIT */
/*
 * Every libsystemd call lives behind this header: supervisor detection,
 * sd_notify, the watchdog, socket activation and the native journal. Built
 * without libsystemd (-Dsystemd=disabled) detection says "no", no socket is
 * inherited and notifications are no-ops, leaving the foreground and daemon
 * modes.
 */
#ifndef TCPEXECD_SYSTEMD_H
#define TCPEXECD_SYSTEMD_H

#include <stddef.h>
#include <stdint.h>

/* True when systemd started us: NOTIFY_SOCKET set, or LISTEN_PID is ours.
 * Never sd_booted(): a daemon started by hand on a systemd host must still
 * daemonize. */
int systemd_detect(void);

/* In the master, once, before the first fork: take the inherited sockets,
 * remember NOTIFY_SOCKET and the watchdog settings, and remove
 * NOTIFY_SOCKET, LISTEN_* and WATCHDOG_* from the environment so that no
 * worker or command ever sees them. */
struct systemd_socket {
	int fd;
	char name[256];   /* FileDescriptorName=, "" if none */
};
/* Returns the number of sockets stored in out (at most max), or -1 with a
 * reason in err when an inherited fd is not a listening stream socket. */
int systemd_take(struct systemd_socket *out, int max, char *err, size_t errlen);

/* The watchdog interval in microseconds, 0 when off (after systemd_take). */
uint64_t systemd_watchdog_usec(void);

/* sd_notify from the master; formatted like printf. No-op when
 * unsupervised. */
void systemd_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* In a worker: drop the same variables (a no-op once the master took them;
 * kept for inetd mode, where there is no master). */
void systemd_scrub_env(void);

/* True when stderr is connected to the journal (JOURNAL_STREAM names it). */
int systemd_journal_stream(void);
/* True when stderr belongs to a service without a journal stream: lines
 * get "<N>" priority prefixes (SyslogLevelPrefix=). */
int systemd_stderr_prefix(void);
/* Send one record to the journal. fields: "KEY=value" lines separated by
 * '\n' (may be NULL); values must not contain '\n'. 0 or -1. */
int systemd_journal_send(int prio, const char *msg, const char *msgid, const char *fields);

#endif
