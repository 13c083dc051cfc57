import { maskOf } from "../../common/ipv4.js";

/**
 * Reference longest-prefix match: one Map per prefix length, probed from the
 * longest length present down to /0. Obviously correct and deliberately
 * plain: it is the oracle the WASM table is tested against and the baseline
 * the benchmark compares it with.
 */
export class RefLpm {
  private readonly byLen: Map<number, number>[] = Array.from({ length: 33 }, () => new Map());
  /** Lengths that hold at least one prefix, longest first. */
  private lens: number[] = [];

  insert(prefix: number, len: number, nh: number): void {
    const m = this.byLen[len];
    if (!m) throw new RangeError(`prefix length ${len} is outside 0..32`);
    m.set((prefix & maskOf(len)) >>> 0, nh);
    this.updateLens();
  }

  /** Removes a prefix; false when it was not stored. */
  delete(prefix: number, len: number): boolean {
    const m = this.byLen[len];
    if (!m) return false;
    const had = m.delete((prefix & maskOf(len)) >>> 0);
    this.updateLens();
    return had;
  }

  get(prefix: number, len: number): number {
    return this.byLen[len]?.get((prefix & maskOf(len)) >>> 0) ?? -1;
  }

  /** Next hop of the longest prefix covering `addr`, or -1. */
  lookup(addr: number): number {
    for (const len of this.lens) {
      const nh = this.byLen[len]?.get((addr & maskOf(len)) >>> 0);
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
    for (let len = 32; len >= 0; len--) if ((this.byLen[len]?.size ?? 0) > 0) this.lens.push(len);
  }
}
