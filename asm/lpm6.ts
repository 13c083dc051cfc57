// IPv6 longest-prefix match: a 16-8-8-...-8 multibit trie (one 2^16 L1 table,
// then up to 14 levels of 256-entry groups) built from the compressed groups
// of the IPv4 table (asm/lpm-group.ts) in the same pool, plus a hash of the
// rules (asm/hash6.ts) for updates.
//
// Lookup: L1 is indexed by the top 16 address bits; an entry with E_EXT
// names the group for the next 8 bits, and so on until a leaf: one load and
// one popcount per level, at most 15 levels, and a /64 route is found in 7.
//
// Entry: bit 31 E_EXT | bits 30..23 depth+1 (0 = empty) | bits 22..0 next
// hop or group reference. Unlike the IPv4 table there are no COVER entries:
// a rule is expanded into every entry it decides, down every group below it
// (controlled prefix expansion, as DPDK's rte_lpm6). The depth of the rule
// that set an entry lets insert overwrite only shorter matches and lets
// delete hand exactly the deleted rule's entries back to the next shorter
// covering rule (the rte_lpm scheme). A group whose 256 entries are one leaf
// of a rule no longer than its parent's level folds back into that leaf.
//
// Updates run on one thread with no lookup in between (the core is not
// shared); each group rewritten is decompressed into its level's work array,
// painted, compressed into a new block, and the old block freed. Before an
// update starts the pool is grown to hold every block it may write, so that
// it cannot fail half-way.
import { E_FULL, E_INVALID, E_NO_MEMORY, E_NOT_FOUND, E_OK, LPM6_MAX_NH, LPM_MISS } from "./abi";
import { hash6Clear, hash6Del, hash6Get, hash6Put } from "./hash6";
import { E_EXT, G_NVALS, G_VALUES, compress, decompress, groupGet, groupUnits } from "./lpm-group";
import {
  H_GROUPS, H_GROUPS6, H_POOL_TOP, H_POOL_USED6, H_RULES6, addr6Base, ensureMemory, hdrBase, l1Base6, lpm6Work,
  maxBatch, maxRules6, nhBase, poolBase, ruleHash6Base, ruleHash6Mask,
} from "./layout";
import { POOL_CLASSES, UNIT, poolAddr, poolFree, poolReset } from "./pool";

const DEPTH_SHIFT: u32 = 23;
const DEPTH_MASK: u32 = 0xff << 23;
const VAL_MASK: u32 = 0x7fffff;
const NO_RULE: u32 = 0xffffffff;
/** Group references must fit VAL_MASK. */
const MAX_REF_UNITS: u32 = 1 << 23;

@inline function leaf6(depth: u32, nh: u32): u32 {
  return ((depth + 1) << DEPTH_SHIFT) | nh;
}
/** depth + 1 of a leaf (0 = empty). */
@inline function depth6(v: u32): u32 {
  return (v & DEPTH_MASK) >> DEPTH_SHIFT;
}
@inline function maskHi(len: u32): u64 {
  return len == 0 ? 0 : len >= 64 ? <u64>-1 : (<u64>-1) << (64 - <u64>len);
}
@inline function maskLo(len: u32): u64 {
  return len <= 64 ? 0 : (<u64>-1) << (128 - <u64>len);
}
/** Address byte `i` (0 = first on the wire). */
@inline function byteAt(hi: u64, lo: u64, i: u32): u32 {
  return i < 8 ? <u32>(hi >> (56 - 8 * <u64>i)) & 0xff : <u32>(lo >> (56 - 8 * <u64>(i - 8))) & 0xff;
}
/** Prefix bits decided by the entries of a group at level `lvl` (L1 is level 0). */
@inline function bitsOf(lvl: u32): u32 {
  return 16 + 8 * lvl;
}
@inline function work(lvl: u32): usize {
  return lpm6Work + (<usize>(lvl - 1) << 10);
}
@inline function l1At(s: u32): usize {
  return l1Base6 + (<usize>s << 2);
}
@inline function groupAt(e: u32): usize {
  return poolAddr(e & VAL_MASK);
}

// ------------------------------------------------------------------ lookup

