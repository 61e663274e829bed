// SPDX-License-Identifier: MIT
/*
 * loadgen: the benchmarks' load generator. C client threads, one blocking-
 * style (poll-driven) socket each, run complete requests against one
 * HOST:PORT in one of several wire modes (tcpexecd framed, raw inetd-style,
 * streaming through cat, Zabbix agent, NRPE v2) and print one
 * machine-readable result line. Every run is bounded in count and in time.
 * With --tls the framed mode runs over TLS 1.3 (a pre-shared key or a
 * verified server certificate), optionally resuming session tickets.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "addr.h"
#include "common.h"
#include "hist.h"
#include "protocol.h"

#define EXIT_USAGE 2
#define EXIT_SETUP 3
#define MAX_CONC 1024
#define MAX_REQUESTS 100000000ull
#define MAX_DURATION_S 3600.0
#define MAX_ARGS 64
#define MAX_FAIL_MSGS 8
/* Streaming: data is a pattern of a prime length, so that a lost, repeated
 * or reordered block can never line up with the expected bytes. */
#define PATLEN 65521u
/* One STDIN frame, or one raw send, while streaming: as the tcpexec client. */
#define CHUNK (256u << 10)
/* What we accept from the server in one frame: streaming announces 1 MiB,
 * as the tcpexec client does; the request modes announce nothing, which
 * means 64 KiB. */
#define STREAM_PAYLOAD (1u << 20)
#define RBUF (STREAM_PAYLOAD + PROTO_HEADER_LEN)
#define NRPE_PKT 1036 /* sizeof(v2_packet) in nrpe's common.h, with padding */
#define NRPE_BUF 1024
#define PSK_ID_MAX 128          /* as tcpexecd's tls_psk_file */
#define PSK_KEY_MAX 64

enum mode { M_FRAMED, M_RAW, M_STREAM, M_RAWSTREAM, M_ZABBIX, M_NRPE };
static const char *const mode_name[] = {
	"framed", "raw", "stream", "rawstream", "zabbix", "nrpe",
};

/* Why a request failed; each is counted apart and printed. */
enum fail { F_CONNECT, F_TIMEOUT, F_OUTPUT, F_ERROR, F_IO, F_TLS, F_NFAIL };
static const char *const fail_name[] = {
	"connect", "timeout", "output", "error", "io", "tls",
};

static struct {
	enum mode mode;
	const char *system;
	unsigned conc;
	uint64_t requests;
	double duration_s;
	int reuse;
	int no_shutdown;
	const char *expect;
	size_t expect_len;
	const char *payload;
	size_t payload_len;
	uint64_t bytes;
	const char *key;
	int timeout_ms;
	const char *argv[MAX_ARGS + 1];
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char host[256];         /* the numeric host, checked in the certificate */
	int tls;
	const char *psk_file;   /* --tls with a pre-shared key ... */
	const char *ca;         /* ... or with the server's certificate */
	int resume;
} opt = {
	.mode = M_FRAMED, .system = "unnamed", .conc = 1, .requests = 1000,
	.duration_s = 600, .timeout_ms = 5000, .bytes = 1ull << 30,
};

/* Shared between the threads: the next request to take, and the stop time. */
static atomic_uint_fast64_t next_req;
static atomic_int fail_msgs;
static uint64_t stop_at_us;
static pthread_barrier_t start_line;
static uint8_t pattern[PATLEN + CHUNK]; /* pattern[i] == pattern[i % PATLEN] */

/* --tls: one context for all the threads (OpenSSL shares it safely), and
 * the pre-shared key read from --psk-file. */
static SSL_CTX *tls_ctx;
static struct {
	char identity[PSK_ID_MAX + 1];
	unsigned char key[PSK_KEY_MAX];
	unsigned len;
} psk;

struct client {
	pthread_t tid;
	unsigned id;
	struct hist lat;
	uint64_t ok;
	uint64_t fail[F_NFAIL];
	uint64_t bytes;         /* output bytes of successful requests */
	uint64_t soff;          /* streaming: bytes of this request verified */
	int fd;                 /* --reuse: the open connection, or -1 */
	size_t rlen;            /* bytes in rbuf */
	uint8_t rbuf[RBUF];
	uint8_t wbuf[PROTO_MAX_HELLO + 65536];
	size_t hello_len;       /* wbuf = HELLO, then REQUEST + STDIN_EOF */
	size_t req_len;
	char out[4096];         /* the output of the current request */
	size_t outlen;
	SSL *ssl;               /* --tls: the open connection's, or NULL */
	SSL_SESSION *ticket;    /* --resume: the newest ticket received, ours */
	uint64_t handshakes;    /* TLS handshakes completed */
	uint64_t resumed;       /* ... of which resumed the ticket offered */
	uint64_t tickets;       /* --resume: session tickets received */
};

static _Noreturn void die(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static _Noreturn void die(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("loadgen: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

/* The first few failures are shown on stderr so that a bad run says why;
 * the rest are only counted. */
static int fail(struct client *c, enum fail why, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct client *c, enum fail why, const char *fmt, ...)
{
	va_list ap;

	c->fail[why]++;
	if (atomic_fetch_add(&fail_msgs, 1) < MAX_FAIL_MSGS) {
		char msg[512];
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		fprintf(stderr, "loadgen: %s: client %u: %s: %s\n", opt.system, c->id,
			fail_name[why], msg);
	}
	return -1;
}

/* ---- bounded socket I/O: every wait ends at the request's deadline ---- */

static int wait_fd(int fd, short events, uint64_t deadline)
{
	for (;;) {
		uint64_t now = hist_now_us();
		struct pollfd pf = { .fd = fd, .events = events };
		int n;

		if (now >= deadline)
			return -ETIMEDOUT;
		n = poll(&pf, 1, (int)((deadline - now + 999) / 1000));
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

/* A non-blocking connected socket, or a negative errno. */
static int net_connect(uint64_t deadline)
{
	int fd, one = 1, err = 0;
	socklen_t len = sizeof(err);

	fd = socket(opt.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* As the tcpexec client does: requests are small writes that must not
	 * wait for a delayed ACK. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* And in tcpexecd's protocol, as tcpexec does, reno on loopback
	 * (src/addr.h, ADDR_LOOPBACK_CC). The peers' clients keep the
	 * system's congestion control, as their own clients would. */
	if ((opt.mode == M_FRAMED || opt.mode == M_STREAM) &&
	    addr_is_local((const struct sockaddr *)&opt.addr))
		setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, ADDR_LOOPBACK_CC,
			   sizeof(ADDR_LOOPBACK_CC) - 1);
	if (connect(fd, (struct sockaddr *)&opt.addr, opt.addrlen) == 0)
		return fd;
	if (errno != EINPROGRESS) {
		err = -errno;
		goto fail;
	}
	err = wait_fd(fd, POLLOUT, deadline);
	if (err < 0)
		goto fail;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err == 0)
		return fd;
	err = -err;
fail:
	close(fd);
	return err;
}

static int net_write(int fd, const void *buf, size_t len, uint64_t deadline)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			int rc = wait_fd(fd, POLLOUT, deadline);
			if (rc < 0)
				return rc;
			continue;
		}
		return -errno;
	}
	return 0;
}

/* Bytes read (> 0), 0 at EOF, or a negative errno (-ETIMEDOUT). */
static ssize_t net_read(int fd, void *buf, size_t cap, uint64_t deadline)
{
	for (;;) {
		ssize_t n = recv(fd, buf, cap, 0);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			int rc = wait_fd(fd, POLLIN, deadline);
			if (rc < 0)
				return rc;
			continue;
		}
		return -errno;
	}
}

