import { afterAll, describe, expect, it } from "vitest";
import { formatIpv4, parseCidr } from "../../src/common/ipv4.js";
import { Cluster } from "../../src/harness/cluster.js";

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
const FLANNEL_MAC = "02:f1:a0:00:00:03";
const FLANNEL_SUBNET = "198.18.200.0/24";
const clusters: Cluster[] = [];

afterAll(async () => {
  for (const c of clusters) await c.destroy();
});

async function programFlannelNode(c: Cluster, i: number): Promise<void> {
  const reg = c.registry();
  try {
    const n = c.node(i);
    const pub = formatIpv4(n.underlay);
    await n.ns.ip("link", "add", "flannel.1", "address", FLANNEL_MAC, "type", "vxlan", "id", "1", "local", pub,
      "dev", "eth0", "dstport", "8472", "nolearning");
    await n.ns.ip("link", "set", "flannel.1", "mtu", "1450", "up");
    await n.ns.ip("addr", "add", "198.18.200.0/32", "dev", "flannel.1");
    // The lease, as flanneld's etcd registry writes it: a 24 h etcd lease, created only if absent.
    const lease = await reg.grant(86400);
    const key = "/coreos.com/network/subnets/198.18.200.0-24";
    const value = JSON.stringify({ PublicIP: pub, PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: FLANNEL_MAC } });
    const txn = await reg.client.if(key, "Version", "==", 0).then(reg.client.put(key).value(value).lease(lease)).commit();
    expect(txn.succeeded).toBe(true);
    // Its peers, read the way flannel reads them.
    const all = await reg.client.getAll().prefix("/coreos.com/network/subnets/").strings();
    for (const [k, v] of Object.entries(all)) {
      const m = /(\d+\.\d+\.\d+\.\d+)-(\d+)$/.exec(k);
      const attrs = JSON.parse(v) as { PublicIP: string; BackendType: string; BackendData: { VNI: number; VtepMAC: string } };
      if (!m || attrs.PublicIP === pub) continue;
      expect(attrs.BackendType).toBe("vxlan");
      expect(attrs.BackendData.VNI).toBe(1);
      await n.ns.ip("neigh", "replace", m[1]!, "lladdr", attrs.BackendData.VtepMAC, "dev", "flannel.1", "nud", "permanent");
      await n.ns.exec(["bridge", "fdb", "replace", attrs.BackendData.VtepMAC, "dev", "flannel.1", "dst", attrs.PublicIP, "self", "permanent"]);
      await n.ns.ip("route", "replace", `${m[1]}/${m[2]}`, "via", m[1]!, "dev", "flannel.1", "onlink");
    }
    n.subnet = parseCidr(FLANNEL_SUBNET);
    await c.addPods(n, n.subnet, 1450);
  } finally {
    reg.close();
  }
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
    await programFlannelNode(c, 2);
    await weftNodesSee(c, [0, 1], 2);
    expect(await c.pingAll()).toEqual([]);
  }, 120_000);

  it("mixed: ebpf, kernel-vxlan and tun nodes and a flannel-programmed node reach each other in every direction", async () => {
    const c = await Cluster.create({ nodes: 4, podsPerNode: 2, manualNodes: [3], backend: ["ebpf", "vxlan", "tun", "vxlan"] });
    clusters.push(c);
    expect((await c.status(0)).backend).toBe("ebpf");
    expect((await c.status(1)).backend).toBe("vxlan");
    expect((await c.status(2)).backend).toBe("tun");
    await programFlannelNode(c, 3);
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
