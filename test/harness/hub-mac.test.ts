import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Cluster, HUB_MAC } from "../../src/harness/cluster.js";
import { makeBridge } from "../../src/harness/pod-wiring.js";

/**
 * The chaos soak once saw nodes lose the DNS upstream (and etcd) for tens of
 * seconds right after a node joined: the hub bridge had no MAC of its own,
 * took the lowest of its ports', and a joining node's port with a lower one
 * changed it, while every node kept the old one in its ARP cache. A port
 * with the lowest MAC there is joins here; the bridge keeps its MAC and a
 * node reaches the hub's address at once.
 */
let c: Cluster;
beforeAll(async () => {
  c = await Cluster.create({ nodes: 2, podsPerNode: 0, manualNodes: [0, 1] });
}, 120_000);
afterAll(async () => {
  await c?.destroy();
});

const macOf = async (ns: { ip: (...a: string[]) => Promise<string> }, dev: string): Promise<string> =>
  (JSON.parse(await ns.ip("-json", "link", "show", "dev", dev)) as { address: string }[])[0]?.address ?? "";

describe("harness bridges keep their MAC as ports come and go", () => {
  it("the hub bridge: a joining port with a lower MAC changes nothing the nodes have cached", async () => {
    // Each node has the hub's MAC in its ARP cache; frames to it come in through each node's own port.
    const ping = (i: number): Promise<string> => c.node(i).ns.exec(["ping", "-n", "-c", "1", "-W", "1", "192.0.2.254"]);
    await Promise.all([ping(0), ping(1)]);
    const before = await macOf(c.hub, "br0");
    // A port whose MAC is below any other (a joining node's could be): a bridge without a MAC of its own
    // would take it, and frames to its old one (another port's) would no longer reach its addresses.
    await c.hub.ip("link", "add", "wftlow0", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "wftlow1");
    try {
      await c.hub.ip("link", "set", "wftlow0", "master", "br0", "up");
      const after = await Promise.allSettled([ping(0), ping(1)]);
      expect(after.map((r) => r.status), "a node pings the hub at once, with the MAC it has cached").toEqual(["fulfilled", "fulfilled"]);
      expect(await macOf(c.hub, "br0")).toBe(before);
      expect(before).toBe(HUB_MAC);
    } finally {
      await c.hub.ip("link", "del", "wftlow0");
    }
  }, 60_000);

  it("a node's cni0 bridge (pods wired by hand) keeps its MAC too", async () => {
    const ns = c.node(0).ns;
    await makeBridge(ns, { v4: c.node(0).subnet, v6: undefined }, 1450);
    const before = await macOf(ns, "cni0");
    await ns.ip("link", "add", "wftlow2", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "wftlow3");
    await ns.ip("link", "set", "wftlow2", "master", "cni0", "up");
    expect(await macOf(ns, "cni0")).toBe(before);
    await ns.ip("link", "del", "wftlow2");
    await ns.ip("link", "del", "cni0");
  }, 60_000);
});
