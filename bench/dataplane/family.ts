/**
 * `bench:dataplane --family 6`: each backend's IPv6 figures against its own
 * IPv4 figures, both measured on one dual-stack cluster in the same run,
 * alternately. Goal (issue 15): IPv6 bulk and request/response within 0.9x
 * of IPv4. Best round of each family; the ratio is IPv6 / IPv4 for
 * throughput and IPv4 / IPv6 for latency, so > 1 means IPv6 did better.
 */
import type { Sample } from "./measure.js";

export const FAMILY_GOAL = 0.9;

export interface FamilyResult {
  readonly backend: string;
  readonly gbps_v4?: number;
  readonly gbps_v6?: number;
  readonly bulk_ratio?: number;
  readonly lat_us_v4?: number;
  readonly lat_us_v6?: number;
  readonly lat_ratio?: number;
  readonly rtt_us_v4?: number;
  readonly rtt_us_v6?: number;
  /** Every ratio measured is at or above FAMILY_GOAL. */
  readonly met: boolean | undefined;
}

const best = (xs: readonly Sample[] | undefined, pick: (s: Sample) => number | undefined, higher: boolean): number | undefined => {
  const v = (xs ?? []).map(pick).filter((x): x is number => x !== undefined && Number.isFinite(x));
  return v.length === 0 ? undefined : higher ? Math.max(...v) : Math.min(...v);
};
const r2 = (v: number | undefined): number | undefined => (v === undefined ? undefined : Math.round(v * 100) / 100);

export function familyReport(backends: readonly string[], v4: ReadonlyMap<string, Sample[]>, v6: ReadonlyMap<string, Sample[]>): { results: FamilyResult[]; lines: string[] } {
  const results: FamilyResult[] = [];
  const lines = ["", `IPv6 against IPv4 on the same cluster, best of the rounds (goal: >= ${FAMILY_GOAL}x):`];
  for (const b of backends) {
    const g4 = best(v4.get(b), (s) => s.gbps, true);
    const g6 = best(v6.get(b), (s) => s.gbps, true);
    const l4 = best(v4.get(b), (s) => s.latUs, false);
    const l6 = best(v6.get(b), (s) => s.latUs, false);
    const bulk = g4 && g6 !== undefined ? g6 / g4 : undefined;
    const lat = l4 !== undefined && l6 ? l4 / l6 : undefined;
    const ratios = [bulk, lat].filter((x): x is number => x !== undefined);
    const met = ratios.length === 0 ? undefined : ratios.every((x) => x >= FAMILY_GOAL);
    results.push({
      backend: b, gbps_v4: r2(g4), gbps_v6: r2(g6), bulk_ratio: r2(bulk), lat_us_v4: r2(l4), lat_us_v6: r2(l6), lat_ratio: r2(lat),
      rtt_us_v4: r2(best(v4.get(b), (s) => s.rttUs, false)), rtt_us_v6: r2(best(v6.get(b), (s) => s.rttUs, false)), met,
    });
    const part = (name: string, a: number | undefined, c: number | undefined, unit: string, ratio: number | undefined): string =>
      a === undefined || c === undefined ? "" : `${name} ${a.toFixed(2)} -> ${c.toFixed(2)} ${unit} (${ratio?.toFixed(2)}x)`;
    lines.push(`  ${b.padEnd(12)} ${[part("bulk", g4, g6, "Gbit/s", bulk), part("lat", l4, l6, "us", lat)].filter(Boolean).join("   ")}   ${met === undefined ? "" : met ? "met" : "MISSED"}`);
  }
  return { results, lines };
}
