import { describe, expect, it } from "vitest";
import { hostIfName } from "../../src/cni/links.js";
import { duplicates, leftovers } from "../../src/harness/soak/checks.js";
import { inForce, Reachability, type Outage } from "../../src/harness/soak/reach.js";
import { Rng } from "../../src/harness/soak/rng.js";

/** The soak's invariant checkers on their own: each one flags what it must, and only that. */
describe("soak checkers", () => {
  it("duplicates: an address held by allocations on two nodes (or twice on one) is flagged; distinct addresses are not", () => {
    expect(duplicates([{ node: 0, containerId: "a", ip: "198.18.0.2" }, { node: 1, containerId: "b", ip: "198.18.1.2" }])).toEqual([]);
    expect(duplicates([{ node: 0, containerId: "a", ip: "198.18.0.2" }, { node: 1, containerId: "b", ip: "198.18.0.2" }]))
      .toEqual(["198.18.0.2 held by node 0/a and node 1/b"]);
    expect(duplicates([{ node: 2, containerId: "a", ip: "198.18.2.3" }, { node: 2, containerId: "c", ip: "198.18.2.3" }])).toHaveLength(1);
  });

  it("leftovers: allocations, veths and BPF endpoints without a live pod, and live pods without an allocation", () => {
    const live = new Map([[0, ["p1"]]]);
    const ok = { node: 0, allocations: ["p1"], veths: [hostIfName("weft", "p1", "eth0")], endpoints: 1 };
    expect(leftovers(live, [ok])).toEqual([]);
    const bad = leftovers(live, [{ node: 0, allocations: ["p1", "gone"], veths: [hostIfName("weft", "p1", "eth0"), hostIfName("weft", "gone", "eth0")], endpoints: 2 }]);
    expect(bad).toEqual([
      "node 0: IPAM allocation for gone, which no longer exists",
      `node 0: veth ${hostIfName("weft", "gone", "eth0")} belongs to no live pod`,
      "node 0: 2 BPF endpoints for 1 live pods",
    ]);
    expect(leftovers(live, [{ node: 0, allocations: [], veths: [], endpoints: undefined }])).toEqual(["node 0: live pod p1 has no IPAM allocation"]);
  });

  it("reachability: a pair silent past the threshold is down from its last reply; the next reply closes the outage", () => {
    const outages: Outage[] = [];
    const r = new Reachability(1000, (o) => outages.push(o));
    r.add("a->b", 0);
    r.reply("a->b", 200);
    expect(r.tick(1100)).toEqual([]);
    expect(r.tick(1300)).toEqual([{ pair: "a->b", startMs: 200 }]);
    expect(r.tick(1500)).toEqual([]); // reported once
    expect(r.down(1700)).toEqual([{ pair: "a->b", forMs: 1500 }]);
    r.reply("a->b", 2400);
    expect(outages).toEqual([{ pair: "a->b", startMs: 200, endMs: 2400 }]);
    expect(r.down(2500)).toEqual([]);
  });

  it("inForce: an outage belongs to every fault in force at its start (with slack before injection), else to none", () => {
    const faults = [{ startMs: 1000, settledMs: 5000 }, { startMs: 8000, settledMs: undefined }, { startMs: 4000, settledMs: 9000 }];
    expect(inForce(900, faults, 200)).toEqual([faults[0]]);
    expect(inForce(4999, faults, 200)).toEqual([faults[0], faults[2]]);
    expect(inForce(6000, faults, 200)).toEqual([faults[2]]);
    expect(inForce(9500, faults, 200)).toEqual([faults[1]]);
    expect(inForce(700, faults, 200)).toEqual([]);
    expect(inForce(3000, faults.slice(0, 2), 200)).toEqual([faults[0]]);
    expect(inForce(6000, faults.slice(0, 2), 200)).toEqual([]);
  });

  it("the schedule's generator is deterministic per seed", () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const c = new Rng(43);
    const xs = Array.from({ length: 20 }, () => a.int(0, 1000));
    expect(Array.from({ length: 20 }, () => b.int(0, 1000))).toEqual(xs);
    expect(Array.from({ length: 20 }, () => c.int(0, 1000))).not.toEqual(xs);
    expect(new Set(xs).size).toBeGreaterThan(10);
  });
});

describe("soak memory trend", () => {
  const series = (f: (t: number) => number, n = 300): [number, number][] => Array.from({ length: n }, (_, t) => [t, f(t)]);
  it("flat memory with noise and a single spike does not grow; a steady climb does; too few samples is no verdict", async () => {
    const { memoryTrend } = await import("../../src/harness/soak/memory.js");
    expect(memoryTrend(series((t) => 80 + ((t * 7) % 5) + (t === 190 ? 40 : 0)))?.grows).toBe(false);
    // Settling by a few MiB (what agents do in their first minutes) is no trend.
    expect(memoryTrend(series((t) => 90 - 5 * Math.exp(-t / 100)))?.grows).toBe(false);
    const climb = memoryTrend(series((t) => 80 + t * 0.2));
    expect(climb?.grows).toBe(true);
    expect(climb?.slopeMibPerMin).toBeCloseTo(12, 5);
    expect(memoryTrend(series((t) => 80 + t, 170))).toBeUndefined();
    // The warm-up (start-up growth) is left out.
    expect(memoryTrend(series((t) => (t < 60 ? 40 + t : 100)))?.grows).toBe(false);
  });
});
