// IPv4 longest-prefix match: a DIR-16-8-8 table (rte_lpm's scheme with a
// 16-bit first level) plus a hash of the rules for updates.
//
// Lookup: L1 has 2^16 u32 entries indexed by the top 16 address bits. An
// entry is either a leaf or, with E_EXT set, the index of a 256-entry group
// indexed by the next 8 bits; a group entry may in turn point to a group for
// the last 8 bits. At most three dependent loads, no loops, no hashing.
//
// Entry: bit 31 E_EXT | bits 30..25 depth+1 (0 = empty) | bits 24..0 next hop
// or group index. The depth of the rule that painted an entry lets insert
// overwrite only shorter matches and lets delete restore exactly what the
// deleted rule covered.
//
// Memory: L1 is 256 KiB; each group is 1 KiB. A prefix longer than /16 needs
// the group of its /16 (shared by all prefixes under that /16); one longer
// than /24 also needs the group of its /24. Groups whose 256 entries become
// identical again are folded back into their parent and recycled.
import { E_FULL, E_INVALID, E_NO_MEMORY, E_NOT_FOUND, E_OK, LPM_MAX_NH, LPM_MISS } from "./abi";
import { hashClear, hashDel, hashGet, hashPut } from "./hash";
import {
  H_POOL_FREE, H_POOL_TOP, H_POOL_USED, H_RULES, addrBase, ensureMemory, hdrBase, l1Base,
  maxBatch, maxRules, nhBase, poolBase, ruleHashBase, ruleHashMask,
} from "./layout";

const E_EXT: u32 = 0x80000000;
const DEPTH_SHIFT: u32 = 25;
const DEPTH_MASK: u32 = 0x3f << 25;
const VAL_MASK: u32 = 0x01ffffff;
const GROUP_BYTES: usize = 1024;
const NO_RULE: u32 = 0xffffffff;
/** Groups are indexed by 25 bits; memory runs out long before that. */
const MAX_GROUPS: u32 = 1 << 25;

@inline function leaf(depth: u32, nh: u32): u32 {
  return ((depth + 1) << DEPTH_SHIFT) | nh;
}
@inline function depthField(e: u32): u32 {
  return (e & DEPTH_MASK) >> DEPTH_SHIFT;
}
@inline function maskOf(len: u32): u32 {
  return len == 0 ? 0 : <u32>0xffffffff << (32 - len);
}
@inline function ruleKey(prefix: u32, len: u32): u64 {
  return ((<u64>len + 1) << 32) | <u64>prefix;
}
@inline function groupAt(g: u32): usize {
  return poolBase + <usize>g * GROUP_BYTES;
}
@inline function l1At(i: u32): usize {
  return l1Base + (<usize>i << 2);
}

/** Looks up one address: next-hop index, or LPM_MISS. */
@inline export function lookup(addr: u32): i32 {
  let e = load<u32>(l1Base + (<usize>(addr >>> 16) << 2));
  if (e & E_EXT) {
    e = load<u32>(poolBase + (<usize>(e & VAL_MASK) << 10) + (<usize>((addr >>> 8) & 0xff) << 2));
    if (e & E_EXT) {
      e = load<u32>(poolBase + (<usize>(e & VAL_MASK) << 10) + (<usize>(addr & 0xff) << 2));
    }
  }
  return e & DEPTH_MASK ? <i32>(e & VAL_MASK) : LPM_MISS;
}

// ---------------------------------------------------------------- group pool

/** Makes sure two groups can be taken without failing (an insert needs at most two). */
function reserveGroups(): bool {
  const top = load<u32>(hdrBase + H_POOL_TOP);
  let free: u32 = 0;
  let f = load<u32>(hdrBase + H_POOL_FREE);
  while (f != 0 && free < 2) {
    free++;
    f = load<u32>(groupAt(f - 1));
  }
  if (free >= 2) return true;
  if (top + 2 > MAX_GROUPS) return false;
  return ensureMemory(groupAt(top + 2 - free));
}

/** Takes a group (reserveGroups() must have succeeded) and fills it with `fill`. */
function takeGroup(fill: u32): u32 {
  let g: u32;
  const f = load<u32>(hdrBase + H_POOL_FREE);
  if (f != 0) {
    g = f - 1;
    store<u32>(hdrBase + H_POOL_FREE, load<u32>(groupAt(g)));
  } else {
    g = load<u32>(hdrBase + H_POOL_TOP);
    store<u32>(hdrBase + H_POOL_TOP, g + 1);
  }
  store<u32>(hdrBase + H_POOL_USED, load<u32>(hdrBase + H_POOL_USED) + 1);
  const p = groupAt(g);
  for (let j: usize = 0; j < 256; j++) store<u32>(p + (j << 2), fill);
  return g;
}

