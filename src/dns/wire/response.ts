import { FLAG, HEADER_LEN, TYPE } from "./constants.js";
import { skipName } from "./query.js";
import type { Record_ } from "./writer.js";

/** What the forwarder and the cache need to know about an upstream's response. */
export interface ParsedResponse {
  readonly id: number;
  readonly flags: number;
  /** Full rcode (extended bits from the OPT record included). */
  readonly rcode: number;
  readonly truncated: boolean;
  /** Lower-cased wire-form question name (as Query.key), type and class. */
  readonly key: string;
  readonly qtype: number;
  readonly qclass: number;
  readonly questionEnd: number;
  readonly ancount: number;
  /** Offsets and values of every record's TTL (OPT excluded). */
  readonly ttlOffsets: Uint16Array;
  readonly ttls: Uint32Array;
  /** Smallest TTL of the answer section, or undefined with no answers. */
  readonly minAnswerTtl: number | undefined;
  /** min(SOA TTL, SOA MINIMUM) of an SOA in the authority section (RFC 2308 negative TTL). */
  readonly negativeTtl: number | undefined;
  /** Bytes up to (not including) the OPT record when it is the last record, else the whole message. */
  readonly withoutOptLength: number;
  /** Additional records other than the OPT. */
  readonly arcountWithoutOpt: number;
  /** An OPT record was present but not last (then the message cannot be re-served with our own OPT). */
  readonly optMisplaced: boolean;
}

/** Parses a response; returns a reason string when it is malformed. */
export function parseResponse(b: Buffer, len: number): ParsedResponse | string {
  if (len < HEADER_LEN) return "shorter than a DNS header";
  const flags = b.readUInt16BE(2);
  if (!(flags & FLAG.QR)) return "not a response (QR clear)";
  const qd = b.readUInt16BE(4);
  const an = b.readUInt16BE(6);
  const ns = b.readUInt16BE(8);
  const ar = b.readUInt16BE(10);
  if (qd !== 1) return `${qd} questions`;
  const nameEnd = skipName(b, HEADER_LEN, len);
  if (nameEnd < 0 || nameEnd + 4 > len) return "malformed question";
  for (let i = HEADER_LEN; i < nameEnd - 1;) {
    const l = b[i]!;
    if (l > 63) return "compressed question name";
    i += l + 1;
  }
  const scratch = Buffer.from(b.subarray(HEADER_LEN, nameEnd - 1));
  for (let i = 0; i < scratch.length; i++) if (scratch[i]! >= 0x41 && scratch[i]! <= 0x5a) scratch[i] = scratch[i]! + 32;
  const key = scratch.toString("latin1");
  const qtype = b.readUInt16BE(nameEnd);
  const qclass = b.readUInt16BE(nameEnd + 2);
  let o = nameEnd + 4;
  const offsets: number[] = [];
  const ttls: number[] = [];
  let minAnswer: number | undefined;
  let negative: number | undefined;
  let rcode = flags & 0xf;
  let withoutOpt = -1;
  let optMisplaced = false;
  const total = an + ns + ar;
  for (let i = 0; i < total; i++) {
    const start = o;
    const ne = skipName(b, o, len);
    if (ne < 0 || ne + 10 > len) return `record ${i + 1} is cut short`;
    const type = b.readUInt16BE(ne);
    const ttl = b.readUInt32BE(ne + 4);
    const rdlen = b.readUInt16BE(ne + 8);
    if (ne + 10 + rdlen > len) return `record ${i + 1} data is cut short`;
    o = ne + 10 + rdlen;
    if (type === TYPE.OPT) {
      if (i < an + ns || withoutOpt >= 0) return "an OPT record outside the additional section, or two";
      rcode |= b[ne + 4]! << 4;
      withoutOpt = start;
      if (i !== total - 1) optMisplaced = true;
      continue;
    }
    offsets.push(ne + 4);
    ttls.push(ttl);
    if (i < an) minAnswer = minAnswer === undefined ? ttl : Math.min(minAnswer, ttl);
    else if (i < an + ns && type === TYPE.SOA && rdlen >= 22) negative = Math.min(ttl, b.readUInt32BE(ne + 10 + rdlen - 4));
  }
  if (o !== len) return `${len - o} bytes after the last record`;
  return {
    id: b.readUInt16BE(0), flags, rcode, truncated: (flags & FLAG.TC) !== 0,
    key, qtype, qclass, questionEnd: nameEnd + 4, ancount: an,
    ttlOffsets: Uint16Array.from(offsets), ttls: Uint32Array.from(ttls),
    minAnswerTtl: minAnswer, negativeTtl: negative,
    withoutOptLength: withoutOpt >= 0 && !optMisplaced ? withoutOpt : len,
    arcountWithoutOpt: withoutOpt >= 0 ? ar - 1 : ar,
    optMisplaced,
  };
}

