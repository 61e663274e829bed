// SPDX-License-Identifier: MIT
/*
 * Socket address text forms for the daemon and the client: parse
 * "A.B.C.D:PORT", "[V6]:PORT" and "/path", and format addresses back.
 * Pure: no I/O, no logging (unit-tested in tests/unit/test_addr.c).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "addr.h"

static int parse_port(const char *s, unsigned *port)
{
	char *end;
	unsigned long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > 65535)
		return -1;
	*port = (unsigned)v;
	return 0;
}

int addr_parse(const char *text, struct addr *out, char *err, size_t errlen)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon, *port_text;
	unsigned port;
	size_t hlen;

	memset(out, 0, sizeof(*out));
	if (text[0] == '/') {
		struct sockaddr_un *un = (struct sockaddr_un *)&out->sa;
		size_t len = strlen(text);

		if (len >= sizeof(un->sun_path)) {
			snprintf(err, errlen, "Unix socket path longer than %zu bytes",
				 sizeof(un->sun_path) - 1);
			return -1;
		}
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, text, len + 1);
		out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
		return 0;
	}

	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (!close || close[1] != ':') {
			snprintf(err, errlen, "expected [IPV6]:PORT");
			return -1;
		}
		hlen = (size_t)(close - text - 1);
		if (hlen == 0 || hlen >= sizeof(host)) {
			snprintf(err, errlen, "bad IPv6 address");
			return -1;
		}
		memcpy(host, text + 1, hlen);
		host[hlen] = '\0';
		port_text = close + 2;
	} else {
		colon = strrchr(text, ':');
		if (!colon) {
			snprintf(err, errlen, "expected HOST:PORT, [IPV6]:PORT or /path");
			return -1;
		}
		hlen = (size_t)(colon - text);
		if (hlen == 0 || hlen >= sizeof(host) || memchr(text, ':', hlen)) {
			snprintf(err, errlen, "expected HOST:PORT (IPv6 addresses go in brackets)");
			return -1;
		}
		memcpy(host, text, hlen);
		host[hlen] = '\0';
		port_text = colon + 1;
	}
	if (parse_port(port_text, &port) < 0) {
		snprintf(err, errlen, "bad port \"%s\" (0-65535)", port_text);
		return -1;
	}

	if (text[0] == '[') {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->sa;
		if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1) {
			snprintf(err, errlen, "bad IPv6 address \"%s\"", host);
			return -1;
		}
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		out->len = sizeof(*in6);
	} else {
		struct sockaddr_in *in4 = (struct sockaddr_in *)&out->sa;
		if (inet_pton(AF_INET, host, &in4->sin_addr) != 1) {
			snprintf(err, errlen,
				 "\"%s\" is not a numeric IPv4 address (host names are not resolved)",
				 host);
			return -1;
		}
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		out->len = sizeof(*in4);
	}
	return 0;
}

char *addr_host(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen)
{
	switch (sa->sa_family) {
	case AF_INET:
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf,
			  (socklen_t)buflen);
		break;
	case AF_INET6: {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		/* A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d; logs and
		 * rules want the IPv4 form. */
		if (IN6_IS_ADDR_V4MAPPED(a))
			inet_ntop(AF_INET, &a->s6_addr[12], buf, (socklen_t)buflen);
		else
			inet_ntop(AF_INET6, a, buf, (socklen_t)buflen);
		break;
	}
	case AF_UNIX: {
		const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
		size_t plen = len > offsetof(struct sockaddr_un, sun_path)
			? len - offsetof(struct sockaddr_un, sun_path) : 0;
		if (plen == 0 || un->sun_path[0] == '\0')
			snprintf(buf, buflen, "unix");
		else
			snprintf(buf, buflen, "%.*s", (int)strnlen(un->sun_path, plen), un->sun_path);
		break;
	}
	default:
		snprintf(buf, buflen, "?");
	}
	return buf;
}

unsigned addr_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return 0;
}

char *addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen)
{
	char host[INET6_ADDRSTRLEN];
	int mapped = sa->sa_family == AF_INET6 &&
		IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)sa)->sin6_addr);

	if (sa->sa_family == AF_UNIX)
		return addr_host(sa, len, buf, buflen);
	addr_host(sa, len, host, sizeof(host));
	if (sa->sa_family == AF_INET6 && !mapped)
		snprintf(buf, buflen, "[%s]:%u", host, addr_port(sa));
	else
		snprintf(buf, buflen, "%s:%u", host, addr_port(sa));
	return buf;
}

int addr_is_local(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_UNIX)
		return 1;
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_LOOPBACK(a))
			return 1;
		return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
	}
	return 0;
}

int addr_cidr_parse(const char *text, struct cidr *out, char *err, size_t errlen)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(text, '/');
	size_t hlen = slash ? (size_t)(slash - text) : strlen(text);
	unsigned port; /* reused as the prefix length */

	memset(out, 0, sizeof(*out));
	if (hlen == 0 || hlen >= sizeof(host)) {
		snprintf(err, errlen, "expected ADDRESS or ADDRESS/PREFIX");
		return -1;
	}
	memcpy(host, text, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, out->addr) == 1) {
		out->family = AF_INET;
		out->prefix = 32;
	} else if (inet_pton(AF_INET6, host, out->addr) == 1) {
		out->family = AF_INET6;
		out->prefix = 128;
	} else {
		snprintf(err, errlen, "\"%s\" is not a numeric IPv4 or IPv6 address", host);
		return -1;
	}
	if (slash) {
		if (parse_port(slash + 1, &port) < 0 || (int)port > out->prefix) {
			snprintf(err, errlen, "bad prefix length \"%s\" (0-%d)", slash + 1,
				 out->prefix);
			return -1;
		}
		out->prefix = (int)port;
	}
	return 0;
}

static int prefix_equal(const unsigned char *a, const unsigned char *b, int bits)
{
	int bytes = bits / 8, rest = bits % 8;

	if (memcmp(a, b, (size_t)bytes) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return ((a[bytes] ^ b[bytes]) & (0xff << (8 - rest))) == 0;
}

int addr_cidr_match(const struct cidr *net, const struct sockaddr *sa)
{
	const unsigned char *a;
	int family = sa->sa_family;

	if (family == AF_INET) {
		a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
	} else if (family == AF_INET6) {
		a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a)) {
			family = AF_INET;
			a += 12;
		}
	} else {
		return 0;
	}
	return family == net->family && prefix_equal(a, net->addr, net->prefix);
}
