/* SPDX-License-Identifier: MIT */
/*
 * The allowlist decision: (peer, argv, client environment) -> which entry
 * runs and with which exec argv, or why not. Pure: no I/O, no logging; the
 * session logs the verdict once.
 */
#ifndef TCPEXECD_POLICY_H
#define TCPEXECD_POLICY_H

#include <sys/socket.h>

#include "config.h"

enum policy_verdict {
	POLICY_ALLOW = 0,
	POLICY_UNKNOWN,      /* no entry of that name */
	POLICY_DENIED,       /* the entry exists but not for this peer, args or env */
	POLICY_BAD_REQUEST,  /* empty argv */
};

/* Room for the fixed part (sh -c script name, or path + fixed args) and
 * every client argument the protocol can carry. */
#define POLICY_MAX_ARGV (CONFIG_MAX_ITEMS + 4 + 256)

struct policy_exec {
	const struct command *cmd;
	const char *path;                       /* what execve runs */
	const char *argv[POLICY_MAX_ARGV + 1];  /* NULL-terminated */
	int argc;
};

/* identity: who the client proved to be (TLS or SO_PEERCRED), "" or NULL
 * if nobody. argv[0] is the command name as the client asked for it; argv[1..] the
 * client's arguments. envp entries are "NAME=value". On POLICY_ALLOW, out
 * is filled (pointers into cfg and argv, valid while both are); otherwise
 * why says what was refused. */
enum policy_verdict policy_check(const struct config *cfg, const struct sockaddr *peer,
				 const char *identity, int argc, char *const argv[], int envc, char *const envp[],
				 struct policy_exec *out, char *why, size_t whylen);

#endif
