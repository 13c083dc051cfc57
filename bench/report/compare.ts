import type { Figure, Results } from "./schema.js";

/**
 * Two runs' figures side by side. As benchstat does, a change counts only
 * when it stands outside the noise: here, when each run's figure lies outside
 * the spread of the other run's rounds. With one round on a side there is no
 * spread to judge by, and nothing is called significant.
 */
export interface Change {
  readonly bench: string;
  readonly id: string;
  readonly name: string;
  readonly unit: string;
  readonly old: number | undefined;
  readonly new: number | undefined;
  /** (new - old) / old, in percent; undefined when a side is missing. */
  readonly deltaPct: number | undefined;
  readonly significant: boolean;
  /** Significant and worse (lower where higher is better, or the other way). */
  readonly regression: boolean;
  readonly improvement: boolean;
  readonly note?: string;
}

const outside = (v: number, rounds: readonly number[]): boolean => rounds.length >= 2 && (v < Math.min(...rounds) || v > Math.max(...rounds));

function index(r: Results): Map<string, { bench: string; f: Figure }> {
  const m = new Map<string, { bench: string; f: Figure }>();
  for (const run of r.runs) for (const f of run.figures) m.set(`${run.bench}/${f.id}`, { bench: run.bench, f });
  return m;
}

export function compareResults(a: Results, b: Results): Change[] {
  const old = index(a);
  const cur = index(b);
  const keys = [...new Set([...old.keys(), ...cur.keys()])];
  return keys.map((k): Change => {
    const o = old.get(k);
    const n = cur.get(k);
    const f = (n ?? o)!.f;
    const bench = (n ?? o)!.bench;
    if (!o || !n) {
      return { bench, id: f.id, name: f.name, unit: f.unit, old: o?.f.value, new: n?.f.value, deltaPct: undefined, significant: false, regression: false, improvement: false,
        note: o ? "missing from the new run" : "missing from the old run" };
    }
    const deltaPct = o.f.value === 0 ? undefined : ((n.f.value - o.f.value) / o.f.value) * 100;
    const significant = outside(n.f.value, o.f.rounds) && outside(o.f.value, n.f.rounds);
    const better = f.higherIsBetter ? n.f.value > o.f.value : n.f.value < o.f.value;
    const unit = o.f.unit === n.f.unit ? undefined : `unit changed from ${o.f.unit} to ${n.f.unit}`;
    return {
      bench, id: f.id, name: f.name, unit: n.f.unit, old: o.f.value, new: n.f.value, deltaPct, significant: significant && !unit,
      regression: significant && !unit && !better, improvement: significant && !unit && better,
      ...(unit ? { note: unit } : o.f.rounds.length < 2 || n.f.rounds.length < 2 ? { note: "one round on a side: no spread to judge by" } : {}),
    };
  });
}

const num = (x: number | undefined): string => (x === undefined ? "-" : Math.abs(x) >= 100 ? String(Math.round(x)) : String(Math.round(x * 100) / 100));

/** The side-by-side table, one line per figure. */
export function renderChanges(changes: readonly Change[]): string {
  const lines = ["| benchmark | figure | old | new | change | |", "| --- | --- | ---: | ---: | ---: | --- |"];
  for (const c of changes) {
    const mark = c.regression ? "**regression**" : c.improvement ? "improvement" : c.significant ? "significant" : c.note ?? "within the noise";
    lines.push(`| ${c.bench} | ${c.name} (${c.unit}) | ${num(c.old)} | ${num(c.new)} | ${c.deltaPct === undefined ? "" : `${c.deltaPct >= 0 ? "+" : ""}${c.deltaPct.toFixed(1)}%`} | ${mark} |`);
  }
  const reg = changes.filter((c) => c.regression).length;
  lines.push("", reg === 0 ? "no significant regression" : `${reg} significant regression${reg === 1 ? "" : "s"}`);
  return lines.join("\n");
}
