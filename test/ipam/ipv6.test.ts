import { mkdtempSync, rmSync, writeFileSync, mkdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { afterAll, describe, expect, it } from "vitest";
import { formatIpv4, parseCidr, parseIpv4 } from "../../src/common/ipv4.js";
import { formatIpv6, parseCidr6, parseIpv6 } from "../../src/common/ipv6.js";
import { silentLogger } from "../../src/common/log.js";
import { Netns } from "../../src/harness/netns.js";
import { selectPool } from "../../src/ipam/allocator.js";
import { checkRequested6, pickNext6, reservedFor6, usage6 } from "../../src/ipam/allocator6.js";
import { parseIpamSpec, parseRange } from "../../src/ipam/config.js";
import { AddressTakenError, AddressUnavailableError, IpamConfigError, PoolExhaustedError } from "../../src/ipam/errors.js";
import { IpamService } from "../../src/ipam/ipam.js";
import { IpamMetrics } from "../../src/ipam/metrics.js";
import { planFor6 } from "../../src/ipam/plan6.js";
import { PoolPressure } from "../../src/ipam/pressure.js";
import { NetnsReconciler } from "../../src/ipam/reconciler.js";
import { IpamStore } from "../../src/ipam/store.js";
import { AllocationTable, encodeAllocation, type Allocation } from "../../src/ipam/table.js";

/**
 * IPv6 and dual-stack IPAM: pools of the node's IPv6 subnet (a /64: 2^64
 * addresses, never walked), requests, exclusions and reservations in both
 * absolute and relative forms, persistence (and stores written before IPv6
 * still loading), GC, the netns reconciler and reclaim under pressure.
 */
const root = mkdtempSync(join(tmpdir(), "weft-ipam6-"));
const made: Netns[] = [];
const services: IpamService[] = [];
afterAll(async () => {
  for (const s of services) await s.close();
  for (const ns of made) await ns.destroy();
  rmSync(root, { recursive: true, force: true });
});
let n = 0;

const S6 = parseCidr6("2001:db8:7:1::/64");
const S4 = parseCidr("198.18.7.0/24");
const v6 = (s: string): bigint => parseIpv6(s);
const anyPod = { namespace: "", name: "", labels: {} };

function put(t: AllocationTable, ip6: bigint, id: string, pool = "default", requested = false): void {
  const a: Allocation = { ip: undefined, ip6, network: "net", containerId: id, ifname: "eth0", pool, netns: "", netnsInode: 0, podNamespace: "", podName: "", hostIf: "", created: 0, requested };
  expect(t.apply({ op: "add", a })).toBe(true);
}

async function service(opts: { v4?: boolean; v6?: string; registry?: Registry; dir?: string } = {}): Promise<IpamService> {
  const store = await IpamStore.open(opts.dir ?? join(root, `s${n++}`), silentLogger);
  const s = new IpamService(store, silentLogger, opts.registry ? new IpamMetrics(opts.registry) : undefined);
  s.bind(opts.v4 === false ? undefined : S4, parseCidr6(opts.v6 ?? "2001:db8:7:1::/64"));
  services.push(s);
  return s;
}

const req = (id: string, extra: Record<string, unknown> = {}, spec = parseIpamSpec({})) => ({
  network: "net", containerId: id, ifname: "eth0", netns: "", hostIf: "", pod: anyPod, requested: undefined, spec, ...extra,
});

describe("IPv6 ranges in the ipam section", () => {
  it.each([
    ["2001:db8:7:1::10", v6("2001:db8:7:1::10"), v6("2001:db8:7:1::10")],
    ["2001:db8:7:1::10-2001:db8:7:1::20", v6("2001:db8:7:1::10"), v6("2001:db8:7:1::20")],
    ["2001:db8:7:1::40/122", v6("2001:db8:7:1::40"), v6("2001:db8:7:1::7f")],
  ])("%s", (text, first, last) => {
    expect(parseRange(text, "x")).toMatchObject({ relative: false, family: 6, v6: { first, last } });
  });

  it.each([
    ["2001:db8:7:1::41/122", /host bits set.*2001:db8:7:1::40\/122/],
    ["2001:db8::20-2001:db8::10", /ends before it starts/],
    ["2001:db8:::1", /not an IPv6 address/],
    ["2001:db8::g", /not an IPv6 address/],
    ["2001:db8::/129", /prefix length "129"/],
    ["2001:db8::1-198.18.0.1", /not an IPv6 address/],
  ])("%s is refused, saying why", (text, msg) => {
    expect(() => parseRange(text, "ipam.exclude[0]")).toThrow(IpamConfigError);
    expect(() => parseRange(text, "ipam.exclude[0]")).toThrow(msg);
  });

  it("routes take IPv6 prefixes and gateways; a gateway of the other family is refused", () => {
    expect(parseIpamSpec({ routes: [{ dst: "::/0" }, { dst: "2001:DB8:9::/48", gw: "2001:db8:7:1::fe" }] }).routes)
      .toEqual([{ dst: "::/0", family: 6 }, { dst: "2001:db8:9::/48", gw: "2001:db8:7:1::fe", family: 6 }]);
    expect(() => parseIpamSpec({ routes: [{ dst: "::/0", gw: "198.18.0.1" }] })).toThrow(/routes\[0\]\.gw.*dst is IPv6, its gw must be too/);
    expect(() => parseIpamSpec({ routes: [{ dst: "2001:db8::1/64" }] })).toThrow(/routes\[0\]\.dst.*not an IPv6 prefix.*host bits/);
  });

  it("a pool outside the node's IPv6 subnet, and overlapping IPv6 pools, are refused", () => {
    expect(() => planFor6(parseIpamSpec({ pools: [{ name: "a", range: "2001:db8:8::/120", namespaces: ["x"] }] }), S6)).toThrow(/does not lie inside this node's IPv6 subnet 2001:db8:7:1::\/64/);
    expect(() => planFor6(parseIpamSpec({
      pools: [{ name: "a", range: "2001:db8:7:1::100/120", namespaces: ["x"] }, { name: "b", range: "2001:db8:7:1::180/121", namespaces: ["y"] }],
    }), S6)).toThrow(/pools "a" and "b" overlap \(2001:db8:7:1::180 is in both\)/);
  });
});

describe("IPv6 allocator (pure)", () => {
  const plan = planFor6(parseIpamSpec({}), S6);

  it("picks from subnet+2 upward round-robin, never the subnet-router address or the gateway", () => {
    const t = new AllocationTable();
    const got: string[] = [];
    for (let i = 0; i < 3; i++) {
      const ip = pickNext6(plan, t, "net", undefined);
      put(t, ip, `c${i}`);
      got.push(formatIpv6(ip));
    }
    expect(got).toEqual(["2001:db8:7:1::2", "2001:db8:7:1::3", "2001:db8:7:1::4"]);
    // Released .3 rests: the next pick goes on from the cursor.
    t.apply({ op: "del", key: "net/c1/eth0" });
    expect(formatIpv6(pickNext6(plan, t, "net", undefined))).toBe("2001:db8:7:1::5");
  });

  it("the cursor at the end of a /64 wraps to its start; no step walks the range", () => {
    const t = new AllocationTable();
    t.cursors6.set("net/default", v6("2001:db8:7:1:ffff:ffff:ffff:fffe"));
    expect(formatIpv6(pickNext6(plan, t, "net", undefined))).toBe("2001:db8:7:1:ffff:ffff:ffff:ffff");
    put(t, v6("2001:db8:7:1:ffff:ffff:ffff:ffff"), "top");
    expect(formatIpv6(pickNext6(plan, t, "net", undefined))).toBe("2001:db8:7:1::2");
  });

  it("a huge exclusion is stepped over in one step (excluding 2^63 addresses costs nothing)", () => {
    const p = planFor6(parseIpamSpec({ exclude: ["2001:db8:7:1::/65", "+2-+9"] }), S6);
    const t = new AllocationTable();
    const t0 = performance.now();
    expect(formatIpv6(pickNext6(p, t, "net", undefined))).toBe("2001:db8:7:1:8000::");
    expect(performance.now() - t0).toBeLessThan(50);
    // Relative "+2-+9" applies to the IPv6 subnet too.
    expect(() => checkRequested6(p, t, v6("2001:db8:7:1:8000::0"), "net/x/eth0")).not.toThrow();
  });

  it("usage of a /64 is counted by arithmetic: capacity 2^64 - 2 less exclusions, used, reserved", () => {
    const p = planFor6(parseIpamSpec({ exclude: ["+2-+9"], reservations: ["+10", "2001:db8:7:1::20-2001:db8:7:1::2f"] }), S6);
    const t = new AllocationTable();
    put(t, v6("2001:db8:7:1::a"), "r", "default", true); // a held reservation is used, not reserved
    put(t, v6("2001:db8:7:1::100"), "x");
    const u = usage6(p, t, undefined);
    expect(u).toEqual({ pool: "default", capacity: Number(2n ** 64n - 2n - 8n), used: 2, reserved: 16, family: 6 });
  });

  it("a small named IPv6 pool fills up and says so; its pods are selected by namespace", () => {
    const p = planFor6(parseIpamSpec({ pools: [{ name: "db", range: "2001:db8:7:1::100/126", namespaces: ["db"] }] }), S6);
    const pool = selectPool(p, { namespace: "db", name: "x", labels: {} });
    expect(pool?.name).toBe("db");
    const t = new AllocationTable();
    for (let i = 0; i < 4; i++) put(t, pickNext6(p, t, "net", pool), `d${i}`, "db");
    expect(() => pickNext6(p, t, "net", pool)).toThrow(PoolExhaustedError);
    expect(() => pickNext6(p, t, "net", pool)).toThrow(/IPv6 pool "db" of 2001:db8:7:1::\/64: 4 of 4 in use/);
    // The default pool skips the named pool's span.
    t.cursors6.set("net/default", v6("2001:db8:7:1::ff"));
    expect(formatIpv6(pickNext6(p, t, "net", undefined))).toBe("2001:db8:7:1::104");
  });

  it("requests: outside the subnet, the gateway, the subnet-router address, excluded, taken, IPv4-mapped each say why", () => {
    const p = planFor6(parseIpamSpec({ exclude: ["2001:db8:7:1::50"] }), S6);
    const t = new AllocationTable();
    put(t, v6("2001:db8:7:1::60"), "other");
    const cases: [string, typeof AddressUnavailableError | typeof AddressTakenError, RegExp][] = [
      ["2001:db8:8::5", AddressUnavailableError, /outside this node's IPv6 subnet 2001:db8:7:1::\/64/],
      ["2001:db8:7:1::1", AddressUnavailableError, /IPv6 gateway/],
      ["2001:db8:7:1::", AddressUnavailableError, /subnet-router anycast/],
      ["2001:db8:7:1::50", AddressUnavailableError, /excluded/],
      ["2001:db8:7:1::60", AddressTakenError, /held by container other/],
      ["::ffff:198.18.7.5", AddressUnavailableError, /IPv4-mapped.*198\.18\.7\.5/],
    ];
    for (const [addr, cls, msg] of cases) {
      expect(() => checkRequested6(p, t, v6(addr), "net/x/eth0")).toThrow(cls);
      expect(() => checkRequested6(p, t, v6(addr), "net/x/eth0")).toThrow(msg);
    }
  });

  it("a reservation for a pod by name, relative or absolute, is given to that pod", () => {
    const p = planFor6(parseIpamSpec({ reservations: [{ ip: "+10", podNamespace: "dns", podName: "coredns-0" }, { ip: "2001:db8:7:1::99", podName: "web" }] }), S6);
    const t = new AllocationTable();
    expect(formatIpv6(reservedFor6(p, t, { namespace: "dns", name: "coredns-0", labels: {} }) ?? 0n)).toBe("2001:db8:7:1::a");
    expect(formatIpv6(reservedFor6(p, t, { namespace: "any", name: "web", labels: {} }) ?? 0n)).toBe("2001:db8:7:1::99");
    expect(reservedFor6(p, t, { namespace: "x", name: "coredns-0", labels: {} })).toBeUndefined();
  });
});

describe("dual-stack IpamService", () => {
  it("ADD gets one address per family; a repeated ADD the same; both persist across a reopen, cursors too", async () => {
    const dir = join(root, "persist");
    const s = await service({ dir });
    const a = await s.allocate(req("c1"), "k");
    expect(formatIpv4(a.allocation.ip ?? 0)).toBe("198.18.7.2");
    expect(formatIpv6(a.allocation.ip6 ?? 0n)).toBe("2001:db8:7:1::2");
    expect(a.plan?.subnet).toEqual(S4);
    expect(a.plan6?.subnet).toEqual(S6);
    expect((await s.allocate(req("c1"), "k")).existed).toBe(true);
    await s.allocate(req("c2"), "k");
    await s.close();
    services.splice(services.indexOf(s), 1);
    const journal = readFileSync(join(dir, "journal"), "utf8");
    expect(journal).toContain('"ip":"198.18.7.2","ip6":"2001:db8:7:1::2"');
    const s2 = await service({ dir });
    expect(s2.store.problem).toBeUndefined();
    expect(s2.find("net", "c2", "eth0")).toMatchObject({ ip: parseIpv4("198.18.7.3"), ip6: v6("2001:db8:7:1::3") });
    expect(s2.store.table.holder6(v6("2001:db8:7:1::2"))?.containerId).toBe("c1");
    const c3 = await s2.allocate(req("c3"), "k");
    expect(formatIpv6(c3.allocation.ip6 ?? 0n)).toBe("2001:db8:7:1::4");
  });

  it("a snapshot written before IPv6 (no ip6, no cursors6) still loads, and its pods keep their IPv4 addresses", async () => {
    const dir = join(root, "old");
    mkdirSync(dir, { recursive: true });
    const old = { ip: "198.18.7.9", network: "net", containerId: "old", ifname: "eth0", pool: "default", netns: "", netnsInode: 0, podNamespace: "", podName: "", hostIf: "", created: 1, requested: false };
    writeFileSync(join(dir, "snapshot.json"), JSON.stringify({ version: 1, seq: 1, allocations: [old], cursors: { "net/default": parseIpv4("198.18.7.9") } }));
    writeFileSync(join(dir, "journal"), `${JSON.stringify({ s: 2, op: "add", a: { ...old, ip: "198.18.7.10", containerId: "old2" } })}\n`);
    const s = await service({ dir, v4: true });
    expect(s.store.problem).toBeUndefined();
    expect(s.list().map((a) => [a.containerId, a.ip, a.ip6])).toEqual([["old", parseIpv4("198.18.7.9"), undefined], ["old2", parseIpv4("198.18.7.10"), undefined]]);
    // The encoded form of an IPv4-only allocation is what it was before IPv6.
    expect(Object.keys(encodeAllocation(s.list()[0]!))).not.toContain("ip6");
    const g = await s.allocate(req("new"), "k");
    expect(formatIpv4(g.allocation.ip ?? 0)).toBe("198.18.7.11");
    expect(g.allocation.ip6).toBe(v6("2001:db8:7:1::2"));
  });

  it("a damaged ip6 in the journal leaves the state untrusted, naming the line", async () => {
    const dir = join(root, "bad6");
    mkdirSync(dir, { recursive: true });
    const rec = { ip6: "2001:db8:7:1::zz", network: "net", containerId: "x", ifname: "eth0", pool: "default", netns: "", netnsInode: 0, podNamespace: "", podName: "", hostIf: "", created: 1, requested: false };
    writeFileSync(join(dir, "journal"), `${JSON.stringify({ s: 1, op: "add", a: rec })}\n`);
    const s = await service({ dir });
    expect(s.store.problem?.message).toMatch(/journal line 1.*not an IPv6 address/);
    await expect(s.allocate(req("y"), "k")).rejects.toThrow(/cannot be used/);
  });

  it("an IPv6-only node hands out IPv6 alone; an IPv4 request there, or an IPv6 one on an IPv4-only node, is refused", async () => {
    const s = await service({ v4: false });
    const g = await s.allocate(req("only6"), "k");
    expect(g.allocation.ip).toBeUndefined();
    expect(formatIpv6(g.allocation.ip6 ?? 0n)).toBe("2001:db8:7:1::2");
    expect(g.plan).toBeUndefined();
    await expect(s.allocate(req("r4", { requested: parseIpv4("198.18.7.5") }), "k")).rejects.toThrow(/198\.18\.7\.5 is IPv4, and this node has no IPv4 subnet/);
    const s4 = await service();
    s4.bind(S4);
    await expect(s4.allocate(req("r6", { requested6: v6("2001:db8:7:1::5") }), "k")).rejects.toThrow(/2001:db8:7:1::5 is IPv6, and this node has no IPv6 subnet/);
    s4.bind(undefined);
    await expect(s4.allocate(req("none"), "k")).rejects.toThrow(/holds no subnet lease/);
  });

  it("requested addresses of both families are given; a request outside the IPv6 subnet is refused and nothing is held", async () => {
    const s = await service();
    const g = await s.allocate(req("both", { requested: parseIpv4("198.18.7.77"), requested6: v6("2001:db8:7:1::77") }), "k");
    expect([g.allocation.ip, g.allocation.ip6]).toEqual([parseIpv4("198.18.7.77"), v6("2001:db8:7:1::77")]);
    expect(g.allocation.requested).toBe(true);
    await expect(s.allocate(req("out", { requested6: v6("2001:db8:9::1") }), "k")).rejects.toThrow(AddressUnavailableError);
    expect(s.find("net", "out", "eth0")).toBeUndefined();
    await expect(s.allocate(req("both", { requested6: v6("2001:db8:7:1::78") }), "k")).rejects.toThrow(/already holds 198\.18\.7\.77,2001:db8:7:1::77; DEL it before asking for 2001:db8:7:1::78/);
  });

  it("a relative reservation gives its pod the same offset in both families", async () => {
    const s = await service();
    const spec = parseIpamSpec({ reservations: [{ ip: "+50", podNamespace: "dns", podName: "coredns-0" }] });
    const g = await s.allocate({ ...req("dns", {}, spec), pod: { namespace: "dns", name: "coredns-0", labels: {} } }, "res");
    expect([formatIpv4(g.allocation.ip ?? 0), formatIpv6(g.allocation.ip6 ?? 0n)]).toEqual(["198.18.7.50", "2001:db8:7:1::32"]);
  });

  it("a pool written for IPv4 only gives its pods IPv6 from the default pool, and the allocation says which pool each came from", async () => {
    const s = await service();
    const spec = parseIpamSpec({ pools: [{ name: "db", range: "198.18.7.128/26", namespaces: ["db"] }] });
    const g = await s.allocate({ ...req("db1", {}, spec), pod: { namespace: "db", name: "p", labels: {} } }, "pool4");
    expect(formatIpv4(g.allocation.ip ?? 0)).toBe("198.18.7.128");
    expect(g.allocation).toMatchObject({ pool: "db", pool6: "default" });
  });

  it("a pod from before the node had IPv6 keeps its IPv4 address at a repeated ADD and gains an IPv6 one", async () => {
    const s = await service();
    s.bind(S4);
    const first = await s.allocate(req("early"), "k");
    expect(first.allocation.ip6).toBeUndefined();
    s.bind(S4, S6);
    const again = await s.allocate(req("early"), "k");
    expect(again.existed).toBe(true); // nothing of it may be rolled back: its pod uses the IPv4 address
    expect(again.allocation.ip).toBe(first.allocation.ip);
    expect(formatIpv6(again.allocation.ip6 ?? 0n)).toBe("2001:db8:7:1::2");
    expect(s.find("net", "early", "eth0")?.ip6).toBe(again.allocation.ip6);
    expect((await s.allocate(req("early"), "k")).existed).toBe(true);
    // A request that differs from what is held is refused; one for the missing family is given.
    s.bind(S4);
    await s.allocate(req("early2"), "k");
    s.bind(S4, S6);
    await expect(s.allocate(req("early2", { requested: parseIpv4("198.18.7.200") }), "k")).rejects.toThrow(/already holds 198\.18\.7\.3; DEL it before asking for 198\.18\.7\.200/);
    const asked = await s.allocate(req("early2", { requested6: v6("2001:db8:7:1::99") }), "k");
    expect([asked.allocation.ip, asked.allocation.ip6]).toEqual([parseIpv4("198.18.7.3"), v6("2001:db8:7:1::99")]);
    // The node's IPv4 subnet changed: the old address is released and both are chosen anew.
    s.bind(parseCidr("198.18.8.0/24"), S6);
    const moved = await s.allocate(req("early"), "k");
    expect(formatIpv4(moved.allocation.ip ?? 0)).toBe("198.18.8.2");
    expect(moved.existed).toBe(false);
  });

  it("GC releases both addresses; DEL frees both for reuse", async () => {
    const s = await service();
    await s.allocate(req("keep"), "k");
    await s.allocate(req("gone"), "k");
    const r = await s.gc("net", new Set(["keep/eth0"]), 0);
    expect(r.map((a) => a.containerId)).toEqual(["gone"]);
    expect(s.store.table.holder6(v6("2001:db8:7:1::3"))).toBeUndefined();
    expect(s.store.table.holder(parseIpv4("198.18.7.3"))).toBeUndefined();
    const released = await s.release("net", "keep", "eth0");
    expect(released?.ip6).toBe(v6("2001:db8:7:1::2"));
    expect(s.store.table.size).toBe(0);
  });

  it("the reconciler releases both addresses of a pod whose namespace vanished, and keeps a live one's", async () => {
    const s = await service();
    const rec = new NetnsReconciler(s, silentLogger, { intervalMs: 60_000, graceMs: 0 });
    const dead = await Netns.create("r6dead");
    const live = await Netns.create("r6live");
    made.push(dead, live);
    await s.allocate(req("dead", { netns: `/run/netns/${dead.name}` }), "k");
    await s.allocate(req("live", { netns: `/run/netns/${live.name}` }), "k");
    await dead.destroy();
    expect(await rec.pass(Date.now(), 0)).toBe(1);
    expect(s.find("net", "dead", "eth0")).toBeUndefined();
    expect(s.store.table.holder6(v6("2001:db8:7:1::2"))).toBeUndefined();
    expect(s.find("net", "live", "eth0")?.ip6).toBe(v6("2001:db8:7:1::3"));
  });

  it("an IPv6-only node's small pool under pressure frees vanished pods' addresses at the next ADD; metrics carry family=\"6\"", async () => {
    const registry = new Registry();
    const s = await service({ v4: false, v6: "2001:db8:7:2::/125", registry }); // 8 addresses: 6 for pods
    const rec = new NetnsReconciler(s, silentLogger, { intervalMs: 3_600_000, graceMs: 3_600_000 });
    const pressure = new PoolPressure(s, rec, silentLogger, { threshold: 0.9, graceMs: 0 });
    s.pressure = pressure;
    try {
      const gone: Netns[] = [];
      for (let i = 0; i < 6; i++) {
        const ns = await Netns.create(`p6${i}`);
        made.push(ns);
        gone.push(ns);
        await s.allocate(req(`d${i}`, { netns: `/run/netns/${ns.name}` }), "k");
      }
      const metrics = await registry.metrics();
      expect(metrics).toMatch(/weft_ipam_pool_usage_ratio\{network="net",pool="default",family="6"\} 1$/m);
      expect(metrics).toMatch(/weft_ipam_pool_addresses\{network="net",pool="default",family="6",state="capacity"\} 6$/m);
      for (const ns of gone) await ns.destroy();
      const g = await s.allocate(req("new"), "k");
      expect(g.allocation.ip6).toBeDefined();
      expect(s.list().length).toBeLessThanOrEqual(6);
      expect(pressure.events).toBeGreaterThan(0);
    } finally {
      pressure.stop();
    }
  });

  it("an ADD on a full IPv6 pool of live pods fails with the pool's usage", async () => {
    const s = await service({ v4: false, v6: "2001:db8:7:3::/126" }); // 4 addresses: 2 for pods
    await s.allocate(req("a"), "k");
    await s.allocate(req("b"), "k");
    await expect(s.allocate(req("c"), "k")).rejects.toThrow(/IPv6 pool "default" of 2001:db8:7:3::\/126: 2 of 2 in use/);
    expect(s.unavailable(parseIpamSpec({}), "k")).toMatch(/default pool of 2001:db8:7:3::\/126 is exhausted/);
  });

  it("2000 concurrent allocations from a /64 stay fast (no walk of the range)", async () => {
    const s = await service({ v4: false });
    const t0 = performance.now();
    const all = [];
    for (let i = 0; i < 2000; i++) all.push(s.allocate(req(`m${i}`), "k"));
    await Promise.all(all);
    const ms = performance.now() - t0;
    expect(s.store.table.size).toBe(2000);
    expect(new Set(s.list().map((a) => a.ip6)).size).toBe(2000);
    expect(ms).toBeLessThan(20_000);
    const u = s.usage().find((x) => x.family === 6 && x.pool === "default");
    expect(u?.used).toBe(2000);
  });
});
