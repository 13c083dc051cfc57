import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { chartSpec, renderSvg } from "../../bench/report/charts.js";
import { compareResults, renderChanges } from "../../bench/report/compare.js";
import { BEGIN, embedReport, END, relink } from "../../bench/report/embed.js";
import { renderReport } from "../../bench/report/report.js";
import { checkResults, meetsTarget, ratioOf, ResultsFileError, type Figure, type Results } from "../../bench/report/schema.js";
import { projectRoot } from "../../src/common/paths.js";

/**
 * `weft bench all` and `weft bench compare`: the report, the charts and the
 * comparison on a recorded run (test/fixtures/bench-wasm-quick.json, a real
 * `weft bench all --only wasm --quick`), their errors, and one real run.
 */
const root = projectRoot();
const recorded = checkResults(JSON.parse(readFileSync(join(root, "test/fixtures/bench-wasm-quick.json"), "utf8")), "fixture");
const dir = mkdtempSync(join(tmpdir(), "weft-bench-report-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const weft = (...args: string[]) => spawnSync(process.execPath, ["bin/weft.js", "bench", ...args], { cwd: root, encoding: "utf8", timeout: 180_000 });

/** A copy of the recorded run with one figure's value and rounds replaced. */
function withFigure(id: string, value: number, rounds: number[]): Results {
  const copy = JSON.parse(JSON.stringify(recorded)) as { runs: { figures: Figure[] }[] };
  for (const r of copy.runs) r.figures = r.figures.map((f) => (f.id === id ? { ...f, value, rounds } : f));
  return copy as unknown as Results;
}

describe("the report of a recorded run", () => {
  it("names the machine, gives every figure with its baseline, ratio and target, and says whether each target is met", () => {
    const md = renderReport(recorded, new Map([["wasm", "charts/wasm.svg"]]));
    expect(md).toContain(`| kernel | ${recorded.machine.kernel} |`);
    expect(md).toContain(`| weft commit | ${recorded.machine.commit} |`);
    const lpm = recorded.runs[0]!.figures.find((f) => f.id === "lpm_10k_vs_map")!;
    expect(md).toMatch(new RegExp(`\\| ${lpm.name} \\| [\\d.]+ M lookups/s \\([\\d.]+–[\\d.]+ over 9\\) \\| Map per length \\(JS\\): [\\d.]+ .*\\| [\\d.]+x \\| ≥ 50 M lookups/s \\| (yes|\\*\\*no\\*\\*) \\|`));
    expect(md).toMatch(/^- wasm: LPM lookups, 10k prefixes, against the Map oracle: ≥ 50 M lookups\/s — (met|\*\*not met\*\*)/m);
    expect(md).toContain("![wasm](charts/wasm.svg)");
  });

  it("ratios are oriented so that more than 1 is better, and targets are judged on what they name", () => {
    const f: Figure = { id: "x", name: "x", unit: "ms", value: 2, higherIsBetter: false, rounds: [2], summary: "only", baseline: { name: "b", value: 4, rounds: [4] }, target: { of: "ratio", op: ">=", value: 1.5 } };
    expect(ratioOf(f)).toBe(2);
    expect(meetsTarget(f)).toBe(true);
    expect(meetsTarget({ ...f, target: { of: "value", op: "<=", value: 1 } })).toBe(false);
  });

  it("draws a chart as SVG with vega-lite", async () => {
    const spec = chartSpec(recorded.runs[0]!);
    expect(spec).toBeDefined();
    const svg = await renderSvg(spec!);
    expect(svg).toMatch(/^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(svg).toContain("lpm 10k vs map"); // the figure labels are drawn
    expect(svg).toContain("M lookups/s");
  });
});

describe("compare", () => {
  it("a change inside the other run's spread is not significant; outside it, it is, and a worse one is a regression", () => {
    const same = compareResults(recorded, recorded);
    expect(same.every((c) => !c.significant && c.deltaPct === 0)).toBe(true);
    const base = recorded.runs[0]!.figures.find((f) => f.id === "encap_mpps")!;
    const lo = Math.min(...base.rounds);
    const slower = compareResults(recorded, withFigure("encap_mpps", lo / 2, [lo / 2, lo / 2 * 1.01, lo / 2 * 0.99]));
    const c = slower.find((x) => x.id === "encap_mpps")!;
    expect(c).toMatchObject({ significant: true, regression: true, improvement: false });
    expect(c.deltaPct).toBeLessThan(-40);
    // Within the old run's spread: noise.
    const inside = compareResults(recorded, withFigure("encap_mpps", lo, [lo, base.value]));
    expect(inside.find((x) => x.id === "encap_mpps")!.significant).toBe(false);
    expect(renderChanges(slower)).toMatch(/\| wasm \| encap, .* \(M packets\/s\) \| [\d.]+ \| [\d.]+ \| -\d+\.\d% \| \*\*regression\*\* \|/);
  });

  it("a figure only one run has is listed, not judged", () => {
    const fewer = JSON.parse(JSON.stringify(recorded)) as { runs: { figures: Figure[] }[] };
    fewer.runs[0]!.figures = fewer.runs[0]!.figures.filter((f) => f.id !== "decap_mpps");
    const c = compareResults(recorded, fewer as unknown as Results).find((x) => x.id === "decap_mpps")!;
    expect(c).toMatchObject({ new: undefined, significant: false, note: "missing from the new run" });
  });

  it("refuses a file of another schema version, or one that is not a results file, saying what to do", () => {
    expect(() => checkResults({ ...recorded, schema: 2 }, "old.json")).toThrow(ResultsFileError);
    expect(() => checkResults({ ...recorded, schema: 2 }, "old.json")).toThrow(/old\.json: schema version 2, this weft reads version 1; rerun `weft bench all`/);
    expect(() => checkResults({ schema: 1 }, "x.json")).toThrow(/no "runs" list/);
  });

  it("on the command line: exit 1 on a regression with --fail-on-regression, 2 for an unreadable file, --json for machines", () => {
    const a = join(dir, "a.json");
    const b = join(dir, "b.json");
    writeFileSync(a, JSON.stringify(recorded));
    const lo = Math.min(...recorded.runs[0]!.figures.find((f) => f.id === "decap_mpps")!.rounds);
    writeFileSync(b, JSON.stringify(withFigure("decap_mpps", lo / 3, [lo / 3, lo / 3.1, lo / 2.9])));
    const plain = weft("compare", a, b);
    expect(plain.status).toBe(0);
    expect(plain.stdout).toMatch(/1 significant regression/);
    expect(weft("compare", a, b, "--fail-on-regression").status).toBe(1);
    expect(weft("compare", a, a, "--fail-on-regression").status).toBe(0);
    const j = JSON.parse(weft("compare", a, b, "--json").stdout) as { changes: { id: string; regression: boolean }[] };
    expect(j.changes.filter((c) => c.regression).map((c) => c.id)).toEqual(["decap_mpps"]);
    const missing = weft("compare", a, join(dir, "nope.json"));
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/nope\.json: cannot be read/);
    writeFileSync(join(dir, "bad.json"), "{not json");
    expect(weft("compare", a, join(dir, "bad.json")).stderr).toMatch(/bad\.json: not JSON/);
  });
});

describe("the report inside a document (bench/RESULTS.md)", () => {
  const report = "# weft bench report\n\n![wasm](charts/wasm.svg)\n";
  it("goes between the markers, replacing the last one and keeping the prose on both sides", () => {
    const doc = `intro\n\n${BEGIN}\nold report\n${END}\n\n## How the figures were reached\nprose\n`;
    const once = embedReport(doc, report, "/x/RESULTS.md");
    expect(once).toBe(`intro\n\n${BEGIN}\n# weft bench report\n\n![wasm](charts/wasm.svg)\n${END}\n\n## How the figures were reached\nprose\n`);
    expect(embedReport(once, report, "/x/RESULTS.md")).toBe(once);
  });
  it("a new document is the report alone; one without markers keeps its text below the report", () => {
    expect(embedReport(undefined, report, "/x/R.md")).toBe(`${BEGIN}\n${report}${END}\n`);
    expect(embedReport("notes\n", report, "/x/R.md")).toBe(`${BEGIN}\n${report}${END}\n\nnotes\n`);
  });
  it("broken markers are refused, not guessed at (the prose would be lost)", () => {
    for (const bad of [`${BEGIN}\nno end`, `${END}\n${BEGIN}\n`, `${BEGIN}\n${END}\n${BEGIN}\n${END}\n`, `only ${END}`]) {
      expect(() => embedReport(bad, report, "/x/R.md")).toThrow(/markers are broken/);
    }
  });
  it("chart links are made relative to the document", () => {
    expect(relink(report, "/r/bench/latest", "/r/bench/RESULTS.md")).toContain("![wasm](latest/charts/wasm.svg)");
    expect(relink(report, "/r/out", "/r/bench/RESULTS.md")).toContain("![wasm](../out/charts/wasm.svg)");
    expect(relink(report, "/r/bench", "/r/bench/RESULTS.md")).toContain("![wasm](./charts/wasm.svg)");
    expect(relink(report, "/r/out$&1", "/r/bench/RESULTS.md")).toContain("![wasm](../out$&1/charts/wasm.svg)"); // "$" is no pattern
  });
  it("a results file whose benchmark name is not a plain name is refused before anything is written under it", async () => {
    const bad = JSON.parse(JSON.stringify(recorded)) as { runs: { bench: string }[] };
    bad.runs[0]!.bench = "../escape";
    const { writeRun } = await import("../../bench/report/write.js");
    const out = join(dir, "plain");
    await expect(writeRun(bad as unknown as Results, out)).rejects.toThrow(/benchmark names are lower-case letters, digits and dashes/);
    expect(existsSync(join(dir, "escape.svg"))).toBe(false);
    expect(existsSync(out)).toBe(false); // nothing written at all
  });
  it("weft bench report draws a recorded run again into a folder and a document, and refuses a document with broken markers", () => {
    const out = join(dir, "again");
    const doc = join(dir, "RESULTS.md");
    writeFileSync(doc, `# Results\n\n${BEGIN}\nstale\n${END}\n\nprose stays\n`);
    const r = weft("report", join(root, "test/fixtures/bench-wasm-quick.json"), "--out", out, "--results", doc);
    expect(r.status, r.stderr).toBe(0);
    expect(existsSync(join(out, "charts", "wasm.svg"))).toBe(true);
    const text = readFileSync(doc, "utf8");
    expect(text).toMatch(/^# Results\n\n<!-- weft bench report: begin/);
    expect(text).not.toContain("stale");
    expect(text).toContain("![wasm](again/charts/wasm.svg)");
    expect(text).toContain(`| weft commit | ${recorded.machine.commit} |`);
    expect(text.endsWith(`${END}\n\nprose stays\n`)).toBe(true);
    writeFileSync(doc, `${BEGIN}\nno end\n`);
    const broken = weft("report", join(root, "test/fixtures/bench-wasm-quick.json"), "--out", out, "--results", doc);
    expect(broken.status).toBe(2);
    expect(broken.stderr).toMatch(/RESULTS\.md: its report markers are broken/);
    expect(readFileSync(doc, "utf8")).toBe(`${BEGIN}\nno end\n`);
    expect(weft("report").stderr).toMatch(/give one results\.json file, got 0/);
  });
});

describe("the committed report", () => {
  it("bench/RESULTS.md holds exactly the report of bench/latest/results.json, a full run of every benchmark, with its charts", () => {
    const latest = checkResults(JSON.parse(readFileSync(join(root, "bench/latest/results.json"), "utf8")), "bench/latest/results.json");
    expect(latest.quick).toBe(false);
    expect(latest.runs.map((r) => [r.bench, r.ok])).toEqual(["wasm", "control", "ipam", "dns", "dataplane"].map((b) => [b, true]));
    const charts = new Map(latest.runs.map((r) => [r.bench, `charts/${r.bench}.svg`]));
    for (const c of charts.values()) expect(readFileSync(join(root, "bench/latest", c), "utf8")).toMatch(/^<svg/);
    const doc = readFileSync(join(root, "bench/RESULTS.md"), "utf8");
    const want = embedReport(doc, relink(renderReport(latest, charts), join(root, "bench/latest"), join(root, "bench/RESULTS.md")), "RESULTS.md");
    expect(doc, "regenerate with: weft bench report bench/latest/results.json --results bench/RESULTS.md").toBe(want);
    expect(readFileSync(join(root, "README.md"), "utf8")).toContain("](bench/latest/charts/dataplane.svg)");
  });
});

describe("weft bench all", () => {
  it("bad options are refused with a clear message: an unknown benchmark, an unwritable --out", () => {
    const unknown = weft("all", "--only", "wasm,nope");
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(/--only "wasm,nope": choose from wasm, control, ipam, dns, dataplane/);
    const unwritable = weft("all", "--only", "wasm", "--out", "/etc/hostname/report");
    expect(unwritable.status).toBe(2);
    expect(unwritable.stderr).toMatch(/--out \/etc\/hostname\/report: cannot write there/);
    const doc = join(dir, "broken.md");
    writeFileSync(doc, `${END}\n`);
    const broken = weft("all", "--only", "wasm", "--out", join(dir, "unused"), "--results", doc);
    expect(broken.status).toBe(2);
    expect(broken.stderr).toMatch(/--results .*broken\.md: its report markers are broken/);
    expect(broken.stderr).not.toMatch(/\[1\/1\] wasm/); // refused before running anything
    expect(existsSync(join(dir, "unused", "results.json"))).toBe(false);
  });

  it("a real quick run of the wasm benchmark writes results.json, report.md and its chart", () => {
    const out = join(dir, "run");
    const doc = join(dir, "RUN.md");
    const r = weft("all", "--only", "wasm", "--quick", "--out", out, "--results", doc);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/\[1\/1\] wasm/); // plain progress lines when stderr is not a terminal
    const results = checkResults(JSON.parse(readFileSync(join(out, "results.json"), "utf8")), "results.json");
    expect(results.runs.map((x) => [x.bench, x.ok])).toEqual([["wasm", true]]);
    expect(results.runs[0]!.figures.map((f) => f.id)).toEqual(recorded.runs[0]!.figures.map((f) => f.id));
    for (const f of results.runs[0]!.figures) expect(f.rounds.length).toBe(9);
    expect(readFileSync(join(out, "report.md"), "utf8")).toMatch(/^# weft bench report/);
    expect(existsSync(join(out, "charts", "wasm.svg"))).toBe(true);
    expect(readFileSync(doc, "utf8")).toContain("![wasm](run/charts/wasm.svg)");
  }, 180_000);
});