function freeGroup(g: u32): void {
  store<u32>(groupAt(g), load<u32>(hdrBase + H_POOL_FREE));
  store<u32>(hdrBase + H_POOL_FREE, g + 1);
  store<u32>(hdrBase + H_POOL_USED, load<u32>(hdrBase + H_POOL_USED) - 1);
}

/** Group under the entry at `slot`, creating it (filled with the entry's leaf) if needed. */
function groupUnder(slot: usize): u32 {
  const e = load<u32>(slot);
  if (e & E_EXT) return e & VAL_MASK;
  const g = takeGroup(e);
  store<u32>(slot, E_EXT | g); // published only once the group is filled
  return g;
}

/**
 * Folds the group under `slot` back into `slot` when its 256 entries are the
 * same leaf of a depth the parent level can hold (<= maxDepth). Returns true
 * when it folded.
 */
function tryFold(slot: usize, maxDepth: u32): bool {
  const e = load<u32>(slot);
  if (!(e & E_EXT)) return false;
  const g = e & VAL_MASK;
  const p = groupAt(g);
  const first = load<u32>(p);
  if (first & E_EXT) return false;
  if (depthField(first) > maxDepth + 1) return false;
  for (let j: usize = 1; j < 256; j++) {
    if (load<u32>(p + (j << 2)) != first) return false;
  }
  store<u32>(slot, first);
  freeGroup(g);
  return true;
}

// ------------------------------------------------------------------ painting

/**
 * Writes `ent` over the `n` entries at `p` (and inside their groups) whose
 * depth is at most `depth`: the entries a new rule of that depth now wins.
 */
function paint(p: usize, n: u32, depth: u32, ent: u32): void {
  const limit = depth + 1;
  for (let j: u32 = 0; j < n; j++) {
    const q = p + (<usize>j << 2);
    const e = load<u32>(q);
    if (e & E_EXT) paint(groupAt(e & VAL_MASK), 256, depth, ent);
    else if (depthField(e) <= limit) store<u32>(q, ent);
  }
}

/** Writes `ent` over the entries at `p` painted by a rule of exactly `depth`. */
function unpaint(p: usize, n: u32, depth: u32, ent: u32): void {
  const exact = depth + 1;
  for (let j: u32 = 0; j < n; j++) {
    const q = p + (<usize>j << 2);
    const e = load<u32>(q);
    if (e & E_EXT) unpaint(groupAt(e & VAL_MASK), 256, depth, ent);
    else if (depthField(e) == exact) store<u32>(q, ent);
  }
}

// --------------------------------------------------------------- public API

/**
 * Adds the prefix (host bits of `prefix` are ignored) or changes its next hop.
 * E_INVALID for len > 32 or nh > LPM_MAX_NH, E_FULL at the rule limit,
 * E_NO_MEMORY when groups cannot be allocated. The table is unchanged on error.
 */
export function lpm_insert(prefix: u32, len: u32, nh: u32): i32 {
  if (hdrBase == 0 || len > 32 || nh > <u32>LPM_MAX_NH) return E_INVALID;
  const a = prefix & maskOf(len);
  const key = ruleKey(a, len);
  const old = hashGet(ruleHashBase, ruleHashMask, key, NO_RULE);
  const rules = load<u32>(hdrBase + H_RULES);
  if (old == NO_RULE && rules >= maxRules) return E_FULL;
  if (len > 16 && !reserveGroups()) return E_NO_MEMORY;
  if (hashPut(ruleHashBase, ruleHashMask, key, nh)) store<u32>(hdrBase + H_RULES, rules + 1);

  const ent = leaf(len, nh);
  if (len <= 16) {
    paint(l1At(a >>> 16), (<u32>1) << (16 - len), len, ent);
  } else if (len <= 24) {
    const g2 = groupUnder(l1At(a >>> 16));
    paint(groupAt(g2) + (<usize>((a >>> 8) & 0xff) << 2), (<u32>1) << (24 - len), len, ent);
  } else {
    const g2 = groupUnder(l1At(a >>> 16));
    const g3 = groupUnder(groupAt(g2) + (<usize>((a >>> 8) & 0xff) << 2));
    paint(groupAt(g3) + (<usize>(a & 0xff) << 2), (<u32>1) << (32 - len), len, ent);
  }
  return E_OK;
}

