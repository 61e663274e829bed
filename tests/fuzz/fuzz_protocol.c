/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for src/protocol.c. The input is read twice: as a byte
 * stream of frames (what a socket delivers), and as one payload handed to
 * every decoder under every frame type. Whatever decodes is encoded again and
 * must decode to the same values; for the fixed-layout frames the bytes must
 * be identical. Any broken invariant aborts, which libFuzzer reports.
 */
#include "protocol.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(cond)                                                     \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "%s:%d: invariant broken: %s\n",      \
				__FILE__, __LINE__, #cond);                   \
			abort();                                              \
		}                                                             \
	} while (0)

static const uint8_t all_types[] = {
	PROTO_HELLO, PROTO_REQUEST, PROTO_STDIN, PROTO_STDIN_EOF, PROTO_SIGNAL,
	PROTO_HELLO_OK, PROTO_STDOUT, PROTO_STDERR, PROTO_EXIT, PROTO_ERROR,
};

/* Re-encoding into a heap block of exactly the frame's size lets ASan catch a
 * single byte written past cap; one byte less must be refused. */
typedef long (*encode_fn)(void *buf, size_t cap, const void *arg);

/* Every re-encoding is at most as long as the frame it came from (unknown
 * fields and zero-valued optional ones are dropped), so the original frame's
 * size is a big enough first buffer. */
static uint8_t *encode_exact(encode_fn enc, const void *arg,
			     const struct proto_frame *orig, long *lenp)
{
	size_t bound = PROTO_HEADER_LEN + (size_t)orig->len;
	uint8_t *scratch, *out;
	long n, m;

	scratch = malloc(bound);
	FUZZ_ASSERT(scratch != NULL);
	n = enc(scratch, bound, arg);
	FUZZ_ASSERT(n >= PROTO_HEADER_LEN && (size_t)n <= bound);
	out = malloc((size_t)n);
	FUZZ_ASSERT(out != NULL);
	m = enc(out, (size_t)n, arg);
	FUZZ_ASSERT(m == n && memcmp(out, scratch, (size_t)n) == 0);
	FUZZ_ASSERT(enc(out, (size_t)n - 1, arg) == -ENOBUFS);
	free(scratch);
	*lenp = n;
	return out;
}

/* The re-encoded frame must itself parse as one whole frame. */
static struct proto_frame reparse(const uint8_t *buf, long len)
{
	struct proto_frame f;

	FUZZ_ASSERT(proto_frame_parse(buf, (size_t)len, PROTO_MAX_PAYLOAD_CEILING,
				      &f) == len);
	return f;
}

/* For frames with a single valid encoding: same header, same payload. */
static void assert_same_frame(const struct proto_frame *f, const uint8_t *buf,
			      long len)
{
	uint8_t hdr[PROTO_HEADER_LEN];

	proto_put_header(hdr, f->type, f->len);
	FUZZ_ASSERT(len == (long)(PROTO_HEADER_LEN + f->len));
	FUZZ_ASSERT(memcmp(buf, hdr, PROTO_HEADER_LEN) == 0);
	FUZZ_ASSERT(f->len == 0 ||
		    memcmp(buf + PROTO_HEADER_LEN, f->payload, f->len) == 0);
}

struct hello_arg {
	uint8_t type;
	const struct proto_hello *h;
};

static long enc_hello(void *buf, size_t cap, const void *arg)
{
	const struct hello_arg *a = arg;

	return proto_encode_hello(buf, cap, a->type, a->h);
}

static int text_eq(const char *a, size_t alen, const char *b, size_t blen)
{
	if ((a == NULL) != (b == NULL))
		return 0;
	return a == NULL || (alen == blen && (alen == 0 || memcmp(a, b, alen) == 0));
}

