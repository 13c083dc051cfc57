import { meetsTarget, ratioOf, type Figure, type Results } from "./schema.js";

/**
 * report.md of a `weft bench all` run: the machine, then per benchmark its
 * figures with the baseline measured in the same run, the ratio and the
 * target, and one line saying whether each target is met.
 */

const num = (x: number): string => (Math.abs(x) >= 100 ? Math.round(x).toLocaleString("en-US") : String(Math.round(x * 100) / 100));

function spread(rounds: readonly number[]): string {
  if (rounds.length < 2) return "";
  return ` (${num(Math.min(...rounds))}–${num(Math.max(...rounds))} over ${rounds.length})`;
}

function targetText(f: Figure): string {
  const t = f.target;
  if (!t) return "";
  return `${t.of === "ratio" ? "ratio " : ""}${t.op === ">=" ? "≥" : "≤"} ${num(t.value)}${t.of === "ratio" ? "x" : ` ${f.unit}`}`;
}

export function renderReport(r: Results, charts: ReadonlyMap<string, string>): string {
  const m = r.machine;
  const out: string[] = [
    "# weft bench report",
    "",
    `${r.quick ? "A quick run (`--quick`: shorter rounds, fewer of them)" : "A full run"} of \`weft bench all\`, ${r.date}, ${Math.round(r.seconds)} s.`,
    "",
    "| machine | |",
    "| --- | --- |",
    `| kernel | ${m.kernel} |`,
    `| CPU | ${m.cpu}, ${m.cores} cores |`,
    `| memory | ${m.memoryGiB} GiB |`,
    `| Node | ${m.node} |`,
    `| weft commit | ${m.commit ?? "not a git checkout"} |`,
    "",
    "Each figure is the benchmark's own summary (`best` of its rounds unless said otherwise), with the",
    "spread of its rounds; its baseline was measured in the same run, alternating with it. On a shared",
    "machine only such ratios mean anything: the same build varies by up to 1.6x between runs.",
    "",
  ];
  const targets: string[] = [];
  for (const run of r.runs) {
    out.push(`## ${run.bench}`, "", `\`${["npm", "run", `bench:${run.bench}`, "--", ...run.argv].join(" ")}\` — ${Math.round(run.seconds)} s${run.ok ? "" : `, **failed**: ${run.error ?? "no reason"}`}`, "");
    if (run.figures.length > 0) {
      out.push("| figure | value | baseline | ratio | target | met |", "| --- | ---: | ---: | ---: | --- | --- |");
      for (const f of run.figures) {
        const ratio = ratioOf(f);
        const met = meetsTarget(f);
        out.push(`| ${f.name} | ${num(f.value)} ${f.unit}${spread(f.rounds)} | ${f.baseline ? `${f.baseline.name}: ${num(f.baseline.value)}${spread(f.baseline.rounds)}` : ""} | ` +
          `${ratio === undefined ? "" : `${num(ratio)}x`} | ${targetText(f)} | ${met === undefined ? "" : met ? "yes" : "**no**"} |`);
        if (met !== undefined) targets.push(`- ${run.bench}: ${f.name}: ${targetText(f)} — ${met ? "met" : "**not met**"} (${ratio !== undefined && f.target?.of === "ratio" ? `${num(ratio)}x` : `${num(f.value)} ${f.unit}`})`);
      }
      out.push("");
    }
    const chart = charts.get(run.bench);
    if (chart) out.push(`![${run.bench}](${chart})`, "");
  }
  out.push("## Targets", "", ...(targets.length > 0 ? targets : ["(no figure of this run has a target)"]), "");
  return out.join("\n");
}
