/**
 * Forwarding and caching with a real upstream (unbound serving the test zone
 * `upstream.test.`), asked with the real `dig`. The cache runs on an
 * injectable clock, so TTL arithmetic is exact. The cluster zone here comes
 * from a fixed view (StaticView): the registry is not the subject.
 */
import { createSocket, type Socket } from "node:dgram";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/common/log.js";
import { parseUpstream, type Upstream } from "../../src/dns/forward/upstreams.js";
import { DnsService, type DnsOptions } from "../../src/dns/service.js";
import { query } from "../../src/harness/dnswire.js";
import { freeUdpTcpPort, UnboundServer } from "../../src/harness/unbound.js";
import { dig, rr, StaticView, until, WEB_SERVICE, type DigResult } from "../helpers/dns.js";

const uz = UnboundServer.testZone();
const U = uz.name; // "upstream.test."
/** More than 1232 bytes: unbound truncates it over UDP even with EDNS, so weft must ask again over TCP. */
const HUGE = Array.from({ length: 40 }, (_, i) => `h${String(i).padStart(2, "0")}-${"y".repeat(60)}`);
const EXTRA = [
  ...HUGE.map((s) => `huge.${U} 300 IN TXT "${s}"`),
  `ttl.${U} 300 IN A 192.0.2.40`,
  `many.${U} 300 IN A 192.0.2.41`,
].join("\n");

/** default/ext, ExternalName → the upstream's www. */
const EXT_SERVICE = { namespace: "default", name: "ext", type: "ExternalName" as const, clusterIPs: [], externalName: uz.a.name.replace(/\.$/, ""), ports: [], publishNotReadyAddresses: false };

let dir: string;
let unbound: UnboundServer;
let nowMs = 1_800_000_000_000; // a whole second: TTL arithmetic stays exact
let dns: DnsService;
let port = 0;
const others: DnsService[] = [];
const fakes: Socket[] = [];

async function service(upstreams: Upstream[], extra: Partial<DnsOptions> = {}, listenPort?: number, metrics?: Registry): Promise<{ dns: DnsService; port: number }> {
  const p = listenPort ?? (await freeUdpTcpPort());
  const d = new DnsService({
    listen: [{ host: "127.0.0.1", port: p }], zone: { domain: "cluster.local", ttl: 30, pods: "disabled" },
    upstreams, policy: "sequential", allow: [], deadlineMs: 600, attemptMs: 250, healthCheckMs: 200, now: () => nowMs, ...extra,
  }, new StaticView([WEB_SERVICE, EXT_SERVICE]), silentLogger, metrics);
  await d.start();
  return { dns: d, port: p };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "weft-dns-fwd-"));
  unbound = await UnboundServer.start({ dir: join(dir, "unbound"), authZones: [{ name: U, zonefile: `${uz.text}${EXTRA}\n` }] });
  ({ dns, port } = await service([parseUpstream(`127.0.0.1:${unbound.port}`)]));
});

afterAll(async () => {
  await Promise.all([dns, ...others].map((d) => d?.close()));
  fakes.forEach((s) => s.close());
  await unbound?.close();
  rmSync(dir, { recursive: true, force: true });
});

const ups = (): number => dns.forwarder.upstreamQueries;
const soaMinimum = (r: DigResult): number => Number(r.authority[0]?.data.split(" ").at(-1));

