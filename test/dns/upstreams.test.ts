/**
 * Upstream choice, health and limits, and cache prefetch, against real
 * unbound upstreams on loopback (a "dead" upstream is a loopback port no one
 * listens on: queries to it time out, as to a crashed resolver).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/common/log.js";
import { parseUpstream, UpstreamSet, type Upstream } from "../../src/dns/forward/upstreams.js";
import { DnsService, type DnsOptions } from "../../src/dns/service.js";
import { freeUdpTcpPort, UnboundServer } from "../../src/harness/unbound.js";
import { dig, digServer, StaticView, until, WEB_SERVICE, type DigResult } from "../helpers/dns.js";

const uz = UnboundServer.testZone();
let dir: string;
let unbound: UnboundServer;
const services: DnsService[] = [];
const extraUnbound: UnboundServer[] = [];
let nowMs = 1_900_000_000_000;

async function service(upstreams: Upstream[], extra: Partial<DnsOptions> = {}): Promise<{ dns: DnsService; port: number }> {
  const port = await freeUdpTcpPort();
  const dns = new DnsService({
    listen: [{ host: "127.0.0.1", port }], zone: { domain: "cluster.local", ttl: 30, pods: "disabled" },
    upstreams, policy: "sequential", allow: [], deadlineMs: 1500, attemptMs: 300, healthCheckMs: 100, now: () => nowMs, ...extra,
  }, new StaticView([WEB_SERVICE]), silentLogger);
  await dns.start();
  services.push(dns);
  return { dns, port };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "weft-dns-ups-"));
  unbound = await UnboundServer.start({ dir: join(dir, "u1"), authZones: [{ name: uz.name, zonefile: uz.text }] });
});
afterAll(async () => {
  await Promise.all(services.map((s) => s.close()));
  await Promise.all([unbound, ...extraUnbound].map((u) => u?.close()));
  rmSync(dir, { recursive: true, force: true });
});

describe("upstream order by policy", () => {
  const list = (): Upstream[] => ["127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"].map(parseUpstream);
  it.each([
    { policy: "sequential" as const, expected: [["1001", "1002", "1003"], ["1001", "1002", "1003"], ["1001", "1002", "1003"]] },
    { policy: "round_robin" as const, expected: [["1001", "1002", "1003"], ["1002", "1003", "1001"], ["1003", "1001", "1002"]] },
  ])("$policy", ({ policy, expected }) => {
    const set = new UpstreamSet(list(), policy);
    expect([0, 1, 2].map(() => set.order().map((u) => String(u.port).slice(-4)))).toEqual(expected);
  });

  it("random spreads the first choice over every upstream", () => {
    const set = new UpstreamSet(list(), "random");
    const first = new Map<number, number>();
    for (let i = 0; i < 3000; i++) {
      const p = set.order()[0]!.port;
      first.set(p, (first.get(p) ?? 0) + 1);
    }
    expect([...first.values()].every((n) => n > 800)).toBe(true);
  });

  it("upstreams marked down go last; one found looping is never used", () => {
    const ups = list();
    ups[0]!.fails = 2;
    ups[1]!.loop = true;
    expect(new UpstreamSet(ups, "sequential").order().map((u) => u.port)).toEqual([1003, 1001]);
  });
});

describe("health and limits", () => {
  it("a dead upstream is passed over, marked down, and brought back by the health check once it answers", async () => {
    const deadPort = await freeUdpTcpPort();
    const dead = parseUpstream(`127.0.0.1:${deadPort}`);
    const live = parseUpstream(`127.0.0.1:${unbound.port}`);
    const { port } = await service([dead, live]);
    const r = await dig(port, uz.a.name, "A");
    expect(r.status, r.text).toBe("NOERROR"); // after the dead one's attempt timed out
    await dig(port, uz.multiA.name, "A");
    const fails = dead.fails;
    expect(fails).toBeGreaterThanOrEqual(2);
    expect((await dig(port, uz.txt.name, "TXT")).status).toBe("NOERROR");
    expect(dead.fails).toBe(fails); // the live one is asked first now: the dead one was not tried (and failed) again
    // The dead upstream comes to life: the health check (". NS") gets an answer and clears it.
    extraUnbound.push(await UnboundServer.start({ dir: join(dir, "u2"), port: deadPort, authZones: [{ name: uz.name, zonefile: uz.text }] }));
    await until(() => dead.fails === 0, 5000, 20, "the health check to clear the upstream");
  });

  it("beyond the cap on concurrent upstream queries a query fails at once (SERVFAIL)", async () => {
    const { port } = await service([parseUpstream(`127.0.0.1:${await freeUdpTcpPort()}`)], { maxConcurrent: 1, deadlineMs: 1500, attemptMs: 1500 });
    let slowDone = false;
    const slow = dig(port, "a.upstream.test", "A").then((r) => ((slowDone = true), r)); // holds the one slot until its deadline
    await new Promise((r) => setTimeout(r, 200));
    const r = await dig(port, "b.upstream.test", "A");
    expect(r.status).toBe("SERVFAIL");
    expect(slowDone).toBe(false); // refused while the first was still waiting, not after it
    expect((await slow).status).toBe("SERVFAIL");
  }, 15_000);
});

describe("listen addresses", () => {
  it("an address in use, or not on this node, is refused naming it; nothing stays bound", async () => {
    const { port } = await service([]);
    const again = new DnsService({ listen: [{ host: "127.0.0.1", port: await freeUdpTcpPort() }, { host: "127.0.0.1", port }], zone: { domain: "cluster.local", ttl: 5, pods: "disabled" }, upstreams: [], policy: "random", allow: [] }, new StaticView([]), silentLogger);
    await expect(again.start()).rejects.toThrow(new RegExp(`--dns-listen 127\\.0\\.0\\.1:${port}: cannot listen: the address is in use.*--dns-listen off`));
    expect(again.addresses()).toHaveLength(1); // the first address was bound, then closed again:
    const first = again.addresses()[0]!;
    const rebind = new DnsService({ listen: [first], zone: { domain: "cluster.local", ttl: 5, pods: "disabled" }, upstreams: [], policy: "random", allow: [] }, new StaticView([]), silentLogger);
    await rebind.start(); // it can be had again
    await rebind.close();
    const away = new DnsService({ listen: [{ host: "192.0.2.77", port: 53 }], zone: { domain: "cluster.local", ttl: 5, pods: "disabled" }, upstreams: [], policy: "random", allow: [] }, new StaticView([]), silentLogger);
    await expect(away.start()).rejects.toThrow(/--dns-listen 192\.0\.2\.77:53: cannot listen: no interface of this node has that address/);
  });
});

describe("the UDP path without the native batch calls (the fallback) and over IPv6", () => {
  it.each([
    { label: "dgram, IPv4", host: "127.0.0.1", udpBatch: false },
    { label: "IPv6 loopback", host: "::1", udpBatch: true },
  ])("$label: cluster names, NXDOMAIN, forwarded names, TC and TCP all answer", async ({ host, udpBatch }) => {
    const port = await freeUdpTcpPort();
    const dns = new DnsService({
      listen: [{ host, port }], zone: { domain: "cluster.local", ttl: 30, pods: "disabled" }, upstreams: [parseUpstream(`127.0.0.1:${unbound.port}`)],
      policy: "random", allow: [], udpBatch,
    }, new StaticView([WEB_SERVICE]), silentLogger);
    await dns.start();
    services.push(dns);
    const ask = (...q: string[]): Promise<DigResult> => digServer(host, port, ...q);
    expect((await ask("web.default.svc.cluster.local", "A")).answer.map((r) => r.data)).toEqual(["198.18.255.10"]);
    expect((await ask("nope.default.svc.cluster.local", "A")).status).toBe("NXDOMAIN");
    expect((await ask(uz.a.name, "A")).answer.map((r) => r.data)).toEqual([uz.a.address]);
    const tc = await ask(uz.bigTxt.name, "TXT", "+noedns", "+ignore");
    expect(tc.flags).toContain("tc");
    expect((await ask(uz.bigTxt.name, "TXT", "+tcp")).answer.length).toBeGreaterThan(1);
  });
});

describe("serve-stale while every upstream is down", () => {
  it("once the upstream is marked down, a stale answer comes at once, and the entry is refreshed when it is back", async () => {
    const own = await UnboundServer.start({ dir: join(dir, "u3"), authZones: [{ name: uz.name, zonefile: uz.text }] });
    extraUnbound.push(own);
    const up = parseUpstream(`127.0.0.1:${own.port}`);
    const { dns, port } = await service([up], { deadlineMs: 1500, attemptMs: 700 });
    const name = uz.shortTtl.name; // TTL 30
    expect((await dig(port, name, "A")).answer[0]?.ttl).toBe(30);
    await own.stop();
    nowMs += 40_000; // expired: stale from here on
    const first = await dig(port, name, "A"); // the upstream is still thought up: two attempts time out, then the stale answer
    expect([first.status, first.answer[0]?.ttl]).toEqual(["NOERROR", 30]);
    expect(up.fails).toBeGreaterThanOrEqual(2);
    const t0 = performance.now();
    const second = await dig(port, name, "A");
    expect([second.status, second.answer[0]?.ttl]).toEqual(["NOERROR", 30]);
    expect(performance.now() - t0, "answered without waiting for an upstream attempt").toBeLessThan(700);
    await own.run();
    await until(() => up.fails === 0, 5000, 20, "the health check to find the upstream back");
    // A fresh entry counts down on the clock; a stale answer always says 30.
    await until(async () => {
      await dig(port, name, "A");
      nowMs += 5000;
      return (await dig(port, name, "A")).answer[0]?.ttl === 25;
    }, 5000, 50, "a fresh entry");
    expect(dns.cache.size).toBeGreaterThan(0);
  });
});

describe("cache prefetch", () => {
  it("a popular entry close to expiry is refreshed in the background", async () => {
    const { dns, port } = await service([parseUpstream(`127.0.0.1:${unbound.port}`)], { cache: { prefetchHits: 2, prefetchPercent: 50 } });
    const name = uz.shortTtl.name; // TTL 30
    await dig(port, name, "A");
    const ups = dns.forwarder.upstreamQueries;
    nowMs += 20_000; // 10 s of 30 left: under 50 %
    await dig(port, name, "A"); // hit 1
    expect(dns.forwarder.upstreamQueries).toBe(ups);
    const hit2 = await dig(port, name, "A"); // hit 2: answered from the cache, refreshed behind it
    expect(hit2.answer[0]?.ttl).toBe(10);
    await until(() => dns.forwarder.upstreamQueries === ups + 1, 3000, 10, "the prefetch");
    await until(() => dns.counters.prefetches === 1, 3000, 10, "the refreshed entry");
    nowMs += 15_000; // past the old entry's expiry; the refreshed one has 15 s left
    const after = await dig(port, name, "A");
    expect(after.answer[0]?.ttl).toBe(15);
    expect(dns.forwarder.upstreamQueries).toBe(ups + 1);
  });
});
