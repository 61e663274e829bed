/* SPDX-License-Identifier: MIT */
/*
 * Unit test for src/protocol.c, linked with that module alone. Pins the wire
 * format against hand-written hex vectors, checks round trips for every frame
 * type, incremental parsing (split and back-to-back frames) and each refusal.
 * Exit status 0 on success; each failed check prints file:line and the test.
 */
#include "protocol.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

/* assert() would vanish under NDEBUG, which a release build may define. A
 * failed check ends the current test function, since later checks in it often
 * rely on the one that failed (a decoded struct, a length). */
#define CHECK(cond)                                                           \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "%s:%d: %s: check failed: %s\n",      \
				__FILE__, __LINE__, __func__, #cond);         \
			failures++;                                           \
			return;                                               \
		}                                                             \
	} while (0)

/* Parse hex digits into out, skipping spaces; returns the byte count. */
static size_t unhex(uint8_t *out, size_t cap, const char *s)
{
	size_t n = 0;

	while (*s) {
		unsigned v;

		if (*s == ' ') {
			s++;
			continue;
		}
		if (n == cap || !isxdigit((unsigned char)s[0]) ||
		    !isxdigit((unsigned char)s[1]) || sscanf(s, "%2x", &v) != 1) {
			fprintf(stderr, "bad test vector near \"%s\"\n", s);
			exit(2);
		}
		out[n++] = (uint8_t)v;
		s += 2;
	}
	return n;
}

/* Every test vector, as a frame on the wire. */
#define HEX_HELLO_MIN "01 00000005 54435058 01"
#define HEX_HELLO_FULL                                                        \
	"01 00000026 54435058 01"                                             \
	" 01 000b 746370657865632f302e31" /* SOFTWARE "tcpexec/0.1" */       \
	" 02 0004 00010000"                /* MAX_PAYLOAD 65536 */            \
	" 03 0005 616c696365"              /* AUTH_IDENTITY "alice" */        \
	" 81 0001 01"                      /* AUTH_METHOD 1 */
#define HEX_HELLO_OK                                                          \
	"81 0000001d 54435058 01"                                             \
	" 01 000e 74637065786563642f302e312e30" /* "tcpexecd/0.1.0" */        \
	" 02 0004 00100000"                     /* MAX_PAYLOAD 1 MiB */
#define HEX_REQUEST                                                           \
	"02 0000002a"                                                         \
	" 81 00000004 6563686f" /* ARG "echo" */                              \
	" 81 00000002 6869"     /* ARG "hi" */                                \
	" 82 00000003 413d62"   /* ENV "A=b" */                               \
	" 83 00000004 000003e8" /* TIMEOUT_MS 1000 */                         \
	" 84 00000004 00000001" /* FLAGS NO_STDIN */
#define HEX_STDIN "03 00000003 616263"
#define HEX_STDIN_EMPTY "03 00000000"
#define HEX_EOF "04 00000000"
#define HEX_SIGNAL "05 00000001 0f"
#define HEX_STDOUT "82 00000003 6f6b0a"
#define HEX_STDERR "83 00000000"
#define HEX_EXIT_CODE "84 0000000c 00 03 00 00 000000000016e360"
#define HEX_EXIT_SIGNAL "84 0000000c 01 09 01 00 0102030405060708"
#define HEX_ERROR                                                             \
	"85 00000011 0002 6e6f207375636820636f6d6d616e64" /* "no such command" */

static const char *const all_vectors[] = {
	HEX_HELLO_MIN, HEX_HELLO_FULL, HEX_HELLO_OK, HEX_REQUEST, HEX_STDIN,
	HEX_STDIN_EMPTY, HEX_EOF, HEX_SIGNAL, HEX_STDOUT, HEX_STDERR,
	HEX_EXIT_CODE, HEX_EXIT_SIGNAL, HEX_ERROR,
};
#define NVECTORS (sizeof(all_vectors) / sizeof(all_vectors[0]))

/* Encoders must never write past cap: the bytes after it are a canary. */
#define CANARY 0xa5

static int canary_intact(const uint8_t *buf, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		if (buf[i] != CANARY)
			return 0;
	return 1;
}

static void test_header(void)
{
	uint8_t h[PROTO_HEADER_LEN];

	proto_put_header(h, 0x84, 0x0102030au);
	CHECK(h[0] == 0x84 && h[1] == 0x01 && h[2] == 0x02 && h[3] == 0x03 &&
	      h[4] == 0x0a);
}

static void test_is_framed(void)
{
	CHECK(proto_is_framed(0x01));
	CHECK(!proto_is_framed('e'));
	CHECK(!proto_is_framed(0x00));
	CHECK(!proto_is_framed(0x02));
	CHECK(!proto_is_framed(0x81));
	CHECK(!proto_is_framed('\n'));
}

