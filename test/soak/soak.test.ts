import { appendFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { formatIpv4 } from "../../src/common/ipv4.js";
import { runSoak } from "../../src/harness/soak/runner.js";
import { summaryTable } from "../../src/harness/soak/report.js";
import { FAULT_KINDS } from "../../src/harness/soak/types.js";

/**
 * The chaos soak, seeded: 30 s of faults on an ebpf/tun/vxlan cluster with
 * CNI pods, a flannel-programmed node and a 3-member etcd, no violation, and every fault kind the schedule drew injected
 * and seen to take effect. Then the same harness with things broken on
 * purpose, to show each invariant can fail.
 */
const SEED = Number(process.env["WEFT_SOAK_SEED"] ?? 20261128);

describe("chaos soak", () => {
  it("30 s seeded, up to two faults in force at once: faults injected and observed, some overlapping, no violation", async () => {
    const lines: string[] = [];
    const r = await runSoak({ seconds: 30, seed: SEED, overlap: 2, log: (l) => lines.push(l) });
    const table = summaryTable(r);
    expect(r.violation_list, `${table}\n${lines.join("\n")}`).toEqual([]);
    expect(r.violations).toBe(0);
    // A soak that injects nothing must fail; every kind the schedule drew was injected and took effect.
    expect(r.faults).toBeGreaterThanOrEqual(4);
    expect(Object.keys(r.fault_kinds).length).toBeGreaterThanOrEqual(4);
    for (const [k, n] of Object.entries(r.fault_kinds)) {
      expect(FAULT_KINDS).toContain(k);
      expect(r.observed[k as keyof typeof r.observed], `${k} was not observed every time`).toBe(n);
    }
    expect(r.duration_s).toBeGreaterThanOrEqual(30);
    // Faults overlapped, never more than asked; the timeline names every fault.
    expect(r.overlap).toBe(2);
    expect(r.overlapped).toBeGreaterThanOrEqual(1);
    expect(r.max_in_force).toBe(2);
    expect(r.fault_list.length).toBe(r.faults);
    expect(r.checks["unique-address"]).toBeGreaterThanOrEqual(25);
    expect(r.checks.reachability).toBeGreaterThanOrEqual(100);
    // 6 CNI pods on the weft nodes and 1 on the node programmed as flanneld programs one: 7 x 6 pairs.
    expect(r.pairs).toBe(42);
    expect(r.nodes.map((n) => n.backend)).toEqual(["ebpf", "tun", "vxlan", "flannel (by hand)", "tun (steady)"]);
  }, 240_000);

  it("each invariant fails when broken on purpose: a stray veth, a pair's packets dropped, an address in two nodes' IPAM, a node's DNS unreachable", async () => {
    let dropped = "";
    const r = await runSoak({
      seconds: 8, seed: 1, kinds: ["cni-burst", "registry-churn"], graceMs: 4000,
      afterSetup: async (c, pods) => {
        // leftovers: a veth named as weft names a pod's, with no pod.
        await c.node(0).ns.ip("link", "add", "wv0123456789a", "type", "veth", "peer", "name", "wftstray");
        // reachability: node 2 forwards nothing from one pod of node 0.
        const from = pods.find((p) => p.node === 0)!;
        dropped = formatIpv4(from.addr);
        await c.node(2).ns.exec(["nft", "add", "table", "inet", "wftsab"]);
        await c.node(2).ns.exec(["nft", "add", "chain", "inet", "wftsab", "in", "{", "type", "filter", "hook", "prerouting", "priority", "0", ";", "}"]);
        await c.node(2).ns.exec(["nft", "add", "rule", "inet", "wftsab", "in", "ip", "saddr", dropped, "drop"]);
        // dns: node 2 drops DNS queries to its own DNS server.
        await c.node(2).ns.exec(["nft", "add", "chain", "inet", "wftsab", "out", "{", "type", "filter", "hook", "output", "priority", "0", ";", "}"]);
        await c.node(2).ns.exec(["nft", "add", "rule", "inet", "wftsab", "out", "udp", "dport", "53", "drop"]);
        // unique-address: node 1's IPAM journal gains an allocation of a node 0 pod's address.
        await c.stopAgent(1, "SIGKILL");
        const journal = join(c.files(1).stateDir, "ipam", "journal");
        const line = readFileSync(journal, "utf8").split("\n").find((l) => l.includes('"op":"add"'))!;
        const rec = JSON.parse(line) as { s: number; a: Record<string, unknown> };
        appendFileSync(journal, `${JSON.stringify({ s: rec.s + 1000, op: "add", a: { ...rec.a, ip: dropped, containerId: "sabotage" } })}\n`);
        c.startAgent(1);
        await c.waitReady(1);
      },
    });
    const by = (inv: string): string[] => r.violation_list.filter((v) => v.invariant === inv).map((v) => v.detail);
    expect(by("leftovers").join("\n")).toContain("veth wv0123456789a belongs to no live pod");
    expect(by("reachability").join("\n")).toContain(`${dropped}->`);
    expect(by("unique-address").join("\n")).toContain(`${dropped} held by node 0/`);
    expect(by("dns").join("\n")).toMatch(/node 2: dig failed/);
    expect(r.fault_kinds["registry-churn"]).toBeGreaterThanOrEqual(1);
    expect(r.violations).toBe(r.violation_list.length);
  }, 240_000);
});
