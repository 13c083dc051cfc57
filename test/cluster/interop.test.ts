import { afterAll, describe, expect, it } from "vitest";
import { formatIpv4 } from "../../src/common/ipv4.js";
import { Cluster } from "../../src/harness/cluster.js";
import { FLANNEL_MAC, FLANNEL_SUBNET, programFlannelNode } from "../helpers/flannel-node.js";

/**
 * Interop with flannel: one node runs no weft agent. The test programs it by
 * hand exactly as flanneld programs a vxlan node (device flannel.1, /32
 * address, permanent neighbour + FDB entry + onlink route per peer) and
 * writes its lease into etcd in flannel's format, reading the weft nodes'
 * leases with plain JSON.parse and flannel's field names. Traffic must flow
 * in every direction, with weft nodes on the kernel vxlan backend, and in a
 * mixed cluster of an ebpf node, a kernel-vxlan node, a tun node and the
 * flannel node.
 */
const clusters: Cluster[] = [];

afterAll(async () => {
  for (const c of clusters) await c.destroy();
});

/** The flannel node and its pods (on a cni0 bridge, as flannel's CNI config makes them). */
async function flannelNodeWithPods(c: Cluster, i: number): Promise<void> {
  await programFlannelNode(c, i);
  const n = c.node(i);
  await c.addPods(n, n.subnet, 1450);
}

async function weftNodesSee(c: Cluster, nodes: number[], peers: number): Promise<void> {
  const end = Date.now() + 10_000;
  for (const i of nodes) {
    while ((await c.status(i)).peers.length < peers) {
      if (Date.now() > end) throw new Error(`node ${i} did not program the flannel node`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect((await c.status(i)).peers.find((p) => p.subnet === FLANNEL_SUBNET)?.vtepMac).toBe(FLANNEL_MAC);
  }
}

describe("weft and flannel on one network", () => {
  it("kernel-vxlan weft nodes and a flannel-programmed node exchange traffic both ways", async () => {
    const c = await Cluster.create({ nodes: 3, podsPerNode: 1, manualNodes: [2] });
    clusters.push(c);
    await flannelNodeWithPods(c, 2);
    await weftNodesSee(c, [0, 1], 2);
    expect(await c.pingAll()).toEqual([]);
  }, 120_000);

  it("mixed: ebpf, kernel-vxlan and tun nodes and a flannel-programmed node reach each other in every direction", async () => {
    const c = await Cluster.create({ nodes: 4, podsPerNode: 2, manualNodes: [3], backend: ["ebpf", "vxlan", "tun", "vxlan"] });
    clusters.push(c);
    expect((await c.status(0)).backend).toBe("ebpf");
    expect((await c.status(1)).backend).toBe("vxlan");
    expect((await c.status(2)).backend).toBe("tun");
    await flannelNodeWithPods(c, 3);
    await weftNodesSee(c, [0, 1, 2], 3);
    expect(await c.pingAll()).toEqual([]);
    // Hosts too: each weft node's own stack reaches every other node's pods.
    for (const i of [0, 1, 2]) {
      for (const p of c.pods.filter((p) => p.node !== i)) {
        await c.node(i).ns.exec(["ping", "-c", "1", "-W", "2", "-q", formatIpv4(p.addr)]);
      }
    }
  }, 120_000);
});