static void test_hello_vectors(void)
{
	uint8_t want[128], got[128];
	struct proto_frame f;
	struct proto_hello h = { .version = 1, .auth_method = -1 };
	size_t n;
	long r;

	/* The smallest HELLO: magic and version, no fields. */
	n = unhex(want, sizeof(want), HEX_HELLO_MIN);
	r = proto_encode_hello(got, sizeof(got), PROTO_HELLO, &h);
	CHECK(r == (long)n && memcmp(got, want, n) == 0);
	CHECK(proto_frame_parse(want, n, PROTO_MAX_HELLO, &f) == (long)n);
	CHECK(f.type == PROTO_HELLO && f.len == 5);
	memset(&h, 0x55, sizeof(h));
	CHECK(proto_decode_hello(&f, &h) == 0);
	CHECK(h.version == 1 && h.software == NULL && h.identity == NULL);
	CHECK(h.auth_method == -1 && h.max_payload == 0);

	/* Every v1 field, in the order the encoder writes them. */
	n = unhex(want, sizeof(want), HEX_HELLO_FULL);
	h = (struct proto_hello){
		.version = 1,
		.software = "tcpexec/0.1",
		.software_len = 11,
		.identity = "alice",
		.identity_len = 5,
		.auth_method = 1,
		.max_payload = 65536,
	};
	r = proto_encode_hello(got, sizeof(got), PROTO_HELLO, &h);
	CHECK(r == (long)n && memcmp(got, want, n) == 0);
	CHECK(proto_frame_parse(want, n, PROTO_MAX_HELLO, &f) == (long)n);
	memset(&h, 0, sizeof(h));
	CHECK(proto_decode_hello(&f, &h) == 0);
	CHECK(h.version == 1);
	CHECK(h.software_len == 11 && memcmp(h.software, "tcpexec/0.1", 11) == 0);
	CHECK(h.identity_len == 5 && memcmp(h.identity, "alice", 5) == 0);
	CHECK(h.auth_method == 1 && h.max_payload == 65536);

	/* HELLO_OK: the server's answer, same layout, type 0x81. */
	n = unhex(want, sizeof(want), HEX_HELLO_OK);
	h = (struct proto_hello){
		.version = 1,
		.software = "tcpexecd/0.1.0",
		.software_len = 14,
		.auth_method = -1,
		.max_payload = 1u << 20,
	};
	r = proto_encode_hello(got, sizeof(got), PROTO_HELLO_OK, &h);
	CHECK(r == (long)n && memcmp(got, want, n) == 0);
	CHECK(proto_frame_parse(want, n, PROTO_MAX_HELLO, &f) == (long)n);
	memset(&h, 0, sizeof(h));
	CHECK(proto_decode_hello(&f, &h) == 0);
	CHECK(h.software_len == 14 && memcmp(h.software, "tcpexecd/0.1.0", 14) == 0);
	CHECK(h.identity == NULL && h.auth_method == -1);
	CHECK(h.max_payload == 1u << 20);
}

/* Decode a HELLO payload given in hex (without the header). */
static int hello_payload(const char *hex, struct proto_hello *h)
{
	static uint8_t p[PROTO_MAX_HELLO + 64];
	struct proto_frame f = { .type = PROTO_HELLO };

	f.len = (uint32_t)unhex(p, sizeof(p), hex);
	f.payload = p;
	return proto_decode_hello(&f, h);
}

