/**
 * Malformed and hostile datagrams: 100k of them (random bytes, broken
 * queries of every kind) sent in paced batches, then the server must still
 * answer correctly, its counters must account for every datagram, and the
 * handler must never have thrown. Specific packets' answers are checked one
 * by one (raw bytes, and with dig where dig can send them).
 */
import pino from "pino";
import { createSocket, type Socket } from "node:dgram";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DnsService } from "../../src/dns/service.js";
import { freeUdpTcpPort } from "../../src/harness/unbound.js";
import { dig, rr, StaticView, udpExchange, until, WEB_SERVICE } from "../helpers/dns.js";

const Z = "cluster.local";
const TOTAL = 100_000;
const BATCH = 200;

let dns: DnsService;
let port = 0;
const errors: string[] = [];

beforeAll(async () => {
  port = await freeUdpTcpPort();
  const log = pino({ level: "warn" }, { write: (s: string) => void errors.push(s) });
  // No upstream: anything that is not ours fails fast (SERVFAIL) instead of loading a resolver.
  dns = new DnsService({ listen: [{ host: "127.0.0.1", port }], zone: { domain: Z, ttl: 30, pods: "disabled" }, upstreams: [], policy: "random", allow: [] }, new StaticView([WEB_SERVICE]), log);
  await dns.start();
});
afterAll(async () => {
  await dns?.close();
});

// ---------------------------------------------------------------- packet building

const u16 = (v: number): Buffer => Buffer.from([(v >> 8) & 0xff, v & 0xff]);
function header(o: { id?: number; flags?: number; qd?: number; an?: number; ns?: number; ar?: number } = {}): Buffer {
  return Buffer.concat([u16(o.id ?? 0x1234), u16(o.flags ?? 0x0100), u16(o.qd ?? 1), u16(o.an ?? 0), u16(o.ns ?? 0), u16(o.ar ?? 0)]);
}
const wireName = (labels: readonly string[]): Buffer => Buffer.concat([...labels.map((l) => Buffer.concat([Buffer.from([Buffer.byteLength(l, "latin1")]), Buffer.from(l, "latin1")])), Buffer.from([0])]);
const question = (labels: readonly string[], type = 1): Buffer => Buffer.concat([wireName(labels), u16(type), u16(1)]);
function opt(o: { version?: number; size?: number; owner?: Buffer } = {}): Buffer {
  return Buffer.concat([o.owner ?? Buffer.from([0]), u16(41), u16(o.size ?? 1232), Buffer.from([0, o.version ?? 0, 0, 0]), u16(0)]);
}
const WEB = ["web", "default", "svc", "cluster", "local"];
const query = (o: Parameters<typeof header>[0] = {}, ...rest: Buffer[]): Buffer => Buffer.concat([header(o), question(WEB), ...rest]);

interface Reply { id: number; qr: boolean; opcode: number; rcode: number; qd: number; an: number; ar: number; optExtRcode?: number; optVersion?: number }
function decode(b: Buffer): Reply {
  const f = b.readUInt16BE(2);
  const ar = b.readUInt16BE(10);
  const r: Reply = { id: b.readUInt16BE(0), qr: (f & 0x8000) !== 0, opcode: (f >> 11) & 0xf, rcode: f & 0xf, qd: b.readUInt16BE(4), an: b.readUInt16BE(6), ar };
  if (ar > 0 && b.length >= 23 && b[b.length - 11] === 0 && b.readUInt16BE(b.length - 10) === 41) {
    r.optExtRcode = b[b.length - 6];
    r.optVersion = b[b.length - 5];
  }
  return r;
}
async function ask(p: Buffer): Promise<Reply | undefined> {
  const b = await udpExchange(port, p, 500);
  return b && decode(b);
}

// ---------------------------------------------------------------- the flood

type Outcome = "drop" | "formerr" | "notimp" | "badvers" | "good" | "any";
const GOOD_ID = 0xabcd;
let seed = 0x5eed1234;
const rnd = (n: number): number => {
  seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0;
  return seed % n;
};
const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => rnd(256)));
const label = (): string => Array.from({ length: 1 + rnd(20) }, () => "abcdefghijklmnopqrstuvwxyz0123456789-"[rnd(37)]).join("");
const randomQuery = (): Buffer => Buffer.concat([header({ id: rnd(0xabcd), ar: 1 }), question([label(), label(), "test"], 1 + rnd(40)), opt()]);

