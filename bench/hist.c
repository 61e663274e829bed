// SPDX-License-Identifier: MIT
/*
 * The benchmarks' latency histogram (hist.h): bucket index arithmetic,
 * merge and percentiles. Linked into loadgen and spawn; no I/O besides
 * hist_print().
 */
#include "hist.h"

#include <inttypes.h>
#include <time.h>

#define SUB (1u << HIST_SUB_BITS)
#define HALF (1u << (HIST_SUB_BITS - 1))

static unsigned msb(uint64_t v)
{
	return 63u - (unsigned)__builtin_clzll(v);
}

/* Values below SUB get a bucket each; above, every power of two is split
 * into HALF buckets: the top HIST_SUB_BITS bits of the value select one. */
static unsigned bucket_of(uint64_t v)
{
	unsigned e, shift;

	if (v < SUB)
		return (unsigned)v;
	e = msb(v);
	if (e > HIST_MAX_EXP)
		return HIST_BUCKETS - 1;
	shift = e - (HIST_SUB_BITS - 1);
	return SUB + (e - HIST_SUB_BITS) * HALF + (unsigned)((v >> shift) - HALF);
}

/* The middle of bucket i. */
static uint64_t value_of(unsigned i)
{
	unsigned e, shift;
	uint64_t m;

	if (i < SUB)
		return i;
	e = (i - SUB) / HALF + HIST_SUB_BITS;
	m = (i - SUB) % HALF + HALF;
	shift = e - (HIST_SUB_BITS - 1);
	return (m << shift) + ((uint64_t)1 << shift) / 2;
}

void hist_add(struct hist *h, uint64_t us)
{
	h->bucket[bucket_of(us)]++;
	h->count++;
	h->sum += us;
	if (us > h->max)
		h->max = us;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		dst->bucket[i] += src->bucket[i];
	dst->count += src->count;
	dst->sum += src->sum;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
	uint64_t rank, seen = 0;

	if (h->count == 0)
		return 0;
	/* The sample of rank ceil(p * count), counting from 1. */
	rank = (uint64_t)(p * (double)h->count);
	if ((double)rank < p * (double)h->count)
		rank++;
	if (rank == 0)
		rank = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= rank) {
			uint64_t v = value_of(i);
			return v > h->max ? h->max : v;
		}
	}
	return h->max;
}

void hist_print(const struct hist *h, FILE *f)
{
	fprintf(f, " p50_us=%" PRIu64 " p90_us=%" PRIu64 " p99_us=%" PRIu64
		" max_us=%" PRIu64,
		hist_percentile(h, 0.50), hist_percentile(h, 0.90),
		hist_percentile(h, 0.99), h->max);
}

uint64_t hist_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
