/* SPDX-License-Identifier: MIT */
/*
 * The master process: owns the listening sockets, preforks and reaps the
 * workers, keeps the pool sized, reloads and stops.
 */
#ifndef TCPEXECD_MASTER_H
#define TCPEXECD_MASTER_H

#include "config.h"

enum start_mode {
	START_FOREGROUND, /* -f: stderr logging, bound addresses on stdout */
	START_DAEMON,     /* no systemd: double fork, pidfile, syslog */
	START_SYSTEMD,    /* started by systemd: foreground, sd_notify */
};

struct master_opts {
	const char *config_path;   /* NULL: built-in configuration */
	struct config_overrides overrides;
	enum start_mode mode;
	int ready_fd;              /* daemon mode: readiness pipe, else -1 */
};

/* Run until stopped; returns the process exit code. Takes ownership of cfg
 * (from config_load). */
int master_run(const struct master_opts *opts, struct config *cfg);

#endif
