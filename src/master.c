// SPDX-License-Identifier: MIT
/*
 * The master process. It owns the listening sockets, preforks the workers,
 * reaps them (SIGCHLD + waitpid loop), respawns behind a rate limit, sizes
 * the pool from the scoreboard, reloads on SIGHUP and stops gracefully.
 * Signals arrive through a signalfd into one poll loop; after start-up no
 * single bad event makes the master exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control.h"
#include "daemonize.h"
#include "listen.h"
#include "log.h"
#include "master.h"
#include "scoreboard.h"
#include "systemd.h"
#include "tls.h"
#include "tcpexecd.h"
#include "worker.h"

#define TICK_MS 1000
#define MIN_UPTIME_MS 1000     /* a worker dying younger than this failed to start */
#define BACKOFF_MAX_MS 60000
#define SPAWN_RATE_MAX 32      /* httpd's MAX_SPAWN_RATE */
#define FAST_TURNOVER 2        /* connections per tick: short requests */
#define FAST_STOP_GRACE_MS 3000
#define DEFAULT_DAEMON_PIDFILE "/run/tcpexecd/tcpexecd.pid"

/* The master's private view of a slot; the shared part is the scoreboard. */
struct wpriv {
	pid_t pid;            /* 0 = slot free */
	int pipe_wr;          /* write end of the worker's pipe; -1 once retired */
	int leaving;          /* given back: leaves when its connection ends */
	unsigned generation;
	uint64_t started_ms;
	uint64_t tick_requests; /* its connection count at the last tick */
	uint64_t took;        /* connections it took during the last tick */
	int hung_killed;
};

enum stop_state { RUNNING, STOP_GRACEFUL, STOP_FAST };

static struct {
	const struct master_opts *opts;
	struct config *cfg;        /* current; replaced on reload */
	struct tls_server *tls;    /* built from cfg; NULL without TLS */
	uint64_t next_rotate_ms;   /* session-ticket key rotation */
	struct listener listeners[LISTEN_MAX];
	int nlisteners;
	struct scoreboard sb;
	struct wpriv *w;           /* sb.nslots entries */
	char *status_buf;          /* sized at start for the status report */
	size_t status_cap;
	int sigfd, ctlfd, pidfd;
	int wake[2];               /* workers -> master: no idle worker left */
	int fwd[2];                /* workers -> master: journal records */
	uint64_t urgent_at_ms;     /* when to look again for an idle worker */
	int statfd;                /* /proc/stat, -1 if it cannot be read */
	int loadfd;                /* /proc/loadavg, -1 if it cannot be read */
	uint64_t cpu_idle, cpu_total;  /* its counters at the last tick */
	int cpus_busy;             /* the CPUs had no room over the last tick */
	uint64_t tick_served;      /* requests served at the last tick */
	uint64_t held_served;      /* ... and at the last held_check */
	uint64_t next_held_ms;     /* while the CPUs are busy: next held_check */
	char pidfile[CONFIG_PATH_MAX];
	char control_path[CONFIG_PATH_MAX];
	char made[2][CONFIG_PATH_MAX];   /* directories the master created */
	int nmade;
	unsigned generation;
	int floor;
	int ncpu;
	int spawn_rate;
	uint64_t backoff_ms;       /* 0: no backoff in force */
	uint64_t next_spawn_ms;    /* while backing off: next probe */
	uint64_t backoff_set_ms;   /* when the backoff last grew */
	uint64_t next_tick_ms;
	uint64_t started_ms;
	uint64_t served_exited;    /* requests served by workers already reaped */
	int full_warned;
	uint64_t watchdog_ms;      /* ping interval (half of WatchdogSec=), 0: off */
	uint64_t next_watchdog_ms;
	char status_line[160];     /* the last STATUS= sent */
	enum stop_state stop;
	uint64_t stop_deadline_ms; /* 0: none */
	uint64_t kill_at_ms;       /* 0: none */
	int exit_code;
} M;

static int live_workers(void)
{
	int n = 0;
	for (int i = 0; i < M.sb.nslots; i++)
		n += M.w[i].pid != 0;
	return n;
}

/* Is slot i a worker of the pool: current generation, neither retired nor
 * given back? */
static int in_pool(int i)
{
	return M.w[i].pid && M.w[i].pipe_wr >= 0 && !M.w[i].leaving &&
	       M.w[i].generation == M.generation;
}

/* Workers of the pool, and how many of them are idle (starting ones count
 * as idle: they will be soon). */
static void pool_count(int *total, int *idle)
{
	*total = *idle = 0;
	for (int i = 0; i < M.sb.nslots; i++) {
		if (!in_pool(i))
			continue;
		(*total)++;
		int st = M.sb.slots[i].state;
		*idle += st == WS_IDLE || st == WS_STARTING;
	}
}

/* Connections taken by all workers so far: the pool's progress. */
static uint64_t served_total(void)
{
	uint64_t served = M.served_exited;

	for (int i = 0; i < M.sb.nslots; i++)
		if (M.w[i].pid)
			served += M.sb.slots[i].requests;
	return served;
}

/* Were the machine's CPUs busy over the last tick? /proc/stat's first line
 * sums all CPUs: idle and iowait against the total. "Busy" is less than
 * half a CPU left over. Unknown (no /proc/stat, first sample) is not busy. */