static void test_hello_refusals(void)
{
	struct proto_hello h;
	static uint8_t big[PROTO_MAX_HELLO + 8], huge[UINT16_MAX + 1];
	uint8_t buf[64];
	struct proto_frame f;

	/* An unknown non-critical field is skipped, the known ones still count. */
	CHECK(hello_payload("54435058 01 10 0003 787878 01 0001 61", &h) == 0);
	CHECK(h.software_len == 1 && h.software[0] == 'a');
	CHECK(hello_payload("54435058 01 7f 0000", &h) == 0);
	/* An unknown critical field is refused: answer VERSION. */
	CHECK(hello_payload("54435058 01 90 0001 00", &h) == -EPROTONOSUPPORT);
	CHECK(hello_payload("54435058 01 ff 0000", &h) == -EPROTONOSUPPORT);
	/* A newer client offering version 7 still decodes. */
	CHECK(hello_payload("54435058 07", &h) == 0 && h.version == 7);

	CHECK(hello_payload("", &h) == -EBADMSG);
	CHECK(hello_payload("54435058", &h) == -EBADMSG);          /* no version */
	CHECK(hello_payload("54435059 01", &h) == -EBADMSG);       /* magic */
	CHECK(hello_payload("54435058 00", &h) == -EBADMSG);       /* version 0 */
	CHECK(hello_payload("54435058 01 01", &h) == -EBADMSG);    /* cut TLV header */
	CHECK(hello_payload("54435058 01 01 00", &h) == -EBADMSG);
	CHECK(hello_payload("54435058 01 01 0002 61", &h) == -EBADMSG); /* cut value */
	CHECK(hello_payload("54435058 01 10 0002 61", &h) == -EBADMSG); /* even unknown */
	CHECK(hello_payload("54435058 01 01 0001 61 01 0001 62", &h) == -EBADMSG); /* dup */
	CHECK(hello_payload("54435058 01 01 0003 610062", &h) == -EBADMSG); /* NUL */
	CHECK(hello_payload("54435058 01 03 0002 6100", &h) == -EBADMSG);
	CHECK(hello_payload("54435058 01 02 0003 010000", &h) == -EBADMSG); /* u32 len */
	CHECK(hello_payload("54435058 01 02 0004 00000fff", &h) == -EINVAL); /* < 4096 */
	CHECK(hello_payload("54435058 01 02 0004 00001000", &h) == 0 &&
	      h.max_payload == 4096);
	CHECK(hello_payload("54435058 01 81 0002 0101", &h) == -EBADMSG); /* method len */
	CHECK(hello_payload("54435058 01 81 0001 ff", &h) == 0 && h.auth_method == 255);

	/* Larger than PROTO_MAX_HELLO, even if well-formed. */
	memset(big, 0, sizeof(big));
	memcpy(big, "TCPX\x01\x10\x10\x00", 8);
	f = (struct proto_frame){ .type = PROTO_HELLO, .len = 8 + 0x1000, .payload = big };
	CHECK(proto_decode_hello(&f, &h) == -EMSGSIZE);
	f.len = PROTO_MAX_HELLO;
	big[6] = 0x0f;
	big[7] = 0xf8; /* 4096 - 8 */
	CHECK(proto_decode_hello(&f, &h) == 0);

	/* Another frame type is not a HELLO. */
	f = (struct proto_frame){ .type = PROTO_REQUEST, .len = 5,
				  .payload = (const uint8_t *)"TCPX\x01" };
	CHECK(proto_decode_hello(&f, &h) == -EBADMSG);

	/* The encoder refuses what the decoder would. */
	h = (struct proto_hello){ .version = 1, .auth_method = -1 };
	CHECK(proto_encode_hello(buf, sizeof(buf), PROTO_REQUEST, &h) == -EINVAL);
	h.version = 0;
	CHECK(proto_encode_hello(buf, sizeof(buf), PROTO_HELLO, &h) == -EINVAL);
	h.version = 1;
	h.auth_method = 256;
	CHECK(proto_encode_hello(buf, sizeof(buf), PROTO_HELLO, &h) == -EINVAL);
	h.auth_method = -2;
	CHECK(proto_encode_hello(buf, sizeof(buf), PROTO_HELLO, &h) == -EINVAL);
	h.auth_method = -1;
	h.max_payload = 100;
	CHECK(proto_encode_hello(buf, sizeof(buf), PROTO_HELLO, &h) == -EINVAL);
	h.max_payload = 0;
	h.software = "a\0b";
	h.software_len = 3;
	CHECK(proto_encode_hello(buf, sizeof(buf), PROTO_HELLO, &h) == -EINVAL);
	/* A field longer than its u16 length can say. */
	memset(huge, 'x', sizeof(huge));
	h.software = (const char *)huge;
	h.software_len = sizeof(huge);
	CHECK(proto_encode_hello(buf, sizeof(buf), PROTO_HELLO, &h) == -EMSGSIZE);
	/* A HELLO over PROTO_MAX_HELLO is never produced. */
	h.software_len = PROTO_MAX_HELLO;
	CHECK(proto_encode_hello(big, sizeof(big), PROTO_HELLO, &h) == -EMSGSIZE);
	/* A present but empty text field survives the round trip. */
	h.software = "";
	h.software_len = 0;
	CHECK(proto_encode_hello(buf, sizeof(buf), PROTO_HELLO, &h) == 13);
	CHECK(proto_frame_parse(buf, 13, PROTO_MAX_HELLO, &f) == 13);
	CHECK(proto_decode_hello(&f, &h) == 0);
	CHECK(h.software != NULL && h.software_len == 0);
}

static void test_version_choose(void)
{
	CHECK(proto_version_choose(0) == -EPROTONOSUPPORT);
	CHECK(proto_version_choose(1) == 1);
	CHECK(proto_version_choose(200) == PROTO_VERSION);
}

static void test_request_vector(void)
{
	static const char *const argv[] = { "echo", "hi", NULL };
	static const char *const envp[] = { "A=b", NULL };
	uint8_t want[128], got[128];
	char strbuf[128];
	struct proto_request r;
	struct proto_frame f;
	size_t n;
	long len;

	n = unhex(want, sizeof(want), HEX_REQUEST);
	len = proto_encode_request(got, sizeof(got), argv, envp, 1000,
				   PROTO_RF_NO_STDIN);
	CHECK(len == (long)n && memcmp(got, want, n) == 0);
	CHECK(proto_frame_parse(want, n, 1024, &f) == (long)n);
	CHECK(f.type == PROTO_REQUEST && f.len == n - PROTO_HEADER_LEN);
	/* The documented bound: a strbuf of the payload's size is enough. */
	CHECK(proto_decode_request(&f, &r, strbuf, f.len) == 0);
	CHECK(r.argc == 2 && strcmp(r.argv[0], "echo") == 0 &&
	      strcmp(r.argv[1], "hi") == 0 && r.argv[2] == NULL);
	CHECK(r.envc == 1 && strcmp(r.envp[0], "A=b") == 0 && r.envp[1] == NULL);
	CHECK(r.timeout_ms == 1000 && r.flags == PROTO_RF_NO_STDIN);

	/* Without ENV, TIMEOUT_MS and FLAGS: only the ARG fields are sent. */
	len = proto_encode_request(got, sizeof(got), argv, NULL, 0, 0);
	CHECK(len == PROTO_HEADER_LEN + 5 + 4 + 5 + 2);
	CHECK(proto_frame_parse(got, (size_t)len, 1024, &f) == len);
	CHECK(proto_decode_request(&f, &r, strbuf, sizeof(strbuf)) == 0);
	CHECK(r.argc == 2 && r.envc == 0 && r.envp[0] == NULL);
	CHECK(r.timeout_ms == 0 && r.flags == 0);

	/* LAST (bit 1) with NO_STDIN. */
	len = proto_encode_request(got, sizeof(got), argv, NULL, 0,
				   PROTO_RF_NO_STDIN | PROTO_RF_LAST);
	CHECK(proto_frame_parse(got, (size_t)len, 1024, &f) == len);
	CHECK(proto_decode_request(&f, &r, strbuf, sizeof(strbuf)) == 0);
	CHECK(r.flags == (PROTO_RF_NO_STDIN | PROTO_RF_LAST));
}