describe("forwarded answers", () => {
  it.each([
    { q: [uz.a.name, "A"], answer: [`${uz.a.name} ${uz.a.ttl} A ${uz.a.address}`] },
    { q: [uz.aaaa.name, "AAAA"], answer: [`${uz.aaaa.name} ${uz.aaaa.ttl} AAAA ${uz.aaaa.address}`] },
    { q: [uz.cname.name, "A"], answer: [`${uz.cname.name} ${uz.cname.ttl} CNAME ${uz.cname.target}`, `${uz.a.name} ${uz.a.ttl} A ${uz.a.address}`] },
    { q: [uz.txt.name, "TXT"], answer: [`${uz.txt.name} ${uz.txt.ttl} TXT "${uz.txt.text}"`] },
    { q: [uz.multiA.name, "A"], answer: uz.multiA.addresses.map((a) => `${uz.multiA.name} ${uz.multiA.ttl} A ${a}`) },
  ])("$q.0 $q.1", async ({ q, answer }) => {
    const r = await dig(port, ...q);
    expect(r.status, r.text).toBe("NOERROR");
    expect(r.flags).toContain("ra");
    expect(r.flags).not.toContain("aa"); // a forwarder is no authority
    const got = r.answer.map(rr);
    expect(q[0] === uz.multiA.name ? got.sort() : got, r.text).toEqual(answer);
  });
});

describe("cache", () => {
  it("counts TTLs down on the injectable clock without asking upstream again", async () => {
    const first = await dig(port, `ttl.${U}`, "A");
    expect(first.answer.map(rr)).toEqual([`ttl.${U} 300 A 192.0.2.40`]);
    const before = ups();
    const hits = dns.cache.hits;
    nowMs += 7_000;
    const second = await dig(port, `ttl.${U}`, "A");
    expect(second.answer.map(rr), second.text).toEqual([`ttl.${U} 293 A 192.0.2.40`]);
    nowMs += 7_000;
    expect((await dig(port, `ttl.${U}`, "A")).answer.map((a) => a.ttl)).toEqual([286]);
    expect(ups()).toBe(before);
    expect(dns.cache.hits).toBe(hits + 2);
  });

  it("caches NXDOMAIN for the SOA minimum (RFC 2308)", async () => {
    const name = uz.nxdomain[0] ?? "";
    const first = await dig(port, name, "A");
    expect(first.status).toBe("NXDOMAIN");
    expect(soaMinimum(first)).toBe(uz.soaMinimum);
    expect(first.authority[0]?.ttl).toBe(uz.soaMinimum);
    const before = ups();
    nowMs += (uz.soaMinimum - 1) * 1000;
    const cached = await dig(port, name, "A");
    expect([cached.status, cached.authority[0]?.ttl]).toEqual(["NXDOMAIN", 1]);
    expect(ups()).toBe(before);
    nowMs += 1000; // the SOA minimum has passed: asked again
    const again = await dig(port, name, "A");
    expect([again.status, again.authority[0]?.ttl]).toEqual(["NXDOMAIN", uz.soaMinimum]);
    expect(ups()).toBe(before + 1);
  });

  it("caches NODATA too", async () => {
    const first = await dig(port, uz.nodata.name, uz.nodata.type);
    expect([first.status, first.answer.length, first.authority[0]?.type]).toEqual(["NOERROR", 0, "SOA"]);
    const before = ups();
    expect((await dig(port, uz.nodata.name, uz.nodata.type)).status).toBe("NOERROR");
    expect(ups()).toBe(before);
  });

  it("serves stale answers with TTL 30 while the upstream is down (RFC 8767); an unknown name gets SERVFAIL", async () => {
    const fresh = await dig(port, uz.shortTtl.name, "A");
    expect(fresh.answer.map(rr)).toEqual([`${uz.shortTtl.name} 30 A ${uz.shortTtl.address}`]);
    await unbound.stop();
    try {
      nowMs += (uz.shortTtl.ttl + 5) * 1000;
      const stale = dns.cache.staleServed;
      const r = await dig(port, uz.shortTtl.name, "A");
      expect(r.status, r.text).toBe("NOERROR");
      expect(r.answer.map(rr)).toEqual([`${uz.shortTtl.name} 30 A ${uz.shortTtl.address}`]);
      expect(dns.cache.staleServed).toBe(stale + 1);
      const unknown = await dig(port, uz.nxdomain[1] ?? "", "A");
      expect(unknown.status, unknown.text).toBe("SERVFAIL");
    } finally {
      await unbound.run();
    }
    await until(async () => (await dig(port, `deep.missing.${U}`, "A")).status === "NXDOMAIN", 10_000, 200, "upstream back");
  });

  it("an ExternalName's target answer is cached: the CNAME comes from the zone, the A from the cache", async () => {
    const first = await dig(port, "ext.default.svc.cluster.local", "A");
    const ttl = first.answer[1]?.ttl ?? -1; // www may be cached already by an earlier test: its TTL counts down
    expect(ttl).toBeGreaterThan(10);
    expect(first.answer.map(rr), first.text).toEqual([`ext.default.svc.cluster.local. 30 CNAME ${uz.a.name}`, `${uz.a.name} ${ttl} A ${uz.a.address}`]);
    expect(first.flags).toContain("aa");
    const before = ups();
    nowMs += 4000;
    const again = await dig(port, "ext.default.svc.cluster.local", "A");
    expect(again.answer.map(rr)).toEqual([`ext.default.svc.cluster.local. 30 CNAME ${uz.a.name}`, `${uz.a.name} ${ttl - 4} A ${uz.a.address}`]);
    expect(ups()).toBe(before);
  });

  it("coalesces 50 concurrent identical queries into one upstream query", async () => {
    const before = ups();
    const ids = Array.from({ length: 50 }, (_, i) => 1000 + i);
    const replies = await Promise.all(ids.map((id) => query("127.0.0.1", port, `many.${U}`, "A", { id, timeoutMs: 3000 })));
    for (const [i, r] of replies.entries()) {
      expect(r.id).toBe(ids[i]);
      expect([r.rcodeName, r.answers.map((a) => a.data)]).toEqual(["NOERROR", ["192.0.2.41"]]);
    }
    expect(ups()).toBe(before + 1);
  });
});