static int cpus_were_busy(void)
{
	char buf[256];
	unsigned long long v[8] = { 0 };
	uint64_t idle = 0, total = 0, didle, dtotal;
	ssize_t n;
	int busy;

	if (M.statfd < 0)
		return 0;
	n = pread(M.statfd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	if (sscanf(buf, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
		   &v[3], &v[4], &v[5], &v[6], &v[7]) < 5)
		return 0;
	for (int i = 0; i < 8; i++)
		total += v[i];
	idle = v[3] + v[4];
	didle = idle - M.cpu_idle;
	dtotal = total - M.cpu_total;
	busy = M.cpu_total && dtotal && didle * 2 * (uint64_t)M.ncpu < dtotal;
	M.cpu_idle = idle;
	M.cpu_total = total;
	return busy;
}

/* Are the CPUs' run queues full right now? /proc/loadavg's fourth field
 * counts the runnable tasks (this master among them). The tick's
 * /proc/stat measure looks one second back, too late for the 20 ms start
 * at the beginning of a burst, which would otherwise grow the pool by a
 * worker per 20 ms until the first tick noticed the busy CPUs. */
static int run_queues_full(void)
{
	char buf[128];
	int running = 0;
	ssize_t n;

	if (M.loadfd < 0 || (n = pread(M.loadfd, buf, sizeof(buf) - 1, 0)) <= 0)
		return 0;
	buf[n] = '\0';
	if (sscanf(buf, "%*s %*s %*s %d/", &running) != 1)
		return 0;
	return running - 1 >= M.ncpu;
}

/* May the pool grow, at a tick? When the CPUs are busy and the workers
 * keep taking new connections, another worker adds a process that competes
 * for the CPUs, not throughput: the waiting connections are served in
 * order from the listen queue instead, and the latency of every request
 * stays near the mean (at 32 clients on 2 CPUs, with a worker per client,
 * p99 was 3-4 times the median and some requests waited 100-190 ms). When
 * no connection was taken since served_then (the last tick), the workers
 * are held by slow clients or long commands, and only more workers help. */
static int may_grow(uint64_t served_then)
{
	return !M.cpus_busy || served_total() == served_then;
}

/* started_ms: when the failed worker was started (0 for a failed fork). */
static void fail_backoff(const char *what, uint64_t started_ms)
{
	uint64_t now = now_ms();

	/* Workers started together fail together: a worker started before the
	 * current wait began does not lengthen it; a probe started since does. */
	if (M.backoff_ms && started_ms && started_ms < M.backoff_set_ms) {
		log_warn("%s, next attempt in %llus", what,
			 (unsigned long long)((M.next_spawn_ms - now + 999) / 1000));
		return;
	}
	M.backoff_ms = M.backoff_ms ? M.backoff_ms * 2 : 1000;
	if (M.backoff_ms > BACKOFF_MAX_MS)
		M.backoff_ms = BACKOFF_MAX_MS;
	M.next_spawn_ms = now + M.backoff_ms;
	M.backoff_set_ms = now;
	log_warn("%s, next attempt in %llus", what, (unsigned long long)(M.backoff_ms / 1000));
}

/* In the new worker: drop what belongs to the master alone. Other workers'
 * pipe ends must go, or a worker would keep its siblings' pipes open and
 * neither retirement nor the master's death would reach them. */
static void close_master_fds(void)
{
	for (int i = 0; i < M.sb.nslots; i++)
		if (M.w[i].pipe_wr >= 0)
			close(M.w[i].pipe_wr);
	close(M.sigfd);
	close(M.wake[0]);
	if (M.fwd[0] >= 0)
		close(M.fwd[0]);
	if (M.ctlfd >= 0)
		close(M.ctlfd);
	if (M.pidfd >= 0)
		close(M.pidfd);
}

static int spawn_worker(void)
{
	struct worker_ctx ctx;
	struct slot *s;
	int i, p[2];
	pid_t pid;

	for (i = 0; i < M.sb.nslots; i++)
		if (!M.w[i].pid && M.sb.slots[i].state == WS_FREE)
			break;
	if (i == M.sb.nslots) {
		if (!M.full_warned)
			log_warn("scoreboard full (%d slots); not starting a worker", M.sb.nslots);
		M.full_warned = 1;
		return -1;
	}
	if (pipe2(p, O_CLOEXEC) < 0) {
		fail_backoff("cannot start a worker: pipe failed", 0);
		return -1;
	}

	s = &M.sb.slots[i];
	memset(s, 0, sizeof(*s));
	s->generation = M.generation;
	s->started_ms = s->heartbeat_ms = now_ms();
	s->state = WS_STARTING;

	fflush(NULL); /* or the child could write the parent's buffered output again */
	pid = fork();
	if (pid < 0) {
		int e = errno;
		close(p[0]);
		close(p[1]);
		s->state = WS_FREE;
		errno = e;
		log_err("fork: %s", strerror(errno));
		fail_backoff("cannot start a worker", 0);
		return -1;
	}
	if (pid == 0) {
		close(p[1]);
		M.w[i].pipe_wr = -1;
		close_master_fds();
		s->pid = getpid();
		ctx.cfg = M.cfg;
		ctx.listeners = M.listeners;
		ctx.nlisteners = M.nlisteners;
		ctx.slot = s;
		ctx.slots = M.sb.slots;
		ctx.nslots = M.sb.nslots;
		ctx.tls = M.tls;
		ctx.master_fd = p[0];
		ctx.wake_fd = M.wake[1];
		if (M.fwd[1] >= 0)
			log_set_forward(M.fwd[1]);
		worker_run(&ctx);
	}
	close(p[0]);
	s->pid = pid;
	M.w[i] = (struct wpriv){ .pid = pid, .pipe_wr = p[1], .generation = M.generation,
				 .started_ms = s->started_ms };
	M.full_warned = 0;
	log_info("worker %ld started (slot %d, generation %u)", (long)pid, i, M.generation);
	return 0;
}

/* Closing the pipe is the whole retirement protocol: the worker finishes
 * its connection, sees EOF and exits 0. The master's death looks the same,
 * so a worker never outlives its master by more than one connection. */
static void retire(int i)
{
	if (M.w[i].pipe_wr < 0)
		return;
	close(M.w[i].pipe_wr);
	M.w[i].pipe_wr = -1;
}

/* Giving a worker back gently is one byte down its pipe: it leaves once its
 * connection ends (at once if idle), so a connection kept open for many
 * requests is never cut, as it is by retire() after the current request.
 * From here on it no longer counts in the pool. */
static void give_back(int i)
{
	if (i < 0 || M.w[i].pipe_wr < 0 || M.w[i].leaving)
		return;
	if (write(M.w[i].pipe_wr, "l", 1) != 1) {
		retire(i); /* cannot happen with one byte; EOF is the fallback */
		return;
	}
	M.w[i].leaving = 1;
}

/* Keep the floor. Deaths are replaced at once; while backing off only one
 * probe worker is started per backoff period. */
static void pool_fill(void)
{
	int total, idle;

	if (M.stop != RUNNING)
		return;
	pool_count(&total, &idle);
	while (total < M.floor) {
		if (M.backoff_ms) {
			if (now_ms() < M.next_spawn_ms)
				return;
			M.next_spawn_ms = now_ms() + M.backoff_ms;
			spawn_worker();
			return;
		}
		if (spawn_worker() < 0)
			return;
		total++;
	}
}

/* Connections waiting in the listen queues. */
static int queued_total(void)
{
	int q = 0;

	for (int i = 0; i < M.nlisteners; i++)
		q += listen_queued(&M.listeners[i]);
	return q;
}

/* The worker of the pool that took the most connections in the last tick,
 * at least FAST_TURNOVER. There is one whenever fast workers are counted. */
static int fastest(void)
{
	int pick = -1;

	for (int i = 0; i < M.sb.nslots; i++)
		if (in_pool(i) && M.w[i].took >= FAST_TURNOVER &&
		    (pick < 0 || M.w[i].took > M.w[pick].took))
			pick = i;
	return pick;
}

/* Once a second: spares (httpd's doubling spawn rate), giving back the
 * workers the busy CPUs cannot use or one surplus idle worker, the end of
 * a backoff, the hung-worker backstop. */
static void pool_tick(void)
{
	uint64_t now = now_ms(), progress_from;
	int total, idle, busy, fast = 0;

	for (int i = 0; i < M.sb.nslots; i++) {
		struct slot *s = &M.sb.slots[i];
		if (!M.w[i].pid)
			continue;
		if (now > s->heartbeat_ms + M.cfg->heartbeat_timeout_ms && !M.w[i].hung_killed) {
			log_warn("worker %ld hung (no heartbeat for %llu ms); killing it",
				 (long)M.w[i].pid, (unsigned long long)(now - s->heartbeat_ms));
			kill(M.w[i].pid, SIGKILL);
			M.w[i].hung_killed = 1;
		}
		if (M.backoff_ms && M.w[i].generation == M.generation &&
		    (s->state == WS_IDLE || s->state == WS_BUSY) &&
		    now >= M.w[i].started_ms + MIN_UPTIME_MS) {
			log_notice("worker %ld is up; backoff ends", (long)M.w[i].pid);
			M.backoff_ms = 0;
		}
	}
	if (M.stop != RUNNING)
		return;
	pool_fill();

	/* Busy over the last second, or right now: a burst that began within
	 * the last second has idle time before it in the /proc/stat measure,
	 * and the tick would grow the pool for it, then give the workers
	 * back a second later. At 8 clients meeting 8 spare workers, the
	 * first 1-2 s of a burst ran on all 8. */
	busy = cpus_were_busy();
	if (!busy)
		busy = run_queues_full();
	if (busy != M.cpus_busy)
		log_debug("CPUs %s: the pool %s", busy ? "busy" : "have room again",
			  busy ? "grows only while no connection is taken" : "grows as needed");
	M.cpus_busy = busy;
	progress_from = M.tick_served;
	M.tick_served = served_total();
	for (int i = 0; i < M.sb.nslots; i++) {
		if (!M.w[i].pid)
			continue;
		M.w[i].took = M.sb.slots[i].requests - M.w[i].tick_requests;
		M.w[i].tick_requests = M.sb.slots[i].requests;
		fast += in_pool(i) && M.w[i].took >= FAST_TURNOVER;
	}
	pool_count(&total, &idle);
	if (idle < M.cfg->min_spare && total < M.cfg->max_workers && !M.backoff_ms &&
	    may_grow(progress_from)) {
		int n = M.spawn_rate;
		if (n > M.cfg->min_spare - idle)
			n = M.cfg->min_spare - idle;
		/* Held workers took nothing for a second: as many as are
		 * waiting in the listen queues get a worker at once. */
		if (M.tick_served == progress_from) {
			int q = queued_total();
			if (n < q) {
				n = q;
				log_info("%d connections wait and none was taken for a second; "
					 "adding workers for them", q);
			}
		}
		if (n > M.cfg->max_workers - total)
			n = M.cfg->max_workers - total;
		while (n-- > 0 && spawn_worker() == 0)
			;
		if (M.spawn_rate < SPAWN_RATE_MAX)
			M.spawn_rate *= 2;
		return;
	}
	M.spawn_rate = 1;
	/* More workers turning over quickly than there are CPUs, and the CPUs
	 * are busy: the extra ones only compete for them. A burst grows the
	 * pool before a tick sees the CPUs busy (3 workers on 2 CPUs at 32
	 * clients served 1376-1517 requests/s, 2 workers 1519-1684; 8 workers
	 * at 8 clients 10-15 % less than 2). They are given back at once, the
	 * fastest first (the first to be between connections), not below the
	 * floor; idle spares that take their place are given back at the next
	 * tick. Workers held by kept-open connections or long commands are
	 * not fast and stay. */
	if (busy && total > M.floor && fast > M.ncpu) {
		int n = fast - M.ncpu < total - M.floor ? fast - M.ncpu : total - M.floor;
		log_info("the CPUs are busy and %d workers turn connections over quickly "
			 "on %d CPUs: giving back %d", fast, M.ncpu, n);
		while (n-- > 0)
			give_back(fastest());
		return;
	}
	if (idle > M.cfg->max_spare && total > M.floor) {
		for (int i = 0; i < M.sb.nslots; i++) {
			if (in_pool(i) && M.sb.slots[i].state == WS_IDLE) {
				log_info("retiring idle worker %ld (%d idle, max_spare %d)",
					 (long)M.w[i].pid, idle, M.cfg->max_spare);
				give_back(i);
				break;
			}
		}
	}
}

static void describe_status(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d%s", WTERMSIG(status),
			 WCOREDUMP(status) ? " (core dumped)" : "");
	else
		snprintf(buf, len, "changed state 0x%x", status);
}

