import { parseArgs } from "node:util";

/**
 * The benchmarks' command line, parsed in one place: every option declared
 * with its type and default, an unknown option or a bad value refused with a
 * message naming the benchmark and its options, exit status 2. `refused`
 * names options a benchmark deliberately does not take (e.g. --seconds for
 * one that runs a fixed amount of work), with the reason, so that
 * `weft bench <name> --seconds` says why instead of ignoring it.
 */

export type OptionSpec =
  | { readonly type: "boolean"; readonly help: string }
  | { readonly type: "number"; readonly default: number; readonly help: string; readonly min?: number; readonly max?: number; readonly integer?: boolean }
  | { readonly type: "string"; readonly default: string; readonly help: string; readonly choices?: readonly string[]; readonly list?: boolean };

export type Parsed<S extends Record<string, OptionSpec>> = {
  [K in keyof S]: S[K] extends { type: "boolean" } ? boolean : S[K] extends { type: "number" } ? number : string;
};

/** A command line a benchmark does not accept. */
export class BenchUsageError extends Error {
  readonly code = "WEFT_BENCH_USAGE";
  constructor(message: string) {
    super(message);
    this.name = "BenchUsageError";
  }
}

export const EXIT_BENCH_USAGE = 2;

/** Parses `argv` against `spec`; throws BenchUsageError. */
export function parseBenchArgs<S extends Record<string, OptionSpec>>(
  bench: string, spec: S, argv: readonly string[], refused: Readonly<Record<string, string>> = {},
): Parsed<S> {
  for (const a of argv) {
    const name = /^--([^=]+)/.exec(a)?.[1];
    if (name !== undefined && name in refused && !(name in spec)) throw new BenchUsageError(`${bench}: --${name} is not an option of this benchmark: ${refused[name]}`);
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    const options = Object.fromEntries(Object.entries(spec).map(([k, s]) => [k, { type: s.type === "boolean" ? "boolean" as const : "string" as const }]));
    values = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values as Record<string, string | boolean | undefined>;
  } catch (e) {
    throw new BenchUsageError(`${bench}: ${(e as Error).message.split("\n")[0]}`);
  }
  const out: Record<string, string | number | boolean> = {};
  for (const [k, s] of Object.entries(spec)) {
    const v = values[k];
    if (s.type === "boolean") {
      out[k] = v === true;
    } else if (s.type === "number") {
      const n = v === undefined ? s.default : Number(v);
      if (typeof v === "string" && (v.trim() === "" || !Number.isFinite(n))) throw new BenchUsageError(`${bench}: --${k} ${JSON.stringify(v)}: not a number`);
      if (s.integer && !Number.isInteger(n)) throw new BenchUsageError(`${bench}: --${k} ${v}: must be a whole number`);
      if (s.min !== undefined && n < s.min) throw new BenchUsageError(`${bench}: --${k} ${v}: must be at least ${s.min}`);
      if (s.max !== undefined && n > s.max) throw new BenchUsageError(`${bench}: --${k} ${v}: must be at most ${s.max}`);
      out[k] = n;
    } else {
      const str = typeof v === "string" ? v : s.default;
      if (s.choices) {
        const items = s.list ? str.split(",").map((x) => x.trim()).filter(Boolean) : [str];
        const bad = items.filter((x) => !s.choices?.includes(x));
        if (bad.length > 0 || items.length === 0) throw new BenchUsageError(`${bench}: --${k} ${JSON.stringify(str)}: choose ${s.list ? "from" : "one of"} ${s.choices.join(", ")}`);
      }
      out[k] = str;
    }
  }
  return out as Parsed<S>;
}

/** The options as help text, one per line. */
export function usage(bench: string, spec: Record<string, OptionSpec>): string {
  const lines = Object.entries(spec).map(([k, s]) => {
    const arg = s.type === "boolean" ? "" : s.type === "number" ? " N" : " S";
    const def = s.type === "boolean" ? "" : ` (default ${s.default})`;
    return `  --${k}${arg}`.padEnd(22) + s.help + def;
  });
  return `usage: npm run ${bench} -- [options]\n${lines.join("\n")}`;
}

/**
 * For a benchmark's entry point: parses process.argv, or prints the error and
 * the usage to stderr and exits with status 2 (--help: the usage, status 0).
 */
export function benchArgs<S extends Record<string, OptionSpec>>(bench: string, spec: S, refused: Readonly<Record<string, string>> = {}): Parsed<S> {
  const argv = process.argv.slice(2);
  if (argv.includes("--help")) {
    console.log(usage(bench, spec));
    process.exit(0);
  }
  try {
    return parseBenchArgs(bench, spec, argv, refused);
  } catch (e) {
    if (!(e instanceof BenchUsageError)) throw e;
    console.error(`${e.message}\n${usage(bench, spec)}`);
    process.exit(EXIT_BENCH_USAGE);
  }
}