/* Decode a REQUEST payload given in hex (without the header). */
static int request_payload(const char *hex, struct proto_request *r)
{
	static uint8_t p[4096];
	static char strbuf[4096];
	struct proto_frame f = { .type = PROTO_REQUEST };

	f.len = (uint32_t)unhex(p, sizeof(p), hex);
	f.payload = p;
	return proto_decode_request(&f, r, strbuf, sizeof(strbuf));
}

static void test_request_refusals(void)
{
	static struct proto_request r;

	/* Unknown non-critical fields are skipped wherever they appear. */
	CHECK(request_payload("01 00000002 6868 81 00000001 6c 7f 00000000", &r) == 0);
	CHECK(r.argc == 1 && strcmp(r.argv[0], "l") == 0);
	/* Unknown critical fields and unknown flag bits are refused. */
	CHECK(request_payload("81 00000001 6c 85 00000000", &r) == -EPROTONOSUPPORT);
	CHECK(request_payload("81 00000001 6c 84 00000004 00000004", &r) == -EPROTONOSUPPORT);
	CHECK(request_payload("81 00000001 6c 84 00000004 00000002", &r) == 0 &&
	      r.flags == PROTO_RF_LAST);
	CHECK(request_payload("81 00000001 6c 84 00000004 80000000", &r) == -EPROTONOSUPPORT);

	/* NUL inside an ARG or ENV: execve() could not pass it. */
	CHECK(request_payload("81 00000003 6c0073", &r) == -EINVAL);
	CHECK(request_payload("81 00000001 6c 81 00000001 00", &r) == -EINVAL);
	CHECK(request_payload("81 00000001 6c 82 00000004 413d0062", &r) == -EINVAL);
	/* ENV without '=' or with an empty name. */
	CHECK(request_payload("81 00000001 6c 82 00000001 41", &r) == -EINVAL);
	CHECK(request_payload("81 00000001 6c 82 00000002 3d78", &r) == -EINVAL);
	CHECK(request_payload("81 00000001 6c 82 00000000", &r) == -EINVAL);
	/* An empty value is fine: "A=". Empty later ARGs are fine too. */
	CHECK(request_payload("81 00000001 6c 82 00000002 413d 81 00000000", &r) == 0);
	CHECK(r.envc == 1 && strcmp(r.envp[0], "A=") == 0);
	CHECK(r.argc == 2 && r.argv[1][0] == '\0');

	/* Zero ARGs, or an empty command name. */
	CHECK(request_payload("", &r) == -EINVAL);
	CHECK(request_payload("82 00000003 413d62", &r) == -EINVAL);
	CHECK(request_payload("81 00000000 81 00000001 6c", &r) == -EINVAL);

	/* Broken TLV structure. */
	CHECK(request_payload("81", &r) == -EBADMSG);
	CHECK(request_payload("81 000000", &r) == -EBADMSG);
	CHECK(request_payload("81 00000002 6c", &r) == -EBADMSG);
	CHECK(request_payload("81 ffffffff 6c", &r) == -EBADMSG);
	CHECK(request_payload("81 00000001 6c 83 00000002 0001", &r) == -EBADMSG);
	CHECK(request_payload("81 00000001 6c 84 00000005 0000000000", &r) == -EBADMSG);
	CHECK(request_payload("81 00000001 6c 83 00000004 00000001 83 00000004 00000001",
			      &r) == -EBADMSG);
	CHECK(request_payload("81 00000001 6c 84 00000004 00000000 84 00000004 00000000",
			      &r) == -EBADMSG);
	/* TIMEOUT_MS 0 means no limit, same as absent. */
	CHECK(request_payload("83 00000004 00000000 81 00000001 6c", &r) == 0);
	CHECK(r.timeout_ms == 0 && r.argc == 1);
}

