// SPDX-License-Identifier: MIT
/*
 * Word splitting without a shell, for line mode (in a worker) and the
 * client's interactive prompt: blanks separate, quotes group, a backslash
 * escapes. What a shell would expand stays literal text.
 */
#include <stddef.h>

#include "words.h"

static int blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int words_split(char *line, char **argv, int max, const char **why)
{
	char *in = line, *out = line;
	int argc = 0;

	for (;;) {
		while (blank(*in))
			in++;
		if (!*in)
			break;
		if (argc == max) {
			*why = "too many words";
			return -1;
		}
		argv[argc++] = out;
		while (*in && !blank(*in)) {
			char q = *in;
			if (q == '\'' || q == '"') {
				in++;
				while (*in && *in != q) {
					if (q == '"' && *in == '\\' && in[1])
						in++;
					*out++ = *in++;
				}
				if (!*in) {
					*why = "unbalanced quote";
					return -1;
				}
				in++;
			} else if (q == '\\' && in[1]) {
				in++;
				*out++ = *in++;
			} else {
				*out++ = *in++;
			}
		}
		if (*in)
			in++;
		*out++ = '\0';
	}
	argv[argc] = NULL;
	return argc;
}
