// SPDX-License-Identifier: MIT
/*
 * tlsfloor: what a resumed TLS 1.3 handshake costs in CPU on this machine,
 * with no network, no TCP and no command: a server thread (tcpexecd's own
 * src/tls.c) and a client thread (set up as tcpexec and loadgen do) over
 * AF_UNIX on one CPU, and the same with GnuTLS for comparison. bench/run
 * sets these figures against the time the TLS goal leaves per request.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#ifdef HAVE_GNUTLS
#include <gnutls/gnutls.h>
#endif

#include "tls.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define EXIT_SETUP 3
#define MAX_HANDSHAKES 1000000
#define IO_TIMEOUT_MS 5000

/* What each connection carries after its handshake: a request the size of
 * a framed `echo hello` one, and an answer the size of its STDOUT + EXIT. */
#define REQUEST_LEN 64
#define ANSWER_LEN 48

static struct {
	int n;
	const char *cert, *key;
	int gnutls;
} opt = { .n = 2000 };

static struct sockaddr_un addr;
static socklen_t addrlen;

/* One run: a server and a client thread, each calling its function once
 * per connection (i = 0 is the full handshake, not counted) on a connected
 * fd it does not own. A function returns 0, or -1 after run_fail(). */
struct run;
typedef int (*conn_fn)(struct run *r, int fd, int i);

struct run {
	int lfd;
	conn_fn server, client;
	void *ctx;             /* the library's state, for both functions */
	double server_us, client_us;
	int resumed;           /* counted by the server */
	atomic_int failed;
	char error[240];
};

static pthread_mutex_t error_lock = PTHREAD_MUTEX_INITIALIZER;

static void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void run_fail(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void die(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("tlsfloor: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(code);
}

/* The first failure of either end is the one reported; both ends stop. */
static void run_fail(struct run *r, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&error_lock);
	if (!r->error[0]) {
		va_start(ap, fmt);
		vsnprintf(r->error, sizeof(r->error), fmt, ap);
		va_end(ap);
	}
	atomic_store(&r->failed, 1);
	pthread_mutex_unlock(&error_lock);
}

static double thread_cpu_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* Wait for fd, bounded: a stuck handshake is an error, not a hang. */
static int wait_fd(int fd, short events)
{
	struct pollfd p = { .fd = fd, .events = events };
	int r;

	do
		r = poll(&p, 1, IO_TIMEOUT_MS);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		errno = ETIMEDOUT;
	return r > 0 ? 0 : -1;
}

/* Both threads on one CPU: a wake-up of the other end is then a switch on
 * the same core, not an interrupt sent to another one, which costs tens of
 * microseconds in a virtual machine and varies from run to run. What is
 * left out makes the figure a floor: real clients and servers pay it. */
static void pin_to_one_cpu(void)
{
	cpu_set_t set;
	int cpu = sched_getcpu();

	CPU_ZERO(&set);
	CPU_SET(cpu < 0 ? 0 : cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		fprintf(stderr, "tlsfloor: cannot stay on CPU %d: %s (figures will vary more)\n",
			cpu, strerror(errno));
}

static int listen_unix(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	/* An abstract address: nothing to clean up in the file system. */
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1, "tcpexecd-tlsfloor-%ld",
		 (long)getpid());
	addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
			      strlen(addr.sun_path + 1));
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, addrlen) < 0 || listen(fd, 8) < 0)
		die(EXIT_SETUP, "AF_UNIX socket: %s", strerror(errno));
	return fd;
}

/* Blocking reads and writes, but bounded: a peer that stopped answering
 * ends the run with an error instead of hanging it. Set on both ends in
 * plaintext too, so the subtraction takes it out. */
