#!/usr/bin/env node
// Records one benchmark run as the evidence the status table reads (bench/results/<name>.json):
//   node scripts/record-bench.mjs <name> "<machine note>" -- npm run --silent bench:dataplane -- --family 6 --json
// (the status table's check wants the command as a package.json benchmark script: npm run bench:<name>).
// The command runs from an argv array (no shell); its stdout lines that parse as JSON objects are
// the run's `json` documents, the other lines its `log`. The commit, date, Node and kernel are recorded
// with it. A run that fails, or prints no JSON, writes nothing.
import { spawn } from "node:child_process";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { release } from "node:os";
import { join } from "node:path";

const [name, machine, sep, ...argv] = process.argv.slice(2);
if (!name || !/^[a-z0-9][a-z0-9-]*$/.test(name) || machine === undefined || sep !== "--" || argv.length === 0) {
  console.error('usage: node scripts/record-bench.mjs <name: a-z0-9-> "<machine note>" -- <command...>');
  process.exit(2);
}
const root = new URL("..", import.meta.url).pathname;
const commit = execFileSync("git", ["rev-parse", "HEAD"], { cwd: root, encoding: "utf8" }).trim();
const child = spawn(argv[0], argv.slice(1), { cwd: root, stdio: ["ignore", "pipe", "inherit"] });
let out = "";
child.stdout.on("data", (d) => {
  out += d;
  process.stdout.write(d);
});
const code = await new Promise((r) => child.on("close", r));
if (code !== 0) {
  console.error(`record-bench: the command exited ${code}; nothing recorded`);
  process.exit(1);
}
const json = [];
const log = [];
for (const line of out.split("\n")) {
  if (line.trim() === "") continue;
  try {
    const v = JSON.parse(line);
    if (v && typeof v === "object" && !Array.isArray(v)) {
      json.push(v);
      continue;
    }
  } catch {
    // a log line
  }
  log.push(line);
}
if (json.length === 0) {
  console.error("record-bench: the command printed no JSON document (pass --json); nothing recorded");
  process.exit(1);
}
const doc = { command: argv.filter((a) => a !== "--silent").join(" "), commit, date: new Date().toISOString().replace(/\.\d+Z$/, "Z"), node: process.version, kernel: release(), machine, json, log };
const path = join(root, "bench", "results", `${name}.json`);
writeFileSync(path, `${JSON.stringify(doc, null, 1)}\n`);
console.error(`record-bench: wrote ${path}`);
