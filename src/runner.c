// SPDX-License-Identifier: MIT
/*
 * The command child, started from a worker: fork, then in the child its
 * own process group (so timeouts and vanished clients kill the whole
 * group), default signal dispositions and an empty mask, the
 * three pipes on fds 0-2 and nothing else, rlimits, gid/uid, working
 * directory, and execve of an absolute path with a clean environment.
 * Started with vfork(): an exec failure comes back as an errno in memory
 * the child shares until it execs.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"
#include "tcpexecd.h"

#define MAX_ENV (8 + 2 * CONFIG_MAX_ITEMS + 64)
#define PIPE_BYTES (1024 << 10)

/* Set once at start, before any fork: commands need a session of their
 * own only when the daemon keeps a controlling terminal it cannot drop. */
static int new_session;

/* A command must not reach a terminal through /dev/tty. A session of its
 * own per command would ensure that, but each new session is also a new
 * scheduling autogroup (sched_autogroup_enabled, the default on desktop
 * and many server kernels): under load the kernel then starves those
 * one-process groups behind the workers' group, and at 8 clients on 2 CPUs
 * one request in a hundred waited 70-470 ms. So the daemon lets go of the
 * terminal once, here, and commands only lead a process group of their own
 * inside its session. Only a session leader cannot let go without hanging
 * up its own session: then each command gets a new session, as before. */
void runner_detach_terminal(void)
{
	int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);

	if (fd < 0)
		return; /* no controlling terminal */
	if (getsid(0) == getpid() || ioctl(fd, TIOCNOTTY) < 0)
		new_session = 1;
	close(fd);
}

/* A worker does a little work on each of many wake-ups (a connection, a
 * request, its command's output, the command's exit) and otherwise waits.
 * Under SCHED_OTHER each wake-up preempts whatever runs on that CPU, most
 * often the worker's own command or the client: at 1 client on 2 CPUs that
 * was three or four extra context switches per request, and the worker
 * came back for each event one at a time. SCHED_BATCH differs only there:
 * a woken batch task waits for the running one's slice instead of
 * preempting it, and then finds the events together. Measured on 2 CPUs
 * with /bin/echo: 1 client 811-873 -> 925-954 requests/s, 8 clients
 * 1483-1645 -> 1671-1825, p99 at 8 clients 8.1-9.3 -> 6.5-7.4 ms.
 * The command must not inherit it: it is the administrator's workload,
 * scheduled as the daemon was started. A daemon started under another
 * policy (chrt, CPUSchedulingPolicy=) keeps it for workers and commands. */
static int reset_policy;

int runner_worker_batch(void)
{
	struct sched_param sp = { 0 };

	if (sched_getscheduler(0) != SCHED_OTHER)
		return 0;
	if (sched_setscheduler(0, SCHED_BATCH, &sp) < 0)
		return -1;
	reset_policy = 1;
	return 1;
}

void runner_close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Set NAME=value, replacing an earlier entry of the same name: later
 * sources (the entry's setenv, then the client's allowed variables) win. */
static void env_put(const char **env, int *n, const char *entry)
{
	size_t len = strcspn(entry, "=");

	for (int i = 0; i < *n; i++)
		if (strncmp(env[i], entry, len) == 0 && env[i][len] == '=') {
			env[i] = entry;
			return;
		}
	if (*n < MAX_ENV)
		env[(*n)++] = entry;
}

static const int rlimit_res[RL_COUNT] = {
	[RL_CPU] = RLIMIT_CPU, [RL_AS] = RLIMIT_AS, [RL_NPROC] = RLIMIT_NPROC,
	[RL_NOFILE] = RLIMIT_NOFILE, [RL_FSIZE] = RLIMIT_FSIZE,
};

static const int ignored_by_worker[] = { WORKER_IGNORED_SIGNALS };

/* In the child, between clone and exec: only system calls, nothing that
 * touches the worker's heap or locks (the memory is shared). */
/* The child runs on child_stack, which AddressSanitizer takes for a plain
 * global: its stack-frame poisoning would go stale there between
 * children, so the two functions on that stack are left uninstrumented. */
#define CHILD_STACK_FN __attribute__((no_sanitize("address")))

