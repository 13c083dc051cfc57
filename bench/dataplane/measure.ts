/**
 * The dataplane benchmark's measurements between two pods, each with real
 * clients: iperf3 (one TCP stream, four streams, one stream with MSS 88, and
 * 64-byte UDP at full offered load), sockperf (TCP ping-pong of 64 B) and
 * ping. Each measurement fails loudly when its tool gives no result, and
 * says which.
 */
import { readFileSync } from "node:fs";
import type { Cluster, Pod } from "../../src/harness/cluster.js";
import { podAddress } from "../../src/harness/pod-wiring.js";

export const MEASURES = ["bulk", "flows4", "mss88", "rr", "udp64", "lat"] as const;
export type Measure = (typeof MEASURES)[number];
/** What a plain run measures ("lat" is the family comparison's request/response figure). */
export const DEFAULT_MEASURES: readonly Measure[] = ["bulk", "flows4", "mss88", "rr", "udp64"];

export interface Sample {
  /** One TCP stream (iperf3), Gbit/s received. */
  gbps?: number;
  /** CPU seconds per GB carried during the one-stream run: the whole machine, and the two agents. */
  cpuPerGb?: number;
  agentCpuPerGb?: number;
  /** ping RTT, µs (mean of 50). */
  rttUs?: number;
  /** Four TCP streams (iperf3 -P 4), Gbit/s received. */
  gbps4?: number;
  /** One TCP stream with MSS 88 (iperf3 -M 88), Gbit/s received. */
  gbpsMss88?: number;
  /** sockperf ping-pong over TCP, 64-byte messages: its latency (half the round trip), p50 and p99, µs. */
  rrP50Us?: number;
  rrP99Us?: number;
  /** 64-byte UDP datagrams at full offered load (iperf3 -u -b 0): what the server received, per second. */
  udp64RxPps?: number;
  /** qperf tcp_lat, 64-byte messages: mean one-way latency, µs (the request/response figure both families can be measured with). */
  latUs?: number;
}

/** The server pod's address in `family`; throws when it has none. */
function addressOf(p: Pod, family: 4 | 6): string {
  const a = podAddress(p, family);
  if (a === undefined) throw new Error(`bench:dataplane: pod ${p.ns.name} has no IPv${family} address`);
  return a;
}

/** Busy CPU time of the whole machine (user + nice + system + irq + softirq), in seconds. */
function busyCpuSeconds(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
  return ((f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0)) / 100;
}

/** CPU seconds (user + system, all threads) the agents of a cluster have used so far. */
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

interface IperfEnd {
  error?: string;
  end?: { sum_received?: { bits_per_second: number; bytes: number; seconds: number } };
}

/** Waits until something in `pod`'s namespace listens on TCP `port` (a fixed sleep loses the race on a loaded machine). */
async function listening(pod: Pod, port: number, what: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const out = await pod.ns.exec(["ss", "-Htln", `sport = :${port}`]).catch(() => "");
    if (out.trim() !== "") return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`bench:dataplane: the ${what} server in ${pod.ns.name} is not listening on port ${port} after 5 s`);
}

/** Stops a server and waits (up to 2 s) until it is gone, so that the next measurement's server owns the port. */
async function stop(srv: ReturnType<Pod["ns"]["spawn"]>): Promise<void> {
  if (srv.exitCode !== null || srv.signalCode !== null) return;
  const gone = new Promise<void>((r) => srv.once("exit", () => r()));
  srv.kill();
  await Promise.race([gone, new Promise((r) => setTimeout(r, 2000))]);
}

/** Runs the iperf3 client in `client` against a one-shot server in `server`; returns the receiver's sum. */
async function iperf(client: Pod, server: Pod, seconds: number, extra: readonly string[], what: string, family: 4 | 6): Promise<{ bitsPerSecond: number; bytes: number; seconds: number }> {
  const addr = addressOf(server, family);
  const srv = server.ns.spawn(["iperf3", "-s", "-1", "-B", addr]);
  try {
    await listening(server, 5201, "iperf3");
    const out = await client.ns.exec(["iperf3", "-c", addr, "-t", String(seconds), "-J", ...extra], { timeoutMs: (seconds + 20) * 1000 });
    const doc = JSON.parse(out) as IperfEnd;
    const rx = doc.end?.sum_received;
    if (doc.error !== undefined || !rx || !(rx.bytes > 0)) throw new Error(`bench:dataplane: iperf3 (${what}) gave no result: ${doc.error ?? out.slice(0, 300)}`);
    return { bitsPerSecond: rx.bits_per_second, bytes: rx.bytes, seconds: rx.seconds };
  } finally {
    await stop(srv);
  }
}

