// SPDX-License-Identifier: MIT
/*
 * One client connection inside a worker, from accept to close: tell a
 * framed client from a line-mode one by its first byte, read requests,
 * ask the policy, start the command (runner.c), relay stdin / stdout /
 * stderr full-duplex with back-pressure both ways (the bulk of a stream by
 * splice(2) on plaintext), enforce the timeouts and the output cap, report
 * the exit status, and write one audit record per request.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "addr.h"
#include "listen.h"
#include "log.h"
#include "policy.h"
#include "protocol.h"
#include "runner.h"
#include "session.h"
#include "tls.h"
#include "words.h"
#include "tcpexecd.h"

#define OBUF_CAP (1u << 20)         /* frames waiting for the client */
#define CHUNK (256u << 10)          /* one read from a command's pipe */
#define LINE_MAX_LEN (64u << 10)    /* line mode: longest command line */
#define LINE_QUIET_MS 200           /* line mode: a partial line then silence */
#define LINE_MAX_WORDS 256
#define LINGER_MS 200               /* lingering close: drain before close */
#define ASIDE_MAX 8                 /* connections set aside at once */
#define SEND_HOLD_MS 1              /* small output waits this long for more */
#define SEND_NOW_BYTES (16u << 10)  /* ... unless there is this much */
#define SPLICE_MIN (64u << 10)      /* output spliced, not copied, from here */
#define STDIN_SPLICE_MIN (32u << 10) /* the part of a STDIN frame read into rbuf */
#define RELAY_MAX (1u << 20)        /* asked of one splice into a relay pipe */
#define SPLICE_DRAIN_MS 1000        /* an unfinished splice at the end */

/* Buffers live for the worker's lifetime: no allocation per connection.
 * rbuf holds the largest frame the configuration accepts; untouched pages
 * cost nothing. */
#define PAGE 4096
static uint8_t rbuf[PROTO_MAX_PAYLOAD_CEILING + PROTO_HEADER_LEN] __attribute__((aligned(PAGE)));
static char strbuf[PROTO_MAX_PAYLOAD_CEILING] __attribute__((aligned(PAGE)));
static uint8_t obuf[OBUF_CAP] __attribute__((aligned(PAGE)));
/* High-water marks of this connection, to give back what a large request
 * or a stream touched (an idle worker stays small). */
static size_t rbuf_hw, obuf_hw;
#define KEEP_BYTES (64u << 10)
/* The unread input. Frames are consumed from the front by moving roff, and
 * the rest is moved down only when the end of rbuf is reached: a stream of
 * large STDIN frames is not copied again inside rbuf for each frame. */
#define RBUF(c) (rbuf + (c)->roff)

enum end {
	END_OK = 0,       /* go on with the connection */
	END_CLOSE,        /* close the connection (client gone, protocol error) */
	END_TERM,         /* SIGTERM: close and let the worker exit */
	END_ASIDE,        /* the last request is answered: set the connection aside */
};

struct conn {
	const struct session_ctx *ctx;
	const struct config *cfg;
	int fd;
	const struct sockaddr *peer;
	char host[64];
	unsigned port;
	size_t roff, rlen;  /* unread bytes are rbuf[roff, roff + rlen) */
	size_t rcap;        /* max_frame + header */
	size_t rmax;        /* while a command runs: read at most this, 0 = rcap */
	/* The rest of a large STDIN frame, still in the socket: it goes to the
	 * command's stdin by splice(2), or is dropped once stdin is closed. */
	size_t in_splice, in_discard;
	size_t in_relay;    /* of in_splice, what waits in the input relay pipe */
	int in_gone;        /* the socket ended or failed during a splice */
	size_t olen, ooff;  /* obuf: pending bytes are [ooff, olen) */
	/* A frame's payload on its way from a command pipe to the socket by
	 * splice(2): it goes after obuf[.., splice_at), before the rest. */
	size_t splice_left, splice_at;
	int splice_fd;
	int eof;            /* the client sent FIN */
	int raw;            /* line mode: no framing on output */
	struct tls_conn *tls;   /* NULL on a plaintext connection */
	short rd_wants, wr_wants; /* what a blocked TLS read/write waits for */
	const char *identity;   /* authenticated client, "" if none */
	size_t out_max;     /* largest frame payload the client accepts */
	int retiring;       /* the master pipe reached EOF */
};

/* The worker's own pipes between a streaming command's pipes and the
 * socket: one for its output (see pump_output), one for its input (see
 * splice_stdin). Opened on first use, empty between splices. */
enum { RELAY_OUT, RELAY_IN };
static int relay_fds[2][2] = { { -1, -1 }, { -1, -1 } };

static int relay_open(int which)
{
	int *fds = relay_fds[which];

	if (fds[0] >= 0)
		return 0;
	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0)
		return -1;
	runner_grow_pipe(fds[1]);
	return 0;
}

/* Drop what a relay pipe holds: closed, opened again when next needed. */
static void relay_close(int which)
{
	int *fds = relay_fds[which];

	if (fds[0] >= 0) {
		close(fds[0]);
		close(fds[1]);
		fds[0] = fds[1] = -1;
	}
}

/* A splice given up: what the relay pipe still holds is not to be sent. */
static void splice_abandon(struct conn *c)
{
	if (c->splice_left && c->splice_fd == relay_fds[RELAY_OUT][0])
		relay_close(RELAY_OUT);
	c->splice_left = 0;
}

/* What happened to one request, for the final frame and the audit. */
struct outcome {
	int status;           /* wait status, valid when exited */
	int exited;
	int error;            /* PROTO_ERR_* instead of an EXIT frame, or 0 */
	char why[256];
	uint64_t bytes_in, bytes_out;
	uint64_t started_ms;
};

static int check_signals(int sigfd)
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

/* Make room at the end of obuf for one more chunk, moving the unsent bytes
 * down only when the end is too near: while the client keeps up, output
 * is not copied again inside obuf. */
static void obuf_compact(struct conn *c)
{
	if (c->ooff == 0 || OBUF_CAP - c->olen >= CHUNK + PROTO_HEADER_LEN)
		return;
	memmove(obuf, obuf + c->ooff, c->olen - c->ooff);
	c->olen -= c->ooff;
	if (c->splice_left)
		c->splice_at -= c->ooff;
	c->ooff = 0;
}

static int out_pending(const struct conn *c)
{
	return c->olen > c->ooff || c->splice_left;
}

/* Socket I/O, plain or TLS: > 0 bytes, 0 EOF (read only), -1 would block
 * (for TLS, *wants says which readiness unblocks it), -2 connection gone. */
static long io_send(struct conn *c, const void *buf, size_t len)
{
	ssize_t n;

	if (c->tls)
		return tls_write(c->tls, buf, len, &c->wr_wants);
	n = send(c->fd, buf, len, MSG_NOSIGNAL);
	if (n >= 0)
		return n;
	return errno == EAGAIN || errno == EINTR ? -1 : -2;
}

static long io_recv(struct conn *c, void *buf, size_t len)
{
	ssize_t n;

	if (c->tls)
		return tls_read(c->tls, buf, len, &c->rd_wants);
	n = recv(c->fd, buf, len, 0);
	if (n >= 0)
		return n;
	return errno == EAGAIN || errno == EINTR ? -1 : -2;
}

