/**
 * The dataplane benchmark's figures (bench/report/schema.ts), each with its
 * baseline from the same run and the targets of the userspace path:
 *   vxlan, vxlan-routed: against direct routing;
 *   tun: against kernel vxlan (flannel's path);
 *   ebpf: against the better kernel path of the two for each figure.
 */
import type { Figure, Target } from "../report/schema.js";
import type { Sample } from "./measure.js";
import { KERNEL, type BenchBackend } from "./topology.js";

interface Metric {
  readonly key: keyof Sample;
  readonly id: string;
  readonly name: string;
  readonly unit: string;
  readonly higherIsBetter: boolean;
  readonly digits: number;
  /** Compared with a baseline (CPU per GB is not: only the agents' own). */
  readonly compared: boolean;
}

export const METRICS: readonly Metric[] = [
  { key: "gbps", id: "gbps", name: "one TCP stream, pod to pod", unit: "Gbit/s", higherIsBetter: true, digits: 2, compared: true },
  { key: "rttUs", id: "rtt_us", name: "ping RTT, pod to pod", unit: "µs", higherIsBetter: false, digits: 0, compared: true },
  { key: "agentCpuPerGb", id: "agent_cpu_s_per_gb", name: "agents' CPU per GB carried (one stream)", unit: "CPU s/GB", higherIsBetter: false, digits: 2, compared: false },
  { key: "gbps4", id: "gbps_4flows", name: "four TCP streams (iperf3 -P 4)", unit: "Gbit/s", higherIsBetter: true, digits: 2, compared: true },
  { key: "gbpsMss88", id: "gbps_mss88", name: "one TCP stream with MSS 88", unit: "Gbit/s", higherIsBetter: true, digits: 3, compared: true },
  { key: "rrP50Us", id: "rr_p50_us", name: "TCP request/response, 64 B (sockperf, half round trip), p50", unit: "µs", higherIsBetter: false, digits: 1, compared: true },
  { key: "rrP99Us", id: "rr_p99_us", name: "TCP request/response, 64 B (sockperf, half round trip), p99", unit: "µs", higherIsBetter: false, digits: 1, compared: true },
  { key: "udp64RxPps", id: "udp64_rx_pps", name: "64-byte UDP at full offered load, received", unit: "packets/s", higherIsBetter: true, digits: 0, compared: true },
];

/** The issue-14 goals of the userspace path and of ebpf, as targets on the figures. */
function targetOf(b: BenchBackend, id: string): Target | undefined {
  if (b === "tun") {
    if (id === "gbps" || id === "gbps_4flows") return { of: "ratio", op: ">=", value: 0.6 };
    if (id === "rr_p50_us") return { of: "ratio", op: ">=", value: 0.5 }; // p50 at most 2x kernel vxlan's
    if (id === "gbps_mss88") return { of: "ratio", op: ">=", value: 0.3 };
    if (id === "agent_cpu_s_per_gb") return { of: "value", op: "<=", value: 1.0 };
  }
  if (b === "ebpf") {
    if (id === "rr_p50_us") return { of: "ratio", op: ">=", value: 1.0 };
    if (id === "gbps") return { of: "ratio", op: ">=", value: 0.97 };
  }
  return undefined;
}

export type Rounds = ReadonlyMap<BenchBackend, readonly Sample[]>;

const values = (rs: readonly Sample[] | undefined, m: Metric): number[] =>
  (rs ?? []).map((s) => s[m.key]).filter((v): v is number => v !== undefined);

export function bestOf(rs: readonly Sample[] | undefined, m: Metric): number | undefined {
  const v = values(rs, m);
  if (v.length === 0) return undefined;
  return m.higherIsBetter ? Math.max(...v) : Math.min(...v);
}

/** The backend each figure of `b` is measured against, for metric `m`, among those in the run. */
export function baselineOf(b: BenchBackend, m: Metric, rounds: Rounds): BenchBackend | undefined {
  const has = (x: BenchBackend): boolean => values(rounds.get(x), m).length > 0;
  if (!m.compared) return undefined;
  if (b === "vxlan" || b === "vxlan-routed") return has("direct") ? "direct" : undefined;
  if (b === "tun") return has("vxlan") ? "vxlan" : undefined;
  if (b === "ebpf") {
    const kernel = KERNEL.filter(has);
    const better = (x: number, y: number): boolean => (m.higherIsBetter ? x > y : x < y);
    return kernel.reduce<BenchBackend | undefined>((acc, k) => (acc === undefined || better(bestOf(rounds.get(k), m)!, bestOf(rounds.get(acc), m)!) ? k : acc), undefined);
  }
  return undefined;
}

export function figures(backends: readonly BenchBackend[], rounds: Rounds): Figure[] {
  const out: Figure[] = [];
  for (const b of backends) {
    for (const m of METRICS) {
      if (b === "direct" && !m.compared) continue; // no agents
      const v = bestOf(rounds.get(b), m);
      if (v === undefined) continue;
      const r = (x: number): number => Math.round(x * 10 ** m.digits) / 10 ** m.digits;
      const base = baselineOf(b, m, rounds);
      const bv = base ? bestOf(rounds.get(base), m) : undefined;
      const target = targetOf(b, m.id);
      out.push({
        id: `${b}_${m.id}`, name: `${b}: ${m.name}`, unit: m.unit, value: r(v), higherIsBetter: m.higherIsBetter,
        rounds: values(rounds.get(b), m).map(r), summary: "best",
        ...(base && bv !== undefined ? { baseline: { name: base, value: r(bv), rounds: values(rounds.get(base), m).map(r) } } : {}),
        ...(target && (target.of === "value" || bv !== undefined) ? { target } : {}),
      });
    }
  }
  return out;
}
