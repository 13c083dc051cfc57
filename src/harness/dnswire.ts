/**
 * A minimal DNS client for harness code: readiness probes, latency probes and
 * test assertions against a server on loopback. It encodes one question and
 * decodes the header, the question echo and the answer records' owner names,
 * types, TTLs and raw rdata (with A/AAAA/TXT/CNAME rendered as text). It is no
 * resolver and no part of weft's DNS server (src/dns/): test and bench tooling
 * only, kept independent of it on purpose so it can judge it.
 */
import { createSocket } from "node:dgram";
import { createConnection } from "node:net";

export const QTYPE: Readonly<Record<string, number>> = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28, SRV: 33, OPT: 41, ANY: 255 };
export const RCODE_NAMES = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"] as const;

export interface QueryOptions {
  /** Add an OPT record advertising this UDP payload size (EDNS0). Default: none (plain RFC 1035, 512 bytes). */
  readonly edns?: number;
  /** Recursion desired (default true, as stub resolvers send). */
  readonly rd?: boolean;
  /** Over TCP (2-byte length framing) instead of UDP. */
  readonly tcp?: boolean;
  readonly timeoutMs?: number;
  /** Query id (default random). */
  readonly id?: number;
}

export interface DnsRecord {
  readonly name: string; // lower case, with the trailing dot
  readonly type: number;
  readonly ttl: number;
  /** A, AAAA: the address; CNAME/NS/PTR: the target name; TXT: the strings joined with "" ; else hex. */
  readonly data: string;
}

export interface DnsReply {
  readonly id: number;
  readonly rcode: number;
  readonly rcodeName: string;
  readonly flags: { qr: boolean; aa: boolean; tc: boolean; rd: boolean; ra: boolean };
  readonly qdcount: number;
  readonly ancount: number;
  readonly nscount: number;
  readonly arcount: number;
  /** Answer section (parsed only when the message is complete; empty when TC=1 cut it off). */
  readonly answers: DnsRecord[];
  readonly size: number;
  readonly raw: Buffer;
}

/** The wire form of a query for `name` (with or without the trailing dot) and `type` ("A", "AAAA", ... or a number). */
export function encodeQuery(name: string, type: string | number, opts: QueryOptions = {}): Buffer {
  const qtype = typeof type === "number" ? type : QTYPE[type.toUpperCase()];
  if (qtype === undefined) throw new Error(`unknown query type ${String(type)}`);
  const labels = name.replace(/\.$/, "").split(".").filter((l) => l.length > 0);
  const parts: Buffer[] = [];
  const header = Buffer.alloc(12);
  header.writeUInt16BE(opts.id ?? Math.floor(Math.random() * 0x10000), 0);
  header.writeUInt16BE((opts.rd ?? true) ? 0x0100 : 0, 2);
  header.writeUInt16BE(1, 4); // QDCOUNT
  header.writeUInt16BE(opts.edns !== undefined ? 1 : 0, 10); // ARCOUNT
  parts.push(header);
  for (const l of labels) {
    const b = Buffer.from(l, "ascii");
    if (b.length > 63) throw new Error(`label too long in ${name}`);
    parts.push(Buffer.from([b.length]), b);
  }
  parts.push(Buffer.from([0]));
  const q = Buffer.alloc(4);
  q.writeUInt16BE(qtype, 0);
  q.writeUInt16BE(1, 2); // IN
  parts.push(q);
  if (opts.edns !== undefined) {
    const opt = Buffer.alloc(11);
    opt.writeUInt8(0, 0); // root name
    opt.writeUInt16BE(QTYPE["OPT"] ?? 41, 1);
    opt.writeUInt16BE(opts.edns, 3); // class = payload size
    opt.writeUInt32BE(0, 5); // extended rcode, version, flags
    opt.writeUInt16BE(0, 9); // rdlength
    parts.push(opt);
  }
  return Buffer.concat(parts);
}

/** Reads a (possibly compressed) name at `off`; returns it and the offset after it in the original position. */
function readName(buf: Buffer, off: number): { name: string; next: number } {
  const labels: string[] = [];
  let next = -1;
  let p = off;
  for (let hops = 0; hops < 64; hops++) {
    const len = buf[p];
    if (len === undefined) throw new Error("name runs past the message");
    if ((len & 0xc0) === 0xc0) {
      const lo = buf[p + 1];
      if (lo === undefined) throw new Error("truncated compression pointer");
      if (next < 0) next = p + 2;
      p = ((len & 0x3f) << 8) | lo;
      continue;
    }
    if (len === 0) {
      if (next < 0) next = p + 1;
      return { name: labels.length ? `${labels.join(".").toLowerCase()}.` : ".", next };
    }
    if (p + 1 + len > buf.length) throw new Error("label runs past the message");
    labels.push(buf.toString("ascii", p + 1, p + 1 + len));
    p += 1 + len;
  }
  throw new Error("compression loop");
}

