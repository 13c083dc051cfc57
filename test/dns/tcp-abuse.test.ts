/**
 * DNS over TCP under abuse (RFC 7766 §6.2.3, §10). The hostile clients are
 * written here: raw sockets from distinct loopback source addresses
 * (127.0.x.y, all local on Linux), each doing one thing wrong — trickling a
 * message a byte at a time, connecting and saying nothing, opening more
 * connections than its share, pipelining queries and never reading the
 * answers. The normal clients are the real `dig` (UDP and +tcp). The server
 * forwards to a real unbound. Each closing reason is counted
 * (weft_dns_tcp_closed_total{reason}).
 *
 * The ACL at accept needs a client that is neither loopback nor an address
 * of the server's host: that case runs the server in a network namespace of
 * its own (a child process) with the client in a second one, joined by veth.
 */
import { connect, type Socket } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/common/log.js";
import { parseUpstream } from "../../src/dns/forward/upstreams.js";
import { DnsService } from "../../src/dns/service.js";
import { encodeQuery } from "../../src/harness/dnswire.js";
import { freeUdpTcpPort, UnboundServer } from "../../src/harness/unbound.js";
import { dig, rr, sleep, StaticView, until, WEB_SERVICE } from "../helpers/dns.js";

const uz = UnboundServer.testZone();
const LIMITS = { maxConnections: 256, maxPerClient: 4, idleMs: 700, readTimeoutMs: 400, maxPendingBytes: 16 * 1024, maxInflight: 8 };
const WEB = "web.default.svc.cluster.local";
const WEB_RR = `${WEB}. 30 A 198.18.255.10`;

let dir: string;
let unbound: UnboundServer;
let dns: DnsService;
let port = 0;
const metrics = new Registry();
const sockets = new Set<Socket>();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "weft-dns-tcp-"));
  unbound = await UnboundServer.start({ dir: join(dir, "unbound"), authZones: [{ name: uz.name, zonefile: uz.text }] });
  port = await freeUdpTcpPort();
  dns = new DnsService({
    listen: [{ host: "127.0.0.1", port }], zone: { domain: "cluster.local", ttl: 30, pods: "disabled" },
    upstreams: [parseUpstream(`127.0.0.1:${unbound.port}`)], policy: "sequential", allow: [], tcp: LIMITS,
  }, new StaticView([WEB_SERVICE]), silentLogger, metrics);
  await dns.start();
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await dns?.close();
  await unbound?.close();
  rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------- hostile clients

/** A TCP connection to the server from `from` (a loopback address); resolves once connected. */
function open(from: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port, localAddress: from });
    sockets.add(s);
    s.setNoDelay(true);
    s.once("connect", () => resolve(s));
    s.once("error", reject);
    s.on("close", () => {
      sockets.delete(s);
      reject(new Error("closed before connecting"));
    });
    s.on("error", () => undefined);
  });
}

/** Resolves when the server has closed `s` (the peer's FIN or RST), with the time it took from now. */
function closedBy(s: Socket): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    if (s.destroyed || s.readableEnded) return resolve(0);
    const done = (): void => resolve(performance.now() - t0);
    s.once("end", done);
    s.once("close", done);
  });
}

const frame = (m: Buffer): Buffer => Buffer.concat([Buffer.from([m.length >> 8, m.length & 0xff]), m]);

/** Sends one framed query on `s` and resolves with the first answer frame (parsed header fields). */
function ask(s: Socket, name = WEB, id = 0x4242): Promise<{ id: number; rcode: number; an: number }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
      s.off("data", onData);
      resolve({ id: buf.readUInt16BE(2), rcode: buf[5]! & 0xf, an: buf.readUInt16BE(8) });
    };
    s.on("data", onData);
    s.once("close", () => reject(new Error("closed before the answer")));
    s.write(frame(encodeQuery(name, "A", { id })));
  });
}

const closed = (): Record<string, number> => ({ ...dns.counters.tcpClosed });
const delta = (before: Record<string, number>, reason: string): number => (dns.counters.tcpClosed[reason as keyof typeof dns.counters.tcpClosed] ?? 0) - (before[reason] ?? 0);

