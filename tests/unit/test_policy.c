// SPDX-License-Identifier: MIT
/* Unit test of policy.c: which entry runs with which argv for which peer,
 * and what is refused. The allowlist comes from a real config file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "policy.h"

static const struct config *cfg;
static struct addr lo, far;

static const char *identity = "";

static enum policy_verdict ask(const struct addr *peer, const char *const *argv,
			       const char *const *envp, struct policy_exec *ex)
{
	char why[256];
	int argc = 0, envc = 0;

	while (argv[argc])
		argc++;
	while (envp && envp[envc])
		envc++;
	return policy_check(cfg, (const struct sockaddr *)&peer->sa, identity, argc,
			    (char *const *)argv,
			    envc, (char *const *)envp, ex, why, sizeof(why));
}

#define ARGV(...) ((const char *const[]){ __VA_ARGS__, NULL })

int main(void)
{
	char path[] = "/tmp/tcpexecd-test-policy.XXXXXX", err[512];
	struct policy_exec ex;
	struct config *c;
	FILE *f;
	int fd = mkstemp(path);

	f = fdopen(fd, "w");
	fputs("[server]\n"
	      "[command echo]\npath = /bin/echo\nargs = any\n"
	      "[command up]\npath = /bin/echo\narg = -n\narg = fixed\n"
	      "[command date]\npath = /bin/date\nargs = pattern\narg_pattern = \\+%[a-zA-Z]\n"
	      "max_args = 1\n"
	      "[command lan]\npath = /bin/echo\nallow = 10.0.0.0/8\nallow = ::1\n"
	      "[command sh]\nshell = yes\nscript = echo \"$1\"\nargs = any\n"
	      "[command envy]\npath = /bin/echo\nenv = FOO\n",
	      f);
	fclose(f);
	c = config_load(path, NULL, err, sizeof(err));
	unlink(path);
	if (!c) {
		fprintf(stderr, "config: %s\n", err);
		return 1;
	}
	cfg = c;
	addr_parse("127.0.0.1:4000", &lo, err, sizeof(err));
	addr_parse("10.1.2.3:4000", &far, err, sizeof(err));

	/* Unknown names and empty requests. */
	CHECK(ask(&lo, ARGV("rm", "-rf", "/"), NULL, &ex) == POLICY_UNKNOWN);
	CHECK(ask(&lo, ARGV(""), NULL, &ex) == POLICY_BAD_REQUEST);
	CHECK(ask(&lo, ARGV("/bin/echo"), NULL, &ex) == POLICY_UNKNOWN); /* names, not paths */

	/* Client arguments are data, passed through as they are. */
	CHECK(ask(&lo, ARGV("echo", "$(reboot)", ";", "-n", "a\nb"), NULL, &ex) == POLICY_ALLOW);
	CHECK(strcmp(ex.path, "/bin/echo") == 0 && ex.argc == 5);
	CHECK(strcmp(ex.argv[1], "$(reboot)") == 0 && strcmp(ex.argv[4], "a\nb") == 0);
	CHECK(ex.argv[5] == NULL);

	/* Fixed leading arguments; args = none. */
	CHECK(ask(&lo, ARGV("up"), NULL, &ex) == POLICY_ALLOW);
	CHECK(ex.argc == 3 && strcmp(ex.argv[1], "-n") == 0 && strcmp(ex.argv[2], "fixed") == 0);
	CHECK(ask(&lo, ARGV("up", "x"), NULL, &ex) == POLICY_DENIED);

	/* Patterns match whole arguments, never a part. */
	CHECK(ask(&lo, ARGV("date", "+%s"), NULL, &ex) == POLICY_ALLOW);
	CHECK(ask(&lo, ARGV("date", "+%s;reboot"), NULL, &ex) == POLICY_DENIED);
	CHECK(ask(&lo, ARGV("date", "x+%s"), NULL, &ex) == POLICY_DENIED);
	CHECK(ask(&lo, ARGV("date", "+%s", "+%s"), NULL, &ex) == POLICY_DENIED); /* max_args */

	/* Networks. */
	CHECK(ask(&lo, ARGV("lan"), NULL, &ex) == POLICY_DENIED);
	CHECK(ask(&far, ARGV("lan"), NULL, &ex) == POLICY_ALLOW);
	CHECK(ask(&far, ARGV("echo"), NULL, &ex) == POLICY_ALLOW); /* no allow: any */

	/* Shell entries get the client's words as positional parameters. */
	CHECK(ask(&lo, ARGV("sh", "; rm -rf /"), NULL, &ex) == POLICY_ALLOW);
	CHECK(strcmp(ex.path, "/bin/sh") == 0 && ex.argc == 5);
	CHECK(strcmp(ex.argv[1], "-c") == 0 && strcmp(ex.argv[2], "echo \"$1\"") == 0);
	CHECK(strcmp(ex.argv[3], "sh") == 0 && strcmp(ex.argv[4], "; rm -rf /") == 0);

	/* Variables only by name. */
	CHECK(ask(&lo, ARGV("envy"), ARGV("FOO=1"), &ex) == POLICY_ALLOW);
	CHECK(ask(&lo, ARGV("envy"), ARGV("FOO=1", "FOOBAR=2"), &ex) == POLICY_DENIED);
	CHECK(ask(&lo, ARGV("envy"), ARGV("FO=1"), &ex) == POLICY_DENIED);
	CHECK(ask(&lo, ARGV("echo"), ARGV("LD_PRELOAD=/tmp/x.so"), &ex) == POLICY_DENIED);

	config_free(c);
	return CHECK_DONE();
}
