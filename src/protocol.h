/* SPDX-License-Identifier: MIT */
/*
 * The tcpexec wire protocol (docs/protocol.md): frame parsing and payload
 * encode/decode over caller-provided buffers. Shared by the daemon's session
 * code and the client. Pure: no I/O, no allocation, no logging; every function
 * returns a negative errno on failure and never sets errno.
 */
#ifndef TCPEXECD_PROTOCOL_H
#define TCPEXECD_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_HEADER_LEN 5          /* u8 type + u32 BE payload length */
#define PROTO_VERSION 1             /* highest version this code speaks */
#define PROTO_MAGIC "TCPX"
#define PROTO_MAGIC_LEN 4
/* No frame may ever be longer than this, whatever the peers announce. */
#define PROTO_MAX_PAYLOAD_CEILING (16u << 20)
/* What a peer may assume about the other side's receive limit when the
 * MAX_PAYLOAD field is absent, and the smallest value that may be announced.
 * Every control frame except REQUEST fits in PROTO_MIN_PAYLOAD. */
#define PROTO_DEFAULT_MAX_PAYLOAD (64u << 10)
#define PROTO_MIN_PAYLOAD 4096u
/* A HELLO or HELLO_OK payload is never longer than this, so the first frame
 * can be read into a small fixed buffer before any limit is negotiated. */
#define PROTO_MAX_HELLO 4096u
#define PROTO_MAX_ARGS 256
#define PROTO_MAX_ENV 64
#define PROTO_EXIT_LEN 12

/* Bit 0x80 of a frame type is the direction: set means server to client. */
enum proto_type {
	PROTO_HELLO = 0x01,
	PROTO_REQUEST = 0x02,
	PROTO_STDIN = 0x03,
	PROTO_STDIN_EOF = 0x04,
	PROTO_SIGNAL = 0x05,
	PROTO_HELLO_OK = 0x81,
	PROTO_STDOUT = 0x82,
	PROTO_STDERR = 0x83,
	PROTO_EXIT = 0x84,
	PROTO_ERROR = 0x85,
};

/* Bit 0x80 of a TLV tag marks it critical: a receiver that does not know a
 * critical tag refuses the frame, an unknown non-critical tag is skipped. The
 * bit is part of the tag number, so a tag's criticality never changes. */
#define PROTO_TAG_CRITICAL 0x80

/* HELLO / HELLO_OK fields: u8 tag, u16 BE length, value. */
enum proto_hello_tag {
	PROTO_HT_SOFTWARE = 0x01,      /* text: client or server name/version */
	PROTO_HT_MAX_PAYLOAD = 0x02,   /* u32: largest payload the sender accepts */
	PROTO_HT_AUTH_IDENTITY = 0x03, /* text: who the client claims to be */
	PROTO_HT_AUTH_METHOD = 0x81,   /* u8: how the claim will be proven */
};

/* REQUEST fields: u8 tag, u32 BE length, value. All v1 tags are critical. */
enum proto_request_tag {
	PROTO_RT_ARG = 0x81,        /* repeatable, ordered; the first is the command */
	PROTO_RT_ENV = 0x82,        /* repeatable: "NAME=value" */
	PROTO_RT_TIMEOUT_MS = 0x83, /* u32: client's runtime limit, 0 = none */
	PROTO_RT_FLAGS = 0x84,      /* u32: PROTO_RF_* */
};

#define PROTO_RF_NO_STDIN 0x1u /* the client will send no STDIN frames */
#define PROTO_RF_LAST 0x2u     /* no REQUEST follows on this connection */
#define PROTO_RF_ALL (PROTO_RF_NO_STDIN | PROTO_RF_LAST)

/* Stable error codes carried by ERROR frames; never renumbered. */
enum proto_error {
	PROTO_ERR_BAD_REQUEST = 1,
	PROTO_ERR_UNKNOWN_COMMAND = 2,
	PROTO_ERR_NOT_ALLOWED = 3,
	PROTO_ERR_TOO_LARGE = 4,
	PROTO_ERR_TIMEOUT = 5,
	PROTO_ERR_BUSY = 6,
	PROTO_ERR_INTERNAL = 7,
	PROTO_ERR_VERSION = 8,
	PROTO_ERR_OUTPUT_LIMIT = 9,
	PROTO_ERR_AUTH_FAILED = 10,
	PROTO_ERR_IDLE_TIMEOUT = 11,
	PROTO_ERR_HANDSHAKE_TIMEOUT = 12,
	PROTO_ERR_SPAWN_FAILED = 13,
};

/* One parsed frame; payload points into the caller's buffer. */
struct proto_frame {
	uint8_t type;
	uint32_t len;
	const uint8_t *payload;
};

/* A framed client announces itself with a first byte of PROTO_HELLO, which is
 * not printable text; any other first byte means a line-mode client. */
int proto_is_framed(uint8_t first_byte);

/* Parse the frame at the start of buf. Returns the bytes it occupies (header
 * plus payload, > 0), 0 if buf holds only a prefix of it (read more, then call
 * again with the whole prefix), -EBADMSG for an unknown type (detected from
 * the first byte) or -EMSGSIZE for a payload longer than max_payload (clamped
 * to PROTO_MAX_PAYLOAD_CEILING; detected from the header alone). */
long proto_frame_parse(const void *buf, size_t len, size_t max_payload,
		       struct proto_frame *f);

/* Write a frame header: type, then len as u32 big-endian. */
void proto_put_header(uint8_t out[PROTO_HEADER_LEN], uint8_t type, uint32_t len);