static void test_request_limits(void)
{
	static const char *argv[PROTO_MAX_ARGS + 2];
	static const char *envp[PROTO_MAX_ENV + 2];
	static uint8_t buf[8192];
	static char strbuf[8192];
	static struct proto_request r;
	struct proto_frame f;
	long len;
	int i;

	argv[0] = "x";
	for (i = 1; i < PROTO_MAX_ARGS; i++)
		argv[i] = "";
	argv[PROTO_MAX_ARGS] = NULL;
	for (i = 0; i < PROTO_MAX_ENV; i++)
		envp[i] = "E=";
	envp[PROTO_MAX_ENV] = NULL;

	/* Exactly at both limits: accepted, and the payload-sized strbuf is
	 * still enough for the densest request (mostly empty strings). */
	len = proto_encode_request(buf, sizeof(buf), argv, envp, 0, 0);
	CHECK(len > 0);
	CHECK(proto_frame_parse(buf, (size_t)len, sizeof(buf), &f) == len);
	CHECK(proto_decode_request(&f, &r, strbuf, f.len) == 0);
	CHECK(r.argc == PROTO_MAX_ARGS && r.envc == PROTO_MAX_ENV);
	CHECK(r.argv[PROTO_MAX_ARGS] == NULL && r.envp[PROTO_MAX_ENV] == NULL);
	/* One byte less of strbuf is too little here. */
	CHECK(proto_decode_request(&f, &r, strbuf, 2 + (PROTO_MAX_ARGS - 1) +
				   3 * PROTO_MAX_ENV - 1) == -ENOBUFS);
	CHECK(proto_decode_request(&f, &r, NULL, 0) == -ENOBUFS);

	/* One over: the encoder refuses, and so does the decoder when a frame
	 * is built by hand (appending one more field to a valid frame). */
	argv[PROTO_MAX_ARGS] = "y";
	argv[PROTO_MAX_ARGS + 1] = NULL;
	CHECK(proto_encode_request(buf, sizeof(buf), argv, envp, 0, 0) == -E2BIG);
	argv[PROTO_MAX_ARGS] = NULL;
	len = proto_encode_request(buf, sizeof(buf), argv, envp, 0, 0);
	CHECK(len > 0);
	memcpy(buf + len, "\x81\x00\x00\x00\x01y", 6);
	proto_put_header(buf, PROTO_REQUEST, (uint32_t)(len + 6 - PROTO_HEADER_LEN));
	CHECK(proto_frame_parse(buf, (size_t)len + 6, sizeof(buf), &f) == len + 6);
	CHECK(proto_decode_request(&f, &r, strbuf, sizeof(strbuf)) == -E2BIG);

	envp[PROTO_MAX_ENV] = "F=1";
	envp[PROTO_MAX_ENV + 1] = NULL;
	CHECK(proto_encode_request(buf, sizeof(buf), argv, envp, 0, 0) == -E2BIG);
	envp[PROTO_MAX_ENV] = NULL;
	len = proto_encode_request(buf, sizeof(buf), argv, envp, 0, 0);
	CHECK(len > 0);
	memcpy(buf + len, "\x82\x00\x00\x00\x03" "F=1", 8);
	proto_put_header(buf, PROTO_REQUEST, (uint32_t)(len + 8 - PROTO_HEADER_LEN));
	CHECK(proto_frame_parse(buf, (size_t)len + 8, sizeof(buf), &f) == len + 8);
	CHECK(proto_decode_request(&f, &r, strbuf, sizeof(strbuf)) == -E2BIG);
}

static void test_request_encoder_refusals(void)
{
	static const char *const none[] = { NULL };
	static const char *const empty_cmd[] = { "", NULL };
	static const char *const ok[] = { "ls", NULL };
	static const char *const no_eq[] = { "PATH", NULL };
	static const char *const no_name[] = { "=x", NULL };
	uint8_t buf[64];

	CHECK(proto_encode_request(buf, sizeof(buf), NULL, NULL, 0, 0) == -EINVAL);
	CHECK(proto_encode_request(buf, sizeof(buf), none, NULL, 0, 0) == -EINVAL);
	CHECK(proto_encode_request(buf, sizeof(buf), empty_cmd, NULL, 0, 0) == -EINVAL);
	CHECK(proto_encode_request(buf, sizeof(buf), ok, no_eq, 0, 0) == -EINVAL);
	CHECK(proto_encode_request(buf, sizeof(buf), ok, no_name, 0, 0) == -EINVAL);
	CHECK(proto_encode_request(buf, sizeof(buf), ok, NULL, 0, 0x4) == -EINVAL);
	CHECK(proto_encode_request(buf, sizeof(buf), ok, none, 0, 0) == 12);
}

static void test_data_frames(void)
{
	uint8_t want[32], got[32];
	struct proto_frame f;
	size_t n;
	long r;
	int sig;

	n = unhex(want, sizeof(want), HEX_STDIN);
	r = proto_encode_data(got, sizeof(got), PROTO_STDIN, "abc", 3);
	CHECK(r == (long)n && memcmp(got, want, n) == 0);
	n = unhex(want, sizeof(want), HEX_STDIN_EMPTY);
	r = proto_encode_data(got, sizeof(got), PROTO_STDIN, NULL, 0);
	CHECK(r == (long)n && memcmp(got, want, n) == 0);
	n = unhex(want, sizeof(want), HEX_STDOUT);
	r = proto_encode_data(got, sizeof(got), PROTO_STDOUT, "ok\n", 3);
	CHECK(r == (long)n && memcmp(got, want, n) == 0);
	CHECK(proto_frame_parse(got, n, 16, &f) == (long)n);
	CHECK(f.type == PROTO_STDOUT && f.len == 3 && memcmp(f.payload, "ok\n", 3) == 0);
	n = unhex(want, sizeof(want), HEX_STDERR);
	r = proto_encode_data(got, sizeof(got), PROTO_STDERR, "", 0);
	CHECK(r == (long)n && memcmp(got, want, n) == 0);
	CHECK(proto_encode_data(got, sizeof(got), PROTO_EXIT, "", 0) == -EINVAL);
	CHECK(proto_encode_data(got, sizeof(got), PROTO_STDIN_EOF, "", 0) == -EINVAL);
	CHECK(proto_encode_data(got, sizeof(got), PROTO_STDOUT, got,
				(size_t)PROTO_MAX_PAYLOAD_CEILING + 1) == -EMSGSIZE);

	n = unhex(want, sizeof(want), HEX_EOF);
	r = proto_encode_eof(got, sizeof(got));
	CHECK(r == (long)n && memcmp(got, want, n) == 0);
	CHECK(proto_frame_parse(got, n, 16, &f) == (long)n);
	CHECK(proto_decode_eof(&f) == 0);
	f.len = 1;
	f.payload = (const uint8_t *)"x";
	CHECK(proto_decode_eof(&f) == -EBADMSG);
	f.type = PROTO_STDIN;
	f.len = 0;
	CHECK(proto_decode_eof(&f) == -EBADMSG);

	n = unhex(want, sizeof(want), HEX_SIGNAL);
	r = proto_encode_signal(got, sizeof(got), 15);
	CHECK(r == (long)n && memcmp(got, want, n) == 0);
	CHECK(proto_frame_parse(got, n, 16, &f) == (long)n);
	CHECK(proto_decode_signal(&f, &sig) == 0 && sig == 15);
	f.len = 0;
	CHECK(proto_decode_signal(&f, &sig) == -EBADMSG);
	f.len = 2;
	f.payload = (const uint8_t *)"\x0f\x00";
	CHECK(proto_decode_signal(&f, &sig) == -EBADMSG);
	CHECK(proto_encode_signal(got, sizeof(got), -1) == -EINVAL);
	CHECK(proto_encode_signal(got, sizeof(got), 256) == -EINVAL);
	CHECK(proto_encode_signal(got, sizeof(got), 255) == 6);
}