static void begin_stop(enum stop_state how, uint64_t deadline_ms);

/* Signals coalesce: one SIGCHLD may stand for many exits, so waitpid runs
 * until there is nothing left to reap. */
static void reap(void)
{
	char what[64];
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		int i, expected, failed_start;
		uint64_t started;
		struct slot *s;

		describe_status(status, what, sizeof(what));
		for (i = 0; i < M.sb.nslots; i++)
			if (M.w[i].pid == pid)
				break;
		if (i == M.sb.nslots) {
			log_notice("reaped unknown child %ld (%s)", (long)pid, what);
			continue;
		}
		s = &M.sb.slots[i];
		expected = M.w[i].pipe_wr < 0 || M.w[i].leaving || M.stop != RUNNING;
		{
			char fields[96];
			snprintf(fields, sizeof(fields), "TCPEXECD_WORKER_PID=%ld\n%s=%d", (long)pid,
				 WIFSIGNALED(status) ? "SIGNAL" : "EXIT_STATUS",
				 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
			/* Status 0 is a worker leaving on purpose (retired, or
			 * recycled after max_requests): not worth a warning. */
			log_event(WIFEXITED(status) && WEXITSTATUS(status) == 0 ? LOG_INFO : LOG_WARNING,
				  MSGID_WORKER_DIED, fields, "worker %ld %s", (long)pid, what);
		}
		failed_start = !expected && (s->state == WS_STARTING ||
			(now_ms() < M.w[i].started_ms + MIN_UPTIME_MS && s->requests == 0));

		if (s->cmd_pgid > 0) {
			/* The worker died under a running command: its group is in
			 * a session of its own and nobody else would end it. */
			log_warn("killing process group %ld left by worker %ld", (long)s->cmd_pgid,
				 (long)pid);
			kill(-s->cmd_pgid, SIGKILL);
		}
		started = M.w[i].started_ms;
		M.served_exited += s->requests;
		if (M.w[i].pipe_wr >= 0)
			close(M.w[i].pipe_wr);
		M.w[i] = (struct wpriv){ .pipe_wr = -1 };
		memset(s, 0, sizeof(*s));

		if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_CONFIG) {
			log_err("worker %ld exited with the configuration-error status; stopping",
				(long)pid);
			M.exit_code = EXIT_CONFIG;
			begin_stop(STOP_FAST, 0);
		} else if (failed_start && M.stop == RUNNING) {
			fail_backoff("worker start failed", started);
		}
	}
	if (pid < 0 && errno != ECHILD)
		log_err("waitpid: %s", strerror(errno));
	pool_fill();
}

