/**
 * The forwarder's TCP retry against an upstream that misbehaves over TCP
 * after a truncated UDP answer, and upstream answers with rcodes no metric
 * label should be minted for.
 *
 * A fake upstream, written here on purpose: no real resolver can be made to
 * answer over UDP with TC and then close its TCP connection early, send half
 * a message, or put arbitrary extended rcodes in its answers. It answers UDP
 * queries by `mode`: "tc" (header + question, TC set), "ok" (one A record,
 * TTL 1) or "rcode" (extended rcode taken from the query name "r<N>..."),
 * and treats TCP connections by `tcpMode`.
 */
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { createServer, type Server, type Socket } from "node:net";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/common/log.js";
import { parseUpstream } from "../../src/dns/forward/upstreams.js";
import { DnsService } from "../../src/dns/service.js";
import { query } from "../../src/harness/dnswire.js";
import { freeUdpTcpPort } from "../../src/harness/unbound.js";
import { dig, rr, StaticView, until, WEB_SERVICE } from "../helpers/dns.js";

type TcpMode = "close" | "half" | "long-prefix" | "wrong-id" | "hang";
let mode: "tc" | "ok" | "rcode" = "tc";
let tcpMode: TcpMode = "close";
let udp: UdpSocket;
let tcp: Server;
const tcpConns = new Set<Socket>();
let upPort = 0;
let nowMs = 1_700_000_000_000;
let dns: DnsService;
let port = 0;
const metrics = new Registry();

/** Question name (dotted, lower case) and the offset after the question of a query. */
function question(m: Buffer): { name: string; end: number } {
  const labels: string[] = [];
  let o = 12;
  while ((m[o] ?? 0) !== 0) {
    labels.push(m.toString("latin1", o + 1, o + 1 + (m[o] ?? 0)).toLowerCase());
    o += (m[o] ?? 0) + 1;
  }
  return { name: labels.join("."), end: o + 5 };
}

/** A reply to query `m`: flags, answer records (raw), and an OPT with the given extended rcode bits. */
function reply(m: Buffer, flags: number, answers: Buffer[] = [], extRcode?: number): Buffer {
  const { end } = question(m);
  const h = Buffer.alloc(12);
  m.copy(h, 0, 0, 2);
  h.writeUInt16BE(flags, 2);
  h.writeUInt16BE(1, 4);
  h.writeUInt16BE(answers.length, 6);
  h.writeUInt16BE(extRcode === undefined ? 0 : 1, 10);
  const opt = extRcode === undefined ? [] : [Buffer.from([0, 0, 41, 4, 0xd0, extRcode, 0, 0, 0, 0, 0])];
  return Buffer.concat([h, m.subarray(12, end), ...answers, ...opt]);
}
const A_RECORD = Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 192, 0, 2, 7]); // TTL 1

beforeAll(async () => {
  upPort = await freeUdpTcpPort();
  udp = createSocket("udp4");
  udp.on("message", (m, from) => {
    let out: Buffer;
    if (mode === "tc") out = reply(m, 0x8380); // QR RD RA TC
    else if (mode === "ok") out = reply(m, 0x8180, [A_RECORD]);
    else {
      const n = Number(/^r(\d+)\./.exec(question(m).name)?.[1] ?? 0);
      out = reply(m, 0x8180 | (n & 0xf), [], n >> 4);
    }
    udp.send(out, from.port, from.address);
  });
  await new Promise<void>((r) => udp.bind(upPort, "127.0.0.1", () => r()));
  tcp = createServer((s) => {
    tcpConns.add(s);
    s.on("close", () => tcpConns.delete(s));
    s.on("error", () => undefined);
    if (tcpMode === "close") return void s.end();
    s.once("data", (d: Buffer) => {
      const q = d.subarray(2);
      const full = reply(q, 0x8180, [A_RECORD]);
      if (tcpMode === "half") s.end(Buffer.concat([Buffer.from([full.length >> 8, full.length & 0xff]), full.subarray(0, 10)]));
      else if (tcpMode === "long-prefix") s.end(Buffer.concat([Buffer.from([0x40, 0x00]), full]));
      else if (tcpMode === "wrong-id") {
        full.writeUInt16BE(full.readUInt16BE(0) ^ 0xffff, 0);
        s.end(Buffer.concat([Buffer.from([full.length >> 8, full.length & 0xff]), full]));
      } // hang: never answers
    });
  });
  await new Promise<void>((r) => tcp.listen(upPort, "127.0.0.1", () => r()));
  port = await freeUdpTcpPort();
  dns = new DnsService({
    listen: [{ host: "127.0.0.1", port }], zone: { domain: "cluster.local", ttl: 30, pods: "disabled" },
    upstreams: [parseUpstream(`127.0.0.1:${upPort}`)], policy: "sequential", allow: [],
    deadlineMs: 600, attemptMs: 250, healthCheckMs: 100_000, now: () => nowMs,
  }, new StaticView([WEB_SERVICE]), silentLogger, metrics);
  await dns.start();
});

