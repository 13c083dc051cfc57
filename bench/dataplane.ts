/**
 * `npm run bench:dataplane -- --backends direct,vxlan --seconds 5 [--rounds 2] [--measures bulk,rr] [--tun-busy-poll µs] [--family 4|6] [--json]`
 *
 * Per backend (bench/dataplane/topology.ts) two nodes with one pod each, and
 * between the pods (bench/dataplane/measure.ts): one TCP stream with the
 * ping RTT and CPU per GB, four streams, one stream with MSS 88, TCP
 * request/response (sockperf, 64 B), and 64-byte UDP at full load.
 * Backends are measured alternately, `rounds` times each, in the same run
 * (the machine is noisy); the best round of each is reported, against its
 * baseline from the same run (bench/dataplane/figures.ts).
 *
 * `--family 6`: dual-stack clusters, and every measurement (default: bulk and
 * lat, qperf's TCP latency) over IPv4 and over IPv6 alternately on the same
 * cluster; each backend's IPv6 figures are reported against its own IPv4
 * figures of the same run (bench/dataplane/family.ts).
 */
import { benchArgs } from "./args.js";
import { bestOf, figures, METRICS, type Rounds } from "./dataplane/figures.js";
import { DEFAULT_MEASURES, measure, MEASURES, type Measure, type Sample } from "./dataplane/measure.js";
import { familyReport } from "./dataplane/family.js";
import { BACKENDS, fallbacks, topology, type BenchBackend } from "./dataplane/topology.js";
import type { Cluster } from "../src/harness/cluster.js";

const args = benchArgs("bench:dataplane", {
  json: { type: "boolean", help: "print one JSON document as the last line" },
  backends: { type: "string", default: "direct,vxlan", choices: BACKENDS, list: true, help: "comma-separated backends" },
  seconds: { type: "number", default: 5, min: 1, integer: true, help: "seconds per measurement per backend per round" },
  rounds: { type: "number", default: 2, min: 1, integer: true, help: "rounds, alternating the backends" },
  measures: { type: "string", default: "default", choices: ["default", ...MEASURES], list: true, help: `comma-separated measurements; default: ${DEFAULT_MEASURES.join(",")}, with --family 6: bulk,lat` },
  family: { type: "string", default: "4", choices: ["4", "6"], help: "6: dual-stack clusters, each backend's IPv6 figures against its IPv4 figures" },
  "tun-busy-poll": { type: "number", default: -1, min: -1, max: 1000, integer: true, help: "the tun agents' --tun-busy-poll in µs (-1: the agent's default)" },
});
const json = args.json;
const backends = args.backends.split(",").map((s) => s.trim()).filter(Boolean) as BenchBackend[];
const family6 = args.family === "6";
const asked = args.measures.split(",").map((s) => s.trim()).filter((s) => s !== "" && s !== "default") as Measure[];
const what = new Set<Measure>(asked.length > 0 ? asked : family6 ? ["bulk", "lat"] : DEFAULT_MEASURES);
const log = (s: string): void => (json ? console.error(s) : console.log(s));

const fmt = (s: Sample): string => [
  s.gbps !== undefined ? `${s.gbps.toFixed(2)} Gbit/s  rtt ${s.rttUs?.toFixed(0)} us  agents ${s.agentCpuPerGb?.toFixed(2)} s/GB` : "",
  s.gbps4 !== undefined ? `4 flows ${s.gbps4.toFixed(2)} Gbit/s` : "",
  s.gbpsMss88 !== undefined ? `mss88 ${s.gbpsMss88.toFixed(3)} Gbit/s` : "",
  s.rrP50Us !== undefined ? `rr p50 ${s.rrP50Us.toFixed(1)} p99 ${s.rrP99Us?.toFixed(1)} us` : "",
  s.latUs !== undefined ? `lat ${s.latUs.toFixed(1)} us` : "",
  s.udp64RxPps !== undefined ? `udp64 ${Math.round(s.udp64RxPps)} pps` : "",
].filter(Boolean).join("  ");