/** Removes the prefix; the next shorter covering prefix takes its addresses back. */
export function lpm_delete(prefix: u32, len: u32): i32 {
  if (hdrBase == 0 || len > 32) return E_INVALID;
  const a = prefix & maskOf(len);
  if (!hashDel(ruleHashBase, ruleHashMask, ruleKey(a, len))) return E_NOT_FOUND;
  store<u32>(hdrBase + H_RULES, load<u32>(hdrBase + H_RULES) - 1);

  // What the addresses fall back to: the longest remaining rule covering them.
  let repl: u32 = 0;
  for (let l = <i32>len - 1; l >= 0; l--) {
    const cover = a & maskOf(<u32>l);
    const nh = hashGet(ruleHashBase, ruleHashMask, ruleKey(cover, <u32>l), NO_RULE);
    if (nh != NO_RULE) {
      repl = leaf(<u32>l, nh);
      break;
    }
  }

  const s1 = l1At(a >>> 16);
  if (len <= 16) {
    // Groups below keep their deeper entries, so none of them can fold.
    unpaint(s1, (<u32>1) << (16 - len), len, repl);
    return E_OK;
  }
  const g2 = load<u32>(s1) & VAL_MASK; // a rule deeper than /16 always has its group
  const s2 = groupAt(g2) + (<usize>((a >>> 8) & 0xff) << 2);
  if (len <= 24) {
    unpaint(s2, (<u32>1) << (24 - len), len, repl);
  } else {
    const g3 = load<u32>(s2) & VAL_MASK;
    unpaint(groupAt(g3) + (<usize>(a & 0xff) << 2), (<u32>1) << (32 - len), len, repl);
    tryFold(s2, 24);
  }
  tryFold(s1, 16);
  return E_OK;
}

/** Exact-match read of a stored prefix's next hop, or LPM_MISS. */
export function lpm_get(prefix: u32, len: u32): i32 {
  if (hdrBase == 0 || len > 32) return LPM_MISS;
  const nh = hashGet(ruleHashBase, ruleHashMask, ruleKey(prefix & maskOf(len), len), NO_RULE);
  return nh == NO_RULE ? LPM_MISS : <i32>nh;
}

/** Looks up one address. */
export function lpm_lookup(addr: u32): i32 {
  if (hdrBase == 0) return LPM_MISS;
  return lookup(addr);
}

/**
 * Looks up `n` addresses from the scratch region (L_ADDR_BASE) into the
 * results region (L_NH_BASE). Returns n, or E_INVALID when n > max batch.
 */
export function lpm_lookup_batch(n: u32): i32 {
  if (hdrBase == 0 || n > maxBatch) return E_INVALID;
  for (let i: usize = 0; i < <usize>n; i++) {
    store<i32>(nhBase + (i << 2), lookup(load<u32>(addrBase + (i << 2))));
  }
  return <i32>n;
}

/** Removes every prefix and returns all groups to the pool. */
export function lpm_clear(): void {
  if (hdrBase == 0) return;
  hashClear(ruleHashBase, ruleHashMask);
  memory.fill(l1Base, 0, 65536 * 4);
  store<u32>(hdrBase + H_RULES, 0);
  store<u32>(hdrBase + H_POOL_FREE, 0);
  store<u32>(hdrBase + H_POOL_USED, 0);
  store<u32>(hdrBase + H_POOL_TOP, 0);
}

/** Prefixes stored. */
export function lpm_size(): u32 {
  return hdrBase == 0 ? 0 : load<u32>(hdrBase + H_RULES);
}

/** Groups in use now. */
export function lpm_groups(): u32 {
  return hdrBase == 0 ? 0 : load<u32>(hdrBase + H_POOL_USED);
}

/**
 * Bytes the lookup structure uses now: L1 plus the groups in use. (Memory
 * taken by the pool's high-water mark stays reserved for reuse; the rule hash
 * is sized once at init: 16 bytes x 2 x max rules, rounded to a power of two.)
 */
export function lpm_memory_bytes(): u32 {
  return hdrBase == 0 ? 0 : 65536 * 4 + load<u32>(hdrBase + H_POOL_USED) * <u32>GROUP_BYTES;
}

