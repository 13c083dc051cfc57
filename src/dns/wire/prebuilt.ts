import { EDNS_DO, EDNS_UDP_SIZE, FLAG, HEADER_LEN, RCODE, TYPE, UDP_CLASSIC } from "./constants.js";
import type { Encoded } from "./writer.js";
import type { Query } from "./query.js";

/**
 * Serving a pre-encoded response: the hot path of cluster answers and cache
 * hits. The stored bytes hold a question whose name has the same wire length
 * as the query's (same name, maybe another case); serving copies them,
 * patches the ID, RD/CD and the question (the client's case comes back, and
 * answer names compressed against it follow), counts TTLs down when asked,
 * appends an OPT record when the client sent one, and truncates (TC, no
 * records) when the result exceeds the client's UDP size.
 */
export interface Prebuilt extends Encoded {
  /** Additional records already in bytes (an OPT goes after them). */
  readonly arcount: number;
}

export function prebuilt(e: Encoded): Prebuilt {
  return { ...e, arcount: e.bytes.readUInt16BE(10) };
}

const OPT_LEN = 11;

/**
 * Writes the response to `q` (whose packet is `query`) into `out`; returns
 * its length. `age` seconds are taken off every TTL (cache hits), or every
 * TTL is `fixedTtl` (stale answers); `maxLen` is the transport's limit (0:
 * UDP, from the query's EDNS size or 512).
 */
export function serve(p: Prebuilt, q: Query, query: Buffer, out: Buffer, age = 0, maxLen = 0, fixedTtl = -1): number {
  const b = p.bytes;
  const opt = q.ednsSize > 0;
  const limit = maxLen || (opt ? Math.min(q.ednsSize, EDNS_UDP_SIZE) : UDP_CLASSIC);
  const full = b.length + (opt ? OPT_LEN : 0);
  if (full > limit) return truncated(p, q, query, out);
  b.copy(out, 0);
  query.copy(out, HEADER_LEN, HEADER_LEN, q.questionEnd);
  out[0] = q.id >> 8;
  out[1] = q.id & 0xff;
  out[2] = (out[2]! & ~(FLAG.RD >> 8)) | ((q.flags & FLAG.RD) >> 8);
  out[3] = (out[3]! & ~FLAG.CD) | (q.flags & FLAG.CD);
  if (age > 0 || fixedTtl >= 0) {
    const offs = p.ttlOffsets;
    const ttls = p.ttls;
    for (let i = 0; i < offs.length; i++) out.writeUInt32BE(fixedTtl >= 0 ? fixedTtl : Math.max(0, ttls[i]! - age), offs[i]!);
  }
  if (!opt) return b.length;
  writeOpt(out, b.length, q);
  const ar = p.arcount + 1;
  out[10] = ar >> 8;
  out[11] = ar & 0xff;
  return full;
}

/** Header + question (+ OPT) with TC set: the client retries over TCP. */
function truncated(p: Prebuilt, q: Query, query: Buffer, out: Buffer): number {
  p.bytes.copy(out, 0, 0, 4);
  out[0] = q.id >> 8;
  out[1] = q.id & 0xff;
  out[2] = (out[2]! & ~(FLAG.RD >> 8)) | ((q.flags & FLAG.RD) >> 8) | (FLAG.TC >> 8);
  out[3] = (out[3]! & ~FLAG.CD) | (q.flags & FLAG.CD);
  out.writeUInt16BE(1, 4);
  out.writeUInt32BE(0, 6);
  out.writeUInt16BE(q.ednsSize > 0 ? 1 : 0, 10);
  query.copy(out, HEADER_LEN, HEADER_LEN, q.questionEnd);
  if (q.ednsSize === 0) return q.questionEnd;
  writeOpt(out, q.questionEnd, q);
  return q.questionEnd + OPT_LEN;
}

function writeOpt(out: Buffer, at: number, q: Query, extRcode = 0): void {
  out[at] = 0;
  out.writeUInt16BE(TYPE.OPT, at + 1);
  out.writeUInt16BE(EDNS_UDP_SIZE, at + 3);
  out[at + 5] = extRcode;
  out[at + 6] = 0; // version 0
  out.writeUInt16BE(q.dnssecOk ? EDNS_DO : 0, at + 7);
  out.writeUInt16BE(0, at + 9);
}

/**
 * A response with no records: FORMERR, SERVFAIL, REFUSED, NOTIMP, or BADVERS
 * (extended rcode in the OPT). When the question could not be parsed
 * (`q.questionEnd` 0) only the header is echoed.
 */
export function errorResponse(q: Query, query: Buffer, out: Buffer, rcode: number): number {
  const withQuestion = q.questionEnd > 0;
  out[0] = q.id >> 8;
  out[1] = q.id & 0xff;
  const flags = FLAG.QR | (q.flags & (FLAG.RD | FLAG.CD | 0x7800)) | FLAG.RA;
  out.writeUInt16BE(flags | (rcode & 0xf), 2);
  out.writeUInt16BE(withQuestion ? 1 : 0, 4);
  out.writeUInt32BE(0, 6);
  let len = HEADER_LEN;
  if (withQuestion) {
    query.copy(out, HEADER_LEN, HEADER_LEN, q.questionEnd);
    len = q.questionEnd;
  }
  if (q.ednsSize > 0 || rcode === RCODE.BADVERS) {
    writeOpt(out, len, q, rcode >> 4);
    out.writeUInt16BE(1, 10);
    len += OPT_LEN;
  } else {
    out.writeUInt16BE(0, 10);
  }
  return len;
}

