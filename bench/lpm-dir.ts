import { maskOf } from "../src/common/ipv4.js";
import { RefLpm } from "../src/dataplane/reference/lpm.js";

/**
 * A good plain-TypeScript longest-prefix match, the baseline bench:wasm holds
 * the WASM table against besides the one-Map-per-length oracle: DIR-16-8-8 in
 * typed arrays (DPDK's rte_lpm shape, uncompressed). A 2^16-entry first level
 * indexed by the top 16 bits; an entry is a next hop (>= 0), a miss (-1), or a
 * group (<= -2: group g = -entry - 2) of 256 entries for the next 8 bits,
 * whose entries may in turn point to a group for the last 8 bits. A lookup is
 * at most three array reads and no allocation. Every entry also keeps the
 * length + 1 of the rule that decided it (in a parallel Uint8Array, read only
 * by inserts and deletes), so an insert overwrites only shorter matches and a
 * delete restores exactly the next shorter covering rule. Groups are never
 * reclaimed (the benchmark only inserts); next hops are 0..2^31-1.
 */

const MISS = -1;
const GROUP = 256;

export class DirLpm {
  private readonly l1 = new Int32Array(1 << 16).fill(MISS);
  private readonly d1 = new Uint8Array(1 << 16);
  private pool = new Int32Array(64 * GROUP);
  private dpool = new Uint8Array(64 * GROUP);
  private groups = 0;
  /** The rules by length, for deletes (the next shorter covering rule). */
  private readonly rules: Map<number, number>[] = Array.from({ length: 33 }, () => new Map());

  insert(prefix: number, len: number, nh: number): void {
    if (!Number.isInteger(len) || len < 0 || len > 32) throw new RangeError(`prefix length ${len} is outside 0..32`);
    if (!Number.isInteger(nh) || nh < 0 || nh > 0x7fffffff) throw new RangeError(`next hop ${nh} is outside 0..2^31-1`);
    const p = (prefix & maskOf(len)) >>> 0;
    this.rules[len]!.set(p, nh);
    this.paint(p, len, nh, len + 1, -1);
  }

  /** Removes a prefix; false when it was not stored. */
  delete(prefix: number, len: number): boolean {
    const p = (prefix & maskOf(len)) >>> 0;
    if (!this.rules[len]?.delete(p)) return false;
    let nh = MISS;
    let depth = 0;
    for (let l = len - 1; l >= 0; l--) {
      const cover = this.rules[l]!.get((p & maskOf(l)) >>> 0);
      if (cover !== undefined) {
        nh = cover;
        depth = l + 1;
        break;
      }
    }
    this.paint(p, len, nh, depth, len + 1);
    return true;
  }

  /** Next hop of the longest prefix covering `addr`, or -1. */
  lookup(addr: number): number {
    let e = this.l1[addr >>> 16]!;
    if (e <= -2) {
      e = this.pool[((-e - 2) << 8) | ((addr >>> 8) & 255)]!;
      if (e <= -2) e = this.pool[((-e - 2) << 8) | (addr & 255)]!;
    }
    return e;
  }

  /** lookup() of addrs[from .. from + n) into out[0 .. n). */
  lookupBatch(addrs: Uint32Array, out: Int32Array, from = 0, n = addrs.length - from): void {
    const l1 = this.l1;
    const pool = this.pool;
    for (let i = 0; i < n; i++) {
      const a = addrs[from + i]!;
      let e = l1[a >>> 16]!;
      if (e <= -2) {
        e = pool[((-e - 2) << 8) | ((a >>> 8) & 255)]!;
        if (e <= -2) e = pool[((-e - 2) << 8) | (a & 255)]!;
      }
      out[i] = e;
    }
  }

  /** Bytes of the lookup structure: the first level and the groups (4 bytes an entry). */
  memoryBytes(): number {
    return this.l1.byteLength + this.groups * GROUP * 4;
  }

  groupCount(): number {
    return this.groups;
  }

