import * as abi from "../../../asm/abi.js";
import { CoreError } from "../../common/errors.js";
import { formatCidr6, formatIpv6, maskOf6, type Ipv6Prefix } from "../../common/ipv6.js";
import { check } from "./check.js";

/** The IPv6 LPM exports of the WASM core (asm/lpm6.ts). */
export interface Lpm6Exports {
  memory: WebAssembly.Memory;
  lpm6_insert(w0: number, w1: number, w2: number, w3: number, len: number, nh: number): number;
  lpm6_delete(w0: number, w1: number, w2: number, w3: number, len: number): number;
  lpm6_get(w0: number, w1: number, w2: number, w3: number, len: number): number;
  lpm6_lookup(w0: number, w1: number, w2: number, w3: number): number;
  lpm6_lookup_batch(n: number): number;
  lpm6_clear(): void;
  lpm6_size(): number;
  lpm6_groups(): number;
  lpm6_memory_bytes(): number;
}

/** An IPv6 address as four 32-bit words, the first on the wire first. */
export function words6(a: bigint): [number, number, number, number] {
  if (typeof a !== "bigint" || a < 0n || a > MAX6) {
    throw new CoreError("WEFT_CORE_INVALID", `an IPv6 address is an unsigned 128-bit integer, got ${String(a)}`);
  }
  return [Number((a >> 96n) & 0xffffffffn) | 0, Number((a >> 64n) & 0xffffffffn) | 0, Number((a >> 32n) & 0xffffffffn) | 0, Number(a & 0xffffffffn) | 0];
}

function checkLen6(len: number): void {
  if (!Number.isInteger(len) || len < 0 || len > 128) {
    throw new CoreError("WEFT_CORE_INVALID", `prefix length ${len} is outside 0..128`);
  }
}

const MAX6 = (1n << 128n) - 1n;

/**
 * The WASM core's IPv6 longest-prefix-match table (asm/lpm6.ts): prefixes of
 * length 0..128 to next hops 0..LPM6_MAX_NH. Reached as `WasmCore.lpm6`.
 */
export class Lpm6 {
  private readonly maxRules: number;
  private readonly maxBatch: number;

  constructor(
    private readonly x: Lpm6Exports,
    limits: { readonly maxRules6: number; readonly maxBatch: number },
    /** IPv6 lookup scratch: maxBatch 16-byte addresses in. */
    readonly addrBase: number,
    /** Lookup results out: maxBatch i32. */
    readonly nhBase: number,
  ) {
    this.maxRules = limits.maxRules6;
    this.maxBatch = limits.maxBatch;
  }

  insert(p: Ipv6Prefix, nh: number): void {
    const [w0, w1, w2, w3] = words6(p.addr);
    checkLen6(p.len);
    if (!Number.isInteger(nh) || nh < 0 || nh > abi.LPM6_MAX_NH) {
      throw new CoreError("WEFT_CORE_INVALID", `next hop ${nh} is outside 0..${abi.LPM6_MAX_NH}`);
    }
    check(this.x.lpm6_insert(w0, w1, w2, w3, p.len, nh), `inserting ${formatCidr6({ addr: p.addr & maskOf6(p.len), len: p.len })}`,
      `the table holds at most ${this.maxRules} IPv6 prefixes; raise maxRules6`);
  }

  /** Removes an IPv6 prefix; false when it was not stored. */
  delete(p: Ipv6Prefix): boolean {
    const [w0, w1, w2, w3] = words6(p.addr);
    checkLen6(p.len);
    const rc = this.x.lpm6_delete(w0, w1, w2, w3, p.len);
    if (rc === abi.E_NOT_FOUND) return false;
    check(rc, `deleting ${formatIpv6(p.addr)}/${p.len}`);
    return true;
  }

  /** Next hop stored for exactly this IPv6 prefix, or -1. */
  get(p: Ipv6Prefix): number {
    const [w0, w1, w2, w3] = words6(p.addr);
    checkLen6(p.len);
    return this.x.lpm6_get(w0, w1, w2, w3, p.len);
  }

  /** Longest-prefix match of one IPv6 address: next hop, or -1. */
  lookup(addr: bigint): number {
    const [w0, w1, w2, w3] = words6(addr);
    return this.x.lpm6_lookup(w0, w1, w2, w3);
  }

  /**
   * Looks up the IPv6 addresses in `addrs` (16 bytes each, wire order) into
   * `out` (one per address), maxBatch at a time.
   */
  lookupBatch(addrs: Uint8Array, out: Int32Array): void {
    if (addrs.length % 16 !== 0) throw new CoreError("WEFT_CORE_INVALID", `addrs holds 16-byte addresses, got ${addrs.length} bytes`);
    const count = addrs.length / 16;
    if (out.length < count) throw new CoreError("WEFT_CORE_INVALID", "out must hold one result per address");
    const max = this.maxBatch;
    const mem = this.x.memory.buffer;
    const inView = new Uint8Array(mem, this.addrBase, max * 16);
    const outView = new Int32Array(mem, this.nhBase, max);
    for (let i = 0; i < count; i += max) {
      const n = Math.min(max, count - i);
      inView.set(addrs.subarray(i * 16, (i + n) * 16));
      this.x.lpm6_lookup_batch(n);
      out.set(outView.subarray(0, n), i);
    }
  }

  clear(): void {
    this.x.lpm6_clear();
  }

  size(): number {
    return this.x.lpm6_size();
  }

  groups(): number {
    return this.x.lpm6_groups();
  }

  /** Bytes the IPv6 lookup structure uses now (its L1 + its groups). */
  memoryBytes(): number {
    return this.x.lpm6_memory_bytes() >>> 0;
  }
}