static void bound_io(int fd)
{
	struct timeval tv = { .tv_sec = IO_TIMEOUT_MS / 1000 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static void *server_loop(void *arg)
{
	struct run *r = arg;
	double start = 0;

	for (int i = 0; i <= opt.n && !atomic_load(&r->failed); i++) {
		int fd = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC);

		if (i == 1)
			start = thread_cpu_us();
		if (fd < 0) {
			run_fail(r, "accept: %s", strerror(errno));
			break;
		}
		bound_io(fd);
		r->server(r, fd, i);
		close(fd);
	}
	r->server_us = thread_cpu_us() - start;
	return NULL;
}

static void *client_loop(void *arg)
{
	struct run *r = arg;
	double start = 0;

	for (int i = 0; i <= opt.n && !atomic_load(&r->failed); i++) {
		int fd;

		if (i == 1)
			start = thread_cpu_us();
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&addr, addrlen) < 0) {
			run_fail(r, "connect: %s", strerror(errno));
			if (fd >= 0)
				close(fd);
			break;
		}
		bound_io(fd);
		r->client(r, fd, i);
		close(fd);
	}
	r->client_us = thread_cpu_us() - start;
	return NULL;
}

/* Run both ends until the client is done; a failure shuts the listener
 * down, which wakes a server still waiting in accept(). */
static void run_pair(struct run *r, const char *what)
{
	pthread_t st, ct;

	if (pthread_create(&st, NULL, server_loop, r))
		die(EXIT_SETUP, "cannot start a thread");
	if (pthread_create(&ct, NULL, client_loop, r))
		die(EXIT_SETUP, "cannot start a thread");
	pthread_join(ct, NULL);
	if (atomic_load(&r->failed))
		shutdown(r->lfd, SHUT_RDWR);
	pthread_join(st, NULL);
	if (atomic_load(&r->failed))
		die(EXIT_FAIL, "%s: %s", what, r->error);
}

static int plain_server(struct run *r, int fd, int i);

static void print_run(const struct run *r, const char *system, const char *library,
		      const char *kex)
{
	printf("system=%s library=%s kex=%s handshakes=%d resumed=%d server_cpu_us=%.0f "
	       "client_cpu_us=%.0f\n", system, library, kex, r->server == plain_server ? 0 : opt.n,
	       r->resumed, r->server_us / opt.n, r->client_us / opt.n);
}

/* ---- Plaintext: the same connections and bytes, what TLS adds to ---- */

static int read_n(int fd, char *buf, int want)
{
	int got = 0;

	while (got < want) {
		ssize_t n = read(fd, buf + got, (size_t)(want - got));
		if (n <= 0)
			return -1;
		got += (int)n;
	}
	return 0;
}

static int plain_server(struct run *r, int fd, int i)
{
	char buf[256];

	(void)i;
	memset(buf, 'a', ANSWER_LEN);
	if (read_n(fd, buf, REQUEST_LEN) < 0 || write(fd, buf, ANSWER_LEN) != ANSWER_LEN) {
		run_fail(r, "server: request or answer: %s", strerror(errno));
		return -1;
	}
	/* tcpexecd waits for the client's end, then closes. */
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	return 0;
}

