/* SPDX-License-Identifier: MIT */
/*
 * The fallback when no systemd runs us: daemon(7)'s SysV steps, a readiness
 * pipe back to the launching process, and a locked pidfile.
 */
#ifndef TCPEXECD_DAEMONIZE_H
#define TCPEXECD_DAEMONIZE_H

#include <stddef.h>

/* Detach. Returns only in the daemon, with the write end of the readiness
 * pipe; the launching process waits on it and exits with the daemon's
 * verdict. */
int daemonize(void);
/* Tell the launcher we are serving (closes fd). */
void daemonize_ready(int fd);
/* A failure before that is told by fatal(): log.c copies the error
 * messages and the exit code to the pipe. */

/* Create and lock the pidfile. Returns the locked fd, or -1 with a reason. */
int pidfile_acquire(const char *path, char *err, size_t errlen);
/* Remove the pidfile if it is still ours, close fd. */
void pidfile_release(const char *path, int fd);

#endif
