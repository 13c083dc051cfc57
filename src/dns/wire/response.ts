import { FLAG, HEADER_LEN, TYPE } from "./constants.js";
import { skipName } from "./query.js";

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
