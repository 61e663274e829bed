// SPDX-License-Identifier: MIT
/*
 * TLS 1.3 with OpenSSL, for the daemon. The master builds the server
 * context (certificate chain, client CA with an optional CRL, and a table
 * of external pre-shared keys) at start and on reload, and keeps the
 * session-ticket keys in a shared mapping that it rotates. Workers inherit
 * both across fork() and run non-blocking handshakes and I/O.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tls.h"

#define PSK_MAX 64          /* bytes of one key */
#define PSK_ID_MAX 128

struct psk {
	char identity[PSK_ID_MAX + 1];
	unsigned char key[PSK_MAX];
	unsigned len;
};

struct tls_server {
	SSL_CTX *ctx;
	struct psk *psks;
	int npsks;
	unsigned char decoy[32];  /* makes the key of an unknown identity */
};

struct tls_conn {
	SSL *ssl;
	char identity[PSK_ID_MAX + 1];
	char error[200];
};

/* The connection being handshaken in this worker: a worker serves one at
 * a time, so the PSK callback can record what it saw here. */
static struct {
	char identity[PSK_ID_MAX + 1];
	int known;
} psk_seen;

static void set_err(char *err, size_t errlen, const char *what, const char *path)
{
	unsigned long e = ERR_get_error();
	char buf[160];

	ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(err, errlen, "%s %s: %s", what, path, e ? buf : strerror(errno));
	ERR_clear_error();
}

/* A private key readable by other users is a leak waiting to happen: a
 * start-up error, as sshd does for its host keys. */
static int check_private(const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (st.st_mode & (S_IRWXO | S_IWGRP)) {
		snprintf(err, errlen, "%s: mode %03o: a key file must not be accessible to others "
			 "(chmod 600)", path, (unsigned)(st.st_mode & 0777));
		return -1;
	}
	return 0;
}

static int printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return 0;
	return 1;
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

/* The PSK file: one "identity:hexkey" per line, '#' comments. Keys of 16
 * to 64 bytes (32 to 128 hex digits). */
static int load_psks(struct tls_server *t, const char *path, char *err, size_t errlen)
{
	char line[512];
	int lineno = 0, rc = -1;
	FILE *f;

	if (check_private(path, err, errlen) < 0)
		return -1;
	f = fopen(path, "re");
	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char *colon, *hex;
		struct psk *p;
		size_t hl;

		lineno++;
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] == '#' || line[0] == '\0')
			continue;
		colon = strrchr(line, ':');
		if (!colon || colon == line || colon - line > PSK_ID_MAX) {
			snprintf(err, errlen, "%s:%d: expected identity:hexkey (identity of 1-%d bytes)",
				 path, lineno, PSK_ID_MAX);
			goto out;
		}
		*colon = '\0';
		if (!printable(line)) {
			snprintf(err, errlen, "%s:%d: the identity must be printable, without spaces",
				 path, lineno);
			goto out;
		}
		hex = colon + 1;
		hl = strlen(hex);
		if (hl < 32 || hl > 2 * PSK_MAX || hl % 2) {
			snprintf(err, errlen, "%s:%d: the key must be 32 to %d hex digits", path,
				 lineno, 2 * PSK_MAX);
			goto out;
		}
		p = realloc(t->psks, sizeof(*p) * (size_t)(t->npsks + 1));
		if (!p) {
			snprintf(err, errlen, "out of memory");
			goto out;
		}
		t->psks = p;
		p = &t->psks[t->npsks];
		memset(p, 0, sizeof(*p));
		memcpy(p->identity, line, (size_t)(colon - line) + 1); /* checked: <= PSK_ID_MAX */
		for (size_t i = 0; i < hl / 2; i++) {
			int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
			if (hi < 0 || lo < 0) {
				snprintf(err, errlen, "%s:%d: the key is not hexadecimal", path, lineno);
				goto out;
			}
			p->key[i] = (unsigned char)(hi << 4 | lo);
		}
		p->len = (unsigned)(hl / 2);
		for (int i = 0; i < t->npsks; i++)
			if (strcmp(t->psks[i].identity, p->identity) == 0) {
				snprintf(err, errlen, "%s:%d: identity %s is given twice", path, lineno,
					 p->identity);
				goto out;
			}
		t->npsks++;
	}
	if (t->npsks == 0) {
		snprintf(err, errlen, "%s: no key in the file", path);
		goto out;
	}
	rc = 0;
