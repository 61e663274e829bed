// SPDX-License-Identifier: MIT
/*
 * The scoreboard: an array of worker slots in one MAP_SHARED anonymous
 * mapping, created by the master before the first fork and inherited by
 * every worker. Fixed size: no allocation after start.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "scoreboard.h"

int scoreboard_init(struct scoreboard *sb, int nslots)
{
	void *p = mmap(NULL, (size_t)nslots * sizeof(struct slot), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	sb->slots = p;
	sb->nslots = nslots;
	return 0;
}

void scoreboard_free(struct scoreboard *sb)
{
	if (!sb->slots)
		return;
	munmap(sb->slots, (size_t)sb->nslots * sizeof(struct slot));
	sb->slots = NULL;
}

const char *scoreboard_state_name(int state)
{
	static const char *const names[] = {
		[WS_FREE] = "free", [WS_STARTING] = "starting", [WS_IDLE] = "idle",
		[WS_BUSY] = "busy", [WS_EXITING] = "exiting",
	};
	if (state < 0 || state >= (int)(sizeof(names) / sizeof(names[0])))
		return "?";
	return names[state];
}