@inline function lookupIn(hi: u64, lo: u64, l1: usize, pool: usize): i32 {
  let e = load<u32>(l1 + (<usize>(hi >> 48) << 2));
  let cur = hi << 16;
  let left: u32 = 6; // bytes of `hi` left for groups (bytes 2..7), then the 8 of `lo`
  while (e & E_EXT) {
    e = groupGet(pool + (<usize>(e & VAL_MASK) << 6), <u32>(cur >> 56));
    cur <<= 8;
    left--;
    if (left == 0) {
      cur = lo;
      left = 8;
    }
  }
  return select<i32>(<i32>(e & VAL_MASK), LPM_MISS, (e & DEPTH_MASK) != 0);
}

// ---------------------------------------------------------------- painting

@inline function apply(v: u32, depth: u32, val: u32, insert: bool): u32 {
  return insert ? (depth6(v) <= depth + 1 ? val : v) : depth6(v) == depth + 1 ? val : v;
}

function release6(ref: u32): void {
  const units = groupUnits(poolAddr(ref));
  poolFree(ref, units);
  store<u32>(hdrBase + H_GROUPS6, load<u32>(hdrBase + H_GROUPS6) - 1);
  store<u32>(hdrBase + H_POOL_USED6, load<u32>(hdrBase + H_POOL_USED6) - units);
}

/**
 * Stores the work array of a group at level `lvl` in place of entry `old`:
 * as the one leaf it holds when that leaf's rule covers the whole group,
 * else as a new compressed block. Frees the old block.
 */
function finish(w: usize, lvl: u32, old: u32): u32 {
  const v0 = load<u32>(w);
  let uniform = (v0 & E_EXT) == 0 && depth6(v0) <= bitsOf(lvl - 1) + 1;
  for (let i: usize = 1; uniform && i < 256; i++) if (load<u32>(w + (i << 2)) != v0) uniform = false;
  let neu = v0;
  if (!uniform) {
    const ref = compress(w, 0, 0);
    store<u32>(hdrBase + H_GROUPS6, load<u32>(hdrBase + H_GROUPS6) + 1);
    store<u32>(hdrBase + H_POOL_USED6, load<u32>(hdrBase + H_POOL_USED6) + groupUnits(poolAddr(ref)));
    neu = E_EXT | ref;
  }
  if (old & E_EXT) release6(old & VAL_MASK);
  return neu;
}

/** Paints entries [j0, j0 + n) of the work array of level `lvl`; true when any changed. */
function paintRange(lvl: u32, j0: u32, n: u32, depth: u32, val: u32, insert: bool): bool {
  const w = work(lvl);
  let changed = false;
  for (let j = j0; j < j0 + n; j++) {
    const p = w + (<usize>j << 2);
    const v = load<u32>(p);
    const nv = v & E_EXT ? paintAll(v, lvl + 1, depth, val, insert) : apply(v, depth, val, insert);
    if (nv != v) {
      store<u32>(p, nv);
      changed = true;
    }
  }
  return changed;
}

/** Paints every entry of the group `e` names (at level `lvl`) and below; returns its new entry. */
function paintAll(e: u32, lvl: u32, depth: u32, val: u32, insert: bool): u32 {
  decompress(groupAt(e), work(lvl));
  return paintRange(lvl, 0, 256, depth, val, insert) ? finish(work(lvl), lvl, e) : e;
}

/**
 * A rule longer than the level above: walks (and makes) the groups on its
 * path from the group below entry `e` (at level `lvl`) and paints its range
 * at its own level. Returns the new entry.
 */
function descend(e: u32, lvl: u32, hi: u64, lo: u64, len: u32, val: u32, insert: bool): u32 {
  const w = work(lvl);
  if (e & E_EXT) decompress(groupAt(e), w);
  else for (let i: usize = 0; i < 256; i++) store<u32>(w + (i << 2), e); // expand the leaf
  let changed = (e & E_EXT) == 0;
  const b = byteAt(hi, lo, lvl + 1);
  const bits = bitsOf(lvl);
  if (len <= bits) {
    if (paintRange(lvl, b, (<u32>1) << (bits - len), len, val, insert)) changed = true;
  } else {
    const p = w + (<usize>b << 2);
    const v = load<u32>(p);
    const nv = descend(v, lvl + 1, hi, lo, len, val, insert);
    if (nv != v) {
      store<u32>(p, nv);
      changed = true;
    }
  }
  return changed ? finish(w, lvl, e) : e;
}