static void signal_workers(int sig)
{
	for (int i = 0; i < M.sb.nslots; i++)
		if (M.w[i].pid)
			kill(M.w[i].pid, sig);
}

static void begin_stop(enum stop_state how, uint64_t deadline_ms)
{
	uint64_t now = now_ms();

	if (M.stop == RUNNING) {
		systemd_notify("STOPPING=1");
		/* Stop listening first: new clients are refused rather than
		 * queued for workers that are going away. */
		for (int i = 0; i < M.nlisteners; i++)
			listen_close(&M.listeners[i]);
		for (int i = 0; i < M.sb.nslots; i++)
			retire(i);
	}
	if (how == STOP_GRACEFUL) {
		if (M.stop != RUNNING)
			return;
		M.stop = STOP_GRACEFUL;
		if (deadline_ms) {
			M.stop_deadline_ms = now + deadline_ms;
			log_notice("graceful stop, deadline %llus",
				   (unsigned long long)((deadline_ms + 999) / 1000));
		} else {
			log_notice("graceful stop, no deadline");
		}
		return;
	}
	if (M.stop == STOP_FAST)
		return;
	M.stop = STOP_FAST;
	log_notice("fast stop");
	signal_workers(SIGTERM);
	M.kill_at_ms = now + FAST_STOP_GRACE_MS;
}

/* Listeners for c: kept from keep when one serves the same address (a
 * reload, or a socket systemd passed), opened otherwise. Inherited sockets
 * the configuration does not name are kept too; at start (strict) only if
 * their FileDescriptorName is "tcpexecd", else that is an error. On error
 * what this call opened is closed again. */
static int open_listeners(const struct config *c, struct listener *out, int *nout,
			  const struct listener *keep, int nkeep, int strict,
			  char *err, size_t errlen)
{
	int used[LISTEN_MAX] = { 0 }, n = 0, j;

	for (int i = 0; i < c->nlisten; i++) {
		for (j = 0; j < nkeep; j++)
			if (!used[j] && listen_matches(&keep[j], c->listen[i]))
				break;
		if (j < nkeep) {
			used[j] = 1;
			out[n] = keep[j];
			out[n].opt = i;
			snprintf(out[n++].spec, sizeof(out[0].spec), "%s", c->listen[i]);
			continue;
		}
		if (listen_open(&out[n], c->listen[i], c->backlog, err, errlen) < 0)
			goto undo;
		out[n].opt = i;
		log_info("listening on %s%s", out[n].bound, c->lopts[i].tls ? " (TLS)" : "");
		n++;
	}
	for (j = 0; j < nkeep; j++) {
		if (used[j] || !keep[j].inherited)
			continue;
		if (strict && strcmp(keep[j].name, "tcpexecd") != 0) {
			snprintf(err, errlen,
				 "inherited socket %s (name \"%s\") matches no listen address; "
				 "name it FileDescriptorName=tcpexecd or add it to listen",
				 keep[j].bound, keep[j].name);
			goto undo;
		}
		if (strict && !c->insecure && !keep[j].is_unix &&
		    strncmp(keep[j].bound, "127.", 4) != 0 && strncmp(keep[j].bound, "[::1]", 5) != 0) {
			snprintf(err, errlen,
				 "inherited socket %s is not a loopback address and has no tls: add it "
				 "to listen with \"tls\", or set insecure = yes", keep[j].bound);
			goto undo;
		}
		out[n] = keep[j];
		out[n++].opt = -1;
	}
	*nout = n;
	return 0;
undo:
	for (int k = 0; k < n; k++) {
		int kept = 0;
		for (j = 0; j < nkeep; j++)
			kept |= keep[j].fd == out[k].fd;
		if (!kept)
			listen_close(&out[k]);
	}
	return -1;
}

