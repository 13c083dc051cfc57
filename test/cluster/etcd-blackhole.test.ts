import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Cluster } from "../../src/harness/cluster.js";
import { MEMBER_HOSTS } from "../../src/harness/etcd-cluster.js";
import { projectRoot } from "../../src/common/paths.js";

/**
 * One etcd member of three goes silent for one node (nftables in the node's
 * namespace drops every packet to and from that member's client port, new
 * and established: no RST, no ICMP). The agent's watches were on that
 * member: a TCP connection whose packets vanish raises no error of its own,
 * so without keepalive pings the watch would wait forever and the node's
 * routes and DNS go stale (etcd-io/etcd#8980). The network changes through
 * another client (a new node's lease, a new service), and the agent must see
 * both within RECOVERY_MS, and stay up: readiness may drop only while a
 * watch is reconnecting (routesSynced, registrySynced), never the lease.
 */
let c: Cluster;
const TABLE = "wftblackhole";
const SUBNETS = "/coreos.com/network/subnets";
const WEFT_BIN = join(projectRoot(), "bin", "weft.js");

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

const leaseValue = (ip: string, mac: string): string =>
  JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: mac } });

const nft = (...a: string[]): Promise<string> => c.node(0).ns.exec(["nft", ...a]);

/** Silence between node 0 and `host`'s client port, both ways: no reset, no ICMP; connections stay "established" on both ends. */
async function blackhole(host: string): Promise<void> {
  await nft("add", "table", "inet", TABLE);
  await nft("add", "chain", "inet", TABLE, "out", "{", "type", "filter", "hook", "output", "priority", "-10", ";", "}");
  await nft("add", "chain", "inet", TABLE, "in", "{", "type", "filter", "hook", "input", "priority", "-10", ";", "}");
  await nft("add", "rule", "inet", TABLE, "out", "ip", "daddr", host, "tcp", "dport", "2379", "counter", "drop");
  await nft("add", "rule", "inet", TABLE, "in", "ip", "saddr", host, "tcp", "sport", "2379", "counter", "drop");
}

/** Packets the rules dropped so far, out and in. */
async function dropped(): Promise<number[]> {
  return [...(await nft("list", "table", "inet", TABLE)).matchAll(/counter packets (\d+)/g)].map((m) => Number(m[1]));
}

/** Watch streams per member once the agent's watches are up (they are the only watches in the cluster). */
async function streamsPerMember(): Promise<number[]> {
  let streams: number[] = [];
  await expect.poll(async () => {
    streams = await Promise.all([0, 1, 2].map(watchStreams));
    return streams.reduce((a, b) => a + b, 0);
  }, { timeout: 20_000 }).toBeGreaterThan(0);
  return streams;
}

