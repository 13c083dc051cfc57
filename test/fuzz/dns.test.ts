/**
 * Fuzz target "dns": seeded, structured DNS messages against the real
 * server.
 *
 * Inputs are built field by field from the rng — header (opcode, QR, counts
 * that lie, 65535 of everything), question names (real cluster names in
 * random case, random and hostile labels, label types 1-3, names over 255
 * bytes, compression pointers to themselves, forward, out of range or in a
 * loop, no terminating zero), qtype/qclass edges, records in every section,
 * EDNS OPT variants (version, sizes 0-65535, DO, options with lengths right
 * or wrong, OPT twice or not at the root) — then sometimes mutated bytewise
 * or truncated.
 *
 * - "dns-handler": in process, through DnsHandler (the real zone, cache and
 *   forwarder, no upstream), for volume.
 * - "dns-udp": datagrams to a running server (the native batch path).
 * - "dns-udp6": the same to a server on ::1 (the IPv6 batch path).
 * - "dns-tcp": byte streams to the same server over TCP: several frames per
 *   segment, frames split over segments, length prefixes wrong (0, short,
 *   long, 65535), a prefix longer than the data and then the close.
 *
 * Invariants: the handler never throws and never logs a failure; every
 * answer parses strictly (checkMessage) and fits the transport (UDP: 512
 * bytes without EDNS, 1232 with); a UDP datagram is answered exactly once
 * unless counted as dropped; over TCP the server takes exactly the frames
 * the stream holds (an independent reading of the stream says which), counts
 * each as a request or a drop, closes on a frame shorter than a header
 * (malformed) or a message cut by the close (partial) and counts that, and
 * finishes every connection; a normal query is answered right afterwards.
 */
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { connect } from "node:net";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/common/log.js";
import { CACHE_DEFAULTS, DnsCache } from "../../src/dns/cache/cache.js";
import { ClusterZone } from "../../src/dns/cluster/zone.js";
import type { ZoneEndpoint, ZoneService } from "../../src/dns/cluster/records.js";
import { Forwarder } from "../../src/dns/forward/forwarder.js";
import { UpstreamSet } from "../../src/dns/forward/upstreams.js";
import { ClientAcl } from "../../src/dns/server/acl.js";
import { DnsCounters } from "../../src/dns/server/counters.js";
import { DnsHandler } from "../../src/dns/server/handler.js";
import { DnsService } from "../../src/dns/service.js";
import { nameToKey } from "../../src/dns/wire/query.js";
import { checkMessage, query } from "../../src/harness/dnswire.js";
import { freeUdpTcpPort } from "../../src/harness/unbound.js";
import { StaticView, WEB_SERVICE } from "../helpers/dns.js";
import { EDGE_BYTES, fuzz, mutateBytes, type Outcome, type Rng } from "./lib.js";

const Z = "cluster.local";
const SERVICES: ZoneService[] = [
  WEB_SERVICE,
  { namespace: "default", name: "db", type: "Headless", clusterIPs: [], ports: [{ name: "pg", protocol: "TCP", port: 5432 }], publishNotReadyAddresses: false },
  { namespace: "default", name: "ext", type: "ExternalName", clusterIPs: [], externalName: "db.example.test", ports: [], publishNotReadyAddresses: false },
];
const ENDPOINTS: ZoneEndpoint[] = [{ namespace: "default", service: "db", id: "db-0", addresses: ["198.18.1.5", "2001:db8::5"], hostname: "db-0", ready: true, ports: [] }];
const NAMES = [
  `web.default.svc.${Z}`, `db.default.svc.${Z}`, `db-0.db.default.svc.${Z}`, `ext.default.svc.${Z}`, `_pg._tcp.db.default.svc.${Z}`,
  `_http._tcp.web.default.svc.${Z}`, `dns-version.${Z}`, `198-18-1-5.default.pod.${Z}`, `default.svc.${Z}`, Z, `nope.${Z}`,
  "10.255.18.198.in-addr.arpa", "5.1.18.198.in-addr.arpa", "example.test", "weft-loop-probe", "",
  // IPv6: pod names (good, IPv4-mapped, spelling no address), the endpoint's ip6.arpa name, impossible ip6.arpa names.
  `2001-db8--5.default.pod.${Z}`, `--ffff-c000-201.default.pod.${Z}`, `2001-db8---5.default.pod.${Z}`, `2001-db8--5--1.default.pod.${Z}`,
  "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "x.8.b.d.0.1.0.0.2.ip6.arpa",
  "0.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "8.b.d.0.1.0.0.2.ip6.arpa",
];
const QTYPES = [0, 1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 43, 46, 48, 250, 251, 252, 253, 254, 255, 256, 32768, 65535];
const REFUSALS = new Set([1, 4, 5]); // FORMERR, NOTIMP, REFUSED (BADVERS is told by its OPT)