// ---------------------------------------------------------------- one reason at a time

describe("each hostile connection is closed for its reason, and counted", () => {
  it("a message trickled a byte at a time is cut at the read deadline from its first byte", async () => {
    const before = closed();
    const s = await open("127.0.3.1");
    const q = frame(encodeQuery(WEB, "A"));
    let i = 0;
    const trickle = setInterval(() => !s.destroyed && i < q.length && s.write(q.subarray(i, ++i)), 100);
    try {
      const ms = await Promise.race([closedBy(s), sleep(3000).then(() => Infinity)]);
      expect(ms, "closed within the read deadline (+ sweep slack)").toBeLessThan(LIMITS.readTimeoutMs + 600);
      expect(ms).toBeGreaterThanOrEqual(LIMITS.readTimeoutMs - 150); // not before: it started 1 byte in
    } finally {
      clearInterval(trickle);
    }
    expect(delta(before, "deadline")).toBe(1);
  });

  it("a connection that sends nothing is closed after the idle timeout", async () => {
    const before = closed();
    const s = await open("127.0.3.2");
    const ms = await Promise.race([closedBy(s), sleep(4000).then(() => Infinity)]);
    expect(ms).toBeLessThan(LIMITS.idleMs + 600);
    expect(ms).toBeGreaterThanOrEqual(LIMITS.idleMs - 150);
    expect(delta(before, "idle")).toBe(1);
  });

  it("a connection kept busy is not idle: queries every 300 ms for 2 s, all answered, then idle-closed", async () => {
    const before = closed();
    const s = await open("127.0.3.3");
    for (let k = 0; k < 7; k++) {
      expect(await ask(s, WEB, 100 + k)).toEqual({ id: 100 + k, rcode: 0, an: 1 });
      await sleep(300);
    }
    expect(s.destroyed).toBe(false);
    await closedBy(s);
    expect(delta(before, "idle")).toBe(1);
  });

  it("past the per-client cap the client's longest-idle connection goes, and the new one is answered", async () => {
    const before = closed();
    const conns: Socket[] = [];
    for (let k = 0; k < LIMITS.maxPerClient; k++) conns.push(await open("127.0.3.4"));
    expect(await ask(conns[0]!)).toMatchObject({ rcode: 0, an: 1 }); // the first is now the most recently active
    const gone = closedBy(conns[1]!);
    const fresh = await open("127.0.3.4");
    expect(await Promise.race([gone, sleep(1000).then(() => -1)])).toBeGreaterThanOrEqual(0);
    expect(await ask(fresh)).toMatchObject({ rcode: 0, an: 1 });
    expect([conns[0]!.destroyed, conns[2]!.destroyed, conns[3]!.destroyed]).toEqual([false, false, false]);
    expect(delta(before, "client_cap")).toBe(1);
    conns.forEach((c) => c.destroy());
    fresh.destroy();
  });

  it("with one connection per client, each new one replaces the last (the count survives evictions)", async () => {
    const p1 = await freeUdpTcpPort();
    const one = new DnsService({
      listen: [{ host: "127.0.0.1", port: p1 }], zone: { domain: "cluster.local", ttl: 30, pods: "disabled" },
      upstreams: [], policy: "sequential", allow: [], tcp: { ...LIMITS, maxPerClient: 1 },
    }, new StaticView([WEB_SERVICE]), silentLogger);
    await one.start();
    try {
      const conns: Socket[] = [];
      for (let k = 0; k < 4; k++) {
        const s = connect({ host: "127.0.0.1", port: p1, localAddress: "127.0.3.9" });
        sockets.add(s);
        s.on("error", () => undefined);
        await new Promise((r) => s.once("connect", r));
        conns.push(s);
        await until(() => one.tcpConnections === 1 && one.counters.tcpClosed.client_cap === k, 1000, 5, `connection ${k + 1} replaced the one before`);
      }
      expect(await ask(conns[3]!)).toMatchObject({ rcode: 0, an: 1 });
    } finally {
      await one.close();
    }
  });

  it("past the total cap the longest-idle connection goes, and a new client (dig +tcp) is answered", async () => {
    await until(() => dns.tcpConnections === 0, 3000, 20, "earlier connections gone");
    const before = closed();
    const conns: Socket[] = [];
    for (let k = 0; k < LIMITS.maxConnections; k++) conns.push(await open(`127.1.${k >> 6}.${(k & 63) + 1}`));
    await until(() => dns.tcpConnections === LIMITS.maxConnections, 2000, 10, "all accepted");
    const gone = closedBy(conns[0]!);
    const r = await dig(port, "-b", "127.1.200.1", "+tcp", WEB, "A");
    expect([r.status, r.answer.map(rr)], r.text).toEqual(["NOERROR", [WEB_RR]]);
    expect(await Promise.race([gone, sleep(1000).then(() => -1)])).toBeGreaterThanOrEqual(0);
    expect(delta(before, "total_cap")).toBeGreaterThanOrEqual(1);
    expect(conns.slice(2).filter((c) => c.destroyed)).toHaveLength(0); // only the longest-idle went
    conns.forEach((c) => c.destroy());
  });

  it("frames shorter than a DNS header (empty ones every 100 ms) do not keep a connection alive: closed at the first", async () => {
    const before = closed();
    const s = await open("127.0.3.7");
    const t = setInterval(() => !s.destroyed && s.write(Buffer.from([0, 0])), 100);
    try {
      expect(await Promise.race([closedBy(s), sleep(2000).then(() => Infinity)])).toBeLessThan(500);
    } finally {
      clearInterval(t);
    }
    expect(delta(before, "malformed")).toBe(1);
  });

  it("a length prefix larger than what follows, then close: counted as a partial message", async () => {
    const before = closed();
    const s = await open("127.0.3.5");
    s.end(Buffer.concat([Buffer.from([0x01, 0x00]), encodeQuery(WEB, "A")])); // says 256 bytes, sends 47
    await closedBy(s);
    await until(() => delta(before, "partial") === 1, 2000, 10, "partial counted");
  });

  it("a query followed by the client's half-close is still answered", async () => {
    const s = await open("127.0.3.6");
    const got = ask(s, uz.a.name, 0x5151); // forwarded: answered after the client has sent its FIN
    s.end();
    expect(await got).toMatchObject({ id: 0x5151, rcode: 0, an: 1 });
  });

  it("100 pipelined queries that need the upstream, then the client's half-close: all 100 answered", async () => {
    const s = await open("127.0.3.8");
    let buf = Buffer.alloc(0);
    const ids = new Set<number>();
    s.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        ids.add(buf.readUInt16BE(2));
        buf = buf.subarray(2 + buf.readUInt16BE(0));
      }
    });
    const gone = closedBy(s);
    s.end(Buffer.concat(Array.from({ length: 100 }, (_, i) => frame(encodeQuery(`p${i}.${uz.name}`, "A", { id: i })))));
    await Promise.race([gone, sleep(5000)]);
    expect(ids.size).toBe(100);
  });
});

