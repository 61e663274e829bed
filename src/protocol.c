/* SPDX-License-Identifier: MIT */
/*
 * The tcpexec wire protocol: frame parsing and payload encode/decode over
 * buffers, linked into the daemon (session code, in a worker process) and the
 * client. Pure on purpose: no I/O, no allocation, no logging, so that it can
 * be unit-tested and fuzzed on its own. docs/protocol.md is the spec.
 */
#include "protocol.h"

#include <errno.h>
#include <string.h>

/* The oldest version this code still answers. Equal to PROTO_VERSION until a
 * version 2 exists; kept apart so that version 2 can keep serving 1. */
#define PROTO_MIN_VERSION 1

/* HELLO TLV header: u8 tag + u16 length; REQUEST TLV header: u8 + u32. */
#define HELLO_TLV_HDR 3
#define REQUEST_TLV_HDR 5

/* Bits for the "seen" masks that refuse duplicated single-valued fields: a
 * receiver that kept the first or the last copy would disagree with another
 * receiver that kept the other one. */
enum {
	SEEN_SOFTWARE = 1 << 0,
	SEEN_MAX_PAYLOAD = 1 << 1,
	SEEN_IDENTITY = 1 << 2,
	SEEN_AUTH_METHOD = 1 << 3,
	SEEN_TIMEOUT = 1 << 4,
	SEEN_FLAGS = 1 << 5,
};