out:
	OPENSSL_cleanse(line, sizeof(line));
	fclose(f);
	return rc;
}

/* An unknown identity gets a key too, derived from a secret nobody knows:
 * the handshake then fails exactly as with a wrong key (same alert, same
 * work), so a client cannot probe which identities exist. The log says
 * which it was. */
static unsigned int psk_server_cb(SSL *ssl, const char *identity, unsigned char *psk,
				  unsigned int max)
{
	struct tls_server *t = SSL_get_app_data(ssl);
	unsigned int len = 32;

	/* OpenSSL offers every PSK identity here first, session tickets too:
	 * those are binary, ours are printable. Returning 0 lets the ticket
	 * be decrypted. */
	if (!identity || strlen(identity) > PSK_ID_MAX || !printable(identity))
		return 0;
	snprintf(psk_seen.identity, sizeof(psk_seen.identity), "%s", identity ? identity : "");
	psk_seen.known = 0;
	for (int i = 0; identity && i < t->npsks; i++) {
		if (strcmp(t->psks[i].identity, identity) == 0 && t->psks[i].len <= max) {
			memcpy(psk, t->psks[i].key, t->psks[i].len);
			psk_seen.known = 1;
			return t->psks[i].len;
		}
	}
	if (len > max)
		len = max;
	if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, t->decoy, sizeof(t->decoy),
		       (const unsigned char *)psk_seen.identity, strlen(psk_seen.identity),
		       psk, len, NULL))
		RAND_bytes(psk, (int)len);
	return len;
}

/* Ticket keys: current and previous, with a sequence counter so that a
 * worker never reads a half-written key (the master writes rarely). */
struct ticket_key {
	unsigned char name[16];
	unsigned char aes[32];
	unsigned char hmac[32];
};
static struct tickets {
	volatile unsigned seq;
	struct ticket_key cur, prev;
} *tickets;

int tls_tickets_init(void)
{
	void *p = mmap(NULL, sizeof(*tickets), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		       -1, 0);
	if (p == MAP_FAILED)
		return -1;
	tickets = p;
	tls_tickets_rotate();
	tls_tickets_rotate();
	return 0;
}

void tls_tickets_rotate(void)
{
	struct ticket_key k;

	if (!tickets)
		return;
	if (RAND_bytes(k.name, sizeof(k.name)) != 1 || RAND_bytes(k.aes, sizeof(k.aes)) != 1 ||
	    RAND_bytes(k.hmac, sizeof(k.hmac)) != 1)
		return; /* keep the old keys rather than weak ones */
	__atomic_add_fetch(&tickets->seq, 1, __ATOMIC_SEQ_CST);
	tickets->prev = tickets->cur;
	tickets->cur = k;
	__atomic_add_fetch(&tickets->seq, 1, __ATOMIC_SEQ_CST);
	OPENSSL_cleanse(&k, sizeof(k));
}

static void tickets_read(struct ticket_key *cur, struct ticket_key *prev)
{
	unsigned s;

	do {
		s = __atomic_load_n(&tickets->seq, __ATOMIC_SEQ_CST);
		*cur = tickets->cur;
		*prev = tickets->prev;
	} while ((s & 1) || s != __atomic_load_n(&tickets->seq, __ATOMIC_SEQ_CST));
}

/* The ticket cipher, fetched once per process: EVP_aes_256_cbc() in an
 * init call makes OpenSSL 3 look the algorithm up by name every time, two
 * times per resumed handshake (the ticket in, the renewed one out). */
static const EVP_CIPHER *ticket_cipher(void)
{
	static EVP_CIPHER *aes;

	if (!aes)
		aes = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
	return aes ? aes : EVP_aes_256_cbc();
}

