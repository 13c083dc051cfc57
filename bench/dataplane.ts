/**
 * `npm run bench:dataplane -- --backends direct,vxlan --seconds 5 [--rounds 2] [--json]`
 *
 * Two nodes in network namespaces on one bridge, one pod each; per backend an
 * iperf3 single TCP stream pod -> pod and the ping RTT between the pods.
 * Backends are measured alternately, `rounds` times each, in the same run
 * (the machine is noisy); the best round of each is reported.
 *   direct: plain routing, no overlay (each node routes the other's pod subnet via its underlay address)
 *   vxlan:  two weft agents, kernel vxlan backend (flannel's data path)
 *   ebpf:   two weft agents, ebpf backend (tc programs, collect_md VXLAN device)
 */
import { readFileSync } from "node:fs";
import { formatIpv4, parseCidr } from "../src/common/ipv4.js";
import { Cluster } from "../src/harness/cluster.js";
import { start } from "../src/harness/exec.js";

const args = process.argv.slice(2);
const json = args.includes("--json");
const arg = (name: string, def: string): string => {
  const i = args.indexOf(name);
  return i >= 0 ? (args[i + 1] ?? def) : def;
};
const backends = arg("--backends", "direct,vxlan").split(",").map((s) => s.trim()).filter(Boolean);
const seconds = Number(arg("--seconds", "5"));
const rounds = Number(arg("--rounds", "2"));
const log = (s: string): void => (json ? console.error(s) : console.log(s));
const BUILT = ["direct", "vxlan", "ebpf"];
const LATER: Record<string, number> = { tun: 5 };

for (const b of backends) {
  if (!BUILT.includes(b)) {
    console.error(LATER[b] ? `bench:dataplane: backend ${b} is not built yet (issue ${LATER[b]})` : `bench:dataplane: unknown backend "${b}"; choose from ${BUILT.join(", ")}`);
    process.exit(LATER[b] ? 2 : 64);
  }
}

async function topology(backend: string): Promise<Cluster> {
  if (backend === "vxlan" || backend === "ebpf") return Cluster.create({ nodes: 2, podsPerNode: 1, backend });
  // direct: no agent; routes and pods by hand.
  const c = await Cluster.create({ nodes: 2, podsPerNode: 1, manualNodes: [0, 1] });
  for (const i of [0, 1]) {
    const n = c.node(i);
    n.subnet = parseCidr(`198.18.${i + 1}.0/24`);
    await c.addPods(n, n.subnet, 1500);
    const other = c.node(1 - i);
    await n.ns.ip("route", "add", `198.18.${2 - i}.0/24`, "via", formatIpv4(other.underlay), "dev", "eth0");
  }
  return c;
}

/** Busy CPU time of the whole machine (user + nice + system + irq + softirq), in seconds. */
function busyCpuSeconds(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
  return ((f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0)) / 100;
}

async function measure(c: Cluster): Promise<{ gbps: number; rttUs: number; cpuPerGb: number }> {
  const client = c.node(0).pods[0]!;
  const server = c.node(1).pods[0]!;
  const srv = start(["ip", "netns", "exec", server.ns.name, "iperf3", "-s", "-1", "-B", formatIpv4(server.addr)]);
  try {
    await new Promise((r) => setTimeout(r, 300));
    const cpu0 = busyCpuSeconds();
    const out = await client.ns.exec(["iperf3", "-c", formatIpv4(server.addr), "-t", String(seconds), "-J"], { timeoutMs: (seconds + 20) * 1000 });
    const cpu = busyCpuSeconds() - cpu0;
    const doc = JSON.parse(out) as { end: { sum_received: { bits_per_second: number; bytes: number } } };
    const ping = await client.ns.exec(["ping", "-c", "50", "-i", "0.01", "-q", formatIpv4(server.addr)]);
    const avgMs = Number(/= [\d.]+\/([\d.]+)\//.exec(ping)?.[1] ?? NaN);
    return { gbps: doc.end.sum_received.bits_per_second / 1e9, rttUs: avgMs * 1000, cpuPerGb: cpu / (doc.end.sum_received.bytes / 1e9) };
  } finally {
    srv.kill();
  }
}

const clusters = new Map<string, Cluster>();
const best = new Map<string, { gbps: number; rttUs: number; cpuPerGb: number }>();
try {
  for (const b of backends) clusters.set(b, await topology(b));
  for (let r = 0; r < rounds; r++) {
    for (const b of backends) {
      const m = await measure(clusters.get(b)!);
      log(`round ${r + 1} ${b.padEnd(7)} ${m.gbps.toFixed(2)} Gbit/s  rtt ${m.rttUs.toFixed(0)} us  cpu ${m.cpuPerGb.toFixed(2)} s/GB`);
      const prev = best.get(b);
      best.set(b, {
        gbps: Math.max(prev?.gbps ?? 0, m.gbps), rttUs: Math.min(prev?.rttUs ?? Infinity, m.rttUs), cpuPerGb: Math.min(prev?.cpuPerGb ?? Infinity, m.cpuPerGb),
      });
    }
  }
} finally {
  for (const c of clusters.values()) await c.destroy();
}

const base = best.get("direct")?.gbps;
log("\nbackend  Gbit/s (best)  rtt us (best)  machine CPU s/GB (best)  vs direct");
for (const b of backends) {
  const m = best.get(b)!;
  log(`${b.padEnd(9)}${m.gbps.toFixed(2).padStart(13)}${m.rttUs.toFixed(0).padStart(15)}${m.cpuPerGb.toFixed(2).padStart(25)}${base ? `${(m.gbps / base).toFixed(2)}x`.padStart(11) : ""}`);
}
if (json) {
  console.log(JSON.stringify({ results: backends.map((b) => {
    const m = best.get(b)!;
    return { backend: b, gbps: +m.gbps.toFixed(2), rtt_us: Math.round(m.rttUs), cpu_s_per_gb: +m.cpuPerGb.toFixed(2) };
  }) }));
}
