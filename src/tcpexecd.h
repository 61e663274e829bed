/* SPDX-License-Identifier: MIT */
/*
 * Constants shared by every process of the daemon: exit codes (documented
 * under EXIT STATUS in tcpexecd(8)) and hard limits.
 */
#ifndef TCPEXECD_H
#define TCPEXECD_H

#include "buildconf.h"

/* Exit codes of tcpexecd, and of its workers (the master reads them). */
enum {
	EXIT_OK = 0,
	EXIT_RUNTIME = 1, /* start-up or runtime failure: bind, fork, I/O */
	EXIT_USAGE = 2,   /* bad command line */
	EXIT_CONFIG = 3,  /* bad configuration; from a worker: stop, do not respawn */
};

#include <stdint.h>
#include <time.h>

/* Milliseconds on CLOCK_MONOTONIC: every deadline and heartbeat uses it. */
static inline uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Signals a worker ignores (the master alone acts on them); a command
 * gets them back at their defaults. */
#define WORKER_IGNORED_SIGNALS SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGPIPE

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
