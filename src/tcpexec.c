// SPDX-License-Identifier: MIT
/*
 * tcpexec, the client: `tcpexec [options] HOST COMMAND [ARG...]` with the
 * semantics of `ssh host cmd`: stdin is streamed to the command, its stdout
 * and stderr come back apart, and its exit status (or the signal that
 * killed it) becomes ours. Without COMMAND, an interactive prompt runs one
 * command per line over the same connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "addr.h"
#include "protocol.h"
#include "words.h"
#include "tcpexecd.h"

#define EXIT_CLIENT 255          /* connection or protocol error, as ssh */
#define IOBUF (1u << 20)
#define CHUNK (256u << 10)
#define ACCEPT_PAYLOAD (1u << 20)  /* announced: the largest frame we take */
#define MAX_LINE_WORDS 256

static const char *progname = "tcpexec";

static struct {
	const char *host;
	const char *port;
	int family;
	int no_stdin;
	uint32_t timeout_ms;
	int connect_timeout_ms;
	const char *env[PROTO_MAX_ENV + 1];
	int nenv;
	int tls;
	const char *psk_identity, *psk_file, *cert, *key, *ca, *session;
} opt = { .port = "5151", .family = AF_UNSPEC, .connect_timeout_ms = 10000 };

/* The connection and its buffers: one request at a time. */
static struct {
	int fd;
	uint8_t in[PROTO_MAX_PAYLOAD_CEILING + PROTO_HEADER_LEN];
	size_t inlen;
	uint8_t out[IOBUF];
	size_t outlen, outoff;
	uint32_t server_max;     /* largest payload the server accepts */
	int hello_ok;
	SSL *ssl;                /* NULL without TLS */
	short rd_wants, wr_wants;
} C;

static struct {
	char identity[129];
	unsigned char key[64];
	unsigned len;
} psk;

static _Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static _Noreturn void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(EXIT_CLIENT);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tcpexec [-46n] [-c seconds] [-e NAME=value]... [-p port] [-t seconds]\n"
		"               [--tls] [--ca file] [--cert file --key file]\n"
		"               [--psk-identity id --psk-file file] [--session file]\n"
		"               host [command [arg ...]]\n"
		"\n"
		"  -4, -6             use IPv4 / IPv6 only\n"
		"  -c, --connect-timeout SECONDS  give up connecting after this (default 10)\n"
		"  -e, --env NAME=VALUE  pass a variable (the server must accept the name)\n"
		"  -n, --no-stdin     send no input (as ssh -n)\n"
		"  -p, --port PORT    server port (default 5151)\n"
		"  -t, --timeout SECONDS  runtime limit for the command\n"
		"      --tls          use TLS 1.3 (implied by the options below)\n"
		"      --ca FILE      verify the server's certificate with these CAs\n"
		"                     (default: the system's); the host name must match\n"
		"      --cert FILE, --key FILE  client certificate and key\n"
		"      --psk-identity ID, --psk-file FILE  pre-shared key (the file holds\n"
		"                     the hex key, or identity:hexkey)\n"
		"      --session FILE keep the TLS session ticket here, to resume next time\n"
		"  -h, --help         show this help\n"
		"  -V, --version      show the version\n"
		"\n"
		"host is a name, an IPv4 address, an IPv6 address (optionally in brackets)\n"
		"or the path of a Unix socket. Without a command, an interactive prompt\n"
		"runs one command per line. The exit status is the command's; 255 means\n"
		"tcpexec or the server failed. See tcpexec(1).\n");
}

static int parse_seconds(const char *s, uint32_t *ms)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || v <= 0 || v > 4294967.0)
		return -1;
	*ms = (uint32_t)(v * 1000.0 + 0.5);
	return *ms ? 0 : -1;
}

/* Non-blocking connect bounded by the connect timeout, as the socket
 * tutorials explain: connect() returns EINPROGRESS, poll for POLLOUT,
 * then SO_ERROR tells the outcome. */
