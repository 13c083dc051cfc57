// IPv4 longest-prefix match: a 16-8-8 multibit table with compressed groups
// (asm/lpm-group.ts), plus a hash of the rules (asm/hash.ts) for updates.
//
// Lookup: L1 has 2^16 u32 entries indexed by the top 16 address bits. An
// entry is a leaf or, with E_EXT, a level-2 group for the next 8 bits, whose
// entries may point to a level-3 group for the last 8 bits. At most three
// levels, no loops, no hashing, and no data-dependent branches.
//
// Entry: bit 31 E_EXT | bits 30..25 depth+1 (0 = empty, 63 = COVER) |
// bits 24..0 next hop or group reference. The depth of the rule that set an
// entry lets insert overwrite only shorter matches and lets delete restore
// exactly what the deleted rule covered (the rte_lpm scheme).
//
// Updates: a rule of length <= 16 paints L1 leaves and the covers of the
// level-2 groups in its range (and of their level-3 groups that inherit it);
// a longer rule expands its one level-2 (and level-3) group into a work
// array, paints it, and compresses it into a new block, then the old block is
// freed. A group left with nothing but COVER entries is removed.
//
// Memory: L1 is 256 KiB; a group is 48 bytes + 4 per run of equal entries,
// rounded up to 64 bytes (see bench/RESULTS.md for measured totals).
import { E_FULL, E_INVALID, E_NO_MEMORY, E_NOT_FOUND, E_OK, LPM_MAX_NH, LPM_MISS } from "./abi";
import { hashClear, hashDel, hashGet, hashPut } from "./hash";
import {
  COVER, DEPTH_MASK, E_EXT, G_COVER, G_FLAGS, G_INHERIT, G_NVALS, G_VALUES, VAL_MASK, allCover, compress,
  decompress, depthField, groupGet, leaf, release,
} from "./lpm-group";
import {
  H_GROUPS, H_GROUPS6, H_POOL_USED, H_POOL_USED6, H_RULES, addrBase, dummyGroup, hdrBase, l1Base, lpmWork, maxBatch, maxRules,
  nhBase, poolBase, ruleHashBase, ruleHashMask,
} from "./layout";
import { POOL_CLASSES, UNIT, poolAddr, poolReserve, poolReset } from "./pool";

const NO_RULE: u32 = 0xffffffff;

// Work arrays (256 x u32 each): level-2 values, level-3 references, level-3 values.
@inline function lvl(): usize { return lpmWork; }
@inline function ptr(): usize { return lpmWork + 1024; }
@inline function v3(): usize { return lpmWork + 2048; }
@inline function at(arr: usize, i: u32): usize { return arr + (<usize>i << 2); }

@inline function maskOf(len: u32): u32 {
  return len == 0 ? 0 : <u32>0xffffffff << (32 - len);
}
@inline function ruleKey(prefix: u32, len: u32): u64 {
  return ((<u64>len + 1) << 32) | <u64>prefix;
}
@inline function l1At(s: u32): usize {
  return l1Base + (<usize>s << 2);
}

/**
 * Looks up one address: next-hop index, or LPM_MISS.
 *
 * Branch-free on purpose: whether an entry is a leaf or a group is data-
 * dependent and unpredictable, and a mispredicted branch throws away the
 * loads the CPU had already started for the next addresses of a batch. A
 * leaf's lookup reads an all-zero dummy group and discards the result.
 */
@inline export function lookup(addr: u32): i32 {
  return lookupIn(addr, l1Base, poolBase, dummyGroup);
}

/** lookup() over region bases the caller keeps in locals (a batch loop reads the globals once). */
@inline function lookupIn(addr: u32, l1: usize, pool: usize, dummy: usize): i32 {
  const e1 = load<u32>(l1 + (<usize>(addr >>> 16) << 2));
  const x1 = (e1 & E_EXT) != 0;
  const r2 = groupGet(select<usize>(pool + (<usize>(e1 & VAL_MASK) << 6), dummy, x1), (addr >>> 8) & 0xff);
  const e2 = select<u32>(r2, e1, x1);
  const x2 = (e2 & E_EXT) != 0;
  const r3 = groupGet(select<usize>(pool + (<usize>(e2 & VAL_MASK) << 6), dummy, x2), addr & 0xff);
  const e3 = select<u32>(r3, e2, x2);
  return select<i32>(<i32>(e3 & VAL_MASK), LPM_MISS, (e3 & DEPTH_MASK) != 0);
}

