/**
 * The wire code against an independent DNS implementation (dns2's Packet
 * codec) in both directions, and a few messages checked byte for byte.
 */
import dns2 from "dns2";
import { describe, expect, it } from "vitest";
import { EDNS_UDP_SIZE, FLAG, RCODE, TYPE } from "../../src/dns/wire/constants.js";
import { errorResponse, prebuilt, serve } from "../../src/dns/wire/prebuilt.js";
import { keyToName, nameToKey, newQuery, parseQuery, QueryProblem } from "../../src/dns/wire/query.js";
import { decodeAnswers, parseResponse } from "../../src/dns/wire/response.js";
import { encodeMessage, type Record_ } from "../../src/dns/wire/writer.js";

const { Packet } = dns2;

function dns2Query(name: string, type: number, id = 0x1234, edns?: { udp: number; do: boolean }): Buffer {
  const p = new Packet();
  p.header.id = id;
  p.header.rd = 1;
  p.questions.push(Object.assign(new Packet.Question(), { name, type, class: Packet.CLASS.IN }));
  const b = Buffer.from(p.toBuffer());
  if (!edns) return b;
  const opt = Buffer.from([0, 0, 41, edns.udp >> 8, edns.udp & 255, 0, 0, edns.do ? 0x80 : 0, 0, 0, 0]);
  const out = Buffer.concat([b, opt]);
  out.writeUInt16BE(1, 10);
  return out;
}

describe("queries: dns2 encodes, weft parses", () => {
  it.each([
    { name: "web.default.svc.cluster.local", type: TYPE.A },
    { name: "Web.Default.SVC.cluster.local", type: TYPE.AAAA },
    { name: "_http._tcp.web.default.svc.cluster.local", type: TYPE.SRV },
    { name: "10.255.18.198.in-addr.arpa", type: TYPE.PTR },
    { name: "x", type: TYPE.TXT },
  ])("$name type $type", ({ name, type }) => {
    const b = dns2Query(name, type, 0xbeef, { udp: 4096, do: true });
    const q = newQuery();
    expect(parseQuery(b, b.length, q)).toBe(0);
    expect(q.id).toBe(0xbeef);
    expect(q.flags & FLAG.RD).toBe(FLAG.RD);
    expect(q.qtype).toBe(type);
    expect(q.key).toBe(nameToKey(name)); // lower-cased
    expect(keyToName(q.key)).toBe(name.toLowerCase());
    expect([q.ednsSize, q.dnssecOk, q.ednsVersion]).toEqual([4096, true, 0]);
    expect(q.questionEnd).toBe(12 + name.length + 2 + 4);
  });

  it("is exact for a known query: example.com A, id 0x1234, RD", () => {
    const b = Buffer.from("123401000001000000000000076578616d706c6503636f6d0000010001", "hex");
    const q = newQuery();
    expect(parseQuery(b, b.length, q)).toBe(0);
    expect([q.id, q.qtype, q.qclass, q.questionEnd, q.ednsSize]).toEqual([0x1234, 1, 1, 29, 0]);
    expect(Buffer.from(q.key, "latin1").toString("hex")).toBe("076578616d706c6503636f6d");
    const short = b.subarray(0, 20);
    expect(parseQuery(short, short.length, q)).toBe(QueryProblem.FormErr);
    expect(parseQuery(b, 11, q)).toBe(QueryProblem.Drop);
  });
});

const RECORDS: Record_[] = [
  { name: "web.default.svc.cluster.local", type: TYPE.A, ttl: 5, data: { a: "198.18.255.10" } },
  { name: "web.default.svc.cluster.local", type: TYPE.AAAA, ttl: 5, data: { aaaa: "fd00::a:1" } },
  { name: "ext.default.svc.cluster.local", type: TYPE.CNAME, ttl: 30, data: { target: "www.example.org" } },
  { name: "_http._tcp.web.default.svc.cluster.local", type: TYPE.SRV, ttl: 5, data: { srv: { priority: 0, weight: 100, port: 80, target: "web.default.svc.cluster.local" } } },
  { name: "10.255.18.198.in-addr.arpa", type: TYPE.PTR, ttl: 5, data: { target: "web.default.svc.cluster.local" } },
  { name: "dns-version.cluster.local", type: TYPE.TXT, ttl: 5, data: { txt: ["1.1.0"] } },
];