static void test_exit(void)
{
	uint8_t want[32], got[32];
	struct proto_frame f;
	struct proto_exit e;
	size_t n;
	long r;

	/* Exited with code 3 after 1.5 s. */
	n = unhex(want, sizeof(want), HEX_EXIT_CODE);
	e = (struct proto_exit){ .signaled = 0, .value = 3, .duration_us = 1500000 };
	r = proto_encode_exit(got, sizeof(got), &e);
	CHECK(r == (long)n && n == PROTO_HEADER_LEN + PROTO_EXIT_LEN);
	CHECK(memcmp(got, want, n) == 0);
	CHECK(proto_frame_parse(want, n, 64, &f) == (long)n);
	memset(&e, 0x55, sizeof(e));
	CHECK(proto_decode_exit(&f, &e) == 0);
	CHECK(!e.signaled && e.value == 3 && !e.core && e.duration_us == 1500000);

	/* Killed by SIGKILL with a core, to pin the u64's byte order. */
	n = unhex(want, sizeof(want), HEX_EXIT_SIGNAL);
	e = (struct proto_exit){ .signaled = 1, .value = 9, .core = 1,
				 .duration_us = 0x0102030405060708ull };
	r = proto_encode_exit(got, sizeof(got), &e);
	CHECK(r == (long)n && memcmp(got, want, n) == 0);
	CHECK(proto_frame_parse(want, n, 64, &f) == (long)n);
	memset(&e, 0, sizeof(e));
	CHECK(proto_decode_exit(&f, &e) == 0);
	CHECK(e.signaled && e.value == 9 && e.core &&
	      e.duration_us == 0x0102030405060708ull);

	/* Wrong lengths. */
	f.len = PROTO_EXIT_LEN - 1;
	CHECK(proto_decode_exit(&f, &e) == -EBADMSG);
	f.len = 0;
	CHECK(proto_decode_exit(&f, &e) == -EBADMSG);
	memcpy(got, want + PROTO_HEADER_LEN, PROTO_EXIT_LEN);
	got[PROTO_EXIT_LEN] = 0;
	f = (struct proto_frame){ .type = PROTO_EXIT, .len = PROTO_EXIT_LEN + 1,
				  .payload = got };
	CHECK(proto_decode_exit(&f, &e) == -EBADMSG);
	f.len = PROTO_EXIT_LEN;
	CHECK(proto_decode_exit(&f, &e) == 0);
	/* Unknown kind, reserved byte, flag bit; a core with an exit code. */
	got[0] = 2;
	CHECK(proto_decode_exit(&f, &e) == -EBADMSG);
	got[0] = 1;
	got[3] = 1;
	CHECK(proto_decode_exit(&f, &e) == -EBADMSG);
	got[3] = 0;
	got[2] = 0x03;
	CHECK(proto_decode_exit(&f, &e) == -EBADMSG);
	got[0] = 0;
	got[2] = 0x01;
	CHECK(proto_decode_exit(&f, &e) == -EBADMSG);
	f.type = PROTO_ERROR;
	got[2] = 0;
	CHECK(proto_decode_exit(&f, &e) == -EBADMSG);

	e = (struct proto_exit){ .signaled = 0, .value = 256 };
	CHECK(proto_encode_exit(got, sizeof(got), &e) == -EINVAL);
	e = (struct proto_exit){ .signaled = 0, .value = -1 };
	CHECK(proto_encode_exit(got, sizeof(got), &e) == -EINVAL);
	e = (struct proto_exit){ .signaled = 2, .value = 1 };
	CHECK(proto_encode_exit(got, sizeof(got), &e) == -EINVAL);
	e = (struct proto_exit){ .signaled = 0, .value = 1, .core = 1 };
	CHECK(proto_encode_exit(got, sizeof(got), &e) == -EINVAL);
	e = (struct proto_exit){ .signaled = 0, .value = 255,
				 .duration_us = UINT64_MAX };
	CHECK(proto_encode_exit(got, sizeof(got), &e) == 17);
}

