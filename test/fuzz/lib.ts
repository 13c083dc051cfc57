import { appendFileSync } from "node:fs";

/**
 * Seeded, structured fuzzing for weft's doors (lease keys and values, registry
 * JSON, CNI env and stdin, control-socket frames, DNS messages, VXLAN
 * datagrams, TSO/USO descriptors).
 *
 * `npm test` runs a fixed number of inputs per target, from a fixed seed, so a
 * failure reproduces. `npm run fuzz -- --seconds N [--seed S]` runs each target
 * for N seconds instead (WEFT_FUZZ_SECONDS / WEFT_FUZZ_SEED) and collects the
 * reports (WEFT_FUZZ_REPORT, one JSON line per target).
 *
 * Every input is derived from (seed, iteration), so a finding is replayed by
 * WEFT_FUZZ_SEED=<seed> WEFT_FUZZ_ONLY=<iteration>.
 */

/** xoshiro128** over a splitmix32-expanded seed: fast, small, good enough for input generation. */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    let x = seed >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next() | 1;
  }

  u32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** An integer in [lo, hi] (inclusive). */
  int(lo: number, hi: number): number {
    return lo + Math.floor((this.u32() / 0x1_0000_0000) * (hi - lo + 1));
  }

  bool(p = 0.5): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("pick from an empty list");
    return items[this.int(0, items.length - 1)] as T;
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }

  /** A string of `n` characters drawn from `alphabet` (default: printable ASCII and the characters that break parsers). */
  string(n: number, alphabet = ASCII_AND_HOSTILE): string {
    let s = "";
    for (let i = 0; i < n; i++) s += alphabet[this.int(0, alphabet.length - 1)];
    return s;
  }

  /** A length biased towards the edges: 0, 1, small, near `max`, and `max` itself. */
  length(max: number): number {
    const r = this.int(0, 9);
    if (r === 0) return 0;
    if (r === 1) return Math.min(1, max);
    if (r === 2) return max;
    if (r === 3) return Math.max(0, max - this.int(1, 4));
    return this.int(0, max);
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

const ASCII_AND_HOSTILE =
  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" +
  "-_./:;|&$`'\"\\ \t\n\r\0%@!#*?()[]{}<>=,+~^\u00e9\u2028\ufeff";

/** Values that sit on the edges of byte and word fields. */
export const EDGE_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff] as const;

/**
 * A mutation of `input`, as coverage-free fuzzers do it: bit flips, edge
 * bytes, 16/32-bit edge values, truncation, extension, duplicated or spliced
 * chunks. The input is never modified.
 */
export function mutateBytes(rng: Rng, input: Uint8Array, maxLen = input.length + 64): Uint8Array {
  let out: Uint8Array = input.slice();
  const rounds = rng.int(1, 4);
  for (let r = 0; r < rounds; r++) {
    const at = out.length === 0 ? 0 : rng.int(0, out.length - 1);
    switch (rng.int(0, 7)) {
      case 0: // bit flip
        if (out.length > 0) out[at] = (out[at] ?? 0) ^ (1 << rng.int(0, 7));
        break;
      case 1: // edge byte
        if (out.length > 0) out[at] = rng.pick(EDGE_BYTES);
        break;
      case 2: // edge 16-bit big-endian value (lengths, counts, ports)
        if (out.length > 1) {
          const v = rng.pick([0, 1, 0x7fff, 0x8000, 0xfffe, 0xffff, out.length, out.length + 1]);
          const i = Math.min(at, out.length - 2);
          out[i] = (v >>> 8) & 0xff;
          out[i + 1] = v & 0xff;
        }
        break;
      case 3: // truncate
        out = out.slice(0, rng.int(0, out.length));
        break;
      case 4: { // extend with random bytes
        const extra = rng.bytes(rng.int(1, 32));
        const next = new Uint8Array(out.length + extra.length);
        next.set(out.subarray(0, at));
        next.set(extra, at);
        next.set(out.subarray(at), at + extra.length);
        out = next;
        break;
      }
      case 5: { // duplicate a chunk
        if (out.length === 0) break;
        const from = rng.int(0, out.length - 1);
        const len = rng.int(1, Math.min(32, out.length - from));
        const next = new Uint8Array(out.length + len);
        next.set(out.subarray(0, at));
        next.set(out.subarray(from, from + len), at);
        next.set(out.subarray(at), at + len);
        out = next;
        break;
      }
      case 6: // overwrite a run with random bytes
        for (let i = at, n = rng.int(1, 8); i < out.length && n > 0; i++, n--) out[i] = rng.u32() & 0xff;
        break;
      default: // zero a run
        for (let i = at, n = rng.int(1, 8); i < out.length && n > 0; i++, n--) out[i] = 0;
    }
  }
  return out.length > maxLen ? out.slice(0, maxLen) : out;
}

/** A JSON value of a random shape (for fields that expect something else). */
export function randomJson(rng: Rng, depth = 0): unknown {
  switch (rng.int(0, depth > 3 ? 5 : 7)) {
    case 0: return null;
    case 1: return rng.bool();
    case 2: return rng.pick([0, -1, 1, 0.5, 2 ** 31, 2 ** 32, 2 ** 53 + 2, -(2 ** 63), 1e308, Number.MAX_SAFE_INTEGER]);
    case 3: return rng.int(-1000, 70000);
    case 4: return rng.string(rng.length(40));
    case 5: return rng.pick(["", "0", "1.2.3.4", "::1", "-1", "x".repeat(300), "null", "true", "1e999", "\u0000"]);
    case 6: return Array.from({ length: rng.int(0, 4) }, () => randomJson(rng, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = rng.int(0, 4); i > 0; i--) o[rng.pick(["a", "__proto__", "constructor", "", rng.string(6)])] = randomJson(rng, depth + 1);
      return o;
    }
  }
}

