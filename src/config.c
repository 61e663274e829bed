// SPDX-License-Identifier: MIT
/*
 * tcpexecd.conf -> struct config: built-in defaults, the INI file read with
 * inih, and validation whose every message names file, line and key. The
 * master calls it at start and on SIGHUP, `tcpexecd -t` on its own. Pure
 * apart from reading the file: it never logs, errors go back in a buffer.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "addr.h"
#include "config.h"
#include "log.h"

#define DEFAULT_CONTROL "/run/tcpexecd/control"
#define MAX_WORKERS_CEILING 1024

void config_defaults(struct config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->source, sizeof(c->source), "(built-in)");
	/* Loopback only: an unconfigured daemon must not be reachable from the
	 * network. */
	snprintf(c->listen[0], sizeof(c->listen[0]), "127.0.0.1:5151");
	snprintf(c->listen[1], sizeof(c->listen[1]), "[::1]:5151");
	c->nlisten = 2;
	c->backlog = 1024;
	c->workers = 4;
	c->min_spare = 2;
	c->max_spare = 6;
	c->max_workers = 64;
	c->max_requests = 10000;
	c->stop_timeout_ms = 30000;
	c->heartbeat_timeout_ms = 60000;
	snprintf(c->control_socket, sizeof(c->control_socket), "%s", DEFAULT_CONTROL);
	c->log_level = LOG_INFO;
}

int config_parse_duration(const char *s, uint64_t *ms)
{
	static const struct { const char *unit; uint64_t mult; } units[] = {
		{ "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
	};
	unsigned long long v;
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].unit) == 0) {
			if (v > UINT64_MAX / units[i].mult / 1000)
				return -1;
			*ms = v * units[i].mult;
			return 0;
		}
	}
	return -1;
}

/* inih's handler does not receive line numbers (Debian builds it without
 * INI_HANDLER_LINENO), so the reader counts the lines it hands out: the
 * handler runs right after the line it is called for was read. The same
 * reader turns inih's silent truncation of long lines into an error. */
struct parse_state {
	struct config *c;
	FILE *f;
	int line;
	int too_long_line;
	int saw_listen; /* the first listen line replaces the defaults */
	char *err;
	size_t errlen;
	int failed;
};

static char *reader(char *str, int num, void *stream)
{
	struct parse_state *ps = stream;
	size_t len;

	if (!fgets(str, num, ps->f))
		return NULL;
	ps->line++;
	len = strlen(str);
	if (len == (size_t)num - 1 && str[len - 1] != '\n' && !feof(ps->f)) {
		int ch;
		if (!ps->too_long_line)
			ps->too_long_line = ps->line;
		while ((ch = fgetc(ps->f)) != EOF && ch != '\n')
			;
		str[0] = '\0';
	}
	return str;
}

static int fail(struct parse_state *ps, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct parse_state *ps, const char *key, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	if (ps->failed)
		return 0;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(ps->err, ps->errlen, "%s:%d: %s: %s", ps->c->source, ps->line, key, why);
	ps->failed = 1;
	return 0;
}

static int parse_int(const char *v, long lo, long hi, long *out)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || end == v || *end || n < lo || n > hi)
		return -1;
	*out = n;
	return 0;
}

static int set_path(struct parse_state *ps, const char *key, const char *value,
		    char *dst, size_t cap)
{
	if (value[0] != '\0' && value[0] != '/')
		return fail(ps, key, "\"%s\" is not an absolute path", value);
	if (strlen(value) >= cap)
		return fail(ps, key, "path longer than %zu bytes", cap - 1);
	memcpy(dst, value, strlen(value) + 1);
	return 1;
}