describe("an etcd member blackholed for one node", () => {
  /**
   * Each of the agent's watches (leases; the registry, which DNS and
   * discovery read) has a stream of its own, on a member drawn at random.
   * Round 1 silences the member holding the most of them; round 2, after the
   * silence is lifted, the member that holds the most of them among the
   * other two (the watch that moved, or one never silenced).
   */
  it("the agent's watches move off it: a new node's lease and a new service are picked up, and the agent stays up", async () => {
    const silenced: number[] = [];
    for (const round of [1, 2]) {
      const streams = await streamsPerMember();
      const candidates = [0, 1, 2].filter((k) => !silenced.includes(k) && (streams[k] ?? 0) > 0);
      if (candidates.length === 0) break; // every watch sits on a member already silenced once
      const member = candidates.reduce((a, b) => ((streams[b] ?? 0) > (streams[a] ?? 0) ? b : a));
      silenced.push(member);
      const host = MEMBER_HOSTS[member]!;
      expect(await etcdPeersOfNode()).toContain(`${host}:2379`);
      await blackhole(host);
      const t0 = Date.now();

      // The network changes through another client (this process, over the members' unix sockets).
      // A subnet that is not the agent's own (it draws one at random).
      const own = (await c.status(0)).subnet;
      const third = [76 + round, 86 + round].find((x) => own !== `198.18.${x}.0/24`)!;
      const subnet = `198.18.${third}.0`;
      const publicIp = `192.0.2.${76 + round}`;
      const name = `blackhole${round}`;
      const clusterIp = `198.18.255.${76 + round}`;
      const reg = c.registry();
      try {
        const lease = await reg.grant(600);
        await reg.client.put(`${SUBNETS}/${subnet}-24`).value(leaseValue(publicIp, `02:00:00:00:0b:${76 + round}`)).lease(lease);
      } finally {
        reg.close();
      }
      await weftSvc("put", "service", `default/${name}`, "--cluster-ip", clusterIp, "--port", "http:TCP:80");

      let sawPeerAt = 0;
      let sawNameAt = 0;
      /** Polls that found the agent not ready, and what was false then. */
      const unready = new Set<string>();
      let unreadyPolls = 0;
      const end = t0 + RECOVERY_MS;
      while (Date.now() < end && (sawPeerAt === 0 || sawNameAt === 0)) {
        const st = await c.status(0);
        expect(c.node(0).agent?.exitCode).toBeNull();
        if (!st.ready) {
          unreadyPolls++;
          for (const [k, v] of Object.entries(st.readiness)) if (v === false) unready.add(k);
        }
        if (sawPeerAt === 0 && st.peers.some((p) => p.subnet === `${subnet}/24` && p.publicIp === publicIp)) sawPeerAt = Date.now();
        if (sawNameAt === 0 && (await dig(`${name}.default.svc.cluster.local`)) === clusterIp) sawNameAt = Date.now();
        await new Promise((r) => setTimeout(r, 250));
      }
      const drops = await dropped();
      const report = `round ${round}: watch streams per member ${streams.join("/")}; member ${member} (${host}) blackholed; dropped packets out/in ${drops.join("/")}; ` +
        `peer seen after ${sawPeerAt ? sawPeerAt - t0 : "never"} ms, name after ${sawNameAt ? sawNameAt - t0 : "never"} ms; ` +
        `not ready in ${unreadyPolls} polls (false: ${[...unready].join(",") || "none"}); ` +
        `node's etcd connections now ${(await etcdPeersOfNode()).join(" ")}; agent's watch log:\n` +
        c.agentLog(0).split("\n").filter((l) => /watch|lease|etcd/i.test(l)).map((l) => l.slice(0, 300)).join("\n");
      console.log(report);
      expect(drops[0], report).toBeGreaterThan(0); // the rule did cut the agent's traffic
      expect(sawPeerAt, report).toBeGreaterThan(0);
      expect(sawNameAt, report).toBeGreaterThan(0);
      // The route to the new peer is in the kernel too (vxlan: via weft.1).
      expect(await c.node(0).ns.ip("route", "show", `${subnet}/24`)).toMatch(new RegExp(`${subnet.replace(/\./g, "\\.")}/24 via ${subnet.replace(/\./g, "\\.")} dev weft\\.1 onlink`));
      // Readiness may drop only while a watch reconnects (its data may be stale then, and it says so);
      // the lease, etcd itself and everything else stay up, and it is ready again at the end.
      expect([...unready].filter((k) => k !== "routesSynced" && k !== "registrySynced"), report).toEqual([]);
      expect((await c.status(0)).ready).toBe(true);
      await nft("delete", "table", "inet", TABLE);
    }
    expect(silenced.length).toBeGreaterThan(0);
    // Watches abandoned after staying disconnected (when a resumed stream drew the silent member) are counted.
    const metrics = await c.node(0).ns.exec([process.execPath, "-e", 'fetch("http://127.0.0.1:9099/metrics").then(async (r) => console.log(await r.text()))']);
    const stalls = [...metrics.matchAll(/^weft_etcd_watch_stalls_total\{watch="(lease|registry)"\} (\d+)$/gm)].map((m) => `${m[1]}=${m[2]}`);
    console.log(`watch stalls: ${stalls.join(" ")}`);
    expect(stalls.map((x) => x.split("=")[0])).toEqual(["lease", "registry"]);
  }, 2 * RECOVERY_MS + 90_000);

  it("`weft svc` and `weft network` from the node, given all three members, work through the others when one is silent", async () => {
    await blackhole(MEMBER_HOSTS[1]);
    try {
      const weft = (...args: string[]): Promise<string> =>
        c.node(0).ns.exec([process.execPath, WEFT_BIN, ...args, "--etcd-endpoints", c.etcdCluster!.endpoints], { timeoutMs: 60_000 });
      // Each call draws the members in a random order: several calls meet the silent one first.
      const took: number[] = [];
      for (let k = 0; k < 4; k++) {
        const t = Date.now();
        await weft("svc", "put", "service", `default/cli${k}`, "--cluster-ip", `198.18.254.${k + 1}`, "--port", "http:TCP:80");
        expect(await weft("svc", "ls")).toContain(`default/cli${k}`);
        expect(await weft("network", "show")).toContain("198.18.0.0/16");
        took.push(Date.now() - t);
      }
      console.log(`svc put + svc ls + network show with ${MEMBER_HOSTS[1]} silent took ${took.join(", ")} ms; dropped out/in ${(await dropped()).join("/")}`);
    } finally {
      await nft("delete", "table", "inet", TABLE);
    }
  }, 300_000);
});