static int ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
		     EVP_MAC_CTX *hctx, int enc)
{
	struct ticket_key cur, prev, *k = NULL;
	OSSL_PARAM params[2];
	int rc = -1;

	(void)ssl;
	if (!tickets)
		return 0;
	tickets_read(&cur, &prev);
	if (enc) {
		memcpy(name, cur.name, 16);
		if (RAND_bytes(iv, 16) != 1)
			goto out;
		k = &cur;
	} else if (memcmp(name, cur.name, 16) == 0) {
		k = &cur;
	} else if (memcmp(name, prev.name, 16) == 0) {
		k = &prev;
	} else {
		rc = 0; /* unknown key: a full handshake, no error */
		goto out;
	}
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (!EVP_MAC_init(hctx, k->hmac, sizeof(k->hmac), params))
		goto out;
	if (enc ? !EVP_EncryptInit_ex(cctx, ticket_cipher(), NULL, k->aes, iv)
		: !EVP_DecryptInit_ex(cctx, ticket_cipher(), NULL, k->aes, iv))
		goto out;
	/* 2 asks the peer to renew a ticket made with the previous key. */
	rc = !enc && k == &prev ? 2 : 1;
out:
	OPENSSL_cleanse(&cur, sizeof(cur));
	OPENSSL_cleanse(&prev, sizeof(prev));
	return rc;
}

/* Who the peer proved to be in this handshake: the PSK identity, or the
 * client certificate's first DNS/email SAN, else its CN. */
static void handshake_identity(SSL *ssl, char *out, size_t cap)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);
	GENERAL_NAMES *names;

	out[0] = '\0';
	if (psk_seen.known) {
		snprintf(out, cap, "%s", psk_seen.identity);
		return;
	}
	if (!cert)
		return;
	names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
		GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		if (gn->type == GEN_DNS || gn->type == GEN_EMAIL) {
			const unsigned char *s = ASN1_STRING_get0_data(gn->d.ia5);
			int len = ASN1_STRING_length(gn->d.ia5);
			if (len > 0 && len <= PSK_ID_MAX && !memchr(s, '\0', (size_t)len)) {
				snprintf(out, cap, "%.*s", len, s);
				break;
			}
		}
	}
	GENERAL_NAMES_free(names);
	if (!out[0])
		X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, out,
					  (int)cap);
}

/* A ticket carries the identity it was issued to, so that a resumed
 * session (which runs no PSK callback and may have no certificate) is
 * still the same client to the policy. */
static int ticket_gen_cb(SSL *ssl, void *arg)
{
	char id[PSK_ID_MAX + 1];

	(void)arg;
	/* A renewed ticket for a resumed session: the session already holds
	 * the identity from the ticket it came with. */
	if (SSL_session_reused(ssl) && !psk_seen.known)
		return 1;
	handshake_identity(ssl, id, sizeof(id));
	return SSL_SESSION_set1_ticket_appdata(SSL_get0_session(ssl), id, strlen(id)) == 1;
}

static SSL_TICKET_RETURN ticket_dec_cb(SSL *ssl, SSL_SESSION *ss, const unsigned char *name,
				       size_t namelen, SSL_TICKET_STATUS status, void *arg)
{
	(void)ssl;
	(void)ss;
	(void)name;
	(void)namelen;
	(void)arg;
	switch (status) {
	case SSL_TICKET_SUCCESS:
	case SSL_TICKET_SUCCESS_RENEW:
		/* A new ticket each time: clients use a TLS 1.3 ticket once, so
		 * without one the next connection would be a full handshake. */
		return SSL_TICKET_RETURN_USE_RENEW;
	case SSL_TICKET_FATAL_ERR_MALLOC:
	case SSL_TICKET_FATAL_ERR_OTHER:
		return SSL_TICKET_RETURN_ABORT;
	default:
		return SSL_TICKET_RETURN_IGNORE_RENEW;
	}
}

