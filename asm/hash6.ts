// Open-addressing hash of the IPv6 LPM rules: (prefix, length) -> next hop.
//
// Slots are 32 bytes: prefix high u64, low u64, length + 1 u32 (0 = empty
// slot), next hop u32, 8 bytes pad. Linear probing with backward-shift
// deletion, as asm/hash.ts (which keys on one u64 and cannot hold 136 bits);
// capacity is a power of two at least twice the rule limit.

const SLOT: usize = 32;

@inline function home(hi: u64, lo: u64, len: u32, mask: u32): u32 {
  // Murmur3's 64-bit finaliser over a mix of the three parts.
  let h = hi ^ (lo * 0x9e3779b97f4a7c15) ^ ((<u64>len + 1) << 56);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccd;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53;
  h ^= h >> 33;
  return <u32>h & mask;
}

/** Slot address holding the rule, or 0 when absent. */
export function hash6Find(base: usize, mask: u32, hi: u64, lo: u64, len: u32): usize {
  let i = home(hi, lo, len, mask);
  while (true) {
    const p = base + <usize>i * SLOT;
    const l = load<u32>(p, 16);
    if (l == 0) return 0;
    if (l == len + 1 && load<u64>(p) == hi && load<u64>(p, 8) == lo) return p;
    i = (i + 1) & mask;
  }
}

/** Next hop stored for the rule, or `missing`. */
@inline export function hash6Get(base: usize, mask: u32, hi: u64, lo: u64, len: u32, missing: u32): u32 {
  const p = hash6Find(base, mask, hi, lo, len);
  return p == 0 ? missing : load<u32>(p, 20);
}

/** Inserts or updates a rule; the caller guarantees a free slot. True when the rule is new. */
export function hash6Put(base: usize, mask: u32, hi: u64, lo: u64, len: u32, nh: u32): bool {
  let i = home(hi, lo, len, mask);
  while (true) {
    const p = base + <usize>i * SLOT;
    const l = load<u32>(p, 16);
    if (l == 0) {
      store<u64>(p, hi);
      store<u64>(p, lo, 8);
      store<u32>(p, len + 1, 16);
      store<u32>(p, nh, 20);
      return true;
    }
    if (l == len + 1 && load<u64>(p) == hi && load<u64>(p, 8) == lo) {
      store<u32>(p, nh, 20);
      return false;
    }
    i = (i + 1) & mask;
  }
}

/** Removes a rule. False when it was absent. */
export function hash6Del(base: usize, mask: u32, hi: u64, lo: u64, len: u32): bool {
  const p = hash6Find(base, mask, hi, lo, len);
  if (p == 0) return false;
  let hole = <u32>((p - base) / SLOT);
  let j = hole;
  while (true) {
    j = (j + 1) & mask;
    const q = base + <usize>j * SLOT;
    const l = load<u32>(q, 16);
    if (l == 0) break;
    const h = home(load<u64>(q), load<u64>(q, 8), l - 1, mask);
    // The entry at j may fill the hole unless its home lies cyclically in (hole, j].
    const stays = hole <= j ? (h > hole && h <= j) : (h > hole || h <= j);
    if (stays) continue;
    memory.copy(base + <usize>hole * SLOT, q, SLOT);
    hole = j;
  }
  memory.fill(base + <usize>hole * SLOT, 0, SLOT);
  return true;
}

/** Empties a table of `mask + 1` slots. */
export function hash6Clear(base: usize, mask: u32): void {
  memory.fill(base, 0, (<usize>mask + 1) * SLOT);
}
