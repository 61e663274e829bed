/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by the benchmark programs (loadgen, spawn).
 */
#ifndef TCPEXECD_BENCH_COMMON_H
#define TCPEXECD_BENCH_COMMON_H

#include <stddef.h>

/* Turn \n, \t, \r and \\ in s into the characters they name, in place;
 * returns the new length (the result may hold a NUL byte no more than the
 * input could). */
size_t bench_unescape(char *s);

#endif
