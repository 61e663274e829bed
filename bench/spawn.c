// SPDX-License-Identifier: MIT
/*
 * spawn: run one command over and over, J at a time, and report how many
 * runs per second complete. Each run is posix_spawn() with stdout on a pipe,
 * read to EOF, waitpid(), and a check of the output and exit status.
 * `spawn /bin/echo hello` is the local ceiling that no remote-exec server
 * can beat on the same machine; `spawn tcpexec HOST echo hello` (or ssh,
 * zabbix_get, check_nrpe) is the end-to-end cost of a client invocation.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "hist.h"

#define EXIT_USAGE 2
#define EXIT_SETUP 3
#define MAX_JOBS 64
#define MAX_RUNS 10000000ull
#define MAX_DURATION_S 3600.0
#define MAX_FAIL_MSGS 8

extern char **environ;

static struct {
	const char *system;
	unsigned jobs;
	uint64_t runs;
	double duration_s;
	const char *expect;
	size_t expect_len;
	int timeout_ms;
	char **argv;
} opt = { .system = "spawn", .jobs = 1, .runs = 1000, .duration_s = 600,
	  .timeout_ms = 30000 };

static atomic_uint_fast64_t next_run;
static atomic_int fail_msgs;
static uint64_t stop_at_us;
static pthread_barrier_t start_line;

struct job {
	pthread_t tid;
	unsigned id;
	struct hist lat;
	uint64_t ok, failed;
	char out[4096];
};

static _Noreturn void die(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static _Noreturn void die(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("spawn: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

static int fail(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct job *j, const char *fmt, ...)
{
	va_list ap;

	j->failed++;
	if (atomic_fetch_add(&fail_msgs, 1) < MAX_FAIL_MSGS) {
		char msg[512];
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		fprintf(stderr, "spawn: %s: job %u: %s\n", opt.system, j->id, msg);
	}
	return -1;
}

/* One run: spawn, read stdout to EOF (bounded by the timeout), reap. */
static int run_once(struct job *j)
{
	posix_spawn_file_actions_t fa;
	int p[2], rc, status, timed_out = 0, bad = 0;
	size_t outlen = 0;
	uint64_t deadline = hist_now_us() + (uint64_t)opt.timeout_ms * 1000;
	pid_t pid;

	/* O_CLOEXEC: a run started by another thread at the same moment must
	 * not inherit this pipe, or our EOF would wait for its child. */
	if (pipe2(p, O_CLOEXEC) < 0)
		return fail(j, "pipe: %s", strerror(errno));
	/* Only our end is non-blocking (it is its own open file), so that a
	 * child that never finishes is bounded by the deadline below. */
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	rc = posix_spawnp(&pid, opt.argv[0], &fa, NULL, opt.argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (rc != 0) {
		close(p[0]);
		return fail(j, "posix_spawn %s: %s", opt.argv[0], strerror(rc));
	}
	for (;;) {
		char buf[4096];
		ssize_t n = read(p[0], buf, sizeof(buf));
		if (n > 0) {
			if (outlen + (size_t)n > opt.expect_len) {
				bad = 1;
			} else {
				memcpy(j->out + outlen, buf, (size_t)n);
				outlen += (size_t)n;
			}
			continue;
		}
		if (n == 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			struct pollfd pf = { .fd = p[0], .events = POLLIN };
			uint64_t now = hist_now_us();
			if (now >= deadline ||
			    poll(&pf, 1, (int)((deadline - now) / 1000) + 1) == 0) {
				timed_out = 1;
				break;
			}
			continue;
		}
		bad = 1;
		break;
	}
	close(p[0]);
	if (timed_out)
		kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (timed_out)
		return fail(j, "%s: no end within %d ms", opt.argv[0], opt.timeout_ms);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return fail(j, "%s: %s %d", opt.argv[0],
			    WIFEXITED(status) ? "exited" : "killed by signal",
			    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	if (bad || outlen != opt.expect_len || memcmp(j->out, opt.expect, outlen) != 0)
		return fail(j, "%s: output \"%.*s\" is not the expected one", opt.argv[0],
			    (int)(outlen > 200 ? 200 : outlen), j->out);
	return 0;
}

static void *job_main(void *arg)
{
	struct job *j = arg;

	pthread_barrier_wait(&start_line);
	for (;;) {
		uint64_t t0 = hist_now_us();

		if (t0 >= stop_at_us || atomic_fetch_add(&next_run, 1) >= opt.runs)
			break;
		if (run_once(j) == 0) {
			j->ok++;
			hist_add(&j->lat, hist_now_us() - t0);
		}
	}
	return NULL;
}


static uint64_t parse_u64(const char *s, const char *what, uint64_t lo, uint64_t hi)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < lo || v > hi)
		die(EXIT_USAGE, "%s: %s: expected a number from %" PRIu64 " to %" PRIu64,
		    what, s, lo, hi);
	return v;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: spawn [options] COMMAND [ARG...]\n"
		"\n"
		"  -j, --jobs N        runs in parallel, 1..%d (default 1)\n"
		"  -n, --runs N        runs in all (default 1000)\n"
		"  -d, --duration SEC  start no run after SEC (default 600, max 3600)\n"
		"  -e, --expect TEXT   expected stdout, \\n \\t \\\\ escapes (default hello\\n)\n"
		"  -s, --system NAME   the name printed as system=\n"
		"  -t, --timeout MS    one run's limit, then SIGKILL (default 30000)\n"
		"\n"
		"Prints one line: system= mode=spawn conc= requests= failures= rps= p50_us= ...\n"
		"cpu_us= is the CPU time (user+system, ours and the children's) per run.\n",
		MAX_JOBS);
}

