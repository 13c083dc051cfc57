import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import * as abi from "../../../asm/abi.js";
import { CoreError } from "../../common/errors.js";
import { projectRoot } from "../../common/paths.js";
import type { CoreLimits } from "./types.js";
import type { Lpm6Exports } from "./lpm6.js";

/**
 * The WASM core's module and the limits its memory is laid out for: where
 * the built module is, compiled once per process, and which limits can be
 * laid out (checked before instantiation, so a bad option says which).
 */
/** The module's exports, as asm/index.ts declares them (i32 arguments, i32 results). */
export interface CoreExports extends Lpm6Exports {
  memory: WebAssembly.Memory;
  abi_version(): number;
  init(peers: number, rules: number, batch: number, slots: number, slotSize: number, headroom: number, units: number, rules6: number): number;
  layout(field: number): number;
  counters_base(dir: number): number;
  configure(vni: number, localIp: number, macHi: number, macLo: number, dport: number,
    portMin: number, portMax: number, ttl: number, flags: number, seed: number): number;
  lpm_insert(prefix: number, len: number, nh: number): number;
  lpm_delete(prefix: number, len: number): number;
  lpm_get(prefix: number, len: number): number;
  lpm_lookup(addr: number): number;
  lpm_lookup_batch(n: number): number;
  lpm_clear(): void;
  lpm_size(): number;
  lpm_groups(): number;
  lpm_memory_bytes(): number;
  configure6(w0: number, w1: number, w2: number, w3: number, hop: number): number;
  peer6_set(idx: number, u0: number, u1: number, u2: number, u3: number, s0: number, s1: number, s2: number, s3: number, plen: number,
    hasMac: number, macHi: number, macLo: number): number;
  peer6_underlay(idx: number): number;
  peer6_find(u0: number, u1: number, u2: number, u3: number): number;
  decap6_batch(n: number): number;
  peer_set(idx: number, underlay: number, macHi: number, macLo: number, subnet: number, plen: number, flags: number): number;
  peer_clear(idx: number): number;
  peer_find(underlay: number): number;
  peer_count(): number;
  inet_sum(ptr: number, len: number, initial: number): number;
  inet_csum(ptr: number, len: number): number;
  csum_replace16(check: number, old: number, neu: number): number;
  csum_replace32(check: number, old: number, neu: number): number;
  jhash_3words(a: number, b: number, c: number, initval: number): number;
  flow_hash(src: number, dst: number, ports: number, proto: number, seed: number): number;
  flow_sport(hash: number, min: number, max: number): number;
  encap_batch(n: number, mode: number): number;
  decap_batch(n: number): number;
  tun_tx_batch(from: number, n: number): number;
  tun_rx_batch(from: number, n: number): number;
  tun_units(): number;
  tun_set_mtu(mtu: number): number;
  tun_set_udp_segs(n: number): number;
}

export const DEFAULT_LIMITS: CoreLimits = {
  maxPeers: 4096,
  maxRules: 131072,
  maxRules6: 65536,
  maxBatch: 256,
  slots: 256,
  slotSize: 2048,
  headroom: 64,
  units: 0,
};

/** Each limit: inclusive range. (Plain checks: the packet workers load this module, and start fast.) */
const RANGES: Record<keyof CoreLimits, [number, number]> = {
  maxPeers: [1, 1 << 20], maxRules: [1, 1 << 22], maxRules6: [1, 1 << 22], maxBatch: [1, 1 << 16], slots: [1, 1 << 16],
  slotSize: [64, 1 << 20], headroom: [abi.ENCAP_FRAME_OVERHEAD, 1 << 20], units: [0, 1 << 16],
};

/** Why a set of limits cannot be laid out, one message per bad field; [] when they can. */
export function limitProblems(l: CoreLimits): string[] {
  const out: string[] = [];
  for (const [k, [lo, hi]] of Object.entries(RANGES) as [keyof CoreLimits, [number, number]][]) {
    const v = l[k];
    if (!Number.isInteger(v) || v < lo || v > hi) out.push(`${k}: must be an integer in ${lo}..${hi}, got ${v}`);
  }
  if (l.slotSize % 64 !== 0) out.push("slotSize: must be a multiple of 64");
  if (l.headroom >= l.slotSize) out.push("headroom: must be smaller than slotSize");
  if (l.slots * l.slotSize > 1 << 30) out.push("slots: slots x slotSize must be at most 1 GiB");
  return out;
}

let compiled: WebAssembly.Module | undefined;

/** build/weft-core.wasm of this checkout (WEFT_CORE_WASM overrides). */
export function coreWasmPath(): string {
  const override = process.env["WEFT_CORE_WASM"];
  if (override) return resolve(override);
  const p = join(projectRoot(), "build", "weft-core.wasm");
  if (existsSync(p)) return p;
  throw new CoreError("WEFT_CORE_MISSING", `${p} was not found`, {
    hint: "run `npm run build` (or `npm run setup` on a new machine) first",
  });
}

/** The core module, compiled once per process. */
export function compile(): WebAssembly.Module {
  compiled ??= new WebAssembly.Module(readFileSync(coreWasmPath()));
  return compiled;
}

