/**
 * Every structure a client can grow has a bound:
 * - the cluster zone's encoded answers, across names and qtypes (a client
 *   asking all 65,536 qtypes for every name);
 * - the DNS cache, in entries and in bytes (large answers from a real
 *   unbound), evicting the least recently used;
 * - requests waiting for an upstream answer (a dead upstream: a loopback port
 *   no one listens on, as a crashed resolver): beyond the bound they get
 *   SERVFAIL at once instead of piling up;
 * - queries in flight on one TCP connection: the connection stops being read.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/common/log.js";
import { ClusterZone } from "../../src/dns/cluster/zone.js";
import { parseUpstream } from "../../src/dns/forward/upstreams.js";
import { DnsService, type DnsOptions } from "../../src/dns/service.js";
import { nameToKey } from "../../src/dns/wire/query.js";
import { decodeReply, encodeQuery, query } from "../../src/harness/dnswire.js";
import { freeUdpTcpPort, UnboundServer } from "../../src/harness/unbound.js";
import { StaticView, until, WEB_SERVICE } from "../helpers/dns.js";

const gc = (globalThis as { gc?: () => void }).gc;
const heapMiB = (): number => {
  gc?.();
  return process.memoryUsage().heapUsed / 2 ** 20;
};

let dir: string;
let unbound: UnboundServer;
const services: DnsService[] = [];
const BIG = 200;
/** big-N.upstream.test: TXT of four 250-byte strings (an answer of ~1,070 bytes). */
const bigZone = Array.from({ length: BIG }, (_, i) => `big-${i}.upstream.test. 300 IN TXT ${Array.from({ length: 4 }, (_, j) => `"${String.fromCharCode(97 + j).repeat(250)}"`).join(" ")}`).join("\n");

async function service(upstreams: string[], extra: Partial<DnsOptions>): Promise<{ dns: DnsService; port: number }> {
  const port = await freeUdpTcpPort();
  const dns = new DnsService({
    listen: [{ host: "127.0.0.1", port }], zone: { domain: "cluster.local", ttl: 30, pods: "disabled" },
    upstreams: upstreams.map(parseUpstream), policy: "sequential", allow: [], ...extra,
  }, new StaticView([WEB_SERVICE]), silentLogger);
  await dns.start();
  services.push(dns);
  return { dns, port };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "weft-dns-bounds-"));
  const uz = UnboundServer.testZone();
  unbound = await UnboundServer.start({ dir: join(dir, "u"), authZones: [{ name: uz.name, zonefile: `${uz.text}${bigZone}\n` }] });
});
afterAll(async () => {
  await Promise.all(services.map((s) => s.close()));
  await unbound?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("the cluster zone's encoded answers", () => {
  it("stay within their bound when a client asks every qtype of several names", () => {
    const zone = new ClusterZone({ domain: "cluster.local", ttl: 30, pods: "disabled", maxEncoded: 5000, maxEncodedBytes: 1 << 20 }, [WEB_SERVICE], () => []);
    const names = ["web.default.svc.cluster.local", "nope.default.svc.cluster.local"].map(nameToKey);
    const h0 = heapMiB();
    for (const key of names) for (let qtype = 0; qtype < 65536; qtype++) zone.answer(key, qtype);
    const grew = heapMiB() - h0;
    expect(grew, "heap growth (MiB) after 131,072 distinct (name, qtype)").toBeLessThan(24);
    expect(zone.encodedEntries).toBeLessThanOrEqual(5000);
    expect(zone.encodedBytes).toBeLessThanOrEqual(1 << 20);
    // still right, and the hot names come back into the table when asked
    const a = zone.answer(nameToKey("web.default.svc.cluster.local"), 1);
    expect(a.kind === "wire" && decodeReply(a.response.bytes).answers.map((r) => r.data)).toEqual(["198.18.255.10"]);
    expect(zone.cached(nameToKey("web.default.svc.cluster.local"), 1)).toBeDefined();
  });
});

describe("the DNS cache", () => {
  it("is bounded in bytes (large answers), evicting the least recently used", async () => {
    const { dns, port } = await service([`127.0.0.1:${unbound.port}`], { cache: { maxBytes: 64 * 1024 } });
    const ask = (i: number): Promise<unknown> => query("127.0.0.1", port, `big-${i}.upstream.test`, "TXT", { edns: 1232, timeoutMs: 3000 });
    await ask(0);
    for (let i = 1; i < BIG; i++) {
      await ask(i);
      if (i % 10 === 0) await ask(0); // keeps big-0 recently used
    }
    expect(dns.cache.bytes).toBeLessThanOrEqual(64 * 1024);
    expect(dns.cache.bytes, "the bound is used: less than one entry (~1.6 KB) left free").toBeGreaterThan(64 * 1024 - 1600);
    expect(dns.cache.size).toBeLessThan(BIG / 3);
    expect(dns.cache.evictions).toBe(BIG - dns.cache.size);
    const before = dns.forwarder.upstreamQueries;
    await ask(0); // the least recently used went, not big-0
    await ask(BIG - 1);
    expect(dns.forwarder.upstreamQueries).toBe(before);
    await ask(1); // long evicted: asked upstream again
    expect(dns.forwarder.upstreamQueries).toBe(before + 1);
  });

  it("is bounded in entries too, whichever bound is hit first", async () => {
    const { dns, port } = await service([`127.0.0.1:${unbound.port}`], { cache: { capacity: 10 } });
    for (let i = 0; i < 30; i++) await query("127.0.0.1", port, `big-${i}.upstream.test`, "TXT", { edns: 1232, timeoutMs: 3000 });
    expect(dns.cache.size).toBe(10);
  });
});

describe("background refreshes", () => {
  it("one per stale entry while every upstream is down, however many clients ask for it", async () => {
    const u = await UnboundServer.start({ dir: join(dir, "u2"), authZones: [{ name: UnboundServer.testZone().name, zonefile: UnboundServer.testZone().text }] });
    let nowMs = 1_800_000_000_000;
    const { dns, port } = await service([`127.0.0.1:${u.port}`], { now: () => nowMs, deadlineMs: 300, attemptMs: 100, healthCheckMs: 100_000 });
    const name = UnboundServer.testZone().a.name;
    expect((await query("127.0.0.1", port, name, "A", { timeoutMs: 2000 })).rcodeName).toBe("NOERROR");
    await u.close();
    nowMs += 3_600_000; // expired, still within the serve-stale window
    await query("127.0.0.1", port, "other.example.test", "A", { timeoutMs: 2000 }).catch(() => undefined); // marks the upstream down
    await until(() => !dns.forwarder.anyUpstreamUp(), 3000, 10, "upstream marked down");
    const stale = dns.cache.staleServed;
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, dns.counters.refreshing)), 1);
    const replies = await Promise.all(Array.from({ length: 2000 }, () => query("127.0.0.1", port, name, "A", { timeoutMs: 3000 }).then((r) => r.rcodeName, () => "none")));
    peak = Math.max(peak, dns.counters.refreshing);
    clearInterval(sampler);
    expect(replies.filter((r) => r !== "NOERROR")).toEqual([]);
    expect(dns.cache.staleServed - stale).toBe(2000);
    expect(peak, "refreshes in flight at once").toBe(1);
    await until(() => dns.counters.refreshing === 0, 3000, 10, "the refresh settled");
  });
});

