/* SPDX-License-Identifier: MIT */
/*
 * The configuration: tcpexecd.conf (INI, parsed with inih) into struct config,
 * the built-in defaults, and validation with file:line:key messages. Used by
 * the master at start, on reload (SIGHUP) and by `tcpexecd -t`.
 */
#ifndef TCPEXECD_CONFIG_H
#define TCPEXECD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_LISTEN 16
#define CONFIG_PATH_MAX 256

struct config {
	char source[CONFIG_PATH_MAX]; /* file it came from, or "(built-in)" */

	char listen[CONFIG_MAX_LISTEN][128];
	int nlisten;
	int backlog;

	int workers;     /* floor of the pool, started at once */
	int min_spare;   /* idle workers wanted at least */
	int max_spare;   /* idle workers above this are retired, one per tick */
	int max_workers; /* hard cap of the pool (current generation) */
	long max_requests; /* connections per worker before it recycles; 0 = no limit */

	uint64_t stop_timeout_ms;
	uint64_t heartbeat_timeout_ms;

	char pidfile[CONFIG_PATH_MAX];
	char control_socket[CONFIG_PATH_MAX];
	char log_file[CONFIG_PATH_MAX];
	int log_level;
};

/* Command-line values that override the file, kept across reloads. */
struct config_overrides {
	const char *listen[CONFIG_MAX_LISTEN];
	int nlisten;
	int workers;            /* 0 = not set */
	const char *pidfile;    /* NULL = not set */
};

void config_defaults(struct config *c);
/* Load path over the defaults and validate. If path is NULL the built-in
 * configuration is used. 0 on success; -1 with "file:line: key: reason" in
 * err. */
int config_load(struct config *c, const char *path, char *err, size_t errlen);
/* Apply overrides and check cross-field rules (min_spare <= max_spare ...). */
int config_finish(struct config *c, const struct config_overrides *o,
		  char *err, size_t errlen);
/* "30", "30s", "500ms", "2m", "1h" -> milliseconds. 0 or -1. */
int config_parse_duration(const char *s, uint64_t *ms);

#endif
