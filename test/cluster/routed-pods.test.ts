import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatIpv4 } from "../../src/common/ipv4.js";
import { Cluster } from "../../src/harness/cluster.js";

/**
 * Bridge-less pods over kernel vxlan (podWiring "routed", the ptp plugin's
 * wiring): the dataplane benchmark's vxlan-routed baseline, the bar for ebpf.
 */
let c: Cluster;
beforeAll(async () => {
  c = await Cluster.create({ nodes: 2, podsPerNode: 2, backend: "vxlan", podWiring: "routed" });
}, 120_000);
afterAll(async () => {
  await c?.destroy();
});

describe("routed pods (no cni0 bridge) on kernel vxlan", () => {
  it("reach each other on the node and across nodes, with a /32 route per pod and no bridge", async () => {
    expect(await c.pingAll()).toEqual([]);
    const n = c.node(0);
    expect(await n.ns.ip("-o", "link", "show", "type", "bridge")).toBe("");
    const routes = await n.ns.ip("route", "show", "dev", "p1");
    expect(routes.trim()).toBe(`${formatIpv4(n.pods[1]!.addr)} scope link src ${formatIpv4(n.subnet!.addr + 1)}`);
    expect((await n.pods[0]!.ns.ip("-o", "-4", "addr", "show", "dev", "eth0"))).toContain(`${formatIpv4(n.pods[0]!.addr)}/32`);
  });
});