static const char *tls_reason(const struct client *c);

static int io_fail(struct client *c, int err, const char *what)
{
	if (err == -ETIMEDOUT)
		return fail(c, F_TIMEOUT, "%s: no answer within %d ms", what, opt.timeout_ms);
	if (err == -EPROTO && c->ssl)
		return fail(c, F_TLS, "%s: %s", what, tls_reason(c));
	return fail(c, F_IO, "%s: %s", what, strerror(-err));
}

static int connect_or_fail(struct client *c, uint64_t deadline)
{
	int fd = net_connect(deadline);

	if (fd == -ETIMEDOUT)
		return fail(c, F_TIMEOUT, "connect: no answer within %d ms", opt.timeout_ms);
	if (fd < 0)
		return fail(c, F_CONNECT, "connect: %s", strerror(-fd));
	return fd;
}

/* The output was not --expect: say how, for the first few failures. */
static int output_mismatch(struct client *c, int too_long)
{
	if (too_long)
		return fail(c, F_OUTPUT, "more output than the %zu bytes expected", opt.expect_len);
	return fail(c, F_OUTPUT, "output \"%.*s\" (%zu bytes), expected %zu bytes",
		    (int)(c->outlen > 100 ? 100 : c->outlen), c->out, c->outlen, opt.expect_len);
}

/* ---- TLS (framed mode only): non-blocking, every wait bounded as above ---- */

/* Why the last TLS call failed, for the failure message: the server's
 * certificate if that was it, else OpenSSL's reason. */
static const char *tls_reason(const struct client *c)
{
	unsigned long e = ERR_peek_last_error();
	long v = c->ssl ? SSL_get_verify_result(c->ssl) : X509_V_OK;
	const char *r;

	if (v != X509_V_OK)
		return X509_verify_cert_error_string(v);
	r = e ? ERR_reason_error_string(e) : NULL;
	return r ? r : "connection closed";
}

/* After an SSL call returned r <= 0: wait for what it needs. 1 to call it
 * again, 0 at a clean EOF, or a negative errno (-EPROTO: a TLS error, see
 * tls_reason()). */
static int tls_wait(struct client *c, int fd, int r, uint64_t deadline)
{
	int rc;

	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		rc = wait_fd(fd, POLLIN, deadline);
		return rc < 0 ? rc : 1;
	case SSL_ERROR_WANT_WRITE:
		rc = wait_fd(fd, POLLOUT, deadline);
		return rc < 0 ? rc : 1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		if (errno == EINTR || errno == EAGAIN)
			return 1;
		return errno ? -errno : -EPROTO;
	default:
		return -EPROTO;
	}
}

/* --resume: TLS 1.3 tickets arrive after the handshake, while the answer
 * is read. Keep the newest; the reference OpenSSL hands over is ours.
 * OpenSSL uses a TLS 1.3 ticket once (RFC 8446, C.4): after it resumed a
 * connection, it is offered again only if the server sent a new one. */
static int tls_new_ticket(SSL *ssl, SSL_SESSION *sess)
{
	struct client *c = SSL_get_app_data(ssl);

	c->tickets++;
	SSL_SESSION_free(c->ticket);
	c->ticket = sess;
	return 1;
}

/* The handshake on a connected socket; c->ssl is set even on failure (the
 * caller frees it with the socket). 0, or -1 (counted). */
static int tls_start(struct client *c, int fd, uint64_t deadline)
{
	SSL_SESSION *offered = NULL;

	ERR_clear_error();
	c->ssl = SSL_new(tls_ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1)
		return fail(c, F_TLS, "setup: %s", tls_reason(c));
	SSL_set_app_data(c->ssl, c);
	if (opt.ca && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), opt.host) != 1)
		return fail(c, F_TLS, "setup: %s is not an IP address", opt.host);
	if (opt.resume && c->ticket) {
		if (SSL_set_session(c->ssl, c->ticket) != 1)
			return fail(c, F_TLS, "setup: cannot offer the ticket: %s", tls_reason(c));
		offered = c->ticket;
	}
	for (;;) {
		int r;

		ERR_clear_error();
		r = SSL_connect(c->ssl);
		if (r == 1)
			break;
		r = tls_wait(c, fd, r, deadline);
		if (r == 1)
			continue;
		if (r == -ETIMEDOUT)
			return fail(c, F_TIMEOUT, "TLS handshake: no answer within %d ms",
				    opt.timeout_ms);
		return fail(c, F_TLS, "handshake: %s",
			    r == -EPROTO || r == 0 ? tls_reason(c) : strerror(-r));
	}
	c->handshakes++;
	/* SSL_session_reused() is also true for an external PSK. When the
	 * server takes the ticket, the connection keeps the session we set;
	 * when it uses the key from --psk-file instead (or a certificate), or
	 * when OpenSSL did not offer the ticket because it was used already,
	 * the connection has another session. Only the first is a resumption. */
	if (offered && SSL_session_reused(c->ssl) && SSL_get0_session(c->ssl) == offered)
		c->resumed++;
	return 0;
}