static CHILD_STACK_FN _Noreturn void child(const struct policy_exec *ex, const char *const *envp,
			    int in, int out, int err, volatile int *report, pid_t worker)
{
	const struct command *cmd = ex->cmd;
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	sigset_t none;

	if ((new_session ? setsid() : setpgid(0, 0)) < 0)
		goto fail;
	/* Back from the worker's SCHED_BATCH, nice value unchanged (always
	 * allowed: it is not a raise of priority). */
	if (reset_policy) {
		struct sched_param sp = { 0 };
		if (sched_setscheduler(0, SCHED_OTHER, &sp) < 0)
			goto fail;
	}
	/* If the worker dies, so does the command (its own children are
	 * reached by the master, through the scoreboard's process group). */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != worker)
		goto fail;
	/* execve resets caught signals by itself; only ignored ones would
	 * survive it, and these are the ones a worker ignores. */
	for (size_t i = 0; i < ARRAY_SIZE(ignored_by_worker); i++)
		sigaction(ignored_by_worker[i], &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
		goto fail;
	/* Every descriptor above 2 is already CLOEXEC; this also catches any
	 * that was inherited without the flag. */
	if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
		goto fail;

	for (int i = 0; i < RL_COUNT; i++) {
		if (cmd->rlim[i] == RLIM_UNSET)
			continue;
		struct rlimit rl = { (rlim_t)cmd->rlim[i], (rlim_t)cmd->rlim[i] };
		if (setrlimit(rlimit_res[i], &rl) < 0)
			goto fail;
	}
	if (chdir(cmd->workdir ? cmd->workdir : "/") < 0)
		goto fail;
	if (cmd->has_uid || cmd->has_gid) {
		gid_t gid = cmd->gid;
		if (setgroups(1, &gid) < 0 || setgid(gid) < 0)
			goto fail;
		if (cmd->has_uid && setuid(cmd->uid) < 0)
			goto fail;
	}
	execve(ex->path, (char *const *)ex->argv, (char *const *)envp);
fail:
	/* vfork: the worker is suspended until now and reads this. */
	*report = errno ? errno : EINVAL;
	_exit(127);
}

/* A pipe end has no other status flag to keep: one call, not two. */
struct child_args {
	const struct policy_exec *ex;
	const char *const *envp;
	int in, out, err;
	volatile int *report;
	pid_t worker;
};

/* The child's stack: used by one child at a time (the worker is suspended
 * while it runs), so one per worker is enough. */
static char child_stack[256 << 10] __attribute__((aligned(64)));

static CHILD_STACK_FN int child_main(void *arg)
{
	const struct child_args *a = arg;

	child(a->ex, a->envp, a->in, a->out, a->err, a->report, a->worker);
}

static int set_nonblock(int fd)
{
	return fcntl(fd, F_SETFL, O_NONBLOCK);
}

/* /dev/null for commands without stdin, opened once per worker. */
static int devnull(void)
{
	static int fd = -1;

	if (fd < 0)
		fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	return fd;
}

int runner_start(const struct policy_exec *ex, const struct runner_opts *o,
		 struct runner *r, char *err, size_t errlen)
{
	const struct command *cmd = ex->cmd;
	char port[32], addr[96], name[96];
	const char *envp[MAX_ENV + 1];
	int in[2] = { -1, -1 }, out[2] = { -1, -1 }, er[2] = { -1, -1 };
	volatile int child_errno = 0;
	int n = 0, null_in = -1, pidfd = -1;
	static pid_t worker; /* this worker: set on its first command */

	r->pid = -1;
	r->pidfd = r->in_fd = r->out_fd = r->err_fd = -1;
	r->in_grown = r->out_big = r->err_big = 0;

