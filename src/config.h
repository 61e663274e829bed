/* SPDX-License-Identifier: MIT */
/*
 * The configuration: tcpexecd.conf (INI, parsed with inih) into struct
 * config, the built-in defaults, and validation with file:line:key
 * messages. Used by the master at start, on reload (SIGHUP) and by
 * `tcpexecd -t`; the workers read the copy they inherited.
 */
#ifndef TCPEXECD_CONFIG_H
#define TCPEXECD_CONFIG_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "addr.h"

#define CONFIG_MAX_LISTEN 16
#define CONFIG_PATH_MAX 256
#define CONFIG_MAX_ITEMS 32     /* fixed args, env names, networks per command */
#define CONFIG_MAX_COMMANDS 256
#define CONFIG_MAX_ITEMS_NET 16

enum line_mode { LINE_MODE_OFF, LINE_MODE_LOOPBACK, LINE_MODE_ALL };

/* Network rules: the matching rule with the longest prefix decides, deny
 * winning a tie; with no match, a list that has allow rules denies. */
struct netrules {
	struct cidr allow[CONFIG_MAX_ITEMS_NET];
	struct cidr deny[CONFIG_MAX_ITEMS_NET];
	int nallow, ndeny;
};
int config_netrules_allow(const struct netrules *r, const struct sockaddr *peer);

/* Options written after a listen address: "tls", "allow=CIDR,...",
 * "deny=CIDR,...". */
struct listen_opts {
	int tls;
	struct netrules rules;
};
enum args_mode { ARGS_NONE, ARGS_ANY, ARGS_PATTERN };

/* Resource limits of a command; RLIM_UNSET leaves the worker's own. */
#define RLIM_UNSET (-1LL)
enum { RL_CPU, RL_AS, RL_NPROC, RL_NOFILE, RL_FSIZE, RL_COUNT };

/* One [command NAME] entry of the allowlist. Strings are owned by the
 * struct config that holds the entry. */
struct command {
	char *name;
	char *path;                      /* absolute executable; NULL with shell */
	char *script;                    /* shell = yes: the /bin/sh -c script */
	int shell;
	char *args[CONFIG_MAX_ITEMS];     /* fixed leading arguments */
	int nargs;
	enum args_mode args_mode;
	char *arg_pattern;               /* POSIX ERE, matched against the whole arg */
	regex_t re;
	int has_re;
	int max_args;
	uint64_t timeout_ms;
	uint64_t output_limit;           /* bytes of stdout + stderr; 0 = none */
	char *user, *group;
	uid_t uid;
	gid_t gid;
	int has_uid, has_gid;
	char *workdir;
	char *env_names[CONFIG_MAX_ITEMS];  /* accepted from the client */
	int nenv_names;
	char *setenv[CONFIG_MAX_ITEMS];     /* NAME=value, fixed */
	int nsetenv;
	struct netrules net;             /* allow = / deny = */
	char *identities[CONFIG_MAX_ITEMS]; /* identity = : only these may run it */
	int nidentities;
	int stdin_ok;
	long long rlim[RL_COUNT];
	int line;                        /* where it was defined */
};

struct config {
	char source[CONFIG_PATH_MAX]; /* file it came from, or "(built-in)" */

	char listen[CONFIG_MAX_LISTEN][128];      /* the address part */
	struct listen_opts lopts[CONFIG_MAX_LISTEN];
	int nlisten;
	int backlog;

	int workers;     /* floor of the pool, started at once */
	int min_spare;   /* idle workers wanted at least */
	int max_spare;   /* idle workers above this are given back, one per tick */
	int max_workers; /* hard cap of the pool (current generation) */
	long max_requests; /* connections per worker before it recycles; 0 = no limit */
	int worker_batch;  /* workers run SCHED_BATCH; their commands do not */
	char loopback_cc[16]; /* congestion control for loopback peers; "" = the system's */

	uint64_t stop_timeout_ms;
	uint64_t heartbeat_timeout_ms;

	char pidfile[CONFIG_PATH_MAX];
	char control_socket[CONFIG_PATH_MAX];
	char log_file[CONFIG_PATH_MAX];
	int log_level;

	/* Remote execution. */
	enum line_mode line_mode;
	uint64_t handshake_timeout_ms; /* connect -> request */
	uint64_t idle_timeout_ms;      /* between frames and between requests */
	uint64_t linger_ms;            /* after the command exits, for its output */
	uint64_t kill_grace_ms;        /* SIGTERM -> SIGKILL at a timeout */
	uint32_t max_frame;            /* largest frame payload accepted */

	/* Security. */
	char tls_cert[CONFIG_PATH_MAX], tls_key[CONFIG_PATH_MAX];
	char tls_ca[CONFIG_PATH_MAX], tls_crl[CONFIG_PATH_MAX];
	char tls_psk_file[CONFIG_PATH_MAX];
	uint64_t tls_ticket_rotate_ms;
	int insecure;                  /* plaintext allowed beyond loopback */
	int per_source_max;            /* connections from one address */
	int max_connections;           /* connections being served, 0: max_workers */
	int max_startups[3];           /* start:rate:full, as sshd's MaxStartups */
	char user[64];                 /* drop to it when started as root */

	struct command *commands;      /* ncommands entries */
	int ncommands;
};

/* Command-line values that override the file, kept across reloads. */
struct config_overrides {
	const char *listen[CONFIG_MAX_LISTEN];
	int nlisten;
	int workers;            /* 0 = not set */
	const char *pidfile;    /* NULL = not set */
};

/* Load path over the defaults and validate. path NULL means the built-in
 * configuration (loopback listeners, a few harmless read-only commands).
 * Returns a new config, or NULL with "file:line: key: reason" in err. */
struct config *config_load(const char *path, const struct config_overrides *o,
			   char *err, size_t errlen);
void config_free(struct config *c);
/* The entry called name, or NULL. */
const struct command *config_command(const struct config *c, const char *name);
/* "30", "30s", "500ms", "2m", "1h" -> milliseconds. 0 or -1. */
/* Workers when the configuration does not say: one per CPU, at least 2. */
int config_default_workers(void);
int config_parse_duration(const char *s, uint64_t *ms);
/* "4096", "64K", "16M", "1G" -> bytes. 0 or -1. */
int config_parse_size(const char *s, uint64_t *bytes);

#endif