// ----------------------------------------------------------------- painting

/** The entry after inserting a rule of `depth` (entry `ent`): shorter matches and COVER give way. */
@inline function paintOne(v: u32, depth: u32, ent: u32): u32 {
  return v == COVER || depthField(v) <= depth + 1 ? ent : v;
}

/** The entry after deleting a rule of `depth`: what it set falls back to `repl`. */
@inline function unpaintOne(v: u32, depth: u32, repl: u32): u32 {
  return v != COVER && depthField(v) == depth + 1 ? repl : v;
}

@inline function apply(v: u32, depth: u32, val: u32, insert: bool): u32 {
  return insert ? paintOne(v, depth, val) : unpaintOne(v, depth, val);
}

/** Sets a level-2 group's cover and the covers of its level-3 groups that inherit it. */
function setCover(g2: usize, cover: u32): void {
  store<u32>(g2 + G_COVER, cover);
  const n = <usize>load<u16>(g2 + G_NVALS);
  for (let i: usize = 0; i < n; i++) {
    const v = load<u32>(g2 + G_VALUES + (i << 2));
    if (v & E_EXT) {
      const g3 = poolAddr(v & VAL_MASK);
      if (load<u8>(g3 + G_FLAGS) & G_INHERIT) store<u32>(g3 + G_COVER, cover);
    }
  }
}

/** A rule of length <= 16 over L1 slots [s0, s0 + n): leaves and level-2 covers. */
function paintL1(s0: u32, n: u32, depth: u32, val: u32, insert: bool): void {
  for (let s = s0; s < s0 + n; s++) {
    const p = l1At(s);
    const e = load<u32>(p);
    if (e & E_EXT) {
      const g2 = poolAddr(e & VAL_MASK);
      const c = load<u32>(g2 + G_COVER);
      const nc = apply(c, depth, val, insert);
      if (nc != c) setCover(g2, nc);
    } else {
      store<u32>(p, apply(e, depth, val, insert));
    }
  }
}

/**
 * Expands L1 slot s into the work arrays: lvl = level-2 values (what the
 * /17-/24 rules say, or COVER), ptr = level-3 group entries (E_EXT | ref, or
 * 0). Returns the slot's cover (the value of its longest rule <= /16).
 */
function loadL2(s: u32): u32 {
  const e = load<u32>(l1At(s));
  if (!(e & E_EXT)) {
    for (let i: u32 = 0; i < 256; i++) {
      store<u32>(at(lvl(), i), COVER);
      store<u32>(at(ptr(), i), 0);
    }
    return e;
  }
  const g2 = poolAddr(e & VAL_MASK);
  decompress(g2, lvl());
  for (let i: u32 = 0; i < 256; i++) {
    const v = load<u32>(at(lvl(), i));
    if (v & E_EXT) {
      // The level-2 value under a level-3 group is kept in that group's header.
      const g3 = poolAddr(v & VAL_MASK);
      const inherit = (load<u8>(g3 + G_FLAGS) & G_INHERIT) != 0;
      store<u32>(at(ptr(), i), v);
      store<u32>(at(lvl(), i), inherit ? COVER : load<u32>(g3 + G_COVER));
    } else {
      store<u32>(at(ptr(), i), 0);
    }
  }
  return load<u32>(g2 + G_COVER);
}

