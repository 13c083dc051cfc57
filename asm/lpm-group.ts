// Compressed 256-entry LPM groups (leaf compression as in Poptrie).
//
// A group covers the 256 addresses' next 8 bits below its parent entry. Its
// 256 entries form runs of equal values; the group stores a 256-bit map with
// a bit set where a run starts, the run values in order, and per 64-bit word
// the number of runs that start before it. Entry i is then
//   values[base[i >> 6] + popcnt(map[i >> 6] & bits 0..i%64) - 1].
//
//   +0  u64 x 4  run-start bitmap (bit 0 always set)
//   +32 u32      cover: what COVER entries mean (a leaf, or 0 = no route)
//   +36 u8 x 4   base: runs starting before word w (base[0] = 0)
//   +40 u8       flags (G_INHERIT)
//   +42 u16      number of values
//   +48 u32 x n  values: a leaf, COVER, or (level-2 groups only) E_EXT | group
//
// COVER marks the entries no rule inside the group decides: they take the
// value of the enclosing shorter prefix, kept once in the header. So a change
// of a short prefix rewrites one header word per group, not the groups.
import { UNIT, poolAddr, poolAlloc, poolFree } from "./pool";

export const E_EXT: u32 = 0x80000000;
export const DEPTH_SHIFT: u32 = 25;
export const DEPTH_MASK: u32 = 0x3f << 25;
export const VAL_MASK: u32 = 0x01ffffff;
/** "Whatever the header's cover says": the depth field's highest value. */
export const COVER: u32 = 63 << 25;

export const G_COVER: usize = 32;
export const G_BASES: usize = 36;
export const G_FLAGS: usize = 40;
export const G_NVALS: usize = 42;
export const G_VALUES: usize = 48;
/** Level-3 group whose cover follows its level-2 group's cover (no /17-/24 rule covers it). */
export const G_INHERIT: u8 = 1;

/** A route entry: depth is stored + 1 so that 0 can mean "no route". */
@inline export function leaf(depth: u32, nh: u32): u32 {
  return ((depth + 1) << DEPTH_SHIFT) | nh;
}

/** The stored depth field (depth + 1; 0 = empty; 63 = COVER). */
@inline export function depthField(v: u32): u32 {
  return (v & DEPTH_MASK) >> DEPTH_SHIFT;
}

/** Entry i of the group at g, with COVER replaced by the group's cover. */
@inline export function groupGet(g: usize, i: u32): u32 {
  const w = <usize>(i >> 6);
  const bits = load<u64>(g + (w << 3)) & ((<u64>0xffffffffffffffff) >> (63 - <u64>(i & 63)));
  const rank = <usize>load<u8>(g + G_BASES + w) + <usize>popcnt<u64>(bits) - 1;
  const v = load<u32>(g + G_VALUES + (rank << 2));
  return select<u32>(load<u32>(g + G_COVER), v, v == COVER);
}

@inline export function groupUnits(g: usize): u32 {
  return <u32>((G_VALUES + (<usize>load<u16>(g + G_NVALS) << 2) + UNIT - 1) / UNIT);
}

/** Units a group of `n` values takes. */
@inline export function unitsFor(n: u32): u32 {
  return <u32>((G_VALUES + (<usize>n << 2) + UNIT - 1) / UNIT);
}

/** Expands the group at g into 256 raw u32 values at out (COVER kept as is). */
export function decompress(g: usize, out: usize): void {
  let r: isize = -1;
  for (let w: usize = 0; w < 4; w++) {
    const bm = load<u64>(g + (w << 3));
    for (let b: usize = 0; b < 64; b++) {
      if ((bm >> <u64>b) & 1) r++;
      store<u32>(out + ((w * 64 + b) << 2), load<u32>(g + G_VALUES + (<usize>r << 2)));
    }
  }
}

/** True when all 256 values at src are COVER: the group says nothing and can go. */
export function allCover(src: usize): bool {
  for (let i: usize = 0; i < 256; i++) if (load<u32>(src + (i << 2)) != COVER) return false;
  return true;
}

/** Runs in 256 values. */
function countRuns(src: usize): u32 {
  let n: u32 = 1;
  let prev = load<u32>(src);
  for (let i: usize = 1; i < 256; i++) {
    const v = load<u32>(src + (i << 2));
    if (v != prev) n++;
    prev = v;
  }
  return n;
}

/** Builds a group from 256 values at src in a new block; returns its reference. */
export function compress(src: usize, cover: u32, flags: u8): u32 {
  const n = countRuns(src);
  const ref = poolAlloc(unitsFor(n));
  const g = poolAddr(ref);
  let r: u32 = 0;
  let prev: u32 = 0;
  for (let w: usize = 0; w < 4; w++) {
    store<u8>(g + G_BASES + w, <u8>r);
    let bm: u64 = 0;
    for (let b: usize = 0; b < 64; b++) {
      const i = w * 64 + b;
      const v = load<u32>(src + (i << 2));
      if (i == 0 || v != prev) {
        bm |= (<u64>1) << <u64>b;
        store<u32>(g + G_VALUES + (<usize>r << 2), v);
        r++;
      }
      prev = v;
    }
    store<u64>(g + (w << 3), bm);
  }
  store<u32>(g + G_COVER, cover);
  store<u8>(g + G_FLAGS, flags);
  store<u8>(g + G_FLAGS + 1, 0);
  store<u16>(g + G_NVALS, <u16>n);
  store<u32>(g + 44, 0);
  return ref;
}

/** Frees the group a reference names. */
export function release(ref: u32): void {
  poolFree(ref, groupUnits(poolAddr(ref)));
}