	/* A fixed, minimal environment: nothing of the daemon's own (no
	 * NOTIFY_SOCKET, LISTEN_*, WATCHDOG_*) reaches a command. */
	env_put(envp, &n, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
	env_put(envp, &n, "LANG=C.UTF-8");
	env_put(envp, &n, "HOME=/");
	snprintf(addr, sizeof(addr), "TCPEXEC_REMOTE_ADDR=%s", o->remote_addr);
	snprintf(port, sizeof(port), "TCPEXEC_REMOTE_PORT=%u", o->remote_port);
	snprintf(name, sizeof(name), "TCPEXEC_COMMAND=%s", cmd->name);
	env_put(envp, &n, addr);
	env_put(envp, &n, port);
	env_put(envp, &n, name);
	for (int i = 0; i < cmd->nsetenv; i++)
		env_put(envp, &n, cmd->setenv[i]);
	for (int i = 0; i < o->nclient_env; i++)
		env_put(envp, &n, o->client_env[i]);
	envp[n] = NULL;

	if (o->with_stdin) {
		if (pipe2(in, O_CLOEXEC) < 0)
			goto fail_errno;
	} else if ((null_in = devnull()) < 0) {
		goto fail_errno;
	}
	if (pipe2(out, O_CLOEXEC) < 0 || (!o->merge_stderr && pipe2(er, O_CLOEXEC) < 0))
		goto fail_errno;

	/* As posix_spawn does: clone(CLONE_VM | CLONE_VFORK) on a stack of
	 * its own. No page tables to copy, and the worker sleeps until the
	 * command execs (or fails, leaving its errno in child_errno), so no
	 * pipe is needed to learn the outcome. The separate stack keeps the
	 * child's frames off the worker's (a plain vfork() child would write
	 * below the worker's live frames, which AddressSanitizer rightly
	 * flags). */
	if (!worker)
		worker = getpid();
	{
		struct child_args a = {
			.ex = ex, .envp = envp, .in = o->with_stdin ? in[0] : null_in,
			.out = out[1], .err = o->merge_stderr ? out[1] : er[1],
			.report = &child_errno, .worker = worker,
		};
		/* CLONE_PIDFD hands back the pidfd with the child (Linux 5.2);
		 * older kernels refuse the flag, and pidfd_open follows. */
		r->pid = clone(child_main, child_stack + sizeof(child_stack),
			       CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &a, &pidfd);
		if (r->pid < 0 && errno == EINVAL) {
			pidfd = -1;
			r->pid = clone(child_main, child_stack + sizeof(child_stack),
				       CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
		}
	}
	if (r->pid < 0)
		goto fail_errno;

	runner_close_fd(&in[0]);
	runner_close_fd(&out[1]);
	runner_close_fd(&er[1]);
	if (child_errno) {
		if (pidfd >= 0)
			close(pidfd);
		waitpid(r->pid, NULL, 0);
		r->pid = -1;
		snprintf(err, errlen, "cannot run %s: %s", ex->path, strerror(child_errno));
		goto fail;
	}

	r->pidfd = pidfd >= 0 ? pidfd : (int)syscall(SYS_pidfd_open, r->pid, 0);
	if (r->pidfd < 0)
		goto fail_errno;
	r->in_fd = in[1];
	r->out_fd = out[0];
	r->err_fd = er[0];
	if ((r->in_fd >= 0 && set_nonblock(r->in_fd) < 0) || set_nonblock(r->out_fd) < 0 ||
	    (r->err_fd >= 0 && set_nonblock(r->err_fd) < 0))
		goto fail_errno;
	r->started_ms = now_ms();
	return 0;

fail_errno:
	snprintf(err, errlen, "cannot start %s: %s", ex->path, strerror(errno));
fail:
	runner_close_fd(&in[0]);
	runner_close_fd(&in[1]);
	runner_close_fd(&out[0]);
	runner_close_fd(&out[1]);
	runner_close_fd(&er[0]);
	runner_close_fd(&er[1]);
	r->in_fd = r->out_fd = r->err_fd = -1;
	runner_finish(r);
	return -1;
}

/* Bigger pipes, fewer wake-ups for a command that streams: 64 KiB is the
 * default. Called when a pipe was found full, so a short command does not
 * pay for it. Best effort (pipe-max-size may be lower). */
void runner_grow_pipe(int fd)
{
	if (fd >= 0)
		fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES);
}

void runner_signal(const struct runner *r, int sig)
{
	if (r->pid > 0)
		kill(-r->pid, sig);
}

int runner_peek(const struct runner *r, int *status)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, (id_t)r->pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid == 0)
		return 0;
	if (si.si_code == CLD_EXITED)
		*status = W_EXITCODE(si.si_status, 0);
	else
		*status = si.si_status | (si.si_code == CLD_DUMPED ? WCOREFLAG : 0);
	return 1;
}

void runner_finish(struct runner *r)
{
	if (r->pid > 0) {
		/* The group leader is not reaped yet, so its pid (the group id)
		 * cannot have been reused: this SIGKILL reaches only what the
		 * command left behind. */
		kill(-r->pid, SIGKILL);
		while (waitpid(r->pid, NULL, 0) < 0 && errno == EINTR)
			;
		r->pid = -1;
	}
	runner_close_fd(&r->pidfd);
	runner_close_fd(&r->in_fd);
	runner_close_fd(&r->out_fd);
	runner_close_fd(&r->err_fd);
}