static int connect_bounded(int fd, const struct sockaddr *sa, socklen_t len, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	socklen_t elen = sizeof(int);
	int err = 0, r;

	if (connect(fd, sa, len) == 0)
		return 0;
	if (errno != EINPROGRESS)
		return -1;
	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r == 0) {
		errno = ETIMEDOUT;
		return -1;
	}
	if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
		return -1;
	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}

static int open_connection(void)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_family = opt.family };
	struct addrinfo *res, *ai;
	char host[256];
	int fd = -1, rc, saved = 0;

	if (opt.host[0] == '/') {
		struct sockaddr_un un = { .sun_family = AF_UNIX };
		if (strlen(opt.host) >= sizeof(un.sun_path))
			die("%s: Unix socket path too long", opt.host);
		memcpy(un.sun_path, opt.host, strlen(opt.host) + 1);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0 || connect_bounded(fd, (struct sockaddr *)&un, sizeof(un),
					      opt.connect_timeout_ms) < 0)
			die("cannot connect to %s: %s", opt.host, strerror(errno));
		return fd;
	}
	snprintf(host, sizeof(host), "%s", opt.host);
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	rc = getaddrinfo(host, opt.port, &hints, &res);
	if (rc != 0)
		die("%s: %s", opt.host, gai_strerror(rc));
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    ai->ai_protocol);
		if (fd < 0)
			continue;
		/* See ADDR_LOOPBACK_CC; set before connect(), so the
		 * connection starts with it. */
		if (addr_is_local(ai->ai_addr))
			setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, ADDR_LOOPBACK_CC,
				   sizeof(ADDR_LOOPBACK_CC) - 1);
		if (connect_bounded(fd, ai->ai_addr, ai->ai_addrlen, opt.connect_timeout_ms) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		die("cannot connect to %s port %s: %s", opt.host, opt.port,
		    strerror(saved ? saved : EHOSTUNREACH));
	{
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	return fd;
}

static void queue(const void *frame, long len)
{
	if (len < 0)
		die("cannot encode a frame: %s", strerror((int)-len));
	if (C.outoff) {
		memmove(C.out, C.out + C.outoff, C.outlen - C.outoff);
		C.outlen -= C.outoff;
		C.outoff = 0;
	}
	if ((size_t)len > sizeof(C.out) - C.outlen)
		die("the request is too large (at most %zu bytes)", sizeof(C.out));
	memcpy(C.out + C.outlen, frame, (size_t)len);
	C.outlen += (size_t)len;
}

static size_t out_room(void)
{
	return sizeof(C.out) - (C.outlen - C.outoff);
}

/* Write all to fd 1 or 2, blocking: local output is never dropped. */
static void write_local(int fd, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			struct pollfd pf = { .fd = fd, .events = POLLOUT };
			poll(&pf, 1, -1);
			continue;
		}
		if (n <= 0)
			die("write to %s: %s", fd == 1 ? "stdout" : "stderr", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
}

static void print_escaped(const char *msg, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)msg[i];
		if (ch < 0x20 || ch == 0x7f)
			fprintf(stderr, "\\x%02x", ch);
		else
			fputc(ch, stderr);
	}
}

struct result {
	int done;
	int signaled, value, core;
	int error;      /* PROTO_ERR_* from an ERROR frame */
};