static uint16_t get_u16(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t get_u64(const uint8_t *p)
{
	return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

static void put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
	put_u32(p, (uint32_t)(v >> 32));
	put_u32(p + 4, (uint32_t)v);
}

static int type_known(uint8_t type)
{
	switch (type) {
	case PROTO_HELLO:
	case PROTO_REQUEST:
	case PROTO_STDIN:
	case PROTO_STDIN_EOF:
	case PROTO_SIGNAL:
	case PROTO_HELLO_OK:
	case PROTO_STDOUT:
	case PROTO_STDERR:
	case PROTO_EXIT:
	case PROTO_ERROR:
		return 1;
	default:
		return 0;
	}
}

int proto_is_framed(uint8_t first_byte)
{
	return first_byte == PROTO_HELLO;
}

long proto_frame_parse(const void *buf, size_t len, size_t max_payload,
		       struct proto_frame *f)
{
	const uint8_t *p = buf;
	uint32_t plen;

	if (len == 0)
		return 0;
	/* Refuse an unknown type from its first byte: waiting for a payload
	 * that will be thrown away only lets a broken peer hold the slot. */
	if (!type_known(p[0]))
		return -EBADMSG;
	if (len < PROTO_HEADER_LEN)
		return 0;
	plen = get_u32(p + 1);
	if (max_payload > PROTO_MAX_PAYLOAD_CEILING)
		max_payload = PROTO_MAX_PAYLOAD_CEILING;
	if (plen > max_payload)
		return -EMSGSIZE;
	if (len - PROTO_HEADER_LEN < plen)
		return 0;
	f->type = p[0];
	f->len = plen;
	f->payload = p + PROTO_HEADER_LEN;
	return (long)(PROTO_HEADER_LEN + plen);
}

void proto_put_header(uint8_t out[PROTO_HEADER_LEN], uint8_t type, uint32_t len)
{
	out[0] = type;
	put_u32(out + 1, len);
}

/*
 * Encoders append through a writer that keeps counting once the buffer is
 * full instead of stopping, so that one pass both validates and sizes the
 * frame; the header is written last, when the payload length is known.
 */
struct writer {
	uint8_t *buf;
	size_t cap;
	size_t len;
	int err;
};

static void w_init(struct writer *w, void *buf, size_t cap)
{
	w->buf = buf;
	w->cap = cap;
	w->len = PROTO_HEADER_LEN;
	w->err = 0;
}

static void w_put(struct writer *w, const void *src, size_t n)
{
	/* After the first write that does not fit, len > cap stays true, so no
	 * later (smaller) write can land in the middle of a truncated frame. */
	if (n > 0 && w->len <= w->cap && n <= w->cap - w->len)
		memcpy(w->buf + w->len, src, n);
	w->len += n;
}

static void w_u8(struct writer *w, uint8_t v)
{
	w_put(w, &v, 1);
}

static void w_tlv16(struct writer *w, uint8_t tag, const void *v, size_t n)
{
	uint8_t hdr[HELLO_TLV_HDR];

	if (n > UINT16_MAX) {
		w->err = -EMSGSIZE;
		return;
	}
	hdr[0] = tag;
	put_u16(hdr + 1, (uint16_t)n);
	w_put(w, hdr, sizeof(hdr));
	w_put(w, v, n);
}

static void w_tlv32(struct writer *w, uint8_t tag, const void *v, size_t n)
{
	uint8_t hdr[REQUEST_TLV_HDR];

	/* Checked here so that the running length cannot wrap either. */
	if (n > PROTO_MAX_PAYLOAD_CEILING || w->len > PROTO_MAX_PAYLOAD_CEILING) {
		w->err = -EMSGSIZE;
		return;
	}
	hdr[0] = tag;
	put_u32(hdr + 1, (uint32_t)n);
	w_put(w, hdr, sizeof(hdr));
	w_put(w, v, n);
}

static long w_finish(struct writer *w, uint8_t type, size_t max_payload)
{
	size_t plen = w->len - PROTO_HEADER_LEN;

	if (w->err < 0)
		return w->err;
	if (plen > max_payload)
		return -EMSGSIZE;
	if (w->len > w->cap)
		return -ENOBUFS;
	proto_put_header(w->buf, type, (uint32_t)plen);
	return (long)w->len;
}

/* Text fields are compared with C string functions later (an identity in
 * policy, for one), so an embedded NUL could make "alice\0x" pass as "alice". */
static int text_ok(const void *s, size_t n)
{
	return memchr(s, '\0', n) == NULL;
}

int proto_decode_hello(const struct proto_frame *f, struct proto_hello *h)
{
	const uint8_t *p = f->payload;
	size_t n = f->len, off;
	unsigned seen = 0;

	if (f->type != PROTO_HELLO && f->type != PROTO_HELLO_OK)
		return -EBADMSG;
	if (n > PROTO_MAX_HELLO)
		return -EMSGSIZE;
	if (n < PROTO_MAGIC_LEN + 1 || memcmp(p, PROTO_MAGIC, PROTO_MAGIC_LEN) != 0)
		return -EBADMSG;
	memset(h, 0, sizeof(*h));
	h->auth_method = -1;
	h->version = p[PROTO_MAGIC_LEN];
	if (h->version == 0)
		return -EBADMSG;

	off = PROTO_MAGIC_LEN + 1;
	while (off < n) {
		const uint8_t *v;
		uint8_t tag;
		size_t vlen;

		if (n - off < HELLO_TLV_HDR)
			return -EBADMSG;
		tag = p[off];
		vlen = get_u16(p + off + 1);
		off += HELLO_TLV_HDR;
		if (n - off < vlen)
			return -EBADMSG;
		v = p + off;
		off += vlen;

		switch (tag) {
		case PROTO_HT_SOFTWARE:
			if ((seen & SEEN_SOFTWARE) || !text_ok(v, vlen))
				return -EBADMSG;
			seen |= SEEN_SOFTWARE;
			h->software = (const char *)v;
			h->software_len = vlen;
			break;
		case PROTO_HT_MAX_PAYLOAD:
			if ((seen & SEEN_MAX_PAYLOAD) || vlen != 4)
				return -EBADMSG;
			seen |= SEEN_MAX_PAYLOAD;
			h->max_payload = get_u32(v);
			if (h->max_payload < PROTO_MIN_PAYLOAD)
				return -EINVAL;
			break;
		case PROTO_HT_AUTH_IDENTITY:
			if ((seen & SEEN_IDENTITY) || !text_ok(v, vlen))
				return -EBADMSG;
			seen |= SEEN_IDENTITY;
			h->identity = (const char *)v;
			h->identity_len = vlen;
			break;
		case PROTO_HT_AUTH_METHOD:
			if ((seen & SEEN_AUTH_METHOD) || vlen != 1)
				return -EBADMSG;
			seen |= SEEN_AUTH_METHOD;
			h->auth_method = v[0];
			break;
		default:
			if (tag & PROTO_TAG_CRITICAL)
				return -EPROTONOSUPPORT;
			break;
		}
	}
	return 0;
}

long proto_encode_hello(void *buf, size_t cap, uint8_t type,
			const struct proto_hello *h)
{
	struct writer w;
	uint8_t u32[4];

	if (type != PROTO_HELLO && type != PROTO_HELLO_OK)
		return -EINVAL;
	if (h->version == 0 || h->auth_method < -1 || h->auth_method > UINT8_MAX)
		return -EINVAL;
	if (h->max_payload != 0 && h->max_payload < PROTO_MIN_PAYLOAD)
		return -EINVAL;
	if ((h->software && !text_ok(h->software, h->software_len)) ||
	    (h->identity && !text_ok(h->identity, h->identity_len)))
		return -EINVAL;

	w_init(&w, buf, cap);
	w_put(&w, PROTO_MAGIC, PROTO_MAGIC_LEN);
	w_u8(&w, h->version);
	if (h->software)
		w_tlv16(&w, PROTO_HT_SOFTWARE, h->software, h->software_len);
	if (h->max_payload) {
		put_u32(u32, h->max_payload);
		w_tlv16(&w, PROTO_HT_MAX_PAYLOAD, u32, sizeof(u32));
	}
	if (h->identity)
		w_tlv16(&w, PROTO_HT_AUTH_IDENTITY, h->identity, h->identity_len);
	if (h->auth_method >= 0) {
		uint8_t m = (uint8_t)h->auth_method;

		w_tlv16(&w, PROTO_HT_AUTH_METHOD, &m, 1);
	}
	return w_finish(&w, type, PROTO_MAX_HELLO);
}

int proto_version_choose(unsigned offered)
{
	if (offered < PROTO_MIN_VERSION)
		return -EPROTONOSUPPORT;
	return offered < PROTO_VERSION ? (int)offered : PROTO_VERSION;
}

/* Copy n bytes plus a NUL into strbuf at *used. */
static char *strbuf_add(char *strbuf, size_t cap, size_t *used,
			const uint8_t *v, size_t n)
{
	char *s;

	if (cap - *used < n + 1)
		return NULL;
	s = strbuf + *used;
	if (n > 0)
		memcpy(s, v, n);
	s[n] = '\0';
	*used += n + 1;
	return s;
}

/* "NAME=value" with a non-empty NAME: what getenv() and execve() expect. */
static int env_ok(const void *v, size_t n)
{
	const char *eq = memchr(v, '=', n);

	return eq != NULL && eq != (const char *)v;
}

int proto_decode_request(const struct proto_frame *f, struct proto_request *r,
			 char *strbuf, size_t strbufcap)
{
	const uint8_t *p = f->payload;
	size_t n = f->len, off = 0, used = 0;
	unsigned seen = 0;

	if (f->type != PROTO_REQUEST)
		return -EBADMSG;
	r->argc = 0;
	r->argv[0] = NULL;
	r->envc = 0;
	r->envp[0] = NULL;
	r->timeout_ms = 0;
	r->flags = 0;

	while (off < n) {
		const uint8_t *v;
		uint8_t tag;
		size_t vlen;
		char *s;

		if (n - off < REQUEST_TLV_HDR)
			return -EBADMSG;
		tag = p[off];
		vlen = get_u32(p + off + 1);
		off += REQUEST_TLV_HDR;
		if (n - off < vlen)
			return -EBADMSG;
		v = p + off;
		off += vlen;

		switch (tag) {
		case PROTO_RT_ARG:
			if (r->argc == PROTO_MAX_ARGS)
				return -E2BIG;
			/* execve() would silently cut the string at the NUL:
			 * the command run would differ from the one allowed. */
			if (!text_ok(v, vlen) || (r->argc == 0 && vlen == 0))
				return -EINVAL;
			s = strbuf_add(strbuf, strbufcap, &used, v, vlen);
			if (!s)
				return -ENOBUFS;
			r->argv[r->argc++] = s;
			r->argv[r->argc] = NULL;
			break;
		case PROTO_RT_ENV:
			if (r->envc == PROTO_MAX_ENV)
				return -E2BIG;
			if (!text_ok(v, vlen) || !env_ok(v, vlen))
				return -EINVAL;
			s = strbuf_add(strbuf, strbufcap, &used, v, vlen);
			if (!s)
				return -ENOBUFS;
			r->envp[r->envc++] = s;
			r->envp[r->envc] = NULL;
			break;
		case PROTO_RT_TIMEOUT_MS:
			if ((seen & SEEN_TIMEOUT) || vlen != 4)
				return -EBADMSG;
			seen |= SEEN_TIMEOUT;
			r->timeout_ms = get_u32(v);
			break;
		case PROTO_RT_FLAGS:
			if ((seen & SEEN_FLAGS) || vlen != 4)
				return -EBADMSG;
			seen |= SEEN_FLAGS;
			r->flags = get_u32(v);
			/* An unknown flag may change what the client expects,
			 * so it is refused like an unknown critical tag. */
			if (r->flags & ~PROTO_RF_ALL)
				return -EPROTONOSUPPORT;
			break;
		default:
			if (tag & PROTO_TAG_CRITICAL)
				return -EPROTONOSUPPORT;
			break;
		}
	}
	if (r->argc == 0)
		return -EINVAL;
	return 0;
}

long proto_encode_request(void *buf, size_t cap, const char *const *argv,
			  const char *const *envp, uint32_t timeout_ms,
			  uint32_t flags)
{
	struct writer w;
	uint8_t u32[4];
	size_t i;

	if (!argv || !argv[0] || argv[0][0] == '\0' || (flags & ~PROTO_RF_ALL))
		return -EINVAL;

	w_init(&w, buf, cap);
	for (i = 0; argv[i]; i++) {
		if (i == PROTO_MAX_ARGS)
			return -E2BIG;
		w_tlv32(&w, PROTO_RT_ARG, argv[i], strlen(argv[i]));
	}
	for (i = 0; envp && envp[i]; i++) {
		size_t n = strlen(envp[i]);

		if (i == PROTO_MAX_ENV)
			return -E2BIG;
		if (!env_ok(envp[i], n))
			return -EINVAL;
		w_tlv32(&w, PROTO_RT_ENV, envp[i], n);
	}
	if (timeout_ms) {
		put_u32(u32, timeout_ms);
		w_tlv32(&w, PROTO_RT_TIMEOUT_MS, u32, sizeof(u32));
	}
	if (flags) {
		put_u32(u32, flags);
		w_tlv32(&w, PROTO_RT_FLAGS, u32, sizeof(u32));
	}
	return w_finish(&w, PROTO_REQUEST, PROTO_MAX_PAYLOAD_CEILING);
}

long proto_encode_data(void *buf, size_t cap, uint8_t type, const void *data,
		       size_t len)
{
	struct writer w;

	if (type != PROTO_STDIN && type != PROTO_STDOUT && type != PROTO_STDERR)
		return -EINVAL;
	if (len > PROTO_MAX_PAYLOAD_CEILING)
		return -EMSGSIZE;
	w_init(&w, buf, cap);
	w_put(&w, data, len);
	return w_finish(&w, type, PROTO_MAX_PAYLOAD_CEILING);
}

int proto_decode_eof(const struct proto_frame *f)
{
	if (f->type != PROTO_STDIN_EOF || f->len != 0)
		return -EBADMSG;
	return 0;
}

long proto_encode_eof(void *buf, size_t cap)
{
	struct writer w;

	w_init(&w, buf, cap);
	return w_finish(&w, PROTO_STDIN_EOF, 0);
}

int proto_decode_signal(const struct proto_frame *f, int *signo)
{
	if (f->type != PROTO_SIGNAL || f->len != 1)
		return -EBADMSG;
	*signo = f->payload[0];
	return 0;
}

long proto_encode_signal(void *buf, size_t cap, int signo)
{
	struct writer w;

	if (signo < 0 || signo > UINT8_MAX)
		return -EINVAL;
	w_init(&w, buf, cap);
	w_u8(&w, (uint8_t)signo);
	return w_finish(&w, PROTO_SIGNAL, 1);
}

/* EXIT layout: kind, value, flags, reserved, u64 duration. */
#define EXIT_KIND_CODE 0
#define EXIT_KIND_SIGNAL 1
#define EXIT_FLAG_CORE 0x01

int proto_decode_exit(const struct proto_frame *f, struct proto_exit *e)
{
	const uint8_t *p = f->payload;

	if (f->type != PROTO_EXIT || f->len != PROTO_EXIT_LEN)
		return -EBADMSG;
	/* Strict on every bit: the layout is fixed for version 1, and a field
	 * that a later version adds goes into a new version, not into bits
	 * that old clients would misread. */
	if (p[0] > EXIT_KIND_SIGNAL || (p[2] & ~EXIT_FLAG_CORE) || p[3] != 0)
		return -EBADMSG;
	if (p[0] == EXIT_KIND_CODE && (p[2] & EXIT_FLAG_CORE))
		return -EBADMSG;
	e->signaled = p[0] == EXIT_KIND_SIGNAL;
	e->value = p[1];
	e->core = (p[2] & EXIT_FLAG_CORE) != 0;
	e->duration_us = get_u64(p + 4);
	return 0;
}

long proto_encode_exit(void *buf, size_t cap, const struct proto_exit *e)
{
	struct writer w;
	uint8_t p[PROTO_EXIT_LEN];

	if ((e->signaled != 0 && e->signaled != 1) || e->value < 0 ||
	    e->value > UINT8_MAX || (e->core != 0 && e->core != 1) ||
	    (e->core && !e->signaled))
		return -EINVAL;
	p[0] = e->signaled ? EXIT_KIND_SIGNAL : EXIT_KIND_CODE;
	p[1] = (uint8_t)e->value;
	p[2] = e->core ? EXIT_FLAG_CORE : 0;
	p[3] = 0;
	put_u64(p + 4, e->duration_us);
	w_init(&w, buf, cap);
	w_put(&w, p, sizeof(p));
	return w_finish(&w, PROTO_EXIT, PROTO_EXIT_LEN);
}

int proto_decode_error(const struct proto_frame *f, int *code,
		       const char **msg, size_t *msglen)
{
	int c;

	if (f->type != PROTO_ERROR || f->len < 2)
		return -EBADMSG;
	c = get_u16(f->payload);
	if (c == 0 || !text_ok(f->payload + 2, f->len - 2))
		return -EBADMSG;
	*code = c;
	*msg = (const char *)f->payload + 2;
	*msglen = f->len - 2;
	return 0;
}

long proto_encode_error(void *buf, size_t cap, int code, const char *msg)
{
	struct writer w;
	uint8_t c[2];
	size_t n = msg ? strlen(msg) : 0;

	if (code < 1 || code > UINT16_MAX)
		return -EINVAL;
	if (n > PROTO_MAX_PAYLOAD_CEILING - sizeof(c))
		return -EMSGSIZE;
	put_u16(c, (uint16_t)code);
	w_init(&w, buf, cap);
	w_put(&w, c, sizeof(c));
	w_put(&w, msg, n);
	return w_finish(&w, PROTO_ERROR, PROTO_MAX_PAYLOAD_CEILING);
}

const char *proto_error_name(int code)
{
	static const char *const names[] = {
		[PROTO_ERR_BAD_REQUEST] = "bad request",
		[PROTO_ERR_UNKNOWN_COMMAND] = "unknown command",
		[PROTO_ERR_NOT_ALLOWED] = "not allowed",
		[PROTO_ERR_TOO_LARGE] = "too large",
		[PROTO_ERR_TIMEOUT] = "timeout",
		[PROTO_ERR_BUSY] = "busy",
		[PROTO_ERR_INTERNAL] = "internal error",
		[PROTO_ERR_VERSION] = "unsupported version",
		[PROTO_ERR_OUTPUT_LIMIT] = "output limit exceeded",
		[PROTO_ERR_AUTH_FAILED] = "authentication failed",
		[PROTO_ERR_IDLE_TIMEOUT] = "idle timeout",
		[PROTO_ERR_HANDSHAKE_TIMEOUT] = "handshake timeout",
		[PROTO_ERR_SPAWN_FAILED] = "spawn failed",
	};

	if (code < 0 || (size_t)code >= sizeof(names) / sizeof(names[0]) ||
	    !names[code])
		return "unknown error";
	return names[code];
}

const char *proto_type_name(uint8_t type)
{
	switch (type) {
	case PROTO_HELLO: return "HELLO";
	case PROTO_REQUEST: return "REQUEST";
	case PROTO_STDIN: return "STDIN";
	case PROTO_STDIN_EOF: return "STDIN_EOF";
	case PROTO_SIGNAL: return "SIGNAL";
	case PROTO_HELLO_OK: return "HELLO_OK";
	case PROTO_STDOUT: return "STDOUT";
	case PROTO_STDERR: return "STDERR";
	case PROTO_EXIT: return "EXIT";
	case PROTO_ERROR: return "ERROR";
	default: return "unknown";
	}
}
