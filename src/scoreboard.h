/* SPDX-License-Identifier: MIT */
/*
 * The shared-memory scoreboard: one slot per possible worker, written by the
 * worker that owns it and read by the master (pool decisions, hung-worker
 * backstop, status report). Sized once at start; never reallocated.
 */
#ifndef TCPEXECD_SCOREBOARD_H
#define TCPEXECD_SCOREBOARD_H

#include <stdint.h>
#include <sys/types.h>

enum worker_state {
	WS_FREE = 0,
	WS_STARTING,
	WS_IDLE,
	WS_BUSY,
	WS_EXITING,
};

struct slot {
	pid_t pid;
	unsigned generation;
	volatile int state;           /* enum worker_state */
	uint64_t started_ms;          /* CLOCK_MONOTONIC */
	volatile uint64_t heartbeat_ms;
	volatile uint64_t requests;
	volatile pid_t cmd_pgid;      /* process group of the running command, 0 if none */
	volatile int handshaking;     /* accepted, not yet past TLS / first byte */
	volatile int leaving;         /* given back: leaves when its connection ends */
	char host[48];                /* peer address without port: per-source caps */
	char peer[64];
	char command[96];
};

struct scoreboard {
	int nslots;
	struct slot *slots; /* MAP_SHARED, inherited by the workers */
};

int scoreboard_init(struct scoreboard *sb, int nslots);
void scoreboard_free(struct scoreboard *sb);
const char *scoreboard_state_name(int state);

#endif
