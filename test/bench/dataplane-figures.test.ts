import { describe, expect, it } from "vitest";
import { baselineOf, figures, METRICS, type Rounds } from "../../bench/dataplane/figures.js";
import type { Sample } from "../../bench/dataplane/measure.js";
import type { BenchBackend } from "../../bench/dataplane/topology.js";
import { meetsTarget, ratioOf } from "../../bench/report/schema.js";

/** The dataplane benchmark's figures from recorded samples: baselines, ratios and the userspace path's targets. */
const s = (gbps: number, rr: number, cpu: number, extra: Partial<Sample> = {}): Sample => ({ gbps, rrP50Us: rr, rrP99Us: rr * 2, rttUs: rr * 2, agentCpuPerGb: cpu, ...extra });
const rounds: Rounds = new Map<BenchBackend, Sample[]>([
  ["direct", [s(12, 30, 0)]],
  ["vxlan", [s(10, 34, 0.01), s(11, 36, 0.01)]],
  ["vxlan-routed", [s(10.5, 32, 0.01)]],
  ["ebpf", [s(10.8, 33, 0.01)]],
  ["tun", [s(6, 80, 1.5), s(6.5, 70, 1.2, { gbpsMss88: 1.2 })]],
]);
const metric = (id: string) => METRICS.find((m) => m.id === id)!;
const fig = (id: string) => figures(["direct", "vxlan", "vxlan-routed", "ebpf", "tun"], rounds).find((f) => f.id === id)!;

describe("dataplane figures", () => {
  it.each([
    ["vxlan", "gbps", "direct"],
    ["vxlan-routed", "rr_p50_us", "direct"],
    ["tun", "gbps", "vxlan"],
    ["ebpf", "gbps", "vxlan"], // the better kernel path for bulk: vxlan's best round, 11
    ["ebpf", "rr_p50_us", "vxlan-routed"], // and for latency: 32 µs
    ["tun", "agent_cpu_s_per_gb", undefined],
    ["tun", "gbps_mss88", undefined], // vxlan has no MSS 88 round in this run
  ] as const)("%s %s is measured against %s", (b, id, want) => {
    expect(baselineOf(b, metric(id), rounds)).toBe(want);
  });

  it("takes each backend's best round, in the direction of the figure", () => {
    expect(fig("tun_gbps").value).toBe(6.5);
    expect(fig("tun_gbps").rounds).toEqual([6, 6.5]);
    expect(fig("tun_rr_p50_us").value).toBe(70);
    expect(fig("ebpf_gbps").baseline).toEqual({ name: "vxlan", value: 11, rounds: [10, 11] });
  });

  it("judges the goals: tun bulk 0.6x, p50 at most 2x, CPU 1.0 s/GB; ebpf p50 no worse than the best kernel path, bulk 0.97x", () => {
    expect(ratioOf(fig("tun_gbps"))).toBeCloseTo(6.5 / 11); // 0.59
    expect(meetsTarget(fig("tun_gbps"))).toBe(false);
    expect(meetsTarget(fig("tun_rr_p50_us"))).toBe(false); // 70 µs against vxlan's best 34: more than 2x
    expect(fig("tun_rr_p50_us").target).toEqual({ of: "ratio", op: ">=", value: 0.5 });
    expect(meetsTarget(fig("tun_agent_cpu_s_per_gb"))).toBe(false);
    expect(meetsTarget(fig("ebpf_rr_p50_us"))).toBe(false); // 33 against vxlan-routed's 32
    expect(meetsTarget(fig("ebpf_gbps"))).toBe(true); // 10.8 / 11 = 0.98
    expect(fig("tun_gbps_mss88").target).toBeUndefined(); // no baseline in the run: no ratio to judge
    expect(fig("direct_gbps").baseline).toBeUndefined();
    expect(figures(["direct"], rounds).some((f) => f.id === "direct_agent_cpu_s_per_gb")).toBe(false);
  });
});
