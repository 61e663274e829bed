// SPDX-License-Identifier: MIT
/*
 * tcpexecd.conf -> struct config: built-in defaults, the INI file read with
 * inih, and validation whose every message names file, line and key. The
 * master calls it at start and on SIGHUP, `tcpexecd -t` on its own. Pure
 * apart from reading the file: it never logs, errors go back in a buffer.
 */
#include <errno.h>
#include <sched.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grp.h>
#include <pwd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ini.h>

#include "addr.h"
#include "config.h"
#include "log.h"
#include "tcpexecd.h"

#define DEFAULT_CONTROL "/run/tcpexecd/control"
#define MAX_WORKERS_CEILING 1024

/* The configuration used when no file is named and the default file does
 * not exist: loopback only, and a few harmless read-only commands, so that
 * a fresh build does something useful and nothing dangerous. Entries whose
 * executable is missing on this system are left out. */
static const char builtin_conf[] =
	"[server]\n"
	"listen = 127.0.0.1:5151\n"
	"listen = [::1]:5151\n"
	"[command uptime]\n"
	"path = /usr/bin/uptime\n"
	"[command date]\n"
	"path = /bin/date\n"
	"args = pattern\n"
	"arg_pattern = \\+[-%A-Za-z0-9:_. ]*\n"
	"max_args = 1\n"
	"[command hostname]\n"
	"path = /bin/hostname\n"
	"[command uname]\n"
	"path = /bin/uname\n"
	"args = pattern\n"
	"arg_pattern = -[asnrvmpio]+\n"
	"[command echo]\n"
	"path = /bin/echo\n"
	"args = any\n";

static void defaults(struct config *c)
{
	snprintf(c->source, sizeof(c->source), "(built-in)");
	/* Loopback only: an unconfigured daemon must not be reachable from the
	 * network. */
	snprintf(c->listen[0], sizeof(c->listen[0]), "127.0.0.1:5151");
	snprintf(c->listen[1], sizeof(c->listen[1]), "[::1]:5151");
	c->nlisten = 2;
	c->backlog = 1024;
	c->workers = 0; /* one per CPU: resolved in check_whole, after max_workers */
	c->min_spare = 2;
	c->max_spare = 6;
	c->max_workers = 64;
	c->max_requests = 10000;
	c->worker_batch = 1;
	snprintf(c->loopback_cc, sizeof(c->loopback_cc), "%s", ADDR_LOOPBACK_CC);
	c->stop_timeout_ms = 30000;
	c->heartbeat_timeout_ms = 60000;
	snprintf(c->control_socket, sizeof(c->control_socket), "%s", DEFAULT_CONTROL);
	c->log_level = LOG_INFO;
	c->line_mode = LINE_MODE_LOOPBACK;
	c->handshake_timeout_ms = 10000;
	c->idle_timeout_ms = 60000;
	c->linger_ms = 2000;
	c->kill_grace_ms = 2000;
	c->max_frame = 1u << 20;
	c->tls_ticket_rotate_ms = 3600000;
	c->per_source_max = 16;
	c->max_startups[0] = 10;
	c->max_startups[1] = 30;
	c->max_startups[2] = 60;
}

int config_netrules_allow(const struct netrules *r, const struct sockaddr *peer)
{
	int best = -1, verdict = r->nallow == 0;

	for (int i = 0; i < r->nallow; i++)
		if (r->allow[i].prefix > best && addr_cidr_match(&r->allow[i], peer)) {
			best = r->allow[i].prefix;
			verdict = 1;
		}
	for (int i = 0; i < r->ndeny; i++)
		if (r->deny[i].prefix >= best && addr_cidr_match(&r->deny[i], peer)) {
			best = r->deny[i].prefix;
			verdict = 0;
		}
	return verdict;
}

/* "CIDR[,CIDR...]" into one side of a rule list. */
static int add_cidrs(struct cidr *arr, int *n, const char *list, char *why, size_t whylen)
{
	char buf[512], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", list);
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (*n >= CONFIG_MAX_ITEMS_NET) {
			snprintf(why, whylen, "more than %d networks", CONFIG_MAX_ITEMS_NET);
			return -1;
		}
		if (addr_cidr_parse(tok, &arr[*n], why, whylen) < 0)
			return -1;
		(*n)++;
	}
	return 0;
}