static void parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "jobs", required_argument, NULL, 'j' },
		{ "runs", required_argument, NULL, 'n' },
		{ "duration", required_argument, NULL, 'd' },
		{ "expect", required_argument, NULL, 'e' },
		{ "system", required_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static char hello_nl[] = "hello\n";
	int ch;

	opt.expect = hello_nl;
	opt.expect_len = strlen(hello_nl);
	while ((ch = getopt_long(argc, argv, "+j:n:d:e:s:t:h", lo, NULL)) != -1) {
		switch (ch) {
		case 'j':
			opt.jobs = (unsigned)parse_u64(optarg, "jobs", 1, MAX_JOBS);
			break;
		case 'n':
			opt.runs = parse_u64(optarg, "runs", 1, MAX_RUNS);
			break;
		case 'd': {
			char *end;
			opt.duration_s = strtod(optarg, &end);
			if (end == optarg || *end || !(opt.duration_s > 0) ||
			    opt.duration_s > MAX_DURATION_S)
				die(EXIT_USAGE, "duration: %s: expected seconds, above 0, at most %.0f",
				    optarg, MAX_DURATION_S);
			break;
		}
		case 'e':
			opt.expect = optarg;
			opt.expect_len = bench_unescape(optarg);
			break;
		case 's':
			opt.system = optarg;
			break;
		case 't':
			opt.timeout_ms = (int)parse_u64(optarg, "timeout", 1, 3600000);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(EXIT_USAGE);
		}
	}
	if (optind >= argc) {
		usage(stderr);
		exit(EXIT_USAGE);
	}
	opt.argv = argv + optind;
	if (opt.expect_len > sizeof(((struct job *)0)->out))
		die(EXIT_USAGE, "--expect longer than %zu bytes", sizeof(((struct job *)0)->out));
}

static uint64_t cpu_us(void)
{
	struct rusage self, kids;

	getrusage(RUSAGE_SELF, &self);
	getrusage(RUSAGE_CHILDREN, &kids);
	return (uint64_t)(self.ru_utime.tv_sec + self.ru_stime.tv_sec +
			  kids.ru_utime.tv_sec + kids.ru_stime.tv_sec) * 1000000u +
	       (uint64_t)(self.ru_utime.tv_usec + self.ru_stime.tv_usec +
			  kids.ru_utime.tv_usec + kids.ru_stime.tv_usec);
}

int main(int argc, char **argv)
{
	struct job *jobs;
	struct hist *all;
	uint64_t ok = 0, failed = 0, t0, elapsed, cpu0;
	double secs;

	parse_args(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	jobs = calloc(opt.jobs, sizeof(*jobs));
	all = calloc(1, sizeof(*all));
	if (!jobs || !all)
		die(EXIT_SETUP, "out of memory");
	if (pthread_barrier_init(&start_line, NULL, opt.jobs + 1) != 0)
		die(EXIT_SETUP, "pthread_barrier_init failed");
	for (unsigned i = 0; i < opt.jobs; i++) {
		jobs[i].id = i;
		if (pthread_create(&jobs[i].tid, NULL, job_main, &jobs[i]) != 0)
			die(EXIT_SETUP, "pthread_create failed");
	}
	cpu0 = cpu_us();
	t0 = hist_now_us();
	stop_at_us = t0 + (uint64_t)(opt.duration_s * 1e6);
	pthread_barrier_wait(&start_line);
	for (unsigned i = 0; i < opt.jobs; i++) {
		pthread_join(jobs[i].tid, NULL);
		hist_merge(all, &jobs[i].lat);
		ok += jobs[i].ok;
		failed += jobs[i].failed;
	}
	elapsed = hist_now_us() - t0;
	secs = (double)(elapsed ? elapsed : 1) / 1e6;
	printf("system=%s mode=spawn conc=%u requests=%" PRIu64 " ok=%" PRIu64
	       " failures=%" PRIu64 " elapsed_s=%.3f rps=%.1f", opt.system, opt.jobs,
	       ok + failed, ok, failed, secs, (double)ok / secs);
	hist_print(all, stdout);
	printf(" cpu_us=%.0f\n", ok + failed ? (double)(cpu_us() - cpu0) / (double)(ok + failed) : 0.0);
	free(all);
	free(jobs);
	pthread_barrier_destroy(&start_line);
	return failed ? 1 : 0;
}