static void check_hello(const struct proto_frame *f)
{
	struct proto_hello h, h2;
	struct hello_arg a = { f->type, &h };
	struct proto_frame f2;
	uint8_t *buf;
	long len;

	if (proto_decode_hello(f, &h) != 0)
		return;
	FUZZ_ASSERT(h.version != 0 && h.auth_method >= -1 && h.auth_method <= 255);
	FUZZ_ASSERT(h.max_payload == 0 || h.max_payload >= PROTO_MIN_PAYLOAD);
	buf = encode_exact(enc_hello, &a, f, &len);
	f2 = reparse(buf, len);
	FUZZ_ASSERT(f2.type == f->type);
	FUZZ_ASSERT(proto_decode_hello(&f2, &h2) == 0);
	FUZZ_ASSERT(h2.version == h.version && h2.auth_method == h.auth_method &&
		    h2.max_payload == h.max_payload);
	FUZZ_ASSERT(text_eq(h.software, h.software_len, h2.software, h2.software_len));
	FUZZ_ASSERT(text_eq(h.identity, h.identity_len, h2.identity, h2.identity_len));
	free(buf);
}

struct request_arg {
	const char *const *argv;
	const char *const *envp;
	uint32_t timeout_ms;
	uint32_t flags;
};

static long enc_request(void *buf, size_t cap, const void *arg)
{
	const struct request_arg *a = arg;

	return proto_encode_request(buf, cap, a->argv, a->envp, a->timeout_ms,
				    a->flags);
}

static void check_request(const struct proto_frame *f)
{
	static struct proto_request r, r2;
	const char *argv[PROTO_MAX_ARGS + 1], *envp[PROTO_MAX_ENV + 1];
	struct request_arg a = { argv, envp, 0, 0 };
	struct proto_frame f2;
	char *strbuf, *strbuf2;
	uint8_t *buf;
	long len;
	int rc;

	/* The documented bound: a strbuf of the payload's size is enough. */
	strbuf = malloc(f->len ? f->len : 1);
	FUZZ_ASSERT(strbuf != NULL);
	rc = proto_decode_request(f, &r, strbuf, f->len);
	FUZZ_ASSERT(rc != -ENOBUFS);
	if (rc != 0) {
		free(strbuf);
		return;
	}
	FUZZ_ASSERT(r.argc >= 1 && r.argc <= PROTO_MAX_ARGS && r.argv[r.argc] == NULL);
	FUZZ_ASSERT(r.envc >= 0 && r.envc <= PROTO_MAX_ENV && r.envp[r.envc] == NULL);
	FUZZ_ASSERT(r.argv[0][0] != '\0');
	for (int i = 0; i <= r.argc; i++)
		argv[i] = r.argv[i];
	for (int i = 0; i <= r.envc; i++) {
		envp[i] = r.envp[i];
		FUZZ_ASSERT(!envp[i] || (envp[i][0] != '=' && strchr(envp[i], '=')));
	}
	a.timeout_ms = r.timeout_ms;
	a.flags = r.flags;

	buf = encode_exact(enc_request, &a, f, &len);
	f2 = reparse(buf, len);
	strbuf2 = malloc(f2.len);
	FUZZ_ASSERT(strbuf2 != NULL);
	FUZZ_ASSERT(proto_decode_request(&f2, &r2, strbuf2, f2.len) == 0);
	FUZZ_ASSERT(r2.argc == r.argc && r2.envc == r.envc);
	FUZZ_ASSERT(r2.timeout_ms == r.timeout_ms && r2.flags == r.flags);
	for (int i = 0; i < r.argc; i++)
		FUZZ_ASSERT(strcmp(r.argv[i], r2.argv[i]) == 0);
	for (int i = 0; i < r.envc; i++)
		FUZZ_ASSERT(strcmp(r.envp[i], r2.envp[i]) == 0);
	free(strbuf2);
	free(buf);
	free(strbuf);
}

static long enc_data(void *buf, size_t cap, const void *arg)
{
	const struct proto_frame *f = arg;

	return proto_encode_data(buf, cap, f->type, f->payload, f->len);
}

static long enc_eof(void *buf, size_t cap, const void *arg)
{
	(void)arg;
	return proto_encode_eof(buf, cap);
}

static long enc_signal(void *buf, size_t cap, const void *arg)
{
	return proto_encode_signal(buf, cap, *(const int *)arg);
}