static void apply_log_config(const struct config *c)
{
	log_set_level(c->log_level);
}

static void reload(void)
{
	struct listener nl[LISTEN_MAX];
	struct tls_server *nt = NULL;
	struct config *nc;
	char err[512];
	int n;

	log_notice("reloading configuration");
	systemd_notify("RELOADING=1");
	nc = config_load(M.opts->config_path, &M.opts->overrides, err, sizeof(err));
	if (!nc)
		goto fail;
	if (nc->max_workers * 2 > M.sb.nslots) {
		snprintf(err, sizeof(err),
			 "max_workers cannot grow beyond %d without a restart "
			 "(the scoreboard is sized at start)", M.sb.nslots / 2);
		goto fail;
	}
	nt = tls_server_new(nc, err, sizeof(err));
	if (!nt && err[0])
		goto fail;
	if (nt && !M.tls && tls_tickets_init() < 0) {
		snprintf(err, sizeof(err), "TLS session tickets: %s", strerror(errno));
		goto fail;
	}
	if (open_listeners(nc, nl, &n, M.listeners, M.nlisteners, 0, err, sizeof(err)) < 0)
		goto fail;
	for (int i = 0; i < M.nlisteners; i++) {
		int kept = 0;
		for (int j = 0; j < n; j++)
			kept |= nl[j].fd == M.listeners[i].fd;
		if (!kept) {
			log_info("no longer listening on %s", M.listeners[i].bound);
			listen_close(&M.listeners[i]);
		}
	}
	memcpy(M.listeners, nl, sizeof(nl[0]) * (size_t)n);
	M.nlisteners = n;
	if (strcmp(nc->pidfile, M.cfg->pidfile) || strcmp(nc->control_socket, M.cfg->control_socket) ||
	    strcmp(nc->log_file, M.cfg->log_file))
		log_notice("pidfile, control_socket and log_file changes take effect at restart");
	memcpy(nc->pidfile, M.cfg->pidfile, sizeof(nc->pidfile));
	memcpy(nc->control_socket, M.cfg->control_socket, sizeof(nc->control_socket));
	memcpy(nc->log_file, M.cfg->log_file, sizeof(nc->log_file));
	config_free(M.cfg);
	M.cfg = nc;
	/* Workers of the old generation keep their own copy (fork). */
	tls_server_free(M.tls);
	M.tls = nt;
	apply_log_config(M.cfg);
	M.generation++;
	M.floor = M.cfg->workers;
	M.spawn_rate = 1;
	/* Old workers finish their connection and leave; the sockets never
	 * close, so clients queue for the new generation meanwhile. */
	for (int i = 0; i < M.sb.nslots; i++)
		if (M.w[i].generation != M.generation)
			retire(i);
	pool_fill();
	log_event(LOG_NOTICE, MSGID_RELOAD, NULL, "configuration reloaded (generation %u)",
		  M.generation);
	systemd_notify("READY=1\nSTATUS=configuration reloaded (generation %u)", M.generation);
	return;
fail:
	tls_server_free(nt);
	config_free(nc);
	log_event(LOG_ERR, MSGID_RELOAD, NULL, "reload failed: %s; keeping the current configuration",
		  err);
	systemd_notify("READY=1\nSTATUS=reload failed: %s", err);
}

static void adjust_floor(int delta)
{
	int total, idle;

	if (M.stop != RUNNING)
		return;
	if (M.floor + delta < 1 || M.floor + delta > M.cfg->max_workers) {
		log_notice("worker floor stays at %d (range 1 to %d)", M.floor, M.cfg->max_workers);
		return;
	}
	M.floor += delta;
	log_notice("worker floor now %d", M.floor);
	if (delta > 0) {
		pool_fill();
		return;
	}
	pool_count(&total, &idle);
	if (total <= M.floor)
		return;
	/* Prefer an idle worker; a busy one leaves after its connection. */
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < M.sb.nslots; i++)
			if (in_pool(i) && (pass || M.sb.slots[i].state != WS_BUSY)) {
				retire(i);
				return;
			}
}

/* A worker found no idle worker left: new connections would wait for the
 * next tick. Look again shortly (a worker finishing its connection ends
 * most such moments by itself) and start one if it is still so; the
 * tick's doubling rate still governs spares. */
#define URGENT_DELAY_MS 20

static void urgent_wake(void)
{
	char buf[4096]; /* wake-ups may have piled up while the CPUs were busy */

	while (read(M.wake[0], buf, sizeof(buf)) > 0)
		;
	if (!M.urgent_at_ms)
		M.urgent_at_ms = now_ms() + URGENT_DELAY_MS;
}

static void urgent_check(void)
{
	int total, idle;

	M.urgent_at_ms = 0;
	/* min_spare = 0 says: let connections wait for a worker. With busy
	 * CPUs, the tick decides, over a whole second of progress (see
	 * may_grow). */
	if (M.stop != RUNNING || M.backoff_ms || !M.cfg->min_spare || M.cpus_busy)
		return;
	pool_count(&total, &idle);
	if (idle == 0 && total < M.cfg->max_workers && !run_queues_full())
		spawn_worker();
}

/* While the CPUs are busy the pool grows only for workers held by slow
 * clients, kept-open connections or long commands: connections wait and
 * none is taken. The tick sees that over a whole second, and 8 clients
 * that keep their connections open waited 1.7-2 s for their workers; this
 * looks every HELD_CHECK_MS, and gives as many workers as connections
 * wait, at once (min_spare = 0 still says: let them wait). */
#define HELD_CHECK_MS 250