static int server_key(struct parse_state *ps, const char *key, const char *value)
{
	static const struct {
		const char *name;
		size_t off;
		long lo, hi;
	} ints[] = {
		{ "backlog", offsetof(struct config, backlog), 1, 65535 },
		{ "workers", offsetof(struct config, workers), 1, MAX_WORKERS_CEILING },
		{ "min_spare", offsetof(struct config, min_spare), 0, MAX_WORKERS_CEILING },
		{ "max_spare", offsetof(struct config, max_spare), 0, MAX_WORKERS_CEILING },
		{ "max_workers", offsetof(struct config, max_workers), 1, MAX_WORKERS_CEILING },
	};
	struct config *c = ps->c;
	char why[160];
	long n;

	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		if (strcmp(key, ints[i].name) != 0)
			continue;
		if (parse_int(value, ints[i].lo, ints[i].hi, &n) < 0)
			return fail(ps, key, "\"%s\" is not a whole number from %ld to %ld",
				    value, ints[i].lo, ints[i].hi);
		*(int *)((char *)c + ints[i].off) = (int)n;
		return 1;
	}

	if (strcmp(key, "listen") == 0) {
		struct addr a;
		if (!ps->saw_listen) {
			c->nlisten = 0;
			ps->saw_listen = 1;
		}
		if (c->nlisten >= CONFIG_MAX_LISTEN)
			return fail(ps, key, "more than %d listen addresses", CONFIG_MAX_LISTEN);
		if (addr_parse(value, &a, why, sizeof(why)) < 0)
			return fail(ps, key, "\"%s\": %s", value, why);
		snprintf(c->listen[c->nlisten++], sizeof(c->listen[0]), "%s", value);
		return 1;
	}
	if (strcmp(key, "max_requests") == 0) {
		if (parse_int(value, 0, LONG_MAX, &n) < 0)
			return fail(ps, key, "\"%s\" is not a whole number (0 = no limit)", value);
		c->max_requests = n;
		return 1;
	}
	if (strcmp(key, "stop_timeout") == 0 || strcmp(key, "heartbeat_timeout") == 0) {
		uint64_t ms;
		if (config_parse_duration(value, &ms) < 0)
			return fail(ps, key, "\"%s\" is not a duration (e.g. 500ms, 30s, 2m)", value);
		if (key[0] == 's') {
			c->stop_timeout_ms = ms;
		} else {
			if (ms < 1000)
				return fail(ps, key, "must be at least 1s");
			c->heartbeat_timeout_ms = ms;
		}
		return 1;
	}
	if (strcmp(key, "pidfile") == 0)
		return set_path(ps, key, value, c->pidfile, sizeof(c->pidfile));
	if (strcmp(key, "control_socket") == 0)
		return set_path(ps, key, value, c->control_socket,
				sizeof(c->control_socket) > 108 ? 108 : sizeof(c->control_socket));
	if (strcmp(key, "log_file") == 0)
		return set_path(ps, key, value, c->log_file, sizeof(c->log_file));
	if (strcmp(key, "log_level") == 0) {
		int lvl = log_level_parse(value);
		if (lvl < 0)
			return fail(ps, key, "\"%s\" is not one of err, warning, notice, info, debug",
				    value);
		c->log_level = lvl;
		return 1;
	}
	return fail(ps, key, "unknown key in [server]");
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
	struct parse_state *ps = user;

	if (ps->failed)
		return 1;
	if (strcmp(section, "server") == 0)
		return server_key(ps, key, value);
	if (section[0] == '\0')
		return fail(ps, key, "key outside of any section (expected [server])");
	return fail(ps, key, "unknown section [%s]", section);
}

int config_load(struct config *c, const char *path, char *err, size_t errlen)
{
	struct parse_state ps = { .c = c, .err = err, .errlen = errlen };
	int rc;

	config_defaults(c);
	if (!path)
		return 0;
	if (strlen(path) >= sizeof(c->source)) {
		snprintf(err, errlen, "%s: path too long", path);
		return -1;
	}
	snprintf(c->source, sizeof(c->source), "%s", path);
	ps.f = fopen(path, "re");
	if (!ps.f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	rc = ini_parse_stream(reader, &ps, handler, &ps);
	fclose(ps.f);
	if (ps.failed)
		return -1;
	if (ps.too_long_line) {
		snprintf(err, errlen, "%s:%d: line longer than %d characters", path,
			 ps.too_long_line, 198);
		return -1;
	}
	if (rc != 0) {
		snprintf(err, errlen, "%s:%d: syntax error (expected [section] or key = value)",
			 path, rc);
		return -1;
	}
	return 0;
}

int config_finish(struct config *c, const struct config_overrides *o,
		  char *err, size_t errlen)
{
	char why[160];
	struct addr a;

	if (o) {
		if (o->nlisten > 0) {
			for (int i = 0; i < o->nlisten; i++) {
				if (addr_parse(o->listen[i], &a, why, sizeof(why)) < 0) {
					snprintf(err, errlen, "-l %s: %s", o->listen[i], why);
					return -1;
				}
				snprintf(c->listen[i], sizeof(c->listen[i]), "%s", o->listen[i]);
			}
			c->nlisten = o->nlisten;
		}
		if (o->workers > 0)
			c->workers = o->workers;
		if (o->pidfile)
			snprintf(c->pidfile, sizeof(c->pidfile), "%s", o->pidfile);
	}
	if (c->nlisten == 0) {
		snprintf(err, errlen, "%s: listen: no address to listen on", c->source);
		return -1;
	}
	for (int i = 0; i < c->nlisten; i++)
		for (int j = 0; j < i; j++)
			if (strcmp(c->listen[i], c->listen[j]) == 0) {
				snprintf(err, errlen, "%s: listen: %s is given twice", c->source,
					 c->listen[i]);
				return -1;
			}
	if (c->workers > c->max_workers) {
		snprintf(err, errlen, "%s: workers: %d is more than max_workers (%d)", c->source,
			 c->workers, c->max_workers);
		return -1;
	}
	if (c->min_spare > c->max_spare) {
		snprintf(err, errlen, "%s: min_spare: %d is more than max_spare (%d)", c->source,
			 c->min_spare, c->max_spare);
		return -1;
	}
	return 0;
}