describe("requests waiting for an upstream", () => {
  it("beyond the bound get SERVFAIL at once instead of piling up behind a dead upstream", async () => {
    const dead = await freeUdpTcpPort();
    const { dns, port } = await service([`127.0.0.1:${dead}`], { maxWaiting: 100, deadlineMs: 1500, attemptMs: 1500 });
    const t0 = performance.now();
    const fast: number[] = [];
    const all = Array.from({ length: 500 }, (_, i) =>
      query("127.0.0.1", port, `n${i % 7}.example.test`, "A", { timeoutMs: 6000 }).then((r) => {
        if (performance.now() - t0 < 700) fast.push(r.rcode);
        return r.rcode;
      }));
    await until(() => fast.length >= 400, 2000, 10, "400 answered at once");
    expect(fast.every((r) => r === 2)).toBe(true); // SERVFAIL
    expect(dns.counters.shed).toBe(400);
    expect((await Promise.all(all)).every((r) => r === 2)).toBe(true); // the 100 waiting ones at the deadline
    expect(dns.counters.waiting).toBe(0);
  });

  it("one TCP connection has a bounded number of queries in flight: beyond it, it is not read", async () => {
    const dead = await freeUdpTcpPort();
    const { dns, port } = await service([`127.0.0.1:${dead}`], { deadlineMs: 600, attemptMs: 600, tcp: { maxInflight: 8 } });
    const s = connect({ host: "127.0.0.1", port });
    const frames = Buffer.concat(Array.from({ length: 20 }, (_, i) => {
      const q = encodeQuery(`p${i}.example.test`, "A", { id: i });
      return Buffer.concat([Buffer.from([0, q.length]), q]);
    }));
    let answers = 0;
    let buf = Buffer.alloc(0);
    s.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        answers++;
        buf = buf.subarray(2 + buf.readUInt16BE(0));
      }
    });
    s.write(frames);
    const tcpRequests = (): number => dns.counters.requests[1]!.reduce((a, b) => a + b, 0);
    await until(() => tcpRequests() >= 8, 2000, 10, "8 read");
    await new Promise((r) => setTimeout(r, 200));
    expect(tcpRequests()).toBe(8);
    await until(() => answers === 20, 5000, 20, "all 20 answered in turn");
    s.destroy();
  });
});
