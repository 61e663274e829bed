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
#include "runner.h"
#include "systemd.h"
#include "tcpexecd.h"
#include "worker.h"

#define DEFAULT_CONFIG SYSCONFDIR "/tcpexecd/tcpexecd.conf"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tcpexecd [-ftV] [-c file] [-l address]... [-p pidfile] [-w workers]\n"
		"       tcpexecd -i [-c file]\n"
		"       tcpexecd -s [-c file]\n"
		"\n"
		"  -c, --config FILE     configuration file (default %s;\n"
		"                        built-in defaults when that file does not exist)\n"
		"  -f, --foreground      stay in the foreground, log to stderr, print the\n"
		"                        bound addresses on stdout once ready\n"
		"  -i, --inetd           serve the one connection on standard input (inetd,\n"
		"                        systemd Accept=yes) and exit\n"
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

struct cli {
	struct master_opts opts;
	const char *config_path;
	int foreground, check, status, inetd;
};

static void parse_options(int argc, char **argv, struct cli *cli)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "inetd", no_argument, NULL, 'i' },
		{ "listen", required_argument, NULL, 'l' },
		{ "pidfile", required_argument, NULL, 'p' },
		{ "status", no_argument, NULL, 's' },
		{ "check-config", no_argument, NULL, 't' },
		{ "workers", required_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct config_overrides *o = &cli->opts.overrides;
	char *end;
	long n;
	int c;

	while ((c = getopt_long(argc, argv, "c:fil:p:stw:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			cli->config_path = optarg;
			break;
		case 'f':
			cli->foreground = 1;
			break;
		case 'i':
			cli->inetd = 1;
			break;
		case 'l':
			if (o->nlisten == CONFIG_MAX_LISTEN)
				usage_error("too many -l options (at most 16)");
			o->listen[o->nlisten++] = optarg;
			break;
		case 'p':
			if (optarg[0] != '/')
				usage_error("-p: the pidfile must be an absolute path");
			o->pidfile = optarg;
			break;
		case 's':
			cli->status = 1;
			break;
		case 't':
			cli->check = 1;
			break;
		case 'w':
			errno = 0;
			n = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || n < 1 || n > 1024)
				usage_error("-w: expected a number of workers from 1 to 1024");
			o->workers = (int)n;
			break;
		case 'h':
			usage(stdout);
			exit(EXIT_OK);
		case 'V':
			printf("tcpexecd %s\n", TCPEXECD_VERSION);
			exit(EXIT_OK);
		default:
			fprintf(stderr, "Try 'tcpexecd --help' for more information.\n");
			exit(EXIT_USAGE);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument");
	if (cli->check + cli->status + cli->inetd > 1)
		usage_error("-i, -s and -t exclude each other");
}

/* Where records go: the journal natively when stderr is connected to it,
 * "<N>"-prefixed stderr for another systemd-captured stream, plain stderr
 * in the foreground, syslog (or log_file) for a daemon. */
static void setup_logging(enum start_mode mode, const struct config *cfg)
{
	int rc = 0;

	log_set_journal(systemd_journal_send);
	if (mode != START_DAEMON && systemd_journal_stream())
		rc = log_open(LOG_TARGET_JOURNAL, NULL);
	else if (mode != START_DAEMON)
		log_set_prefix(systemd_stderr_prefix());
	if (cfg->log_file[0] && mode != START_FOREGROUND)
		rc = log_open(LOG_TARGET_FILE, cfg->log_file);
	else if (mode == START_DAEMON)
		rc = log_open(LOG_TARGET_SYSLOG, NULL);
	if (rc < 0)
		fatal(EXIT_RUNTIME, "log file %s: %s", cfg->log_file, strerror(errno));
}

int main(int argc, char **argv)
{
	struct cli cli = { .opts = { .ready_fd = -1 } };
	struct config *cfg;
	char err[512];

	log_init("tcpexecd");
	parse_options(argc, argv, &cli);

	/* Without -c, a missing default file means the built-in configuration:
	 * a fresh build runs safely (loopback only) before anything is
	 * installed. A file named with -c must exist. */
	if (!cli.config_path && access(DEFAULT_CONFIG, F_OK) == 0)
		cli.config_path = DEFAULT_CONFIG;
	cfg = config_load(cli.config_path, &cli.opts.overrides, err, sizeof(err));
	if (!cfg) {
		fprintf(stderr, "tcpexecd: %s\n", err);
		return EXIT_CONFIG;
	}
	if (cli.check || cli.status) {
		int rc = EXIT_OK;
		if (cli.check)
			printf("configuration %s is valid\n", cfg->source);
		else
			rc = control_query(cfg->control_socket);
		config_free(cfg);
		return rc;
	}
	if (cli.inetd) {
		/* This process ends right after its one record, and journald
		 * would find no unit to file a native record under: use the
		 * stderr stream, which systemd attributed when it connected. */
		setup_logging(START_FOREGROUND, cfg);
		if (log_journal_target()) {
			log_open(LOG_TARGET_STDERR, NULL);
			log_set_prefix(1);
		}
		runner_detach_terminal();
		return worker_inetd(cfg);
	}

	cli.opts.config_path = cli.config_path;
	if (cli.foreground)
		cli.opts.mode = START_FOREGROUND;
	else if (systemd_detect())
		cli.opts.mode = START_SYSTEMD;
	else
		cli.opts.mode = START_DAEMON;
	if (cli.opts.mode == START_DAEMON) {
		cli.opts.ready_fd = daemonize();
		log_set_startup_fd(cli.opts.ready_fd);
	}
	setup_logging(cli.opts.mode, cfg);
	runner_detach_terminal();
	return master_run(&cli.opts, cfg);
}
