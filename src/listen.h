/* SPDX-License-Identifier: MIT */
/*
 * The listening sockets of the standalone path: create, set options, bind,
 * listen. Runs in the master only; workers inherit the descriptors.
 */
#ifndef TCPEXECD_LISTEN_H
#define TCPEXECD_LISTEN_H

#include "addr.h"

/* Configured listeners plus sockets systemd passed that the configuration
 * does not name. */
#define LISTEN_MAX 32

struct listener {
	int fd;                       /* owned by the master, -1 when closed */
	char spec[128];               /* as configured ("" if only inherited) */
	char bound[ADDR_STRLEN];      /* actual address (port 0 resolved) */
	char name[64];                /* FileDescriptorName= of an inherited socket */
	int is_unix;
	int inherited;                /* from systemd: never unlinked or shut down */
	int opt;                      /* index of its options in config.lopts, -1: none */
};

/* Open and listen on spec. 0, or -1 with a reason in err. */
int listen_open(struct listener *l, const char *spec, int backlog,
		char *err, size_t errlen);
/* Take over a listening socket systemd passed (fd is owned from now on). */
int listen_adopt(struct listener *l, int fd, const char *name, char *err, size_t errlen);
/* Does l serve the configured address spec? Same spec, or for an inherited
 * socket the same bound address. */
int listen_matches(const struct listener *l, const char *spec);
/* Connections waiting to be accepted on l: the accept queue of a TCP
 * listener; 0 for a Unix socket, whose queue is not visible this way. */
int listen_queued(const struct listener *l);
/* Close and, for a Unix socket we created, unlink its path. */
void listen_close(struct listener *l);

#endif