/** Writes the work arrays back as slot s's level-2 group (or a leaf when empty) and frees the old block. */
function storeL2(s: u32, cover: u32): void {
  const p = l1At(s);
  const old = load<u32>(p);
  let empty = true;
  for (let i: u32 = 0; i < 256; i++) {
    const q = load<u32>(at(ptr(), i));
    if (q != 0) store<u32>(at(lvl(), i), q); // lvl becomes the group's final values
    if (load<u32>(at(lvl(), i)) != COVER) empty = false;
  }
  store<u32>(p, empty ? cover : E_EXT | compress(lvl(), cover, 0)); // publish, then free
  if (old & E_EXT) release(old & VAL_MASK);
}

/** Points level-3 group `q` (E_EXT | ref) at its level-2 value `lv` (COVER: inherit `cover`). */
function linkL3(q: u32, lv: u32, cover: u32): void {
  const g3 = poolAddr(q & VAL_MASK);
  store<u32>(g3 + G_COVER, lv == COVER ? cover : lv);
  store<u8>(g3 + G_FLAGS, lv == COVER ? G_INHERIT : 0);
}

/** A rule of length 17..24 over positions [j0, j0 + n) of slot s's level-2 group. */
function paintL2(s: u32, j0: u32, n: u32, depth: u32, val: u32, insert: bool): void {
  const cover = loadL2(s);
  for (let j = j0; j < j0 + n; j++) {
    const lv = apply(load<u32>(at(lvl(), j)), depth, val, insert);
    store<u32>(at(lvl(), j), lv);
    const q = load<u32>(at(ptr(), j));
    if (q != 0) linkL3(q, lv, cover);
  }
  storeL2(s, cover);
}

/** A rule of length 25..32 over positions [k0, k0 + n) of the level-3 group at slot s, position t. */
function paintL3(s: u32, t: u32, k0: u32, n: u32, depth: u32, val: u32, insert: bool): void {
  const cover = loadL2(s);
  const q = load<u32>(at(ptr(), t));
  if (q != 0) decompress(poolAddr(q & VAL_MASK), v3());
  else for (let k: u32 = 0; k < 256; k++) store<u32>(at(v3(), k), COVER);
  for (let k = k0; k < k0 + n; k++) store<u32>(at(v3(), k), apply(load<u32>(at(v3(), k)), depth, val, insert));
  let nq: u32 = 0;
  if (!allCover(v3())) {
    nq = E_EXT | compress(v3(), 0, 0);
    linkL3(nq, load<u32>(at(lvl(), t)), cover);
  }
  store<u32>(at(ptr(), t), nq);
  storeL2(s, cover); // publishes the new level-3 group (or its removal) ...
  if (q != 0) release(q & VAL_MASK); // ... before the old one is freed
}

/** The longest stored rule covering `a` with length in [lo, len), as a leaf, or `none`. */
function coverOf(a: u32, len: u32, lo: u32, none: u32): u32 {
  for (let l = <i32>len - 1; l >= <i32>lo; l--) {
    const nh = hashGet(ruleHashBase, ruleHashMask, ruleKey(a & maskOf(<u32>l), <u32>l), NO_RULE);
    if (nh != NO_RULE) return leaf(<u32>l, nh);
  }
  return none;
}

function update(a: u32, len: u32, val: u32, insert: bool): void {
  if (len <= 16) {
    paintL1(a >>> 16, (<u32>1) << (16 - len), len, val, insert);
  } else if (len <= 24) {
    paintL2(a >>> 16, (a >>> 8) & 0xff, (<u32>1) << (24 - len), len, val, insert);
  } else {
    paintL3(a >>> 16, (a >>> 8) & 0xff, a & 0xff, (<u32>1) << (32 - len), len, val, insert);
  }
}

// --------------------------------------------------------------- public API

/**
 * Adds the prefix (host bits of `prefix` are ignored) or changes its next hop.
 * E_INVALID for len > 32 or nh > LPM_MAX_NH, E_FULL at the rule limit,
 * E_NO_MEMORY when the pool cannot grow. The table is unchanged on error.
 */