// ---------------------------------------------------------------- backpressure

/** Writes framed queries as fast as the socket takes them (respecting its own backpressure); never reads. */
function pipeline(s: Socket, stop: () => boolean): { sent: () => number } {
  let sent = 0;
  const batch = Buffer.concat(Array.from({ length: 256 }, (_, i) => frame(encodeQuery(i % 17 === 0 ? uz.a.name : WEB, "A", { id: i }))));
  const pump = (): void => {
    while (!stop() && !s.destroyed) {
      sent += 256;
      if (!s.write(batch)) {
        s.once("drain", pump);
        return;
      }
    }
  };
  s.pause(); // never reads
  pump();
  return { sent: () => sent };
}

describe("a client that pipelines and never reads", () => {
  it("stops being read once its unsent answers pass the bound, and is closed (backpressure) when it stays stuck", async () => {
    const before = closed();
    const handledBefore = dns.counters.requests[1]!.reduce((a, b) => a + b, 0);
    const s = await open("127.0.5.1");
    let stop = false;
    const p = pipeline(s, () => stop);
    const gone = closedBy(s);
    const ms = await Promise.race([gone, sleep(8000).then(() => Infinity)]);
    stop = true;
    const handled = dns.counters.requests[1]!.reduce((a, b) => a + b, 0) - handledBefore;
    // The server read what filled the kernel's socket buffers and its own bound, then stopped: far less than was sent.
    expect(ms).toBeLessThan(8000);
    expect(handled).toBeLessThan(p.sent());
    expect(delta(before, "backpressure")).toBe(1);
  });
});

