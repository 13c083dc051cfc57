// The LPM group pool: variable-size blocks of 64-byte units at the end of
// linear memory, the one region that grows.
//
// Blocks are 1..POOL_CLASSES units. Each size has its own free list (the link
// lives in the first word of a free block); a request is served from its free
// list, else carved from the top. Blocks are never split or merged, so memory
// taken by a churning table is reused by blocks of the same size only; the
// table's sizes are few (a group of n runs takes ceil((48 + 4n) / 64) units).
import { H_GROUPS, H_POOL_FREE, H_POOL_TOP, H_POOL_USED, ensureMemory, hdrBase, poolBase } from "./layout";

export const UNIT: usize = 64;
export const POOL_CLASSES: u32 = 17; // 48 + 4 x 256 bytes = 17 units: the largest group
/** Block references are unit indexes of 25 bits (2 GiB of pool). */
const MAX_UNITS: u32 = 1 << 25;

@inline export function poolAddr(ref: u32): usize {
  return poolBase + (<usize>ref << 6);
}

/**
 * Makes sure `units` more units can be carved from the top without failing,
 * so that an update that has started cannot run out of memory half-way.
 */
export function poolReserve(units: u32): bool {
  const top = load<u32>(hdrBase + H_POOL_TOP);
  if (top + units > MAX_UNITS) return false;
  return ensureMemory(poolAddr(top + units));
}

/** Takes a block of `units` (1..POOL_CLASSES). The caller has reserved enough. */
export function poolAlloc(units: u32): u32 {
  const head = hdrBase + H_POOL_FREE + (<usize>(units - 1) << 2);
  const f = load<u32>(head);
  let ref: u32;
  if (f != 0) {
    ref = f - 1;
    store<u32>(head, load<u32>(poolAddr(ref)));
  } else {
    ref = load<u32>(hdrBase + H_POOL_TOP);
    store<u32>(hdrBase + H_POOL_TOP, ref + units);
  }
  store<u32>(hdrBase + H_POOL_USED, load<u32>(hdrBase + H_POOL_USED) + units);
  store<u32>(hdrBase + H_GROUPS, load<u32>(hdrBase + H_GROUPS) + 1);
  return ref;
}

/** Returns a block of `units` to its free list. */
export function poolFree(ref: u32, units: u32): void {
  const head = hdrBase + H_POOL_FREE + (<usize>(units - 1) << 2);
  store<u32>(poolAddr(ref), load<u32>(head));
  store<u32>(head, ref + 1);
  store<u32>(hdrBase + H_POOL_USED, load<u32>(hdrBase + H_POOL_USED) - units);
  store<u32>(hdrBase + H_GROUPS, load<u32>(hdrBase + H_GROUPS) - 1);
}

/** Forgets every block (the memory stays, to be carved again). */
export function poolReset(): void {
  memory.fill(hdrBase + H_POOL_FREE, 0, <usize>POOL_CLASSES << 2);
  store<u32>(hdrBase + H_POOL_TOP, 0);
  store<u32>(hdrBase + H_POOL_USED, 0);
  store<u32>(hdrBase + H_GROUPS, 0);
}
