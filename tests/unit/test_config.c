// SPDX-License-Identifier: MIT
/* Unit test of config.c: defaults, every key, durations, and that each
 * bad value is refused with a message naming file, line and key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "log.h"

static char path[64];

static struct config *cur;

/* Load text as a file; the result stays in cur until the next load. */
static int load(const char *text, struct config **c, char *err, size_t errlen)
{
	FILE *f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	config_free(cur);
	cur = *c = config_load(path, NULL, err, errlen);
	return *c ? 0 : -1;
}

/* The error must name the file, the line and the key. */
static int refused(const char *text, int line, const char *key)
{
	char err[512], want[128];
	struct config *c;

	if (load(text, &c, err, sizeof(err)) == 0)
		return 0;
	snprintf(want, sizeof(want), "%s:%d: %s: ", path, line, key);
	if (!strstr(err, want)) {
		fprintf(stderr, "  expected \"%s\" in \"%s\"\n", want, err);
		return 0;
	}
	return 1;
}

int main(void)
{
	struct config *c;
	struct config_overrides o = { 0 };
	char err[512];
	uint64_t ms;
	int fd;

	snprintf(path, sizeof(path), "/tmp/tcpexecd-test-config.XXXXXX");
	fd = mkstemp(path);
	close(fd);

	cur = c = config_load(NULL, NULL, err, sizeof(err));
	CHECK(c != NULL);
	CHECK(config_command(c, "echo") && config_command(c, "echo")->args_mode == ARGS_ANY);
	CHECK(config_command(c, "rm") == NULL);
	CHECK(c->line_mode == LINE_MODE_LOOPBACK);
	CHECK(c->nlisten == 2 && strcmp(c->listen[0], "127.0.0.1:5151") == 0 &&
	      strcmp(c->listen[1], "[::1]:5151") == 0);
	CHECK(c->workers == 4 && c->backlog == 1024 && c->max_workers == 64);
	CHECK(c->stop_timeout_ms == 30000 && c->log_level == LOG_INFO);

	CHECK(config_parse_duration("30", &ms) == 0 && ms == 30000);
	CHECK(config_parse_duration("500ms", &ms) == 0 && ms == 500);
	CHECK(config_parse_duration("2m", &ms) == 0 && ms == 120000);
	CHECK(config_parse_duration("1h", &ms) == 0 && ms == 3600000);
	CHECK(config_parse_duration("", &ms) < 0);
	CHECK(config_parse_duration("-1", &ms) < 0);
	CHECK(config_parse_duration("5 s", &ms) < 0);
	CHECK(config_parse_duration("5d", &ms) < 0);
	CHECK(config_parse_duration("99999999999999999999", &ms) < 0);

	CHECK(load("# comment\n[server]\nlisten = 0.0.0.0:7\nlisten = [::]:7\n"
		   "workers = 2\nmin_spare = 0\nmax_spare = 3\nmax_workers = 9\n"
		   "max_requests = 0\nstop_timeout = 1500ms\nheartbeat_timeout = 2m\n"
		   "pidfile = /run/x.pid\ncontrol_socket = /run/x.ctl\nlog_file = /var/log/x\n"
		   "log_level = debug\nbacklog = 10\n", &c, err, sizeof(err)) == 0);
	CHECK(c->nlisten == 2 && strcmp(c->listen[1], "[::]:7") == 0);
	CHECK(c->workers == 2 && c->min_spare == 0 && c->max_spare == 3 && c->max_workers == 9);
	CHECK(c->max_requests == 0 && c->stop_timeout_ms == 1500 && c->heartbeat_timeout_ms == 120000);
	CHECK(strcmp(c->pidfile, "/run/x.pid") == 0 && strcmp(c->log_file, "/var/log/x") == 0);
	CHECK(c->log_level == LOG_DEBUG && c->backlog == 10);

	CHECK(refused("[server]\nworkers = -3\n", 2, "workers"));
	CHECK(refused("[server]\n\nbacklog = x\n", 3, "backlog"));
	CHECK(refused("[server]\nbogus = 1\n", 2, "bogus"));
	CHECK(refused("[nope]\nworkers = 1\n", 2, "workers"));
	CHECK(refused("workers = 1\n", 1, "workers"));
	CHECK(refused("[server]\nlisten = example.org:1\n", 2, "listen"));
	CHECK(refused("[server]\nstop_timeout = soon\n", 2, "stop_timeout"));
	CHECK(refused("[server]\nheartbeat_timeout = 10ms\n", 2, "heartbeat_timeout"));
	CHECK(refused("[server]\npidfile = relative.pid\n", 2, "pidfile"));
	CHECK(refused("[server]\nlog_level = loud\n", 2, "log_level"));
	CHECK(refused("[server]\nmax_workers = 5000\n", 2, "max_workers"));

	/* Cross-field rules and syntax errors name the file. */
	CHECK(load("[server]\nworkers = 10\nmax_workers = 5\n", &c, err, sizeof(err)) < 0 &&
	      strstr(err, "workers"));
	CHECK(load("[server]\nmin_spare = 5\nmax_spare = 1\n", &c, err, sizeof(err)) < 0 &&
	      strstr(err, "min_spare"));
	CHECK(load("[server]\nlisten = 127.0.0.1:1\nlisten = 127.0.0.1:1\n", &c, err,
		   sizeof(err)) < 0 && strstr(err, "twice"));
	CHECK(load("[server\n", &c, err, sizeof(err)) < 0 && strstr(err, ":1:"));
	{
		char longline[400];
		memset(longline, 'a', sizeof(longline));
		memcpy(longline, "[server]\nlog_file = /", 21);
		longline[sizeof(longline) - 2] = '\n';
		longline[sizeof(longline) - 1] = '\0';
		CHECK(load(longline, &c, err, sizeof(err)) < 0 && strstr(err, ":2: line longer"));
	}
	CHECK(config_load("/nonexistent/tcpexecd.conf", NULL, err, sizeof(err)) == NULL &&
	      strstr(err, "/nonexistent/tcpexecd.conf") && strstr(err, "No such file"));

	/* Command-line overrides win over the file. */
	o.listen[0] = "127.0.0.1:0";
	o.nlisten = 1;
	o.workers = 3;
	CHECK(load("[server]\nlisten = 127.0.0.1:9\nworkers = 1\n", &c, err, sizeof(err)) == 0);
	config_free(c);
	cur = NULL;
	c = config_load(path, &o, err, sizeof(err));
	CHECK(c && c->nlisten == 1 && strcmp(c->listen[0], "127.0.0.1:0") == 0 && c->workers == 3);
	config_free(c);
	o.listen[0] = "bad";
	CHECK(config_load(path, &o, err, sizeof(err)) == NULL && strstr(err, "-l bad"));

	config_free(cur);
	unlink(path);
	return CHECK_DONE();
}