static void test_error(void)
{
	uint8_t want[64], got[64];
	struct proto_frame f;
	const char *msg;
	size_t n, msglen;
	long r;
	int code;

	n = unhex(want, sizeof(want), HEX_ERROR);
	r = proto_encode_error(got, sizeof(got), PROTO_ERR_UNKNOWN_COMMAND,
			       "no such command");
	CHECK(r == (long)n && memcmp(got, want, n) == 0);
	CHECK(proto_frame_parse(want, n, 64, &f) == (long)n);
	CHECK(proto_decode_error(&f, &code, &msg, &msglen) == 0);
	CHECK(code == PROTO_ERR_UNKNOWN_COMMAND && msglen == 15 &&
	      memcmp(msg, "no such command", 15) == 0);

	/* Every stable code survives the round trip and has a name. */
	for (int c = PROTO_ERR_BAD_REQUEST; c <= PROTO_ERR_SPAWN_FAILED; c++) {
		r = proto_encode_error(got, sizeof(got), c, "m");
		CHECK(r == PROTO_HEADER_LEN + 3);
		CHECK(proto_frame_parse(got, (size_t)r, 64, &f) == r);
		CHECK(proto_decode_error(&f, &code, &msg, &msglen) == 0);
		CHECK(code == c && msglen == 1 && msg[0] == 'm');
		CHECK(strcmp(proto_error_name(c), "unknown error") != 0);
	}
	/* Codes added later decode: an old client shows the message. */
	r = proto_encode_error(got, sizeof(got), 65535, NULL);
	CHECK(r == PROTO_HEADER_LEN + 2);
	CHECK(proto_frame_parse(got, (size_t)r, 64, &f) == r);
	CHECK(proto_decode_error(&f, &code, &msg, &msglen) == 0);
	CHECK(code == 65535 && msglen == 0);

	CHECK(proto_encode_error(got, sizeof(got), 0, "x") == -EINVAL);
	CHECK(proto_encode_error(got, sizeof(got), 65536, "x") == -EINVAL);
	f = (struct proto_frame){ .type = PROTO_ERROR, .len = 1,
				  .payload = (const uint8_t *)"\x00" };
	CHECK(proto_decode_error(&f, &code, &msg, &msglen) == -EBADMSG);
	f.len = 2;
	f.payload = (const uint8_t *)"\x00\x00";
	CHECK(proto_decode_error(&f, &code, &msg, &msglen) == -EBADMSG); /* code 0 */
	f.len = 4;
	f.payload = (const uint8_t *)"\x00\x01\x61\x00";
	CHECK(proto_decode_error(&f, &code, &msg, &msglen) == -EBADMSG); /* NUL */
	f.type = PROTO_EXIT;
	f.len = 2;
	CHECK(proto_decode_error(&f, &code, &msg, &msglen) == -EBADMSG);
}

static void test_names(void)
{
	CHECK(strcmp(proto_error_name(PROTO_ERR_BAD_REQUEST), "bad request") == 0);
	CHECK(strcmp(proto_error_name(PROTO_ERR_UNKNOWN_COMMAND), "unknown command") == 0);
	CHECK(strcmp(proto_error_name(PROTO_ERR_SPAWN_FAILED), "spawn failed") == 0);
	CHECK(strcmp(proto_error_name(0), "unknown error") == 0);
	CHECK(strcmp(proto_error_name(-1), "unknown error") == 0);
	CHECK(strcmp(proto_error_name(14), "unknown error") == 0);
	CHECK(strcmp(proto_error_name(65535), "unknown error") == 0);
	CHECK(strcmp(proto_type_name(PROTO_HELLO), "HELLO") == 0);
	CHECK(strcmp(proto_type_name(PROTO_ERROR), "ERROR") == 0);
	CHECK(strcmp(proto_type_name(0x42), "unknown") == 0);
}

/* Every encoder, with every cap below the frame's size, returns -ENOBUFS and
 * leaves the bytes from cap on untouched. */
static void test_encoders_respect_cap(void)
{
	static const char *const argv[] = { "echo", "hi", NULL };
	static const char *const envp[] = { "A=b", NULL };
	const struct proto_hello h = { .version = 1, .software = "sw",
				       .software_len = 2, .identity = "id",
				       .identity_len = 2, .auth_method = 3,
				       .max_payload = 8192 };
	const struct proto_exit e = { .signaled = 1, .value = 15 };
	uint8_t buf[128];

	for (int which = 0; which < 7; which++) {
		long full = -1;

		for (size_t cap = 0;; cap++) {
			long r = -1;

			memset(buf, CANARY, sizeof(buf));
			switch (which) {
			case 0: r = proto_encode_hello(buf, cap, PROTO_HELLO, &h); break;
			case 1: r = proto_encode_request(buf, cap, argv, envp, 5, 1); break;
			case 2: r = proto_encode_data(buf, cap, PROTO_STDERR, "err", 3); break;
			case 3: r = proto_encode_eof(buf, cap); break;
			case 4: r = proto_encode_signal(buf, cap, 2); break;
			case 5: r = proto_encode_exit(buf, cap, &e); break;
			case 6: r = proto_encode_error(buf, cap, 7, "oops"); break;
			}
			if (r > 0) {
				full = r;
				CHECK((size_t)r == cap);
				break;
			}
			CHECK(r == -ENOBUFS);
			CHECK(canary_intact(buf, cap, sizeof(buf)));
			CHECK(cap < sizeof(buf));
		}
		CHECK(full > 0);
	}
}

