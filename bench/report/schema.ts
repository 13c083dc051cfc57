/**
 * The results of `weft bench all` (results.json), versioned. Every figure
 * carries its unit, the raw rounds it was taken from (not only the best), and
 * where there is one, the baseline measured in the same run and the target.
 * `weft bench compare` reads two of these; a file of another schema version
 * is refused, never guessed at.
 */
export const SCHEMA_VERSION = 1;

export interface Target {
  /** What the target is about: the figure itself, or its ratio to the baseline. */
  readonly of: "value" | "ratio";
  readonly op: ">=" | "<=";
  readonly value: number;
}

export interface Figure {
  /** Stable id within its benchmark, e.g. "lpm_10k_mlps": compare matches figures by bench + id. */
  readonly id: string;
  /** In words, e.g. "LPM lookups, 10k prefixes". */
  readonly name: string;
  readonly unit: string;
  /** The reported value (the best round unless `summary` says otherwise). */
  readonly value: number;
  readonly higherIsBetter: boolean;
  /** Every round's value (one entry when the benchmark measured once). */
  readonly rounds: readonly number[];
  /** How `value` comes from the rounds. */
  readonly summary: "best" | "only" | "median";
  /** The baseline measured in the same run, if any. */
  readonly baseline?: { readonly name: string; readonly value: number; readonly rounds: readonly number[] };
  readonly target?: Target;
  /** Samples behind the figure, for a distribution chart (e.g. ADD latencies). */
  readonly samples?: readonly number[];
  readonly baselineSamples?: readonly number[];
}

/** What a benchmark prints as its last line with --json: its own fields, plus `figures`. */
export interface BenchJson {
  readonly figures: readonly Figure[];
  readonly [key: string]: unknown;
}

export interface BenchRun {
  readonly bench: string;
  readonly argv: readonly string[];
  readonly seconds: number;
  readonly ok: boolean;
  /** Why the run failed (exit status, the benchmark's last error line). */
  readonly error?: string;
  readonly figures: readonly Figure[];
  /** The benchmark's own JSON document. */
  readonly raw?: unknown;
}

export interface Machine {
  readonly kernel: string;
  readonly cpu: string;
  readonly cores: number;
  readonly memoryGiB: number;
  readonly node: string;
  readonly commit: string | undefined;
}

export interface Results {
  readonly schema: typeof SCHEMA_VERSION;
  readonly date: string;
  readonly quick: boolean;
  readonly seconds: number;
  readonly machine: Machine;
  readonly runs: readonly BenchRun[];
}

/** A results.json that cannot be used. */
export class ResultsFileError extends Error {
  readonly code = "WEFT_BENCH_RESULTS";
  constructor(message: string) {
    super(message);
    this.name = "ResultsFileError";
  }
}

/** The ratio of a figure to its baseline, oriented so that > 1 is better. */
export function ratioOf(f: Figure): number | undefined {
  if (!f.baseline || f.baseline.value === 0 || f.value === 0) return undefined;
  return f.higherIsBetter ? f.value / f.baseline.value : f.baseline.value / f.value;
}

/** Whether a figure meets its target; undefined without one (or without the ratio it is about). */
export function meetsTarget(f: Figure): boolean | undefined {
  const t = f.target;
  if (!t) return undefined;
  const v = t.of === "ratio" ? ratioOf(f) : f.value;
  if (v === undefined) return undefined;
  return t.op === ">=" ? v >= t.value : v <= t.value;
}

/** Checks a parsed results.json; throws ResultsFileError saying what is wrong. */
export function checkResults(doc: unknown, where: string): Results {
  if (typeof doc !== "object" || doc === null) throw new ResultsFileError(`${where}: not a JSON object`);
  const d = doc as Partial<Results>;
  if (d.schema !== SCHEMA_VERSION) {
    throw new ResultsFileError(`${where}: schema version ${JSON.stringify(d.schema)}, this weft reads version ${SCHEMA_VERSION}; rerun \`weft bench all\` with this weft to compare`);
  }
  if (!Array.isArray(d.runs)) throw new ResultsFileError(`${where}: no "runs" list`);
  for (const r of d.runs) {
    if (typeof r?.bench !== "string" || !Array.isArray(r.figures)) throw new ResultsFileError(`${where}: a run without a bench name or figures`);
    for (const f of r.figures) {
      if (typeof f?.id !== "string" || typeof f.value !== "number" || !Array.isArray(f.rounds)) {
        throw new ResultsFileError(`${where}: ${r.bench}: a figure without id, value or rounds`);
      }
    }
  }
  return d as Results;
}