/* Handle the frames in C.in. Returns -1 when the connection is unusable. */
static int handle_frames(struct result *res)
{
	struct proto_frame f;
	long n;

	while (!res->done &&
	       (n = proto_frame_parse(C.in, C.inlen, PROTO_MAX_PAYLOAD_CEILING, &f)) > 0) {
		struct proto_hello h;
		struct proto_exit e;
		const char *msg;
		size_t mlen;
		int code;

		switch (f.type) {
		case PROTO_HELLO_OK:
			if (proto_decode_hello(&f, &h) < 0 || h.version != PROTO_VERSION)
				die("%s: the server speaks an unsupported protocol version",
				    opt.host);
			C.server_max = h.max_payload ? h.max_payload : PROTO_DEFAULT_MAX_PAYLOAD;
			C.hello_ok = 1;
			break;
		case PROTO_STDOUT:
			write_local(1, f.payload, f.len);
			break;
		case PROTO_STDERR:
			write_local(2, f.payload, f.len);
			break;
		case PROTO_EXIT:
			if (proto_decode_exit(&f, &e) < 0)
				die("%s: malformed EXIT frame", opt.host);
			res->done = 1;
			res->signaled = e.signaled;
			res->value = e.value;
			res->core = e.core;
			break;
		case PROTO_ERROR:
			if (proto_decode_error(&f, &code, &msg, &mlen) < 0)
				die("%s: malformed ERROR frame", opt.host);
			fprintf(stderr, "%s: %s: ", progname, proto_error_name(code));
			print_escaped(msg, mlen);
			fputc('\n', stderr);
			res->done = 1;
			res->error = code;
			break;
		default:
			die("%s: unexpected %s frame", opt.host, proto_type_name(f.type));
		}
		memmove(C.in, C.in + n, C.inlen - (size_t)n);
		C.inlen -= (size_t)n;
	}
	if (!res->done && C.inlen && proto_frame_parse(C.in, C.inlen, PROTO_MAX_PAYLOAD_CEILING,
						       &f) < 0)
		die("%s: malformed frame from the server", opt.host);
	return 0;
}

static int sigfd_setup(void)
{
	sigset_t set;
	int fd;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGQUIT);
	sigaddset(&set, SIGWINCH);
	fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (fd < 0 || sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		die("signals: %s", strerror(errno));
	signal(SIGPIPE, SIG_IGN);
	return fd;
}

/* Connection I/O, plain or TLS: > 0 bytes, 0 EOF, -1 would block (TLS
 * notes which readiness it waits for), -2 the connection failed. */
static long c_io(int writing, void *buf, size_t len)
{
	ssize_t n;
	int r, e;

	if (!C.ssl) {
		n = writing ? send(C.fd, buf, len, MSG_NOSIGNAL) : recv(C.fd, buf, len, 0);
		if (n >= 0)
			return n;
		return errno == EAGAIN || errno == EINTR ? -1 : -2;
	}
	ERR_clear_error();
	r = writing ? SSL_write(C.ssl, buf, (int)len) : SSL_read(C.ssl, buf, (int)len);
	if (r > 0)
		return r;
	e = SSL_get_error(C.ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		short w = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
		*(writing ? &C.wr_wants : &C.rd_wants) = w;
		return -1;
	}
	if (e == SSL_ERROR_ZERO_RETURN)
		return 0;
	if (e == SSL_ERROR_SYSCALL && r == 0 && !writing)
		return 0;
	if (e == SSL_ERROR_SSL) {
		/* Say what TLS said (an alert such as a refused certificate),
		 * not a stale errno. */
		unsigned long q = ERR_get_error();
		die("%s: TLS: %s", opt.host, q ? ERR_reason_error_string(q) : "protocol error");
	}
	return -2;
}

/* Send one request and relay until its final frame. last: no other
 * request follows on this connection (the server may close first). */
static struct result run(char *const argv[], int with_stdin, int last, int sigfd)
{
	static uint8_t frame[PROTO_HEADER_LEN + CHUNK];
	const char *envp[PROTO_MAX_ENV + 1];
	struct result res = { 0 };
	int stdin_open = with_stdin;
	long n;

	for (int i = 0; i < opt.nenv; i++)
		envp[i] = opt.env[i];
	envp[opt.nenv] = NULL;
	n = proto_encode_request(C.in + C.inlen, sizeof(C.in) - C.inlen, (const char *const *)argv,
				 envp, opt.timeout_ms,
				 (with_stdin ? 0 : PROTO_RF_NO_STDIN) | (last ? PROTO_RF_LAST : 0));
	if (n == -E2BIG)
		die("too many arguments or variables (at most %d and %d)", PROTO_MAX_ARGS,
		    PROTO_MAX_ENV);
	if (n < 0)
		die("cannot encode the request: %s", strerror((int)-n));
	if (C.server_max && (size_t)n - PROTO_HEADER_LEN > C.server_max)
		die("the request is larger than the server accepts (%u bytes)", C.server_max);
	/* Encoded behind the received bytes, then moved to the send queue. */
	queue(C.in + C.inlen, n);

