// SPDX-License-Identifier: MIT
/*
 * A worker process, forked by the master. It polls every inherited
 * listening socket plus its master pipe, accepts one connection at a time
 * and hands it to session.c. It leaves when its pipe reaches EOF (retired,
 * or the master died: after the current request), when the master writes a
 * byte into it (given back: once the current connection ends), after
 * max_requests connections, or at once on SIGTERM. A worker is disposable:
 * fatal() is allowed here.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "log.h"
#include "protocol.h"
#include "runner.h"
#include "session.h"
#include "systemd.h"
#include "tcpexecd.h"
#include "worker.h"

#define ACCEPT_PAUSE_MS 500

static void test_fault(void)
{
	const char *f = getenv("TCPEXECD_TEST_FAULT");

	if (!f)
		return;
	if (strcmp(f, "worker-exit") == 0)
		_exit(EXIT_RUNTIME);
	if (strcmp(f, "worker-config") == 0)
		_exit(EXIT_CONFIG);
}

/* The worker takes SIGTERM (abort now) and SIGUSR1 (reopen the log) through
 * a signalfd. Terminal-generated INT/QUIT and the master's own control
 * signals are ignored: the master alone decides what the pool does. */
static int worker_signals(void)
{
	static const int ignored[] = { WORKER_IGNORED_SIGNALS };
	sigset_t set;
	int fd;

	for (size_t i = 0; i < ARRAY_SIZE(ignored); i++)
		signal(ignored[i], SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGUSR1);
	fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (fd < 0 || sigprocmask(SIG_SETMASK, &set, NULL) < 0)
		fatal(EXIT_RUNTIME, "worker: signals: %s", strerror(errno));
	return fd;
}

/* Returns -1 on SIGTERM. */
static int worker_read_signals(int sigfd)
{
	struct signalfd_siginfo si;

	while (read(sigfd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGTERM)
			return -1;
		if (si.ssi_signo == SIGUSR1)
			log_reopen();
	}
	return 0;
}

/* Errors that concern one connection, or none (accept(2) lists the network
 * errors that a pending connection may already carry). */
static int accept_transient(int e)
{
	switch (e) {
	case EAGAIN:
	case EINTR:
	case ECONNABORTED:
	case EPROTO:
	case ENETDOWN:
	case ENOPROTOOPT:
	case EHOSTDOWN:
	case ENONET:
	case EHOSTUNREACH:
	case EOPNOTSUPP:
	case ENETUNREACH:
	case EPERM: /* firewall rules */
		return 1;
	}
	return 0;
}

/* Admission, before any handshake work: the listener's network rules, the
 * per-source cap, and a MaxStartups-like random early drop once many
 * connections are still handshaking. Because each worker holds one
 * connection, these are what keep a slow or greedy source from taking the
 * whole pool (the prefork server's classic slowloris weakness). Returns 0
 * to serve, or -1 after closing the connection. */
