// SPDX-License-Identifier: MIT
/*
 * The allowlist decision, in the worker: a command name maps to one
 * configured entry; the peer must be in the entry's networks, every client
 * argument must be allowed by the entry's args mode (none / any / a whole-
 * argument pattern), every client variable must be named by the entry.
 * Arguments are data: nothing here or later parses them as syntax.
 */
#include <stdio.h>
#include <string.h>

#include "policy.h"

/* Client-chosen text in a message: printable ASCII only, no quotes, so
 * that the ERROR frame stays UTF-8 and the audit record unambiguous. */
static const char *safe(char *buf, size_t cap, const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len && s[i] && i + 1 < cap; i++)
		buf[i] = s[i] > 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\' ? s[i] : '?';
	buf[i] = '\0';
	return buf;
}

static int identity_allowed(const struct command *cmd, const char *identity)
{
	if (cmd->nidentities == 0)
		return 1;
	for (int i = 0; identity && i < cmd->nidentities; i++)
		if (strcmp(cmd->identities[i], identity) == 0)
			return 1;
	return 0;
}

static int env_allowed(const struct command *cmd, const char *entry)
{
	const char *eq = strchr(entry, '=');
	size_t len = eq ? (size_t)(eq - entry) : strlen(entry);

	for (int i = 0; i < cmd->nenv_names; i++)
		if (strlen(cmd->env_names[i]) == len && memcmp(cmd->env_names[i], entry, len) == 0)
			return 1;
	return 0;
}

enum policy_verdict policy_check(const struct config *cfg, const struct sockaddr *peer,
				 const char *identity, int argc, char *const argv[], int envc, char *const envp[],
				 struct policy_exec *out, char *why, size_t whylen)
{
	const struct command *cmd;
	char tmp[72];
	int n = 0;

	if (argc < 1 || !argv[0][0]) {
		snprintf(why, whylen, "empty command");
		return POLICY_BAD_REQUEST;
	}
	cmd = config_command(cfg, argv[0]);
	if (!cmd) {
		snprintf(why, whylen, "no command \"%s\" is configured",
			 safe(tmp, sizeof(tmp), argv[0], 64));
		return POLICY_UNKNOWN;
	}
	if (!config_netrules_allow(&cmd->net, peer)) {
		snprintf(why, whylen, "%s is not allowed from this address", cmd->name);
		return POLICY_DENIED;
	}
	if (!identity_allowed(cmd, identity)) {
		snprintf(why, whylen, "%s is not allowed for %s", cmd->name,
			 identity && identity[0] ? "this identity" : "unauthenticated clients");
		return POLICY_DENIED;
	}
	if (argc - 1 > 0 && cmd->args_mode == ARGS_NONE) {
		snprintf(why, whylen, "%s takes no arguments", cmd->name);
		return POLICY_DENIED;
	}
	if (argc - 1 > cmd->max_args) {
		snprintf(why, whylen, "%s takes at most %d arguments", cmd->name, cmd->max_args);
		return POLICY_DENIED;
	}
	if (cmd->args_mode == ARGS_PATTERN)
		for (int i = 1; i < argc; i++)
			if (regexec(&cmd->re, argv[i], 0, NULL, 0) != 0) {
				snprintf(why, whylen, "argument %d of %s does not match its pattern",
					 i, cmd->name);
				return POLICY_DENIED;
			}
	for (int i = 0; i < envc; i++)
		if (!env_allowed(cmd, envp[i])) {
			snprintf(why, whylen, "%s does not accept the variable %s", cmd->name,
				 safe(tmp, sizeof(tmp), envp[i], strcspn(envp[i], "=")));
			return POLICY_DENIED;
		}

	out->cmd = cmd;
	if (cmd->shell) {
		/* The script is the administrator's; client arguments reach it
		 * as "$1" "$2" ..., never as part of the script text. */
		out->path = "/bin/sh";
		out->argv[n++] = "sh";
		out->argv[n++] = "-c";
		out->argv[n++] = cmd->script;
		out->argv[n++] = cmd->name;
	} else {
		out->path = cmd->path;
		out->argv[n++] = cmd->path;
		for (int i = 0; i < cmd->nargs; i++)
			out->argv[n++] = cmd->args[i];
	}
	for (int i = 1; i < argc && n < POLICY_MAX_ARGV; i++)
		out->argv[n++] = argv[i];
	out->argv[n] = NULL;
	out->argc = n;
	return POLICY_ALLOW;
}
