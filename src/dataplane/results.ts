import * as abi from "../../asm/abi.js";

/**
 * Names of the per-packet results and counters shared by the WASM core, the
 * TypeScript reference, the eBPF programs' counters and the metrics. Index i
 * of RESULT_NAMES is counter slot i (slot 0 = accepted, slot -r = result r).
 */
export const RESULT_NAMES = [
  "ok",
  "bad_desc",
  "truncated",
  "not_ipv4",
  "malformed",
  "no_route",
  "local",
  "too_big",
  "bad_flags",
  "bad_vni",
  "bad_dst_mac",
  "looped",
  "bad_csum",
  "unknown_peer",
  "spoofed",
  "ecn",
  "bad_l4_csum",
  "bad_vnet",
] as const;

export type ResultName = (typeof RESULT_NAMES)[number];
export type Counters = Record<ResultName, bigint>;

if (RESULT_NAMES.length !== abi.R_COUNT) {
  throw new Error(`results.ts names ${RESULT_NAMES.length} results but asm/abi.ts has R_COUNT=${abi.R_COUNT}`);
}

/** Name of a descriptor result: "ok" for a peer index (>= 0), else the reason. */
export function resultName(res: number): ResultName {
  if (res >= 0) return "ok";
  const name = RESULT_NAMES[-res];
  if (name === undefined) throw new RangeError(`unknown result code ${res}`);
  return name;
}

export function emptyCounters(): Counters {
  return Object.fromEntries(RESULT_NAMES.map((n) => [n, 0n])) as Counters;
}