static int admit(const struct worker_ctx *ctx, int conn, const struct sockaddr *peer,
		 const struct listen_opts *lo, const char *host)
{
	const struct config *cfg = ctx->cfg;
	int same = 0, same_starting = 0, starting = 0, busy = 0;
	const char *why = NULL;

	if (lo && !config_netrules_allow(&lo->rules, peer)) {
		log_notice("refused %s: listener rules", host);
		close(conn);
		return -1;
	}
	for (int i = 0; i < ctx->nslots; i++) {
		const struct slot *s = &ctx->slots[i];
		if (s == ctx->slot || s->state != WS_BUSY)
			continue;
		int mine = strcmp(s->host, host) == 0;
		busy++;
		starting += s->handshaking;
		same += mine;
		same_starting += mine && s->handshaking;
	}
	if (cfg->max_connections && busy >= cfg->max_connections) {
		why = "server busy";
	} else if (cfg->per_source_max && same >= cfg->per_source_max) {
		why = "too many connections from this address";
	} else if (starting >= cfg->max_startups[0] &&
		   (same_starting > 0 || starting >= cfg->max_startups[2])) {
		/* The early drop falls on sources that already have a handshake
		 * pending: a flood of silent connections from one address must
		 * not cost everyone else their turn. */
		int start = cfg->max_startups[0], rate = cfg->max_startups[1];
		int full = cfg->max_startups[2];
		int p = starting >= full ? 100
			: rate + (100 - rate) * (starting - start) / (full - start + 1);
		if (random() % 100 < p)
			why = "too many unauthenticated connections";
	}
	if (!why)
		return 0;
	log_notice("refused %s: %s", host, why);
	/* A short answer a framed client understands, on plaintext listeners
	 * only (a TLS client could not read it). */
	if (!lo || !lo->tls) {
		uint8_t buf[128];
		long n = proto_encode_error(buf, sizeof(buf), PROTO_ERR_BUSY, why);
		if (n > 0 && send(conn, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			log_debug("refused %s: send: %s", host, strerror(errno));
	}
	close(conn);
	return -1;
}

/* The last idle worker just turned busy: nobody accepts until the master
 * starts another, so tell it now instead of at its next tick. */
static void wake_master(const struct worker_ctx *ctx)
{
	for (int i = 0; i < ctx->nslots; i++)
		if (ctx->slots[i].state == WS_IDLE || ctx->slots[i].state == WS_STARTING)
			return;
	if (write(ctx->wake_fd, "w", 1) < 0 && errno != EAGAIN)
		log_debug("wake: %s", strerror(errno));
}

/* Listening sockets in the worker's epoll set. EPOLLEXCLUSIVE: a new
 * connection wakes one idle worker, not all of them (with poll() every
 * idle worker woke for every connection and all but one found EAGAIN,
 * which showed in the latency tail). */
static void watch_listeners(int epfd, const struct worker_ctx *ctx, int on)
{
	for (int i = 0; i < ctx->nlisteners; i++) {
		struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE, .data.u32 = 2 + i };
		if (ctx->listeners[i].fd < 0)
			continue;
		if (epoll_ctl(epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, ctx->listeners[i].fd,
			      &ev) < 0)
			fatal(EXIT_RUNTIME, "worker: epoll_ctl: %s", strerror(errno));
	}
}

/* Accept and serve one connection from listener li. Returns -1 if the
 * worker must exit now, 1 to pause accepting, 0 otherwise. */
static int serve_one(const struct worker_ctx *ctx, struct session_ctx *sctx, int li)
{
	const struct listener *l = &ctx->listeners[li];
	const struct listen_opts *lo = l->opt >= 0 ? &ctx->cfg->lopts[l->opt] : NULL;
	struct slot *slot = ctx->slot;
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	char host[sizeof(slot->host)];
	int conn, rc;

	conn = accept4(l->fd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (conn < 0) {
		if (accept_transient(errno))
			return 0;
		/* EMFILE/ENFILE/ENOBUFS/ENOMEM: the connection stays queued;
		 * waiting again at once would spin. */
		log_warn("accept: %s; pausing accepts for %d ms", strerror(errno), ACCEPT_PAUSE_MS);
		return 1;
	}
	if (peer.ss_family != AF_UNIX) {
		/* Replies are small and come in a few writes: without NODELAY,
		 * Nagle and the peer's delayed ACK would add tens of
		 * milliseconds to each command. */
		const char *cc = ctx->cfg->loopback_cc;
		int one = 1;
		setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* Checked when the configuration was read; a failure here
		 * (a worker without the privilege the check had) only keeps
		 * the system's choice. */
		if (cc[0] && addr_is_local((struct sockaddr *)&peer) &&
		    setsockopt(conn, IPPROTO_TCP, TCP_CONGESTION, cc, (socklen_t)strlen(cc)) < 0)
			log_debug("loopback_congestion %s: %s", cc, strerror(errno));
	}
	addr_host((struct sockaddr *)&peer, plen, host, sizeof(host));
	if (admit(ctx, conn, (struct sockaddr *)&peer, lo, host) < 0)
		return 0;
	addr_format((struct sockaddr *)&peer, plen, slot->peer, sizeof(slot->peer));
	memcpy(slot->host, host, sizeof(slot->host));
	slot->requests++;
	slot->handshaking = 1;
	slot->state = WS_BUSY;
	wake_master(ctx);
	rc = session_serve(sctx, conn, (struct sockaddr *)&peer, plen, lo);
	slot->handshaking = 0;
	slot->host[0] = '\0';
	slot->peer[0] = '\0';
	slot->command[0] = '\0';
	slot->heartbeat_ms = now_ms();
	slot->state = WS_IDLE;
	return rc < 0 ? -1 : 0;
}

void worker_run(const struct worker_ctx *ctx)
{
	struct slot *slot = ctx->slot;
	struct session_ctx sctx;
	uint64_t pause_until = 0;
	struct epoll_event ev;
	int sigfd, epfd;

	test_fault();
	if (ctx->cfg->worker_batch && runner_worker_batch() < 0)
		log_warn("worker: cannot switch to SCHED_BATCH: %s", strerror(errno));
	sigfd = worker_signals();
	sctx = (struct session_ctx){ .cfg = ctx->cfg, .tls = ctx->tls, .slot = slot,
				     .sigfd = sigfd, .master_fd = ctx->master_fd,
				     .listeners = ctx->listeners, .nlisteners = ctx->nlisteners };
	srandom((unsigned)getpid() ^ (unsigned)now_ms());

	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		fatal(EXIT_RUNTIME, "worker: epoll: %s", strerror(errno));
	ev = (struct epoll_event){ .events = EPOLLIN, .data.u32 = 0 };
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, ctx->master_fd, &ev) < 0)
		fatal(EXIT_RUNTIME, "worker: epoll_ctl: %s", strerror(errno));
	ev.data.u32 = 1;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, sigfd, &ev) < 0)
		fatal(EXIT_RUNTIME, "worker: epoll_ctl: %s", strerror(errno));
	watch_listeners(epfd, ctx, 1);

	slot->heartbeat_ms = now_ms();
	slot->state = WS_IDLE;

	for (;;) {
		struct epoll_event evs[2 + LISTEN_MAX];
		uint64_t now = now_ms();
		int n, timeout = 1000, listener = -1, aside;

		slot->heartbeat_ms = now;
		if (ctx->cfg->max_requests && slot->requests >= (uint64_t)ctx->cfg->max_requests)
			break;
		if (slot->leaving)
			break;
		if (pause_until) {
			if (now >= pause_until) {
				pause_until = 0;
				watch_listeners(epfd, ctx, 1);
			} else {
				timeout = (int)(pause_until - now);
			}
		}
		aside = session_sweep(0);
		if (aside >= 0 && aside < timeout)
			timeout = aside;
		n = epoll_wait(epfd, evs, (int)ARRAY_SIZE(evs), timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fatal(EXIT_RUNTIME, "worker: epoll_wait: %s", strerror(errno));
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u32 == 1 && worker_read_signals(sigfd) < 0) {
				session_sweep(1);
				_exit(EXIT_OK);
			}
			if (evs[i].data.u32 == 0 && session_master_pipe(&sctx))
				goto out; /* EOF: retired, or the master is gone */
			if (evs[i].data.u32 >= 2 && listener < 0)
				listener = (int)evs[i].data.u32 - 2;
		}
		/* One connection per wakeup: the master pipe is looked at
		 * between connections, so a retired worker leaves promptly.
		 * One given back still serves the connection it was woken
		 * for: with EPOLLEXCLUSIVE no other worker was woken for it. */
		if (listener >= 0) {
			int rc = serve_one(ctx, &sctx, listener);
			if (rc < 0) {
				session_sweep(1);
				_exit(EXIT_OK);
			}
			if (rc > 0 && !pause_until) {
				watch_listeners(epfd, ctx, 0);
				pause_until = now_ms() + ACCEPT_PAUSE_MS;
			}
		}
	}
