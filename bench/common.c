// SPDX-License-Identifier: MIT
/*
 * Helpers shared by the benchmark programs: the escapes accepted in
 * --expect and --payload.
 */
#include "common.h"

size_t bench_unescape(char *s)
{
	char *w = s;

	for (const char *r = s; *r; r++) {
		if (*r != '\\' || !r[1]) {
			*w++ = *r;
			continue;
		}
		r++;
		switch (*r) {
		case 'n': *w++ = '\n'; break;
		case 't': *w++ = '\t'; break;
		case 'r': *w++ = '\r'; break;
		default: *w++ = *r; break;
		}
	}
	*w = '\0';
	return (size_t)(w - s);
}
