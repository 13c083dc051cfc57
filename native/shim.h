/* Shared by the shim's files (weft_shim.c, weft_units.c): this thread's
 * counters, and the checks every offset read from WASM memory goes through. */
#pragma once
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "abi.h"

/* Descriptors per receive batch. */
#define MAX_BATCH 256

/* This thread's counters (WEFT_ST_*), taken and reset by weft_shim_stats(). */
extern __thread int32_t weft_stats[WEFT_ST_COUNT];

/* True when [off, off + len) lies inside a memory of `size` bytes (no 32-bit wrap-around). */
static inline int in_mem(uint64_t off, uint64_t len, uint32_t size)
{
	return off <= size && len <= (uint64_t)size - off;
}

/* Counts a refusal and returns -EINVAL. */
static inline int refuse(void)
{
	weft_stats[WEFT_ST_REFUSED]++;
	return -EINVAL;
}

static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline void wr16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline int32_t rdi32(const uint8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }

