import { readFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { formatIpv6 } from "../../src/common/ipv6.js";
import { Cluster } from "../../src/harness/cluster.js";
import { FLANNEL_SUBNET6, programFlannelNode } from "../helpers/flannel-node.js";

/**
 * Dual stack and IPv6 only, for real: nodes in namespaces with IPv4 and IPv6
 * underlays, a real etcd, pods on each node, and a node programmed by hand
 * as flanneld programs a dual-stack node. Every pod pair pings over both
 * families, both ways; iperf3 runs over IPv6 between nodes.
 */
const clusters: Cluster[] = [];
afterAll(async () => {
  for (const c of clusters) await c.destroy();
});

async function seesPeers(c: Cluster, nodes: number[], peers: number): Promise<void> {
  const end = Date.now() + 15_000;
  for (const i of nodes) {
    while ((await c.status(i)).peers.filter((p) => p.subnet6).length < peers) {
      if (Date.now() > end) throw new Error(`node ${i} did not program ${peers} IPv6 peers: ${JSON.stringify((await c.status(i)).peers)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function iperf6(c: Cluster, from: number, to: number): Promise<number> {
  const srv = c.node(to).pods[0]!;
  const server = srv.ns.spawn(["iperf3", "-s", "-1", "-B", formatIpv6(srv.addr6!)]);
  try {
    await new Promise((r) => setTimeout(r, 300));
    const out = JSON.parse(await c.node(from).pods[0]!.ns.exec(["iperf3", "-6", "-c", formatIpv6(srv.addr6!), "-t", "2", "-J"], { timeoutMs: 30_000 })) as {
      end: { sum_received: { bits_per_second: number } };
    };
    return out.end.sum_received.bits_per_second;
  } finally {
    server.kill();
  }
}

describe("dual stack on the kernel vxlan backend, with a flannel dual-stack node", () => {
  it("both devices, flannel's lease format, every pod pair over IPv4 and IPv6 both ways, iperf3 over IPv6", async () => {
    const c = await Cluster.create({ nodes: 3, podsPerNode: 2, manualNodes: [2], ipv6: true, agentArgs: ["--ip-masq"] });
    clusters.push(c);
    await programFlannelNode(c, 2, { ipv6: true });
    await c.addPods(c.node(2), c.node(2).subnet, 1430, c.node(2).subnet6);
    await seesPeers(c, [0, 1], 2);
    const st = await c.status(0);
    expect(st.subnet6).toMatch(/^2001:db8:1:[0-9a-f]+::\/64$/);
    expect(st.mtu).toBe(1430); // the smaller of the two devices: IPv6 underlay costs 20 bytes more
    expect(st.peers.find((p) => p.subnet6 === FLANNEL_SUBNET6)?.publicIpv6).toBe("2001:db8:ff::3");
    // The kernel objects flanneld would make on a dual-stack node.
    const [dev] = JSON.parse(await c.node(0).ns.ip("-d", "-j", "link", "show", "weft-v6.1")) as { mtu: number; linkinfo: { info_data: { local6: string; learning: boolean } } }[];
    expect(dev).toMatchObject({ mtu: 1430, linkinfo: { info_data: { local6: "2001:db8:ff::1", learning: false } } });
    expect(await c.node(0).ns.ip("-6", "route", "show", "dev", "weft-v6.1")).toMatch(new RegExp(`^${FLANNEL_SUBNET6} via 2001:db8:1:c8:: .*onlink`, "m"));
    expect(await c.node(0).ns.ip("-6", "neigh", "show", "dev", "weft-v6.1")).toMatch(/^2001:db8:1:c8:: lladdr 02:f1:a0:00:00:06 PERMANENT/m);
    expect(await c.node(0).ns.exec(["bridge", "fdb", "show", "dev", "weft-v6.1"])).toContain("dst 2001:db8:ff::3 self permanent");
    // Leases in etcd: flannel's dual-stack key and value.
    const reg = c.registry();
    try {
      const all = await reg.client.getAll().prefix("/coreos.com/network/subnets/").strings();
      const mine = Object.entries(all).find(([, v]) => v.includes('"PublicIP":"192.0.2.1"'));
      expect(mine?.[0]).toMatch(/\/subnets\/198\.18\.\d+\.0-24&2001:db8:1:[0-9a-f]+::-64$/);
      expect(JSON.parse(mine?.[1] ?? "{}")).toMatchObject({ PublicIPv6: "2001:db8:ff::1", BackendV6Data: { VNI: 1 } });
    } finally {
      reg.close();
    }
    expect(readFileSync(c.files(0).subnetFile, "utf8")).toMatch(/FLANNEL_IPV6_NETWORK=2001:db8:1::\/48\nFLANNEL_IPV6_SUBNET=2001:db8:1:[0-9a-f]+::1\/64\nFLANNEL_MTU=1430/);
    expect(await c.pingAll(4)).toEqual([]);
    expect(await c.pingAll(6)).toEqual([]);
    expect(await iperf6(c, 0, 1)).toBeGreaterThan(1e8);
    expect(await iperf6(c, 2, 0)).toBeGreaterThan(1e8); // from the flannel node's pod into weft
    // --ip-masq covers IPv6: the hub has no route to the pods' IPv6 network, so only a masqueraded
    // ping comes back, and the hub sees it from node 0's IPv6 underlay address.
    expect(await c.node(0).ns.exec(["nft", "list", "table", "ip6", "weft"])).toMatch(/ip6 saddr 2001:db8:1::\/48 ip6 daddr != ff00::\/8 masquerade/);
    await c.hub.exec(["nft", "-f", "-"], {
      input: "table ip6 wftsrc {\n set seen { type ipv6_addr; flags dynamic; }\n chain in {\n  type filter hook input priority 0; policy accept;\n  icmpv6 type echo-request update @seen { ip6 saddr }\n }\n}\n",
    });
    try {
      expect(await c.ping(c.node(0).pods[0]!, "2001:db8:ff::fe")).toBe(true);
      const doc = JSON.parse(await c.hub.exec(["nft", "-j", "list", "set", "ip6", "wftsrc", "seen"])) as { nftables: { set?: { elem?: string[] } }[] };
      expect(doc.nftables.flatMap((o) => o.set?.elem ?? [])).toEqual(["2001:db8:ff::1"]);
    } finally {
      await c.hub.exec(["nft", "delete", "table", "ip6", "wftsrc"]);
    }
  }, 180_000);
});

describe("dual stack on every backend", () => {
  it("ebpf, tun, kernel-vxlan and flannel dual-stack nodes: every pod pair over IPv4 and IPv6, iperf3 over IPv6 through each backend", async () => {
    const c = await Cluster.create({ nodes: 4, podsPerNode: 2, manualNodes: [3], ipv6: true, backend: ["ebpf", "tun", "vxlan", "vxlan"] });
    clusters.push(c);
    expect((await c.status(0)).backend).toBe("ebpf");
    expect((await c.status(1)).backend).toBe("tun");
    await programFlannelNode(c, 3, { ipv6: true });
    await c.addPods(c.node(3), c.node(3).subnet, 1430, c.node(3).subnet6);
    await seesPeers(c, [0, 1, 2], 3);
    expect(await c.pingAll(4)).toEqual([]);
    expect(await c.pingAll(6)).toEqual([]);
    // iperf3 over IPv6 into and out of each backend's node.
    for (const [from, to] of [[0, 2], [2, 0], [1, 2], [2, 1], [3, 0], [3, 1]] as const) expect(await iperf6(c, from, to), `${from} -> ${to}`).toBeGreaterThan(1e8);
  }, 240_000);
});

describe("IPv6 only: no IPv4 anywhere", () => {
  it("vxlan, tun and ebpf nodes and a flannel IPv6-only node: IPv6 underlay, etcd over IPv6, pods ping over IPv6", async () => {
    const c = await Cluster.create({ nodes: 4, podsPerNode: 1, manualNodes: [3], ipv6Only: true, backend: ["vxlan", "tun", "ebpf", "vxlan"] });
    clusters.push(c);
    await programFlannelNode(c, 3, { ipv6Only: true });
    await c.addPods(c.node(3), undefined, 1430, c.node(3).subnet6);
    await seesPeers(c, [0, 1, 2], 3);
    const st = await c.status(0);
    expect(st.subnet).toBeUndefined();
    expect(st.publicIp).toBe("0.0.0.0");
    expect(await c.node(0).ns.exec(["ip", "link", "show", "weft.1"]).catch(() => "absent")).toBe("absent");
    const reg = c.registry();
    try {
      const keys = Object.keys(await reg.client.getAll().prefix("/coreos.com/network/subnets/").strings());
      for (const k of keys) expect(k).toMatch(/\/subnets\/0\.0\.0\.0-0&2001:db8:1:[0-9a-f]+::-64$/);
    } finally {
      reg.close();
    }
    expect(readFileSync(c.files(0).subnetFile, "utf8")).not.toContain("FLANNEL_SUBNET=");
    expect(await c.pingAll(6)).toEqual([]);
  }, 180_000);
});