// ---------------------------------------------------------------- structured messages

const u16 = (v: number): Buffer => Buffer.from([(v >> 8) & 0xff, v & 0xff]);

function labels(rng: Rng, n: string): Buffer {
  const parts = n === "" ? [] : n.split(".").map((l) => Buffer.from([...l].map((c) => (rng.bool(0.3) ? c.toUpperCase() : c)).join(""), "latin1"));
  return Buffer.concat([...parts.map((p) => Buffer.concat([Buffer.from([p.length]), p])), Buffer.from([0])]);
}

/** A name in wire form, at offset `at` of the message (for pointers). */
function wireName(rng: Rng, at: number): Buffer {
  switch (rng.int(0, 44)) { // 7 hostile shapes in 45: most names are real ones, so the answers go deep
    case 0: return Buffer.from([0]);
    case 1: { // random labels, hostile bytes included
      const out: Buffer[] = [];
      for (let i = rng.int(1, 6); i > 0; i--) {
        const l = rng.length(63);
        out.push(Buffer.from([l]), Buffer.from(rng.bytes(l)));
      }
      return Buffer.concat([...out, Buffer.from([0])]);
    }
    case 2: { // longer than 255 bytes
      const out: Buffer[] = [];
      for (let i = 0; i < 5; i++) out.push(Buffer.from([63]), Buffer.alloc(63, 0x61 + i));
      return Buffer.concat([...out, Buffer.from([0])]);
    }
    case 3: // a reserved label type (0x40, 0x80) or a length past the end
      return Buffer.concat([Buffer.from([rng.pick([0x40, 0x41, 0x7f, 0x80, 0xbf, 63]), 0x61, 0x62]), rng.bool() ? Buffer.from([0]) : Buffer.alloc(0)]);
    case 4: // a pointer: to itself (a loop), forward, to the header, out of range
      return Buffer.concat([rng.bool() ? Buffer.from([3, 0x77, 0x65, 0x62]) : Buffer.alloc(0), Buffer.from([0xc0 | rng.int(0, 0x3f), rng.pick([at & 0xff, (at + 4) & 0xff, 0, 12, 0xff, rng.int(0, 255)])])]);
    case 5: // two pointers pointing at each other
      return Buffer.from([0xc0, (at + 2) & 0xff, 0xc0, at & 0xff]);
    case 6: // no terminating zero
      return Buffer.from([3, 0x77, 0x65, 0x62]);
    default:
      return labels(rng, rng.pick(NAMES));
  }
}

function opt(rng: Rng, at: number): Buffer {
  const options: Buffer[] = [];
  for (let i = rng.int(0, 3); i > 0; i--) {
    const data = Buffer.from(rng.bytes(rng.length(40)));
    const len = rng.bool(0.8) ? data.length : rng.pick([0, data.length + 1, 0xffff, rng.int(0, 100)]);
    options.push(u16(rng.pick([3, 8, 10, 12, 15, 65535, rng.int(0, 65535)])), u16(len), data);
  }
  const rdata = Buffer.concat(options);
  const rdlen = rng.bool(0.95) ? rdata.length : rng.pick([0, rdata.length + 1, 0xffff]);
  const owner = rng.bool(0.95) ? Buffer.from([0]) : wireName(rng, at);
  const ttl = Buffer.from([rng.bool(0.95) ? 0 : rng.pick(EDGE_BYTES), rng.bool(0.9) ? 0 : rng.int(1, 255), rng.bool() ? 0x80 : 0, rng.bool(0.9) ? 0 : rng.int(0, 255)]);
  return Buffer.concat([owner, u16(41), u16(rng.pick([0, 1, 511, 512, 513, 1232, 1233, 4096, 65535, rng.int(0, 65535)])), ttl, u16(rdlen), rdata]);
}

function record(rng: Rng, at: number): Buffer {
  if (rng.bool(0.3)) return opt(rng, at);
  const data = Buffer.from(rng.bytes(rng.length(30)));
  const rdlen = rng.bool(0.8) ? data.length : rng.pick([0, data.length + 1, 0xffff]);
  return Buffer.concat([wireName(rng, at), u16(rng.pick(QTYPES)), u16(rng.pick([1, 3, 254, 255, rng.int(0, 65535)])), Buffer.from(rng.bytes(4)), u16(rdlen), data]);
}

