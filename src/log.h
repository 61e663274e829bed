/* SPDX-License-Identifier: MIT */
/*
 * One logging API for every process: stderr (foreground), syslog (daemon
 * mode) or a log file. Each record is written with a single write() so that
 * workers sharing a descriptor never interleave lines.
 */
#ifndef TCPEXECD_LOG_H
#define TCPEXECD_LOG_H

#include <stdarg.h>
#include <syslog.h>

enum log_target {
	LOG_TARGET_STDERR,
	LOG_TARGET_SYSLOG,
	LOG_TARGET_FILE,
	LOG_TARGET_JOURNAL, /* native records with fields, through log_set_journal */
};

/* A journal sink (systemd_journal_send): log.c itself stays free of
 * libsystemd. Returns 0 when the record was taken. */
typedef int (*log_journal_fn)(int prio, const char *msg, const char *msgid,
			      const char *fields);
void log_set_journal(log_journal_fn fn);
/* Prefix stderr lines with "<N>" for systemd's SyslogLevelPrefix= parser. */
void log_set_prefix(int on);
/* Worker: send journal records as datagrams on fd (to the master). */
void log_set_forward(int fd);
/* Master: write a datagram a worker forwarded to the journal. 0 or -1. */
int log_forwarded(const char *dgram, size_t len);
/* True when records go to the journal natively. */
int log_journal_target(void);

/* MESSAGE_IDs of the events an administrator may query the journal for. */
#define MSGID_STARTED "16090e61b2394d4b911549409d89e164"
#define MSGID_STOPPED "45013673f91f4db6ba376f0b8f485aec"
#define MSGID_RELOAD "b4a82a34f93a4d89a433ea06cec8cf69"
#define MSGID_WORKER_DIED "8566737a062b4c39b552b6e04713e3d7"
#define MSGID_EXECUTED "e34929e126aa411594b678b1288af71f"
#define MSGID_DENIED "5770861e8663419eba80a49d8c92f297"

/* Start logging to stderr; safe to call before anything else. */
void log_init(const char *ident);
/* Switch target. For LOG_TARGET_FILE, path is opened O_APPEND. 0 or -1/errno. */
int log_open(enum log_target target, const char *path);
/* Reopen the log file after rotation (SIGUSR1); no-op for other targets. */
int log_reopen(void);
void log_set_level(int prio);
/* Would a record at prio be written? Lets hot paths skip formatting. */
int log_enabled(int prio);
/* Messages at LOG_ERR or worse are also copied to fd (the daemon's readiness
 * pipe) until it is set back to -1; the fd stays owned by the caller. */
void log_set_startup_fd(int fd);

void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(int prio, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* A record with a MESSAGE_ID and structured fields ("KEY=value" lines
 * separated by '\n'); outside the journal only the message is written. */
void log_event(int prio, const char *msgid, const char *fields, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Log at LOG_ERR and exit(code). For start-up and for workers only. */
_Noreturn void fatal(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parse "err", "warning", "notice", "info", "debug"; -1 if unknown. */
int log_level_parse(const char *name);

#endif