function update(hi: u64, lo: u64, len: u32, val: u32, insert: bool): void {
  const s0 = <u32>(hi >> 48);
  if (len <= 16) {
    for (let s = s0; s < s0 + ((<u32>1) << (16 - len)); s++) {
      const p = l1At(s);
      const e = load<u32>(p);
      store<u32>(p, e & E_EXT ? paintAll(e, 1, len, val, insert) : apply(e, len, val, insert));
    }
  } else {
    const p = l1At(s0);
    store<u32>(p, descend(load<u32>(p), 1, hi, lo, len, val, insert));
  }
}

// ------------------------------------------------------------ memory bound

/** Pool units of the group `e` names and every group below it (0 for a leaf). */
function unitsBelow(e: u32): u32 {
  if ((e & E_EXT) == 0) return 0;
  const g = groupAt(e);
  let total = groupUnits(g);
  const n = <usize>load<u16>(g + G_NVALS);
  for (let i: usize = 0; i < n; i++) {
    const v = load<u32>(g + G_VALUES + (i << 2));
    if (v & E_EXT) total += unitsBelow(v);
  }
  return total;
}

/** Units an update of a rule may carve before it frees anything: every block it may write. */
function unitsNeeded(hi: u64, lo: u64, len: u32): u32 {
  const s0 = <u32>(hi >> 48);
  let total: u32 = 0;
  if (len <= 16) {
    for (let s = s0; s < s0 + ((<u32>1) << (16 - len)); s++) total += unitsBelow(load<u32>(l1At(s)));
    return total;
  }
  let e = load<u32>(l1At(s0));
  for (let lvl: u32 = 1; lvl <= 14; lvl++) {
    total += POOL_CLASSES; // this level's group, rewritten or made
    const bits = bitsOf(lvl);
    if ((e & E_EXT) == 0) return total + ((len - bits + 7) >> 3) * POOL_CLASSES;
    const g = groupAt(e);
    const b = byteAt(hi, lo, lvl + 1);
    if (len <= bits) {
      for (let j = b; j < b + ((<u32>1) << (bits - len)); j++) total += unitsBelow(groupGet(g, j));
      return total;
    }
    e = groupGet(g, b);
  }
  return total;
}

function reserve(units: u32): bool {
  const top = load<u32>(hdrBase + H_POOL_TOP);
  if (<u64>top + <u64>units > <u64>MAX_REF_UNITS) return false;
  return ensureMemory(poolAddr(top + units));
}

/** The longest stored rule shorter than `len` covering the prefix, as a leaf, or 0 (no route). */
function coverOf(hi: u64, lo: u64, len: u32): u32 {
  for (let l = <i32>len - 1; l >= 0; l--) {
    const nh = hash6Get(ruleHash6Base, ruleHash6Mask, hi & maskHi(<u32>l), lo & maskLo(<u32>l), <u32>l, NO_RULE);
    if (nh != NO_RULE) return leaf6(<u32>l, nh);
  }
  return 0;
}

function freeBelow(e: u32): void {
  if ((e & E_EXT) == 0) return;
  const g = groupAt(e);
  const n = <usize>load<u16>(g + G_NVALS);
  for (let i: usize = 0; i < n; i++) {
    const v = load<u32>(g + G_VALUES + (i << 2));
    if (v & E_EXT) freeBelow(v);
  }
  release6(e & VAL_MASK);
}

// -------------------------------------------------------------- public API
// A prefix or address is passed as four u32 words, w0 the first 32 bits on the wire.

@inline function hiOf(w0: u32, w1: u32): u64 {
  return ((<u64>w0) << 32) | <u64>w1;
}

/**
 * Adds the prefix (host bits ignored) or changes its next hop. E_INVALID for
 * len > 128 or nh > LPM6_MAX_NH, E_FULL at the rule limit, E_NO_MEMORY when
 * the pool cannot grow. The table is unchanged on error.
 */
export function lpm6_insert(w0: u32, w1: u32, w2: u32, w3: u32, len: u32, nh: u32): i32 {
  if (hdrBase == 0 || len > 128 || nh > <u32>LPM6_MAX_NH) return E_INVALID;
  const hi = hiOf(w0, w1) & maskHi(len);
  const lo = hiOf(w2, w3) & maskLo(len);
  const isNew = hash6Get(ruleHash6Base, ruleHash6Mask, hi, lo, len, NO_RULE) == NO_RULE;
  const rules = load<u32>(hdrBase + H_RULES6);
  if (isNew && rules >= maxRules6) return E_FULL;
  if (!reserve(unitsNeeded(hi, lo, len))) return E_NO_MEMORY;
  hash6Put(ruleHash6Base, ruleHash6Mask, hi, lo, len, nh);
  if (isNew) store<u32>(hdrBase + H_RULES6, rules + 1);
  update(hi, lo, len, leaf6(len, nh), true);
  return E_OK;
}