const GENERATORS: [Outcome, () => Buffer][] = [
  ["good", () => query({ id: GOOD_ID })], // a proper query in the mix: answered right under the flood
  ["any", () => bytes(rnd(600))],
  ["any", () => bytes(4000 + rnd(5000))], // bigger than any query (and than the batch path's 4096-byte slot)
  ["drop", () => bytes(rnd(12))],
  ["drop", () => { const b = randomQuery(); b[2] = (b[2] ?? 0) | 0x80; return b; }], // a response (QR set)
  ["formerr", () => { const b = Buffer.concat([header(), question([label(), label(), "test"])]); return b.subarray(0, 12 + rnd(b.length - 12)); }], // truncated
  ["formerr", () => Buffer.concat([header({ id: rnd(65536) }), Buffer.from([64 + rnd(128)]), bytes(rnd(40))])], // bad label length / reserved label type
  ["formerr", () => Buffer.concat([header(), Buffer.from([3, 0x61, 0x62, 0x63, 0xc0, 12 + rnd(8)]), u16(1), u16(1)])], // pointer in the question
  ["formerr", () => Buffer.concat([header(), Buffer.from([0xc0, 12]), u16(1), u16(1)])], // pointer loop
  ["formerr", () => Buffer.concat([header({ qd: 0, ar: rnd(2) }), rnd(2) ? opt() : Buffer.alloc(0)])], // qdcount 0
  ["formerr", () => Buffer.concat([header({ qd: 2 }), question(WEB), question(WEB)])], // qdcount 2
  ["formerr", () => Buffer.concat([header({ ar: 65535 }), question(WEB), opt()])], // huge arcount
  ["formerr", () => query({ ar: 2 }, opt(), opt())], // OPT twice
  ["formerr", () => query({ ar: 1 }, opt({ owner: wireName(["x"]) }))], // OPT not at the root
  ["notimp", () => query({ flags: (1 + rnd(15)) << 11 })], // opcode 1-15
  ["badvers", () => query({ ar: 1 }, opt({ version: 1 + rnd(255) }))],
  ["any", () => { const b = randomQuery(); for (let i = 0; i < 3; i++) b[rnd(b.length)] = rnd(256); return b; }], // bit rot
  ["any", () => Buffer.concat([header({ an: 65535, ns: 65535 }), question([label(), "test"])])], // huge counts, no records
];

describe("100k random and malformed datagrams", () => {
  it("are all accounted for, never crash the handler, and the server still answers", async () => {
    const expected: Record<Outcome, number> = { drop: 0, formerr: 0, notimp: 0, badvers: 0, good: 0, any: 0 };
    const replies: number[] = Array<number>(17).fill(0);
    let good = 0;
    const sock: Socket = createSocket({ type: "udp4", recvBufferSize: 4 << 20 }); // room for a batch of replies
    sock.on("message", (m) => {
      if (m.length >= 4) replies[(m[3] ?? 0) & 0xf]!++;
      if (m.length > 12 && m.readUInt16BE(0) === GOOD_ID && (m[3] ?? 0) % 16 === 0 && m.readUInt16BE(6) === 1 && m.subarray(-4).equals(Buffer.from([198, 18, 255, 10]))) good++;
    });
    await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
    const c = dns.counters;
    const handled = (): number => c.dropped + c.requests[0]!.reduce((a, b) => a + b, 0);
    const base = { handled: handled(), dropped: c.dropped, responses: [...c.responses] };
    const received = (): number => replies.reduce((a, b) => a + b, 0);
    const answered = (): number => handled() - base.handled - (c.dropped - base.dropped);
    try {
      for (let sent = 0; sent < TOTAL;) {
        for (let i = 0; i < BATCH; i++, sent++) {
          const [outcome, gen] = GENERATORS[rnd(GENERATORS.length)]!;
          expected[outcome]++;
          sock.send(gen(), port, "127.0.0.1");
        }
        // Paced: the next batch goes once the server has taken this one and its answers are in (no kernel-buffer losses).
        await until(() => handled() - base.handled >= sent && received() >= answered(), 10_000, 1, `${sent} datagrams handled and answered`);
      }
    } finally {
      sock.close();
    }
    const delta = (rcode: number): number => (c.responses[rcode] ?? 0) - (base.responses[rcode] ?? 0);
    expect(handled() - base.handled).toBe(TOTAL);
    expect(c.dropped - base.dropped).toBeGreaterThanOrEqual(expected.drop);
    expect(delta(1), "FORMERR responses").toBeGreaterThanOrEqual(expected.formerr);
    expect(delta(4), "NOTIMP responses").toBeGreaterThanOrEqual(expected.notimp);
    expect(replies[1]).toBeGreaterThanOrEqual(expected.formerr);
    expect(received()).toBe(TOTAL - (c.dropped - base.dropped)); // every datagram not dropped got exactly one answer
    expect(good, "proper queries answered with the right A").toBe(expected.good);
    expect(errors.filter((e) => /handler failed/.test(e)), "handler exceptions").toEqual([]);
    const r = await dig(port, `web.default.svc.${Z}`, "A");
    expect([r.status, r.answer.map(rr)], r.text).toEqual(["NOERROR", [`web.default.svc.${Z}. 30 A 198.18.255.10`]]);
  });
});

