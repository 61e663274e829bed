// SPDX-License-Identifier: MIT
/* Unit test of words.c: how a command line becomes words, and that shell
 * syntax stays literal text. */
#include <string.h>

#include "check.h"
#include "words.h"

static int split(const char *text, char **argv, int max, const char **why)
{
	static char buf[512];

	strcpy(buf, text);
	return words_split(buf, argv, max, why);
}

int main(void)
{
	char *argv[9];
	const char *why = NULL;

	CHECK(split("", argv, 8, &why) == 0 && argv[0] == NULL);
	CHECK(split(" \t\r\n", argv, 8, &why) == 0);
	CHECK(split("echo hi", argv, 8, &why) == 2 && !strcmp(argv[0], "echo") &&
	      !strcmp(argv[1], "hi") && argv[2] == NULL);
	CHECK(split("  a\t b  \r\n", argv, 8, &why) == 2 && !strcmp(argv[1], "b"));
	CHECK(split("echo 'a b' \"c d\"", argv, 8, &why) == 3 && !strcmp(argv[1], "a b") &&
	      !strcmp(argv[2], "c d"));
	CHECK(split("x'y'\"z\"", argv, 8, &why) == 1 && !strcmp(argv[0], "xyz"));
	CHECK(split("a\\ b", argv, 8, &why) == 1 && !strcmp(argv[0], "a b"));
	CHECK(split("\"a\\\"b\"", argv, 8, &why) == 1 && !strcmp(argv[0], "a\"b"));
	CHECK(split("'a\\b'", argv, 8, &why) == 1 && !strcmp(argv[0], "a\\b"));
	CHECK(split("''", argv, 8, &why) == 1 && !strcmp(argv[0], ""));
	/* Shell syntax is data. */
	CHECK(split("echo $(reboot);rm|x>y `z` *", argv, 8, &why) == 4 &&
	      !strcmp(argv[1], "$(reboot);rm|x>y") && !strcmp(argv[2], "`z`") &&
	      !strcmp(argv[3], "*"));
	CHECK(split("echo 'open", argv, 8, &why) < 0 && !strcmp(why, "unbalanced quote"));
	CHECK(split("a b c", argv, 2, &why) < 0 && !strcmp(why, "too many words"));
	CHECK(split("a b", argv, 2, &why) == 2);
	return CHECK_DONE();
}