/* Close a connection, TLS or not. Without close_notify, like the tcpexec
 * client; but OpenSSL marks the session of a connection freed unshut as
 * not resumable, so after a good request we say it was shut down. */
static void conn_close(struct client *c, int fd, int clean)
{
	if (c->ssl) {
		if (clean)
			SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	close(fd);
}

static int conn_write(struct client *c, int fd, const void *buf, size_t len, uint64_t deadline)
{
	const uint8_t *p = buf;

	if (!c->ssl)
		return net_write(fd, buf, len, deadline);
	while (len > 0) {
		int r;

		ERR_clear_error();
		r = SSL_write(c->ssl, p, len > INT_MAX ? INT_MAX : (int)len);
		if (r > 0) {
			p += r;
			len -= (size_t)r;
			continue;
		}
		r = tls_wait(c, fd, r, deadline);
		if (r == 0)
			return -EPIPE;
		if (r < 0)
			return r;
	}
	return 0;
}

/* As net_read(), through TLS when there is a session. */
static ssize_t conn_read(struct client *c, int fd, void *buf, size_t cap, uint64_t deadline)
{
	if (!c->ssl)
		return net_read(fd, buf, cap, deadline);
	for (;;) {
		int r;

		ERR_clear_error();
		r = SSL_read(c->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
		if (r > 0)
			return r;
		r = tls_wait(c, fd, r, deadline);
		if (r <= 0)
			return r;
	}
}

/* ---- tcpexecd framed mode ---- */

/* wbuf holds HELLO, then REQUEST + STDIN_EOF: a fresh connection sends all
 * three in one write, a reused one only the last two. */
static void framed_build(struct client *c, const char *const *argv)
{
	struct proto_hello h = { .version = PROTO_VERSION, .auth_method = -1,
				 .software = "loadgen", .software_len = 7,
				 .max_payload = opt.mode == M_STREAM ? STREAM_PAYLOAD : 0 };
	long n;
	size_t off;

	n = proto_encode_hello(c->wbuf, sizeof(c->wbuf), PROTO_HELLO, &h);
	if (n < 0)
		die(EXIT_SETUP, "cannot encode HELLO: %s", strerror((int)-n));
	off = (size_t)n;
	c->hello_len = off;
	/* One request per connection says so, as tcpexec does: the server
	 * may then close first. */
	n = proto_encode_request(c->wbuf + off, sizeof(c->wbuf) - off, argv, NULL, 0,
				 opt.reuse ? 0 : PROTO_RF_LAST);
	if (n < 0)
		die(EXIT_SETUP, "cannot encode REQUEST: %s", strerror((int)-n));
	off += (size_t)n;
	/* Streaming sends its STDIN frames between the REQUEST and the EOF. */
	if (opt.mode != M_STREAM) {
		n = proto_encode_eof(c->wbuf + off, sizeof(c->wbuf) - off);
		if (n < 0)
			die(EXIT_SETUP, "cannot encode STDIN_EOF: %s", strerror((int)-n));
		off += (size_t)n;
	}
	c->req_len = off - c->hello_len;
}

/* Verify a piece of output: for the request modes against --expect, for
 * streaming against the pattern at the stream's offset. */
static int output_add(struct client *c, const uint8_t *p, size_t n)
{
	if (opt.mode == M_STREAM || opt.mode == M_RAWSTREAM) {
		while (n > 0) {
			size_t k = n < CHUNK ? n : CHUNK;
			if (memcmp(p, pattern + c->soff % PATLEN, k) != 0)
				return -1;
			c->soff += k;
			p += k;
			n -= k;
		}
		return 0;
	}
	if (c->outlen + n > opt.expect_len)
		return -1;
	memcpy(c->out + c->outlen, p, n);
	c->outlen += n;
	return 0;
}

/* Streaming: the STDIN frames still to write, one at a time, straight
 * from the pattern (header and body in one writev, no copy). */
struct sender {
	uint64_t left;          /* payload bytes not yet framed */
	uint64_t sent;          /* payload bytes fully written */
	uint8_t hdr[PROTO_HEADER_LEN];
	size_t hdr_off, body_len, body_off;
	int active;             /* a frame is being written */
	int eof;                /* ... and it is the STDIN_EOF */
	int done;               /* the STDIN_EOF went out */
};

/* Write what the socket takes now. -1 (counted) on a send error. */
static int sender_push(struct client *c, struct sender *s, int fd)
{
	while (!s->done) {
		struct iovec iov[2];
		ssize_t w;
		size_t k, h;

		if (!s->active) {
			s->body_len = s->left < CHUNK ? (size_t)s->left : CHUNK;
			s->eof = s->body_len == 0;
			proto_put_header(s->hdr, s->eof ? PROTO_STDIN_EOF : PROTO_STDIN,
					 (uint32_t)s->body_len);
			s->left -= s->body_len;
			s->hdr_off = s->body_off = 0;
			s->active = 1;
		}
		iov[0].iov_base = s->hdr + s->hdr_off;
		iov[0].iov_len = sizeof(s->hdr) - s->hdr_off;
		iov[1].iov_base = pattern + (s->sent + s->body_off) % PATLEN;
		iov[1].iov_len = s->body_len - s->body_off;
		w = writev(fd, iov, 2);
		if (w < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		if (w < 0)
			return fail(c, F_IO, "send: %s", strerror(errno));
		k = (size_t)w;
		h = sizeof(s->hdr) - s->hdr_off;
		if (k < h) {
			s->hdr_off += k;
			continue;
		}
		s->hdr_off = sizeof(s->hdr);
		s->body_off += k - h;
		if (s->body_off == s->body_len) {
			s->sent += s->body_len;
			s->active = 0;
			s->done = s->eof;
		}
	}
	return 0;
}

/* Read frames until EXIT (success if the command exited 0 with the
 * expected output) or ERROR. With a sender (streaming), the STDIN frames
 * are written in between, whenever the socket takes them: cat's output must
 * be read while its input is still being sent, or both directions fill up
 * and stop. */
static int framed_finish(struct client *c, int fd, uint64_t deadline, int first,
			 struct sender *s)
{
	int hello_seen = !first, bad_output = 0;
	uint64_t stall = (uint64_t)opt.timeout_ms * 1000;

	for (;;) {
		struct proto_frame f;
		long n;

		while ((n = proto_frame_parse(c->rbuf, c->rlen, opt.mode == M_STREAM ? STREAM_PAYLOAD
						    : PROTO_DEFAULT_MAX_PAYLOAD, &f)) > 0) {
			switch (f.type) {
			case PROTO_HELLO_OK: {
				struct proto_hello h;
				if (hello_seen || proto_decode_hello(&f, &h) < 0)
					return fail(c, F_ERROR, "bad HELLO_OK");
				hello_seen = 1;
				break;
			}
			case PROTO_STDOUT:
				if (output_add(c, f.payload, f.len) < 0)
					bad_output = 1;
				break;
			case PROTO_STDERR:
				break;
			case PROTO_EXIT: {
				struct proto_exit e;
				int rc = proto_decode_exit(&f, &e);
				memmove(c->rbuf, c->rbuf + n, c->rlen - (size_t)n);
				c->rlen -= (size_t)n;
				if (rc < 0 || !hello_seen)
					return fail(c, F_ERROR, "bad EXIT");
				if (e.signaled || e.value != 0)
					return fail(c, F_ERROR, "command %s %d",
						    e.signaled ? "killed by signal" : "exited", e.value);
				if (opt.mode == M_STREAM) {
					if (bad_output || c->soff != opt.bytes)
						return fail(c, F_OUTPUT, "%" PRIu64 " of %" PRIu64
							    " bytes came back intact", c->soff, opt.bytes);
				} else if (bad_output || c->outlen != opt.expect_len ||
					   memcmp(c->out, opt.expect, opt.expect_len) != 0) {
					return output_mismatch(c, bad_output);
				}
				return 0;
			}
			case PROTO_ERROR: {
				int code;
				const char *msg;
				size_t mlen;
				if (proto_decode_error(&f, &code, &msg, &mlen) < 0)
					return fail(c, F_ERROR, "bad ERROR frame");
				return fail(c, F_ERROR, "ERROR %d (%s): %.*s", code,
					    proto_error_name(code), (int)mlen, msg);
			}
			default:
				return fail(c, F_ERROR, "unexpected %s frame", proto_type_name(f.type));
			}
			memmove(c->rbuf, c->rbuf + n, c->rlen - (size_t)n);
			c->rlen -= (size_t)n;
		}
		if (n < 0)
			return fail(c, F_ERROR, "framing error: %s", strerror((int)-n));

		if (s && !s->done) {
			struct pollfd pf = { .fd = fd, .events = POLLIN | POLLOUT };
			uint64_t now = hist_now_us();
			int pr;

			if (now >= deadline)
				return fail(c, F_TIMEOUT, "no progress for %d ms", opt.timeout_ms);
			pr = poll(&pf, 1, (int)((deadline - now + 999) / 1000));
			if (pr < 0 && errno != EINTR)
				return fail(c, F_IO, "poll: %s", strerror(errno));
			if (pr <= 0)
				continue;
			if (pf.revents & POLLOUT) {
				uint64_t before = s->sent;
				if (sender_push(c, s, fd) < 0)
					return -1;
				if (s->sent != before)
					deadline = hist_now_us() + stall;
			}
			if (!(pf.revents & (POLLIN | POLLERR | POLLHUP)))
				continue;
		}
		{
			ssize_t r = conn_read(c, fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen,
					      deadline);
			if (r == 0)
				return fail(c, F_OUTPUT, "connection closed before EXIT");
			if (r < 0)
				return io_fail(c, (int)r, "read");
			c->rlen += (size_t)r;
			if (s)
				deadline = hist_now_us() + stall;
		}
	}
}

static int do_framed(struct client *c)
{
	uint64_t deadline = hist_now_us() + (uint64_t)opt.timeout_ms * 1000;
	struct sender snd = { .left = opt.bytes };
	int first = 0, fd = c->fd, rc;
	const uint8_t *w = c->wbuf + c->hello_len;
	size_t wlen = c->req_len;

	c->outlen = 0;
	c->soff = 0;
	if (fd < 0) {
		fd = connect_or_fail(c, deadline);
		if (fd < 0)
			return -1;
		if (opt.tls && tls_start(c, fd, deadline) < 0)
			goto drop;
		first = 1;
		c->rlen = 0;
		w = c->wbuf;
		wlen = c->hello_len + c->req_len;
	}
	rc = conn_write(c, fd, w, wlen, deadline);
	if (rc < 0) {
		io_fail(c, rc, "send");
		goto drop;
	}
	rc = framed_finish(c, fd, deadline, first, opt.mode == M_STREAM ? &snd : NULL);
	if (rc < 0)
		goto drop;
	if (opt.reuse)
		c->fd = fd;
	else
		conn_close(c, fd, 1);
	return 0;
drop:
	/* After a failure the stream may be out of step: never reuse it. */
	conn_close(c, fd, 0);
	c->fd = -1;
	return -1;
}

/* ---- raw mode: inetd-style servers that run the command per connection ---- */

static int read_to_eof(struct client *c, int fd, uint64_t deadline, int progress)
{
	int bad = 0;

	for (;;) {
		ssize_t r = net_read(fd, c->rbuf, sizeof(c->rbuf), deadline);
		if (r == 0)
			break;
		if (r < 0)
			return io_fail(c, (int)r, "read");
		if (output_add(c, c->rbuf, (size_t)r) < 0)
			bad = 1;
		if (progress)
			deadline = hist_now_us() + (uint64_t)opt.timeout_ms * 1000;
	}
	if (opt.mode == M_RAWSTREAM) {
		if (bad || c->soff != opt.bytes)
			return fail(c, F_OUTPUT, "%" PRIu64 " of %" PRIu64 " bytes came back intact",
				    c->soff, opt.bytes);
		return 0;
	}
	if (bad || c->outlen != opt.expect_len || memcmp(c->out, opt.expect, opt.expect_len))
		return output_mismatch(c, bad);
	return 0;
}

static int do_raw(struct client *c)
{
	uint64_t deadline = hist_now_us() + (uint64_t)opt.timeout_ms * 1000;
	int fd, rc;

	c->outlen = 0;
	fd = connect_or_fail(c, deadline);
	if (fd < 0)
		return -1;
	if (opt.payload_len) {
		rc = net_write(fd, opt.payload, opt.payload_len, deadline);
		if (rc < 0) {
			io_fail(c, rc, "send");
			goto out;
		}
	}
	/* inetd-style servers see EOF on the command's stdin; ncat --exec
	 * instead drops the connection at our FIN before relaying the output,
	 * so for it (--no-shutdown) we only wait for the server to close. */
	if (!opt.no_shutdown)
		shutdown(fd, SHUT_WR);
	rc = read_to_eof(c, fd, deadline, 0);
out:
	close(fd);
	return rc < 0 ? -1 : 0;
}

/* Raw streaming: write the pattern and read it back at the same time. */
static int do_rawstream(struct client *c)
{
	uint64_t deadline = hist_now_us() + (uint64_t)opt.timeout_ms * 1000;
	uint64_t sent = 0;
	int fd, rc = 0;

	c->soff = 0;
	fd = connect_or_fail(c, deadline);
	if (fd < 0)
		return -1;
	while (sent < opt.bytes) {
		struct pollfd pf = { .fd = fd, .events = POLLIN | POLLOUT };
		uint64_t now = hist_now_us();
		int pr;

		if (now >= deadline) {
			rc = fail(c, F_TIMEOUT, "no progress for %d ms", opt.timeout_ms);
			goto out;
		}
		pr = poll(&pf, 1, (int)((deadline - now + 999) / 1000));
		if (pr <= 0)
			continue;
		if (pf.revents & POLLOUT) {
			uint64_t left = opt.bytes - sent;
			size_t k = left < CHUNK ? (size_t)left : CHUNK;
			ssize_t w = send(fd, pattern + sent % PATLEN, k, MSG_NOSIGNAL);
			if (w < 0 && errno != EAGAIN && errno != EINTR) {
				rc = io_fail(c, -errno, "send");
				goto out;
			}
			if (w > 0) {
				sent += (uint64_t)w;
				deadline = hist_now_us() + (uint64_t)opt.timeout_ms * 1000;
			}
		}
		if (pf.revents & (POLLIN | POLLERR | POLLHUP)) {
			ssize_t r = recv(fd, c->rbuf, sizeof(c->rbuf), MSG_DONTWAIT);
			if (r == 0) {
				rc = fail(c, F_OUTPUT, "closed after %" PRIu64 " bytes", c->soff);
				goto out;
			}
			if (r < 0 && errno != EAGAIN && errno != EINTR) {
				rc = io_fail(c, -errno, "read");
				goto out;
			}
			if (r > 0) {
				if (output_add(c, c->rbuf, (size_t)r) < 0) {
					rc = fail(c, F_OUTPUT, "wrong bytes at offset %" PRIu64, c->soff);
					goto out;
				}
				deadline = hist_now_us() + (uint64_t)opt.timeout_ms * 1000;
			}
		}
	}
	shutdown(fd, SHUT_WR);
	rc = read_to_eof(c, fd, deadline, 1);
out:
	close(fd);
	return rc < 0 ? -1 : 0;
}

/* ---- Zabbix agent (passive check): "ZBXD\1", u32 LE length, u32 0, key ---- */

static int do_zabbix(struct client *c)
{
	uint64_t deadline = hist_now_us() + (uint64_t)opt.timeout_ms * 1000;
	size_t klen = strlen(opt.key), got = 0;
	uint8_t req[13 + 512];
	int fd, rc;

	req[0] = 'Z'; req[1] = 'B'; req[2] = 'X'; req[3] = 'D'; req[4] = 1;
	for (int i = 0; i < 8; i++)
		req[5 + i] = i < 4 ? (uint8_t)(klen >> (8 * i)) : 0;
	memcpy(req + 13, opt.key, klen);
	c->outlen = 0;
	fd = connect_or_fail(c, deadline);
	if (fd < 0)
		return -1;
	rc = net_write(fd, req, 13 + klen, deadline);
	if (rc < 0) {
		rc = io_fail(c, rc, "send");
		goto out;
	}
	/* The agent answers and closes: read all, then check the header. */
	for (;;) {
		ssize_t r = net_read(fd, c->rbuf + got, sizeof(c->rbuf) - got, deadline);
		if (r == 0)
			break;
		if (r < 0) {
			rc = io_fail(c, (int)r, "read");
			goto out;
		}
		got += (size_t)r;
		if (got == sizeof(c->rbuf))
			break;
	}
	if (got < 13 || memcmp(c->rbuf, "ZBXD\1", 5) != 0) {
		rc = fail(c, F_OUTPUT, "%zu bytes, no ZBXD header", got);
		goto out;
	}
	if (got - 13 != opt.expect_len || memcmp(c->rbuf + 13, opt.expect, opt.expect_len)) {
		rc = fail(c, F_OUTPUT, "answer \"%.*s\"", (int)(got - 13 > 200 ? 200 : got - 13),
			  (const char *)c->rbuf + 13);
		goto out;
	}
	rc = 0;
out:
	close(fd);
	return rc < 0 ? -1 : 0;
}

/* ---- NRPE v2 packet: version, type, crc32, result, buffer[1024] ---- */

static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t v = i;
		for (int k = 0; k < 8; k++)
			v = v & 1 ? (v >> 1) ^ 0xedb88320u : v >> 1;
		crc_table[i] = v;
	}
}

static uint32_t crc32_buf(const uint8_t *p, size_t n)
{
	uint32_t v = 0xffffffffu;

	while (n--)
		v = (v >> 8) ^ crc_table[(v ^ *p++) & 0xff];
	return v ^ 0xffffffffu;
}

static int do_nrpe(struct client *c)
{
	uint64_t deadline = hist_now_us() + (uint64_t)opt.timeout_ms * 1000;
	uint8_t pkt[NRPE_PKT];
	uint32_t crc, want;
	size_t got = 0, len;
	int fd, rc;

	memset(pkt, 0, sizeof(pkt));
	pkt[1] = 2;     /* packet_version 2 */
	pkt[3] = 1;     /* QUERY_PACKET */
	snprintf((char *)pkt + 10, NRPE_BUF, "%s", opt.key);
	crc = crc32_buf(pkt, sizeof(pkt));
	pkt[4] = (uint8_t)(crc >> 24);
	pkt[5] = (uint8_t)(crc >> 16);
	pkt[6] = (uint8_t)(crc >> 8);
	pkt[7] = (uint8_t)crc;
	fd = connect_or_fail(c, deadline);
	if (fd < 0)
		return -1;
	rc = net_write(fd, pkt, sizeof(pkt), deadline);
	if (rc < 0) {
		rc = io_fail(c, rc, "send");
		goto out;
	}
	while (got < NRPE_PKT) {
		ssize_t r = net_read(fd, c->rbuf + got, NRPE_PKT - got, deadline);
		if (r == 0)
			break;
		if (r < 0) {
			rc = io_fail(c, (int)r, "read");
			goto out;
		}
		got += (size_t)r;
	}
	if (got != NRPE_PKT || c->rbuf[1] != 2 || c->rbuf[3] != 2) {
		rc = fail(c, F_OUTPUT, "%zu bytes, not an NRPE v2 response", got);
		goto out;
	}
	want = (uint32_t)c->rbuf[4] << 24 | (uint32_t)c->rbuf[5] << 16 |
	       (uint32_t)c->rbuf[6] << 8 | c->rbuf[7];
	memset(c->rbuf + 4, 0, 4);
	if (crc32_buf(c->rbuf, NRPE_PKT) != want) {
		rc = fail(c, F_OUTPUT, "NRPE response with a bad CRC");
		goto out;
	}
	len = strnlen((const char *)c->rbuf + 10, NRPE_BUF);
	if (len != opt.expect_len || memcmp(c->rbuf + 10, opt.expect, len) != 0) {
		rc = fail(c, F_OUTPUT, "answer \"%.*s\"", (int)(len > 200 ? 200 : len),
			  (const char *)c->rbuf + 10);
		goto out;
	}
	rc = 0;
out:
	close(fd);
	return rc < 0 ? -1 : 0;
}

/* ---- the client threads ---- */

static void *client_main(void *arg)
{
	struct client *c = arg;

	pthread_barrier_wait(&start_line);
	for (;;) {
		uint64_t t0 = hist_now_us(), t1;
		int rc;

		if (t0 >= stop_at_us || atomic_fetch_add(&next_req, 1) >= opt.requests)
			break;
		switch (opt.mode) {
		case M_FRAMED:
		case M_STREAM:
			rc = do_framed(c);
			break;
		case M_RAW:
			rc = do_raw(c);
			break;
		case M_RAWSTREAM:
			rc = do_rawstream(c);
			break;
		case M_ZABBIX:
			rc = do_zabbix(c);
			break;
		case M_NRPE:
			rc = do_nrpe(c);
			break;
		default:
			rc = -1;
		}
		t1 = hist_now_us();
		if (rc == 0) {
			c->ok++;
			hist_add(&c->lat, t1 - t0);
			if (opt.mode == M_STREAM || opt.mode == M_RAWSTREAM)
				c->bytes += c->soff;
			else
				c->bytes += c->outlen;
		}
	}
	if (c->fd >= 0)
		conn_close(c, c->fd, 1);
	c->fd = -1;
	SSL_SESSION_free(c->ticket);
	c->ticket = NULL;
	return NULL;
}

/* ---- options ---- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: loadgen [options] HOST:PORT [COMMAND [ARG...]]\n"
		"\n"
		"  -m, --mode MODE        framed (tcpexecd, default), raw (inetd style: send\n"
		"                         --payload, shut down writing, read to EOF),\n"
		"                         stream (framed `cat` of --bytes), rawstream (the\n"
		"                         same over a raw connection), zabbix, nrpe\n"
		"  -c, --concurrency N    client threads, 1..%d (default 1)\n"
		"  -n, --requests N       requests in all (default 1000)\n"
		"  -d, --duration SEC     stop starting requests after SEC (default 600, max 3600)\n"
		"  -r, --reuse            framed: one connection per client for all its requests\n"
		"  -N, --no-shutdown      raw: do not shut down writing, wait for the server's EOF\n"
		"  -e, --expect TEXT      expected output, with \\n \\t \\\\ escapes (default hello\\n)\n"
		"  -p, --payload TEXT     raw: bytes to send before EOF (same escapes)\n"
		"  -b, --bytes SIZE       stream modes: bytes per request, K/M/G suffix (default 1G)\n"
		"  -k, --key TEXT         zabbix: item key; nrpe: command name\n"
		"  -s, --system NAME      the name printed as system=\n"
		"  -t, --timeout MS       per request (streaming: without progress), default 5000\n"
		"  -T, --tls              framed: TLS 1.3, with --psk-file or --ca\n"
		"  -P, --psk-file FILE    TLS with the pre-shared key in FILE (identity:hexkey)\n"
		"  -A, --ca FILE          TLS, the server's certificate verified against FILE\n"
		"                         and the target's IP address\n"
		"  -R, --resume           TLS: offer the last session ticket on each new\n"
		"                         connection; prints resumed= (tickets taken)\n"
		"\n"
		"COMMAND (framed mode) defaults to `echo hello`; stream mode runs `cat`.\n"
		"Prints one line: system= mode= conc= requests= failures= rps= p50_us= ...\n",
		MAX_CONC);
}

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* The first line of --psk-file that is not a comment: "identity:hexkey",
 * as tcpexecd's tls_psk_file and tcpexec --psk-file read it. */
static void load_psk(const char *path)
{
	char line[512], *colon, *hex;
	size_t hl, idl;
	FILE *f = fopen(path, "re");

	if (!f)
		die(EXIT_SETUP, "%s: %s", path, strerror(errno));
	do {
		if (!fgets(line, sizeof(line), f))
			die(EXIT_SETUP, "%s: no key in the file", path);
		line[strcspn(line, "\r\n")] = '\0';
	} while (line[0] == '#' || line[0] == '\0');
	fclose(f);
	colon = strrchr(line, ':');
	if (!colon || colon == line)
		die(EXIT_SETUP, "%s: expected identity:hexkey", path);
	idl = (size_t)(colon - line);
	if (idl > PSK_ID_MAX)
		die(EXIT_SETUP, "%s: the identity is longer than %d bytes", path, PSK_ID_MAX);
	memcpy(psk.identity, line, idl);
	psk.identity[idl] = '\0';
	hex = colon + 1;
	hl = strlen(hex);
	if (hl < 32 || hl > 2 * PSK_KEY_MAX || hl % 2)
		die(EXIT_SETUP, "%s: the key must be 32 to %d hex digits", path, 2 * PSK_KEY_MAX);
	for (size_t i = 0; i < hl / 2; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			die(EXIT_SETUP, "%s: the key is not hexadecimal", path);
		psk.key[i] = (unsigned char)(hi << 4 | lo);
	}
	psk.len = (unsigned)(hl / 2);
	OPENSSL_cleanse(line, sizeof(line));
}

static unsigned int psk_client_cb(SSL *ssl, const char *hint, char *identity,
				  unsigned int max_identity, unsigned char *key, unsigned int max_key)
{
	size_t idl = strlen(psk.identity);

	(void)ssl;
	(void)hint;
	if (idl + 1 > max_identity || psk.len > max_key)
		return 0;
	memcpy(identity, psk.identity, idl + 1);
	memcpy(key, psk.key, psk.len);
	return psk.len;
}

/* The client context, as the tcpexec client builds it: TLS 1.3 only; a
 * pre-shared key (bound to SHA-256 suites) or a verified certificate. */
static void tls_setup(void)
{
	tls_ctx = SSL_CTX_new(TLS_client_method());
	if (!tls_ctx)
		die(EXIT_SETUP, "cannot create a TLS context");
	SSL_CTX_set_min_proto_version(tls_ctx, TLS1_3_VERSION);
	SSL_CTX_set_max_proto_version(tls_ctx, TLS1_3_VERSION);
	/* tcpexecd closes without close_notify, as the tcpexec client does:
	 * an EOF after EXIT is the end of the connection, not an attack. */
	SSL_CTX_set_options(tls_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	if (opt.psk_file) {
		load_psk(opt.psk_file);
		SSL_CTX_set_psk_client_callback(tls_ctx, psk_client_cb);
		if (SSL_CTX_set_ciphersuites(tls_ctx, "TLS_AES_128_GCM_SHA256:"
					     "TLS_CHACHA20_POLY1305_SHA256") != 1)
			die(EXIT_SETUP, "cannot set the TLS 1.3 cipher suites");
	} else {
		if (SSL_CTX_load_verify_locations(tls_ctx, opt.ca, NULL) != 1)
			die(EXIT_SETUP, "%s: cannot load CA certificates: %s", opt.ca,
			    ERR_reason_error_string(ERR_get_error()));
		SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_PEER, NULL);
	}
	if (opt.resume) {
		/* No internal cache: each thread keeps its own newest ticket. */
		SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_CLIENT |
					       SSL_SESS_CACHE_NO_INTERNAL);
		SSL_CTX_sess_set_new_cb(tls_ctx, tls_new_ticket);
	}
}