/** A hostile query: structure first, then sometimes bytewise mutation or truncation. */
function message(rng: Rng): Buffer {
  const qd = rng.bool(0.9) ? 1 : rng.pick([0, 2, 3]);
  const extra = { an: rng.bool(0.95) ? 0 : rng.int(1, 3), ns: rng.bool(0.95) ? 0 : rng.int(1, 2), ar: rng.bool(0.9) ? rng.int(0, 1) : rng.int(2, 3) };
  let flags = rng.bool(0.7) ? rng.pick([0x0100, 0x0110, 0x0000]) : rng.int(0, 0xffff) & ~0xf800;
  if (rng.bool(0.05)) flags |= 0x8000; // a response
  if (rng.bool(0.05)) flags |= rng.int(1, 15) << 11; // another opcode
  const parts: Buffer[] = [];
  let at = 12;
  const add = (b: Buffer): void => {
    parts.push(b);
    at += b.length;
  };
  for (let i = 0; i < qd; i++) add(Buffer.concat([wireName(rng, at), u16(rng.pick(QTYPES)), u16(rng.bool(0.9) ? 1 : rng.pick([0, 3, 254, 255, 65535]))]));
  for (let i = 0; i < extra.an + extra.ns; i++) add(record(rng, at));
  for (let i = 0; i < extra.ar; i++) add(rng.bool(0.8) ? opt(rng, at) : record(rng, at));
  const lie = (n: number): number => (rng.bool(0.95) ? n : rng.pick([0, n + 1, 0xffff, rng.int(0, 0xffff)]));
  const header = Buffer.concat([u16(rng.int(0, 0xffff)), u16(flags), u16(lie(qd)), u16(lie(extra.an)), u16(lie(extra.ns)), u16(lie(extra.ar))]);
  let m: Buffer = Buffer.concat([header, ...parts]);
  if (rng.bool(0.2)) m = Buffer.from(mutateBytes(rng, m));
  if (rng.bool(0.05)) m = m.subarray(0, rng.int(0, m.length));
  if (rng.bool(0.01)) m = Buffer.concat([m, Buffer.from(rng.bytes(rng.int(1000, 5000)))]); // bigger than any query slot
  return m;
}

/** What a client may receive: well formed, a response, our ID, within the transport's size. */
function judge(reply: Buffer, q: Buffer, tcp: boolean): "accepted" | "refused" {
  const bad = checkMessage(reply);
  if (bad) throw new Error(`malformed answer (${bad}) to ${q.toString("hex")}: ${reply.toString("hex")}`);
  if (!(reply[2]! & 0x80)) throw new Error(`answer without QR to ${q.toString("hex")}`);
  if (reply.readUInt16BE(0) !== q.readUInt16BE(0)) throw new Error(`answer with another ID to ${q.toString("hex")}`);
  const hasOpt = reply.length >= 23 && reply.readUInt16BE(10) > 0 && reply[reply.length - 11] === 0 && reply.readUInt16BE(reply.length - 10) === 41;
  if (!tcp && reply.length > (hasOpt ? 1232 : 512)) throw new Error(`UDP answer of ${reply.length} bytes (EDNS ${hasOpt}) to ${q.toString("hex")}`);
  const badvers = hasOpt && reply[reply.length - 6] === 1;
  return REFUSALS.has(reply[3]! & 0xf) || badvers ? "refused" : "accepted";
}

// ---------------------------------------------------------------- the server

const failures: string[] = [];
const log = pino({ level: "warn" }, { write: (s: string) => void failures.push(s) });
let dns: DnsService;
let port = 0;
let udp: UdpSocket;
/** The same server on ::1: the IPv6 batch path (recvmmsg/sendmmsg on sockaddr_in6). */
let dns6: DnsService;
let port6 = 0;
let udp6: UdpSocket;
let onReply: ((m: Buffer) => void) | undefined;

beforeAll(async () => {
  port = await freeUdpTcpPort();
  dns = new DnsService({
    listen: [{ host: "127.0.0.1", port }], zone: { domain: Z, ttl: 30, pods: "insecure" }, upstreams: [], policy: "random", allow: [],
  }, new StaticView(SERVICES, ENDPOINTS), log);
  await dns.start();
  udp = createSocket("udp4");
  udp.on("message", (m) => onReply?.(m));
  await new Promise<void>((r) => udp.bind(0, "127.0.0.1", () => r()));
  port6 = await freeUdpTcpPort();
  dns6 = new DnsService({
    listen: [{ host: "::1", port: port6 }], zone: { domain: Z, ttl: 30, pods: "insecure" }, upstreams: [], policy: "random", allow: [],
  }, new StaticView(SERVICES, ENDPOINTS), log);
  await dns6.start();
  udp6 = createSocket("udp6");
  udp6.on("message", (m) => onReply?.(m));
  await new Promise<void>((r) => udp6.bind(0, "::1", () => r()));
});