describe("truncation and TCP", () => {
  it("a big answer that fits the client's EDNS size comes whole over UDP", async () => {
    const r = await dig(port, "+bufsize=4096", uz.bigTxt.name, "TXT");
    expect(r.status, r.text).toBe("NOERROR");
    expect([r.flags.includes("tc"), r.retriedTcp]).toEqual([false, false]);
    expect(r.answer.map((a) => a.data).sort()).toEqual(uz.bigTxt.strings.map((s) => `"${s}"`).sort());
  });

  it("an answer unbound truncates over UDP is fetched again over TCP upstream", async () => {
    const r = await dig(port, "+tcp", `huge.${U}`, "TXT");
    expect(r.status, r.text).toBe("NOERROR");
    expect(r.answer.map((a) => a.data).sort()).toEqual(HUGE.map((s) => `"${s}"`).sort());
    const udp = await dig(port, "+bufsize=4096", `huge.${U}`, "TXT"); // over 1232 bytes: TC, dig retries over TCP
    expect(udp.retriedTcp, udp.text).toBe(true);
    expect(udp.answer).toHaveLength(HUGE.length);
  });

  it("over UDP without EDNS the big answer is truncated (TC)", async () => {
    const r = await dig(port, "+notcp", "+noedns", "+ignore", uz.bigTxt.name, "TXT");
    expect(r.status, r.text).toBe("NOERROR");
    expect(r.flags).toContain("tc");
    expect(r.answer).toEqual([]);
  });

  it("with EDNS +bufsize=512 the big answer is truncated (TC)", async () => {
    const r = await dig(port, "+bufsize=512", "+ignore", uz.bigTxt.name, "TXT");
    expect(r.flags, r.text).toContain("tc");
    expect(r.answer).toEqual([]);
    expect(r.edns?.version).toBe(0);
  });
});

