/* SPDX-License-Identifier: MIT */
/*
 * The listening sockets of the standalone path: create, set options, bind,
 * listen. Runs in the master only; workers inherit the descriptors.
 */
#ifndef TCPEXECD_LISTEN_H
#define TCPEXECD_LISTEN_H

#include "addr.h"

struct listener {
	int fd;                       /* owned by the master, -1 when closed */
	char spec[128];               /* as configured, the key for reload diffs */
	char bound[ADDR_STRLEN];      /* actual address (port 0 resolved) */
	int is_unix;
};

/* Open and listen on spec. 0, or -1 with a reason in err. */
int listen_open(struct listener *l, const char *spec, int backlog,
		char *err, size_t errlen);
/* Close and, for a Unix socket we created, unlink its path. */
void listen_close(struct listener *l);

#endif
