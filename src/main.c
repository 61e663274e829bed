// SPDX-License-Identifier: MIT
/*
 * tcpexecd's entry point: options, configuration, the choice between
 * systemd, foreground and daemon start-up, then master_run(). Also the
 * one-shot modes -t (check the configuration) and -s (status report).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control.h"
#include "daemonize.h"
#include "log.h"
#include "master.h"
#include "systemd.h"
#include "tcpexecd.h"

#define DEFAULT_CONFIG SYSCONFDIR "/tcpexecd/tcpexecd.conf"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tcpexecd [-ftV] [-c file] [-l address]... [-p pidfile] [-w workers]\n"
		"       tcpexecd -s [-c file]\n"
		"\n"
		"  -c, --config FILE     configuration file (default %s;\n"
		"                        built-in defaults when that file does not exist)\n"
		"  -f, --foreground      stay in the foreground, log to stderr, print the\n"
		"                        bound addresses on stdout once ready\n"
		"  -l, --listen ADDRESS  listen on A.B.C.D:PORT, [V6]:PORT or /path instead of\n"
		"                        the configured addresses (repeatable; port 0 = any)\n"
		"  -p, --pidfile FILE    write and lock a pidfile\n"
		"  -s, --status          print the running daemon's status report\n"
		"  -t, --check-config    check the configuration and exit\n"
		"  -w, --workers N       start N workers; the pool never shrinks below N\n"
		"  -h, --help            show this help\n"
		"  -V, --version         show the version\n"
		"\n"
		"Signals: TERM graceful stop, INT fast stop, QUIT graceful stop without\n"
		"deadline, HUP reload, USR1 reopen the log file, TTIN/TTOU one worker more/fewer.\n"
		"See tcpexecd(8) and tcpexecd.conf(5).\n",
		DEFAULT_CONFIG);
}

static _Noreturn void usage_error(const char *msg)
{
	fprintf(stderr, "tcpexecd: %s\nTry 'tcpexecd --help' for more information.\n", msg);
	exit(EXIT_USAGE);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "listen", required_argument, NULL, 'l' },
		{ "pidfile", required_argument, NULL, 'p' },
		{ "status", no_argument, NULL, 's' },
		{ "check-config", no_argument, NULL, 't' },
		{ "workers", required_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct master_opts opts = { .ready_fd = -1 };
	int foreground = 0, check = 0, status = 0, c;
	const char *config_path = NULL;
	struct config *cfg;
	char err[512], *end;
	long n;

	log_init("tcpexecd");
	while ((c = getopt_long(argc, argv, "c:fl:p:stw:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config_path = optarg;
			break;
		case 'f':
			foreground = 1;
			break;
		case 'l':
			if (opts.overrides.nlisten == CONFIG_MAX_LISTEN)
				usage_error("too many -l options (at most 16)");
			opts.overrides.listen[opts.overrides.nlisten++] = optarg;
			break;
		case 'p':
			if (optarg[0] != '/')
				usage_error("-p: the pidfile must be an absolute path");
			opts.overrides.pidfile = optarg;
			break;
		case 's':
			status = 1;
			break;
		case 't':
			check = 1;
			break;
		case 'w':
			errno = 0;
			n = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || n < 1 || n > 1024)
				usage_error("-w: expected a number of workers from 1 to 1024");
			opts.overrides.workers = (int)n;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case 'V':
			printf("tcpexecd %s\n", TCPEXECD_VERSION);
			return EXIT_OK;
		default:
			fprintf(stderr, "Try 'tcpexecd --help' for more information.\n");
			return EXIT_USAGE;
		}
	}
	if (optind < argc)
		usage_error("unexpected argument");

	/* Without -c, a missing default file means the built-in configuration:
	 * a fresh build runs safely (loopback only) before anything is
	 * installed. A file named with -c must exist. */
	if (!config_path && access(DEFAULT_CONFIG, F_OK) == 0)
		config_path = DEFAULT_CONFIG;
	cfg = config_load(config_path, &opts.overrides, err, sizeof(err));
	if (!cfg) {
		fprintf(stderr, "tcpexecd: %s\n", err);
		return EXIT_CONFIG;
	}
	if (check || status) {
		int rc = EXIT_OK;
		if (check)
			printf("configuration %s is valid (%d commands)\n", cfg->source,
			       cfg->ncommands);
		else
			rc = control_query(cfg->control_socket);
		config_free(cfg);
		return rc;
	}

	opts.config_path = config_path;
	if (foreground)
		opts.mode = START_FOREGROUND;
	else if (systemd_detect())
		opts.mode = START_SYSTEMD;
	else
		opts.mode = START_DAEMON;

	if (opts.mode == START_DAEMON) {
		opts.ready_fd = daemonize();
		log_set_startup_fd(opts.ready_fd);
		if (cfg->log_file[0] ? log_open(LOG_TARGET_FILE, cfg->log_file) < 0
				    : log_open(LOG_TARGET_SYSLOG, NULL) < 0)
			fatal(EXIT_RUNTIME, "log file %s: %s", cfg->log_file, strerror(errno));
	} else if (opts.mode == START_SYSTEMD && cfg->log_file[0]) {
		if (log_open(LOG_TARGET_FILE, cfg->log_file) < 0)
			fatal(EXIT_RUNTIME, "log file %s: %s", cfg->log_file, strerror(errno));
	}
	return master_run(&opts, cfg);
}
