/**
 * `weft bench all [--quick] [--only a,b] [--out DIR] [--results DOC]` (also `npm run bench:all -- …`)
 *
 * Runs the benchmarks one after another, each as its own process with
 * --json, and writes into DIR: results.json (every figure with its unit,
 * rounds, baseline and target; schema in bench/report/schema.ts), report.md,
 * and one SVG chart per benchmark (charts/<name>.svg). Progress goes to
 * stderr: a bar with the step and an ETA on a terminal, plain lines otherwise.
 * With --results, the report also goes into DOC between its markers
 * (bench/report/embed.ts), chart links relative to DOC.
 */
import { spawn } from "node:child_process";
import { accessSync, constants, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { benchArgs } from "./args.js";
import { machine } from "./report/machine.js";
import { checkDoc, writeRun, type Written } from "./report/write.js";
import { SCHEMA_VERSION, type BenchJson, type BenchRun, type Results } from "./report/schema.js";

/** Each benchmark, with its arguments for a full and a quick run, and how long each takes here (for the ETA). */
const PLAN = {
  wasm: { full: [], quick: ["--seconds", "1"], fullS: 60, quickS: 25 },
  control: { full: [], quick: ["--nodes", "1000", "--changes", "40"], fullS: 60, quickS: 25 },
  ipam: { full: [], quick: ["--rounds", "60", "--allocs", "3000"], fullS: 60, quickS: 20 },
  dns: { full: ["--seconds", "10", "--rounds", "3"], quick: ["--seconds", "2", "--rounds", "2"], fullS: 150, quickS: 40 },
  dataplane: {
    full: ["--backends", "direct,vxlan,vxlan-routed,ebpf,tun", "--seconds", "4", "--rounds", "3"],
    quick: ["--backends", "direct,vxlan,vxlan-routed,ebpf,tun", "--seconds", "1", "--rounds", "1"], fullS: 420, quickS: 90,
  },
} as const;
type Name = keyof typeof PLAN;
const NAMES = Object.keys(PLAN) as Name[];

const args = benchArgs("bench:all", {
  quick: { type: "boolean", help: "shorter and fewer rounds (about 3 minutes here)" },
  only: { type: "string", default: NAMES.join(","), choices: NAMES, list: true, help: "comma-separated benchmarks to run" },
  out: { type: "string", default: "bench-report", help: "directory for results.json, report.md and charts/" },
  results: { type: "string", default: "", help: "also put the report into this document between its markers, keeping the prose around them (bench/RESULTS.md)" },
}, { seconds: "each benchmark's own time is set by --quick (or run `weft bench <name> --seconds N` alone)", json: "results.json in --out is the machine-readable form" });

const out = resolve(args.out);
try {
  mkdirSync(join(out, "charts"), { recursive: true });
  accessSync(out, constants.W_OK);
} catch (e) {
  console.error(`bench:all: --out ${args.out}: cannot write there: ${(e as Error).message}`);
  process.exit(2);
}
if (args.results !== "") {
  try {
    checkDoc(args.results);
  } catch (e) {
    console.error(`bench:all: --results ${(e as Error).message}`);
    process.exit(2);
  }
}

const names = args.only.split(",").map((s) => s.trim()).filter(Boolean) as Name[];
const here = dirname(fileURLToPath(import.meta.url));
const tty = process.stderr.isTTY === true;
const started = Date.now();
const planned = names.reduce((s, n) => s + (args.quick ? PLAN[n].quickS : PLAN[n].fullS), 0);

function progress(step: number, name: string, doneS: number): void {
  const elapsed = (Date.now() - started) / 1000;
  const left = Math.max(0, planned - doneS);
  const line = `[${step}/${names.length}] ${name}  ${Math.round(elapsed)} s elapsed, about ${Math.round(left)} s left`;
  if (!tty) {
    console.error(`bench:all: ${line}`);
    return;
  }
  const width = 24;
  const filled = Math.round((width * Math.min(doneS, planned)) / Math.max(1, planned));
  process.stderr.write(`\r\x1b[K[${"#".repeat(filled)}${".".repeat(width - filled)}] ${line}`);
}

/** Runs one benchmark; its stderr (its human output) is kept for the error message, its last stdout line is the JSON. */
function runOne(name: Name, argv: readonly string[]): Promise<BenchRun> {
  const t0 = Date.now();
  return new Promise((done) => {
    const child = spawn(process.execPath, [join(here, `${name}.js`), "--json", ...argv], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => {
      const seconds = (Date.now() - t0) / 1000;
      const last = stdout.trim().split("\n").pop() ?? "";
      const fail = (why: string): void => done({ bench: name, argv, seconds, ok: false, error: why, figures: [] });
      // The error's own lines, not its stack: "    at …" frames and Node's version line say nothing.
      const said = stderr.trim().split("\n").filter((l) => l.trim() !== "" && !/^\s+at /.test(l) && !/^Node\.js v/.test(l));
      if (code !== 0) return fail(`exit ${code}: ${said.slice(-3).join(" / ") || "no output"}`);
      try {
        const doc = JSON.parse(last) as BenchJson;
        if (!Array.isArray(doc.figures)) return fail("its JSON has no figures");
        done({ bench: name, argv, seconds, ok: true, figures: doc.figures, raw: doc });
      } catch {
        fail(`its last line is not JSON: ${last.slice(0, 200)}`);
      }
    });
  });
}

const runs: BenchRun[] = [];
let doneS = 0;
for (const [i, name] of names.entries()) {
  progress(i + 1, name, doneS);
  const run = await runOne(name, args.quick ? PLAN[name].quick : PLAN[name].full);
  runs.push(run);
  doneS += args.quick ? PLAN[name].quickS : PLAN[name].fullS;
  if (!tty) console.error(`bench:all: ${name} ${run.ok ? "done" : `FAILED: ${run.error}`} in ${Math.round(run.seconds)} s`);
}
if (tty) process.stderr.write("\n");

const results: Results = {
  schema: SCHEMA_VERSION, date: new Date().toISOString(), quick: args.quick, seconds: (Date.now() - started) / 1000, machine: machine(), runs,
};
let written: Written;
try {
  written = await writeRun(results, out, args.results === "" ? undefined : args.results);
} catch (e) {
  console.error(`bench:all: ${(e as Error).message}`);
  process.exit(2);
}
console.error(`bench:all: ${runs.filter((r) => r.ok).length} of ${runs.length} benchmarks ran; ${Math.round(results.seconds)} s; wrote ${written.report}, results.json and ${written.charts} charts${args.results === "" ? "" : `, and the report into ${args.results}`}`);
process.exitCode = runs.every((r) => r.ok) ? 0 : 1;