static void held_check(void)
{
	uint64_t served = served_total();
	int total, idle, q, n;

	M.next_held_ms = now_ms() + HELD_CHECK_MS;
	if (served != M.held_served) {
		M.held_served = served;
		return;
	}
	if (M.stop != RUNNING || M.backoff_ms || !M.cfg->min_spare)
		return;
	pool_count(&total, &idle);
	if (idle || total >= M.cfg->max_workers || (q = queued_total()) == 0)
		return;
	n = q < M.cfg->max_workers - total ? q : M.cfg->max_workers - total;
	log_info("%d connections wait and none was taken for %d ms; adding workers for them",
		 q, HELD_CHECK_MS);
	while (n-- > 0 && spawn_worker() == 0)
		;
}

/* Journal records from workers, written with the master's unit. */
static void forward_records(void)
{
	char buf[4096];
	ssize_t n;

	while ((n = recv(M.fwd[0], buf, sizeof(buf), 0)) > 0)
		log_forwarded(buf, (size_t)n);
}

static void handle_signals(void)
{
	struct signalfd_siginfo si;

	while (read(M.sigfd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			reap();
			break;
		case SIGTERM:
			if (M.stop == RUNNING)
				begin_stop(STOP_GRACEFUL, M.cfg->stop_timeout_ms ? M.cfg->stop_timeout_ms : 1);
			else
				begin_stop(STOP_FAST, 0);
			break;
		case SIGINT:
			begin_stop(STOP_FAST, 0);
			break;
		case SIGQUIT:
			begin_stop(STOP_GRACEFUL, 0);
			break;
		case SIGHUP:
			if (M.stop == RUNNING)
				reload();
			break;
		case SIGUSR1:
			if (log_reopen() < 0)
				log_err("cannot reopen the log file: %s", strerror(errno));
			else
				log_notice("log file reopened");
			signal_workers(SIGUSR1);
			break;
		case SIGTTIN:
			adjust_floor(+1);
			break;
		case SIGTTOU:
			adjust_floor(-1);
			break;
		}
	}
}

static size_t status_report(void)
{
	uint64_t now = now_ms(), served = M.served_exited;
	int count[WS_EXITING + 1] = { 0 }, total = 0;
	size_t off = 0;
	char *b = M.status_buf;

	for (int i = 0; i < M.sb.nslots; i++) {
		if (!M.w[i].pid)
			continue;
		int st = M.sb.slots[i].state;
		total++;
		if (st >= 0 && st <= WS_EXITING)
			count[M.w[i].pipe_wr < 0 || M.w[i].leaving ? WS_EXITING : st]++;
		served += M.sb.slots[i].requests;
	}
#define OUT(...) off += (size_t)snprintf(b + off, off < M.status_cap ? M.status_cap - off : 0, __VA_ARGS__)
	OUT("tcpexecd %s, master pid %ld, generation %u, up %llu s\n", TCPEXECD_VERSION,
	    (long)getpid(), M.generation, (unsigned long long)((now - M.started_ms) / 1000));
	OUT("workers: total %d, starting %d, idle %d, busy %d, exiting %d (floor %d, max %d)\n",
	    total, count[WS_STARTING], count[WS_IDLE], count[WS_BUSY], count[WS_EXITING],
	    M.floor, M.cfg->max_workers);
	OUT("served: %llu\n", (unsigned long long)served);
	OUT("%-4s %7s %4s %-8s %8s %7s %-24s %s\n", "SLOT", "PID", "GEN", "STATE", "REQS", "AGE",
	    "PEER", "COMMAND");
	for (int i = 0; i < M.sb.nslots; i++) {
		const struct slot *s = &M.sb.slots[i];
		if (!M.w[i].pid)
			continue;
		int st = M.w[i].pipe_wr < 0 || M.w[i].leaving ? WS_EXITING : s->state;
		OUT("%-4d %7ld %4u %-8s %8llu %6llus %-24s %s\n", i, (long)M.w[i].pid,
		    M.w[i].generation, scoreboard_state_name(st), (unsigned long long)s->requests,
		    (unsigned long long)((now - M.w[i].started_ms) / 1000),
		    s->peer[0] ? s->peer : "-", s->command[0] ? s->command : "-");
	}
#undef OUT
	return off < M.status_cap ? off : M.status_cap - 1;
}

static void serve_control(void)
{
	struct timeval tv = { 0, 200000 };
	int fd = accept4(M.ctlfd, NULL, NULL, SOCK_CLOEXEC);
	size_t len;

	if (fd < 0)
		return;
	/* The report is written while the loop waits: bound that wait, so a
	 * stuck reader cannot stall the master. */
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	len = status_report();
	if (send(fd, M.status_buf, len, MSG_NOSIGNAL) < 0)
		log_debug("control: send: %s", strerror(errno));
	close(fd);
}

static int mkparent(const char *path)
{
	char dir[CONFIG_PATH_MAX];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	if (mkdir(dir, 0755) == 0) {
		if (M.nmade < (int)ARRAY_SIZE(M.made))
			snprintf(M.made[M.nmade++], sizeof(M.made[0]), "%s", dir);
		return 0;
	}
	return errno == EEXIST ? 0 : -1;
}

static int setup_signals(void)
{
	static const int sigs[] = { SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP,
				    SIGUSR1, SIGTTIN, SIGTTOU };
	sigset_t set;

	sigemptyset(&set);
	for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
		sigaddset(&set, sigs[i]);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	M.sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	return M.sigfd < 0 ? -1 : 0;
}

/* Started as root outside systemd with [server] user set: everything that
 * needs root (binding, keys, pidfile, control socket) is done; the master
 * and every worker it forks run as that user from here on. Under systemd
 * the unit's User=/DynamicUser= does this instead. */
