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
};

/* Start logging to stderr; safe to call before anything else. */
void log_init(const char *ident);
/* Switch target. For LOG_TARGET_FILE, path is opened O_APPEND. 0 or -1/errno. */
int log_open(enum log_target target, const char *path);
/* Reopen the log file after rotation (SIGUSR1); no-op for other targets. */
int log_reopen(void);
void log_set_level(int prio);
/* Messages at LOG_ERR or worse are also copied to fd (the daemon's readiness
 * pipe) until it is set back to -1; the fd stays owned by the caller. */
void log_set_startup_fd(int fd);
/* The fd that log records currently go to, or -1 (syslog). */
int log_fd(void);

void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(int prio, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

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