static void take_identity(struct tls_conn *tc)
{
	void *data;
	size_t len;

	if (SSL_session_reused(tc->ssl) && !psk_seen.known) {
		if (SSL_SESSION_get0_ticket_appdata(SSL_get0_session(tc->ssl), &data, &len) == 1 &&
		    len < sizeof(tc->identity)) {
			/* The ticket of an anonymous session holds no bytes, and
			 * OpenSSL then gives a null pointer: not for memcpy. */
			if (len)
				memcpy(tc->identity, data, len);
			tc->identity[len] = '\0';
		}
		return;
	}
	handshake_identity(tc->ssl, tc->identity, sizeof(tc->identity));
}

struct tls_server *tls_server_new(const struct config *c, char *err, size_t errlen)
{
	struct tls_server *t;

	err[0] = '\0';
	if (!c->tls_cert[0] && !c->tls_psk_file[0])
		return NULL;
	t = calloc(1, sizeof(*t));
	if (!t || !(t->ctx = SSL_CTX_new(TLS_server_method()))) {
		snprintf(err, errlen, "TLS: cannot create a context");
		free(t);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(t->ctx, TLS1_3_VERSION);
	SSL_CTX_set_max_proto_version(t->ctx, TLS1_3_VERSION);
	/* Stateless tickets only: a worker-local session cache would not be
	 * seen by the other workers. */
	SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(t->ctx, 1);
	SSL_CTX_set_tlsext_ticket_key_evp_cb(t->ctx, ticket_cb);
	SSL_CTX_set_session_ticket_cb(t->ctx, ticket_gen_cb, ticket_dec_cb, NULL);
	/* SHA-256 suites first, chosen by the server: a pre-shared key is
	 * bound to SHA-256 and would be skipped under a SHA-384 suite. */
	SSL_CTX_set_ciphersuites(t->ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:"
				 "TLS_AES_256_GCM_SHA384");
	SSL_CTX_set_options(t->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* Needed to resume sessions of verified client certificates. */
	SSL_CTX_set_session_id_context(t->ctx, (const unsigned char *)"tcpexecd", 8);
	/* The session's output buffer is compacted between retries. */
	SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
			 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

	if (c->tls_cert[0]) {
		if (check_private(c->tls_key, err, errlen) < 0)
			goto fail;
		if (SSL_CTX_use_certificate_chain_file(t->ctx, c->tls_cert) != 1) {
			set_err(err, errlen, "tls_cert", c->tls_cert);
			goto fail;
		}
		if (SSL_CTX_use_PrivateKey_file(t->ctx, c->tls_key, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(t->ctx) != 1) {
			set_err(err, errlen, "tls_key", c->tls_key);
			goto fail;
		}
	}
	if (c->tls_ca[0]) {
		X509_STORE *store = SSL_CTX_get_cert_store(t->ctx);
		if (SSL_CTX_load_verify_locations(t->ctx, c->tls_ca, NULL) != 1) {
			set_err(err, errlen, "tls_ca", c->tls_ca);
			goto fail;
		}
		SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
		if (c->tls_crl[0]) {
			X509_LOOKUP *lu = X509_STORE_add_lookup(store, X509_LOOKUP_file());
			if (!lu || X509_load_crl_file(lu, c->tls_crl, X509_FILETYPE_PEM) <= 0) {
				set_err(err, errlen, "tls_crl", c->tls_crl);
				goto fail;
			}
			X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
		}
	}
	if (c->tls_psk_file[0]) {
		if (load_psks(t, c->tls_psk_file, err, errlen) < 0)
			goto fail;
		if (RAND_bytes(t->decoy, sizeof(t->decoy)) != 1) {
			snprintf(err, errlen, "TLS: no randomness");
			goto fail;
		}
		SSL_CTX_set_psk_server_callback(t->ctx, psk_server_cb);
	}
	return t;
fail:
	tls_server_free(t);
	return NULL;
}

void tls_server_free(struct tls_server *t)
{
	if (!t)
		return;
	SSL_CTX_free(t->ctx);
	if (t->psks)
		OPENSSL_cleanse(t->psks, sizeof(*t->psks) * (size_t)t->npsks);
	free(t->psks);
	free(t);
}

struct tls_conn *tls_conn_new(struct tls_server *t, int fd)
{
	struct tls_conn *tc = calloc(1, sizeof(*tc));

	if (!tc)
		return NULL;
	tc->ssl = SSL_new(t->ctx);
	if (!tc->ssl || SSL_set_fd(tc->ssl, fd) != 1) {
		tls_conn_free(tc);
		return NULL;
	}
	SSL_set_app_data(tc->ssl, t);
	memset(&psk_seen, 0, sizeof(psk_seen));
	return tc;
}

void tls_conn_free(struct tls_conn *tc)
{
	if (!tc)
		return;
	SSL_free(tc->ssl);
	free(tc);
	ERR_clear_error();
}

/* Map an OpenSSL result to the conventions in tls.h. */
static int classify(struct tls_conn *tc, int r, short *events, const char *what)
{
	int e = SSL_get_error(tc->ssl, r);
	unsigned long q;

	switch (e) {
	case SSL_ERROR_WANT_READ:
		*events = POLLIN;
		return -1;
	case SSL_ERROR_WANT_WRITE:
		*events = POLLOUT;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		if (errno == EAGAIN || errno == EINTR) {
			*events = POLLIN;
			return -1;
		}
		snprintf(tc->error, sizeof(tc->error), "%s: %s", what,
			 errno ? strerror(errno) : "connection closed");
		return -2;
	default:
		q = ERR_get_error();
		snprintf(tc->error, sizeof(tc->error), "%s: %s", what,
			 q ? ERR_reason_error_string(q) : "protocol error");
		ERR_clear_error();
		return -2;
	}
}

int tls_handshake(struct tls_conn *tc, short *events)
{
	int r;

	ERR_clear_error();
	r = SSL_accept(tc->ssl);
	if (r == 1) {
		take_identity(tc);
		return 1;
	}
	r = classify(tc, r, events, "TLS handshake");
	if (r == -2 || r == 0) {
		long v = SSL_get_verify_result(tc->ssl);
		if (psk_seen.identity[0] && !psk_seen.known)
			snprintf(tc->error, sizeof(tc->error), "TLS handshake failed: unknown PSK "
				 "identity \"%.64s\"", psk_seen.identity);
		else if (psk_seen.identity[0] && strstr(tc->error, "binder"))
			snprintf(tc->error, sizeof(tc->error), "TLS handshake failed: wrong key for "
				 "PSK identity \"%.64s\"", psk_seen.identity);
		else if (v != X509_V_OK)
			snprintf(tc->error, sizeof(tc->error), "TLS handshake failed: client "
				 "certificate: %s", X509_verify_cert_error_string(v));
		else if (r == 0)
			snprintf(tc->error, sizeof(tc->error), "TLS handshake: closed by the client");
		return -2;
	}
	return r;
}

long tls_read(struct tls_conn *tc, void *buf, size_t len, short *events)
{
	int r;

	ERR_clear_error();
	r = SSL_read(tc->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
	return r > 0 ? r : classify(tc, r, events, "TLS read");
}

long tls_write(struct tls_conn *tc, const void *buf, size_t len, short *events)
{
	int r;

	ERR_clear_error();
	r = SSL_write(tc->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
	if (r > 0)
		return r;
	r = classify(tc, r, events, "TLS write");
	return r == 0 ? -2 : r;
}

int tls_pending(const struct tls_conn *tc)
{
	return SSL_pending(tc->ssl);
}

const char *tls_identity(const struct tls_conn *tc)
{
	return tc->identity;
}

const char *tls_conn_error(const struct tls_conn *tc)
{
	return tc->error;
}

int tls_resumed(const struct tls_conn *tc)
{
	/* OpenSSL counts an external PSK as a "reuse"; a ticket is not one. */
	return SSL_session_reused(tc->ssl) && !psk_seen.known;
}

int tls_close_notify(struct tls_conn *tc)
{
	int r;

	ERR_clear_error();
	/* 0: ours went out, the peer's is not in (and is not waited for);
	 * 1: both. Below 0 the alert did not fit in the socket buffer. */
	r = SSL_shutdown(tc->ssl);
	ERR_clear_error();
	return r >= 0 ? 0 : -1;
}