/* "ADDRESS [tls] [allow=CIDR,...] [deny=CIDR,...]" */
static int parse_listen(const char *value, char *addr, size_t addrlen, struct listen_opts *o,
			char *why, size_t whylen)
{
	char buf[512], *save = NULL, *tok;
	struct addr a;

	memset(o, 0, sizeof(*o));
	snprintf(buf, sizeof(buf), "%s", value);
	tok = strtok_r(buf, " \t", &save);
	if (!tok) {
		snprintf(why, whylen, "no address");
		return -1;
	}
	if (addr_parse(tok, &a, why, whylen) < 0)
		return -1;
	if (strlen(tok) >= addrlen) {
		snprintf(why, whylen, "address too long");
		return -1;
	}
	memcpy(addr, tok, strlen(tok) + 1);
	while ((tok = strtok_r(NULL, " \t", &save))) {
		if (strcmp(tok, "tls") == 0)
			o->tls = 1;
		else if (strncmp(tok, "allow=", 6) == 0) {
			if (add_cidrs(o->rules.allow, &o->rules.nallow, tok + 6, why, whylen) < 0)
				return -1;
		} else if (strncmp(tok, "deny=", 5) == 0) {
			if (add_cidrs(o->rules.deny, &o->rules.ndeny, tok + 5, why, whylen) < 0)
				return -1;
		} else {
			snprintf(why, whylen, "unknown listen option \"%s\" (tls, allow=, deny=)", tok);
			return -1;
		}
	}
	return 0;
}

static int parse_suffixed(const char *s, const char *const *units, const uint64_t *mult,
			  size_t nunits, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	for (size_t i = 0; i < nunits; i++) {
		if (strcmp(end, units[i]) == 0) {
			if (v > UINT64_MAX / 1000 / mult[i])
				return -1;
			*out = v * mult[i];
			return 0;
		}
	}
	return -1;
}

int config_parse_duration(const char *s, uint64_t *ms)
{
	static const char *const units[] = { "", "ms", "s", "m", "h" };
	static const uint64_t mult[] = { 1000, 1, 1000, 60000, 3600000 };
	return parse_suffixed(s, units, mult, ARRAY_SIZE(units), ms);
}

int config_parse_size(const char *s, uint64_t *bytes)
{
	static const char *const units[] = { "", "K", "M", "G" };
	static const uint64_t mult[] = { 1, 1u << 10, 1u << 20, 1u << 30 };
	return parse_suffixed(s, units, mult, ARRAY_SIZE(units), bytes);
}

/* inih's handler does not receive line numbers (Debian builds it without
 * INI_HANDLER_LINENO), so the reader counts the lines it hands out: the
 * handler runs right after the line it is called for was read. The same
 * reader turns inih's silent splitting of long lines into an error. */
struct parse_state {
	struct config *c;
	struct command *cmd;  /* the [command] section being read, or NULL */
	FILE *f;
	int builtin;
	int line;
	int section_line; /* of the last [section] header read */
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
	if (str[strspn(str, " \t")] == '[')
		ps->section_line = ps->line;
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

static int parse_bool(const char *v, int *out)
{
	if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "1"))
		*out = 1;
	else if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "0"))
		*out = 0;
	else
		return -1;
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

/* loopback_congestion: "system", or a congestion control that this
 * process can set on a TCP socket now (tried on a throwaway one, so that a
 * name the kernel does not know, or does not allow, is a configuration
 * error and not a silent no-op on every connection). */
static int set_loopback_cc(struct parse_state *ps, const char *key, const char *value,
			   char *dst, size_t cap)
{
	int fd, rc, e;

	if (strcmp(value, "system") == 0) {
		dst[0] = '\0';
		return 1;
	}
	if (value[0] == '\0' || strlen(value) >= cap || strspn(value,
	    "abcdefghijklmnopqrstuvwxyz0123456789_-") != strlen(value))
		return fail(ps, key, "\"%s\" is not a congestion control name or system", value);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		rc = setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, value, (socklen_t)strlen(value));
		e = errno;
		close(fd);
		if (rc < 0)
			return fail(ps, key, "\"%s\": %s (see /proc/sys/net/ipv4/"
				    "tcp_%s_congestion_control)", value,
				    e == EPERM ? "not allowed" : strerror(e),
				    e == EPERM ? "allowed" : "available");
	}
	memcpy(dst, value, strlen(value) + 1);
	return 1;
}

