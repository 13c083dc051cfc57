/**
 * `npm run soak -- --minutes N [--seed S] [--overlap K] [--json] [--faults a,b,...]`
 *
 * The chaos soak (src/harness/soak): a netns cluster with one node per
 * backend (ebpf, tun, vxlan), pods attached through weft's CNI plugin pinging
 * each other continuously, and a seeded schedule of faults; invariants are
 * checked throughout. Progress and a summary table go to stderr; with --json
 * the report is one JSON document on stdout:
 * {"seed","overlap","overlapped","max_in_force","fault_list","duration_s","faults","fault_kinds","observed","violations","violation_list","max_outage_ms","checks",...}
 * Exit status 1 when there was a violation.
 */
import { runSoak } from "../src/harness/soak/runner.js";
import { summaryTable } from "../src/harness/soak/report.js";
import { FAULT_KINDS, type FaultKind } from "../src/harness/soak/types.js";
import { benchArgs } from "./args.js";

const args = benchArgs("soak", {
  minutes: { type: "number", default: 0.5, min: 0.05, max: 24 * 60, help: "how long to inject faults (fractional allowed, e.g. 0.5)" },
  seed: { type: "number", default: 0, min: 0, max: 2 ** 32 - 1, integer: true, help: "fault schedule seed (0: pick one and print it)" },
  json: { type: "boolean", help: "print the report as one JSON document on stdout" },
  overlap: { type: "number", default: 2, min: 1, max: 4, integer: true, help: "faults in force at once at most (1: one at a time)" },
  faults: { type: "string", default: FAULT_KINDS.join(","), choices: FAULT_KINDS, list: true, help: "fault kinds to draw from" },
}, { seconds: "the soak runs for --minutes (fractional allowed)" });

const seed = args.seed === 0 ? (Math.floor(Math.random() * 2 ** 31) + 1) : args.seed;
const kinds = args.faults.split(",").map((k) => k.trim()).filter(Boolean) as FaultKind[];
const report = await runSoak({ seconds: args.minutes * 60, seed, kinds, overlap: args.overlap, log: (l) => console.error(l) });
console.error(summaryTable(report));
if (args.json) console.log(JSON.stringify(report));
process.exitCode = report.violations === 0 ? 0 : 1;