const clusters = new Map<BenchBackend, Cluster>();
const rounds = new Map<BenchBackend, Sample[]>();
const rounds6 = new Map<BenchBackend, Sample[]>();
const notes = new Map<BenchBackend, string[]>();
try {
  const tunArgs = args["tun-busy-poll"] >= 0 ? ["--tun-busy-poll", String(args["tun-busy-poll"])] : [];
  for (const b of backends) clusters.set(b, await topology(b, b === "tun" ? tunArgs : [], family6));
  for (let r = 0; r < args.rounds; r++) {
    for (const b of backends) {
      const m = await measure(clusters.get(b)!, args.seconds, what, 4);
      log(`round ${r + 1} ${b.padEnd(12)} ${family6 ? "IPv4 " : ""}${fmt(m)}`);
      rounds.set(b, [...(rounds.get(b) ?? []), m]);
      if (!family6) continue;
      const m6 = await measure(clusters.get(b)!, args.seconds, what, 6);
      log(`round ${r + 1} ${b.padEnd(12)} IPv6 ${fmt(m6)}`);
      rounds6.set(b, [...(rounds6.get(b) ?? []), m6]);
    }
  }
  for (const [b, c] of clusters) notes.set(b, await fallbacks(c, b));
} finally {
  for (const c of clusters.values()) await c.destroy();
}

if (family6) {
  const report = familyReport(backends, rounds, rounds6);
  for (const line of report.lines) log(line);
  const allNotes6 = backends.flatMap((b) => notes.get(b) ?? []);
  if (allNotes6.length > 0) log(`\nNOTE, these runs were not as asked:\n${allNotes6.map((n) => `  ${n}`).join("\n")}`);
  if (json) console.log(JSON.stringify({ family: 6, results: report.results, notes: allNotes6 }));
  process.exit(0);
}

const figs = figures(backends, rounds as Rounds);
log("\nbest of the rounds, and the ratio to the baseline (> 1 is better):");
for (const f of figs) {
  const ratio = f.baseline ? (f.higherIsBetter ? f.value / f.baseline.value : f.baseline.value / f.value) : undefined;
  log(`  ${f.name.padEnd(84)} ${String(f.value).padStart(10)} ${f.unit}${ratio === undefined ? "" : `   ${ratio.toFixed(2)}x ${f.baseline?.name}`}`);
}
const allNotes = backends.flatMap((b) => notes.get(b) ?? []);
log(allNotes.length === 0 ? "\nno fallbacks: every backend ran as asked, with no agent warnings" : `\nNOTE, these runs were not as asked:\n${allNotes.map((n) => `  ${n}`).join("\n")}`);
if (json) {
  const metric = (id: string) => METRICS.find((m) => m.id === id)!;
  const best = (b: BenchBackend, id: string, digits = 2): number | undefined => {
    const v = bestOf(rounds.get(b), metric(id));
    return v === undefined ? undefined : Math.round(v * 10 ** digits) / 10 ** digits;
  };
  const round2 = (v: number | undefined): number | undefined => (v === undefined ? undefined : Math.round(v * 100) / 100);
  console.log(JSON.stringify({ results: backends.map((b) => ({
    backend: b, gbps: best(b, "gbps"), rtt_us: best(b, "rtt_us", 0),
    cpu_s_per_gb: round2(bestOf(rounds.get(b), { ...metric("agent_cpu_s_per_gb"), key: "cpuPerGb" })), agent_cpu_s_per_gb: best(b, "agent_cpu_s_per_gb"),
    gbps_4flows: best(b, "gbps_4flows"), gbps_mss88: best(b, "gbps_mss88", 3), rr_p50_us: best(b, "rr_p50_us", 1), rr_p99_us: best(b, "rr_p99_us", 1),
    udp64_rx_pps: best(b, "udp64_rx_pps", 0),
    ...((notes.get(b) ?? []).length > 0 ? { notes: notes.get(b) } : {}),
  })), figures: figs }));
}
