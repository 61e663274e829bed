/* SPDX-License-Identifier: MIT */
/*
 * Splitting a command line into words without a shell: the server's line
 * mode and the client's prompt use the same rules. Pure.
 */
#ifndef TCPEXECD_WORDS_H
#define TCPEXECD_WORDS_H

/* Split line in place into at most max words (argv gets max + 1 slots,
 * NULL-terminated). Blanks (space, tab, CR, LF) separate words; '...' and
 * "..." group; a backslash takes the next character literally (inside
 * "..." too). Nothing else is special: no variables, globs, redirections
 * or separators. Returns the word count, or -1 with a reason in *why. */
int words_split(char *line, char **argv, int max, const char **why);

#endif
