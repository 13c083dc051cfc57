/**
 * Every row of the status table (src/cli/capabilities.ts, rendered into the
 * README) is held to its evidence: the test files it names exist and hold
 * tests; every figure is a claim read from a committed benchmark run that
 * names a command that still exists and a commit of this repository; and no
 * note states a measurement outside such a claim.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { CAPABILITIES, type BenchJson, type Capability } from "../src/cli/capabilities.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const read = (p: string): string => readFileSync(`${root}/${p}`, "utf8");
const git = (...args: string[]) => spawnSync("git", args, { cwd: root, encoding: "utf8" });

/** Words that state a measurement: they may appear in a note only inside a claim. */
const PERFORMANCE_WORDS = /faster|slower|quicker|\d+(\.\d+)?x\b|\bRTT\b|latency|q\/s|Gbit|throughput|\bp50\b|\bp99\b|\d\s*(ms|µs|us)\b|on par|lower|higher|better|worse/i;

/** A test file holds tests: an it()/test() (or .each) call that is not skipped. */
const HOLDS_TESTS = /(^|[^.\w])(it|test)(\.each\s*\([\s\S]*?\))?\s*\(\s*["'`]/m;

interface Artifact {
  command: string;
  commit: string;
  date: string;
  machine: string;
  json: BenchJson[];
}

const rows = CAPABILITIES.map((c) => [`${c.area}: ${c.name}`, c] as [string, Capability]);

describe("the status table's evidence", () => {
  it.each(rows)("%s: names test files that exist and hold tests", (_, c) => {
    expect(c.tests.length).toBeGreaterThan(0);
    for (const t of c.tests) {
      expect(t, t).toMatch(/^test\/.+\.test\.ts$/);
      expect(existsSync(`${root}/${t}`), `${t} exists`).toBe(true);
      expect(read(t), `${t} holds tests`).toMatch(HOLDS_TESTS);
    }
  });

  it.each(rows)("%s: states no measurement outside a claim backed by a benchmark run", (_, c) => {
    let rest = c.note;
    for (const k of c.claims ?? []) {
      expect(c.note, "the claim's words are in the note").toContain(k.text);
      rest = rest.replace(k.text, "");
    }
    expect(rest).not.toMatch(PERFORMANCE_WORDS);
  });

  const claims = CAPABILITIES.flatMap((c) => (c.claims ?? []).map((k) => [`${c.area}: ${k.text}`, k] as const));
  it.each(claims)("%s: every figure is the committed run's, from a command that exists, at a commit of this repository", (_, k) => {
    expect(k.artifact).toMatch(/^bench\/results\/[\w-]+\.json$/);
    const a = JSON.parse(read(k.artifact)) as Artifact;
    const scripts = (JSON.parse(read("package.json")) as { scripts: Record<string, string> }).scripts;
    const script = /^npm run (bench:[\w-]+)( -- .*)?$/.exec(a.command)?.[1];
    expect(script && scripts[script], `${a.command}: a benchmark script of package.json`).toBeTruthy();
    expect(a.commit).toMatch(/^[0-9a-f]{40}$/);
    expect(a.date).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(a.machine.length).toBeGreaterThan(0);
    // A shallow clone may lack the commit; a full one must have it.
    if (git("rev-parse", "--is-shallow-repository").stdout.trim() === "false") {
      expect(git("cat-file", "-e", `${a.commit}^{commit}`).status, `commit ${a.commit} in this repository`).toBe(0);
    }
    expect(k.figures.length).toBeGreaterThan(0);
    for (const f of k.figures) {
      expect(k.text, "the figure is in the claim's words").toContain(f.value.toFixed(f.digits));
      expect(Number(f.from(a.json).toFixed(f.digits)), `${f.value} from ${k.artifact}`).toBe(f.value);
    }
  });
});

describe("the evidence checks can fail", () => {
  it("a note with a figure outside a claim, a test file without tests, and a figure the run does not give are caught", () => {
    expect("single-stream TCP 0.6x kernel vxlan").toMatch(PERFORMANCE_WORDS);
    expect("faster than unbound").toMatch(PERFORMANCE_WORDS);
    expect("bulk TCP on par with kernel vxlan, lower RTT").toMatch(PERFORMANCE_WORDS);
    expect("collect_md VXLAN device, anti-spoofing, pinned maps").not.toMatch(PERFORMANCE_WORDS);
    expect("describe('x', () => { it.skip('y', () => {}); });").not.toMatch(HOLDS_TESTS);
    expect("it.each([1, 2])('y %s', () => {});").toMatch(HOLDS_TESTS);
    const tun = CAPABILITIES.find((c) => c.area === "tun")?.claims?.[0];
    const a = JSON.parse(read(tun?.artifact ?? "")) as Artifact;
    const faster = a.json.map((d) => ({ ...d, results: (d["results"] as { backend: string; gbps: number }[]).map((r) => (r.backend === "tun" ? { ...r, gbps: r.gbps * 2 } : r)) }));
    expect(Number(tun?.figures[0]?.from(faster).toFixed(2))).not.toBe(tun?.figures[0]?.value);
    const withNotes = a.json.map((d) => ({ ...d, results: (d["results"] as { backend: string }[]).map((r) => (r.backend === "tun" ? { ...r, notes: ["tun: node 0 runs without the uso4 offload(s) (the slow path)"] } : r)) }));
    expect(() => tun?.figures[0]?.from(withNotes)).toThrow(/fallbacks/);
  });
});