/* Every prefix of a frame parses as "need more"; the whole frame parses as
 * exactly its length, also with bytes of a next frame behind it. */
static void test_truncation(void)
{
	uint8_t buf[256];
	struct proto_frame f;

	for (size_t v = 0; v < NVECTORS; v++) {
		size_t n = unhex(buf, sizeof(buf), all_vectors[v]);

		for (size_t k = 0; k < n; k++)
			CHECK(proto_frame_parse(buf, k, 1024, &f) == 0);
		buf[n] = PROTO_STDOUT;
		for (size_t extra = 0; extra <= 1; extra++) {
			CHECK(proto_frame_parse(buf, n + extra, 1024, &f) == (long)n);
			CHECK(f.payload == buf + PROTO_HEADER_LEN);
			CHECK(f.len == n - PROTO_HEADER_LEN);
		}
	}
}

/* TCP delivers a byte stream: all vectors back to back ("sticky" frames),
 * received in chunks of every size from 1 to the whole stream, must come out
 * as the same frames in the same order. */
static void test_stream(void)
{
	static uint8_t stream[2048];
	static uint8_t rx[2048];
	size_t lens[NVECTORS], total = 0;

	for (size_t v = 0; v < NVECTORS; v++) {
		lens[v] = unhex(stream + total, sizeof(stream) - total, all_vectors[v]);
		total += lens[v];
	}

	for (size_t chunk = 1; chunk <= total; chunk++) {
		size_t sent = 0, have = 0, next = 0, off = 0;

		while (next < NVECTORS) {
			struct proto_frame f;
			long r;

			r = proto_frame_parse(rx, have, 1024, &f);
			CHECK(r >= 0);
			if (r == 0) {
				size_t c = total - sent < chunk ? total - sent : chunk;

				CHECK(c > 0); /* a frame is missing */
				memcpy(rx + have, stream + sent, c);
				have += c;
				sent += c;
				continue;
			}
			CHECK((size_t)r == lens[next]);
			CHECK(memcmp(rx, stream + off, (size_t)r) == 0);
			CHECK(f.type == stream[off]);
			/* Consume: move the leftover to the front, as a
			 * session's receive buffer does. */
			memmove(rx, rx + r, have - (size_t)r);
			have -= (size_t)r;
			off += (size_t)r;
			next++;
		}
		CHECK(have == 0 && sent == total);
	}
}

static void test_limits_and_types(void)
{
	uint8_t buf[PROTO_HEADER_LEN + 100];
	struct proto_frame f;

	memset(buf, 'x', sizeof(buf));
	proto_put_header(buf, PROTO_STDOUT, 100);
	CHECK(proto_frame_parse(buf, sizeof(buf), 100, &f) == (long)sizeof(buf));
	/* Too long is known from the header alone, before the payload. */
	CHECK(proto_frame_parse(buf, sizeof(buf), 99, &f) == -EMSGSIZE);
	CHECK(proto_frame_parse(buf, PROTO_HEADER_LEN, 99, &f) == -EMSGSIZE);
	CHECK(proto_frame_parse(buf, PROTO_HEADER_LEN - 1, 99, &f) == 0);
	CHECK(proto_frame_parse(buf, sizeof(buf), 0, &f) == -EMSGSIZE);

	/* The ceiling holds whatever max_payload the caller passes. */
	proto_put_header(buf, PROTO_STDOUT, PROTO_MAX_PAYLOAD_CEILING);
	CHECK(proto_frame_parse(buf, PROTO_HEADER_LEN, (size_t)-1, &f) == 0);
	proto_put_header(buf, PROTO_STDOUT, PROTO_MAX_PAYLOAD_CEILING + 1);
	CHECK(proto_frame_parse(buf, PROTO_HEADER_LEN, (size_t)-1, &f) == -EMSGSIZE);
	proto_put_header(buf, PROTO_STDOUT, UINT32_MAX);
	CHECK(proto_frame_parse(buf, PROTO_HEADER_LEN, (size_t)-1, &f) == -EMSGSIZE);

	/* Unknown types are refused from the first byte. */
	static const uint8_t bad[] = { 0x00, 0x06, 0x7f, 0x80, 0x86, 0xff, 'G', '\n' };
	for (size_t i = 0; i < sizeof(bad); i++) {
		buf[0] = bad[i];
		CHECK(proto_frame_parse(buf, 1, 1024, &f) == -EBADMSG);
		CHECK(proto_frame_parse(buf, PROTO_HEADER_LEN, 1024, &f) == -EBADMSG);
	}
	CHECK(proto_frame_parse(NULL, 0, 1024, &f) == 0);
}

int main(void)
{
	test_header();
	test_is_framed();
	test_hello_vectors();
	test_hello_refusals();
	test_version_choose();
	test_request_vector();
	test_request_refusals();
	test_request_limits();
	test_request_encoder_refusals();
	test_data_frames();
	test_exit();
	test_error();
	test_names();
	test_encoders_respect_cap();
	test_truncation();
	test_stream();
	test_limits_and_types();

	if (failures) {
		fprintf(stderr, "test_protocol: %d check(s) failed\n", failures);
		return 1;
	}
	printf("test_protocol: all checks passed\n");
	return 0;
}
