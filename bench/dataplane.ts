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
 *   tun:    two weft agents, tun backend (userspace: TUN device, WASM encap/decap, UDP sockets)
 * Besides throughput and RTT it reports CPU seconds per GB: of the whole
 * machine, and of the two agents (the tun backend's packet work is theirs).
 */
import { readFileSync } from "node:fs";
import { formatIpv4, parseCidr } from "../src/common/ipv4.js";
import { Cluster } from "../src/harness/cluster.js";
import { start } from "../src/common/exec.js";
import { benchArgs } from "./args.js";
import type { Figure } from "./report/schema.js";

const BUILT = ["direct", "vxlan", "ebpf", "tun"];
const args = benchArgs("bench:dataplane", {
  json: { type: "boolean", help: "print one JSON document as the last line" },
  backends: { type: "string", default: "direct,vxlan", choices: BUILT, list: true, help: "comma-separated backends" },
  seconds: { type: "number", default: 5, min: 1, integer: true, help: "iperf3 seconds per backend per round" },
  rounds: { type: "number", default: 2, min: 1, integer: true, help: "rounds, alternating the backends" },
});
const json = args.json;
const backends = args.backends.split(",").map((s) => s.trim()).filter(Boolean);
const seconds = args.seconds;
const rounds = args.rounds;
const log = (s: string): void => (json ? console.error(s) : console.log(s));

async function topology(backend: string): Promise<Cluster> {
  if (backend !== "direct") return Cluster.create({ nodes: 2, podsPerNode: 1, backend });
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

/**
 * What a backend's run silently lacks, read from its agents: the backend each
 * node actually runs (a different one fails the run: the figures would carry
 * the wrong name), ebpf programs attached with tc filters instead of tcx
 * links, tun offloads the kernel refused, and any warning the agents logged.
 * Each becomes a note printed with the results and listed in the JSON.
 */
async function fallbacks(c: Cluster, backend: string): Promise<string[]> {
  const notes: string[] = [];
  for (const n of c.nodes) {
    if (!n.agent) continue;
    const st = await c.status(n.index);
    if (st.backend !== backend) throw new Error(`bench:dataplane: node ${n.index} runs the ${st.backend} backend, not ${backend} (${st.backendChoice})`);
    for (const line of c.agentLog(n.index).split("\n")) {
      if (!line.startsWith("{")) continue;
      const o = JSON.parse(line) as { level?: number; msg?: string; offloads?: Record<string, boolean> };
      if (o.msg === "tun data path ready" && o.offloads) {
        const off = Object.entries(o.offloads).filter(([, on]) => !on).map(([k]) => k);
        if (off.length > 0) notes.push(`${backend}: node ${n.index} runs without the ${off.join(", ")} offload(s) (the slow path)`);
      } else if ((o.level ?? 0) >= 40) {
        notes.push(`${backend}: node ${n.index}'s agent warned: ${o.msg}`);
      }
    }
  }
  return [...new Set(notes)];
}

/** Busy CPU time of the whole machine (user + nice + system + irq + softirq), in seconds. */
function busyCpuSeconds(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
  return ((f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0)) / 100;
}

/** CPU seconds (user + system) the agents of a cluster have used so far. */
function agentCpuSeconds(c: Cluster): number {
  let ticks = 0;
  for (const n of c.nodes) {
    const pid = n.agent?.pid;
    if (pid === undefined) continue;
    try {
      const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
      ticks += Number(f[11] ?? 0) + Number(f[12] ?? 0); // utime, stime
    } catch {
      // the agent is gone
    }
  }
  return ticks / 100;
}

async function measure(c: Cluster): Promise<{ gbps: number; rttUs: number; cpuPerGb: number; agentCpuPerGb: number }> {
  const client = c.node(0).pods[0]!;
  const server = c.node(1).pods[0]!;
  const srv = start(["ip", "netns", "exec", server.ns.name, "iperf3", "-s", "-1", "-B", formatIpv4(server.addr)]);
  try {
    await new Promise((r) => setTimeout(r, 300));
    const cpu0 = busyCpuSeconds();
    const agent0 = agentCpuSeconds(c);
    const out = await client.ns.exec(["iperf3", "-c", formatIpv4(server.addr), "-t", String(seconds), "-J"], { timeoutMs: (seconds + 20) * 1000 });
    const cpu = busyCpuSeconds() - cpu0;
    const agentCpu = agentCpuSeconds(c) - agent0;
    const doc = JSON.parse(out) as { error?: string; end?: { sum_received?: { bits_per_second: number; bytes: number } } };
    const rx = doc.end?.sum_received;
    if (doc.error !== undefined || !rx || !(rx.bytes > 0)) throw new Error(`bench:dataplane: iperf3 gave no result: ${doc.error ?? out.slice(0, 300)}`);
    const ping = await client.ns.exec(["ping", "-c", "50", "-i", "0.01", "-q", formatIpv4(server.addr)]);
    const avgMs = Number(/= [\d.]+\/([\d.]+)\//.exec(ping)?.[1] ?? NaN);
    if (!Number.isFinite(avgMs)) throw new Error(`bench:dataplane: no RTT in ping's output: ${ping}`);
    const gb = rx.bytes / 1e9;
    return { gbps: rx.bits_per_second / 1e9, rttUs: avgMs * 1000, cpuPerGb: cpu / gb, agentCpuPerGb: agentCpu / gb };
  } finally {
    srv.kill();
  }
}

const clusters = new Map<string, Cluster>();
const best = new Map<string, { gbps: number; rttUs: number; cpuPerGb: number; agentCpuPerGb: number }>();
const notes = new Map<string, string[]>();
/** Every round of every backend, for the report's spread. */
const all = new Map<string, { gbps: number; rttUs: number; cpuPerGb: number; agentCpuPerGb: number }[]>();
try {
  for (const b of backends) clusters.set(b, await topology(b));
  for (let r = 0; r < rounds; r++) {
    for (const b of backends) {
      const m = await measure(clusters.get(b)!);
      log(`round ${r + 1} ${b.padEnd(7)} ${m.gbps.toFixed(2)} Gbit/s  rtt ${m.rttUs.toFixed(0)} us  cpu ${m.cpuPerGb.toFixed(2)} s/GB  agents ${m.agentCpuPerGb.toFixed(2)} s/GB`);
      all.set(b, [...(all.get(b) ?? []), m]);
      const prev = best.get(b);
      best.set(b, {
        gbps: Math.max(prev?.gbps ?? 0, m.gbps), rttUs: Math.min(prev?.rttUs ?? Infinity, m.rttUs), cpuPerGb: Math.min(prev?.cpuPerGb ?? Infinity, m.cpuPerGb),
        agentCpuPerGb: Math.min(prev?.agentCpuPerGb ?? Infinity, m.agentCpuPerGb),
      });
    }
  }
  for (const [b, c] of clusters) notes.set(b, await fallbacks(c, b));
} finally {
  for (const c of clusters.values()) await c.destroy();
}

const base = best.get("direct")?.gbps;
const vx = best.get("vxlan")?.gbps;
log("\nbackend  Gbit/s (best)  rtt us (best)  machine CPU s/GB  agents CPU s/GB  vs direct  vs vxlan");
for (const b of backends) {
  const m = best.get(b)!;
  log(`${b.padEnd(9)}${m.gbps.toFixed(2).padStart(13)}${m.rttUs.toFixed(0).padStart(15)}${m.cpuPerGb.toFixed(2).padStart(18)}${m.agentCpuPerGb.toFixed(2).padStart(17)}` +
    `${base ? `${(m.gbps / base).toFixed(2)}x`.padStart(11) : "".padStart(11)}${vx ? `${(m.gbps / vx).toFixed(2)}x`.padStart(10) : ""}`);
}
const allNotes = backends.flatMap((b) => notes.get(b) ?? []);
log(allNotes.length === 0 ? "\nno fallbacks: every backend ran as asked, with no agent warnings" : `\nNOTE, these runs were not as asked:\n${allNotes.map((n) => `  ${n}`).join("\n")}`);
if (json) {
  // The baseline of each overlay backend: kernel vxlan (flannel's data path); of vxlan itself: direct routing.
  const baseOf = (b: string): string | undefined => (b === "vxlan" ? (backends.includes("direct") ? "direct" : undefined) : b === "direct" ? undefined : backends.includes("vxlan") ? "vxlan" : undefined);
  const r2 = (x: number): number => Math.round(x * 100) / 100;
  const figures: Figure[] = backends.flatMap((b): Figure[] => {
    const m = best.get(b)!;
    const rs = all.get(b) ?? [];
    const base = baseOf(b);
    const bm = base ? best.get(base) : undefined;
    const brs = base ? all.get(base) ?? [] : [];
    const bulk: Figure = {
      id: `${b}_gbps`, name: `${b}: one TCP stream, pod to pod`, unit: "Gbit/s", value: r2(m.gbps), higherIsBetter: true, rounds: rs.map((x) => r2(x.gbps)), summary: "best",
      ...(bm && base ? { baseline: { name: base, value: r2(bm.gbps), rounds: brs.map((x) => r2(x.gbps)) } } : {}),
      ...(b === "tun" && bm ? { target: { of: "ratio", op: ">=", value: 0.6 } as const } : {}),
    };
    const rtt: Figure = {
      id: `${b}_rtt_us`, name: `${b}: ping RTT, pod to pod`, unit: "µs", value: Math.round(m.rttUs), higherIsBetter: false, rounds: rs.map((x) => Math.round(x.rttUs)), summary: "best",
      ...(bm && base ? { baseline: { name: base, value: Math.round(bm.rttUs), rounds: brs.map((x) => Math.round(x.rttUs)) } } : {}),
    };
    const cpu: Figure = {
      id: `${b}_agent_cpu_s_per_gb`, name: `${b}: agents' CPU per GB carried`, unit: "CPU s/GB", value: r2(m.agentCpuPerGb), higherIsBetter: false,
      rounds: rs.map((x) => r2(x.agentCpuPerGb)), summary: "best",
    };
    return b === "direct" ? [bulk, rtt] : [bulk, rtt, cpu];
  });
  console.log(JSON.stringify({ results: backends.map((b) => {
    const m = best.get(b)!;
    return {
      backend: b, gbps: +m.gbps.toFixed(2), rtt_us: Math.round(m.rttUs), cpu_s_per_gb: +m.cpuPerGb.toFixed(2), agent_cpu_s_per_gb: +m.agentCpuPerGb.toFixed(2),
      ...((notes.get(b) ?? []).length > 0 ? { notes: notes.get(b) } : {}),
    };
  }), figures }));
}