describe("specific malformed queries", () => {
  it("qdcount 0 → FORMERR (raw and dig +header-only)", async () => {
    expect(await ask(header({ id: 0x0a0b, qd: 0 }))).toMatchObject({ id: 0x0a0b, qr: true, rcode: 1, qd: 0 });
    expect((await dig(port, "+header-only", `web.default.svc.${Z}`)).status).toBe("FORMERR");
  });

  it("qdcount 2 → FORMERR", async () => {
    expect(await ask(Buffer.concat([header({ qd: 2 }), question(WEB), question(WEB)]))).toMatchObject({ qr: true, rcode: 1 });
  });

  it("a compression pointer in the question → FORMERR, the question not echoed", async () => {
    const p = Buffer.concat([header({ id: 77 }), Buffer.from([3, 0x77, 0x65, 0x62, 0xc0, 12]), u16(1), u16(1)]);
    expect(await ask(p)).toMatchObject({ id: 77, qr: true, rcode: 1, qd: 0, an: 0 });
    expect(await ask(Buffer.concat([header(), Buffer.from([0xc0, 12]), u16(1), u16(1)]))).toMatchObject({ rcode: 1 });
  });

  it("a bad label length → FORMERR", async () => {
    expect(await ask(Buffer.concat([header(), Buffer.from([0x50, 1, 2, 3, 0]), u16(1), u16(1)]))).toMatchObject({ rcode: 1 });
    expect(await ask(Buffer.concat([header(), Buffer.from([40, 0x61, 0x62]), u16(1)]))).toMatchObject({ rcode: 1 }); // runs past the end
  });

  it("opcode 2 (STATUS) → NOTIMP (raw and dig +opcode=status)", async () => {
    expect(await ask(query({ flags: 2 << 11 }))).toMatchObject({ qr: true, opcode: 2, rcode: 4 });
    expect((await dig(port, "+opcode=status", `web.default.svc.${Z}`)).status).toBe("NOTIMP");
  });

  it("EDNS version 1 → BADVERS: extended rcode 16 in an OPT of version 0 (raw and dig)", async () => {
    expect(await ask(query({ ar: 1 }, opt({ version: 1 })))).toMatchObject({ qr: true, rcode: 0, an: 0, ar: 1, optExtRcode: 1, optVersion: 0 });
    const r = await dig(port, "+edns=1", "+noednsneg", `web.default.svc.${Z}`, "A");
    expect([r.status, r.edns?.version, r.answer.length], r.text).toEqual(["BADVERS", 0, 0]);
  });

  it("a BADVERS answer is not counted as a NOERROR response", async () => {
    const before = dns.counters.responses[0];
    expect(await ask(query({ ar: 1 }, opt({ version: 1 })))).toMatchObject({ optExtRcode: 1 });
    expect(dns.counters.responses[0]).toBe(before);
  });

  it("two OPT records → FORMERR", async () => {
    expect(await ask(query({ ar: 2 }, opt(), opt()))).toMatchObject({ qr: true, rcode: 1 });
  });

  it("a response (QR set) and a datagram shorter than a header get no answer", async () => {
    const before = dns.counters.dropped;
    const resp = query();
    resp[2] = (resp[2] ?? 0) | 0x80;
    expect(await ask(resp)).toBeUndefined();
    expect(await ask(Buffer.from([1, 2, 3]))).toBeUndefined();
    expect(dns.counters.dropped).toBe(before + 2);
  });

  it("a cluster name whose label holds a '.' gets an answer (NXDOMAIN), not silence", async () => {
    for (const first of [".", ".web", "web.", "a..b"]) {
      const r = await ask(Buffer.concat([header({ id: 99 }), question([first, "svc", "cluster", "local"])]));
      expect(r, JSON.stringify(first)).toMatchObject({ id: 99, qr: true, rcode: 3 });
    }
    expect((await dig(port, `\\..svc.${Z}`, "A")).status).toBe("NXDOMAIN");
    expect(errors.filter((e) => /handler failed/.test(e))).toEqual([]);
  });

  it("a label 'web.default' is not the two labels web and default (NXDOMAIN)", async () => {
    const r = await dig(port, `web\\.default.svc.${Z}`, "A");
    expect([r.status, r.answer.map(rr)], r.text).toEqual(["NXDOMAIN", []]);
  });
});