static int set_duration(struct parse_state *ps, const char *key, const char *value,
			uint64_t min_ms, uint64_t *dst)
{
	uint64_t ms;

	if (config_parse_duration(value, &ms) < 0)
		return fail(ps, key, "\"%s\" is not a duration (e.g. 500ms, 30s, 2m)", value);
	if (ms < min_ms)
		return fail(ps, key, "must be at least %llums", (unsigned long long)min_ms);
	*dst = ms;
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
	static const struct {
		const char *name;
		size_t off;
		uint64_t min_ms;
	} durations[] = {
		{ "stop_timeout", offsetof(struct config, stop_timeout_ms), 0 },
		{ "heartbeat_timeout", offsetof(struct config, heartbeat_timeout_ms), 1000 },
		{ "handshake_timeout", offsetof(struct config, handshake_timeout_ms), 100 },
		{ "idle_timeout", offsetof(struct config, idle_timeout_ms), 100 },
		{ "linger", offsetof(struct config, linger_ms), 0 },
		{ "kill_grace", offsetof(struct config, kill_grace_ms), 0 },
		{ "tls_ticket_rotate", offsetof(struct config, tls_ticket_rotate_ms), 60000 },
	};
	struct config *c = ps->c;
	char why[160];
	long n;

	for (size_t i = 0; i < ARRAY_SIZE(ints); i++) {
		if (strcmp(key, ints[i].name) != 0)
			continue;
		if (parse_int(value, ints[i].lo, ints[i].hi, &n) < 0)
			return fail(ps, key, "\"%s\" is not a whole number from %ld to %ld",
				    value, ints[i].lo, ints[i].hi);
		/* The offset is of an int member: the alignment is right. */
		*(int *)(void *)((char *)c + ints[i].off) = (int)n;
		return 1;
	}
	for (size_t i = 0; i < ARRAY_SIZE(durations); i++)
		if (strcmp(key, durations[i].name) == 0)
			return set_duration(ps, key, value, durations[i].min_ms,
					    (uint64_t *)(void *)((char *)c + durations[i].off));

	if (strcmp(key, "listen") == 0) {
		if (!ps->saw_listen) {
			c->nlisten = 0;
			ps->saw_listen = 1;
		}
		if (c->nlisten >= CONFIG_MAX_LISTEN)
			return fail(ps, key, "more than %d listen addresses", CONFIG_MAX_LISTEN);
		if (parse_listen(value, c->listen[c->nlisten], sizeof(c->listen[0]),
				 &c->lopts[c->nlisten], why, sizeof(why)) < 0)
			return fail(ps, key, "\"%s\": %s", value, why);
		c->nlisten++;
		return 1;
	}
	if (strcmp(key, "max_connections") == 0) {
		if (parse_int(value, 0, MAX_WORKERS_CEILING, &n) < 0)
			return fail(ps, key, "\"%s\" is not a whole number from 0 (max_workers) to %d",
				    value, MAX_WORKERS_CEILING);
		c->max_connections = (int)n;
		return 1;
	}
	if (strcmp(key, "per_source_max") == 0) {
		if (parse_int(value, 0, MAX_WORKERS_CEILING, &n) < 0)
			return fail(ps, key, "\"%s\" is not a whole number from 0 (no limit) to %d",
				    value, MAX_WORKERS_CEILING);
		c->per_source_max = (int)n;
		return 1;
	}
	if (strcmp(key, "max_startups") == 0) {
		int a, b, f;
		char extra;
		if (sscanf(value, "%d:%d:%d%c", &a, &b, &f, &extra) != 3 || a < 1 || b < 0 ||
		    b > 100 || f < a)
			return fail(ps, key, "\"%s\" is not start:rate:full (e.g. 10:30:60)", value);
		c->max_startups[0] = a;
		c->max_startups[1] = b;
		c->max_startups[2] = f;
		return 1;
	}
	if (strcmp(key, "insecure") == 0) {
		if (parse_bool(value, &c->insecure) < 0)
			return fail(ps, key, "\"%s\" is not yes or no", value);
		return 1;
	}
	if (strcmp(key, "user") == 0) {
		if (!getpwnam(value))
			return fail(ps, key, "no such user \"%s\"", value);
		snprintf(c->user, sizeof(c->user), "%s", value);
		return 1;
	}
	{
		static const struct { const char *name; size_t off; } paths[] = {
			{ "tls_cert", offsetof(struct config, tls_cert) },
			{ "tls_key", offsetof(struct config, tls_key) },
			{ "tls_ca", offsetof(struct config, tls_ca) },
			{ "tls_crl", offsetof(struct config, tls_crl) },
			{ "tls_psk_file", offsetof(struct config, tls_psk_file) },
		};
		for (size_t i = 0; i < ARRAY_SIZE(paths); i++)
			if (strcmp(key, paths[i].name) == 0)
				return set_path(ps, key, value, (char *)c + paths[i].off,
						CONFIG_PATH_MAX);
	}
	if (strcmp(key, "max_requests") == 0) {
		if (parse_int(value, 0, LONG_MAX, &n) < 0)
			return fail(ps, key, "\"%s\" is not a whole number (0 = no limit)", value);
		c->max_requests = n;
		return 1;
	}
	if (strcmp(key, "max_frame") == 0) {
		uint64_t b;
		if (config_parse_size(value, &b) < 0 || b < 4096 || b > (16u << 20))
			return fail(ps, key, "\"%s\" is not a size from 4K to 16M", value);
		c->max_frame = (uint32_t)b;
		return 1;
	}
	if (strcmp(key, "worker_scheduling") == 0) {
		if (strcmp(value, "batch") == 0)
			c->worker_batch = 1;
		else if (strcmp(value, "inherit") == 0)
			c->worker_batch = 0;
		else
			return fail(ps, key, "\"%s\" is not one of batch, inherit", value);
		return 1;
	}
	if (strcmp(key, "loopback_congestion") == 0)
		return set_loopback_cc(ps, key, value, c->loopback_cc, sizeof(c->loopback_cc));
	if (strcmp(key, "line_mode") == 0) {
		if (strcmp(value, "off") == 0)
			c->line_mode = LINE_MODE_OFF;
		else if (strcmp(value, "loopback") == 0)
			c->line_mode = LINE_MODE_LOOPBACK;
		else if (strcmp(value, "all") == 0)
			c->line_mode = LINE_MODE_ALL;
		else
			return fail(ps, key, "\"%s\" is not one of off, loopback, all", value);
		return 1;
	}
	if (strcmp(key, "pidfile") == 0)
		return set_path(ps, key, value, c->pidfile, sizeof(c->pidfile));
	if (strcmp(key, "control_socket") == 0)
		return set_path(ps, key, value, c->control_socket, 108);
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

static int add_string(struct parse_state *ps, const char *key, char **arr, int *n,
		      const char *value)
{
	if (*n >= CONFIG_MAX_ITEMS)
		return fail(ps, key, "more than %d values", CONFIG_MAX_ITEMS);
	if (!(arr[*n] = strdup(value)))
		return fail(ps, key, "out of memory");
	(*n)++;
	return 1;
}

static int set_string(struct parse_state *ps, const char *key, char **dst, const char *value)
{
	if (*dst)
		return fail(ps, key, "given twice");
	if (!(*dst = strdup(value)))
		return fail(ps, key, "out of memory");
	return 1;
}

static int valid_env_name(const char *s)
{
	if (!*s || (*s >= '0' && *s <= '9'))
		return 0;
	for (; *s; s++)
		if (!(*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
		      (*s >= '0' && *s <= '9')))
			return 0;
	return 1;
}

static int command_key(struct parse_state *ps, const char *key, const char *value)
{
	static const struct { const char *name; int which; int size; } rlims[] = {
		{ "rlimit_cpu", RL_CPU, 0 }, { "rlimit_as", RL_AS, 1 },
		{ "rlimit_nproc", RL_NPROC, 0 }, { "rlimit_nofile", RL_NOFILE, 0 },
		{ "rlimit_fsize", RL_FSIZE, 1 },
	};
	struct command *cmd = ps->cmd;
	char why[160];
	long n;

	if (strcmp(key, "path") == 0) {
		if (value[0] != '/')
			return fail(ps, key, "\"%s\" is not an absolute path", value);
		if (!ps->builtin && access(value, X_OK) < 0)
			return fail(ps, key, "%s: %s", value, strerror(errno));
		return set_string(ps, key, &cmd->path, value);
	}
	if (strcmp(key, "shell") == 0) {
		if (parse_bool(value, &cmd->shell) < 0)
			return fail(ps, key, "\"%s\" is not yes or no", value);
		return 1;
	}
	if (strcmp(key, "script") == 0)
		return set_string(ps, key, &cmd->script, value);
	if (strcmp(key, "arg") == 0)
		return add_string(ps, key, cmd->args, &cmd->nargs, value);
	if (strcmp(key, "args") == 0) {
		if (strcmp(value, "none") == 0)
			cmd->args_mode = ARGS_NONE;
		else if (strcmp(value, "any") == 0)
			cmd->args_mode = ARGS_ANY;
		else if (strcmp(value, "pattern") == 0)
			cmd->args_mode = ARGS_PATTERN;
		else
			return fail(ps, key, "\"%s\" is not one of none, any, pattern", value);
		return 1;
	}
	if (strcmp(key, "arg_pattern") == 0) {
		char anchored[512];
		int rc;
		if (cmd->has_re)
			return fail(ps, key, "given twice");
		/* Anchored: a pattern describes a whole argument, never a part
		 * of one (the seeds' substring blacklist is the mistake this
		 * avoids). */
		snprintf(anchored, sizeof(anchored), "^(%s)$", value);
		rc = regcomp(&cmd->re, anchored, REG_EXTENDED | REG_NOSUB);
		if (rc != 0) {
			regerror(rc, &cmd->re, why, sizeof(why));
			return fail(ps, key, "bad regular expression: %s", why);
		}
		cmd->has_re = 1;
		return set_string(ps, key, &cmd->arg_pattern, value);
	}
	if (strcmp(key, "max_args") == 0) {
		if (parse_int(value, 0, 255, &n) < 0)
			return fail(ps, key, "\"%s\" is not a whole number from 0 to 255", value);
		cmd->max_args = (int)n;
		return 1;
	}
	if (strcmp(key, "timeout") == 0)
		return set_duration(ps, key, value, 1, &cmd->timeout_ms);
	if (strcmp(key, "output_limit") == 0) {
		if (config_parse_size(value, &cmd->output_limit) < 0)
			return fail(ps, key, "\"%s\" is not a size (e.g. 65536, 64K, 16M; 0 = none)",
				    value);
		return 1;
	}
	if (strcmp(key, "user") == 0) {
		struct passwd *pw = getpwnam(value);
		if (!pw)
			return fail(ps, key, "no such user \"%s\"", value);
		cmd->uid = pw->pw_uid;
		cmd->has_uid = 1;
		if (!cmd->has_gid)
			cmd->gid = pw->pw_gid;
		return set_string(ps, key, &cmd->user, value);
	}
	if (strcmp(key, "group") == 0) {
		struct group *gr = getgrnam(value);
		if (!gr)
			return fail(ps, key, "no such group \"%s\"", value);
		cmd->gid = gr->gr_gid;
		cmd->has_gid = 1;
		return set_string(ps, key, &cmd->group, value);
	}
	if (strcmp(key, "workdir") == 0) {
		if (value[0] != '/')
			return fail(ps, key, "\"%s\" is not an absolute path", value);
		return set_string(ps, key, &cmd->workdir, value);
	}
	if (strcmp(key, "env") == 0) {
		if (!valid_env_name(value))
			return fail(ps, key, "\"%s\" is not a variable name", value);
		return add_string(ps, key, cmd->env_names, &cmd->nenv_names, value);
	}
	if (strcmp(key, "setenv") == 0) {
		const char *eq = strchr(value, '=');
		char name[128];
		if (!eq || (size_t)(eq - value) >= sizeof(name))
			return fail(ps, key, "expected NAME=value");
		memcpy(name, value, (size_t)(eq - value));
		name[eq - value] = '\0';
		if (!valid_env_name(name))
			return fail(ps, key, "\"%s\" is not a variable name", name);
		return add_string(ps, key, cmd->setenv, &cmd->nsetenv, value);
	}
	if (strcmp(key, "allow") == 0 || strcmp(key, "deny") == 0) {
		int rc = key[0] == 'a'
			? add_cidrs(cmd->net.allow, &cmd->net.nallow, value, why, sizeof(why))
			: add_cidrs(cmd->net.deny, &cmd->net.ndeny, value, why, sizeof(why));
		return rc < 0 ? fail(ps, key, "%s", why) : 1;
	}
	if (strcmp(key, "identity") == 0) {
		if (!value[0] || strlen(value) > 128)
			return fail(ps, key, "an identity is 1 to 128 characters");
		return add_string(ps, key, cmd->identities, &cmd->nidentities, value);
	}
	if (strcmp(key, "stdin") == 0) {
		if (parse_bool(value, &cmd->stdin_ok) < 0)
			return fail(ps, key, "\"%s\" is not yes or no", value);
		return 1;
	}
	for (size_t i = 0; i < ARRAY_SIZE(rlims); i++) {
		uint64_t v;
		if (strcmp(key, rlims[i].name) != 0)
			continue;
		if (rlims[i].size ? config_parse_size(value, &v) < 0
				  : parse_int(value, 0, LONG_MAX, &n) < 0)
			return fail(ps, key, "\"%s\" is not a %s", value,
				    rlims[i].size ? "size (e.g. 512M)" : "whole number");
		cmd->rlim[rlims[i].which] = rlims[i].size ? (long long)v : n;
		return 1;
	}
	return fail(ps, key, "unknown key in [command %s]", cmd->name);
}

static void command_free(struct command *cmd)
{
	free(cmd->name);
	free(cmd->path);
	free(cmd->script);
	for (int i = 0; i < cmd->nargs; i++)
		free(cmd->args[i]);
	free(cmd->arg_pattern);
	if (cmd->has_re)
		regfree(&cmd->re);
	free(cmd->user);
	free(cmd->group);
	free(cmd->workdir);
	for (int i = 0; i < cmd->nenv_names; i++)
		free(cmd->env_names[i]);
	for (int i = 0; i < cmd->nsetenv; i++)
		free(cmd->setenv[i]);
	for (int i = 0; i < cmd->nidentities; i++)
		free(cmd->identities[i]);
}

static int valid_command_name(const char *s)
{
	if (!*s || strlen(s) > 64)
		return 0;
	for (; *s; s++)
		if (!(*s == '_' || *s == '-' || *s == '.' || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
			return 0;
	return 1;
}

/* A section is complete when the next begins or the file ends. */
static int command_finish(struct parse_state *ps)
{
	struct command *cmd = ps->cmd;
	int line = ps->line;

	if (!cmd || ps->failed)
		return 0;
	ps->cmd = NULL;
	ps->line = cmd->line;
	if (cmd->shell && !cmd->script)
		fail(ps, "script", "[command %s] has shell = yes but no script", cmd->name);
	else if (cmd->shell && (cmd->path || cmd->nargs))
		fail(ps, "shell", "[command %s]: a shell entry takes script, not path or arg",
		     cmd->name);
	else if (!cmd->shell && cmd->script)
		fail(ps, "script", "[command %s]: script needs shell = yes", cmd->name);
	else if (!cmd->shell && !cmd->path)
		fail(ps, "path", "[command %s] has no path", cmd->name);
	else if (cmd->args_mode == ARGS_PATTERN && !cmd->has_re)
		fail(ps, "arg_pattern", "[command %s] has args = pattern but no arg_pattern",
		     cmd->name);
	else if (cmd->args_mode != ARGS_PATTERN && cmd->has_re)
		fail(ps, "arg_pattern", "[command %s]: arg_pattern needs args = pattern",
		     cmd->name);
	else if (cmd->has_uid && getuid() != 0 && cmd->uid != getuid())
		fail(ps, "user", "[command %s]: running as %s needs tcpexecd to run as root",
		     cmd->name, cmd->user);
	ps->line = line;
	/* Built-in entries whose executable this system lacks are left out. */
	if (ps->builtin && cmd->path && access(cmd->path, X_OK) < 0) {
		command_free(cmd);
		ps->c->ncommands--;
	}
	return ps->failed ? -1 : 0;
}

static int command_begin(struct parse_state *ps, const char *section)
{
	const char *name = section + 8; /* after "command " */
	struct config *c = ps->c;
	struct command *cmd;

	if (command_finish(ps) < 0)
		return 0;
	ps->line = ps->section_line;
	if (!valid_command_name(name))
		return fail(ps, section, "command names are 1-64 letters, digits, '-', '_', '.'");
	if (config_command(c, name))
		return fail(ps, section, "defined twice");
	if (c->ncommands == CONFIG_MAX_COMMANDS)
		return fail(ps, section, "more than %d commands", CONFIG_MAX_COMMANDS);
	if (!c->commands && !(c->commands = calloc(CONFIG_MAX_COMMANDS, sizeof(*cmd))))
		return fail(ps, section, "out of memory");
	cmd = &c->commands[c->ncommands++];
	memset(cmd, 0, sizeof(*cmd));
	cmd->line = ps->section_line;
	cmd->max_args = 32;
	cmd->timeout_ms = 60000;
	cmd->output_limit = 64u << 20;
	cmd->stdin_ok = 1;
	for (int i = 0; i < RL_COUNT; i++)
		cmd->rlim[i] = RLIM_UNSET;
	ps->cmd = cmd;
	if (!(cmd->name = strdup(name)))
		return fail(ps, section, "out of memory");
	return 1;
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
	struct parse_state *ps = user;

	if (ps->failed)
		return 1;
	if (strncmp(section, "command ", 8) == 0) {
		if (!ps->cmd || ps->cmd->line != ps->section_line) {
			/* inih repeats the section name with every key; a new
			 * header line starts a new entry. */
			int line = ps->line;
			if (!command_begin(ps, section))
				return 1;
			ps->line = line;
		}
		return command_key(ps, key, value);
	}
	if (command_finish(ps) < 0)
		return 1;
	if (strcmp(section, "server") == 0)
		return server_key(ps, key, value);
	if (section[0] == '\0')
		return fail(ps, key, "key outside of any section (expected [server])");
	return fail(ps, key, "unknown section [%s]", section);
}

static int apply_overrides(struct config *c, const struct config_overrides *o,
			   char *err, size_t errlen)
{
	char why[160];

	if (o->nlisten > 0) {
		for (int i = 0; i < o->nlisten; i++) {
			if (parse_listen(o->listen[i], c->listen[i], sizeof(c->listen[i]),
					 &c->lopts[i], why, sizeof(why)) < 0) {
				snprintf(err, errlen, "-l %s: %s", o->listen[i], why);
				return -1;
			}
		}
		c->nlisten = o->nlisten;
	}
	if (o->workers > 0)
		c->workers = o->workers;
	if (o->pidfile)
		snprintf(c->pidfile, sizeof(c->pidfile), "%s", o->pidfile);
	return 0;
}

/* Rules between keys, checked once everything is read. */
/* One worker per CPU this process may run on, and at least 2. Short
 * commands are served fastest with about as many running at once as there
 * are CPUs: with more, they only take turns on the CPUs, and each waits
 * longer (on 2 CPUs, 4 workers against 2 at 8 clients: 3-10 % fewer
 * requests per second and a p99 of 9.5 ms instead of 6). The pool still
 * grows for clients that hold their workers. */
int config_default_workers(void)
{
	cpu_set_t set;
	int n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		n = CPU_COUNT(&set);
	if (n < 1)
		n = (int)sysconf(_SC_NPROCESSORS_ONLN);
	return n < 2 ? 2 : n;
}

static int check_whole(struct config *c, char *err, size_t errlen)
{
	char why[160];

	if (c->nlisten == 0) {
		snprintf(err, errlen, "%s: listen: no address to listen on", c->source);
		return -1;
	}
	for (int i = 0; i < c->nlisten; i++)
		for (int j = 0; j < i; j++)
			if (strcmp(c->listen[i], c->listen[j]) == 0 &&
			    strcmp(c->listen[i] + strlen(c->listen[i]) - 2, ":0") != 0) {
				snprintf(err, errlen, "%s: listen: %s is given twice", c->source,
					 c->listen[i]);
				return -1;
			}
	if (!c->workers)
		c->workers = config_default_workers() < c->max_workers ? config_default_workers()
									: c->max_workers;
	if (c->workers > c->max_workers) {
		snprintf(err, errlen, "%s: workers: %d is more than max_workers (%d)", c->source,
			 c->workers, c->max_workers);
		return -1;
	}
	for (int i = 0; i < c->nlisten; i++) {
		struct addr a;
		addr_parse(c->listen[i], &a, why, sizeof(why));
		if (c->lopts[i].tls && !c->tls_cert[0] && !c->tls_psk_file[0]) {
			snprintf(err, errlen, "%s: listen: %s asks for tls, but neither tls_cert nor "
				 "tls_psk_file is set", c->source, c->listen[i]);
			return -1;
		}
		/* Plaintext is for loopback and Unix sockets: anywhere else the
		 * commands and their output would cross the network in clear. */
		if (!c->lopts[i].tls && !c->insecure && !addr_is_local((struct sockaddr *)&a.sa)) {
			snprintf(err, errlen, "%s: listen: %s is not a loopback address and has no "
				 "tls: add \"tls\" (with tls_cert or tls_psk_file), or set insecure = yes "
				 "to send commands in clear", c->source, c->listen[i]);
			return -1;
		}
	}
	for (int i = 0; c->user[0] && i < c->ncommands; i++)
		if (c->commands[i].has_uid || c->commands[i].has_gid) {
			snprintf(err, errlen, "%s: user: [command %s] runs as another user, which needs "
				 "root: remove user from [server] or from the command", c->source,
				 c->commands[i].name);
			return -1;
		}
	if (c->tls_cert[0] && !c->tls_key[0]) {
		snprintf(err, errlen, "%s: tls_key: tls_cert needs tls_key", c->source);
		return -1;
	}
	if (c->tls_crl[0] && !c->tls_ca[0]) {
		snprintf(err, errlen, "%s: tls_crl: a CRL needs tls_ca", c->source);
		return -1;
	}
	if (c->min_spare > c->max_spare) {
		snprintf(err, errlen, "%s: min_spare: %d is more than max_spare (%d)", c->source,
			 c->min_spare, c->max_spare);
		return -1;
	}
	return 0;
}

struct config *config_load(const char *path, const struct config_overrides *o,
			   char *err, size_t errlen)
{
	struct config *c = calloc(1, sizeof(*c));
	struct parse_state ps = { .c = c, .err = err, .errlen = errlen };
	int rc;

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	defaults(c);
	if (path) {
		if (strlen(path) >= sizeof(c->source)) {
			snprintf(err, errlen, "%s: path too long", path);
			goto fail;
		}
		snprintf(c->source, sizeof(c->source), "%s", path);
		ps.f = fopen(path, "re");
	} else {
		ps.builtin = 1;
		ps.f = fmemopen((void *)builtin_conf, sizeof(builtin_conf) - 1, "r");
	}
	if (!ps.f) {
		snprintf(err, errlen, "%s: %s", path ? path : "(built-in)", strerror(errno));
		goto fail;
	}
	rc = ini_parse_stream(reader, &ps, handler, &ps);
	command_finish(&ps);
	fclose(ps.f);
	if (ps.failed)
		goto fail;
	if (ps.too_long_line) {
		snprintf(err, errlen, "%s:%d: line longer than %d characters", c->source,
			 ps.too_long_line, 198);
		goto fail;
	}
	if (rc != 0) {
		snprintf(err, errlen, "%s:%d: syntax error (expected [section] or key = value)",
			 c->source, rc);
		goto fail;
	}
	if (o && apply_overrides(c, o, err, errlen) < 0)
		goto fail;
	if (check_whole(c, err, errlen) < 0)
		goto fail;
	return c;
fail:
	config_free(c);
	return NULL;
}

void config_free(struct config *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->ncommands; i++)
		command_free(&c->commands[i]);
	free(c->commands);
	free(c);
}

const struct command *config_command(const struct config *c, const char *name)
{
	for (int i = 0; i < c->ncommands; i++)
		if (strcmp(c->commands[i].name, name) == 0)
			return &c->commands[i];
	return NULL;
}
