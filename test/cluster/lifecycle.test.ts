import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatCidr, formatIpv4 } from "../../src/common/ipv4.js";
import { Cluster } from "../../src/harness/cluster.js";
import { PingProbe } from "../../src/harness/probe.js";
import type { Netns } from "../../src/harness/netns.js";
import type { SubnetRegistry } from "../../src/subnet/registry.js";

/**
 * One 3-node cluster (kernel vxlan backend) taken through what happens to a
 * running cluster: leases revoked, agents restarted under traffic, etcd gone
 * for 30 s, devices deleted, garbage in etcd. Short lease TTLs (20 s, renewed
 * 15 s before expiry) so that renewals happen during the test.
 */
let c: Cluster;
let reg: SubnetRegistry;

beforeAll(async () => {
  c = await Cluster.create({
    nodes: 3, podsPerNode: 1,
    agentArgs: ["--subnet-lease-ttl", "20", "--subnet-lease-renew-margin", "15", "--ip-masq"],
  });
  reg = c.registry();
}, 120_000);

afterAll(async () => {
  reg?.close();
  await c?.destroy();
});

async function until(what: string, cond: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond().catch(() => false))) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const routesOf = async (i: number): Promise<string> => c.node(i).ns.exec(["ip", "route", "show", "dev", "weft.1"]);
const neighOf = async (i: number): Promise<string> => c.node(i).ns.exec(["ip", "neigh", "show", "dev", "weft.1"]);
const fdbOf = async (i: number): Promise<string> => c.node(i).ns.exec(["bridge", "fdb", "show", "dev", "weft.1"]);
const subnetOf = (i: number): string => formatCidr(c.node(i).subnet!);