/** Removes the prefix; the next shorter covering prefix takes its addresses back. */
export function lpm6_delete(w0: u32, w1: u32, w2: u32, w3: u32, len: u32): i32 {
  if (hdrBase == 0 || len > 128) return E_INVALID;
  const hi = hiOf(w0, w1) & maskHi(len);
  const lo = hiOf(w2, w3) & maskLo(len);
  if (hash6Get(ruleHash6Base, ruleHash6Mask, hi, lo, len, NO_RULE) == NO_RULE) return E_NOT_FOUND;
  if (!reserve(unitsNeeded(hi, lo, len))) return E_NO_MEMORY;
  hash6Del(ruleHash6Base, ruleHash6Mask, hi, lo, len);
  store<u32>(hdrBase + H_RULES6, load<u32>(hdrBase + H_RULES6) - 1);
  update(hi, lo, len, coverOf(hi, lo, len), false);
  return E_OK;
}

/** Exact-match read of a stored prefix's next hop, or LPM_MISS. */
export function lpm6_get(w0: u32, w1: u32, w2: u32, w3: u32, len: u32): i32 {
  if (hdrBase == 0 || len > 128) return LPM_MISS;
  const nh = hash6Get(ruleHash6Base, ruleHash6Mask, hiOf(w0, w1) & maskHi(len), hiOf(w2, w3) & maskLo(len), len, NO_RULE);
  return nh == NO_RULE ? LPM_MISS : <i32>nh;
}

/** Looks up one address. */
export function lpm6_lookup(w0: u32, w1: u32, w2: u32, w3: u32): i32 {
  if (hdrBase == 0) return LPM_MISS;
  return lookupIn(hiOf(w0, w1), hiOf(w2, w3), l1Base6, poolBase);
}

/** Looks up the address at `p` (16 bytes, wire order): for the packet paths. */
@inline export function lookup6At(p: usize): i32 {
  return lookupIn(bswap<u64>(load<u64>(p)), bswap<u64>(load<u64>(p, 8)), l1Base6, poolBase);
}

/**
 * Looks up `n` 16-byte addresses (wire order) from the IPv6 scratch region
 * (L_ADDR6_BASE) into the results region (L_NH_BASE). Returns n, or
 * E_INVALID when n > max batch.
 */
export function lpm6_lookup_batch(n: u32): i32 {
  if (hdrBase == 0 || n > maxBatch) return E_INVALID;
  const l1 = l1Base6, pool = poolBase, src = addr6Base, dst = nhBase;
  for (let i: usize = 0; i < <usize>n; i++) {
    const p = src + (i << 4);
    store<i32>(dst + (i << 2), lookupIn(bswap<u64>(load<u64>(p)), bswap<u64>(load<u64>(p, 8)), l1, pool));
  }
  return <i32>n;
}

/** Removes every IPv6 prefix and frees every IPv6 group (the IPv4 table is untouched). */
export function lpm6_clear(): void {
  if (hdrBase == 0) return;
  for (let s: u32 = 0; s < 65536; s++) freeBelow(load<u32>(l1At(s)));
  memory.fill(l1Base6, 0, 65536 * 4);
  hash6Clear(ruleHash6Base, ruleHash6Mask);
  store<u32>(hdrBase + H_RULES6, 0);
  if (load<u32>(hdrBase + H_GROUPS) == 0) poolReset();
}

/** IPv6 prefixes stored. */
export function lpm6_size(): u32 {
  return hdrBase == 0 ? 0 : load<u32>(hdrBase + H_RULES6);
}

/** IPv6 groups alive. */
export function lpm6_groups(): u32 {
  return hdrBase == 0 ? 0 : load<u32>(hdrBase + H_GROUPS6);
}

/** Bytes the IPv6 lookup structure uses now: its L1 plus its pool blocks. */
export function lpm6_memory_bytes(): u32 {
  return hdrBase == 0 ? 0 : 65536 * 4 + load<u32>(hdrBase + H_POOL_USED6) * <u32>UNIT;
}
