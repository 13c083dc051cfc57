import type { SoakReport } from "./types.js";

/** The human summary: one row per fault kind (injected, observed, worst outage), then the violations. */
export function summaryTable(r: SoakReport): string {
  const kinds = Object.keys(r.fault_kinds) as (keyof SoakReport["fault_kinds"])[];
  const rows = kinds.map((k) => `${k.padEnd(19)}${String(r.fault_kinds[k] ?? 0).padStart(9)}${String(r.observed[k] ?? 0).padStart(10)}${String(r.max_outage_ms[k] ?? 0).padStart(16)}`);
  return [
    `soak: seed ${r.seed}, ${r.duration_s} s, nodes ${r.nodes.map((n) => n.backend).join(", ")}, ${r.pods} pods, ${r.pairs} pairs pinged every 200 ms`,
    `faults: ${r.faults}, up to ${r.overlap} in force at once; ${r.overlapped} began beside another (most at once: ${r.max_in_force})`,
    `${"fault".padEnd(19)}${"injected".padStart(9)}${"observed".padStart(10)}${"max outage ms".padStart(16)}`,
    ...rows,
    `checks: ${Object.entries(r.checks).map(([k, v]) => `${k} ${v}`).join(", ")}`,
    `dns: slowest node to follow a registry change ${r.dns_max_lag_ms} ms`,
    `memory: ${r.memory.length === 0 ? "no agent process ran long enough for a trend (60 s warm-up + 120 s)" : r.memory.map((m) => `node ${m.node} ${m.first_mib}->${m.last_mib} MiB (${m.slope_mib_per_min} MiB/min)`).join(", ")}`,
    `violations: ${r.violations}`,
    ...r.violation_list.map((v) => `  [${v.invariant}] ${(v.atMs / 1000).toFixed(1)} s: ${v.detail}`),
  ].join("\n");
}