/**
 * A structure-aware mutation of a JSON document: one field removed, replaced
 * by a value of another type, or given a hostile string; or an extra field.
 */
export function mutateJson(rng: Rng, value: unknown, depth = 0): unknown {
  if (value === null || typeof value !== "object" || depth > 6) return rng.bool(0.7) ? randomJson(rng) : value;
  if (Array.isArray(value)) {
    const a = value.slice();
    const r = rng.int(0, 4);
    if (r === 0 && a.length > 0) a.splice(rng.int(0, a.length - 1), 1);
    else if (r === 1) a.push(randomJson(rng));
    else if (r === 2) for (let i = rng.int(1, 200); i > 0; i--) a.push(a[0] ?? randomJson(rng));
    else if (a.length > 0) {
      const i = rng.int(0, a.length - 1);
      a[i] = mutateJson(rng, a[i], depth + 1);
    }
    return a;
  }
  const o: Record<string, unknown> = { ...(value as Record<string, unknown>) };
  const keys = Object.keys(o);
  const r = rng.int(0, 4);
  if (r === 0 && keys.length > 0) delete o[rng.pick(keys)];
  else if (r === 1) o[rng.pick(["extra", "__proto__", rng.string(5)])] = randomJson(rng);
  else if (keys.length > 0) {
    const k = rng.pick(keys);
    o[k] = mutateJson(rng, o[k], depth + 1);
  }
  return o;
}

/** A mutation of a text: character-level edits on its UTF-8 bytes, decoded back (invalid sequences become U+FFFD). */
export function mutateText(rng: Rng, text: string): string {
  return Buffer.from(mutateBytes(rng, Buffer.from(text, "utf8"))).toString("utf8");
}

export interface FuzzReport {
  readonly target: string;
  readonly seed: number;
  readonly iterations: number;
  readonly seconds: number;
  /** Inputs the code refused with its own typed error (the expected outcome for hostile input). */
  readonly refused: number;
  /** Inputs the code accepted. */
  readonly accepted: number;
  /** Largest heap growth seen between checks, in MiB. */
  readonly heapGrowthMiB: number;
}

/** What one input did: "accepted" or "refused" (typed error, counted, service goes on). Anything thrown is a finding. */
export type Outcome = "accepted" | "refused";

export interface FuzzOptions {
  /** Inputs per run of `npm test`. */
  readonly iterations: number;
  /** Heap growth (MiB) over the run that counts as unbounded. Default 64. */
  readonly maxHeapGrowthMiB?: number;
}

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got "${v}"`);
  return n;
}

/**
 * Runs `body` on inputs derived from (seed, i). A body returns the outcome or
 * throws: a throw is a finding, rethrown with the seed and iteration that
 * replay it. Heap growth is sampled (after GC when --expose-gc is on) and must
 * stay under the bound.
 */
export async function fuzz(target: string, opts: FuzzOptions, body: (rng: Rng, i: number) => Outcome | Promise<Outcome>): Promise<FuzzReport> {
  const seed = envInt("WEFT_FUZZ_SEED") ?? 0x5eed;
  const seconds = envInt("WEFT_FUZZ_SECONDS");
  const only = envInt("WEFT_FUZZ_ONLY");
  const deadline = seconds === undefined ? Infinity : Date.now() + seconds * 1000;
  const maxGrowth = opts.maxHeapGrowthMiB ?? 64;
  const gc = (globalThis as { gc?: () => void }).gc;
  const heap = (): number => {
    gc?.();
    return process.memoryUsage().heapUsed / 2 ** 20;
  };
  const heap0 = heap();
  let growth = 0;
  let refused = 0;
  let accepted = 0;
  const started = Date.now();
  let i = only ?? 0;
  for (; only !== undefined ? i === only : seconds === undefined ? i < opts.iterations : Date.now() < deadline; i++) {
    const rng = new Rng((seed ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0);
    let outcome: Outcome;
    try {
      outcome = await body(rng, i);
    } catch (e) {
      const err = e as Error;
      throw new Error(`fuzz ${target}: input ${i} (replay: WEFT_FUZZ_SEED=${seed} WEFT_FUZZ_ONLY=${i}) failed: ${err.stack ?? err.message}`);
    }
    if (outcome === "refused") refused++;
    else accepted++;
    if ((i & 1023) === 1023) {
      growth = Math.max(growth, heap() - heap0);
      if (growth > maxGrowth) throw new Error(`fuzz ${target}: heap grew ${growth.toFixed(1)} MiB after ${i + 1} inputs (bound ${maxGrowth} MiB)`);
    }
  }
  growth = Math.max(growth, heap() - heap0);
  if (growth > maxGrowth) throw new Error(`fuzz ${target}: heap grew ${growth.toFixed(1)} MiB (bound ${maxGrowth} MiB)`);
  const report: FuzzReport = {
    target, seed, iterations: refused + accepted, seconds: (Date.now() - started) / 1000, refused, accepted, heapGrowthMiB: Math.round(growth * 10) / 10,
  };
  const out = process.env["WEFT_FUZZ_REPORT"];
  if (out) appendFileSync(out, `${JSON.stringify(report)}\n`);
  return report;
}