// ---------------------------------------------------------------- all at once

describe("under many trickling connections and pipelining clients that never read", () => {
  it.each([
    { tricklers: 200, addresses: 50, what: "under the total cap: the tricklers are cut at the read deadline", reason: "deadline" as const },
    { tricklers: 360, addresses: 120, what: "over the total cap: they evict each other, fullest client first", reason: "total_cap" as const },
  ])("$tricklers tricklers from $addresses addresses, $what; normal UDP and TCP clients (dig) are answered, memory stays bounded", async ({ tricklers, addresses, reason }) => {
    await until(() => dns.tcpConnections === 0, 3000, 20, "earlier connections gone");
    const before = closed();
    let stop = false;
    const attackers: Promise<void>[] = [];
    // Each trickler sends a query a byte every 150 ms and reconnects when cut, as an attacker would.
    const q = frame(encodeQuery(WEB, "A"));
    for (let k = 0; k < tricklers; k++) {
      attackers.push((async () => {
        const from = `127.0.6.${(k % addresses) + 1}`;
        while (!stop) {
          const s = await open(from).catch(() => undefined);
          if (!s) {
            await sleep(20);
            continue;
          }
          let i = 0;
          const t = setInterval(() => !s.destroyed && s.write(q.subarray(i, ++i)), 150);
          await closedBy(s);
          clearInterval(t);
        }
      })());
    }
    // Two pipeliners that never read, reconnecting when cut.
    for (let k = 0; k < 2; k++) {
      attackers.push((async () => {
        while (!stop) {
          const s = await open(`127.0.9.${k + 1}`).catch(() => undefined);
          if (!s) continue;
          pipeline(s, () => stop);
          await closedBy(s);
        }
      })());
    }
    await sleep(500);
    const mem0 = process.memoryUsage();
    const results: string[] = [];
    const t0 = performance.now();
    for (let k = 0; k < 10; k++) {
      const [t, u] = await Promise.all([dig(port, "-b", "127.0.10.1", "+tcp", WEB, "A"), dig(port, "-b", "127.0.10.2", WEB, "A")]);
      results.push(`tcp ${t.status} ${t.answer.map(rr).join()}`, `udp ${u.status} ${u.answer.map(rr).join()}`);
      await sleep(100);
    }
    const elapsed = performance.now() - t0;
    const mem1 = process.memoryUsage();
    stop = true;
    for (const s of sockets) s.destroy();
    await Promise.all(attackers);
    expect(results.filter((r) => !r.endsWith(`NOERROR ${WEB_RR}`)), results.join("\n")).toEqual([]);
    expect(elapsed).toBeLessThan(10 * 2000);
    expect(delta(before, reason), JSON.stringify(dns.counters.tcpClosed)).toBeGreaterThan(0);
    expect(delta(before, "backpressure"), "the pipeliners closed when stuck").toBeGreaterThan(0);
    // Bounded: per connection one message in and the pending bound out; the rest is in kernel buffers.
    const grew = (mem1.heapUsed + mem1.arrayBuffers - mem0.heapUsed - mem0.arrayBuffers) / 2 ** 20;
    expect(grew, "heap + buffers growth during the abuse (MiB)").toBeLessThan(48);
    const text = await metrics.getSingleMetricAsString("weft_dns_tcp_closed_total");
    expect(text).toMatch(new RegExp(`reason="${reason}"\\} [1-9]`));
  }, 30_000);
});