/* Poll events for the socket; TLS may need the other direction. */
static short conn_events(const struct conn *c, int want_read)
{
	short ev = 0;

	if (want_read)
		ev |= c->tls && c->rd_wants ? c->rd_wants : POLLIN;
	if (out_pending(c))
		ev |= c->tls && c->wr_wants ? c->wr_wants : POLLOUT;
	return ev;
}

/* Decrypted bytes inside OpenSSL are invisible to poll(): read them now. */
static int conn_buffered(const struct conn *c)
{
	return c->tls && c->rlen < c->rcap && tls_pending(c->tls) > 0;
}

/* Write what the socket takes now: obuf up to a pending splice, the
 * spliced payload, then the rest. -1 when the client is gone. */
static int conn_write(struct conn *c)
{
	c->wr_wants = 0;
	for (;;) {
		size_t end = c->splice_left ? c->splice_at : c->olen;
		ssize_t n;

		while (c->ooff < end) {
			long w = io_send(c, obuf + c->ooff, end - c->ooff);
			if (w > 0) {
				c->ooff += (size_t)w;
				continue;
			}
			return w == -1 ? 0 : -1;
		}
		if (!c->splice_left)
			break;
		n = splice(c->splice_fd, NULL, c->fd, NULL, c->splice_left,
			   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		if (n > 0) {
			c->splice_left -= (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		/* The relay pipe holds these bytes and only we read it: a
		 * failure here is the socket's. */
		splice_abandon(c);
		return -1;
	}
	c->ooff = c->olen = 0;
	return 0;
}

static void rbuf_consume(struct conn *c, size_t n);

/* How much more input rbuf takes now (up to rmax while that is set). */
static size_t rbuf_room(const struct conn *c)
{
	size_t limit = c->rmax && c->rmax < c->rcap ? c->rmax : c->rcap;

	return c->rlen < limit ? limit - c->rlen : 0;
}

/* Read what the socket has now into rbuf. -1 on a reset, 0 otherwise
 * (c->eof is set on FIN). */
static int conn_read(struct conn *c)
{
	c->rd_wants = 0;
	if (c->in_splice)
		return 0; /* the next bytes are the command's, by splice */
	while (rbuf_room(c) && !c->eof) {
		size_t want;
		long n;

		if (c->roff + c->rlen >= c->rcap) {
			memmove(rbuf, RBUF(c), c->rlen);
			c->roff = 0;
		}
		want = rbuf_room(c);
		if (want > c->rcap - c->roff - c->rlen)
			want = c->rcap - c->roff - c->rlen;
		n = io_recv(c, rbuf + c->roff + c->rlen, want);
		if (n > 0) {
			c->rlen += (size_t)n;
			if (c->roff + c->rlen > rbuf_hw)
				rbuf_hw = c->roff + c->rlen;
			if (c->in_discard) {
				size_t d = c->in_discard < c->rlen ? c->in_discard : c->rlen;
				rbuf_consume(c, d);
				c->in_discard -= d;
			}
			/* A short read from a TCP socket took what there was:
			 * asking again would only return EAGAIN. (TLS reads
			 * return one record at a time.) */
			if (!c->tls && (size_t)n < want)
				break;
			continue;
		}
		if (n == 0) {
			c->eof = 1;
			break;
		}
		if (n == -1)
			break;
		return -1;
	}
	return 0;
}

static void rbuf_consume(struct conn *c, size_t n)
{
	c->rlen -= n;
	c->roff = c->rlen ? c->roff + n : 0;
}

/* Wait until the socket is readable (want_read) or obuf drained, or the
 * deadline passes. 1 ready, 0 deadline, -1 client gone, -2 SIGTERM. */
static int conn_wait(struct conn *c, int want_read, uint64_t deadline)
{
	for (;;) {
		uint64_t now = now_ms();
		struct pollfd p[3] = {
			{ .fd = c->fd, .events = conn_events(c, want_read) },
			{ .fd = c->ctx->sigfd, .events = POLLIN },
			{ .fd = c->retiring ? -1 : c->ctx->master_fd, .events = POLLIN },
		};
		int t;

		c->ctx->slot->heartbeat_ms = now;
		if (!want_read && !out_pending(c))
			return 1;
		if (want_read && conn_buffered(c))
			return 1;
		if (now >= deadline)
			return 0;
		t = deadline - now > 1000 ? 1000 : (int)(deadline - now);
		if (poll(p, 3, t) < 0 && errno != EINTR)
			return -1;
		if (p[1].revents && check_signals(c->ctx->sigfd) < 0)
			return -2;
		if (p[2].revents && session_master_pipe(c->ctx)) {
			c->retiring = 1;
			return 1; /* the caller looks again, now knowing */
		}
		if (p[0].revents && out_pending(c) && conn_write(c) < 0)
			return -1;
		if (p[0].revents & (POLLERR | POLLHUP) && !(p[0].revents & POLLIN))
			return -1;
		if (want_read && p[0].revents)
			return 1;
	}
}

/* Queue a frame built by an encoder; the frames queued here are small. */
static void queue_error(struct conn *c, int code, const char *msg)
{
	long n;

	obuf_compact(c);
	if (c->raw) {
		n = snprintf((char *)obuf + c->olen, OBUF_CAP - c->olen, "tcpexecd: %s: %s\n",
			     proto_error_name(code), msg);
		if (n > 0)
			c->olen += (size_t)n < OBUF_CAP - c->olen ? (size_t)n : OBUF_CAP - c->olen;
		return;
	}
	n = proto_encode_error(obuf + c->olen, OBUF_CAP - c->olen, code, msg);
	if (n > 0)
		c->olen += (size_t)n;
}

/* Send everything queued, within the idle timeout. */
static enum end flush(struct conn *c)
{
	uint64_t deadline = now_ms() + c->cfg->idle_timeout_ms;
	int r;

	/* Usually the socket takes it all at once: no poll first. */
	if (conn_write(c) < 0)
		return END_CLOSE;
	/* conn_wait also returns 1 when it learns that the worker retires:
	 * that is no reason to drop what is still queued. */
	do
		r = conn_wait(c, 0, deadline);
	while (r == 1 && out_pending(c));
	return r == 1 ? END_OK : r == -2 ? END_TERM : END_CLOSE;
}

/* Audit: one record per request. Arguments are escaped so that a
 * newline or a quote in an argument cannot forge a log line. */
static void escape(char *dst, size_t cap, char *const *argv, int argc, int quote)
{
	size_t o = 0;

	for (int i = 0; i < argc && o + 8 < cap; i++) {
		if (i)
			dst[o++] = ' ';
		if (quote)
			dst[o++] = '"';
		for (const unsigned char *s = (const unsigned char *)argv[i]; *s && o + 6 < cap; s++) {
			if (*s == '"' || *s == '\\') {
				dst[o++] = '\\';
				dst[o++] = (char)*s;
			} else if (*s < 0x20 || *s >= 0x7f) {
				o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", *s);
			} else {
				dst[o++] = (char)*s;
			}
		}
		if (quote)
			dst[o++] = '"';
	}
	dst[o < cap ? o : cap - 1] = '\0';
}

static void audit(const struct conn *c, char *const *argv, int argc, const char *decision,
		  const struct outcome *oc)
{
	char args[1024], status[64], fields[1400];
	uint64_t ms = oc->started_ms ? now_ms() - oc->started_ms : 0;
	char name[300], why[sizeof(oc->why)], ident[300];
	int allowed = strcmp(decision, "allow") == 0, n;

	/* Formatting costs more than the rest of a short request: skip it
	 * when the record would be dropped anyway. */
	if (!log_enabled(allowed ? LOG_INFO : LOG_NOTICE))
		return;

	/* Everything a client chose is escaped: a newline in a command name
	 * must not start a forged record. */
	escape(args, sizeof(args), argv, argc, 1);
	escape(name, sizeof(name), argv, argc > 0 ? 1 : 0, 0);
	{
		char *const idv[] = { (char *)(c->identity ? c->identity : "") };
		escape(ident, sizeof(ident), idv, 1, 0);
	}
	snprintf(why, sizeof(why), "%s", oc->why);
	for (char *p = why; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	if (oc->error)
		snprintf(status, sizeof(status), "error:%s", proto_error_name(oc->error));
	else if (!oc->exited)
		snprintf(status, sizeof(status), "none");
	else if (WIFSIGNALED(oc->status))
		snprintf(status, sizeof(status), "signal:%d%s", WTERMSIG(oc->status),
			 WCOREDUMP(oc->status) ? "+core" : "");
	else
		snprintf(status, sizeof(status), "exit:%d", WEXITSTATUS(oc->status));
	for (char *p = status; *p; p++)
		if (*p == ' ')
			*p = '_';

	/* The same facts as journal fields, for journalctl FIELD=value. */
	n = snprintf(fields, sizeof(fields),
		     "TCPEXECD_WORKER_PID=%ld\nREMOTE_ADDR=%s\nREMOTE_PORT=%u\nCOMMAND=%.80s\n"
		     "ARGV=%s\nDECISION=%s\nIDENTITY=%.128s\nDURATION_USEC=%llu\nBYTES_IN=%llu\n"
		     "BYTES_OUT=%llu\n",
		     (long)getpid(), c->host, c->port, name, args, decision, ident,
		     (unsigned long long)ms * 1000, (unsigned long long)oc->bytes_in,
		     (unsigned long long)oc->bytes_out);
	if (n > 0 && (size_t)n < sizeof(fields) && oc->exited && !oc->error)
		snprintf(fields + n, sizeof(fields) - (size_t)n, "%s=%d",
			 WIFSIGNALED(oc->status) ? "SIGNAL" : "EXIT_STATUS",
			 WIFSIGNALED(oc->status) ? WTERMSIG(oc->status) : WEXITSTATUS(oc->status));
	else if (n > 0 && (size_t)n < sizeof(fields) && oc->error)
		snprintf(fields + n, sizeof(fields) - (size_t)n, "ERROR=%s",
			 proto_error_name(oc->error));

	log_event(allowed ? LOG_INFO : LOG_NOTICE, allowed ? MSGID_EXECUTED : MSGID_DENIED, fields,
		  "%s peer=%s:%u%s%.128s command=%.80s argv=[%s] status=%s duration_ms=%llu "
		  "in=%llu out=%llu worker=%ld%s%s",
		  decision, c->host, c->port, ident[0] ? " identity=" : "", ident, name, args,
		  status, (unsigned long long)ms,
		  (unsigned long long)oc->bytes_in, (unsigned long long)oc->bytes_out,
		  (long)getpid(), why[0] ? " reason=" : "", why);
}

/* Signals a client may forward to its command (Ctrl-C and friends). */
static int signal_allowed(int sig)
{
	switch (sig) {
	case SIGHUP: case SIGINT: case SIGQUIT: case SIGTERM: case SIGKILL:
	case SIGUSR1: case SIGUSR2: case SIGALRM: case SIGWINCH: case SIGCONT:
		return 1;
	}
	return 0;
}

/* While stdin waits for the command to read, SIGNAL frames queued behind
 * it are delivered at once (and removed): Ctrl-C must reach a command that
 * does not read its input. */
static void signals_ahead(struct conn *c, const struct runner *r)
{
	struct proto_frame f;
	size_t off = 0;
	long n;

	while ((n = proto_frame_parse(RBUF(c) + off, c->rlen - off, c->cfg->max_frame, &f)) > 0) {
		int sig;
		if (off > 0 && f.type == PROTO_SIGNAL) {
			if (proto_decode_signal(&f, &sig) == 0 && signal_allowed(sig))
				runner_signal(r, sig);
			memmove(RBUF(c) + off, RBUF(c) + off + n, c->rlen - off - (size_t)n);
			c->rlen -= (size_t)n;
			continue;
		}
		off += (size_t)n;
	}
}

/* Framed mode, while a command runs: act on the client's frames in rbuf.
 * STDIN data is written to the command as far as its pipe takes it; the
 * rest waits in rbuf (back-pressure: rbuf fills, the socket is no longer
 * read, the client's sends block). Returns 1 when the command's stdin pipe
 * is full, 0 when every whole frame was used, -1 on a protocol error. */
/* The command's stdin pipe is full: grow it the first time (the command
 * is taking a stream), and act on signals queued behind the input. 1. */
static int stdin_blocked(struct conn *c, struct runner *r)
{
	if (!r->in_grown) {
		r->in_grown = 1;
		runner_grow_pipe(r->in_fd);
	}
	signals_ahead(c, r);
	return 1;
}

/* Move the rest of a large STDIN frame from the socket to the command's
 * stdin. 1 when the pipe is full, 0 when the socket has no more for now
 * (or the frame is done); c->in_gone when the client left mid-frame. */
static int splice_stdin(struct conn *c, struct runner *r, struct outcome *oc)
{
	/* Through the worker's input relay pipe: splicing from the socket
	 * straight into the command's stdin held that pipe's lock while TCP
	 * was read, and the command spun on it. Without a relay pipe (no
	 * descriptor left), straight. */
	int via = relay_open(RELAY_IN) == 0, *relay = relay_fds[RELAY_IN];

	while (c->in_splice) {
		size_t want = c->in_splice - c->in_relay;
		ssize_t n;

		if (via && !c->in_relay) {
			n = splice(c->fd, NULL, relay[1], NULL, want < RELAY_MAX ? want : RELAY_MAX,
				   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
			if (n > 0) {
				c->in_relay = (size_t)n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN)
				return 0; /* the socket is empty */
			c->in_gone = 1; /* EOF in mid-frame, or a reset */
			return 0;
		}
		if (via)
			n = splice(relay[0], NULL, r->in_fd, NULL, c->in_relay,
				   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		else
			n = splice(c->fd, NULL, r->in_fd, NULL, want < CHUNK ? want : CHUNK,
				   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		if (n > 0) {
			if (via)
				c->in_relay -= (size_t)n;
			c->in_splice -= (size_t)n;
			oc->bytes_in += (uint64_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			/* Via the relay, the pipe is full. Straight, the socket
			 * may be empty instead: a pipe with room for one more
			 * buffer is writable. */
			struct pollfd pp = { .fd = r->in_fd, .events = POLLOUT };
			if (!via && poll(&pp, 1, 0) == 1 && (pp.revents & POLLOUT))
				return 0;
			return stdin_blocked(c, r);
		}
		if (!via && n == 0) {
			c->in_gone = 1; /* EOF in mid-frame, or a reset */
			return 0;
		}
		/* The command closed its stdin (EPIPE): the rest of the frame
		 * is dropped, what the relay holds now and the rest as it
		 * comes, as a pipe would. */
		runner_close_fd(&r->in_fd);
		c->in_discard = c->in_splice - c->in_relay;
		c->in_splice = c->in_relay = 0;
		relay_close(RELAY_IN);
		return 0;
	}
	return 0;
}

/* A STDIN frame too large to pass through rbuf cheaply, whose payload is
 * still arriving: write what rbuf has of it, then splice the rest. Only on
 * plaintext (rmax set); 1 when the pipe is full, 0 otherwise, -1 for a
 * frame that cannot come now. */
static int start_stdin_splice(struct conn *c, struct runner *r, size_t *stdin_off,
			      struct outcome *oc)
{
	const uint8_t *h = RBUF(c);
	size_t plen, have;

	if (!c->rmax || c->rlen < PROTO_HEADER_LEN)
		return 0;
	plen = (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];
	have = c->rlen - PROTO_HEADER_LEN;
	if (h[0] != PROTO_STDIN) {
		/* Only STDIN frames may be larger than rmax: another one
		 * could never be read whole while the command runs. */
		if (PROTO_HEADER_LEN + plen <= c->rmax)
			return 0;
		snprintf(oc->why, sizeof(oc->why), "unexpected %s frame while a command runs",
			 proto_type_name(h[0]));
		oc->error = PROTO_ERR_BAD_REQUEST;
		return -1;
	}
	if (plen < STDIN_SPLICE_MIN || have >= plen)
		return 0;
	if (r->in_fd < 0) {
		/* Nobody reads it: dropped as it comes. */
		c->in_discard = plen - have;
		*stdin_off = 0;
		rbuf_consume(c, c->rlen);
		return 0;
	}
	if (*stdin_off < have) {
		ssize_t w = write(r->in_fd, h + PROTO_HEADER_LEN + *stdin_off, have - *stdin_off);
		if (w < 0 && errno == EAGAIN)
			return stdin_blocked(c, r);
		if (w < 0) {
			runner_close_fd(&r->in_fd); /* the frame is dropped as it comes */
			return 0;
		}
		*stdin_off += (size_t)w;
		oc->bytes_in += (uint64_t)w;
		if (*stdin_off < have)
			return stdin_blocked(c, r);
	}
	c->in_splice = plen - have;
	*stdin_off = 0;
	rbuf_consume(c, c->rlen);
	return splice_stdin(c, r, oc);
}

static int feed_command(struct conn *c, struct runner *r, size_t *stdin_off,
			struct outcome *oc)
{
	struct proto_frame f;
	long n;

	if (c->in_splice)
		return splice_stdin(c, r, oc);
	while ((n = proto_frame_parse(RBUF(c), c->rlen, c->cfg->max_frame, &f)) > 0) {
		int sig;

		switch (f.type) {
		case PROTO_STDIN:
			if (r->in_fd >= 0 && *stdin_off < f.len) {
				ssize_t w = write(r->in_fd, f.payload + *stdin_off, f.len - *stdin_off);
				if (w < 0 && errno == EAGAIN)
					return stdin_blocked(c, r);
				if (w < 0) {
					/* The command closed its stdin: the rest of the
					 * client's input is discarded, as a pipe would. */
					runner_close_fd(&r->in_fd);
				} else {
					*stdin_off += (size_t)w;
					oc->bytes_in += (size_t)w;
					if (*stdin_off < f.len)
						return stdin_blocked(c, r);
				}
			}
			break;
		case PROTO_STDIN_EOF:
			runner_close_fd(&r->in_fd);
			break;
		case PROTO_SIGNAL:
			if (proto_decode_signal(&f, &sig) == 0 && signal_allowed(sig))
				runner_signal(r, sig);
			break;
		default:
			snprintf(oc->why, sizeof(oc->why), "unexpected %s frame while a command runs",
				 proto_type_name(f.type));
			oc->error = PROTO_ERR_BAD_REQUEST;
			return -1;
		}
		*stdin_off = 0;
		rbuf_consume(c, (size_t)n);
	}
	if (n < 0) {
		snprintf(oc->why, sizeof(oc->why), "%s", n == -EMSGSIZE ? "frame too large"
									 : "malformed frame");
		oc->error = n == -EMSGSIZE ? PROTO_ERR_TOO_LARGE : PROTO_ERR_BAD_REQUEST;
		return -1;
	}
	return start_stdin_splice(c, r, stdin_off, oc);
}

/* Move one chunk from a command pipe into obuf, framed (or raw in line
 * mode); close the pipe at EOF. */
static void pump_output(struct conn *c, int *fd, int *big, uint8_t type, uint64_t limit,
		       struct outcome *oc)
{
	size_t hdr = c->raw ? 0 : PROTO_HEADER_LEN, room;
	ssize_t n;

	/* Both pipes may be readable in one turn of the loop: after one has
	 * started a splice, the other waits for it to end. */
	if (c->splice_left)
		return;
	obuf_compact(c);
	/* A large output on a plaintext connection is not copied through
	 * obuf. splice(2) moves the pages of the command's pipe into the
	 * worker's relay pipe, then from there to the socket behind the frame
	 * header. Splicing from the command's pipe to the socket directly
	 * held that pipe's lock for the whole TCP send, and the command,
	 * blocked on it, spun on the other CPU: 9 % of all CPU time when 1 GB
	 * went through cat; with the relay 4 %, and 5-10 % more MB/s. Near
	 * the output limit, the copy path below tells where the limit falls. */
	if (*big && !c->tls && (!limit || limit - oc->bytes_out >= SPLICE_MIN) &&
	    relay_open(RELAY_OUT) == 0) {
		size_t len = c->raw ? OBUF_CAP : c->out_max;
		if (limit && limit - oc->bytes_out < len)
			len = (size_t)(limit - oc->bytes_out);
		n = splice(*fd, NULL, relay_fds[RELAY_OUT][1], NULL, len,
			   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		if (n > 0) {
			if (!c->raw)
				proto_put_header(obuf + c->olen, type, (uint32_t)n);
			c->olen += hdr;
			c->splice_at = c->olen;
			c->splice_left = (size_t)n;
			c->splice_fd = relay_fds[RELAY_OUT][0];
			oc->bytes_out += (uint64_t)n;
			return;
		}
		if (n == 0)
			runner_close_fd(fd);
		if (n == 0 || errno == EAGAIN || errno == EINTR)
			return;
		/* Any other failure: the copy path reads the pipe instead. */
	}
	room = OBUF_CAP - c->olen - hdr;
	if (room > CHUNK)
		room = CHUNK;
	if (!c->raw && room > c->out_max)
		room = c->out_max;
	if (limit && limit - oc->bytes_out + 1 < room)
		room = (size_t)(limit - oc->bytes_out) + 1; /* one byte over tells */
	n = read(*fd, obuf + c->olen + hdr, room);
	if (n == 0)
		runner_close_fd(fd);
	if (n <= 0)
		return;
	/* A command that filled half the default pipe streams: from now on
	 * its pipe is larger and its output may be spliced. */
	if (!*big && (size_t)n >= SPLICE_MIN / 2) {
		*big = 1;
		runner_grow_pipe(*fd);
	}
	if (limit && oc->bytes_out + (uint64_t)n > limit) {
		n = (ssize_t)(limit - oc->bytes_out);
		oc->error = PROTO_ERR_OUTPUT_LIMIT;
		snprintf(oc->why, sizeof(oc->why), "output exceeded %llu bytes",
			 (unsigned long long)limit);
	}
	if (n == 0)
		return;
	if (!c->raw)
		proto_put_header(obuf + c->olen, type, (uint32_t)n);
	c->olen += hdr + (size_t)n;
	if (c->olen > obuf_hw)
		obuf_hw = c->olen;
	oc->bytes_out += (uint64_t)n;
}

/* Send a pending splice within SPLICE_DRAIN_MS. 0, or -1 if it could not. */
static int splice_drain(struct conn *c)
{
	uint64_t until = now_ms() + SPLICE_DRAIN_MS;

	while (c->splice_left) {
		struct pollfd p = { .fd = c->fd, .events = POLLOUT };
		uint64_t now = now_ms();

		if (conn_write(c) < 0)
			return -1;
		if (!c->splice_left)
			break;
		if (now >= until || poll(&p, 1, (int)(until - now)) < 0) {
			splice_abandon(c);
			return -1;
		}
	}
	return 0;
}

/* Run one allowed command and relay until it is over. */
static enum end relay(struct conn *c, const struct policy_exec *ex, struct runner *r,
		      uint64_t timeout_ms, struct outcome *oc)
{
	const struct command *cmd = ex->cmd;
	uint64_t term_at = timeout_ms ? r->started_ms + timeout_ms : UINT64_MAX;
	uint64_t kill_at = UINT64_MAX, linger_at = UINT64_MAX;
	uint64_t send_at = UINT64_MAX;
	size_t stdin_off = 0;
	enum end end = END_OK;
	int stdin_full = 0, send_now;

	/* Large STDIN frames on plaintext: read at most their first
	 * STDIN_SPLICE_MIN bytes into rbuf, and splice the rest
	 * (start_stdin_splice). A smaller frame always fits. */
	c->rmax = c->tls || c->raw ? 0 : PROTO_HEADER_LEN + STDIN_SPLICE_MIN;

	for (;;) {
		uint64_t now = now_ms(), next;
		int out_room, t;
		struct pollfd p[7];

		c->ctx->slot->heartbeat_ms = now;
		if (!c->raw && (stdin_full = feed_command(c, r, &stdin_off, oc)) < 0) {
			end = END_CLOSE;
			break;
		}
		if (c->in_gone)
			goto vanished;
		if (oc->error == PROTO_ERR_OUTPUT_LIMIT)
			break;
		if (oc->exited && r->out_fd < 0 && r->err_fd < 0)
			break;
		if (now >= linger_at)
			break; /* a background child holds the pipes: stop waiting */
		if (now >= term_at) {
			runner_signal(r, SIGTERM);
			term_at = UINT64_MAX;
			kill_at = now + c->cfg->kill_grace_ms;
			oc->error = PROTO_ERR_TIMEOUT;
			snprintf(oc->why, sizeof(oc->why), "%s ran longer than %llu ms", cmd->name,
				 (unsigned long long)timeout_ms);
		}
		if (now >= kill_at) {
			runner_signal(r, SIGKILL);
			kill_at = UINT64_MAX;
		}

		obuf_compact(c);
		/* No more output is read while a splice is under way: its
		 * pipe's next bytes must come after it. */
		out_room = OBUF_CAP - c->olen >= CHUNK + PROTO_HEADER_LEN && !c->splice_left;
		send_now = out_pending(c) && now >= send_at;
		p[0] = (struct pollfd){ .fd = c->fd,
			.events = conn_events(c, rbuf_room(c) && !c->eof && !c->in_splice) };
		if (!send_now)
			p[0].events &= (short)~POLLOUT;
		if (c->in_splice && !stdin_full)
			p[0].events |= POLLIN; /* for splice_stdin, not conn_read */
		p[1] = (struct pollfd){ .fd = c->ctx->sigfd, .events = POLLIN };
		p[2] = (struct pollfd){ .fd = out_room ? r->out_fd : -1, .events = POLLIN };
		p[3] = (struct pollfd){ .fd = out_room ? r->err_fd : -1, .events = POLLIN };
		p[4] = (struct pollfd){ .fd = stdin_full ? r->in_fd : -1, .events = POLLOUT };
		p[5] = (struct pollfd){ .fd = oc->exited ? -1 : r->pidfd, .events = POLLIN };
		p[6] = (struct pollfd){ .fd = c->retiring ? -1 : c->ctx->master_fd, .events = POLLIN };
		/* Wake at least once a second for the heartbeat. */
		next = now + 1000;
		if (term_at < next)
			next = term_at;
		if (kill_at < next)
			next = kill_at;
		if (linger_at < next)
			next = linger_at;
		if (send_at < next)
			next = send_at;
		t = next > now && !conn_buffered(c) ? (int)(next - now) : 0;
		if (poll(p, 7, t) < 0 && errno != EINTR)
			break;

		if (p[1].revents && check_signals(c->ctx->sigfd) < 0) {
			end = END_TERM;
			break;
		}
		if (p[6].revents && session_master_pipe(c->ctx))
			c->retiring = 1;
		/* POLLHUP: both directions are shut, nobody reads the output. */
		if (p[0].revents & (POLLHUP | POLLERR))
			goto vanished;
		if (p[0].revents && out_pending(c) && conn_write(c) < 0)
			goto vanished;
		if (p[0].revents & (POLLIN | POLLOUT) || conn_buffered(c)) {
			if (conn_read(c) < 0)
				goto vanished;
			/* A framed client never half-closes while its command
			 * runs (it sends STDIN_EOF instead): FIN means it is gone.
			 * A line-mode client may (nc -N); then only a failed
			 * write tells that it left. */
			if (c->eof && !c->raw)
				goto vanished;
		}
		if (p[2].revents)
			pump_output(c, &r->out_fd, &r->out_big, PROTO_STDOUT, cmd->output_limit, oc);
		if (p[3].revents)
			pump_output(c, &r->err_fd, &r->err_big, PROTO_STDERR, cmd->output_limit, oc);
		if (p[5].revents & POLLIN && runner_peek(r, &oc->status)) {
			oc->exited = 1;
			linger_at = now_ms() + c->cfg->linger_ms;
		}
		/* Output goes out at once when there is a lot of it, else within
		 * SEND_HOLD_MS: a short command's output, its end and the final
		 * status then leave in one write instead of three. */
		if (!out_pending(c)) {
			send_at = UINT64_MAX;
		} else if (send_at == UINT64_MAX) {
			send_at = now_ms() + SEND_HOLD_MS;
		}
		if (c->olen - c->ooff >= SEND_NOW_BYTES || c->splice_left)
			send_at = 0;
		if (out_pending(c) && now_ms() >= send_at && conn_write(c) < 0)
			goto vanished;
	}
	/* The loop can end with a splice under way (the runtime limit, the
	 * output limit on stderr, SIGTERM): its pipe is closed below, so the
	 * payload goes out now, or the connection ends without a final frame
	 * rather than with a broken one. */
	if (c->splice_left && splice_drain(c) < 0)
		goto vanished;
	goto done;

vanished:
	snprintf(oc->why, sizeof(oc->why), "client vanished");
	end = END_CLOSE;
	splice_abandon(c);
done:
	/* What is left of a frame being spliced is not a frame: drop it. */
	c->in_discard += c->in_splice - c->in_relay;
	c->in_splice = 0;
	if (c->in_relay) {
		relay_close(RELAY_IN);
		c->in_relay = 0;
	}
	c->rmax = 0;
	if (!oc->exited && runner_peek(r, &oc->status))
		oc->exited = 1;
	if (!oc->exited) {
		/* Killed below; wait for the status to report it. */
		runner_signal(r, SIGKILL);
		while (waitid(P_PID, (id_t)r->pid, &(siginfo_t){ 0 }, WEXITED | WNOWAIT) < 0 &&
		       errno == EINTR)
			;
		oc->exited = runner_peek(r, &oc->status);
	}
	runner_finish(r);
	return end;
}

static void describe_exit(const struct outcome *oc, struct proto_exit *e)
{
	e->signaled = WIFSIGNALED(oc->status);
	e->value = e->signaled ? WTERMSIG(oc->status) : WEXITSTATUS(oc->status);
	e->core = e->signaled && WCOREDUMP(oc->status);
	e->duration_us = (now_ms() - oc->started_ms) * 1000;
}

/* One request, framed or line mode: decide, run, report. */
static enum end run_request(struct conn *c, int argc, char *const argv[], int envc,
			    char *const envp[], uint32_t timeout_ms, int with_stdin)
{
	struct outcome oc = { .started_ms = now_ms() };
	struct policy_exec ex;
	struct runner r;
	enum policy_verdict v;
	enum end end;
	uint64_t limit;
	char err[256];

	v = policy_check(c->cfg, c->peer, c->identity, argc, argv, envc, envp, &ex, oc.why,
			 sizeof(oc.why));
	if (v != POLICY_ALLOW) {
		oc.error = v == POLICY_UNKNOWN ? PROTO_ERR_UNKNOWN_COMMAND
			 : v == POLICY_DENIED ? PROTO_ERR_NOT_ALLOWED : PROTO_ERR_BAD_REQUEST;
		audit(c, argv, argc, "deny", &oc);
		queue_error(c, oc.error, oc.why);
		return flush(c);
	}

	snprintf(c->ctx->slot->command, sizeof(c->ctx->slot->command), "%s", ex.cmd->name);
	struct runner_opts ro = {
		.remote_addr = c->host, .remote_port = c->port,
		.client_env = envp, .nclient_env = envc,
		.with_stdin = with_stdin && ex.cmd->stdin_ok,
		.merge_stderr = c->raw,
	};
	if (runner_start(&ex, &ro, &r, err, sizeof(err)) < 0) {
		oc.error = PROTO_ERR_SPAWN_FAILED;
		snprintf(oc.why, sizeof(oc.why), "%s", err);
		audit(c, argv, argc, "allow", &oc);
		queue_error(c, oc.error, err);
		return flush(c);
	}
	oc.started_ms = r.started_ms;
	/* Published so that the master can kill the group if this worker
	 * dies first (a command runs in its own session and would survive). */
	c->ctx->slot->cmd_pgid = r.pid;
	/* The client may ask for a shorter limit, never a longer one. */
	limit = ex.cmd->timeout_ms;
	if (timeout_ms && (limit == 0 || timeout_ms < limit))
		limit = timeout_ms;
	end = relay(c, &ex, &r, limit, &oc);
	c->ctx->slot->cmd_pgid = 0;
	audit(c, argv, argc, "allow", &oc);
	if (end != END_OK && end != END_CLOSE)
		return end;
	if (end == END_CLOSE && strcmp(oc.why, "client vanished") == 0)
		return END_CLOSE;

	obuf_compact(c);
	if (oc.error) {
		queue_error(c, oc.error, oc.why);
	} else if (!c->raw) {
		struct proto_exit e;
		long n;
		describe_exit(&oc, &e);
		n = proto_encode_exit(obuf + c->olen, OBUF_CAP - c->olen, &e);
		if (n > 0)
			c->olen += (size_t)n;
	}
	if (flush(c) != END_OK)
		return END_CLOSE;
	return end;
}

/* Framed mode: wait for one whole frame. 1 with *f, or an end. */
static int next_frame(struct conn *c, uint64_t deadline, int timeout_code, size_t max,
		      struct proto_frame *f, long *used)
{
	for (;;) {
		long n = proto_frame_parse(RBUF(c), c->rlen, max, f);
		int w;

		if (n > 0) {
			*used = n;
			return 1;
		}
		if (n < 0) {
			queue_error(c, n == -EMSGSIZE ? PROTO_ERR_TOO_LARGE : PROTO_ERR_BAD_REQUEST,
				    n == -EMSGSIZE ? "frame larger than the limit" : "malformed frame");
			log_notice("closing %s:%u: %s", c->host, c->port,
				   n == -EMSGSIZE ? "frame too large" : "malformed frame");
			flush(c);
			return -END_CLOSE;
		}
		if (c->eof)
			return -END_CLOSE;
		if (c->retiring && c->rlen == 0)
			return -END_CLOSE; /* between requests: leave now */
		w = conn_wait(c, 1, deadline);
		if (w == -2)
			return -END_TERM;
		if (w < 0)
			return -END_CLOSE;
		if (w == 0) {
			queue_error(c, timeout_code, timeout_code == PROTO_ERR_HANDSHAKE_TIMEOUT
				    ? "no request before handshake_timeout"
				    : "nothing received for idle_timeout");
			log_notice("closing %s:%u: %s", c->host, c->port,
				   proto_error_name(timeout_code));
			flush(c);
			return -END_CLOSE;
		}
		if (conn_read(c) < 0)
			return -END_CLOSE;
	}
}

/* Connections set aside (session_sweep): our side shut, closed when the
 * client's FIN is in, or at until. */
static struct aside {
	int fd;
	uint64_t until;
} aside[ASIDE_MAX];
static int naside;

/* The last request of c is answered. It is set aside when nothing of it is
 * left to read (in the socket buffer or inside TLS), there is room, and no
 * other connection waits on the worker's listeners: the worker is then back in
 * accept before this client's next connection arrives (with one client
 * looping over fresh connections, waiting for its FIN here let the next
 * connection wake another worker on the other CPU, every time). When
 * connections wait, the client closes first, as on any connection: on
 * loopback under load that measured faster, the TIME_WAIT then staying
 * with the client. */
static int may_set_aside(const struct conn *c)
{
	struct pollfd p[LISTEN_MAX];
	nfds_t n = 0;

	if (c->rlen || naside >= ASIDE_MAX || !c->ctx->listeners ||
	    (c->tls && tls_pending(c->tls) > 0))
		return 0;
	for (int i = 0; i < c->ctx->nlisteners && n < LISTEN_MAX; i++)
		if (c->ctx->listeners[i].fd >= 0)
			p[n++] = (struct pollfd){ .fd = c->ctx->listeners[i].fd, .events = POLLIN };
	return poll(p, n, 0) == 0;
}

int session_sweep(int all)
{
	uint64_t now = now_ms();
	int next = -1;

	for (int i = 0; i < naside;) {
		struct aside *a = &aside[i];
		char buf[4096];
		ssize_t n = -1;

		/* Late input (a SIGNAL that crossed EXIT) is dropped: a socket
		 * closed with unread bytes would send a reset. Bounded reads:
		 * a client that keeps sending is closed at until. */
		for (int k = 0; k < 16; k++) {
			n = recv(a->fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (n <= 0)
				break;
		}
		if (!all && now < a->until &&
		    (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)))) {
			int left = (int)(a->until - now);
			if (next < 0 || left < next)
				next = left;
			i++;
			continue;
		}
		close(a->fd);
		*a = aside[--naside];
	}
	return next;
}

static enum end framed(struct conn *c, uint64_t handshake_deadline)
{
	struct proto_hello hello, ok = { .software = "tcpexecd/" TCPEXECD_VERSION,
					 .software_len = sizeof("tcpexecd/" TCPEXECD_VERSION) - 1,
					 .auth_method = -1 };
	struct proto_request req;
	struct proto_frame f;
	long used, n;
	int r, first = 1, last = 0;

	/* A HELLO is small: refuse a larger one from its header, before a
	 * client without a handshake can make us buffer max_frame bytes. */
	r = next_frame(c, handshake_deadline, PROTO_ERR_HANDSHAKE_TIMEOUT, PROTO_MAX_HELLO, &f,
		       &used);
	if (r < 0)
		return (enum end)-r;
	r = proto_decode_hello(&f, &hello);
	if (r < 0 || proto_version_choose(hello.version) < 0) {
		queue_error(c, r == -EPROTONOSUPPORT || r == 0 ? PROTO_ERR_VERSION
							      : PROTO_ERR_BAD_REQUEST,
			    r == 0 || r == -EPROTONOSUPPORT ? "unsupported protocol version or field"
							    : "malformed HELLO");
		log_notice("closing %s:%u: bad HELLO", c->host, c->port);
		flush(c);
		return END_CLOSE;
	}
	if (hello.auth_method >= 0) {
		/* No authentication method exists yet: serving a client that
		 * asked for one would let it believe it was authenticated. */
		queue_error(c, PROTO_ERR_AUTH_FAILED, "no authentication method is available");
		log_notice("closing %s:%u: it asked for authentication method %d", c->host, c->port,
			   hello.auth_method);
		flush(c);
		return END_CLOSE;
	}
	c->out_max = hello.max_payload ? hello.max_payload : PROTO_DEFAULT_MAX_PAYLOAD;
	rbuf_consume(c, (size_t)used);
	ok.version = (uint8_t)proto_version_choose(hello.version);
	ok.max_payload = c->cfg->max_frame;
	n = proto_encode_hello(obuf + c->olen, OBUF_CAP - c->olen, PROTO_HELLO_OK, &ok);
	if (n > 0)
		c->olen += (size_t)n;
	/* A client may pipeline HELLO and REQUEST (one round trip serves
	 * both), or wait for HELLO_OK. When the request is already here,
	 * HELLO_OK leaves with the first reply; otherwise at once. */
	{
		struct proto_frame next;
		if (!(proto_frame_parse(RBUF(c), c->rlen, c->cfg->max_frame, &next) > 0 &&
		      next.type == PROTO_REQUEST) && conn_write(c) < 0)
			return END_CLOSE;
	}

	for (;;) {
		uint64_t deadline = first ? handshake_deadline : now_ms() + c->cfg->idle_timeout_ms;
		enum end end;

		if (c->retiring && c->rlen == 0)
			return END_CLOSE;
		r = next_frame(c, deadline, first ? PROTO_ERR_HANDSHAKE_TIMEOUT
						  : PROTO_ERR_IDLE_TIMEOUT, c->cfg->max_frame, &f, &used);
		if (r < 0)
			return (enum end)-r;
		if (f.type == PROTO_STDIN || f.type == PROTO_STDIN_EOF || f.type == PROTO_SIGNAL) {
			/* Late input for a command that already ended. */
			rbuf_consume(c, (size_t)used);
			continue;
		}
		if (f.type != PROTO_REQUEST) {
			queue_error(c, PROTO_ERR_BAD_REQUEST, "expected a REQUEST frame");
			flush(c);
			return END_CLOSE;
		}
		if (last) {
			queue_error(c, PROTO_ERR_BAD_REQUEST, "a REQUEST after the LAST one");
			log_notice("closing %s:%u: a REQUEST after the LAST one", c->host, c->port);
			flush(c);
			return END_CLOSE;
		}
		r = proto_decode_request(&f, &req, strbuf, sizeof(strbuf));
		if (r < 0) {
			queue_error(c, r == -E2BIG ? PROTO_ERR_TOO_LARGE : PROTO_ERR_BAD_REQUEST,
				    r == -E2BIG ? "too many arguments or variables" : "malformed REQUEST");
			log_notice("closing %s:%u: malformed REQUEST", c->host, c->port);
			flush(c);
			return END_CLOSE;
		}
		/* The strings were copied to strbuf: the frame can go. */
		rbuf_consume(c, (size_t)used);
		first = 0;
		end = run_request(c, req.argc, req.argv, req.envc, req.envp, req.timeout_ms,
				  !(req.flags & PROTO_RF_NO_STDIN));
		c->ctx->slot->command[0] = '\0';
		if (end != END_OK)
			return end;
		if (req.flags & PROTO_RF_LAST) {
			/* TLS ends with our close_notify before the FIN. It is a
			 * few bytes into an emptied send buffer; if even they do
			 * not fit, the session is over anyway: close. */
			if (may_set_aside(c))
				return c->tls && tls_close_notify(c->tls) < 0 ? END_CLOSE : END_ASIDE;
			last = 1;
		}
	}
}

static enum end line_mode(struct conn *c, uint64_t deadline)
{
	char *argv[LINE_MAX_WORDS + 1];

	c->raw = 1;
	/* Lines have their own limit, whatever max_frame says. */
	c->rcap = LINE_MAX_LEN;
	for (;;) {
		uint8_t *nl = memchr(RBUF(c), '\n', c->rlen);
		size_t len;
		const char *why = NULL;
		int argc, w;

		if (c->retiring && c->rlen == 0)
			return END_CLOSE;

		if (!nl && c->rlen < LINE_MAX_LEN && !c->eof) {
			/* A partial line followed by a quiet period counts as a
			 * line: the tutorial client writes a command without a
			 * newline and waits for the answer. */
			uint64_t until = c->rlen ? now_ms() + LINE_QUIET_MS : deadline;
			w = conn_wait(c, 1, until);
			if (w == -2)
				return END_TERM;
			if (w < 0)
				return END_CLOSE;
			if (w == 1) {
				if (conn_read(c) < 0)
					return END_CLOSE;
				continue;
			}
			if (c->rlen == 0) {
				log_notice("closing %s:%u: line mode idle", c->host, c->port);
				return END_CLOSE;
			}
		}
		if ((!nl && c->rlen >= LINE_MAX_LEN) || (nl && nl - RBUF(c) >= (long)LINE_MAX_LEN)) {
			queue_error(c, PROTO_ERR_TOO_LARGE, "line longer than 65536 bytes");
			flush(c);
			return END_CLOSE;
		}
		if (c->rlen == 0)
			return END_CLOSE; /* EOF after the last line */
		len = nl ? (size_t)(nl - RBUF(c)) : c->rlen;
		if (len && RBUF(c)[len - 1] == '\r')
			len--;
		memcpy(strbuf, RBUF(c), len);
		strbuf[len] = '\0';
		rbuf_consume(c, nl ? (size_t)(nl - RBUF(c)) + 1 : c->rlen);
		if (memchr(strbuf, '\0', len)) {
			queue_error(c, PROTO_ERR_BAD_REQUEST, "NUL byte in the line");
		} else if ((argc = words_split(strbuf, argv, LINE_MAX_WORDS, &why)) < 0) {
			queue_error(c, PROTO_ERR_BAD_REQUEST, why);
		} else if (argc > 0) {
			enum end end = run_request(c, argc, argv, 0, NULL, 0, 0);
			c->ctx->slot->command[0] = '\0';
			if (end != END_OK)
				return end;
		}
		if (flush(c) != END_OK)
			return END_CLOSE;
		if (c->retiring)
			return END_CLOSE;
		deadline = now_ms() + c->cfg->idle_timeout_ms;
	}
}

static int line_mode_allowed(const struct conn *c)
{
	switch (c->cfg->line_mode) {
	case LINE_MODE_ALL:
		return 1;
	case LINE_MODE_LOOPBACK:
		return addr_is_local(c->peer);
	default:
		return 0;
	}
}

/* Return the pages beyond KEEP_BYTES that this connection touched. The
 * buffers are private anonymous memory: they read as zeros next time. */
static void release_buffers(void)
{
	if (rbuf_hw > KEEP_BYTES) {
		size_t len = (rbuf_hw - KEEP_BYTES + PAGE - 1) / PAGE * PAGE;
		madvise(rbuf + KEEP_BYTES, len, MADV_DONTNEED);
		madvise(strbuf + KEEP_BYTES, len, MADV_DONTNEED);
	}
	if (obuf_hw > KEEP_BYTES)
		madvise(obuf + KEEP_BYTES, (obuf_hw - KEEP_BYTES + PAGE - 1) / PAGE * PAGE,
			MADV_DONTNEED);
	rbuf_hw = obuf_hw = 0;
}

/* Closing while the client still sends makes the kernel answer with a
 * reset, which destroys what we sent last (an ERROR frame, a TLS alert
 * about a refused certificate) before the client reads it. So: shut down
 * our side, then read and drop what comes, until EOF or LINGER_MS. */
static void lingering_close(struct conn *c)
{
	uint64_t until = now_ms() + LINGER_MS;
	char buf[4096];

	if (shutdown(c->fd, SHUT_WR) < 0)
		return;
	for (;;) {
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		uint64_t now = now_ms();
		ssize_t n;

		if (now >= until || poll(&p, 1, (int)(until - now)) <= 0)
			return;
		n = recv(c->fd, buf, sizeof(buf), 0);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			return;
	}
}

/* Run the TLS handshake within the handshake deadline. 0, or -1 (logged). */
static int tls_start(struct conn *c, uint64_t deadline)
{
	short events = POLLIN;
	int r;

	c->tls = tls_conn_new(c->ctx->tls, c->fd);
	if (!c->tls) {
		log_err("TLS: cannot create a connection");
		return -1;
	}
	while ((r = tls_handshake(c->tls, &events)) == -1) {
		struct pollfd p[2] = { { .fd = c->fd, .events = events },
				       { .fd = c->ctx->sigfd, .events = POLLIN } };
		uint64_t now = now_ms();

		c->ctx->slot->heartbeat_ms = now;
		if (now >= deadline) {
			log_notice("closing %s:%u: no TLS handshake before handshake_timeout",
				   c->host, c->port);
			return -1;
		}
		if (poll(p, 2, deadline - now > 1000 ? 1000 : (int)(deadline - now)) < 0 &&
		    errno != EINTR)
			return -1;
		if (p[1].revents && check_signals(c->ctx->sigfd) < 0)
			return -1;
	}
	if (r < 0) {
		log_event(LOG_NOTICE, MSGID_DENIED, NULL, "closing %s:%u: %s", c->host, c->port,
			  tls_conn_error(c->tls));
		return -1;
	}
	c->identity = tls_identity(c->tls);
	log_debug("%s:%u: TLS %s, identity \"%s\"", c->host, c->port,
		  tls_resumed(c->tls) ? "resumed" : "full handshake", c->identity);
	return 0;
}

/* A Unix-socket peer is who the kernel says it is. */
static void peercred_identity(struct conn *c, char *buf, size_t len)
{
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	struct passwd *pw;

	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0)
		return;
	pw = getpwuid(cred.uid);
	if (pw)
		snprintf(buf, len, "unix:%s", pw->pw_name);
	else
		snprintf(buf, len, "unix:%u", (unsigned)cred.uid);
	c->identity = buf;
}

int session_master_pipe(const struct session_ctx *ctx)
{
	char b;
	ssize_t n = read(ctx->master_fd, &b, 1);

	if (n > 0) {
		ctx->slot->leaving = 1;
		return 0;
	}
	return n == 0 || (errno != EAGAIN && errno != EINTR);
}

int session_serve(const struct session_ctx *ctx, int fd, const struct sockaddr *peer,
		  socklen_t peerlen, const struct listen_opts *lo)
{
	struct conn c = { .ctx = ctx, .cfg = ctx->cfg, .fd = fd, .peer = peer, .identity = "" };
	uint64_t deadline = now_ms() + ctx->cfg->handshake_timeout_ms;
	enum end end = END_CLOSE;
	char unix_id[96];
	uint8_t first;
	int w;

	c.rcap = ctx->cfg->max_frame + PROTO_HEADER_LEN;
	addr_host(peer, peerlen, c.host, sizeof(c.host));
	c.port = addr_port(peer);
	if (peer->sa_family == AF_UNIX)
		peercred_identity(&c, unix_id, sizeof(unix_id));

	/* The first byte, peeked on a TLS listener (OpenSSL must read it
	 * again): 0x16 opens a TLS handshake, 0x01 a framed HELLO, anything
	 * else is a line-mode client. A plaintext listener reads it below
	 * with the rest. */
	for (;;) {
		ssize_t n;

		if (!lo || !lo->tls)
			break;
		n = recv(fd, &first, 1, MSG_PEEK);
		if (n == 1)
			break;
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			goto out;
		w = conn_wait(&c, 1, deadline);
		if (w == -2) {
			end = END_TERM;
			goto out;
		}
		if (w <= 0)
			goto out;
	}
	if (lo && lo->tls) {
		if (first != 0x16) {
			c.raw = !proto_is_framed(first);
			queue_error(&c, PROTO_ERR_AUTH_FAILED, "this address requires TLS");
			log_notice("closing %s:%u: plaintext on a TLS listener", c.host, c.port);
			flush(&c);
			goto out;
		}
		if (!ctx->tls || tls_start(&c, deadline) < 0)
			goto out;
		ctx->slot->handshaking = 0;
	}

	while (c.rlen == 0 && !c.eof) {
		if (conn_read(&c) < 0)
			goto out;
		if (c.rlen || c.eof)
			break;
		w = conn_wait(&c, 1, deadline);
		if (w == -2) {
			end = END_TERM;
			goto out;
		}
		if (w <= 0)
			goto out;
	}
	if (c.rlen == 0)
		goto out;
	if (!c.tls && RBUF(&c)[0] == 0x16) {
		log_notice("closing %s:%u: TLS on a plaintext listener", c.host, c.port);
		goto out;
	}
	ctx->slot->handshaking = 0;
	if (proto_is_framed(RBUF(&c)[0])) {
		end = framed(&c, deadline);
	} else if (line_mode_allowed(&c)) {
		end = line_mode(&c, deadline);
	} else {
		c.raw = 1;
		queue_error(&c, PROTO_ERR_BAD_REQUEST, "line mode is not enabled for this address");
		log_notice("closing %s:%u: line mode is not enabled for it", c.host, c.port);
		flush(&c);
	}
out:
	tls_conn_free(c.tls);
	if (end == END_ASIDE && shutdown(fd, SHUT_WR) == 0) {
		aside[naside++] = (struct aside){ .fd = fd, .until = now_ms() + LINGER_MS };
	} else {
		if (end != END_TERM && end != END_ASIDE && !c.eof)
			lingering_close(&c);
		close(fd);
	}
	release_buffers();
	return end == END_TERM ? -1 : 0;
}