afterAll(async () => {
  await dns?.close();
  for (const s of tcpConns) s.destroy();
  tcp?.close();
  udp?.close();
});

const settled = (): Promise<void> => until(() => {
  const f = dns.forwarder.load();
  return f.active === 0 && f.coalesced === 0 && f.pending === 0;
}, 3000, 10, "forwarder slots back to zero");

describe("a truncated UDP answer, then an upstream that fails over TCP", () => {
  it.each<{ tcp: TcpMode; what: string }>([
    { tcp: "close", what: "accepts and closes at once" },
    { tcp: "half", what: "sends half a message, then closes" },
    { tcp: "long-prefix", what: "sends a length prefix larger than the message, then closes" },
    { tcp: "wrong-id", what: "answers with another ID" },
    { tcp: "hang", what: "accepts and never answers" },
  ])("$what: SERVFAIL within the deadline, and the forwarder's slots come back to zero", async ({ tcp: t }) => {
    mode = "tc";
    tcpMode = t;
    const name = `${t}.fake.test`;
    const t0 = performance.now();
    const r = await dig(port, "+time=3", name, "A");
    expect(r.status, r.text).toBe("SERVFAIL");
    expect(performance.now() - t0, "answered within the 600 ms deadline (+ slack)").toBeLessThan(1500);
    await settled();
    // ... and the name is not stuck behind a query that never settles: asked again, answered again.
    mode = "ok";
    const again = await dig(port, name, "A");
    expect([again.status, again.answer.map(rr)], again.text).toEqual(["NOERROR", [`${name}. 1 A 192.0.2.7`]]);
    await settled();
  });

  it("with a cached answer gone stale, the stale answer is served instead (RFC 8767)", async () => {
    mode = "ok";
    const name = "stale.fake.test";
    expect((await dig(port, name, "A")).answer.map(rr)).toEqual([`${name}. 1 A 192.0.2.7`]);
    nowMs += 5000;
    mode = "tc";
    tcpMode = "half";
    const r = await dig(port, "+time=3", name, "A");
    expect([r.status, r.answer.map(rr)], r.text).toEqual(["NOERROR", [`${name}. 30 A 192.0.2.7`]]);
    await settled();
  });
});

describe("upstream rcodes in metric labels", () => {
  it("200 different extended rcodes make a bounded number of label values", async () => {
    mode = "rcode";
    await Promise.all(Array.from({ length: 200 }, (_, k) => query("127.0.0.1", port, `r${k * 20}.fake.test`, "A", { timeoutMs: 2000 }).catch(() => undefined)));
    const text = await metrics.getSingleMetricAsString("weft_dns_upstream_request_seconds");
    const labels = new Set([...text.matchAll(/rcode="([^"]*)"/g)].map((m) => m[1]));
    expect(labels.size, [...labels].join(" ")).toBeLessThanOrEqual(18);
    await settled();
  });
});
