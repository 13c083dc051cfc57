import { maskOf6 } from "../../common/ipv6.js";

const MASKS: bigint[] = Array.from({ length: 129 }, (_, len) => maskOf6(len));

/**
 * Reference IPv6 longest-prefix match: one Map per prefix length (keys are
 * the masked 128-bit prefixes), probed from the longest length present down
 * to /0. The IPv6 twin of RefLpm: the oracle the WASM table is tested
 * against and the baseline the benchmark compares it with.
 */
export class RefLpm6 {
  private readonly byLen: Map<bigint, number>[] = Array.from({ length: 129 }, () => new Map());
  /** Lengths that hold at least one prefix, longest first. */
  private lens: number[] = [];

  insert(prefix: bigint, len: number, nh: number): void {
    const m = this.byLen[len];
    if (!m) throw new RangeError(`prefix length ${len} is outside 0..128`);
    m.set(prefix & (MASKS[len] ?? 0n), nh);
    this.updateLens();
  }

  /** Removes a prefix; false when it was not stored. */
  delete(prefix: bigint, len: number): boolean {
    const m = this.byLen[len];
    if (!m) return false;
    const had = m.delete(prefix & (MASKS[len] ?? 0n));
    this.updateLens();
    return had;
  }

  get(prefix: bigint, len: number): number {
    return this.byLen[len]?.get(prefix & (MASKS[len] ?? 0n)) ?? -1;
  }

  /** Next hop of the longest prefix covering `addr`, or -1. */
  lookup(addr: bigint): number {
    for (const len of this.lens) {
      const nh = this.byLen[len]?.get(addr & (MASKS[len] ?? 0n));
      if (nh !== undefined) return nh;
    }
    return -1;
  }

  get size(): number {
    return this.byLen.reduce((n, m) => n + m.size, 0);
  }

  clear(): void {
    for (const m of this.byLen) m.clear();
    this.lens = [];
  }

  private updateLens(): void {
    this.lens = [];
    for (let len = 128; len >= 0; len--) if ((this.byLen[len]?.size ?? 0) > 0) this.lens.push(len);
  }
}
