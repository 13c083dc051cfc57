import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { bpfScratch } from "./scratch.js";
import { projectRoot } from "../../src/common/paths.js";
import { Netns, uniqueTag } from "../../src/harness/netns.js";

/**
 * The ebpf backend's map programming for IPv6, through the built Network
 * (dist/) run inside a namespace of its own (test/bpf/network-driver.mjs):
 * real device, real veths, real pinned maps, read back as the programs see
 * them. Each scenario has its own namespace and bpffs directory; a restart
 * is a second driver run on the same state dir and bpffs.
 */
const DRIVER = join(projectRoot(), "test", "bpf", "network-driver.mjs");
const tag = uniqueTag();
const scratch = bpfScratch("weft-bpffs6-");
const { made, dirs } = scratch;

interface Scenario {
  readonly ns: Netns;
  readonly stateDir: string;
  readonly bpf: string;
  ifindex(name: string): Promise<number>;
  run(iface: { publicIp: string; publicIpv6?: string }, steps: object[]): Promise<unknown[]>;
}

/** A namespace with two pod-side veth pairs (host ends p0, p1), a state dir and a bpffs directory. */
async function scenario(name: string): Promise<Scenario> {
  const ns = await Netns.create(name, tag);
  made.push(ns);
  for (const p of ["p0", "p1"]) {
    await ns.ip("link", "add", p, "type", "veth", "peer", "name", `${p}x`);
    await ns.ip("link", "set", p, "up");
    await ns.ip("link", "set", `${p}x`, "up");
  }
  const stateDir = mkdtempSync(join(tmpdir(), "weft-state6-"));
  dirs.push(stateDir);
  const bpf = join(scratch.bpffs(), name);
  return {
    ns, stateDir, bpf,
    async ifindex(dev) {
      return (JSON.parse(await ns.ip("-json", "link", "show", "dev", dev)) as { ifindex: number }[])[0]?.ifindex ?? -1;
    },
    async run(iface, steps) {
      const out = await ns.exec([process.execPath, DRIVER, stateDir, bpf], { input: JSON.stringify({ iface, steps }), timeoutMs: 60_000 });
      return JSON.parse(out.trim().split("\n").pop() ?? "[]") as unknown[];
    },
  };
}

const ME = { publicIp: "192.0.2.1", publicIpv6: "2001:db8:ff::1" };
const SELF = { key: "198.18.1.0-24&2001:db8:1::-64", subnet: "198.18.1.0/24", subnet6: "2001:db8:1::/64", publicIp: ME.publicIp, publicIpv6: ME.publicIpv6, mac: "02:00:00:00:01:01" };
/** Dual-stack, both underlays, a separate IPv6 VTEP MAC (flannel's v6 device). */
const NODE2 = { key: "198.18.2.0-24&2001:db8:2::-64", subnet: "198.18.2.0/24", subnet6: "2001:db8:2::/64", publicIp: "192.0.2.2", publicIpv6: "2001:db8:ff::2", mac: "02:00:00:00:02:04", mac6: "02:00:00:00:02:06" };
/** Dual-stack pods, IPv4 underlay only. */
const NODE3 = { key: "198.18.3.0-24&2001:db8:3::-64", subnet: "198.18.3.0/24", subnet6: "2001:db8:3::/64", publicIp: "192.0.2.3", mac: "02:00:00:00:03:04" };
/** IPv6 only: its lease has no IPv4 subnet (0.0.0.0/0) and PublicIP 0.0.0.0. */
const NODE5 = { key: "&2001:db8:5::-64", subnet6: "2001:db8:5::/64", publicIp: "0.0.0.0", publicIpv6: "2001:db8:ff::5", mac: "02:00:00:00:05:04", mac6: "02:00:00:00:05:06" };