static uint64_t parse_u64(const char *s, const char *what, uint64_t lo, uint64_t hi, int sizes)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (sizes && end != s) {
		switch (*end) {
		case 'K': case 'k': v <<= 10; end++; break;
		case 'M': case 'm': v <<= 20; end++; break;
		case 'G': case 'g': v <<= 30; end++; break;
		default: break;
		}
	}
	if (errno || end == s || *end || *s == '-' || v < lo || v > hi)
		die(EXIT_USAGE, "%s: %s: expected a number from %" PRIu64 " to %" PRIu64,
		    what, s, lo, hi);
	return v;
}

static void parse_target(const char *t)
{
	char host[256];
	const char *colon = strrchr(t, ':');
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
	struct addrinfo *res;
	size_t hl;
	int rc;

	if (!colon || colon == t || !colon[1])
		die(EXIT_USAGE, "%s: expected HOST:PORT", t);
	hl = (size_t)(colon - t);
	if (t[0] == '[' && colon[-1] == ']') {
		t++;
		hl -= 2;
	}
	if (hl >= sizeof(host))
		die(EXIT_USAGE, "%s: host too long", t);
	memcpy(host, t, hl);
	host[hl] = '\0';
	memcpy(opt.host, host, hl + 1);
	/* Numeric only: this tool is pointed at loopback servers it was told
	 * about, never at a name that might resolve elsewhere. */
	rc = getaddrinfo(host, colon + 1, &hints, &res);
	if (rc != 0)
		die(EXIT_USAGE, "%s: %s", t, gai_strerror(rc));
	memcpy(&opt.addr, res->ai_addr, res->ai_addrlen);
	opt.addrlen = res->ai_addrlen;
	freeaddrinfo(res);
}

