import { describe, expect, it } from "vitest";
import { parseIpv4, parseMac } from "../../src/common/ipv4.js";
import { silentLogger } from "../../src/common/log.js";
import type { Network, NetworkStatus } from "../../src/backend/types.js";
import { ApplyQueue } from "../../src/agent/apply-queue.js";
import { AgentMetrics } from "../../src/agent/metrics.js";
import { policyOf } from "../../src/routes/accept.js";
import { RouteTable, type RouteDiff } from "../../src/routes/table.js";
import { parseSubnetKey, type Lease } from "../../src/subnet/lease.js";
import { parseNetworkConfig } from "../../src/subnet/network-config.js";

/**
 * Apply and reconcile racing each other. The interleaving cannot be produced
 * on demand with a real backend (it depends on when a kernel read returns),
 * so the network here is a stand-in that behaves as the ebpf backend does:
 * its reconcile reads the data path (an await), then removes what the routes
 * it was given do not name and adds what they do. The queue under test is the
 * agent's own.
 */
class RecordingNetwork implements Network {
  readonly backend = "ebpf" as const;
  readonly mtu = 1450;
  readonly leaseAttrs = { publicIp: parseIpv4("192.0.2.1"), backendType: "vxlan", vni: 1, vtepMac: parseMac("02:00:00:00:00:01") };
  readonly programmed = new Set<string>();
  readonly events: string[] = [];
  private inReconcile = false;
  overlaps = 0;
  /** Resolved by the test to let a reconcile's "kernel read" return. */
  release: (() => void) | undefined;

  async configureLocal(): Promise<void> {}

  async apply(diff: RouteDiff): Promise<void> {
    if (this.inReconcile) this.overlaps++;
    this.events.push("apply");
    for (const l of [...diff.removed, ...diff.changed.map((c) => c.before)]) this.programmed.delete(l.key);
    for (const l of [...diff.added, ...diff.changed.map((c) => c.after)]) this.programmed.add(l.key);
  }

  async reconcile(routes: readonly Lease[]): Promise<number> {
    this.inReconcile = true;
    this.events.push("reconcile");
    const want = new Set(routes.map((l) => l.key));
    await new Promise<void>((r) => (this.release = r)); // reading the data path
    let fixed = 0;
    for (const k of [...this.programmed]) if (!want.has(k)) (this.programmed.delete(k), fixed++);
    for (const k of want) if (!this.programmed.has(k)) (this.programmed.add(k), fixed++);
    this.inReconcile = false;
    return fixed;
  }

  status(): NetworkStatus {
    return { backend: "ebpf", device: "weft.1", mtu: 1450, peers: { programmed: this.programmed.size, failed: 0 }, counters: {} };
  }

  async close(): Promise<void> {}
}

/** A network that reads its data path ahead (as the vxlan backend does): the reading waits for the test. */
class ReadAheadNetwork extends RecordingNetwork {
  readRelease: (() => void) | undefined;
  readonly given: { routes: string[]; reading: unknown }[] = [];

  async readForReconcile(routes: readonly Lease[]): Promise<unknown> {
    this.events.push("read");
    const seen = [...this.programmed]; // what the data path held when the read began
    await new Promise<void>((r) => (this.readRelease = r));
    return { programmedWhenRead: seen, routesWhenRead: routes.map((l) => l.key) };
  }

  override async reconcile(routes: readonly Lease[], reading?: unknown): Promise<number> {
    this.given.push({ routes: routes.map((l) => l.key).sort(), reading });
    this.events.push("reconcile");
    return 0;
  }
}

function lease(key: string, ip: string): Lease {
  return {
    key, subnet: parseSubnetKey(key)!, leaseId: "1", modRevision: "1", createRevision: "1",
    attrs: { publicIp: parseIpv4(ip), backendType: "vxlan", vni: 1, vtepMac: parseMac("02:00:00:00:00:09") },
  };
}

describe("the apply queue", () => {
  it("a peer added while a reconcile reads the data path is neither applied during it nor removed by it", async () => {
    const table = new RouteTable();
    table.setPolicy(policyOf(parseNetworkConfig('{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan"}}')));
    const net = new RecordingNetwork();
    const q = new ApplyQueue(table, () => net, new AgentMetrics(), silentLogger);
    q.change(() => table.put(lease("198.18.2.0-24", "192.0.2.2")));
    await q.idle();
    const reconciled = q.reconcile();
    while (!net.release) await new Promise((r) => setImmediate(r)); // the reconcile is reading
    q.change(() => table.put(lease("198.18.3.0-24", "192.0.2.3"))); // a new node's lease arrives now
    await new Promise((r) => setImmediate(r));
    net.release();
    await reconciled;
    await q.idle();
    expect(net.overlaps).toBe(0);
    expect(net.events).toEqual(["apply", "reconcile", "apply"]);
    expect([...net.programmed].sort()).toEqual(["198.18.2.0-24", "198.18.3.0-24"]);
  });

  it("a backend that reads ahead reads outside the queue: changes are applied meanwhile, and the reconcile gets the reading and the table of its turn", async () => {
    const table = new RouteTable();
    table.setPolicy(policyOf(parseNetworkConfig('{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan"}}')));
    const net = new ReadAheadNetwork();
    const q = new ApplyQueue(table, () => net, new AgentMetrics(), silentLogger);
    q.change(() => table.put(lease("198.18.2.0-24", "192.0.2.2")));
    await q.idle();
    const reconciled = q.reconcile();
    while (!net.readRelease) await new Promise((r) => setImmediate(r)); // the read is under way
    q.change(() => table.put(lease("198.18.3.0-24", "192.0.2.3")));
    await q.idle(); // applied although the read has not returned
    expect(net.events).toEqual(["apply", "read", "apply"]);
    net.readRelease();
    await reconciled;
    expect(net.events).toEqual(["apply", "read", "apply", "reconcile"]);
    expect(net.given).toEqual([{ routes: ["198.18.2.0-24", "198.18.3.0-24"], reading: { programmedWhenRead: ["198.18.2.0-24"], routesWhenRead: ["198.18.2.0-24"] } }]);
  });

  it("a reconcile sees every change queued before it", async () => {
    const table = new RouteTable();
    table.setPolicy(policyOf(parseNetworkConfig('{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan"}}')));
    const net = new RecordingNetwork();
    const q = new ApplyQueue(table, () => net, new AgentMetrics(), silentLogger);
    q.change(() => table.put(lease("198.18.4.0-24", "192.0.2.4")));
    const reconciled = q.reconcile();
    while (!net.release) await new Promise((r) => setImmediate(r));
    net.release();
    expect(await reconciled).toBe(0); // the apply ran first: nothing to fix
    expect([...net.programmed]).toEqual(["198.18.4.0-24"]);
  });
});
