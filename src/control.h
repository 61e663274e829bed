/* SPDX-License-Identifier: MIT */
/*
 * The control socket: a Unix stream socket under the runtime directory on
 * which the master answers a status report (`tcpexecd -s`), in the spirit
 * of `apachectl status`.
 */
#ifndef TCPEXECD_CONTROL_H
#define TCPEXECD_CONTROL_H

#include <stddef.h>

/* Master side: bind path (creating its directory); returns fd or -1/errno. */
int control_listen(const char *path);
/* Client side (`tcpexecd -s`): print the report to stdout; exit code. */
int control_query(const char *path);

#endif