	while (!res.done) {
		int buffered = C.ssl && SSL_pending(C.ssl) > 0;
		struct pollfd p[4] = {
			{ .fd = C.fd, .events = (short)((C.rd_wants ? C.rd_wants : POLLIN) |
				(C.outlen > C.outoff ? (C.wr_wants ? C.wr_wants : POLLOUT) : 0)) },
			{ .fd = stdin_open && out_room() >= sizeof(frame) ? 0 : -1, .events = POLLIN },
			{ .fd = sigfd, .events = POLLIN },
		};

		if (poll(p, 3, buffered ? 0 : -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll: %s", strerror(errno));
		}
		if (p[2].revents) {
			struct signalfd_siginfo si;
			while (read(sigfd, &si, sizeof(si)) == sizeof(si)) {
				uint8_t sf[16];
				queue(sf, proto_encode_signal(sf, sizeof(sf), (int)si.ssi_signo));
			}
		}
		if (p[1].revents) {
			/* Until HELLO_OK tells the server's limit, stay within the
			 * smallest one a server may announce. */
			size_t max = C.server_max ? C.server_max : PROTO_MIN_PAYLOAD;
			ssize_t r;
			if (max > CHUNK)
				max = CHUNK;
			r = read(0, frame + PROTO_HEADER_LEN, max);
			if (r > 0) {
				proto_put_header(frame, PROTO_STDIN, (uint32_t)r);
				queue(frame, PROTO_HEADER_LEN + r);
			} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
				queue(frame, proto_encode_eof(frame, sizeof(frame)));
				stdin_open = 0;
			}
		}
		if (p[0].revents && C.outlen > C.outoff) {
			long w;
			C.wr_wants = 0;
			w = c_io(1, C.out + C.outoff, C.outlen - C.outoff);
			if (w == -2)
				die("%s: connection lost: %s", opt.host, strerror(errno));
			if (w > 0)
				C.outoff += (size_t)w;
			if (C.outoff == C.outlen)
				C.outoff = C.outlen = 0;
		}
		if (p[0].revents || buffered) {
			long r;
			C.rd_wants = 0;
			r = c_io(0, C.in + C.inlen, sizeof(C.in) - C.inlen);
			if (r == 0)
				die("%s: connection closed by the server", opt.host);
			if (r == -2)
				die("%s: connection lost: %s", opt.host, strerror(errno));
			if (r > 0) {
				C.inlen += (size_t)r;
				handle_frames(&res);
			}
		}
	}
	return res;
}

static unsigned int psk_client_cb(SSL *ssl, const char *hint, char *identity,
				   unsigned int max_identity, unsigned char *key, unsigned int max_key)
{
	(void)ssl;
	(void)hint;
	if (strlen(psk.identity) + 1 > max_identity || psk.len > max_key)
		return 0;
	memcpy(identity, psk.identity, strlen(psk.identity) + 1);
	memcpy(key, psk.key, psk.len);
	return psk.len;
}

/* The key file holds the hex key, alone or as "identity:hexkey". */
static void load_psk(void)
{
	char line[512], *hex = line, *colon;
	FILE *f = fopen(opt.psk_file, "re");
	size_t hl;

	if (!f)
		die("%s: %s", opt.psk_file, strerror(errno));
	do {
		if (!fgets(line, sizeof(line), f))
			die("%s: no key in the file", opt.psk_file);
		line[strcspn(line, "\r\n")] = '\0';
	} while (line[0] == '#' || line[0] == '\0');
	fclose(f);
	colon = strrchr(line, ':');
	if (colon) {
		*colon = '\0';
		hex = colon + 1;
		if (strlen(line) >= sizeof(psk.identity))
			die("%s: the identity is longer than %zu bytes", opt.psk_file,
			    sizeof(psk.identity) - 1);
		if (!opt.psk_identity)
			memcpy(psk.identity, line, strlen(line) + 1);
	}
	if (opt.psk_identity)
		snprintf(psk.identity, sizeof(psk.identity), "%s", opt.psk_identity);
	if (!psk.identity[0])
		die("%s: no identity (give --psk-identity)", opt.psk_file);
	hl = strlen(hex);
	if (hl < 32 || hl > 128 || hl % 2)
		die("%s: the key must be 32 to 128 hex digits", opt.psk_file);
	for (size_t i = 0; i < hl / 2; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			die("%s: the key is not hexadecimal", opt.psk_file);
		psk.key[i] = (unsigned char)v;
	}
	psk.len = (unsigned)(hl / 2);
	OPENSSL_cleanse(line, sizeof(line));
}

