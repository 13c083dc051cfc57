import type { BenchRun } from "./schema.js";

/**
 * One SVG chart per benchmark, drawn by vega-lite + vega (rendered in Node,
 * no browser): every figure next to its baseline, one panel per unit, with
 * the spread of the rounds as a rule; and where a figure carries samples
 * (the CNI ADD latencies), their distribution against the baseline's.
 */

type Spec = Record<string, unknown>;

interface Row {
  readonly figure: string;
  readonly unit: string;
  readonly who: string;
  readonly value: number;
  readonly lo: number;
  readonly hi: number;
}

function rows(run: BenchRun): Row[] {
  return run.figures.flatMap((f) => {
    const label = f.id.replace(/_/g, " "); // short and stable; the report's table has the names in words
    const one = (who: string, value: number, rounds: readonly number[]): Row => ({
      figure: label, unit: f.unit, who, value, lo: Math.min(value, ...rounds), hi: Math.max(value, ...rounds),
    });
    return [one("weft", f.value, f.rounds), ...(f.baseline ? [one(`baseline: ${f.baseline.name}`, f.baseline.value, f.baseline.rounds)] : [])];
  });
}

/** The vega-lite spec for a benchmark's chart, or undefined when it has no figures. */
export function chartSpec(run: BenchRun): Spec | undefined {
  const data = rows(run);
  if (data.length === 0) return undefined;
  const units = [...new Set(data.map((r) => r.unit))];
  const panel = (unit: string): Spec => ({
    title: unit,
    width: 520,
    data: { values: data.filter((r) => r.unit === unit) },
    layer: [
      { mark: "bar", encoding: {
        y: { field: "figure", type: "nominal", title: null, axis: { labelLimit: 320 } },
        yOffset: { field: "who" },
        x: { field: "value", type: "quantitative", title: null },
        color: { field: "who", type: "nominal", title: null, legend: { orient: "bottom", labelLimit: 320 } },
      } },
      { mark: { type: "rule", color: "black" }, encoding: {
        y: { field: "figure", type: "nominal" }, yOffset: { field: "who" },
        x: { field: "lo", type: "quantitative" }, x2: { field: "hi" },
      } },
    ],
  });
  const bars: Spec = { title: `${run.bench}: weft and its baselines (rule: spread of the rounds)`, vconcat: units.map(panel) };
  const sampled = run.figures.find((f) => f.samples && f.samples.length > 0);
  if (!sampled) return { $schema: "https://vega.github.io/schema/vega-lite/v6.json", ...bars };
  const dist = [
    ...(sampled.samples ?? []).map((v) => ({ who: "weft", v })),
    ...(sampled.baselineSamples ?? []).map((v) => ({ who: `baseline: ${sampled.baseline?.name ?? ""}`, v })),
  ];
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    vconcat: [bars, {
      title: `${sampled.name}: every sample (${sampled.unit})`,
      width: 520,
      data: { values: dist },
      mark: { type: "boxplot", extent: "min-max" },
      encoding: { y: { field: "who", type: "nominal", title: null }, x: { field: "v", type: "quantitative", title: sampled.unit, scale: { type: "log" } }, color: { field: "who", legend: null } },
    }],
  };
}

/** Renders a spec to SVG text. vega and vega-lite are loaded only here (they are large). */
export async function renderSvg(spec: Spec): Promise<string> {
  const vega = await import("vega");
  const vl = await import("vega-lite");
  // vega-lite's warnings are about layout choices, not the data: keep them out of the run's output.
  const quiet = { level: () => quiet, error: (...m: unknown[]) => console.error(...m), warn: () => quiet, info: () => quiet, debug: () => quiet };
  const compiled = vl.compile(spec as unknown as Parameters<typeof vl.compile>[0], { logger: quiet as never }).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}