type Node = { underlay: string; mac: string; subnet: string | null; underlay6: string | null; mac6: string; subnet6: string | null };
interface Dump {
  routes: Record<string, null>;
  routes6: Record<string, Node>;
  nodes: Record<string, Node>;
  nodes6: Record<string, Node>;
  endpoints: Record<string, { ifindex: number; mac: string }>;
  endpoints6: Record<string, { ifindex: number; mac: string }>;
  hostRoutes6: string[];
  deviceAddrs6: string[];
  leaseAttrs: { mac: string; publicIpv6: string | null; v6: { vni: number; mac: string } | null };
  attached: string[];
}

describe("apply and configureLocal with IPv6", () => {
  it("programs each family's routes and nodes, the device's IPv6 address and host routes; removal and change undo exactly theirs", async () => {
    const s = await scenario("ap");
    const [, , d1, , d2] = (await s.run(ME, [
      { op: "configureLocal", lease: SELF },
      { op: "apply", added: [NODE2, NODE3, NODE5] },
      { op: "dump" },
      { op: "apply", removed: [NODE3], changed: [{ before: NODE2, after: { ...NODE2, publicIpv6: "2001:db8:ff::22", mac6: "02:00:00:00:22:06" } }] },
      { op: "dump" },
    ])) as [null, null, Dump, null, Dump];
    expect(Object.keys(d1.routes).sort()).toEqual(["198.18.2.0/24", "198.18.3.0/24"]); // no 0.0.0.0/0 for the IPv6-only lease
    expect(d1.routes6).toEqual({
      "2001:db8:2::/64": { underlay: "192.0.2.2", mac: NODE2.mac, subnet: "198.18.2.0/24", underlay6: "2001:db8:ff::2", mac6: NODE2.mac6, subnet6: "2001:db8:2::/64" },
      "2001:db8:3::/64": { underlay: "192.0.2.3", mac: NODE3.mac, subnet: "198.18.3.0/24", underlay6: null, mac6: NODE3.mac, subnet6: "2001:db8:3::/64" },
      "2001:db8:5::/64": { underlay: "0.0.0.0", mac: NODE5.mac, subnet: null, underlay6: "2001:db8:ff::5", mac6: NODE5.mac6, subnet6: "2001:db8:5::/64" },
    });
    expect(Object.keys(d1.nodes).sort()).toEqual(["192.0.2.2", "192.0.2.3"]);
    expect(Object.keys(d1.nodes6).sort()).toEqual(["2001:db8:ff::2", "2001:db8:ff::5"]);
    expect(d1.nodes6["2001:db8:ff::5"]?.subnet6).toBe("2001:db8:5::/64");
    expect(d1.hostRoutes6).toEqual(["2001:db8:2::/64", "2001:db8:3::/64", "2001:db8:5::/64"]);
    expect(d1.deviceAddrs6).toEqual(["2001:db8:1::/128"]);
    // The lease this node publishes: its IPv6 underlay, and the one device as BackendV6Data's VTEP.
    expect(d1.leaseAttrs.publicIpv6).toBe(ME.publicIpv6);
    expect(d1.leaseAttrs.v6?.vni).toBe(1);
    expect(Object.keys(d2.routes)).toEqual(["198.18.2.0/24"]);
    expect(Object.keys(d2.routes6).sort()).toEqual(["2001:db8:2::/64", "2001:db8:5::/64"]);
    expect(d2.routes6["2001:db8:2::/64"]?.underlay6).toBe("2001:db8:ff::22");
    expect(d2.routes6["2001:db8:2::/64"]?.mac6).toBe("02:00:00:00:22:06");
    expect(Object.keys(d2.nodes)).toEqual(["192.0.2.2"]);
    expect(Object.keys(d2.nodes6).sort()).toEqual(["2001:db8:ff::22", "2001:db8:ff::5"]);
    expect(d2.hostRoutes6).toEqual(["2001:db8:2::/64", "2001:db8:5::/64"]);
  });

  it("leases sharing an underlay address: the node entry stays while one of them is left, and goes with the last", async () => {
    // Two subnets behind one node's addresses (a node that re-acquired, or two networks' leases): a removal
    // must not take the node entry from the other. Then the last one goes, entries and all.
    const twin = { ...NODE2, key: "198.18.4.0-24&2001:db8:4::-64", subnet: "198.18.4.0/24", subnet6: "2001:db8:4::/64", mac: "02:00:00:00:04:04", mac6: "02:00:00:00:04:06" };
    const s = await scenario("twin");
    const [, , , d1, , d2, , d3] = (await s.run(ME, [
      { op: "configureLocal", lease: SELF },
      { op: "apply", added: [NODE2, NODE3] },
      { op: "apply", added: [twin] },
      { op: "dump" },
      { op: "apply", removed: [NODE2] },
      { op: "dump" },
      { op: "apply", removed: [twin, NODE3] },
      { op: "dump" },
    ])) as [null, null, null, Dump, null, Dump, null, Dump];
    expect(d1.nodes["192.0.2.2"]?.mac).toBe(twin.mac);
    expect(d1.nodes6["2001:db8:ff::2"]?.mac6).toBe(twin.mac6);
    // NODE2 gone: the twin keeps both node entries, as the twin.
    expect(Object.keys(d2.nodes).sort()).toEqual(["192.0.2.2", "192.0.2.3"]);
    expect(d2.nodes["192.0.2.2"]?.subnet).toBe("198.18.4.0/24");
    expect(d2.nodes6["2001:db8:ff::2"]?.subnet6).toBe("2001:db8:4::/64");
    expect(Object.keys(d2.routes6).sort()).toEqual(["2001:db8:3::/64", "2001:db8:4::/64"]);
    // The last one gone: no node entries left.
    expect(d3.nodes).toEqual({});
    expect(d3.nodes6).toEqual({});
    expect(d3.routes6).toEqual({});
  });

  it("a node without an IPv6 underlay sends IPv6 pods' traffic over IPv4 and publishes no IPv6 underlay", async () => {
    const s = await scenario("v4u");
    const [, d] = (await s.run({ publicIp: ME.publicIp }, [{ op: "apply", added: [NODE2, NODE3] }, { op: "dump" }])) as [null, Dump];
    expect(d.routes6["2001:db8:2::/64"]).toMatchObject({ underlay: "192.0.2.2", underlay6: null });
    expect(d.nodes6).toEqual({});
    expect(d.leaseAttrs).toMatchObject({ publicIpv6: null, v6: null });
  });
});