/* TLS 1.3 session tickets arrive after the handshake: keep the newest in
 * the --session file, so the next invocation resumes without a full
 * handshake. */
static int save_session(SSL *ssl, SSL_SESSION *sess)
{
	char tmp[4096];
	FILE *f;
	int fd;

	(void)ssl;
	snprintf(tmp, sizeof(tmp), "%s.XXXXXX", opt.session);
	fd = mkstemp(tmp);
	if (fd < 0)
		return 0;
	f = fdopen(fd, "w");
	if (!f || !PEM_write_SSL_SESSION(f, sess) || fclose(f) != 0 || rename(tmp, opt.session) < 0)
		unlink(tmp);
	return 0;
}

static void tls_fail(const char *what)
{
	unsigned long e = ERR_get_error();
	long v = C.ssl ? SSL_get_verify_result(C.ssl) : X509_V_OK;

	if (v != X509_V_OK)
		die("%s: TLS: server certificate: %s", opt.host, X509_verify_cert_error_string(v));
	die("%s: TLS %s failed: %s", opt.host, what,
	    e ? ERR_reason_error_string(e) : "the server closed the connection");
}

/* Fail closed: the server is verified by its certificate (against --ca or
 * the system's CAs, and the host name) or by the pre-shared key. */
static void tls_connect(void)
{
	struct timeval tv = { opt.connect_timeout_ms / 1000, (opt.connect_timeout_ms % 1000) * 1000 };
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	int fl;

	if (!ctx)
		tls_fail("setup");
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (opt.psk_file) {
		load_psk();
		SSL_CTX_set_psk_client_callback(ctx, psk_client_cb);
		/* A pre-shared key is bound to SHA-256 suites. */
		SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256");
	} else {
		if (opt.ca ? SSL_CTX_load_verify_locations(ctx, opt.ca, NULL) != 1
			   : SSL_CTX_set_default_verify_paths(ctx) != 1)
			tls_fail("CA loading");
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	if (opt.cert && (SSL_CTX_use_certificate_chain_file(ctx, opt.cert) != 1 ||
			 SSL_CTX_use_PrivateKey_file(ctx, opt.key ? opt.key : opt.cert,
						     SSL_FILETYPE_PEM) != 1))
		tls_fail("client certificate loading");
	if (opt.session) {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
		SSL_CTX_sess_set_new_cb(ctx, save_session);
	}
	C.ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* the SSL holds a reference */
	if (!C.ssl || SSL_set_fd(C.ssl, C.fd) != 1)
		tls_fail("setup");
	if (!opt.psk_file && opt.host[0] != '/') {
		char host[256];
		snprintf(host, sizeof(host), "%s", opt.host[0] == '[' ? opt.host + 1 : opt.host);
		host[strcspn(host, "]")] = '\0';
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(C.ssl), host) != 1) {
			SSL_set_tlsext_host_name(C.ssl, host);
			if (SSL_set1_host(C.ssl, host) != 1)
				tls_fail("setup");
		}
	}
	if (opt.session) {
		FILE *f = fopen(opt.session, "re");
		if (f) {
			SSL_SESSION *sess = PEM_read_SSL_SESSION(f, NULL, NULL, NULL);
			if (sess)
				SSL_set_session(C.ssl, sess);
			SSL_SESSION_free(sess);
			fclose(f);
		}
	}
	/* The handshake runs blocking, bounded by the connect timeout. */
	fl = fcntl(C.fd, F_GETFL);
	fcntl(C.fd, F_SETFL, fl & ~O_NONBLOCK);
	setsockopt(C.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(C.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (SSL_connect(C.ssl) != 1)
		tls_fail("handshake");
	fcntl(C.fd, F_SETFL, fl | O_NONBLOCK);
}

static void hello(void)
{
	struct proto_hello h = { .version = PROTO_VERSION, .auth_method = -1,
				 .max_payload = ACCEPT_PAYLOAD,
				 .software = "tcpexec/" TCPEXECD_VERSION,
				 .software_len = sizeof("tcpexec/" TCPEXECD_VERSION) - 1 };
	uint8_t buf[256];

	/* Not waited for: the request follows at once, one round trip in all. */
	queue(buf, proto_encode_hello(buf, sizeof(buf), PROTO_HELLO, &h));
}

/* Become the remote command's status: its exit code, or death by the same
 * signal, so that $? reads 128+N as for a local command. */
static _Noreturn void exit_like(const struct result *r)
{
	if (r->error)
		exit(EXIT_CLIENT);
	if (r->signaled) {
		sigset_t set;
		fflush(NULL);
		signal(r->value, SIG_DFL);
		sigemptyset(&set);
		sigaddset(&set, r->value);
		sigprocmask(SIG_UNBLOCK, &set, NULL);
		raise(r->value);
		exit(128 + r->value); /* a signal that does not kill (e.g. SIGCHLD) */
	}
	exit(r->value);
}

/* Read one line from fd 0 without stdio, so that poll() on fd 0 never
 * waits while a line already sits in a buffer. Returns 1 with a line, 0 at
 * EOF, or 128+N for a terminating signal received while waiting. */
static int read_line(char *line, size_t cap, int sigfd)
{
	static char buf[65536];
	static size_t len;
	static int eof;

	for (;;) {
		char *nl = memchr(buf, '\n', len);
		struct pollfd p[2] = { { .fd = 0, .events = POLLIN }, { .fd = sigfd, .events = POLLIN } };
		struct signalfd_siginfo si;
		ssize_t n;

		if (nl || (eof && len) || len == sizeof(buf)) {
			size_t take = nl ? (size_t)(nl - buf) + 1 : len;
			size_t copy = take < cap ? take : cap - 1;
			memcpy(line, buf, copy);
			line[copy] = '\0';
			memmove(buf, buf + take, len - take);
			len -= take;
			return 1;
		}
		if (eof)
			return 0;
		while (poll(p, 2, -1) < 0 && errno == EINTR)
			;
		/* A signal at the prompt ends the session, as it would end a
		 * shell's read; a window size change does not. */
		if (p[1].revents && read(sigfd, &si, sizeof(si)) == sizeof(si)) {
			if (si.ssi_signo == SIGWINCH)
				continue;
			return 128 + (int)si.ssi_signo;
		}
		if (!p[0].revents)
			continue;
		n = read(0, buf + len, sizeof(buf) - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			eof = 1;
		else
			len += (size_t)n;
	}
}

static int interactive(int sigfd)
{
	char line[65536], *argv[MAX_LINE_WORDS + 1];
	int tty = isatty(0), last = 0;
	const char *why;

	for (;;) {
		struct result r;
		int argc, got;

		if (tty) {
			fprintf(stderr, "%s> ", opt.host);
			fflush(stderr);
		}
		got = read_line(line, sizeof(line), sigfd);
		if (got > 1) {
			if (tty)
				fputc('\n', stderr);
			return got;
		}
		if (got == 0)
			break;
		/* The same word splitting as the server's line mode. */
		argc = words_split(line, argv, MAX_LINE_WORDS, &why);
		if (argc < 0) {
			fprintf(stderr, "%s: %s\n", progname, why);
			last = EXIT_CLIENT;
			continue;
		}
		if (argc == 0)
			continue;
		if (!strcmp(argv[0], "exit") || !strcmp(argv[0], "quit"))
			break;
		r = run(argv, 0, 0, sigfd);
		last = r.error ? EXIT_CLIENT : r.signaled ? 128 + r.value : r.value;
		if (r.signaled)
			fprintf(stderr, "%s: killed by signal %d%s\n", argv[0], r.value,
				r.core ? " (core dumped)" : "");
		else if (last && !r.error)
			fprintf(stderr, "%s: exit status %d\n", argv[0], last);
	}
	return last;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "ca", required_argument, NULL, 'A' },
		{ "cert", required_argument, NULL, 'C' },
		{ "key", required_argument, NULL, 'K' },
		{ "psk-identity", required_argument, NULL, 'I' },
		{ "psk-file", required_argument, NULL, 'P' },
		{ "session", required_argument, NULL, 'S' },
		{ "tls", no_argument, NULL, 'T' },
		{ "connect-timeout", required_argument, NULL, 'c' },
		{ "env", required_argument, NULL, 'e' },
		{ "no-stdin", no_argument, NULL, 'n' },
		{ "port", required_argument, NULL, 'p' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	uint32_t ms;
	int c, sigfd;

	while ((c = getopt_long(argc, argv, "+46c:e:np:t:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'A':
			opt.ca = optarg;
			opt.tls = 1;
			break;
		case 'C':
			opt.cert = optarg;
			opt.tls = 1;
			break;
		case 'K':
			opt.key = optarg;
			opt.tls = 1;
			break;
		case 'I':
			opt.psk_identity = optarg;
			opt.tls = 1;
			break;
		case 'P':
			opt.psk_file = optarg;
			opt.tls = 1;
			break;
		case 'S':
			opt.session = optarg;
			opt.tls = 1;
			break;
		case 'T':
			opt.tls = 1;
			break;
		case '4':
			opt.family = AF_INET;
			break;
		case '6':
			opt.family = AF_INET6;
			break;
		case 'c':
			if (parse_seconds(optarg, &ms) < 0 || ms > 3600000)
				goto bad;
			opt.connect_timeout_ms = (int)ms;
			break;
		case 'e':
			if (opt.nenv == PROTO_MAX_ENV || !strchr(optarg, '=') || optarg[0] == '=') {
				fprintf(stderr, "%s: -e %s: expected NAME=value (at most %d)\n",
					progname, optarg, PROTO_MAX_ENV);
				return EXIT_CLIENT;
			}
			opt.env[opt.nenv++] = optarg;
			break;
		case 'n':
			opt.no_stdin = 1;
			break;
		case 'p':
			opt.port = optarg;
			break;
		case 't':
			if (parse_seconds(optarg, &opt.timeout_ms) < 0)
				goto bad;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("tcpexec %s\n", TCPEXECD_VERSION);
			return 0;
		default:
			fprintf(stderr, "Try 'tcpexec --help' for more information.\n");
			return EXIT_CLIENT;
		}
	}
	if (opt.psk_identity && !opt.psk_file) {
		fprintf(stderr, "%s: --psk-identity needs --psk-file\n", progname);
		return EXIT_CLIENT;
	}
	if (opt.key && !opt.cert) {
		fprintf(stderr, "%s: --key needs --cert\n", progname);
		return EXIT_CLIENT;
	}
	if (optind >= argc) {
		fprintf(stderr, "%s: no host given\nTry 'tcpexec --help' for more information.\n",
			progname);
		return EXIT_CLIENT;
	}
	opt.host = argv[optind++];

	sigfd = sigfd_setup();
	C.fd = open_connection();
	if (opt.tls)
		tls_connect();
	hello();
	if (optind == argc)
		return interactive(sigfd);
	{
		/* stdin stays blocking (it may be shared with a shell): poll
		 * says when a read() will not block. */
		struct result r = run(argv + optind, !opt.no_stdin, 1, sigfd);
		exit_like(&r);
	}
bad:
	fprintf(stderr, "%s: -%c %s: expected a positive number of seconds\n", progname, c,
		optarg);
	return EXIT_CLIENT;
}