static int plain_client(struct run *r, int fd, int i)
{
	char buf[256];

	(void)i;
	memset(buf, 'q', REQUEST_LEN);
	if (write(fd, buf, REQUEST_LEN) != REQUEST_LEN || read_n(fd, buf, ANSWER_LEN) < 0) {
		run_fail(r, "client: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static void run_plain(int lfd)
{
	struct run r = { .lfd = lfd, .server = plain_server, .client = plain_client };

	run_pair(&r, "plaintext");
	print_run(&r, "plaintext", "none", "none");
}

/* ---- OpenSSL: the server is tcpexecd's src/tls.c ---- */

struct ossl {
	struct tls_server *server;
	SSL_CTX *client;
	SSL_SESSION *ticket;   /* the newest the client received */
};

/* One tls.c step, waiting as tls.h says: >= 0 done (or bytes), -1 failed. */
static long server_step(struct tls_conn *tc, int fd, int what, void *buf, size_t len)
{
	for (;;) {
		short events = 0;
		long n = what == 0 ? tls_handshake(tc, &events)
			: what == 1 ? tls_read(tc, buf, len, &events)
			: tls_write(tc, buf, len, &events);

		if (n >= 0)
			return n;
		if (n == -2 || wait_fd(fd, events) < 0)
			return -1;
	}
}

static int ossl_server(struct run *r, int fd, int i)
{
	struct ossl *o = r->ctx;
	struct tls_conn *tc = tls_conn_new(o->server, fd);
	char buf[256];
	long got = 0, n;
	int rc = -1;

	if (!tc || server_step(tc, fd, 0, NULL, 0) < 0) {
		run_fail(r, "server handshake: %s", tc ? tls_conn_error(tc) : "no memory");
		goto out;
	}
	if (i > 0)
		r->resumed += tls_resumed(tc);
	while (got < REQUEST_LEN && (n = server_step(tc, fd, 1, buf, sizeof(buf))) > 0)
		got += n;
	memset(buf, 'a', ANSWER_LEN);
	if (got != REQUEST_LEN || server_step(tc, fd, 2, buf, ANSWER_LEN) != ANSWER_LEN) {
		run_fail(r, "server: request or answer: %s", tls_conn_error(tc));
		goto out;
	}
	while (server_step(tc, fd, 1, buf, sizeof(buf)) > 0)
		;
	rc = 0;
out:
	tls_conn_free(tc);
	return rc;
}

/* OpenSSL hands over each ticket it receives; the newest is offered next. */
static int ossl_new_ticket(SSL *ssl, SSL_SESSION *sess)
{
	struct ossl *o = SSL_get_app_data(ssl);

	SSL_SESSION_free(o->ticket);
	o->ticket = sess;
	return 1;
}

static int ossl_client(struct run *r, int fd, int i)
{
	struct ossl *o = r->ctx;
	SSL *ssl = SSL_new(o->client);
	char buf[256];
	int rc = -1, got = 0;
	const char *why;

	(void)i;
	if (!ssl || SSL_set_fd(ssl, fd) != 1)
		goto out;
	SSL_set_app_data(ssl, o);
	if (o->ticket && SSL_set_session(ssl, o->ticket) != 1)
		goto out;
	if (SSL_connect(ssl) != 1)
		goto out;
	memset(buf, 'q', REQUEST_LEN);
	if (SSL_write(ssl, buf, REQUEST_LEN) != REQUEST_LEN)
		goto out;
	/* The new ticket arrives before the answer and is read with it. */
	while (got < ANSWER_LEN) {
		int n = SSL_read(ssl, buf, sizeof(buf));
		if (n <= 0)
			goto out;
		got += n;
	}
	rc = got == ANSWER_LEN ? 0 : -1;
	/* Closed without close_notify, as tcpexec does; the session stays
	 * resumable once marked shut down. */
	SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
out:
	if (rc < 0) {
		why = ERR_reason_error_string(ERR_peek_last_error());
		run_fail(r, "client: %s", why ? why : "connection closed");
	}
	SSL_free(ssl);
	return rc;
}

static void run_openssl(int lfd)
{
	struct ossl o = { 0 };
	struct run r = { .lfd = lfd, .server = ossl_server, .client = ossl_client, .ctx = &o };
	struct config c;
	char err[256], lib[64];

	memset(&c, 0, sizeof(c));
	snprintf(c.tls_cert, sizeof(c.tls_cert), "%s", opt.cert);
	snprintf(c.tls_key, sizeof(c.tls_key), "%s", opt.key);
	if (tls_tickets_init() < 0 || !(o.server = tls_server_new(&c, err, sizeof(err))))
		die(EXIT_SETUP, "OpenSSL server: %s", err[0] ? err : "no ticket keys");
	/* The client as tcpexec builds it with a CA file: TLS 1.3 only, the
	 * server's certificate verified (in the one full handshake). */
	o.client = SSL_CTX_new(TLS_client_method());
	if (!o.client)
		die(EXIT_SETUP, "OpenSSL client: no context");
	SSL_CTX_set_min_proto_version(o.client, TLS1_3_VERSION);
	SSL_CTX_set_max_proto_version(o.client, TLS1_3_VERSION);
	SSL_CTX_set_options(o.client, SSL_OP_IGNORE_UNEXPECTED_EOF);
	if (SSL_CTX_load_verify_locations(o.client, opt.cert, NULL) != 1)
		die(EXIT_SETUP, "%s: cannot load as a CA", opt.cert);
	SSL_CTX_set_verify(o.client, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_session_cache_mode(o.client, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
	SSL_CTX_sess_set_new_cb(o.client, ossl_new_ticket);

	run_pair(&r, "OpenSSL");
	if (r.resumed != opt.n)
		die(EXIT_FAIL, "OpenSSL: only %d of %d handshakes resumed", r.resumed, opt.n);
	snprintf(lib, sizeof(lib), "openssl-%s", OpenSSL_version(OPENSSL_VERSION_STRING));
	print_run(&r, "openssl-psk_dhe_ke", lib, "psk_dhe_ke");
	SSL_SESSION_free(o.ticket);
	SSL_CTX_free(o.client);
	tls_server_free(o.server);
}

/* X25519 as each end of a psk_dhe_ke handshake uses it: one key made, one
 * shared secret derived. */
static void run_x25519(void)
{
	EVP_PKEY *peer = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
	double start = thread_cpu_us();
	unsigned char secret[32];

	if (!peer)
		die(EXIT_SETUP, "X25519: no key");
	for (int i = 0; i < opt.n; i++) {
		EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
		EVP_PKEY_CTX *ctx = k ? EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL) : NULL;
		size_t len = sizeof(secret);

		if (!ctx || EVP_PKEY_derive_init(ctx) <= 0 || EVP_PKEY_derive_set_peer(ctx, peer) <= 0 ||
		    EVP_PKEY_derive(ctx, secret, &len) <= 0)
			die(EXIT_FAIL, "X25519: derivation failed");
		EVP_PKEY_CTX_free(ctx);
		EVP_PKEY_free(k);
	}
	printf("system=x25519 library=openssl-%s keygen_derive_us=%.0f\n",
	       OpenSSL_version(OPENSSL_VERSION_STRING), (thread_cpu_us() - start) / opt.n);
	EVP_PKEY_free(peer);
}

/* ---- GnuTLS, the other TLS 1.3 library Debian ships, for comparison ---- */
#ifdef HAVE_GNUTLS

struct gnu {
	const char *priority;
	gnutls_certificate_credentials_t server_cred, client_cred;
	gnutls_datum_t ticket_key, ticket;
	int psk_ke;   /* resumed handshakes that made no key exchange */
};

/* After a GnuTLS call returned r < 0: 0 to call it again, -1 failed. */
static int gnutls_again(gnutls_session_t s, int fd, int r)
{
	if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED)
		return -1;
	return wait_fd(fd, gnutls_record_get_direction(s) ? POLLOUT : POLLIN);
}

static gnutls_session_t gnutls_open(struct gnu *g, unsigned flags, int fd)
{
	gnutls_session_t s;

	if (gnutls_init(&s, flags) < 0)
		return NULL;
	gnutls_priority_set_direct(s, g->priority, NULL);
	gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE,
			       flags & GNUTLS_SERVER ? g->server_cred : g->client_cred);
	gnutls_transport_set_int(s, fd);
	return s;
}

/* Read exactly want bytes (or to EOF when want is 0): 0, or -1. */
static int gnutls_read_n(gnutls_session_t s, int fd, int want)
{
	char buf[256];
	int got = 0;

	while (want == 0 || got < want) {
		ssize_t n = gnutls_record_recv(s, buf, sizeof(buf));
		/* GnuTLS may say "again" after it took in a ticket. */
		if (n < 0 && gnutls_again(s, fd, (int)n) == 0)
			continue;
		if (n <= 0)
			return want == 0 ? 0 : -1;
		got += (int)n;
	}
	return got == want ? 0 : -1;
}

static int gnu_server(struct run *r, int fd, int i)
{
	struct gnu *g = r->ctx;
	gnutls_session_t s = gnutls_open(g, GNUTLS_SERVER, fd);
	char buf[ANSWER_LEN];
	int rc;

	if (!s) {
		run_fail(r, "server: no session");
		return -1;
	}
	gnutls_session_ticket_enable_server(s, &g->ticket_key);
	while ((rc = gnutls_handshake(s)) < 0 && gnutls_again(s, fd, rc) == 0)
		;
	if (rc < 0) {
		run_fail(r, "server handshake: %s", gnutls_strerror(rc));
		goto out;
	}
	if (i > 0) {
		r->resumed += gnutls_session_is_resumed(s) != 0;
		g->psk_ke += gnutls_group_get(s) == GNUTLS_GROUP_INVALID;
	}
	memset(buf, 'a', sizeof(buf));
	if (gnutls_read_n(s, fd, REQUEST_LEN) < 0 ||
	    gnutls_record_send(s, buf, sizeof(buf)) != ANSWER_LEN) {
		run_fail(r, "server: request or answer");
		rc = -1;
		goto out;
	}
	gnutls_read_n(s, fd, 0);
out:
	gnutls_deinit(s);
	return rc < 0 ? -1 : 0;
}

static int gnu_client(struct run *r, int fd, int i)
{
	struct gnu *g = r->ctx;
	gnutls_session_t s = gnutls_open(g, GNUTLS_CLIENT, fd);
	char buf[REQUEST_LEN];
	int rc;

	(void)i;
	if (!s) {
		run_fail(r, "client: no session");
		return -1;
	}
	gnutls_session_set_verify_cert(s, NULL, 0);
	if (g->ticket.data)
		gnutls_session_set_data(s, g->ticket.data, g->ticket.size);
	while ((rc = gnutls_handshake(s)) < 0 && gnutls_again(s, fd, rc) == 0)
		;
	memset(buf, 'q', sizeof(buf));
	if (rc < 0 || gnutls_record_send(s, buf, sizeof(buf)) != REQUEST_LEN ||
	    gnutls_read_n(s, fd, ANSWER_LEN) < 0) {
		run_fail(r, "client: %s", rc < 0 ? gnutls_strerror(rc) : "no answer");
		rc = -1;
	} else {
		/* The ticket that came with the answer, for the next connection. */
		gnutls_free(g->ticket.data);
		g->ticket.data = NULL;
		gnutls_session_get_data2(s, &g->ticket);
	}
	gnutls_deinit(s);
	return rc < 0 ? -1 : 0;
}

static void run_gnutls(int lfd, const char *kex, const char *priority)
{
	struct gnu g = { .priority = priority };
	struct run r = { .lfd = lfd, .server = gnu_server, .client = gnu_client, .ctx = &g };
	char system[64], lib[64];
	int e;

	gnutls_certificate_allocate_credentials(&g.server_cred);
	gnutls_certificate_allocate_credentials(&g.client_cred);
	e = gnutls_certificate_set_x509_key_file(g.server_cred, opt.cert, opt.key, GNUTLS_X509_FMT_PEM);
	if (e < 0 || (e = gnutls_certificate_set_x509_trust_file(g.client_cred, opt.cert,
								  GNUTLS_X509_FMT_PEM)) < 0)
		die(EXIT_SETUP, "GnuTLS: %s: %s", opt.cert, gnutls_strerror(e));
	if (gnutls_session_ticket_key_generate(&g.ticket_key) < 0)
		die(EXIT_SETUP, "GnuTLS: no ticket key");
	snprintf(system, sizeof(system), "gnutls-%s", kex);
	run_pair(&r, system);
	/* Say what was measured, not what was asked for. */
	if (r.resumed != opt.n || g.psk_ke != (strcmp(kex, "psk_ke") == 0 ? opt.n : 0))
		die(EXIT_FAIL, "%s: %d of %d handshakes resumed, %d with no key exchange", system,
		    r.resumed, opt.n, g.psk_ke);
	snprintf(lib, sizeof(lib), "gnutls-%s", gnutls_check_version(NULL));
	print_run(&r, system, lib, kex);
	gnutls_free(g.ticket.data);
	gnutls_memset(g.ticket_key.data, 0, g.ticket_key.size);
	gnutls_free(g.ticket_key.data);
	gnutls_certificate_free_credentials(g.server_cred);
	gnutls_certificate_free_credentials(g.client_cred);
}
#endif

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tlsfloor [options] --cert FILE --key FILE\n"
		"\n"
		"  -c, --cert FILE     the server's certificate (PEM); the client trusts it\n"
		"  -k, --key FILE      its private key (PEM, mode 0600)\n"
		"  -n, --handshakes N  resumed handshakes per library, 1..%d (default 2000)\n"
		"  -g, --gnutls        also GnuTLS, with and without a key exchange%s\n"
		"\n"
		"Both ends run on the CPU tlsfloor starts on. Prints one line per run:\n"
		"system=NAME library= kex= handshakes= resumed= server_cpu_us= client_cpu_us=\n"
		"(each end's CPU per connection: handshake, request, answer, close), for\n"
		"plaintext, openssl-psk_dhe_ke and, with --gnutls, gnutls-psk_dhe_ke and\n"
		"gnutls-psk_ke; and system=x25519 keygen_derive_us=.\n", MAX_HANDSHAKES,
#ifdef HAVE_GNUTLS
		""
#else
		" (not built in)"
#endif
		);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ "handshakes", required_argument, NULL, 'n' },
		{ "gnutls", no_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch, lfd;
	char *end;

	while ((ch = getopt_long(argc, argv, "c:k:n:gh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': opt.cert = optarg; break;
		case 'k': opt.key = optarg; break;
		case 'n':
			errno = 0;
			opt.n = (int)strtol(optarg, &end, 10);
			if (errno || *end || opt.n < 1 || opt.n > MAX_HANDSHAKES)
				die(EXIT_USAGE, "--handshakes: a number from 1 to %d", MAX_HANDSHAKES);
			break;
		case 'g': opt.gnutls = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (!opt.cert || !opt.key || optind != argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
#ifndef HAVE_GNUTLS
	if (opt.gnutls)
		die(EXIT_USAGE, "--gnutls: built without GnuTLS (libgnutls28-dev)");
#endif
	/* A peer gone mid-write is an error to report, not a signal to die of. */
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	pin_to_one_cpu();
	lfd = listen_unix();
	run_x25519();
	run_plain(lfd);
	run_openssl(lfd);
#ifdef HAVE_GNUTLS
	if (opt.gnutls) {
		static const char base[] = "NORMAL:-VERS-ALL:+VERS-TLS1.3:-GROUP-ALL:+GROUP-X25519";
		/* With a key exchange on resumption (psk_dhe_ke, as tcpexecd), and
		 * without one (psk_ke: no forward secrecy for resumed sessions). */
		run_gnutls(lfd, "psk_dhe_ke", base);
		run_gnutls(lfd, "psk_ke", "NORMAL:-VERS-ALL:+VERS-TLS1.3:-GROUP-ALL:+GROUP-X25519:"
			   "-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:+PSK");
	}
#endif
	close(lfd);
	return 0;
}