function renderRdata(buf: Buffer, type: number, off: number, len: number): string {
  const rd = buf.subarray(off, off + len);
  switch (type) {
    case 1:
      return [...rd].join(".");
    case 28: {
      const groups: string[] = [];
      for (let i = 0; i < 16; i += 2) groups.push(rd.readUInt16BE(i).toString(16));
      return compressV6(groups);
    }
    case 2:
    case 5:
    case 12:
      return readName(buf, off).name;
    case 16: {
      const out: string[] = [];
      for (let i = 0; i < rd.length; ) {
        const l = rd[i] ?? 0;
        out.push(rd.toString("latin1", i + 1, i + 1 + l));
        i += 1 + l;
      }
      return out.join("");
    }
    default:
      return rd.toString("hex");
  }
}

function compressV6(groups: string[]): string {
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(":");
  return `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLen).join(":")}`;
}

/** Decodes a reply: header always; the answer section when the message holds it. */
export function decodeReply(buf: Buffer): DnsReply {
  if (buf.length < 12) throw new Error(`DNS message of ${buf.length} bytes`);
  const f = buf.readUInt16BE(2);
  const rcode = f & 0x0f;
  const counts = [4, 6, 8, 10].map((o) => buf.readUInt16BE(o));
  const [qdcount = 0, ancount = 0, nscount = 0, arcount = 0] = counts;
  const answers: DnsRecord[] = [];
  try {
    let p = 12;
    for (let i = 0; i < qdcount; i++) p = readName(buf, p).next + 4;
    for (let i = 0; i < ancount; i++) {
      const { name, next } = readName(buf, p);
      const type = buf.readUInt16BE(next);
      const ttl = buf.readUInt32BE(next + 4);
      const rdlen = buf.readUInt16BE(next + 8);
      if (next + 10 + rdlen > buf.length) throw new Error("rdata runs past the message");
      answers.push({ name, type, ttl, data: renderRdata(buf, type, next + 10, rdlen) });
      p = next + 10 + rdlen;
    }
  } catch {
    // A truncated (TC=1) or malformed answer section: keep what was read.
  }
  return {
    id: buf.readUInt16BE(0), rcode, rcodeName: RCODE_NAMES[rcode] ?? `RCODE${rcode}`,
    flags: { qr: (f & 0x8000) !== 0, aa: (f & 0x0400) !== 0, tc: (f & 0x0200) !== 0, rd: (f & 0x0100) !== 0, ra: (f & 0x0080) !== 0 },
    qdcount, ancount, nscount, arcount, answers, size: buf.length, raw: buf,
  };
}

/** Sends one query to host:port (UDP, or TCP with `tcp`) and resolves with the decoded reply. */
export function query(host: string, port: number, name: string, type: string | number, opts: QueryOptions = {}): Promise<DnsReply> {
  const id = opts.id ?? Math.floor(Math.random() * 0x10000);
  const msg = encodeQuery(name, type, { ...opts, id });
  return opts.tcp ? queryTcp(host, port, msg, id, opts.timeoutMs ?? 2000) : queryUdp(host, port, msg, id, opts.timeoutMs ?? 2000);
}

function queryUdp(host: string, port: number, msg: Buffer, id: number, timeoutMs: number): Promise<DnsReply> {
  return new Promise((resolve, reject) => {
    const sock = createSocket(host.includes(":") ? "udp6" : "udp4");
    const timer = setTimeout(() => done(new Error(`no reply from ${host}:${port} in ${timeoutMs} ms`)), timeoutMs);
    let finished = false;
    const done = (err: Error | undefined, reply?: DnsReply): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else if (reply) resolve(reply);
    };
    sock.on("error", (e) => done(e));
    sock.on("message", (buf) => {
      if (buf.length >= 2 && buf.readUInt16BE(0) === id) done(undefined, decodeReply(buf));
    });
    sock.send(msg, port, host);
  });
}