describe("endpoints with IPv6", () => {
  it("installs each address a pod has, refuses addresses a pod cannot have, removes a pod by any of its addresses", async () => {
    const s = await scenario("ep");
    const [p0, p1] = [await s.ifindex("p0"), await s.ifindex("p1")];
    const r = await s.run(ME, [
      { op: "addEndpoint", ip: "198.18.1.5", ip6: "2001:db8:1::5", ifname: "p0", mac: "0a:00:00:00:01:05" },
      { op: "addEndpoint", ip6: "2001:db8:1::6", ifname: "p1", mac: "0a:00:00:00:01:06" }, // an IPv6-only pod
      { op: "addEndpoint", ip6: "fe80::1", ifname: "p1", mac: "0a:00:00:00:01:06" },
      { op: "addEndpoint", ip6: "ff02::1", ifname: "p1", mac: "0a:00:00:00:01:06" },
      { op: "addEndpoint", ifname: "p1", mac: "0a:00:00:00:01:06" },
      { op: "status" },
      { op: "dump" },
      { op: "removeEndpoint", ip6: "2001:db8:1::5" },
      { op: "removeEndpoint", ip6: "2001:db8:1::5" },
      { op: "dump" },
    ]);
    expect(r.slice(0, 2)).toEqual([null, null]);
    expect(r[2]).toEqual({ error: expect.stringMatching(/fe80::1 is not an address a pod can have/), code: "WEFT_ADDRESS_INVALID" });
    expect(r[3]).toEqual({ error: expect.stringMatching(/ff02::1 is not an address a pod can have/), code: "WEFT_ADDRESS_INVALID" });
    expect(r[4]).toEqual({ error: expect.stringMatching(/has no address/), code: "WEFT_ADDRESS_INVALID" });
    expect((r[5] as Record<string, number>)["endpoints_rejected"]).toBe(3);
    const d = r[6] as Dump;
    expect(d.endpoints).toEqual({ "198.18.1.5": { ifindex: p0, mac: "0a:00:00:00:01:05" } });
    expect(d.endpoints6).toEqual({ "2001:db8:1::5": { ifindex: p0, mac: "0a:00:00:00:01:05" }, "2001:db8:1::6": { ifindex: p1, mac: "0a:00:00:00:01:06" } });
    expect(d.attached).toEqual(expect.arrayContaining([`weft_from_pod@${p0}`, `weft_from_pod@${p1}`]));
    // Removal by the IPv6 address takes the pod's IPv4 entry and program too.
    expect(r.slice(7, 9)).toEqual([true, false]);
    const after = r[9] as Dump;
    expect(after.endpoints).toEqual({});
    expect(Object.keys(after.endpoints6)).toEqual(["2001:db8:1::6"]);
    expect(after.attached).not.toContain(`weft_from_pod@${p0}`);
    expect(after.attached).toContain(`weft_from_pod@${p1}`);

    // A restart (a second process on the same state dir and pins) keeps the IPv6-only pod; reconcile restores a deleted entry.
    const again = await s.run(ME, [{ op: "dump" }, { op: "deleteEndpoint6", ip6: "2001:db8:1::6" }, { op: "reconcile", routes: [] }, { op: "dump" }]);
    expect(Object.keys((again[0] as Dump).endpoints6)).toEqual(["2001:db8:1::6"]);
    expect(again[2]).toBeGreaterThanOrEqual(1);
    expect((again[3] as Dump).endpoints6).toEqual({ "2001:db8:1::6": { ifindex: p1, mac: "0a:00:00:00:01:06" } });
  });

  it("an endpoints file written before IPv6 (ip only) still loads: its pods are installed at start", async () => {
    const s = await scenario("old");
    const p0 = await s.ifindex("p0");
    writeFileSync(join(s.stateDir, "endpoints.json"), `${JSON.stringify([{ ip: "198.18.1.7", ifname: "p0", mac: "0a:00:00:00:01:07" }], null, 1)}\n`);
    const [d] = (await s.run(ME, [{ op: "dump" }])) as [Dump];
    expect(d.endpoints).toEqual({ "198.18.1.7": { ifindex: p0, mac: "0a:00:00:00:01:07" } });
    expect(d.endpoints6).toEqual({});
    expect(d.attached).toContain(`weft_from_pod@${p0}`);
  });
});

describe("reconcile with IPv6", () => {
  it("restores missing IPv6 routes and host routes, removes stale ones", async () => {
    const s = await scenario("rc");
    const r = await s.run(ME, [
      { op: "configureLocal", lease: SELF },
      { op: "apply", added: [NODE2, NODE5] },
      { op: "deleteRoute6", prefix: "2001:db8:2::/64" },
      { op: "setRoute6", prefix: "2001:db8:99::/64" },
      { op: "ip", args: ["route", "del", "2001:db8:5::/64", "dev", "weft.1"] },
      { op: "ip", args: ["route", "add", "2001:db8:98::/64", "dev", "weft.1"] },
      { op: "reconcile", routes: [NODE2, NODE5] },
      { op: "dump" },
      { op: "reconcile", routes: [NODE2, NODE5] },
    ]);
    expect(r[6]).toBe(4);
    const d = r[7] as Dump;
    expect(Object.keys(d.routes6).sort()).toEqual(["2001:db8:2::/64", "2001:db8:5::/64"]);
    expect(d.hostRoutes6).toEqual(["2001:db8:2::/64", "2001:db8:5::/64"]);
    expect(r[8]).toBe(0); // nothing left to fix
  });
});
