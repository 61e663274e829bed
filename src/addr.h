/* SPDX-License-Identifier: MIT */
/*
 * Socket address text forms, shared by the daemon and the client:
 * "A.B.C.D:PORT", "[V6]:PORT", "/unix/path". Pure: no I/O, no logging.
 */
#ifndef TCPEXECD_ADDR_H
#define TCPEXECD_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

struct addr {
	struct sockaddr_storage sa;
	socklen_t len;
};

/* Longest text form: "[" v6 "]:" port, or a Unix path (108). */
#define ADDR_STRLEN 128

/* Parse a numeric listen/connect address. Host names are refused on purpose:
 * a daemon's bind address must not depend on DNS at boot. 0 on success, -1
 * with a reason in err. */
int addr_parse(const char *text, struct addr *out, char *err, size_t errlen);
/* Format as "A.B.C.D:P", "[V6]:P" or the path. Returns buf. */
char *addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen);
/* Format only the host part (no port), IPv4-mapped IPv6 shown as IPv4. */
char *addr_host(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen);
/* Port number of an inet address, 0 for other families. */
unsigned addr_port(const struct sockaddr *sa);
/* A network: "10.0.0.0/8", "::1/128", "192.0.2.7" (a host). IPv4 networks
 * also match IPv4-mapped IPv6 peers. */
struct cidr {
	int family;        /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	int prefix;
};
int addr_cidr_parse(const char *text, struct cidr *out, char *err, size_t errlen);
int addr_cidr_match(const struct cidr *net, const struct sockaddr *sa);

/* True for 127.0.0.0/8, ::1, ::ffff:127.x and Unix sockets. */
int addr_is_local(const struct sockaddr *sa);

/* The TCP congestion control the client, and the daemon by default
 * (loopback_congestion), use on a loopback connection. There is no path
 * to probe or to pace for there: BBR's pacing only adds timers and their
 * interrupts (a third of a worker's CPU time streaming through cat). Reno
 * is always built in and allowed to every user. */
#define ADDR_LOOPBACK_CC "reno"

#endif