describe("a running cluster", () => {
  it("every pod reaches every other pod", async () => {
    expect(await c.pingAll()).toEqual([]);
  });

  it("a node's lease revoked (agent stopped): the others remove its route, neighbour and FDB entry", async () => {
    const gone = c.node(2);
    const mac = (await c.status(2)).vtepMac!;
    await c.stopAgent(2, "SIGTERM");
    const lease = (await reg.listLeases()).leases.find((l) => l.attrs.publicIp === gone.underlay)!;
    await reg.revoke(lease.leaseId);
    for (const i of [0, 1]) {
      await until(`node ${i} drops ${subnetOf(2)}`, async () => !(await routesOf(i)).includes(subnetOf(2).split("/")[0]!));
      expect(await neighOf(i)).not.toContain(mac);
      expect(await fdbOf(i)).not.toContain(mac);
      expect((await c.status(i)).peers.map((p) => p.subnet)).not.toContain(subnetOf(2));
    }
    // It comes back with the subnet from its subnet file, and is reachable again.
    const before = subnetOf(2);
    c.startAgent(2);
    await c.waitReady(2);
    expect(subnetOf(2)).toBe(before);
    await until("pods reach node 2 again", async () => (await c.pingAll()).length === 0);
  }, 60_000);

  it("an agent restarted under a ping every 10 ms loses nothing from stop to ready and keeps its subnet", async () => {
    const from = c.node(0).pods[0]!;
    const to = c.node(1).pods[0]!;
    const probe = await PingProbe.start(from.ns, to.addr, { intervalSec: 0.01, deadlineSec: 40 });
    try {
      await new Promise((r) => setTimeout(r, 300));
      const before = subnetOf(1);
      const w = await probe.across(() => c.stopAgent(1, "SIGTERM"), async () => {
        c.startAgent(1);
        await c.waitReady(1);
      });
      expect(subnetOf(1)).toBe(before);
      // The window held the new agent's whole start (Node start-up alone is ~0.4 s).
      expect(w.sent, JSON.stringify(w)).toBeGreaterThan(20);
      expect(w.lost, `${JSON.stringify(w)}\n${probe.output.slice(-400)}`).toEqual([]);
    } finally {
      await probe.stop();
    }
  }, 60_000);

  it("the restart probe counts loss inside its window and refuses a window it did not cover", async () => {
    const from = c.node(0).pods[0]!;
    const to = c.node(1).pods[0]!;
    // Loss: node 1 drops what is forwarded to its pod for ~300 ms inside the window.
    const probe = await PingProbe.start(from.ns, to.addr, { intervalSec: 0.01, deadlineSec: 20 });
    const undrop = (): Promise<unknown> => c.node(1).ns.exec(["nft", "delete", "table", "ip", "wftprobe"]);
    try {
      const w = await probe.across(async () => {
        await c.node(1).ns.exec(["nft", "-f", "-"], {
          input: `table ip wftprobe {\n chain f {\n  type filter hook forward priority 0; policy accept;\n  ip daddr ${formatIpv4(to.addr)} drop\n }\n}\n`,
        });
        await new Promise((r) => setTimeout(r, 300));
      }, async () => {
        await undrop();
      });
      expect(w.lost.length, JSON.stringify(w)).toBeGreaterThan(10);
      expect(w.lost.length).toBeLessThanOrEqual(w.sent);
    } finally {
      await undrop().catch(() => undefined);
      await probe.stop();
    }
    // Not covered: a probe that ends (its -w deadline) before the window closes is refused.
    const short = await PingProbe.start(from.ns, to.addr, { intervalSec: 0.01, deadlineSec: 1 });
    try {
      await expect(short.across(async () => undefined, () => new Promise((r) => setTimeout(r, 1500)))).rejects.toMatchObject({ reason: "ended_early" });
    } finally {
      await short.stop();
    }
  }, 30_000);

  it("our own lease revoked while the agent runs: it acquires again and traffic recovers", async () => {
    const before = subnetOf(1);
    const lease = (await reg.listLeases()).leases.find((l) => l.attrs.publicIp === c.node(1).underlay)!;
    await reg.revoke(lease.leaseId);
    await until("node 1 holds a lease again", async () => (await reg.listLeases()).leases.some((l) => l.attrs.publicIp === c.node(1).underlay));
    await c.waitReady(1);
    expect(subnetOf(1)).toBe(before);
    expect((await c.status(1)).counters["reacquired"]).toBeGreaterThanOrEqual(1);
    await until("all pods reach each other", async () => (await c.pingAll()).length === 0);
  }, 60_000);

  it("etcd killed for 30 s: traffic keeps flowing, the agent notices, then reconnects, renews and is ready again", async () => {
    await c.etcd.stop();
    await until("node 0 reports etcd unreachable", async () => !(await c.status(0)).readiness.etcd, 15_000);
    expect((await c.status(0)).ready).toBe(false);
    const t0 = Date.now();
    while (Date.now() - t0 < 30_000) {
      expect(await c.pingAll()).toEqual([]);
      await new Promise((r) => setTimeout(r, 5000));
    }
    await c.etcd.run();
    // This process's own client went through the outage too (its circuit breaker may still be
    // open); the agents are what is under test, so give the test a fresh client.
    reg.close();
    reg = c.registry();
    for (const i of [0, 1, 2]) await c.waitReady(i, 30_000);
    // Renewal works again: with a 20 s TTL renewed 15 s early, a lease never has less than ~5 s left.
    await new Promise((r) => setTimeout(r, 8000));
    for (const l of (await reg.listLeases()).leases) expect(await reg.timeToLive(l.leaseId)).toBeGreaterThan(3);
    expect(await c.pingAll()).toEqual([]);
  }, 120_000);

  it("garbage and foreign leases in etcd are skipped; the agents stay up and ready", async () => {
    await reg.client.put("/coreos.com/network/subnets/198.18.250.0-24").value("{not json");
    await reg.client.put("/coreos.com/network/subnets/198.18.251.0-24").value('{"PublicIP":"192.0.2.99","BackendType":"host-gw"}');
    await reg.client.put("/coreos.com/network/subnets/not-a-subnet").value("{}");
    for (const i of [0, 1, 2]) {
      await until(`node ${i} logs the skipped lease`, async () => /"key":"198\.18\.250\.0-24","reason":"bad_value".*not using a lease/.test(c.agentLog(i)), 10_000)
        .catch((e: Error) => {
          throw new Error(`${e.message}\n${c.agentLog(i).split("\n").slice(-25).join("\n")}`);
        });
      await c.waitReady(i); // still ready (readiness also covers etcd and the watch)
      const st = await c.status(i);
      expect(st.peers.map((p) => p.subnet)).not.toContain("198.18.250.0/24");
      expect(c.agentLog(i).match(/not using a lease/g)?.length).toBe(3); // once each, not per event
      expect(st.rejectedLeases.map((r) => [r.key, r.reason]).sort()).toEqual([["198.18.250.0-24", "bad_value"], ["198.18.251.0-24", "foreign_backend"], ["not-a-subnet", "bad_key"]]);
    }
    expect(await c.pingAll()).toEqual([]);
    await reg.client.delete().prefix("/coreos.com/network/subnets/198.18.25");
    await reg.client.delete().key("/coreos.com/network/subnets/not-a-subnet");
  });

  it("a deleted vxlan device is recreated and reprogrammed by the reconcile", async () => {
    await c.node(0).ns.ip("link", "del", "weft.1");
    await until("node 0 has weft.1 back with routes", async () => (await routesOf(0)).includes(subnetOf(1).split("/")[0]!));
    await until("all pods reach each other", async () => (await c.pingAll()).length === 0);
    expect((await c.status(0)).counters["device_recreated"]).toBeGreaterThanOrEqual(1);
  }, 30_000);

  it("--ip-masq: pod traffic leaving the cluster network is masqueraded (the hub answers a pod)", async () => {
    const pod = c.node(0).pods[0]!;
    // 192.0.2.254 has no route to 198.18.0.0/16: only a masqueraded ping can come back,
    // and the hub sees it from node 0's underlay address.
    expect(await echoSources(c.hub, () => c.ping(pod, 0xc00002fe))).toEqual([formatIpv4(c.node(0).underlay)]);
    await c.node(0).ns.exec(["nft", "delete", "table", "ip", "weft"]);
    await until("the reconcile restores the masquerade table", async () => {
      await c.node(0).ns.exec(["nft", "list", "table", "ip", "weft"]);
      return true;
    });
    expect(await c.ping(pod, 0xc00002fe)).toBe(true);
  }, 30_000);

  it("--ip-masq: pod to pod inside the cluster network keeps its source address (negative control)", async () => {
    const from = c.node(0).pods[0]!;
    const to = c.node(1).pods[0]!;
    const send = (): Promise<boolean> => c.ping(from, to.addr);
    expect((await c.node(0).ns.exec(["nft", "list", "table", "ip", "weft"]))).toMatch(/masquerade/);
    expect(await echoSources(to.ns, send)).toEqual([formatIpv4(from.addr)]);
    // The check tells the two apart: with a catch-all masquerade added on node 0, pod 1 sees node 0's address instead.
    await c.node(0).ns.exec(["nft", "-f", "-"], {
      input: `table ip wftmasqall {\n chain post {\n  type nat hook postrouting priority srcnat + 10; policy accept;\n  ip saddr ${formatIpv4(from.addr)} masquerade\n }\n}\n`,
    });
    try {
      const seen = await echoSources(to.ns, send);
      expect(seen).toHaveLength(1);
      expect(seen[0]).not.toBe(formatIpv4(from.addr));
    } finally {
      await c.node(0).ns.exec(["nft", "delete", "table", "ip", "wftmasqall"]);
    }
    expect(await echoSources(to.ns, send)).toEqual([formatIpv4(from.addr)]);
  }, 30_000);
});

/**
 * The source addresses of the ICMP echo requests `ns` receives while `send`
 * runs, read from an nftables input chain in that namespace (a set of the
 * sources seen, by the kernel, after any NAT on the way).
 */
async function echoSources(ns: Netns, send: () => Promise<boolean>): Promise<string[]> {
  await ns.exec(["nft", "-f", "-"], {
    input: "table ip wftsrc {\n set seen { type ipv4_addr; flags dynamic; }\n chain in {\n  type filter hook input priority 0; policy accept;\n  icmp type echo-request update @seen { ip saddr }\n }\n}\n",
  });
  try {
    expect(await send()).toBe(true);
    const doc = JSON.parse(await ns.exec(["nft", "-j", "list", "set", "ip", "wftsrc", "seen"])) as { nftables: { set?: { elem?: string[] } }[] };
    return doc.nftables.flatMap((o) => o.set?.elem ?? []).sort();
  } finally {
    await ns.exec(["nft", "delete", "table", "ip", "wftsrc"]);
  }
}
