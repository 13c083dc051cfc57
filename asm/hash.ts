// Open-addressing hash tables in linear memory: u64 key (never 0) -> u32 value.
//
// Slots are 16 bytes (key u64, value u32, pad). Linear probing; deletion by
// backward shift, so there are no tombstones and a lookup stops at the first
// empty slot. Capacity is a power of two at least twice the entry limit, so
// the load factor stays at or below one half. Used for the LPM rule set
// (key = (len+1) << 32 | prefix) and the underlay-address -> peer index map.

const SLOT: usize = 16;

@inline function home(key: u64, mask: u32): u32 {
  // Murmur3's 64-bit finaliser: every key bit reaches every slot bit.
  let h = key;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccd;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53;
  h ^= h >> 33;
  return <u32>h & mask;
}

/** Slot address holding `key`, or 0 when absent. */
export function hashFind(base: usize, mask: u32, key: u64): usize {
  let i = home(key, mask);
  while (true) {
    const p = base + <usize>i * SLOT;
    const k = load<u64>(p);
    if (k == key) return p;
    if (k == 0) return 0;
    i = (i + 1) & mask;
  }
}

/** Value stored for `key`, or `missing`. */
@inline export function hashGet(base: usize, mask: u32, key: u64, missing: u32): u32 {
  const p = hashFind(base, mask, key);
  return p == 0 ? missing : load<u32>(p, 8);
}

/**
 * Inserts or updates `key`. The caller guarantees a free slot exists
 * (entries < capacity / 2). Returns true when the key is new.
 */
export function hashPut(base: usize, mask: u32, key: u64, value: u32): bool {
  let i = home(key, mask);
  while (true) {
    const p = base + <usize>i * SLOT;
    const k = load<u64>(p);
    if (k == key) {
      store<u32>(p, value, 8);
      return false;
    }
    if (k == 0) {
      store<u64>(p, key);
      store<u32>(p, value, 8);
      return true;
    }
    i = (i + 1) & mask;
  }
}

/** Removes `key`. Returns false when it was absent. */
export function hashDel(base: usize, mask: u32, key: u64): bool {
  const p = hashFind(base, mask, key);
  if (p == 0) return false;
  let hole = <u32>((p - base) / SLOT);
  let j = hole;
  while (true) {
    j = (j + 1) & mask;
    const q = base + <usize>j * SLOT;
    const k = load<u64>(q);
    if (k == 0) break;
    const h = home(k, mask);
    // The entry at j may fill the hole unless its home lies cyclically in (hole, j].
    const stays = hole <= j ? (h > hole && h <= j) : (h > hole || h <= j);
    if (stays) continue;
    const hp = base + <usize>hole * SLOT;
    store<u64>(hp, k);
    store<u32>(hp, load<u32>(q, 8), 8);
    hole = j;
  }
  const hp = base + <usize>hole * SLOT;
  store<u64>(hp, 0);
  store<u32>(hp, 0, 8);
  return true;
}

/** Empties a table of `mask + 1` slots. */
export function hashClear(base: usize, mask: u32): void {
  memory.fill(base, 0, (<usize>mask + 1) * SLOT);
}