  /**
   * Sets every entry `p/len` covers to (nh, depth): with only = -1 where the
   * entry's rule is not longer than len, else only where it is exactly `only`.
   */
  private paint(p: number, len: number, nh: number, depth: number, only: number): void {
    if (len <= 16) {
      const first = p >>> 16;
      for (let i = first; i < first + (1 << (16 - len)); i++) this.set(true, i, nh, depth, only);
      return;
    }
    const g2 = this.groupAt(true, p >>> 16);
    if (len <= 24) {
      const first = g2 * GROUP + ((p >>> 8) & 255);
      for (let i = first; i < first + (1 << (24 - len)); i++) this.set(false, i, nh, depth, only);
      return;
    }
    const g3 = this.groupAt(false, g2 * GROUP + ((p >>> 8) & 255));
    const first = g3 * GROUP + (p & 255);
    for (let i = first; i < first + (1 << (32 - len)); i++) this.set(false, i, nh, depth, only);
  }

  private set(top: boolean, i: number, nh: number, depth: number, only: number): void {
    const arr = top ? this.l1 : this.pool;
    const d = top ? this.d1 : this.dpool;
    const e = arr[i]!;
    if (e <= -2) {
      const g = (-e - 2) * GROUP;
      for (let k = g; k < g + GROUP; k++) this.set(false, k, nh, depth, only);
    } else if (only < 0 ? d[i]! <= depth : d[i] === only) {
      arr[i] = nh;
      d[i] = depth;
    }
  }

  /** The group entry i points to, made (filled with the entry's value) if it is a leaf. */
  private groupAt(top: boolean, i: number): number {
    const e = (top ? this.l1 : this.pool)[i]!;
    if (e <= -2) return -e - 2;
    const depth = (top ? this.d1 : this.dpool)[i]!;
    const g = this.groups++;
    if ((g + 1) * GROUP > this.pool.length) {
      const pool = new Int32Array(this.pool.length * 2);
      pool.set(this.pool);
      const dpool = new Uint8Array(this.dpool.length * 2);
      dpool.set(this.dpool);
      this.pool = pool;
      this.dpool = dpool;
    }
    this.pool.fill(e, g * GROUP, (g + 1) * GROUP);
    this.dpool.fill(depth, g * GROUP, (g + 1) * GROUP);
    (top ? this.l1 : this.pool)[i] = -(g + 2);
    return g;
  }
}

/**
 * DirLpm against the reference on random prefixes of every length /0-/32
 * (overlapping, re-inserted with new next hops, half of them deleted again),
 * probed inside each prefix, at its edges and anywhere. Throws on the first
 * disagreement; returns the number of lookups compared.
 */
export function checkDirLpm(seed: number, prefixes = 3000, probes = 200_000): number {
  const r = xorshift32(seed);
  const dir = new DirLpm();
  const ref = new RefLpm();
  const stored: [number, number][] = [];
  for (let i = 0; i < prefixes; i++) {
    // Few short prefixes (they cover much), many long ones, all lengths present.
    const len = i < 33 ? i : r() % 4 === 0 ? r() % 33 : 16 + (r() % 17);
    const base = stored.length > 0 && r() % 3 === 0 ? stored[r() % stored.length]![0] : r();
    const a = (base & maskOf(len)) >>> 0;
    const nh = r() % 100_000;
    dir.insert(a, len, nh);
    ref.insert(a, len, nh);
    stored.push([a, len]);
  }
  let compared = 0;
  const probe = (phase: string): void => {
    for (let i = 0; i < probes; i++) {
      const [a, len] = stored[r() % stored.length]!;
      const k = r() % 4;
      const addr = k === 0 ? r() : k === 1 ? a : k === 2 ? (a | ~maskOf(len)) >>> 0 : (a | (r() & ~maskOf(len))) >>> 0;
      const want = ref.lookup(addr);
      const got = dir.lookup(addr);
      if (got !== want) throw new Error(`DirLpm disagrees with the reference ${phase} on ${addr >>> 0}: ${got}, want ${want}`);
      compared++;
    }
  };
  probe("after inserts");
  for (let i = 0; i < stored.length; i += 2) {
    const [a, len] = stored[i]!;
    if (dir.delete(a, len) !== ref.delete(a, len)) throw new Error(`DirLpm and the reference disagree on deleting ${a}/${len}`);
  }
  probe("after deletes");
  return compared;
}

/** xorshift32: fast, deterministic random numbers for the benchmarks' inputs. */
export function xorshift32(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}
