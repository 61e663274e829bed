/* SPDX-License-Identifier: MIT */
/*
 * A log-linear latency histogram in microseconds, shared by the benchmark
 * programs (loadgen, spawn). Fixed size, so a run of any length costs the
 * same memory; each thread fills its own and the results are merged at the
 * end. Values below 128 us are exact, larger ones are kept to within 1/64
 * (1.6 %), which is finer than the run-to-run noise it is used to report.
 */
#ifndef TCPEXECD_BENCH_HIST_H
#define TCPEXECD_BENCH_HIST_H

#include <stdint.h>
#include <stdio.h>

#define HIST_SUB_BITS 7
#define HIST_MAX_EXP 40 /* 2^40 us is 12 days: anything longer is clamped */
#define HIST_BUCKETS ((1u << HIST_SUB_BITS) + \
		      (HIST_MAX_EXP - HIST_SUB_BITS + 1) * (1u << (HIST_SUB_BITS - 1)))

struct hist {
	uint64_t count;
	uint64_t max;
	uint64_t sum;
	uint64_t bucket[HIST_BUCKETS];
};

void hist_add(struct hist *h, uint64_t us);
/* Add every sample of src to dst. */
void hist_merge(struct hist *dst, const struct hist *src);
/* The value below which a fraction p (0..1) of the samples lie: the middle
 * of the bucket that holds it, never above the exact maximum. 0 if empty. */
uint64_t hist_percentile(const struct hist *h, double p);
/* " p50_us=.. p90_us=.. p99_us=.. max_us=.." appended to f. */
void hist_print(const struct hist *h, FILE *f);

/* The monotonic clock in microseconds. */
uint64_t hist_now_us(void);

#endif