static void drop_privileges(void)
{
	struct passwd *pw;

	if (!M.cfg->user[0] || getuid() != 0 || M.opts->mode == START_SYSTEMD)
		return;
	pw = getpwnam(M.cfg->user);
	if (!pw)
		fatal(EXIT_CONFIG, "user %s: no such user", M.cfg->user);
	/* What the master must still remove at exit becomes the user's. */
	if (M.ctlfd >= 0 && chown(M.control_path, pw->pw_uid, pw->pw_gid) < 0)
		log_warn("control socket %s: chown: %s", M.control_path, strerror(errno));
	for (int i = 0; i < M.nmade; i++)
		if (chown(M.made[i], pw->pw_uid, pw->pw_gid) < 0)
			log_warn("%s: chown: %s", M.made[i], strerror(errno));
	if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
	    setuid(pw->pw_uid) < 0)
		fatal(EXIT_RUNTIME, "cannot drop privileges to %s: %s", pw->pw_name, strerror(errno));
	if (setuid(0) == 0)
		fatal(EXIT_RUNTIME, "dropping privileges to %s did not stick", pw->pw_name);
	log_notice("running as %s (uid %u)", pw->pw_name, (unsigned)pw->pw_uid);
}

/* READY=1 (and the launcher's exit in daemon mode) promises a worker that
 * accepts, not only a socket that queues: wait, briefly and boundedly,
 * until one worker reports idle. A worker that cannot start is handled by
 * the loop's backoff afterwards; readiness is not held hostage to it. */
static void wait_first_worker(void)
{
	uint64_t until = now_ms() + 2000;

	while (now_ms() < until) {
		for (int i = 0; i < M.sb.nslots; i++)
			if (M.w[i].pid && M.sb.slots[i].state == WS_IDLE)
				return;
		poll(NULL, 0, 1);
	}
}

static void announce_ready(void)
{
	if (M.opts->mode == START_FOREGROUND) {
		for (int i = 0; i < M.nlisteners; i++)
			printf("listening on %s\n", M.listeners[i].bound);
		fflush(stdout);
	}
	if (M.opts->ready_fd >= 0) {
		log_set_startup_fd(-1);
		daemonize_ready(M.opts->ready_fd);
	}
	systemd_notify("READY=1\nSTATUS=serving with %d workers", M.floor);
	log_event(LOG_NOTICE, MSGID_STARTED, NULL, "started (%d workers, %d sockets)", M.floor,
		  M.nlisteners);
}

/* STATUS= for `systemctl status`: the pool as the scoreboard sees it, sent
 * when it changes, at most once a tick. */
static void notify_status(void)
{
	int count[WS_EXITING + 1] = { 0 }, total = 0;
	uint64_t served = M.served_exited;
	char line[sizeof(M.status_line)];

	for (int i = 0; i < M.sb.nslots; i++) {
		if (!M.w[i].pid)
			continue;
		total++;
		count[M.sb.slots[i].state <= WS_EXITING ? M.sb.slots[i].state : 0]++;
		served += M.sb.slots[i].requests;
	}
	snprintf(line, sizeof(line), "%d workers: %d idle, %d busy; %llu served; generation %u",
		 total, count[WS_IDLE], count[WS_BUSY], (unsigned long long)served, M.generation);
	if (strcmp(line, M.status_line) == 0)
		return;
	memcpy(M.status_line, line, sizeof(line));
	systemd_notify("STATUS=%s", line);
}

static uint64_t next_timeout(void)
{
	uint64_t t = M.next_tick_ms;

	if (M.watchdog_ms && M.next_watchdog_ms < t)
		t = M.next_watchdog_ms;
	if (M.urgent_at_ms && M.urgent_at_ms < t)
		t = M.urgent_at_ms;
	if (M.cpus_busy && M.next_held_ms < t)
		t = M.next_held_ms;
	if (M.stop_deadline_ms && M.stop_deadline_ms < t)
		t = M.stop_deadline_ms;
	if (M.kill_at_ms && M.kill_at_ms < t)
		t = M.kill_at_ms;
	if (M.backoff_ms && M.stop == RUNNING && M.next_spawn_ms < t)
		t = M.next_spawn_ms;
	return t;
}

static void cleanup(void)
{
	for (int i = 0; i < M.nlisteners; i++)
		listen_close(&M.listeners[i]);
	if (M.ctlfd >= 0) {
		close(M.ctlfd);
		unlink(M.control_path);
	}
	if (M.pidfd >= 0)
		pidfile_release(M.pidfile, M.pidfd);
	scoreboard_free(&M.sb);
	tls_server_free(M.tls);
	free(M.w);
	free(M.status_buf);
	close(M.sigfd);
	close(M.wake[0]);
	close(M.wake[1]);
	if (M.fwd[0] >= 0) {
		forward_records();
		close(M.fwd[0]);
		close(M.fwd[1]);
	}
	config_free(M.cfg);
}