static long enc_exit(void *buf, size_t cap, const void *arg)
{
	return proto_encode_exit(buf, cap, arg);
}

struct error_arg {
	int code;
	const char *msg;
};

static long enc_error(void *buf, size_t cap, const void *arg)
{
	const struct error_arg *a = arg;

	return proto_encode_error(buf, cap, a->code, a->msg);
}

static void check_fixed(const struct proto_frame *f)
{
	struct proto_exit e;
	struct error_arg ea;
	const char *msg;
	size_t msglen;
	uint8_t *buf;
	char *copy;
	long len;
	int v;

	if (f->type == PROTO_STDIN || f->type == PROTO_STDOUT ||
	    f->type == PROTO_STDERR) {
		buf = encode_exact(enc_data, f, f, &len);
		assert_same_frame(f, buf, len);
		free(buf);
	}
	if (proto_decode_eof(f) == 0) {
		buf = encode_exact(enc_eof, NULL, f, &len);
		assert_same_frame(f, buf, len);
		free(buf);
	}
	if (proto_decode_signal(f, &v) == 0) {
		FUZZ_ASSERT(v >= 0 && v <= 255);
		buf = encode_exact(enc_signal, &v, f, &len);
		assert_same_frame(f, buf, len);
		free(buf);
	}
	if (proto_decode_exit(f, &e) == 0) {
		buf = encode_exact(enc_exit, &e, f, &len);
		assert_same_frame(f, buf, len);
		free(buf);
	}
	if (proto_decode_error(f, &v, &msg, &msglen) == 0) {
		FUZZ_ASSERT(v >= 1 && v <= 65535 && msglen == f->len - 2);
		FUZZ_ASSERT(proto_error_name(v) != NULL);
		copy = malloc(msglen + 1);
		FUZZ_ASSERT(copy != NULL);
		memcpy(copy, msg, msglen);
		copy[msglen] = '\0';
		FUZZ_ASSERT(strlen(copy) == msglen);
		ea.code = v;
		ea.msg = copy;
		buf = encode_exact(enc_error, &ea, f, &len);
		assert_same_frame(f, buf, len);
		free(buf);
		free(copy);
	}
}

static void check_frame(const struct proto_frame *f)
{
	FUZZ_ASSERT(proto_type_name(f->type) != NULL);
	check_hello(f);
	check_request(f);
	check_fixed(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;

	/* 1. A byte stream: frames back to back, as read from a socket. */
	while (off < size) {
		struct proto_frame f, g;
		long r;

		r = proto_frame_parse(data + off, size - off,
				      PROTO_MAX_PAYLOAD_CEILING, &f);
		if (r <= 0)
			break;
		FUZZ_ASSERT((size_t)r == PROTO_HEADER_LEN + f.len);
		FUZZ_ASSERT(f.payload == data + off + PROTO_HEADER_LEN);
		FUZZ_ASSERT(f.type == data[off]);
		/* A prefix is never mistaken for a frame, and the limit is
		 * enforced from the header alone. */
		FUZZ_ASSERT(proto_frame_parse(data + off, (size_t)r - 1,
					      PROTO_MAX_PAYLOAD_CEILING, &g) == 0);
		if (f.len > 0)
			FUZZ_ASSERT(proto_frame_parse(data + off, PROTO_HEADER_LEN,
						      f.len - 1, &g) == -EMSGSIZE);
		check_frame(&f);
		off += (size_t)r;
	}

	/* 2. The bytes after a header's worth, as the payload of every type,
	 * which reaches the decoders without the fuzzer first having to find
	 * a consistent length field. */
	if (size >= PROTO_HEADER_LEN && size - PROTO_HEADER_LEN <= UINT32_MAX) {
		for (size_t i = 0; i < sizeof(all_types); i++) {
			struct proto_frame f = {
				.type = all_types[i],
				.len = (uint32_t)(size - PROTO_HEADER_LEN),
				.payload = data + PROTO_HEADER_LEN,
			};

			check_frame(&f);
		}
	}
	return 0;
}
