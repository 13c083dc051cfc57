import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import { ConfigError } from "../../common/errors.js";

const BUILT: Record<string, string> = {
  wasm: "../../../bench/wasm.js", control: "../../../bench/control.js", dataplane: "../../../bench/dataplane.js", ipam: "../../../bench/ipam.js",
  dns: "../../../bench/dns.js",
};

export function registerBench(program: Command): void {
  program
    .command("bench")
    .description("run a benchmark: wasm, control, dataplane, ipam, dns")
    .argument("<name>", "which benchmark")
    .option("--json", "print one JSON document as the last line")
    .option("--seconds <s>", "measuring time per figure (wasm, dataplane, dns; control and ipam run a fixed amount of work and refuse it, exit 2)")
    .action((name: string, opts: { json?: boolean; seconds?: string }) => {
      const rel = BUILT[name];
      if (rel === undefined) throw new ConfigError(`unknown benchmark "${name}"`, { hint: `choose one of: ${Object.keys(BUILT).join(", ")}` });
      const script = fileURLToPath(new URL(rel, import.meta.url));
      if (!existsSync(script)) throw new ConfigError(`${script} is missing`, { hint: "run `npm run build` first" });
      const args = [script, ...(opts.json ? ["--json"] : []), ...(opts.seconds ? ["--seconds", opts.seconds] : [])];
      // The benchmark parses its own options (bench/args.ts) and exits 2 on one it does not take.
      const r = spawnSync(process.execPath, args, { stdio: "inherit" });
      process.exitCode = r.status ?? 1;
    });
}