function queryTcp(host: string, port: number, msg: Buffer, id: number, timeoutMs: number): Promise<DnsReply> {
  return new Promise((resolve, reject) => {
    const sock = createConnection({ host, port });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => done(new Error(`no TCP reply from ${host}:${port} in ${timeoutMs} ms`)), timeoutMs);
    let finished = false;
    const done = (err: Error | undefined, reply?: DnsReply): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else if (reply) resolve(reply);
    };
    sock.on("error", (e) => done(e));
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) return;
        const m = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        if (m.length >= 2 && m.readUInt16BE(0) === id) return done(undefined, decodeReply(Buffer.from(m)));
      }
    });
    const len = Buffer.alloc(2);
    len.writeUInt16BE(msg.length, 0);
    sock.write(Buffer.concat([len, msg]));
  });
}

/**
 * Strict well-formedness of a DNS message, for judging what a server sends:
 * undefined when it is well formed, else what is wrong. Every section is
 * walked to the exact end of the message; names (also inside the rdata of
 * NS, CNAME, PTR, MX, SOA and SRV) must have labels of at most 63 bytes, at
 * most 255 bytes in all, and compression pointers only to earlier offsets;
 * at most one OPT record, owned by the root, in the additional section.
 */
export function checkMessage(buf: Buffer): string | undefined {
  if (buf.length < 12) return `${buf.length} bytes: shorter than a header`;
  const count = (o: number): number => buf.readUInt16BE(o);
  /** Offset after the name at `o`, or a string saying what is wrong. */
  const name = (o: number, limit: number): number | string => {
    let p = o;
    let end = -1;
    let total = 1;
    for (let hops = 0; ; ) {
      if (p >= limit) return `name at ${o} runs past its end`;
      const l = buf[p]!;
      if (l === 0) return end < 0 ? p + 1 : end;
      if ((l & 0xc0) === 0xc0) {
        if (p + 1 >= limit) return `name at ${o}: pointer cut short`;
        const to = ((l & 0x3f) << 8) | buf[p + 1]!;
        if (to >= p) return `name at ${o}: pointer to ${to}, not before it`;
        if (end < 0) end = p + 2;
        if (++hops > 127) return `name at ${o}: too many pointers`;
        p = to;
        limit = buf.length;
        continue;
      }
      if (l > 63) return `name at ${o}: label type ${l >> 6}`;
      total += l + 1;
      if (total > 255) return `name at ${o}: longer than 255 bytes`;
      p += l + 1;
    }
  };
  let o = 12;
  const qd = count(4);
  for (let i = 0; i < qd; i++) {
    const e = name(o, buf.length);
    if (typeof e === "string") return `question ${i + 1}: ${e}`;
    if (e + 4 > buf.length) return `question ${i + 1} cut short`;
    o = e + 4;
  }
  const an = count(6);
  const ns = count(8);
  const ar = count(10);
  let opts = 0;
  for (let i = 0; i < an + ns + ar; i++) {
    const start = o;
    const e = name(o, buf.length);
    if (typeof e === "string") return `record ${i + 1}: ${e}`;
    if (e + 10 > buf.length) return `record ${i + 1} cut short`;
    const type = buf.readUInt16BE(e);
    const rdlen = buf.readUInt16BE(e + 8);
    const rd = e + 10;
    if (rd + rdlen > buf.length) return `record ${i + 1}: rdata runs past the message`;
    if (type === 41) {
      if (i < an + ns) return `record ${i + 1}: OPT outside the additional section`;
      if (++opts > 1) return "two OPT records";
      if (buf[start] !== 0 || e !== start + 1) return "OPT not owned by the root";
    }
    const names: number[] = type === 2 || type === 5 || type === 12 ? [rd] : type === 15 ? [rd + 2] : type === 33 ? [rd + 6] : type === 6 ? [rd] : [];
    for (const at of names) {
      const ne = name(at, rd + rdlen);
      if (typeof ne === "string") return `record ${i + 1} rdata: ${ne}`;
      if (type === 6) {
        const re = name(ne, rd + rdlen);
        if (typeof re === "string") return `record ${i + 1} SOA rname: ${re}`;
        if (re + 20 !== rd + rdlen) return `record ${i + 1}: SOA rdata of the wrong length`;
      } else if (ne !== rd + rdlen) return `record ${i + 1}: rdata longer than its name`;
    }
    if (type === 1 && rdlen !== 4) return `record ${i + 1}: A of ${rdlen} bytes`;
    if (type === 28 && rdlen !== 16) return `record ${i + 1}: AAAA of ${rdlen} bytes`;
    o = rd + rdlen;
  }
  if (o !== buf.length) return `${buf.length - o} bytes after the last record`;
  return undefined;
}
