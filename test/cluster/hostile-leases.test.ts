import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatIpv4 } from "../../src/common/ipv4.js";
import { run } from "../../src/common/exec.js";
import { Cluster } from "../../src/harness/cluster.js";

/**
 * Leases written by someone who can write under the subnet prefix but is not
 * a node of this cluster (or is a broken one): on every backend, none of them
 * may become a route, a neighbour, an FDB entry, a BPF map entry or a WASM
 * table entry, and each is listed with its reason and counted. A well-formed
 * lease of a node that is not up yet (a positive control) is programmed.
 */
let c: Cluster;
const BACKENDS = ["vxlan", "ebpf", "tun"];
const VICTIM_MAC = "02:66:66:66:66:66";

beforeAll(async () => {
  c = await Cluster.create({ nodes: 3, podsPerNode: 1, backend: BACKENDS });
}, 120_000);
afterAll(async () => {
  await c?.destroy();
});

const value = (ip: string, opts: { vni?: number; mac?: string } = {}): string =>
  JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI: opts.vni ?? 1, VtepMAC: opts.mac ?? "02:aa:bb:cc:dd:01" } });

async function until(cond: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Routes in node i's pinned eBPF LPM map, as "a.b.c.d/len". */
async function bpfRoutes(i: number): Promise<string[]> {
  const out = await run(["bpftool", "-j", "map", "dump", "pinned", join(c.files(i).bpffs, "weft", "maps", "weft_routes")]);
  return (JSON.parse(out) as { key: string[] }[]).map(({ key }) => {
    const b = key.map((h) => parseInt(h, 16));
    return `${b.slice(4, 8).join(".")}/${b[0]}`;
  });
}

describe("hostile leases on a 3-node cluster (vxlan, ebpf, tun)", () => {
  it("are never programmed; each is listed with its reason, logged and counted; a good lease still is", async () => {
    const victim = formatIpv4(c.node(1).underlay); // node 1's real address
    const hostile: [string, string, string][] = [
      // key, value, reason
      ["169.254.169.254-32", value("192.0.2.200"), "subnet_outside_network"],
      ["10.0.0.0-8", value("192.0.2.201"), "subnet_outside_network"],
      ["198.18.200.0-24", value(victim, { mac: VICTIM_MAC }), "public_ip_taken"],
      ["198.18.201.0-24", value("192.0.2.202", { vni: 2 }), "vni_mismatch"],
      ["198.18.202.0-25", value("192.0.2.203"), "subnet_length"],
      ["198.18.203.0-24", value("198.18.9.9"), "public_ip_in_cluster"],
      ["198.18.204.0-24", "{not json", "bad_value"],
    ];
    const reg = c.registry();
    try {
      const etcdLease = await reg.grant(600);
      for (const [k, v] of hostile) await reg.client.put(`/coreos.com/network/subnets/${k}`).value(v).lease(etcdLease);
      // A node that is not up yet, announced correctly: the positive control.
      await reg.client.put("/coreos.com/network/subnets/198.18.210.0-24").value(value("192.0.2.99")).lease(etcdLease);
    } finally {
      reg.close();
    }

    for (let i = 0; i < 3; i++) {
      await until(async () => (await c.status(i)).rejectedLeaseCount === hostile.length && (await c.status(i)).peers.length === 3);
      const st = await c.status(i);
      // On node 1 the stolen address is its own.
      const want = hostile.map(([k, , r]): [string, string] => [k, i === 1 && r === "public_ip_taken" ? "public_ip_is_ours" : r]);
      expect(st.rejectedLeases.map((r) => [r.key, r.reason]).sort()).toEqual(want.sort());
      expect(st.peers.map((p) => p.subnet).sort()).toContain("198.18.210.0/24");
      expect(st.counters["peersProgrammed"]).toBe(3); // two real nodes + the control, on every backend
      const log = c.agentLog(i);
      for (const [k, reason] of want) {
        const lines = log.split("\n").filter((l) => l.includes(`"key":"${k}"`) && l.includes(`"reason":"${reason}"`));
        expect(lines, `${k} logged once on node ${i}`).toHaveLength(1);
      }
      const metrics = await c.node(i).ns.exec([process.execPath, "-e", 'fetch("http://127.0.0.1:9099/metrics").then(async (r) => console.log(await r.text()))']);
      expect(metrics).toMatch(/^weft_leases_rejected_total\{reason="subnet_outside_network"\} 2$/m);
      expect(metrics).toMatch(new RegExp(`^weft_leases_rejected_total\\{reason="${i === 1 ? "public_ip_is_ours" : "public_ip_taken"}"\\} 1$`, "m"));
    }

    // The kernel of the vxlan node: no route, neighbour or FDB entry for any of them.
    const n0 = c.node(0).ns;
    const routes = await n0.ip("route", "show");
    expect(routes).not.toMatch(/169\.254\.169\.254|10\.0\.0\.0|198\.18\.20[0-4]\./);
    expect(routes).toMatch(/198\.18\.210\.0\/24/);
    expect(await run(["bridge", "-n", c.node(0).ns.name, "fdb", "show", "dev", "weft.1"])).not.toContain(VICTIM_MAC);
    expect(await n0.ip("neigh", "show", "dev", "weft.1")).not.toContain(VICTIM_MAC);
    // The eBPF node's LPM map: the two real peers and the control only.
    const bpf = (await bpfRoutes(1)).sort();
    expect(bpf).toHaveLength(3);
    expect(bpf).toContain("198.18.210.0/24");
    expect(bpf.join(" ")).not.toMatch(/169\.254|10\.0\.0\.0|198\.18\.20[0-4]\./);
    // Traffic still flows everywhere.
    expect(await c.pingAll()).toEqual([]);
  });

  it("when the older lease of an address goes, the newer one for the same subnet takes its place on every backend", async () => {
    const reg = c.registry();
    try {
      const etcdLease = await reg.grant(600);
      await reg.client.put("/coreos.com/network/subnets/198.18.220.0-24").value(value("192.0.2.120", { mac: "02:00:00:00:01:20" })).lease(etcdLease);
      await reg.client.put("/coreos.com/network/subnets/198.18.220.0-24&fc00::-64").value(value("192.0.2.121", { mac: "02:00:00:00:01:21" })).lease(etcdLease);
      const via = async (i: number): Promise<string | undefined> => (await c.status(i)).peers.find((p) => p.subnet === "198.18.220.0/24")?.publicIp;
      for (let i = 0; i < 3; i++) await until(async () => (await via(i)) === "192.0.2.120");
      await reg.client.delete().key("/coreos.com/network/subnets/198.18.220.0-24");
      for (let i = 0; i < 3; i++) await until(async () => (await via(i)) === "192.0.2.121");
      expect(await c.node(0).ns.ip("neigh", "show", "dev", "weft.1")).toContain("02:00:00:00:01:21");
      expect(await c.node(0).ns.ip("neigh", "show", "dev", "weft.1")).not.toContain("02:00:00:00:01:20");
    } finally {
      reg.close();
    }
  });
});
