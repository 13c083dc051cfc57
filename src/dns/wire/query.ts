import { EDNS_DO, FLAG, HEADER_LEN, MAX_NAME_WIRE, OPCODE_MASK, TYPE } from "./constants.js";

/**
 * A parsed query, the hot-path view: parsing touches the header, the one
 * question and an OPT record, nothing else, and allocates one string (the
 * lower-cased wire form of the name, the lookup key).
 */
export interface Query {
  id: number;
  flags: number;
  opcode: number;
  /** Lower-cased question name in wire form (length-prefixed labels, no final zero) as latin1. */
  key: string;
  qtype: number;
  qclass: number;
  /** Byte offsets of the question name in the packet [12, qnameEnd) (final zero included). */
  qnameEnd: number;
  /** Offset just past the question. */
  questionEnd: number;
  /** OPT present: the client's UDP payload size, else 0. */
  ednsSize: number;
  ednsVersion: number;
  /** DNSSEC OK bit of the OPT record. */
  dnssecOk: boolean;
  /** The packet had more than one question, answers, or an authority section. */
  extra: boolean;
}

/** Why a packet is not a query we can answer normally. */
export const enum QueryProblem {
  /** Shorter than a header, or a response (QR set): drop silently. */
  Drop = 1,
  /** Malformed question or OPT: answer FORMERR (with the header's ID). */
  FormErr = 2,
}

/**
 * Parses `len` bytes of `b` into `q` (reused across calls). Returns 0 when
 * `q` holds a well-formed query, else a QueryProblem. Compression pointers in
 * the question are refused (no client sends them; a pointer there is how
 * amplification and loop tricks start).
 */
export function parseQuery(b: Buffer, len: number, q: Query): number {
  q.questionEnd = 0;
  if (len < HEADER_LEN) return QueryProblem.Drop;
  const flags = (b[2]! << 8) | b[3]!;
  if (flags & FLAG.QR) return QueryProblem.Drop;
  q.id = (b[0]! << 8) | b[1]!;
  q.flags = flags;
  q.opcode = (flags & OPCODE_MASK) >> 11;
  const qd = (b[4]! << 8) | b[5]!;
  const an = (b[6]! << 8) | b[7]!;
  const ns = (b[8]! << 8) | b[9]!;
  const ar = (b[10]! << 8) | b[11]!;
  q.ednsSize = 0;
  q.ednsVersion = 0;
  q.dnssecOk = false;
  q.extra = qd !== 1 || an !== 0 || ns !== 0;
  if (qd !== 1) return QueryProblem.FormErr;
  let p = HEADER_LEN;
  let lower = false;
  for (;;) {
    if (p >= len) return QueryProblem.FormErr;
    const l = b[p]!;
    if (l === 0) break;
    if (l > 63) return QueryProblem.FormErr; // a pointer or a reserved label type
    for (let i = p + 1; i <= p + l && i < len; i++) {
      const c = b[i]!;
      if (c >= 0x41 && c <= 0x5a) lower = true;
    }
    p += l + 1;
    if (p - HEADER_LEN > MAX_NAME_WIRE - 1) return QueryProblem.FormErr;
  }
  q.qnameEnd = p + 1;
  if (q.qnameEnd + 4 > len) return QueryProblem.FormErr;
  q.key = lower ? asciiLower(b, HEADER_LEN, p) : b.toString("latin1", HEADER_LEN, p);
  q.qtype = (b[q.qnameEnd]! << 8) | b[q.qnameEnd + 1]!;
  q.qclass = (b[q.qnameEnd + 2]! << 8) | b[q.qnameEnd + 3]!;
  q.questionEnd = q.qnameEnd + 4;
  if (ar === 0) return 0;
  // Additional section: find an OPT record (others, e.g. TSIG, are ignored).
  let o = q.questionEnd;
  for (let i = 0; i < ar; i++) {
    const nameEnd = skipName(b, o, len);
    if (nameEnd < 0 || nameEnd + 10 > len) return QueryProblem.FormErr;
    const type = (b[nameEnd]! << 8) | b[nameEnd + 1]!;
    const rdlen = (b[nameEnd + 8]! << 8) | b[nameEnd + 9]!;
    if (nameEnd + 10 + rdlen > len) return QueryProblem.FormErr;
    if (type === TYPE.OPT) {
      if (q.ednsSize !== 0 || nameEnd !== o + 1 || b[o] !== 0) return QueryProblem.FormErr; // two OPTs, or not at the root
      q.ednsSize = Math.max(512, (b[nameEnd + 2]! << 8) | b[nameEnd + 3]!);
      q.ednsVersion = b[nameEnd + 5]!;
      q.dnssecOk = (((b[nameEnd + 6]! << 8) | b[nameEnd + 7]!) & EDNS_DO) !== 0;
    }
    o = nameEnd + 10 + rdlen;
  }
  return 0;
}

/** Offset after the name at `o` (labels or a pointer), or -1 when malformed. */
export function skipName(b: Buffer, o: number, len: number): number {
  let n = 0;
  for (;;) {
    if (o >= len) return -1;
    const l = b[o]!;
    if (l === 0) return o + 1;
    if ((l & 0xc0) === 0xc0) return o + 2 <= len ? o + 2 : -1;
    if (l > 63) return -1;
    o += l + 1;
    if ((n += l + 1) > MAX_NAME_WIRE) return -1;
  }
}

const scratch = Buffer.alloc(MAX_NAME_WIRE + 1);

/** latin1 string of b[start, end) with ASCII A-Z lowered (DNS case-insensitivity is ASCII only). */
function asciiLower(b: Buffer, start: number, end: number): string {
  for (let i = start; i < end; i++) {
    const c = b[i]!;
    scratch[i - start] = c >= 0x41 && c <= 0x5a ? c + 32 : c;
  }
  return scratch.toString("latin1", 0, end - start);
}

export function newQuery(): Query {
  return { id: 0, flags: 0, opcode: 0, key: "", qtype: 0, qclass: 0, qnameEnd: 0, questionEnd: 0, ednsSize: 0, ednsVersion: 0, dnssecOk: false, extra: false };
}

/** Whether the wire-form `key` is `zoneKey` or a name under it: a suffix that starts at a label boundary. */
export function isUnder(key: string, zoneKey: string): boolean {
  if (!key.endsWith(zoneKey)) return false;
  const cut = key.length - zoneKey.length;
  let p = 0;
  while (p < cut) p += key.charCodeAt(p) + 1;
  return p === cut;
}

/** Dotted form ("web.default.svc.cluster.local", root = "") of a wire-form key. */
export function keyToName(key: string): string {
  const parts: string[] = [];
  for (let p = 0; p < key.length;) {
    const l = key.charCodeAt(p);
    parts.push(key.slice(p + 1, p + 1 + l));
    p += l + 1;
  }
  return parts.join(".");
}

/** Wire-form key of a dotted name (lower-cased; labels must be ≤ 63 bytes). */
export function nameToKey(name: string): string {
  const n = name.endsWith(".") ? name.slice(0, -1) : name;
  if (n === "") return "";
  let out = "";
  for (const label of n.toLowerCase().split(".")) out += String.fromCharCode(label.length) + label;
  return out;
}
