import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import { ConfigError } from "../../common/errors.js";

/** The benchmarks, `all` (every one, with a report) and `compare` (two reports): each a script in bench/. */
const BUILT: Record<string, string> = {
  wasm: "../../../bench/wasm.js", control: "../../../bench/control.js", dataplane: "../../../bench/dataplane.js", ipam: "../../../bench/ipam.js",
  dns: "../../../bench/dns.js", all: "../../../bench/all.js", compare: "../../../bench/compare.js", report: "../../../bench/render.js",
};

export function registerBench(program: Command): void {
  program
    .command("bench")
    .description("run a benchmark (wasm, control, dataplane, ipam, dns), all of them with a report (all), draw a report again from its results.json (report), or compare two runs (compare)")
    .argument("<name>", "wasm | control | dataplane | ipam | dns | all | report | compare")
    .argument("[args...]", "the benchmark's own options, e.g. --json, --seconds N; all: --quick --only a,b --out DIR --results DOC; report: RESULTS.json [--out DIR] [--results DOC]; compare: OLD.json NEW.json [--json] [--fail-on-regression]")
    .allowUnknownOption()
    .helpOption(false)
    .action((name: string, rest: string[]) => {
      const rel = BUILT[name];
      if (rel === undefined) throw new ConfigError(`unknown benchmark "${name}"`, { hint: `choose one of: ${Object.keys(BUILT).join(", ")}` });
      const script = fileURLToPath(new URL(rel, import.meta.url));
      if (!existsSync(script)) throw new ConfigError(`${script} is missing`, { hint: "run `npm run build` first" });
      // The script parses its own options (bench/args.ts) and exits 2 on one it does not take.
      const r = spawnSync(process.execPath, [script, ...rest], { stdio: "inherit" });
      process.exitCode = r.status ?? 1;
    });
}