export function lpm_insert(prefix: u32, len: u32, nh: u32): i32 {
  if (hdrBase == 0 || len > 32 || nh > <u32>LPM_MAX_NH) return E_INVALID;
  const a = prefix & maskOf(len);
  const key = ruleKey(a, len);
  const isNew = hashGet(ruleHashBase, ruleHashMask, key, NO_RULE) == NO_RULE;
  const rules = load<u32>(hdrBase + H_RULES);
  if (isNew && rules >= maxRules) return E_FULL;
  // A level-3 update allocates a level-3 and a level-2 block before freeing any.
  if (len > 16 && !poolReserve(2 * POOL_CLASSES)) return E_NO_MEMORY;
  hashPut(ruleHashBase, ruleHashMask, key, nh);
  if (isNew) store<u32>(hdrBase + H_RULES, rules + 1);
  update(a, len, leaf(len, nh), true);
  return E_OK;
}

/** Removes the prefix; the next shorter covering prefix takes its addresses back. */
export function lpm_delete(prefix: u32, len: u32): i32 {
  if (hdrBase == 0 || len > 32) return E_INVALID;
  const a = prefix & maskOf(len);
  if (hashGet(ruleHashBase, ruleHashMask, ruleKey(a, len), NO_RULE) == NO_RULE) return E_NOT_FOUND;
  if (len > 16 && !poolReserve(2 * POOL_CLASSES)) return E_NO_MEMORY;
  hashDel(ruleHashBase, ruleHashMask, ruleKey(a, len));
  store<u32>(hdrBase + H_RULES, load<u32>(hdrBase + H_RULES) - 1);
  // What the addresses fall back to, at the deleted rule's own level:
  // a shorter rule of that level, else COVER (the level above decides), else no route.
  const repl = len <= 16 ? coverOf(a, len, 0, 0) : len <= 24 ? coverOf(a, len, 17, COVER) : coverOf(a, len, 25, COVER);
  update(a, len, repl, false);
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
  const l1 = l1Base, pool = poolBase, dummy = dummyGroup, src = addrBase, dst = nhBase;
  for (let i: usize = 0; i < <usize>n; i++) {
    store<i32>(dst + (i << 2), lookupIn(load<u32>(src + (i << 2)), l1, pool, dummy));
  }
  return <i32>n;
}

/** Removes every IPv4 prefix and frees every IPv4 group (the IPv6 table shares the pool and is kept). */
export function lpm_clear(): void {
  if (hdrBase == 0) return;
  hashClear(ruleHashBase, ruleHashMask);
  for (let s: u32 = 0; s < 65536; s++) {
    const e = load<u32>(l1At(s));
    if ((e & E_EXT) == 0) continue;
    const g2 = poolAddr(e & VAL_MASK);
    const n = <usize>load<u16>(g2 + G_NVALS);
    for (let i: usize = 0; i < n; i++) {
      const v = load<u32>(g2 + G_VALUES + (i << 2));
      if (v & E_EXT) release(v & VAL_MASK);
    }
    release(e & VAL_MASK);
  }
  memory.fill(l1Base, 0, 65536 * 4);
  store<u32>(hdrBase + H_RULES, 0);
  if (load<u32>(hdrBase + H_GROUPS) == 0) poolReset();
}

/** Prefixes stored. */
export function lpm_size(): u32 {
  return hdrBase == 0 ? 0 : load<u32>(hdrBase + H_RULES);
}

/** IPv4 groups alive. */
export function lpm_groups(): u32 {
  return hdrBase == 0 ? 0 : load<u32>(hdrBase + H_GROUPS) - load<u32>(hdrBase + H_GROUPS6);
}

/**
 * Bytes the lookup structure uses now: L1 plus the pool blocks in use.
 * (Freed blocks stay reserved for reuse; the rule hash is sized once at init:
 * 16 bytes x 2 x max rules, rounded up to a power of two.)
 */
export function lpm_memory_bytes(): u32 {
  return hdrBase == 0 ? 0 : 65536 * 4 + (load<u32>(hdrBase + H_POOL_USED) - load<u32>(hdrBase + H_POOL_USED6)) * <u32>UNIT;
}
