import { maskOf } from "../../common/ipv4.js";
import { maskOf6 } from "../../common/ipv6.js";

/**
 * Reference longest-prefix match, for either family: one Map per prefix
 * length (keys are the masked prefixes), probed from the longest length
 * present down to /0. Obviously correct and deliberately plain: it is the
 * oracle the WASM tables are tested against and the baseline the benchmark
 * compares them with. `mask(addr, len)` clears an address's host bits.
 */
class MapLpm<A> {
  private readonly byLen: Map<A, number>[];
  /** Lengths that hold at least one prefix, longest first. */
  private lens: number[] = [];

  constructor(private readonly bits: number, private readonly mask: (addr: A, len: number) => A) {
    this.byLen = Array.from({ length: bits + 1 }, () => new Map());
  }

  insert(prefix: A, len: number, nh: number): void {
    const m = this.byLen[len];
    if (!m) throw new RangeError(`prefix length ${len} is outside 0..${this.bits}`);
    m.set(this.mask(prefix, len), nh);
    this.updateLens();
  }

  /** Removes a prefix; false when it was not stored. */
  delete(prefix: A, len: number): boolean {
    const m = this.byLen[len];
    if (!m) return false;
    const had = m.delete(this.mask(prefix, len));
    this.updateLens();
    return had;
  }

  get(prefix: A, len: number): number {
    const m = this.byLen[len];
    return m ? (m.get(this.mask(prefix, len)) ?? -1) : -1;
  }

  /** Next hop of the longest prefix covering `addr`, or -1. */
  lookup(addr: A): number {
    for (const len of this.lens) {
      const nh = this.byLen[len]?.get(this.mask(addr, len));
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
    for (let len = this.bits; len >= 0; len--) if ((this.byLen[len]?.size ?? 0) > 0) this.lens.push(len);
  }
}

/** IPv4: addresses as host-order unsigned integers. */
export class RefLpm extends MapLpm<number> {
  constructor() {
    super(32, (a, len) => (a & maskOf(len)) >>> 0);
  }
}

const MASKS6: bigint[] = Array.from({ length: 129 }, (_, len) => maskOf6(len));

/** IPv6: addresses as 128-bit bigints. */
export class RefLpm6 extends MapLpm<bigint> {
  constructor() {
    super(128, (a, len) => a & (MASKS6[len] ?? 0n));
  }
}
