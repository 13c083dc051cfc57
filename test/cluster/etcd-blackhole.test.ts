import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Cluster } from "../../src/harness/cluster.js";
import { MEMBER_HOSTS } from "../../src/harness/etcd-cluster.js";

/**
 * One etcd member of three goes silent for one node (nftables in the node's
 * namespace drops every packet to and from that member's client port, new
 * and established: no RST, no ICMP). The agent's watches were on that
 * member: a TCP connection whose packets vanish raises no error of its own,
 * so without keepalive pings the watch would wait forever and the node's
 * routes and DNS go stale (etcd-io/etcd#8980). The network changes through
 * another client (a new node's lease, a new service), and the agent must see
 * both, and stay ready, within RECOVERY_MS.
 */
let c: Cluster;
const TABLE = "wftblackhole";
const SUBNETS = "/coreos.com/network/subnets";

/**
 * The bound: the client's keepalive notices the silent connection within
 * keepalive time + timeout (10 s + 5 s); the client resumes the watch after
 * at most 2 s of backoff, on a member drawn at random. When the draw is the
 * silent member again, the watch is abandoned after 10 s without connecting,
 * listed again (a unary call that may first wait out its 5 s deadline on the
 * silent member) and started anew on a fresh stream, whose creation is given
 * 10 s. 15 + 2 + 10 + 5 + 10 + 2 = 44 s covers one unlucky draw, with the
 * rest for a noisy machine (1.6x); two unlucky draws in a row take longer
 * (p = 1/9 each after the first), so the bound is 60 s.
 */
const RECOVERY_MS = 60_000;

beforeAll(async () => {
  c = await Cluster.create({ nodes: 1, podsPerNode: 0, etcdMembers: 3 });
}, 180_000);
afterAll(async () => {
  await c?.node(0).ns.exec(["nft", "delete", "table", "inet", TABLE]).catch(() => undefined);
  await c?.destroy();
});

const weftSvc = async (...args: string[]): Promise<string> =>
  (await promisify(execFile)(process.execPath, ["bin/weft.js", "svc", ...args, "--etcd-endpoints", c.etcdCluster!.localEndpoints.join(",")], { encoding: "utf8" })).stdout;

/** Watch streams member k serves now (etcd's gauge), asked from the hub, which no rule touches. */
async function watchStreams(k: number): Promise<number> {
  const host = MEMBER_HOSTS[k]!;
  const text = await c.hub.exec(["curl", "-s", "-m", "5", `http://${host}:2379/metrics`]);
  const m = /^etcd_debugging_mvcc_watch_stream_total (\d+)/m.exec(text);
  if (!m) throw new Error(`member ${k} has no etcd_debugging_mvcc_watch_stream_total in its metrics`);
  return Number(m[1]);
}

/** Established TCP connections from node 0 to etcd client ports, as "addr:port" of the member. */
async function etcdPeersOfNode(): Promise<string[]> {
  const out = await c.node(0).ns.exec(["ss", "-Htn", "state", "established", "dport", "= :2379"]);
  return out.split("\n").map((l) => l.trim().split(/\s+/)[3] ?? "").filter((s) => s !== "");
}

async function dig(name: string): Promise<string> {
  return (await c.node(0).ns.exec(["dig", "@169.254.20.10", "+time=2", "+tries=1", "+short", name], { timeoutMs: 10_000 })).trim();
}

const leaseValue = (ip: string): string =>
  JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: "02:00:00:00:0b:77" } });

describe("an etcd member blackholed for one node", () => {
  it("the agent's watches move off it: a new node's lease and a new service are picked up, and the agent stays ready", async () => {
    // Which member holds the agent's watches: the only watcher in the cluster is the agent.
    let member = -1;
    await expect.poll(async () => {
      const streams = await Promise.all([0, 1, 2].map(watchStreams));
      member = streams.findIndex((n) => n > 0);
      return streams.filter((n) => n > 0).length;
    }, { timeout: 15_000 }).toBeGreaterThan(0);
    const host = MEMBER_HOSTS[member]!;
    expect(await etcdPeersOfNode()).toContain(`${host}:2379`);

    // Silence, both ways: no reset, no ICMP; connections stay "established" on both ends.
    const nft = (...a: string[]): Promise<string> => c.node(0).ns.exec(["nft", ...a]);
    await nft("add", "table", "inet", TABLE);
    await nft("add", "chain", "inet", TABLE, "out", "{", "type", "filter", "hook", "output", "priority", "-10", ";", "}");
    await nft("add", "chain", "inet", TABLE, "in", "{", "type", "filter", "hook", "input", "priority", "-10", ";", "}");
    await nft("add", "rule", "inet", TABLE, "out", "ip", "daddr", host, "tcp", "dport", "2379", "counter", "drop");
    await nft("add", "rule", "inet", TABLE, "in", "ip", "saddr", host, "tcp", "sport", "2379", "counter", "drop");
    const t0 = Date.now();

    // The network changes through another client (this process, over the members' unix sockets).
    const reg = c.registry();
    try {
      const lease = await reg.grant(600);
      await reg.client.put(`${SUBNETS}/198.18.77.0-24`).value(leaseValue("192.0.2.77")).lease(lease);
    } finally {
      reg.close();
    }
    await weftSvc("put", "service", "default/blackhole", "--cluster-ip", "198.18.255.77", "--port", "http:TCP:80");

    let sawPeerAt = 0;
    let sawNameAt = 0;
    const end = t0 + RECOVERY_MS;
    while (Date.now() < end && (sawPeerAt === 0 || sawNameAt === 0)) {
      const st = await c.status(0);
      expect(st.ready, JSON.stringify(st.readiness)).toBe(true);
      if (sawPeerAt === 0 && st.peers.some((p) => p.subnet === "198.18.77.0/24" && p.publicIp === "192.0.2.77")) sawPeerAt = Date.now();
      if (sawNameAt === 0 && (await dig("blackhole.default.svc.cluster.local")) === "198.18.255.77") sawNameAt = Date.now();
      await new Promise((r) => setTimeout(r, 250));
    }
    const listed = await nft("list", "table", "inet", TABLE);
    const dropped = [...listed.matchAll(/counter packets (\d+)/g)].map((m) => Number(m[1]));
    const report = `member ${member} (${host}) blackholed; dropped packets out/in ${dropped.join("/")}; ` +
      `peer seen after ${sawPeerAt ? sawPeerAt - t0 : "never"} ms, name after ${sawNameAt ? sawNameAt - t0 : "never"} ms; ` +
      `node's etcd connections now ${(await etcdPeersOfNode()).join(" ")}; log tail: ${c.agentLog(0).slice(-3000)}`;
    console.log(report);
    expect(dropped[0], report).toBeGreaterThan(0); // the rule did cut the agent's traffic
    expect(sawPeerAt, report).toBeGreaterThan(0);
    expect(sawNameAt, report).toBeGreaterThan(0);
    // The route to the new peer is in the kernel too (vxlan: via flannel.1).
    expect(await c.node(0).ns.ip("route", "show", "198.18.77.0/24")).toMatch(/198\.18\.77\.0\/24 via 198\.18\.77\.0 dev flannel\.1/);
    expect((await c.status(0)).ready).toBe(true);
  }, RECOVERY_MS + 60_000);
});
