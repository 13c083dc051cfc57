#!/usr/bin/env node
// npm run fuzz -- [--seconds N] [--seed S] [--only a,b]
// Runs every fuzz target (test/fuzz/*.test.ts) for N seconds each instead of
// the fixed count `npm test` runs, then prints one line per target: inputs,
// refused (typed errors), accepted, heap growth. A finding fails the run and
// prints the seed and iteration that replay it.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const args = process.argv.slice(2);
const opts = { seconds: 30, seed: Math.floor(Math.random() * 2 ** 31), only: undefined };
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  const v = args[i + 1];
  if (a === "--seconds" || a === "--seed") {
    if (v === undefined || !/^\d+$/.test(v)) fail(`${a} needs a non-negative integer, got ${v === undefined ? "nothing" : `"${v}"`}`);
    opts[a.slice(2)] = Number(v);
    i++;
  } else if (a === "--only") {
    if (!v) fail("--only needs a comma-separated list of targets");
    opts.only = v.split(",");
    i++;
  } else if (a === "--help" || a === "-h") {
    console.log("usage: npm run fuzz -- [--seconds N (30)] [--seed S (random)] [--only target,...]");
    process.exit(0);
  } else fail(`unknown option "${a}"; try --help`);
}

const dir = "test/fuzz";
const all = readdirSync(dir).filter((f) => f.endsWith(".test.ts")).map((f) => f.replace(/\.test\.ts$/, ""));
const files = opts.only ?? all;
for (const f of files) if (!all.includes(f)) fail(`no fuzz target "${f}"; targets: ${all.join(", ")}`);

const out = mkdtempSync(join(tmpdir(), "weft-fuzz-"));
const report = join(out, "report.jsonl");
console.error(`fuzz: ${files.length} files, ${opts.seconds} s per target, seed ${opts.seed}`);
const r = spawnSync("npx", ["vitest", "run", ...files.map((f) => join(dir, `${f}.test.ts`)), `--testTimeout=${(opts.seconds * 4 + 120) * 1000}`], {
  stdio: "inherit",
  env: { ...process.env, WEFT_FUZZ_SECONDS: String(opts.seconds), WEFT_FUZZ_SEED: String(opts.seed), WEFT_FUZZ_REPORT: report },
});
if (existsSync(report)) {
  const rows = readFileSync(report, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
  console.log("\n| target | inputs | refused | accepted | seconds | heap growth MiB |\n| --- | ---: | ---: | ---: | ---: | ---: |");
  for (const x of rows) console.log(`| ${x.target} | ${x.iterations} | ${x.refused} | ${x.accepted} | ${x.seconds.toFixed(1)} | ${x.heapGrowthMiB} |`);
}
rmSync(out, { recursive: true, force: true });
process.exit(r.status ?? 1);

function fail(msg) {
  console.error(`fuzz: ${msg}`);
  process.exit(2);
}