static void parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "mode", required_argument, NULL, 'm' },
		{ "concurrency", required_argument, NULL, 'c' },
		{ "requests", required_argument, NULL, 'n' },
		{ "duration", required_argument, NULL, 'd' },
		{ "reuse", no_argument, NULL, 'r' },
		{ "no-shutdown", no_argument, NULL, 'N' },
		{ "expect", required_argument, NULL, 'e' },
		{ "payload", required_argument, NULL, 'p' },
		{ "bytes", required_argument, NULL, 'b' },
		{ "key", required_argument, NULL, 'k' },
		{ "system", required_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{ "tls", no_argument, NULL, 'T' },
		{ "psk-file", required_argument, NULL, 'P' },
		{ "ca", required_argument, NULL, 'A' },
		{ "resume", no_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static char hello_nl[] = "hello\n";
	int ch, nargs = 0;

	opt.expect = hello_nl;
	opt.expect_len = strlen(hello_nl);
	while ((ch = getopt_long(argc, argv, "+m:c:n:d:rNe:p:b:k:s:t:TP:A:Rh", lo, NULL)) != -1) {
		switch (ch) {
		case 'm': {
			unsigned i;
			for (i = 0; i < sizeof(mode_name) / sizeof(mode_name[0]); i++)
				if (strcmp(optarg, mode_name[i]) == 0)
					break;
			if (i == sizeof(mode_name) / sizeof(mode_name[0]))
				die(EXIT_USAGE, "%s: unknown mode", optarg);
			opt.mode = (enum mode)i;
			break;
		}
		case 'c':
			opt.conc = (unsigned)parse_u64(optarg, "concurrency", 1, MAX_CONC, 0);
			break;
		case 'n':
			opt.requests = parse_u64(optarg, "requests", 1, MAX_REQUESTS, 0);
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
		case 'r':
			opt.reuse = 1;
			break;
		case 'N':
			opt.no_shutdown = 1;
			break;
		case 'e':
			opt.expect = optarg;
			opt.expect_len = bench_unescape(optarg);
			break;
		case 'p':
			opt.payload = optarg;
			opt.payload_len = bench_unescape(optarg);
			break;
		case 'b':
			opt.bytes = parse_u64(optarg, "bytes", 0, 1ull << 40, 1);
			break;
		case 'k':
			opt.key = optarg;
			break;
		case 's':
			opt.system = optarg;
			break;
		case 't':
			opt.timeout_ms = (int)parse_u64(optarg, "timeout", 1, 3600000, 0);
			break;
		case 'T':
			opt.tls = 1;
			break;
		case 'P':
			opt.psk_file = optarg;
			break;
		case 'A':
			opt.ca = optarg;
			break;
		case 'R':
			opt.resume = 1;
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
	parse_target(argv[optind++]);
	for (; optind < argc; optind++) {
		if (nargs == MAX_ARGS)
			die(EXIT_USAGE, "more than %d command words", MAX_ARGS);
		opt.argv[nargs++] = argv[optind];
	}
	if (opt.mode == M_STREAM && nargs == 0)
		opt.argv[nargs++] = "cat";
	if (nargs == 0) {
		opt.argv[nargs++] = "echo";
		opt.argv[nargs++] = "hello";
	}
	opt.argv[nargs] = NULL;
	if (opt.reuse && opt.mode != M_FRAMED && opt.mode != M_STREAM)
		die(EXIT_USAGE, "--reuse needs a framed mode");
	if ((opt.psk_file || opt.ca || opt.resume) && !opt.tls)
		die(EXIT_USAGE, "--psk-file, --ca and --resume need --tls");
	if (opt.tls && opt.mode != M_FRAMED)
		die(EXIT_USAGE, "--tls needs --mode framed");
	if (opt.tls && !opt.psk_file == !opt.ca)
		die(EXIT_USAGE, "--tls needs one of --psk-file and --ca");
	if ((opt.mode == M_ZABBIX || opt.mode == M_NRPE) && !opt.key)
		die(EXIT_USAGE, "mode %s needs --key", mode_name[opt.mode]);
	if (opt.key && strlen(opt.key) >= (opt.mode == M_NRPE ? NRPE_BUF : 512))
		die(EXIT_USAGE, "--key too long");
	if (opt.expect_len > sizeof(((struct client *)0)->out))
		die(EXIT_USAGE, "--expect longer than %zu bytes",
		    sizeof(((struct client *)0)->out));
}

int main(int argc, char **argv)
{
	struct client *cl;
	struct hist *all;
	uint64_t ok = 0, failed = 0, bytes = 0, fails[F_NFAIL] = { 0 };
	uint64_t handshakes = 0, resumed = 0, tickets = 0;
	struct rusage ru0, ru1;
	uint64_t t0, elapsed;
	double secs;

	parse_args(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	if (opt.tls)
		tls_setup();
	crc_init();
	for (size_t i = 0; i < sizeof(pattern); i++) {
		/* A byte pattern without short periods: an LCG's high byte. */
		uint32_t x = (uint32_t)(i % PATLEN) * 2654435761u + 12345u;
		pattern[i] = (uint8_t)(x >> 24);
	}
	cl = calloc(opt.conc, sizeof(*cl));
	all = calloc(1, sizeof(*all));
	if (!cl || !all)
		die(EXIT_SETUP, "out of memory");
	if (pthread_barrier_init(&start_line, NULL, opt.conc + 1) != 0)
		die(EXIT_SETUP, "pthread_barrier_init failed");
	for (unsigned i = 0; i < opt.conc; i++) {
		cl[i].id = i;
		cl[i].fd = -1;
		framed_build(&cl[i], opt.argv);
		if (pthread_create(&cl[i].tid, NULL, client_main, &cl[i]) != 0)
			die(EXIT_SETUP, "pthread_create failed");
	}
	getrusage(RUSAGE_SELF, &ru0);
	t0 = hist_now_us();
	stop_at_us = t0 + (uint64_t)(opt.duration_s * 1e6);
	pthread_barrier_wait(&start_line);
	for (unsigned i = 0; i < opt.conc; i++) {
		pthread_join(cl[i].tid, NULL);
		hist_merge(all, &cl[i].lat);
		ok += cl[i].ok;
		bytes += cl[i].bytes;
		handshakes += cl[i].handshakes;
		resumed += cl[i].resumed;
		tickets += cl[i].tickets;
		for (int k = 0; k < F_NFAIL; k++) {
			fails[k] += cl[i].fail[k];
			failed += cl[i].fail[k];
		}
	}
	elapsed = hist_now_us() - t0;
	getrusage(RUSAGE_SELF, &ru1);
	secs = (double)(elapsed ? elapsed : 1) / 1e6;
	printf("system=%s mode=%s conc=%u reuse=%d requests=%" PRIu64 " ok=%" PRIu64
	       " failures=%" PRIu64, opt.system, mode_name[opt.mode], opt.conc, opt.reuse,
	       ok + failed, ok, failed);
	for (int k = 0; k < F_NFAIL; k++)
		printf(" fail_%s=%" PRIu64, fail_name[k], fails[k]);
	printf(" elapsed_s=%.3f rps=%.1f", secs, (double)ok / secs);
	hist_print(all, stdout);
	printf(" mbps=%.1f", (double)bytes / secs / 1e6);
	/* The client's own CPU time per request: it shares the machine's
	 * cores with the server, and a TLS client spends much of it. */
	printf(" client_cpu_us=%.0f", ok + failed == 0 ? 0.0 :
	       ((double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) * 1e6 +
		(double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) +
		(double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) * 1e6 +
		(double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec)) / (double)(ok + failed));
	if (opt.tls)
		printf(" tls=%s handshakes=%" PRIu64 " resumed=%" PRIu64 " tickets=%" PRIu64,
		       opt.psk_file ? "psk" : "cert", handshakes, resumed, tickets);
	putchar('\n');
	SSL_CTX_free(tls_ctx);
	free(all);
	free(cl);
	pthread_barrier_destroy(&start_line);
	return failed ? 1 : 0;
}