/**
 * A copy of the response without its OPT record (the last record: a client
 * gets our own OPT instead), ARCOUNT adjusted. Undefined when the OPT record
 * is not last (cutting it out would move the records after it).
 */
export function withoutOpt(bytes: Buffer, r: ParsedResponse): Buffer | undefined {
  if (r.optMisplaced) return undefined;
  const body = Buffer.from(bytes.subarray(0, r.withoutOptLength));
  body.writeUInt16BE(r.arcountWithoutOpt, 10);
  return body;
}

/** Reads a (possibly compressed) name at `o`; returns it dotted with the offset after it, or undefined when malformed. */
export function readName(b: Buffer, o: number, len: number): { name: string; end: number } | undefined {
  const labels: string[] = [];
  let end = -1;
  let jumps = 0;
  let total = 0;
  for (;;) {
    if (o >= len) return undefined;
    const l = b[o]!;
    if (l === 0) {
      if (end < 0) end = o + 1;
      break;
    }
    if ((l & 0xc0) === 0xc0) {
      if (o + 1 >= len || ++jumps > 32) return undefined;
      if (end < 0) end = o + 2;
      o = ((l & 0x3f) << 8) | b[o + 1]!;
      continue;
    }
    if (l > 63 || o + 1 + l > len || (total += l + 1) > 255) return undefined;
    labels.push(b.toString("latin1", o + 1, o + 1 + l));
    o += l + 1;
  }
  return { name: labels.join("."), end };
}

/**
 * The answer section's records, decoded (names decompressed) for the types a
 * re-encoding can carry: A, AAAA, CNAME, PTR, NS, TXT, SRV. Others are left
 * out. Used to follow an ExternalName's CNAME with the upstream's answer.
 */
export function decodeAnswers(b: Buffer, len: number): Record_[] {
  const out: Record_[] = [];
  const an = b.readUInt16BE(6);
  let o = skipName(b, HEADER_LEN, len);
  if (o < 0) return out;
  o += 4;
  for (let i = 0; i < an; i++) {
    const n = readName(b, o, len);
    if (!n || n.end + 10 > len) return out;
    const type = b.readUInt16BE(n.end);
    const ttl = b.readUInt32BE(n.end + 4);
    const rdlen = b.readUInt16BE(n.end + 8);
    const rd = n.end + 10;
    if (rd + rdlen > len) return out;
    o = rd + rdlen;
    if (type === TYPE.A && rdlen === 4) out.push({ name: n.name, type, ttl, data: { a: `${b[rd]}.${b[rd + 1]}.${b[rd + 2]}.${b[rd + 3]}` } });
    else if (type === TYPE.AAAA && rdlen === 16) {
      const groups: string[] = [];
      for (let g = 0; g < 8; g++) groups.push(b.readUInt16BE(rd + g * 2).toString(16));
      out.push({ name: n.name, type, ttl, data: { aaaa: groups.join(":") } });
    } else if (type === TYPE.CNAME || type === TYPE.PTR || type === TYPE.NS) {
      const t = readName(b, rd, len);
      if (t) out.push({ name: n.name, type, ttl, data: { target: t.name } });
    } else if (type === TYPE.SRV && rdlen >= 7) {
      const t = readName(b, rd + 6, len);
      if (t) out.push({ name: n.name, type, ttl, data: { srv: { priority: b.readUInt16BE(rd), weight: b.readUInt16BE(rd + 2), port: b.readUInt16BE(rd + 4), target: t.name } } });
    } else if (type === TYPE.TXT) {
      const strings: string[] = [];
      for (let p = rd; p < rd + rdlen;) {
        const l = b[p]!;
        strings.push(b.toString("utf8", p + 1, Math.min(p + 1 + l, rd + rdlen)));
        p += l + 1;
      }
      out.push({ name: n.name, type, ttl, data: { txt: strings } });
    }
  }
  return out;
}
