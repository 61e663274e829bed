// SPDX-License-Identifier: MIT
/* Unit test of addr.c: every accepted and refused text form, and the
 * formatting back, including IPv4-mapped IPv6 peers shown as IPv4. */
#include <arpa/inet.h>
#include <string.h>
#include <sys/un.h>

#include "addr.h"
#include "check.h"

static int parses(const char *text)
{
	char err[160];
	struct addr a;
	return addr_parse(text, &a, err, sizeof(err)) == 0;
}

static const char *roundtrip(const char *text, char *buf, size_t len)
{
	char err[160];
	struct addr a;
	if (addr_parse(text, &a, err, sizeof(err)) < 0)
		return "(error)";
	return addr_format((struct sockaddr *)&a.sa, a.len, buf, len);
}

int main(void)
{
	char buf[ADDR_STRLEN], err[160];
	struct sockaddr_in6 m = { .sin6_family = AF_INET6, .sin6_port = htons(99) };
	struct addr a;

	CHECK(parses("127.0.0.1:5151"));
	CHECK(parses("0.0.0.0:0"));
	CHECK(parses("[::1]:5151"));
	CHECK(parses("[::]:65535"));
	CHECK(parses("/run/tcpexecd.sock"));
	CHECK(!parses("localhost:5151"));      /* no DNS */
	CHECK(!parses("127.0.0.1"));           /* no port */
	CHECK(!parses("127.0.0.1:"));
	CHECK(!parses("127.0.0.1:65536"));
	CHECK(!parses("127.0.0.1:-1"));
	CHECK(!parses("127.0.0.1:12x"));
	CHECK(!parses("::1:5151"));            /* IPv6 needs brackets */
	CHECK(!parses("[::1]5151"));
	CHECK(!parses("[]:1"));
	CHECK(!parses("[zz]:1"));
	CHECK(!parses("1.2.3.256:1"));
	CHECK(!parses(""));
	memset(buf, 'x', sizeof(buf) - 1);
	buf[0] = '/';
	buf[sizeof(buf) - 1] = '\0';
	CHECK(!parses(buf)); /* longer than sun_path */

	CHECK(addr_parse("nohost", &a, err, sizeof(err)) < 0 && strstr(err, "HOST:PORT"));

	CHECK(strcmp(roundtrip("127.0.0.1:80", buf, sizeof(buf)), "127.0.0.1:80") == 0);
	CHECK(strcmp(roundtrip("[::1]:80", buf, sizeof(buf)), "[::1]:80") == 0);
	CHECK(strcmp(roundtrip("[2001:db8::0001]:1", buf, sizeof(buf)), "[2001:db8::1]:1") == 0);
	CHECK(strcmp(roundtrip("/tmp/s", buf, sizeof(buf)), "/tmp/s") == 0);

	inet_pton(AF_INET6, "::ffff:10.1.2.3", &m.sin6_addr);
	CHECK(strcmp(addr_format((struct sockaddr *)&m, sizeof(m), buf, sizeof(buf)),
		     "10.1.2.3:99") == 0);
	CHECK(strcmp(addr_host((struct sockaddr *)&m, sizeof(m), buf, sizeof(buf)),
		     "10.1.2.3") == 0);
	CHECK(!addr_is_local((struct sockaddr *)&m));
	inet_pton(AF_INET6, "::ffff:127.0.0.9", &m.sin6_addr);
	CHECK(addr_is_local((struct sockaddr *)&m));

	addr_parse("127.1.2.3:1", &a, err, sizeof(err));
	CHECK(addr_is_local((struct sockaddr *)&a.sa));
	addr_parse("128.0.0.1:1", &a, err, sizeof(err));
	CHECK(!addr_is_local((struct sockaddr *)&a.sa));
	addr_parse("[::1]:1", &a, err, sizeof(err));
	CHECK(addr_is_local((struct sockaddr *)&a.sa) && addr_port((struct sockaddr *)&a.sa) == 1);
	addr_parse("[::2]:1", &a, err, sizeof(err));
	CHECK(!addr_is_local((struct sockaddr *)&a.sa));

	{
		struct cidr n;
		struct addr p4, p6;
		CHECK(addr_cidr_parse("10.0.0.0/8", &n, err, sizeof(err)) == 0 && n.prefix == 8);
		addr_parse("10.200.1.1:1", &p4, err, sizeof(err));
		CHECK(addr_cidr_match(&n, (struct sockaddr *)&p4.sa));
		addr_parse("[::ffff:10.9.9.9]:1", &p6, err, sizeof(err));
		CHECK(addr_cidr_match(&n, (struct sockaddr *)&p6.sa)); /* mapped */
		addr_parse("11.0.0.1:1", &p4, err, sizeof(err));
		CHECK(!addr_cidr_match(&n, (struct sockaddr *)&p4.sa));
		CHECK(addr_cidr_parse("192.0.2.128/25", &n, err, sizeof(err)) == 0);
		addr_parse("192.0.2.200:1", &p4, err, sizeof(err));
		CHECK(addr_cidr_match(&n, (struct sockaddr *)&p4.sa));
		addr_parse("192.0.2.127:1", &p4, err, sizeof(err));
		CHECK(!addr_cidr_match(&n, (struct sockaddr *)&p4.sa));
		CHECK(addr_cidr_parse("::1", &n, err, sizeof(err)) == 0 && n.prefix == 128);
		addr_parse("[::1]:1", &p6, err, sizeof(err));
		CHECK(addr_cidr_match(&n, (struct sockaddr *)&p6.sa));
		addr_parse("127.0.0.1:1", &p4, err, sizeof(err));
		CHECK(!addr_cidr_match(&n, (struct sockaddr *)&p4.sa));
		CHECK(addr_cidr_parse("0.0.0.0/0", &n, err, sizeof(err)) == 0);
		CHECK(addr_cidr_match(&n, (struct sockaddr *)&p4.sa));
		CHECK(addr_cidr_parse("2001:db8::/33", &n, err, sizeof(err)) == 0);
		CHECK(addr_cidr_parse("10.0.0.0/33", &n, err, sizeof(err)) < 0);
		CHECK(addr_cidr_parse("10.0.0.0/", &n, err, sizeof(err)) < 0);
		CHECK(addr_cidr_parse("host/8", &n, err, sizeof(err)) < 0);
		CHECK(addr_cidr_parse("", &n, err, sizeof(err)) < 0);
	}
	return CHECK_DONE();
}