int master_run(const struct master_opts *opts, struct config *cfg)
{
	struct systemd_socket inh[LISTEN_MAX];
	struct listener adopted[LISTEN_MAX];
	char err[512];
	int ninh;

	M.opts = opts;
	M.cfg = cfg;
	M.ctlfd = M.pidfd = -1;
	M.generation = 1;
	M.ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (M.ncpu < 1)
		M.ncpu = 1;
	/* Opened before privileges are dropped; world-readable anyway. */
	M.statfd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
	M.loadfd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
	M.floor = M.cfg->workers;
	M.spawn_rate = 1;
	M.exit_code = EXIT_OK;
	M.started_ms = now_ms();
	apply_log_config(M.cfg);

	if (setup_signals() < 0)
		fatal(EXIT_RUNTIME, "signals: %s", strerror(errno));
	if (pipe2(M.wake, O_CLOEXEC | O_NONBLOCK) < 0)
		fatal(EXIT_RUNTIME, "pipe: %s", strerror(errno));
	M.fwd[0] = M.fwd[1] = -1;
	if (log_journal_target() &&
	    socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, M.fwd) < 0)
		fatal(EXIT_RUNTIME, "socketpair: %s", strerror(errno));

	snprintf(M.pidfile, sizeof(M.pidfile), "%s", M.cfg->pidfile);
	if (!M.pidfile[0] && opts->mode == START_DAEMON)
		snprintf(M.pidfile, sizeof(M.pidfile), "%s", DEFAULT_DAEMON_PIDFILE);
	if (M.pidfile[0]) {
		if (mkparent(M.pidfile) < 0)
			fatal(EXIT_RUNTIME, "pidfile %s: cannot create its directory: %s", M.pidfile, strerror(errno));
		M.pidfd = pidfile_acquire(M.pidfile, err, sizeof(err));
		if (M.pidfd < 0)
			fatal(EXIT_RUNTIME, "%s", err);
	}

	ninh = systemd_take(inh, (int)ARRAY_SIZE(inh), err, sizeof(err));
	if (ninh < 0)
		fatal(EXIT_RUNTIME, "%s", err);
	for (int i = 0; i < ninh; i++) {
		if (listen_adopt(&adopted[i], inh[i].fd, inh[i].name, err, sizeof(err)) < 0)
			fatal(EXIT_RUNTIME, "%s", err);
		log_info("listening on %s (from systemd%s%s)", adopted[i].bound,
			 adopted[i].name[0] ? ", name " : "", adopted[i].name);
	}
	if (open_listeners(M.cfg, M.listeners, &M.nlisteners, adopted, ninh, 1, err,
			   sizeof(err)) < 0) {
		if (M.pidfd >= 0)
			pidfile_release(M.pidfile, M.pidfd);
		fatal(EXIT_RUNTIME, "%s", err);
	}

	M.tls = tls_server_new(M.cfg, err, sizeof(err));
	if (!M.tls && err[0])
		fatal(EXIT_CONFIG, "%s", err);
	if (M.tls && tls_tickets_init() < 0)
		fatal(EXIT_RUNTIME, "TLS session tickets: %s", strerror(errno));
	M.next_rotate_ms = now_ms() + M.cfg->tls_ticket_rotate_ms;

	/* Twice max_workers: during a reload the old generation drains while
	 * the new one starts, and both need slots. */
	if (scoreboard_init(&M.sb, M.cfg->max_workers * 2) < 0)
		fatal(EXIT_RUNTIME, "scoreboard: %s", strerror(errno));
	M.w = calloc((size_t)M.sb.nslots, sizeof(*M.w));
	M.status_cap = 512 + (size_t)M.sb.nslots * 192;
	M.status_buf = malloc(M.status_cap);
	if (!M.w || !M.status_buf)
		fatal(EXIT_RUNTIME, "out of memory");
	for (int i = 0; i < M.sb.nslots; i++)
		M.w[i].pipe_wr = -1;

	if (M.cfg->control_socket[0]) {
		snprintf(M.control_path, sizeof(M.control_path), "%s", M.cfg->control_socket);
		if (mkparent(M.control_path) < 0 || (M.ctlfd = control_listen(M.control_path)) < 0)
			log_warn("control socket %s: %s; status reports (-s) are disabled",
				 M.control_path, strerror(errno));
	}

	drop_privileges();
	for (int i = 0; i < M.floor; i++)
		if (spawn_worker() < 0)
			break;
	wait_first_worker();
	M.watchdog_ms = systemd_watchdog_usec() / 2000;
	M.next_watchdog_ms = now_ms() + M.watchdog_ms;
	announce_ready();
	M.next_tick_ms = now_ms() + TICK_MS;
	cpus_were_busy(); /* the first sample, for the first tick to compare with */

	for (;;) {
		struct pollfd pfd[4] = {
			{ .fd = M.sigfd, .events = POLLIN },
			{ .fd = M.ctlfd, .events = POLLIN },
			/* With busy CPUs the 20 ms start is off (urgent_check):
			 * the workers' wake-ups wait in the pipe instead of
			 * costing a switch to the master each. */
			{ .fd = M.cpus_busy ? -1 : M.wake[0], .events = POLLIN },
			{ .fd = M.fwd[0], .events = POLLIN },
		};
		uint64_t now = now_ms(), t = next_timeout();

		if (M.stop != RUNNING && live_workers() == 0)
			break;
		if (poll(pfd, 4, t > now ? (int)(t - now) : 0) < 0 && errno != EINTR)
			log_err("poll: %s", strerror(errno));
		if (pfd[0].revents & POLLIN)
			handle_signals();
		if (pfd[1].revents & POLLIN)
			serve_control();
		if (pfd[2].revents & POLLIN)
			urgent_wake();
		if (pfd[3].revents & POLLIN)
			forward_records();

		now = now_ms();
		if (M.backoff_ms && M.stop == RUNNING && now >= M.next_spawn_ms)
			pool_fill();
		if (M.urgent_at_ms && now >= M.urgent_at_ms)
			urgent_check();
		if (M.cpus_busy && now >= M.next_held_ms)
			held_check();
		if (M.watchdog_ms && now >= M.next_watchdog_ms) {
			systemd_notify("WATCHDOG=1");
			M.next_watchdog_ms = now + M.watchdog_ms;
		}
		if (M.tls && now >= M.next_rotate_ms) {
			tls_tickets_rotate();
			M.next_rotate_ms = now + M.cfg->tls_ticket_rotate_ms;
		}
		if (now >= M.next_tick_ms) {
			pool_tick();
			if (M.stop == RUNNING) {
				notify_status();
			} else {
				/* A drain may outlast TimeoutStopSec=: it is ours to
				 * bound (stop_timeout), so keep systemd waiting. */
				uint64_t left = M.stop_deadline_ms > now ? M.stop_deadline_ms - now
									 : 10000;
				systemd_notify("EXTEND_TIMEOUT_USEC=%llu",
					       (unsigned long long)(left + 5000) * 1000);
			}
			M.next_tick_ms = now + TICK_MS;
		}
		if (M.stop_deadline_ms && now >= M.stop_deadline_ms) {
			log_warn("stop deadline reached; killing %d workers", live_workers());
			signal_workers(SIGKILL);
			M.stop_deadline_ms = 0;
		}
		if (M.kill_at_ms && now >= M.kill_at_ms) {
			signal_workers(SIGKILL);
			M.kill_at_ms = 0;
		}
	}
	log_event(LOG_NOTICE, MSGID_STOPPED, NULL, "stopped");
	cleanup();
	return M.exit_code;
}
