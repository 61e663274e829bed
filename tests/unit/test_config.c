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
	/* Unset, workers is one per CPU (at least 2), within max_workers. */
	CHECK(config_default_workers() >= 2);
	CHECK(c->workers == (config_default_workers() < 64 ? config_default_workers() : 64) &&
	      c->backlog == 1024 && c->max_workers == 64);
	CHECK(c->stop_timeout_ms == 30000 && c->log_level == LOG_INFO);
	CHECK(c->worker_batch == 1);

	CHECK(config_parse_duration("30", &ms) == 0 && ms == 30000);
	CHECK(config_parse_duration("500ms", &ms) == 0 && ms == 500);
	CHECK(config_parse_duration("2m", &ms) == 0 && ms == 120000);
	CHECK(config_parse_duration("1h", &ms) == 0 && ms == 3600000);
	CHECK(config_parse_duration("", &ms) < 0);
	CHECK(config_parse_duration("-1", &ms) < 0);
	CHECK(config_parse_duration("5 s", &ms) < 0);
	CHECK(config_parse_duration("5d", &ms) < 0);
	CHECK(config_parse_duration("99999999999999999999", &ms) < 0);

	CHECK(load("# comment\n[server]\ninsecure = yes\nlisten = 0.0.0.0:7\nlisten = [::]:7\n"
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
	CHECK(load("[server]\nmax_workers = 1\n", &c, err, sizeof(err)) == 0 && c->workers == 1);
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

	/* Command entries. */
	CHECK(load("[command ok]\npath = /bin/echo\narg = x\nargs = pattern\narg_pattern = [a-z]+\n"
		   "timeout = 5s\noutput_limit = 64K\nenv = FOO\nsetenv = A=b\nallow = 10.0.0.0/8\n"
		   "stdin = no\nrlimit_as = 512M\nrlimit_nofile = 64\nworkdir = /tmp\n",
		   &c, err, sizeof(err)) == 0);
	if (c) {
		const struct command *e = config_command(c, "ok");
		CHECK(e && e->nargs == 1 && e->args_mode == ARGS_PATTERN && e->has_re);
		CHECK(e && e->timeout_ms == 5000 && e->output_limit == 65536 && !e->stdin_ok);
		CHECK(e && e->rlim[RL_AS] == 512LL << 20 && e->rlim[RL_NOFILE] == 64 &&
		      e->rlim[RL_CPU] == RLIM_UNSET);
		CHECK(e && e->net.nallow == 1 && e->nenv_names == 1 && e->nsetenv == 1);
	}
	CHECK(refused("[command a]\npath = relative\n", 2, "path"));
	CHECK(refused("[command a]\npath = /nonexistent/x\n", 2, "path"));
	CHECK(refused("[command a]\nargs = some\n", 2, "args"));
	CHECK(refused("[command a]\npath = /bin/echo\narg_pattern = (\n", 3, "arg_pattern"));
	CHECK(refused("[command a]\npath = /bin/echo\nargs = pattern\n", 1, "arg_pattern"));
	CHECK(refused("[command a]\nshell = yes\n", 1, "script"));
	CHECK(refused("[command a]\nscript = x\n", 1, "script"));
	CHECK(refused("[command a]\nargs = any\n", 1, "path"));
	CHECK(refused("[command a]\npath = /bin/echo\nallow = 10.0.0.0/40\n", 3, "allow"));
	CHECK(refused("[command a]\npath = /bin/echo\nenv = 1X\n", 3, "env"));
	CHECK(refused("[command a]\npath = /bin/echo\nsetenv = nothing\n", 3, "setenv"));
	CHECK(refused("[command a]\npath = /bin/echo\nuser = no-such-user-x\n", 3, "user"));
	CHECK(refused("[command a]\npath = /bin/echo\nbogus = 1\n", 3, "bogus"));
	CHECK(refused("[command a b]\npath = /bin/echo\n", 1, "command a b"));
	CHECK(refused("[command a]\npath = /bin/echo\n[server]\n[command a]\npath = /bin/echo\n", 4,
		      "command a"));
	CHECK(refused("[server]\nline_mode = maybe\n", 2, "line_mode"));
	CHECK(refused("[server]\nworker_scheduling = fifo\n", 2, "worker_scheduling"));
	CHECK(load("[server]\nworker_scheduling = inherit\n", &c, err, sizeof(err)) == 0 &&
	      c->worker_batch == 0 && strcmp(c->loopback_cc, "reno") == 0);
	CHECK(refused("[server]\nmax_frame = 1\n", 2, "max_frame"));
	CHECK(load("[server]\nloopback_congestion = system\n", &c, err, sizeof(err)) == 0 &&
	      c->loopback_cc[0] == '\0');
	CHECK(refused("[server]\nloopback_congestion = no_such_cc\n", 2, "loopback_congestion"));
	CHECK(refused("[server]\nloopback_congestion = BBR!\n", 2, "loopback_congestion"));
	CHECK(refused("[server]\nloopback_congestion = \n", 2, "loopback_congestion"));

	/* Listener options and the plaintext rule. */
	CHECK(load("[server]\nlisten = 0.0.0.0:7\n", &c, err, sizeof(err)) < 0 &&
	      strstr(err, "insecure = yes"));
	CHECK(load("[server]\nlisten = 127.0.0.1:7 tls\n", &c, err, sizeof(err)) < 0 &&
	      strstr(err, "tls_cert"));
	CHECK(load("[server]\nlisten = 127.0.0.1:7 allow=127.0.0.0/8,::1 deny=127.0.0.9\n", &c, err,
		   sizeof(err)) == 0);
	if (c) {
		struct addr a;
		CHECK(c->lopts[0].rules.nallow == 2 && c->lopts[0].rules.ndeny == 1);
		addr_parse("127.0.0.5:1", &a, err, sizeof(err));
		CHECK(config_netrules_allow(&c->lopts[0].rules, (struct sockaddr *)&a.sa));
		addr_parse("127.0.0.9:1", &a, err, sizeof(err));
		CHECK(!config_netrules_allow(&c->lopts[0].rules, (struct sockaddr *)&a.sa));
		addr_parse("10.0.0.1:1", &a, err, sizeof(err));
		CHECK(!config_netrules_allow(&c->lopts[0].rules, (struct sockaddr *)&a.sa));
	}
	CHECK(refused("[server]\nlisten = 127.0.0.1:7 bogus\n", 2, "listen"));
	CHECK(refused("[server]\nmax_startups = 10:30\n", 2, "max_startups"));
	CHECK(refused("[server]\nper_source_max = -1\n", 2, "per_source_max"));
	CHECK(refused("[server]\ntls_cert = relative.pem\n", 2, "tls_cert"));
	/* Longest prefix wins; deny wins a tie. */
	CHECK(load("[command n]\npath = /bin/echo\nallow = 10.0.0.0/8\ndeny = 10.1.0.0/16\n"
		   "allow = 10.1.2.0/24\ndeny = 10.9.9.9/32\nallow = 10.9.9.9/32\n",
		   &c, err, sizeof(err)) == 0);
	if (c) {
		const struct netrules *r = &config_command(c, "n")->net;
		struct addr a;
		addr_parse("10.2.0.1:1", &a, err, sizeof(err));
		CHECK(config_netrules_allow(r, (struct sockaddr *)&a.sa));
		addr_parse("10.1.0.1:1", &a, err, sizeof(err));
		CHECK(!config_netrules_allow(r, (struct sockaddr *)&a.sa));
		addr_parse("10.1.2.3:1", &a, err, sizeof(err));
		CHECK(config_netrules_allow(r, (struct sockaddr *)&a.sa));
		addr_parse("10.9.9.9:1", &a, err, sizeof(err));
		CHECK(!config_netrules_allow(r, (struct sockaddr *)&a.sa));
		addr_parse("[::ffff:10.1.2.3]:1", &a, err, sizeof(err));
		CHECK(config_netrules_allow(r, (struct sockaddr *)&a.sa));
		addr_parse("11.0.0.1:1", &a, err, sizeof(err));
		CHECK(!config_netrules_allow(r, (struct sockaddr *)&a.sa));
	}

	config_free(cur);
	unlink(path);
	return CHECK_DONE();
}