out:
	slot->state = WS_EXITING;
	session_sweep(1);
	_exit(EXIT_OK);
}

/* Inetd mode (-i): this process is the whole server for the one connection
 * on standard input, as sshd -i. Same session, policy and logging; no
 * master, no scoreboard (a private slot stands in). */
int worker_inetd(const struct config *cfg)
{
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	struct slot slot = { .pid = getpid(), .state = WS_BUSY };
	struct session_ctx sctx = { .cfg = cfg, .slot = &slot, .master_fd = -1 };
	int fd, rc;

	systemd_scrub_env();
	if (getpeername(STDIN_FILENO, (struct sockaddr *)&peer, &plen) < 0) {
		log_err("-i: standard input is not a connected socket: %s", strerror(errno));
		return EXIT_USAGE;
	}
	/* No TLS in this mode: plaintext is for loopback and Unix peers, as on
	 * the daemon's own listeners. */
	if (!cfg->insecure && !addr_is_local((struct sockaddr *)&peer)) {
		addr_format((struct sockaddr *)&peer, plen, slot.peer, sizeof(slot.peer));
		log_err("-i: refusing %s: inetd mode is plaintext, for loopback and Unix peers "
			"(set insecure = yes to allow others)", slot.peer);
		return EXIT_RUNTIME;
	}
	/* The session owns and closes its descriptor; fd 0 and 1 may be the
	 * same socket (inetd) or two (systemd gives both): keep 0, and point
	 * 1 at /dev/null so that nothing else writes into the stream. */
	fd = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		fatal(EXIT_RUNTIME, "-i: %s", strerror(errno));
	rc = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (rc >= 0) {
		dup2(rc, STDIN_FILENO);
		dup2(rc, STDOUT_FILENO);
		close(rc);
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	if (peer.ss_family != AF_UNIX) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	sctx.sigfd = worker_signals();
	addr_format((struct sockaddr *)&peer, plen, slot.peer, sizeof(slot.peer));
	session_serve(&sctx, fd, (struct sockaddr *)&peer, plen, NULL);
	close(sctx.sigfd);
	return EXIT_OK;
}