afterAll(async () => {
  udp?.close();
  udp6?.close();
  await dns?.close();
  await dns6?.close();
});

const handledBy = (d: DnsService): number => d.counters.dropped + d.counters.requests[0]!.reduce((a, b) => a + b, 0) + d.counters.requests[1]!.reduce((a, b) => a + b, 0);
const handled = (): number => handledBy(dns);
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

async function untilTrue(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`${what} within ${ms} ms`);
    await tick();
  }
}

// ---------------------------------------------------------------- targets

describe("fuzz dns", () => {
  it("dns-handler: in process, never throws, every answer well formed", async () => {
    const counters = new DnsCounters();
    const zone = new ClusterZone({ domain: Z, ttl: 30, pods: "verified" }, SERVICES, (ns, n) => ENDPOINTS.filter((e) => e.namespace === ns && e.service === n));
    const handler = new DnsHandler({
      zone: () => zone, zoneKey: nameToKey(Z), cache: new DnsCache({ ...CACHE_DEFAULTS, now: Date.now }), acl: new ClientAcl([], () => new Set()), counters, log, maxWaiting: 100,
      forwarder: new Forwarder({ upstreams: new UpstreamSet([], "random"), maxConcurrent: 10, deadlineMs: 100, attemptMs: 100, healthCheckMs: 1000, log: silentLogger }),
    });
    const out = Buffer.alloc(65535);
    const report = await fuzz("dns-handler", { iterations: 30_000 }, async (rng) => {
      const q = message(rng);
      const tcp = rng.bool(0.2);
      const from = rng.bool(0.95) ? "127.0.0.1" : rng.pick(["192.0.2.1", "::1", "2001:db8::1", "::ffff:127.0.0.1"]);
      const r = handler.handle(q, q.length, from, tcp, out);
      const reply = typeof r === "number" ? (r > 0 ? Buffer.from(out.subarray(0, r)) : undefined) : await r;
      if (!reply) {
        if (typeof r === "number" && q.length >= 12 && !(q[2]! & 0x80)) throw new Error(`no answer to a query: ${q.toString("hex")}`);
        return "refused";
      }
      return judge(reply, q, tcp);
    });
    expect(report.refused + report.accepted).toBeGreaterThan(0);
    expect(failures).toEqual([]);
  });

  it.each([
    { target: "dns-udp", v6: false, iterations: 4000 },
    { target: "dns-udp6", v6: true, iterations: 2000 },
  ])("$target: datagrams to the running server", async ({ target, v6, iterations }) => {
    let seen = 0;
    const d = v6 ? dns6 : dns;
    expect(d.udpPaths().map((p) => p.path), "the batch path").toEqual(["batch"]);
    const report = await fuzz(target, { iterations }, async (rng): Promise<Outcome> => {
      const q = message(rng);
      const h0 = handledBy(d);
      const d0 = d.counters.dropped;
      const replies: Buffer[] = [];
      onReply = (m) => replies.push(m);
      if (v6) udp6.send(q, port6, "::1");
      else udp.send(q, port, "127.0.0.1");
      await untilTrue(() => handledBy(d) > h0, 2000, `the server took datagram ${q.toString("hex").slice(0, 200)}`);
      if (handledBy(d) !== h0 + 1) throw new Error(`one datagram counted ${handledBy(d) - h0} times`);
      if (d.counters.dropped > d0) {
        await tick();
        if (replies.length) throw new Error(`a dropped datagram was answered: ${q.toString("hex")}`);
        return "refused";
      }
      await untilTrue(() => replies.length > 0, 2000, `an answer to ${q.toString("hex").slice(0, 200)}`);
      seen++;
      return judge(replies[0]!, q, false);
    });
    onReply = undefined;
    expect(seen).toBeGreaterThan(report.iterations / 3);
    expect(failures).toEqual([]);
  });

  it("dns-tcp: byte streams with wrong, split and stacked frames", async () => {
    const report = await fuzz("dns-tcp", { iterations: 600 }, async (rng): Promise<Outcome> => {
      // The stream: frames with right or wrong prefixes, maybe a last one longer than what follows.
      const pieces: Buffer[] = [];
      for (let i = rng.int(1, 4); i > 0; i--) {
        const m = message(rng);
        const len = rng.bool(0.92) ? m.length : rng.pick([0, 1, 11, 12, m.length - 1, m.length + 1, 0xffff]);
        pieces.push(u16(len & 0xffff), m);
      }
      if (rng.bool(0.15)) {
        const m = message(rng);
        pieces.push(u16(m.length + rng.int(1, 300)), m);
      }
      const stream = Buffer.concat(pieces);
      // What the server must take from it, read independently of its FrameReader.
      const frames: Buffer[] = [];
      let malformed = false;
      let p = 0;
      while (p + 2 <= stream.length) {
        const l = stream.readUInt16BE(p);
        if (p + 2 + l > stream.length) break;
        if (l < 12) {
          malformed = true;
          break;
        }
        frames.push(stream.subarray(p + 2, p + 2 + l));
        p += 2 + l;
      }
      const partial = !malformed && p < stream.length;
      const before = { handled: handled(), dropped: dns.counters.dropped, malformed: dns.counters.tcpClosed.malformed, partial: dns.counters.tcpClosed.partial };
      const s = connect({ host: "127.0.0.1", port });
      s.setNoDelay(true);
      const replies: Buffer[] = [];
      let buf = Buffer.alloc(0);
      s.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          replies.push(Buffer.from(buf.subarray(2, 2 + buf.readUInt16BE(0))));
          buf = buf.subarray(2 + buf.readUInt16BE(0));
        }
      });
      const closed = new Promise<void>((r) => s.once("close", () => r()));
      s.on("error", () => undefined);
      await new Promise<void>((r, j) => {
        s.once("connect", () => r());
        s.once("error", j);
      });
      // Written in 1-6 segments cut anywhere (several frames per segment, frames split over segments).
      const cuts = Array.from({ length: rng.int(0, 5) }, () => rng.int(0, stream.length)).sort((a, b) => a - b);
      let from = 0;
      for (const c of [...cuts, stream.length]) {
        if (c > from && !s.destroyed) s.write(stream.subarray(from, c));
        from = Math.max(from, c);
        if (rng.bool(0.5)) await new Promise((r) => setTimeout(r, rng.int(0, 2)));
      }
      s.end();
      await Promise.race([closed, new Promise((_, j) => setTimeout(() => j(new Error(`the server did not finish the connection for stream ${stream.toString("hex").slice(0, 400)}`)), 3000))]);
      const took = handled() - before.handled;
      const dropped = dns.counters.dropped - before.dropped;
      if (took !== frames.length) throw new Error(`the server took ${took} messages from a stream of ${frames.length}: ${stream.toString("hex").slice(0, 400)}`);
      if (dns.counters.tcpClosed.malformed - before.malformed !== (malformed ? 1 : 0)) throw new Error(`malformed close miscounted for ${stream.toString("hex").slice(0, 400)}`);
      if (dns.counters.tcpClosed.partial - before.partial !== (partial ? 1 : 0)) throw new Error(`partial close miscounted for ${stream.toString("hex").slice(0, 400)}`);
      const expected = frames.length - dropped;
      if (malformed || partial ? replies.length > expected : replies.length !== expected) {
        throw new Error(`${replies.length} answers to ${expected} answerable messages: ${stream.toString("hex").slice(0, 400)}`);
      }
      const outcomes = replies.map((r) => {
        const q = frames.find((f) => f.readUInt16BE(0) === r.readUInt16BE(0));
        if (!q) throw new Error(`an answer with an ID no query had: ${r.toString("hex")}`);
        return judge(r, q, true);
      });
      return malformed || partial || dropped > 0 || outcomes.includes("refused") ? "refused" : "accepted";
    });
    expect(report.iterations).toBeGreaterThan(0);
    expect(failures).toEqual([]);
    await untilTrue(() => dns.tcpConnections === 0, 2000, "every TCP connection gone");
  });

  it("afterwards a normal query still gets the right answer", async () => {
    const r = await query("127.0.0.1", port, `web.default.svc.${Z}`, "A", { timeoutMs: 2000 });
    expect([r.rcodeName, r.answers.map((a) => a.data)]).toEqual(["NOERROR", ["198.18.255.10"]]);
    const t = await query("127.0.0.1", port, `db-0.db.default.svc.${Z}`, "AAAA", { tcp: true, timeoutMs: 2000 });
    expect([t.rcodeName, t.answers.map((a) => a.data)]).toEqual(["NOERROR", ["2001:db8::5"]]);
  });
});