/* Common return values of the encoders below: the whole frame's length
 * (header included), -ENOBUFS if cap is too small (nothing useful is left in
 * buf), -EINVAL for arguments the decoder would refuse, -EMSGSIZE if the
 * payload would exceed PROTO_MAX_PAYLOAD_CEILING (or PROTO_MAX_HELLO). */

/* HELLO and HELLO_OK. Text fields point into the frame's payload and are not
 * NUL-terminated; they never contain a NUL byte. */
struct proto_hello {
	uint8_t version;        /* HELLO: highest offered; HELLO_OK: chosen */
	const char *software;   /* NULL if absent */
	size_t software_len;
	const char *identity;   /* NULL if absent */
	size_t identity_len;
	int auth_method;        /* 0..255, -1 if absent */
	uint32_t max_payload;   /* 0 if absent */
};

/* Decode a HELLO or HELLO_OK. 0, or -EBADMSG (bad magic, version 0, truncated
 * or duplicated field, NUL in text, wrong frame type), -EMSGSIZE (payload over
 * PROTO_MAX_HELLO), -EINVAL (MAX_PAYLOAD below PROTO_MIN_PAYLOAD),
 * -EPROTONOSUPPORT (unknown critical field). The server answers ERROR VERSION
 * to -EPROTONOSUPPORT and ERROR BAD_REQUEST to the others. */
int proto_decode_hello(const struct proto_frame *f, struct proto_hello *h);
/* Encode h as a frame of type PROTO_HELLO or PROTO_HELLO_OK. Absent fields
 * (NULL, -1, 0) are left out. */
long proto_encode_hello(void *buf, size_t cap, uint8_t type,
			const struct proto_hello *h);

/* Server side of version negotiation: the version to put in HELLO_OK for a
 * client offering at most 'offered', or -EPROTONOSUPPORT. */
int proto_version_choose(unsigned offered);

/* A decoded REQUEST. argv and envp are NULL-terminated and point into the
 * strbuf given to proto_decode_request, ready for execve(). */
struct proto_request {
	int argc;
	char *argv[PROTO_MAX_ARGS + 1];
	int envc;
	char *envp[PROTO_MAX_ENV + 1];
	uint32_t timeout_ms;    /* 0 if absent or no limit */
	uint32_t flags;         /* PROTO_RF_* */
};

/* Decode a REQUEST, copying the strings into strbuf. A strbuf of f->len bytes
 * is always enough (each string of n bytes costs n + 5 payload bytes and
 * n + 1 strbuf bytes). 0, or -EBADMSG (truncated field, bad u32 field length,
 * duplicated TIMEOUT_MS/FLAGS, wrong frame type), -EINVAL (no ARG, empty
 * command name, NUL inside ARG/ENV, ENV without '=' or with an empty name),
 * -E2BIG (more than PROTO_MAX_ARGS ARGs or PROTO_MAX_ENV ENVs),
 * -EPROTONOSUPPORT (unknown critical tag or unknown flag bit), -ENOBUFS
 * (strbuf too small). Every failure means ERROR BAD_REQUEST, except -E2BIG
 * which means TOO_LARGE. */
int proto_decode_request(const struct proto_frame *f, struct proto_request *r,
			 char *strbuf, size_t strbufcap);
/* Encode a REQUEST. argv is NULL-terminated with at least one element; envp is
 * NULL-terminated or NULL. TIMEOUT_MS and FLAGS are left out when 0. -E2BIG
 * for too many ARGs/ENVs, -EINVAL for what the decoder would refuse. */
long proto_encode_request(void *buf, size_t cap, const char *const *argv,
			  const char *const *envp, uint32_t timeout_ms,
			  uint32_t flags);

/* STDIN, STDOUT and STDERR carry raw bytes in f->payload (no decoder needed);
 * an empty STDIN is allowed and means nothing. -EINVAL for any other type. */
long proto_encode_data(void *buf, size_t cap, uint8_t type, const void *data,
		       size_t len);

/* STDIN_EOF: 0, or -EBADMSG unless the payload is empty. */
int proto_decode_eof(const struct proto_frame *f);
long proto_encode_eof(void *buf, size_t cap);

/* SIGNAL: one byte, the signal number; whether it may be sent is policy. */
int proto_decode_signal(const struct proto_frame *f, int *signo);
long proto_encode_signal(void *buf, size_t cap, int signo);

/* EXIT: the final status of a command. */
struct proto_exit {
	int signaled;           /* 0: exited with code 'value'; 1: killed by signal 'value' */
	int value;              /* 0..255 */
	int core;               /* core dumped; only with signaled */
	uint64_t duration_us;   /* wall time from spawn to reap */
};

/* 0, or -EBADMSG (length not PROTO_EXIT_LEN, unknown kind or flag bit,
 * non-zero reserved byte, core flag with an exit code, wrong frame type). */
int proto_decode_exit(const struct proto_frame *f, struct proto_exit *e);
long proto_encode_exit(void *buf, size_t cap, const struct proto_exit *e);

/* ERROR: *msg points into the payload, *msglen bytes, not NUL-terminated and
 * untrusted (escape control characters before display). 0, or -EBADMSG
 * (shorter than the code, code 0, NUL in the message, wrong frame type).
 * Unknown non-zero codes decode fine: new codes may be added. */
int proto_decode_error(const struct proto_frame *f, int *code,
		       const char **msg, size_t *msglen);
/* code 1..65535; msg is a NUL-terminated UTF-8 string, or NULL for none. */
long proto_encode_error(void *buf, size_t cap, int code, const char *msg);

/* "bad request", "unknown command", ...; "unknown error" for other codes. */
const char *proto_error_name(int code);
/* "HELLO", "REQUEST", ...; "unknown" for other types. For logs. */
const char *proto_type_name(uint8_t type);

#endif
