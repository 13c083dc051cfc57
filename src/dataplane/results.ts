import * as abi from "../../asm/abi.js";
import { WASM_REASONS } from "./reasons.js";

/**
 * Names of the WASM core's per-packet results and counters, from the one
 * vocabulary of reasons (./reasons.ts). Index i of RESULT_NAMES is counter
 * slot i (slot 0 = accepted, slot -r = result r).
 */
export const RESULT_NAMES = WASM_REASONS;

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