/** sockperf ping-pong; its "percentile 50.000 = x" lines, in µs. */
async function sockperf(client: Pod, server: Pod, seconds: number): Promise<{ p50: number; p99: number }> {
  const addr = addressOf(server, 4); // Debian's sockperf 3.7 has no IPv6: "lat" (qperf) compares the families
  const srv = server.ns.spawn(["sockperf", "server", "--tcp", "-i", addr, "-p", "11111"]);
  try {
    await listening(server, 11111, "sockperf");
    const out = await client.ns.exec(["sockperf", "ping-pong", "--tcp", "-i", addr, "-p", "11111", "-m", "64", "-t", String(seconds)], { timeoutMs: (seconds + 20) * 1000 });
    const pct = (p: string): number => Number(new RegExp(`percentile ${p} =\\s*([\\d.]+)`).exec(out)?.[1] ?? NaN);
    const r = { p50: pct("50\\.000"), p99: pct("99\\.000") };
    if (!Number.isFinite(r.p50) || !Number.isFinite(r.p99)) throw new Error(`bench:dataplane: sockperf gave no percentiles: ${out.slice(-400)}`);
    return r;
  } finally {
    await stop(srv);
  }
}

/** qperf tcp_lat with 64-byte messages: "latency = x us" (or ms), in µs. */
async function qperfLat(client: Pod, server: Pod, seconds: number, family: 4 | 6): Promise<number> {
  const srv = server.ns.spawn(["qperf", "--listen_port", "19765"]);
  try {
    await listening(server, 19765, "qperf");
    const out = await client.ns.exec(["qperf", "--listen_port", "19765", "-t", String(seconds), "-m", "64", addressOf(server, family), "tcp_lat"], { timeoutMs: (seconds + 20) * 1000 });
    const m = /latency\s*=\s*([\d.]+)\s*(us|ms)/.exec(out);
    if (!m) throw new Error(`bench:dataplane: qperf gave no latency: ${out.slice(-300)}`);
    return Number(m[1]) * (m[2] === "ms" ? 1000 : 1);
  } finally {
    await stop(srv);
  }
}

/** Every measurement asked for, pod 0 of node 0 -> pod 0 of node 1, over `family`. */
export async function measure(c: Cluster, seconds: number, what: ReadonlySet<Measure>, family: 4 | 6 = 4): Promise<Sample> {
  const client = c.node(0).pods[0]!;
  const server = c.node(1).pods[0]!;
  const s: Sample = {};
  if (what.has("bulk")) {
    const cpu0 = busyCpuSeconds();
    const agent0 = agentCpuSeconds(c);
    const r = await iperf(client, server, seconds, [], "one stream", family);
    const gb = r.bytes / 1e9;
    s.gbps = r.bitsPerSecond / 1e9;
    s.cpuPerGb = (busyCpuSeconds() - cpu0) / gb;
    s.agentCpuPerGb = (agentCpuSeconds(c) - agent0) / gb;
    const ping = await client.ns.exec(["ping", "-c", "50", "-i", "0.01", "-q", addressOf(server, family)]);
    const avgMs = Number(/= [\d.]+\/([\d.]+)\//.exec(ping)?.[1] ?? NaN);
    if (!Number.isFinite(avgMs)) throw new Error(`bench:dataplane: no RTT in ping's output: ${ping}`);
    s.rttUs = avgMs * 1000;
  }
  if (what.has("flows4")) s.gbps4 = (await iperf(client, server, seconds, ["-P", "4"], "four streams", family)).bitsPerSecond / 1e9;
  if (what.has("mss88")) s.gbpsMss88 = (await iperf(client, server, seconds, ["-M", "88"], "MSS 88", family)).bitsPerSecond / 1e9;
  if (what.has("lat")) s.latUs = await qperfLat(client, server, seconds, family);
  if (what.has("rr") && family === 4) {
    const r = await sockperf(client, server, seconds);
    s.rrP50Us = r.p50;
    s.rrP99Us = r.p99;
  }
  if (what.has("udp64")) {
    const r = await iperf(client, server, seconds, ["-u", "-l", "64", "-b", "0"], "64-byte UDP", family);
    s.udp64RxPps = r.bytes / 64 / r.seconds;
  }
  return s;
}
