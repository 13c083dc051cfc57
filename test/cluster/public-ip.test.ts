import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatCidr, formatIpv4, formatMac } from "../../src/common/ipv4.js";
import { Cluster } from "../../src/harness/cluster.js";

/**
 * `--public-ip`, for real: node 0's agent is given a second address of its
 * underlay interface (192.0.2.101; the interface's first is 192.0.2.1). It
 * publishes that address in its lease, the other node programs it as the
 * VXLAN destination, and the overlay traffic to node 0 really arrives at it
 * (counted by nftables in node 0's namespace), none at the interface's first
 * address. Node 0 also sends from that address (as flanneld does when the
 * address is on the interface): node 2 runs the ebpf backend, which accepts
 * overlay packets only from the address a node's lease names.
 */
const PUBLIC = "192.0.2.101";
let c: Cluster;

beforeAll(async () => {
  c = await Cluster.create({ nodes: 3, podsPerNode: 1, manualNodes: [0, 1, 2], backend: ["vxlan", "vxlan", "ebpf"] });
  await c.node(0).ns.ip("addr", "add", `${PUBLIC}/24`, "dev", "eth0");
  c.startAgent(0, ["--public-ip", PUBLIC]);
  c.startAgent(1);
  c.startAgent(2);
  for (const i of [0, 1, 2]) await c.waitReady(i);
  for (const i of [0, 1, 2]) await c.addPods(c.node(i));
  // Count VXLAN datagrams arriving at node 0, by destination address.
  await c.node(0).ns.exec(["nft", "-f", "-"], {
    input: `table ip weft_test {
      chain in { type filter hook prerouting priority -300; policy accept;
        udp dport 8472 ip daddr ${PUBLIC} counter
        udp dport 8472 ip daddr 192.0.2.1 counter
      }
    }\n`,
  });
}, 120_000);
afterAll(async () => {
  await c?.destroy();
});

async function vxlanCounts(): Promise<{ toPublic: number; toIface: number }> {
  const out = await c.node(0).ns.exec(["nft", "list", "chain", "ip", "weft_test", "in"]);
  const n = (addr: string): number => Number(new RegExp(`ip daddr ${addr.replace(/\./g, "\\.")} counter packets (\\d+)`).exec(out)?.[1] ?? NaN);
  return { toPublic: n(PUBLIC), toIface: n("192.0.2.1") };
}

describe("--public-ip", () => {
  it("is the PublicIP of the node's lease, and what the other node programs as its VXLAN destination", async () => {
    const st0 = await c.status(0);
    expect(st0.publicIp).toBe(PUBLIC);
    const reg = c.registry();
    try {
      const leases = (await reg.listLeases()).leases;
      const mine = leases.find((l) => formatCidr(l.subnet) === st0.subnet);
      expect(mine && formatIpv4(mine.attrs.publicIp)).toBe(PUBLIC);
      expect(mine && formatMac(mine.attrs.vtepMac)).toBe(st0.vtepMac);
    } finally {
      reg.close();
    }
    // Node 1: the FDB sends node 0's VTEP MAC to the public address; the neighbour entry gives its gateway that MAC.
    const fdb = await c.node(1).ns.exec(["bridge", "fdb", "show", "dev", "weft.1"]);
    expect(fdb).toContain(`${st0.vtepMac} dst ${PUBLIC} self permanent`);
    expect(fdb).not.toContain("dst 192.0.2.1 ");
    const gw = st0.subnet!.split("/")[0]!;
    expect(await c.node(1).ns.ip("neigh", "show", "dev", "weft.1")).toMatch(new RegExp(`^${gw.replace(/\./g, "\\.")} lladdr ${st0.vtepMac} PERMANENT`, "m"));
    expect((await c.status(1)).peers).toContainEqual({ subnet: st0.subnet, publicIp: PUBLIC, vtepMac: st0.vtepMac });
  });

  it("overlay traffic to the node arrives at that address, and pods reach each other both ways", async () => {
    const before = await vxlanCounts();
    const [p0, p1] = [c.node(0).pods[0]!, c.node(1).pods[0]!];
    // (ping exits non-zero unless every request is answered)
    await p1.ns.exec(["ping", "-c", "5", "-i", "0.05", "-W", "2", "-q", formatIpv4(p0.addr)]);
    await p0.ns.exec(["ping", "-c", "2", "-i", "0.05", "-W", "2", "-q", formatIpv4(p1.addr)]);
    const after = await vxlanCounts();
    expect(after.toPublic - before.toPublic).toBeGreaterThanOrEqual(7); // 5 requests + 2 replies
    expect(after.toIface - before.toIface).toBe(0);
  });

  it("node 0 sends from that address too, so an ebpf node (which checks the outer source against the lease) takes its traffic", async () => {
    const [p0, p2] = [c.node(0).pods[0]!, c.node(2).pods[0]!];
    await p0.ns.exec(["ping", "-c", "3", "-i", "0.05", "-W", "2", "-q", formatIpv4(p2.addr)]);
    await p2.ns.exec(["ping", "-c", "3", "-i", "0.05", "-W", "2", "-q", formatIpv4(p0.addr)]);
    expect((await c.status(2)).counters["bpf_unknown_node"] ?? 0).toBe(0);
    expect(await c.pingAll()).toEqual([]);
  });
});
