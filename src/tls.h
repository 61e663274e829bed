/* SPDX-License-Identifier: MIT */
/*
 * TLS 1.3 for the daemon, every OpenSSL call behind one header: the server
 * context (certificate, client CA and CRL, pre-shared keys) built by the
 * master at start and on reload, the session-ticket keys the master
 * rotates in shared memory, and the non-blocking handshake and I/O that a
 * worker's session uses.
 */
#ifndef TCPEXECD_TLS_H
#define TCPEXECD_TLS_H

#include <stddef.h>
#include <sys/types.h>

#include "config.h"

struct tls_server;   /* an SSL_CTX and the PSK table; read-only in workers */
struct tls_conn;     /* one connection's SSL */

/* Master: the context for c, or NULL with err set (a start-up or reload
 * error), or NULL with err empty when c configures no TLS at all. Key files
 * readable by others are refused. */
struct tls_server *tls_server_new(const struct config *c, char *err, size_t errlen);
void tls_server_free(struct tls_server *t);

/* Master: session-ticket keys in a shared mapping, so that a ticket issued
 * by one worker resumes in another. Init once before forking; rotate from
 * the master's tick (the previous key still decrypts). */
int tls_tickets_init(void);
void tls_tickets_rotate(void);

/* Worker: a server-side connection over fd (not owned). */
struct tls_conn *tls_conn_new(struct tls_server *t, int fd);
void tls_conn_free(struct tls_conn *tc);

/* Non-blocking steps. Each returns >= 0 on progress; -1 with *events set
 * to POLLIN or POLLOUT means "wait for that"; -2 is a failure (the reason
 * is in tls_conn_error). tls_handshake returns 1 once done. tls_read
 * returns 0 at the peer's close_notify; an EOF without one is a failure
 * (the stream may have been cut short). */
int tls_handshake(struct tls_conn *tc, short *events);
long tls_read(struct tls_conn *tc, void *buf, size_t len, short *events);
long tls_write(struct tls_conn *tc, const void *buf, size_t len, short *events);
/* Bytes already decrypted and waiting inside OpenSSL (poll cannot see them). */
int tls_pending(const struct tls_conn *tc);
/* After the handshake: the authenticated identity (PSK identity, or the
 * client certificate's first DNS/email SAN, else its CN), "" if none. */
const char *tls_identity(const struct tls_conn *tc);
/* Why the last step failed, for the log (the client sees only a uniform
 * handshake failure). */
const char *tls_conn_error(const struct tls_conn *tc);
int tls_resumed(const struct tls_conn *tc);
/* Send close_notify now, without waiting for the peer's: 0 when it went
 * out whole, -1 when it could not (the caller then closes as before). */
int tls_close_notify(struct tls_conn *tc);

#endif