describe("forwarding loops", () => {
  it("leaves out an upstream that is the server itself; cluster names still work", async () => {
    const p = await freeUdpTcpPort();
    const self = await service([parseUpstream(`127.0.0.1:${p}`)], {}, p);
    others.push(self.dns);
    expect(self.dns.droppedUpstreams).toEqual([`127.0.0.1:${p}`]);
    const web = await dig(p, "web.default.svc.cluster.local", "A");
    expect([web.status, web.answer.map(rr)]).toEqual(["NOERROR", ["web.default.svc.cluster.local. 30 A 198.18.255.10"]]);
    expect((await dig(p, uz.a.name, "A")).status).toBe("SERVFAIL"); // nothing left to forward to
    expect(self.dns.forwarder.upstreamQueries).toBe(0);
  });

  it("two servers forwarding to each other: the loop probe finds it, queries end in SERVFAIL", async () => {
    const [pa, pb] = [await freeUdpTcpPort(), await freeUdpTcpPort()];
    const toB = parseUpstream(`127.0.0.1:${pb}`);
    const toA = parseUpstream(`127.0.0.1:${pa}`);
    const a = await service([toB], {}, pa);
    const b = await service([toA], {}, pb);
    others.push(a.dns, b.dns);
    await until(() => toA.loop || toB.loop, 5000, 20, "a loop detected");
    for (const p of [pa, pb]) expect((await dig(p, "looped.example.test", "A")).status).toBe("SERVFAIL");
    expect(a.dns.forwarder.upstreamQueries + b.dns.forwarder.upstreamQueries).toBeLessThan(10);
  });
});

/**
 * A fake upstream written here on purpose: a real resolver never answers
 * another question or from another port, so only a fake can. It answers
 * good.fake.test correctly, other.fake.test for bad.fake.test, AAAA for
 * badtype.fake.test, and spoof.fake.test from a second socket.
 */
async function fakeUpstream(): Promise<number> {
  const bind = async (): Promise<Socket> => {
    const s = createSocket("udp4");
    await new Promise<void>((r) => s.bind(0, "127.0.0.1", () => r()));
    fakes.push(s);
    return s;
  };
  const [main, spoofer] = [await bind(), await bind()];
  main.on("message", (m, from) => {
    const labels: string[] = [];
    let o = 12;
    while ((m[o] ?? 0) !== 0) {
      labels.push(m.toString("latin1", o + 1, o + 1 + (m[o] ?? 0)));
      o += (m[o] ?? 0) + 1;
    }
    const name = labels.join(".");
    const qtype = m.readUInt16BE(o + 1);
    const echo = name === "bad.fake.test" ? "other.fake.test" : name;
    const type = name === "badtype.fake.test" ? 28 : qtype;
    const q = Buffer.concat([...echo.split(".").map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])), Buffer.from([0, type >> 8, type & 0xff, 0, 1])]);
    const header = Buffer.from([m[0] ?? 0, m[1] ?? 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    const answer = Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 99]);
    (name === "spoof.fake.test" ? spoofer : main).send(Buffer.concat([header, q, answer]), from.port, from.address);
  });
  return main.address().port;
}

describe("upstream replies that do not fit the query", () => {
  it("rejects a reply to another question, of another type, or from another port (SERVFAIL)", async () => {
    const metrics = new Registry();
    const f = await service([parseUpstream(`127.0.0.1:${await fakeUpstream()}`)], {}, undefined, metrics);
    others.push(f.dns);
    const good = await dig(f.port, "good.fake.test", "A");
    expect([good.status, good.answer.map((a) => a.data)], good.text).toEqual(["NOERROR", ["192.0.2.99"]]);
    for (const n of ["bad.fake.test", "badtype.fake.test", "spoof.fake.test"]) {
      const r = await dig(f.port, n, "A");
      expect(r.status, `${n}\n${r.text}`).toBe("SERVFAIL");
    }
    const text = await metrics.getSingleMetricAsString("weft_dns_upstream_rejected_replies_total");
    expect(text).toMatch(/reason="question mismatch"\} [1-9]/);
    expect(text).toMatch(/reason="wrong source"\} [1-9]/);
  });
});
