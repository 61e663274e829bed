/* SPDX-License-Identifier: MIT */
/*
 * Every libsystemd call lives behind this header. Built without libsystemd
 * (-Dsystemd=disabled) the functions are no-ops and detection says "no".
 */
#ifndef TCPEXECD_SYSTEMD_H
#define TCPEXECD_SYSTEMD_H

/* True when systemd started us: NOTIFY_SOCKET set, or LISTEN_PID is ours.
 * Never sd_booted(): a daemon started by hand on a systemd host must still
 * daemonize. */
int systemd_detect(void);
/* In a worker: remove NOTIFY_SOCKET, LISTEN_* and WATCHDOG_* from the
 * environment, so that workers and their commands never see them. The
 * master keeps them: sd_notify reads NOTIFY_SOCKET there. */
void systemd_scrub_env(void);
/* sd_notify from the master; formatted like printf. No-op when unsupervised. */
void systemd_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
