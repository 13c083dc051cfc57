import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatCidr, formatIpv4 } from "../../src/common/ipv4.js";
import { Cluster } from "../../src/harness/cluster.js";

/** Backend.DirectRouting: nodes on one L2 segment route to each other's pods without encapsulation. */
let c: Cluster;
beforeAll(async () => {
  c = await Cluster.create({ nodes: 3, podsPerNode: 1, directRouting: true });
}, 120_000);
afterAll(async () => {
  await c?.destroy();
});

describe("DirectRouting", () => {
  it("routes through the underlay interface, not the vxlan device, and every pod reaches every other", async () => {
    const routes = await c.node(0).ns.exec(["ip", "route", "show", "dev", "eth0"]);
    for (const i of [1, 2]) expect(routes).toContain(`${formatCidr(c.node(i).subnet!)} via ${formatIpv4(c.node(i).underlay)}`);
    expect((await c.node(0).ns.exec(["ip", "route", "show", "dev", "weft.1"])).trim()).toBe("");
    expect((await c.node(0).ns.exec(["ip", "neigh", "show", "dev", "weft.1"])).trim()).toBe("");
    expect(await c.pingAll()).toEqual([]);
  });

  it("the reconcile puts back a deleted direct route and removes one no lease names", async () => {
    const lost = formatCidr(c.node(1).subnet!);
    await c.node(0).ns.ip("route", "del", lost);
    await c.node(0).ns.ip("route", "add", "198.18.222.0/24", "via", "192.0.2.2", "dev", "eth0");
    const end = Date.now() + 15_000;
    for (;;) {
      const r = await c.node(0).ns.exec(["ip", "route", "show", "dev", "eth0"]);
      if (r.includes(lost) && !r.includes("198.18.222.0")) break;
      if (Date.now() > end) throw new Error(`not reconciled: ${r}`);
      await new Promise((res) => setTimeout(res, 200));
    }
    expect(await c.pingAll()).toEqual([]);
  }, 30_000);
});
