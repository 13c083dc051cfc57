import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatIpv4, parseCidr } from "../../src/common/ipv4.js";
import { Cluster } from "../../src/harness/cluster.js";
import type { SubnetRegistry } from "../../src/subnet/registry.js";

/**
 * Interop with flannel: node 2 runs no weft agent. The test programs it by
 * hand exactly as flanneld programs a vxlan node (device flannel.1, /32
 * address, permanent neighbour + FDB entry + onlink route per peer) and
 * writes its lease into etcd in flannel's format, reading the weft nodes'
 * leases with plain JSON.parse and flannel's field names. Traffic must flow
 * in every direction.
 */
let c: Cluster;
let reg: SubnetRegistry;
const FLANNEL_MAC = "02:f1:a0:00:00:03";
const FLANNEL_SUBNET = "198.18.200.0/24";

beforeAll(async () => {
  c = await Cluster.create({ nodes: 3, podsPerNode: 1, manualNodes: [2] });
  reg = c.registry();
}, 120_000);

afterAll(async () => {
  reg?.close();
  await c?.destroy();
});

describe("weft nodes and a flannel-programmed node", () => {
  it("exchange traffic both ways", async () => {
    const n = c.node(2);
    const pub = formatIpv4(n.underlay);
    // The kernel side, as flanneld's vxlan backend does it.
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

    // The weft nodes pick the flannel lease up from their watch.
    const end = Date.now() + 10_000;
    while ((await c.status(0)).peers.length < 2 || (await c.status(1)).peers.length < 2) {
      if (Date.now() > end) throw new Error("weft nodes did not program the flannel node");
      await new Promise((r) => setTimeout(r, 100));
    }
    expect((await c.status(0)).peers.find((p) => p.subnet === FLANNEL_SUBNET)?.vtepMac).toBe(FLANNEL_MAC);
    expect(await c.pingAll()).toEqual([]);
  }, 60_000);
});