describe("answers: weft encodes, dns2 parses", () => {
  it("every record type, with name compression, comes out as written", () => {
    const e = encodeMessage({ id: 7, flags: FLAG.QR | FLAG.AA, rcode: RCODE.NOERROR, question: { name: "web.default.svc.cluster.local", type: TYPE.ANY }, answer: RECORDS });
    const p = Packet.parse(e.bytes);
    expect(p.header.id).toBe(7);
    expect(p.header.aa).toBe(1);
    expect(p.answers.map((a) => [a.name, a.type, a.ttl])).toEqual(RECORDS.map((r) => [r.name, r.type, r.ttl]));
    const [a, aaaa, cname, srv, ptr, txt] = p.answers as unknown as Record<string, unknown>[];
    expect(a?.["address"]).toBe("198.18.255.10");
    expect(aaaa?.["address"]).toBe("fd00::a:1");
    expect(cname?.["domain"]).toBe("www.example.org");
    expect([srv?.["priority"], srv?.["weight"], srv?.["port"], srv?.["target"]]).toEqual([0, 100, 80, "web.default.svc.cluster.local"]);
    expect(ptr?.["domain"]).toBe("web.default.svc.cluster.local");
    expect(txt?.["data"]).toEqual(["1.1.0"]);
    // compression made it shorter than the names written out, and our own decoder agrees
    expect(e.bytes.length).toBeLessThan(300);
    expect(decodeAnswers(e.bytes, e.bytes.length)).toEqual(RECORDS.map((r) => (r.type === TYPE.AAAA ? { ...r, data: { aaaa: "fd00:0:0:0:0:0:a:1" } } : r)));
  });

  it("is exact for a known answer: example.com A 192.0.2.1 TTL 300 (the owner compressed to the question)", () => {
    const e = encodeMessage({ id: 0x1234, flags: FLAG.QR | FLAG.RD | FLAG.RA, rcode: 0, question: { name: "example.com", type: TYPE.A }, answer: [{ name: "example.com", type: TYPE.A, ttl: 300, data: { a: "192.0.2.1" } }] });
    expect(e.bytes.toString("hex")).toBe("123481800001000100000000" + "076578616d706c6503636f6d0000010001" + "c00c000100010000012c0004c0000201");
    expect(Array.from(e.ttlOffsets)).toEqual([35]);
  });
});

describe("serving an encoded answer", () => {
  const e = prebuilt(encodeMessage({ flags: FLAG.QR | FLAG.AA | FLAG.RA, rcode: 0, question: { name: "web.default.svc.cluster.local", type: TYPE.A }, answer: [RECORDS[0]!] }));

  it("patches the ID, the client's case and RD, adds OPT when asked, and dns2 reads it", () => {
    const query = dns2Query("WEB.default.svc.CLUSTER.local", TYPE.A, 0x4242, { udp: 1232, do: false });
    const q = newQuery();
    expect(parseQuery(query, query.length, q)).toBe(0);
    const out = Buffer.alloc(2048);
    const n = serve(e, q, query, out);
    const p = Packet.parse(out.subarray(0, n));
    expect(p.header.id).toBe(0x4242);
    expect(p.questions[0]?.name).toBe("WEB.default.svc.CLUSTER.local");
    expect(p.answers[0]?.name).toBe("WEB.default.svc.CLUSTER.local"); // compressed against the question: its case
    expect(out.readUInt16BE(10)).toBe(1); // the OPT record
    const r = parseResponse(out, n);
    expect(typeof r === "string" ? r : [r.rcode, r.ancount, r.withoutOptLength]).toEqual([0, 1, e.bytes.length]);
  });

  it("counts TTLs down by age, and truncates past the client's size", () => {
    const query = dns2Query("web.default.svc.cluster.local", TYPE.A);
    const q = newQuery();
    parseQuery(query, query.length, q);
    const out = Buffer.alloc(2048);
    const n = serve(e, q, query, out, 3);
    expect(out.readUInt32BE(e.ttlOffsets[0]!)).toBe(2);
    expect(n).toBe(e.bytes.length);
    const big = prebuilt(encodeMessage({ flags: FLAG.QR, rcode: 0, question: { name: "web.default.svc.cluster.local", type: TYPE.TXT }, answer: Array.from({ length: 4 }, () => ({ name: "web.default.svc.cluster.local", type: TYPE.TXT, ttl: 5, data: { txt: ["x".repeat(200)] } })) }));
    const t = serve(big, q, query, out);
    expect(out[2]! & (FLAG.TC >> 8)).toBe(FLAG.TC >> 8);
    expect(t).toBe(q.questionEnd);
    expect(EDNS_UDP_SIZE).toBe(1232);
  });

  it("an error answer echoes the question, and BADVERS rides in the OPT record", () => {
    const query = dns2Query("web.default.svc.cluster.local", TYPE.A, 9, { udp: 1232, do: false });
    query[query.length - 5] = 1; // EDNS version 1 (the OPT TTL's second byte)
    const q = newQuery();
    expect(parseQuery(query, query.length, q)).toBe(0);
    expect(q.ednsVersion).toBe(1);
    const out = Buffer.alloc(512);
    const n = errorResponse(q, query, out, RCODE.BADVERS);
    const r = parseResponse(out, n);
    expect(typeof r === "string" ? r : r.rcode).toBe(RCODE.BADVERS);
  });
});
