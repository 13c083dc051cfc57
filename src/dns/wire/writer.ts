import { isIPv4, isIPv6 } from "node:net";
import { CLASS_IN } from "./constants.js";

/** Record data by kind. Names are dotted, without the final dot. */
export type RData =
  | { readonly a: string }
  | { readonly aaaa: string }
  | { readonly target: string } // CNAME, PTR, NS
  | { readonly srv: { readonly priority: number; readonly weight: number; readonly port: number; readonly target: string } }
  | { readonly txt: readonly string[] }
  | { readonly soa: { readonly mname: string; readonly rname: string; readonly serial: number; readonly refresh: number; readonly retry: number; readonly expire: number; readonly minimum: number } };

export interface Record_ {
  readonly name: string;
  readonly type: number;
  readonly ttl: number;
  readonly data: RData;
}

export interface MessageSpec {
  readonly id?: number;
  /** Flags word (QR, AA, RD, RA, ...) without the rcode. */
  readonly flags: number;
  readonly rcode: number;
  /** `key`: the name in wire form (Query.key), written as is — for names a dotted form cannot carry (a "." inside a label). */
  readonly question: { readonly name: string; readonly type: number; readonly key?: string };
  readonly answer?: readonly Record_[];
  readonly authority?: readonly Record_[];
  readonly additional?: readonly Record_[];
}

/** An encoded message and where its TTLs are, so a cache can count them down in place. */
export interface Encoded {
  readonly bytes: Buffer;
  /** Byte offsets of every record's TTL field. */
  readonly ttlOffsets: Uint16Array;
  /** The TTL written at each offset. */
  readonly ttls: Uint32Array;
}

/**
 * Encodes a message with name compression (RFC 1035 4.1.4). Throws
 * RangeError for an address or name that cannot be encoded; callers build
 * records from validated registry entries.
 */
export function encodeMessage(m: MessageSpec): Encoded {
  const w = shared;
  w.reset();
  const answer = m.answer ?? [];
  const authority = m.authority ?? [];
  const additional = m.additional ?? [];
  w.u16(m.id ?? 0);
  w.u16((m.flags & 0xfff0) | (m.rcode & 0xf));
  w.u16(1);
  w.u16(answer.length);
  w.u16(authority.length);
  w.u16(additional.length);
  if (m.question.key !== undefined) {
    w.bytes(Buffer.from(m.question.key, "latin1"));
    w.bytes(Uint8Array.of(0));
  } else {
    w.name(m.question.name);
  }
  w.u16(m.question.type);
  w.u16(CLASS_IN);
  const offsets: number[] = [];
  const ttls: number[] = [];
  for (const r of [...answer, ...authority, ...additional]) {
    w.name(r.name);
    w.u16(r.type);
    w.u16(CLASS_IN);
    offsets.push(w.pos);
    ttls.push(r.ttl);
    w.u32(r.ttl);
    const lenAt = w.pos;
    w.u16(0);
    w.rdata(r.data);
    w.patch16(lenAt, w.pos - lenAt - 2);
  }
  return { bytes: Buffer.from(w.buf.subarray(0, w.pos)), ttlOffsets: Uint16Array.from(offsets), ttls: Uint32Array.from(ttls) };
}

/** One writer reused by every encode (single-threaded): no buffer allocated per message. */
class Writer {
  buf = Buffer.alloc(4096);
  pos = 0;
  private readonly names = new Map<string, number>();

  reset(): void {
    this.pos = 0;
    this.names.clear();
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    if (this.pos + n > 65535) throw new RangeError("DNS message longer than 65535 bytes");
    const b = Buffer.alloc(Math.min(65535, Math.max(this.buf.length * 2, this.pos + n)));
    this.buf.copy(b, 0, 0, this.pos);
    this.buf = b;
  }

  u16(v: number): void {
    this.room(2);
    this.buf.writeUInt16BE(v & 0xffff, this.pos);
    this.pos += 2;
  }

  u32(v: number): void {
    this.room(4);
    this.buf.writeUInt32BE(v >>> 0, this.pos);
    this.pos += 4;
  }

  patch16(at: number, v: number): void {
    this.buf.writeUInt16BE(v, at);
  }

  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** A name, compressed against every name (suffix) written before unless `compress` is false. */
  name(dotted: string, compress = true): void {
    const labels = dotted === "" ? [] : dotted.split(".");
    let wire = 1;
    for (let i = 0; i < labels.length; i++) {
      const suffix = labels.slice(i).join(".").toLowerCase();
      const at = compress ? this.names.get(suffix) : undefined;
      if (at !== undefined) {
        this.u16(0xc000 | at);
        return;
      }
      const label = Buffer.from(labels[i]!, "latin1");
      if (label.length === 0 || label.length > 63) throw new RangeError(`label "${labels[i]}" of "${dotted}" must be 1-63 bytes`);
      if ((wire += label.length + 1) > 255) throw new RangeError(`name "${dotted}" is longer than 255 bytes`);
      if (this.pos < 0x3fff) this.names.set(suffix, this.pos);
      this.room(1);
      this.buf[this.pos++] = label.length;
      this.bytes(label);
    }
    this.room(1);
    this.buf[this.pos++] = 0;
  }

  rdata(d: RData): void {
    if ("a" in d) {
      if (!isIPv4(d.a)) throw new RangeError(`"${d.a}" is not an IPv4 address`);
      this.bytes(Uint8Array.from(d.a.split(".").map(Number)));
    } else if ("aaaa" in d) {
      this.bytes(ipv6Bytes(d.aaaa));
    } else if ("target" in d) {
      this.name(d.target);
    } else if ("srv" in d) {
      this.u16(d.srv.priority);
      this.u16(d.srv.weight);
      this.u16(d.srv.port);
      this.name(d.srv.target, false); // RFC 2782: the target is not compressed
    } else if ("txt" in d) {
      for (const s of d.txt) {
        const b = Buffer.from(s, "utf8");
        if (b.length > 255) throw new RangeError("a TXT string is longer than 255 bytes");
        this.room(1);
        this.buf[this.pos++] = b.length;
        this.bytes(b);
      }
    } else {
      this.name(d.soa.mname);
      this.name(d.soa.rname);
      this.u32(d.soa.serial);
      this.u32(d.soa.refresh);
      this.u32(d.soa.retry);
      this.u32(d.soa.expire);
      this.u32(d.soa.minimum);
    }
  }
}

const shared = new Writer();

/** The 16 bytes of an IPv6 address. */
export function ipv6Bytes(s: string): Uint8Array {
  if (!isIPv6(s)) throw new RangeError(`"${s}" is not an IPv6 address`);
  let text = s;
  const out = new Uint8Array(16);
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const o = v4[1]!.split(".").map(Number);
    text = `${text.slice(0, -v4[1]!.length)}${((o[0]! << 8) | o[1]!).toString(16)}:${((o[2]! << 8) | o[3]!).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const h = head === "" ? [] : head.split(":");
  const t = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill("0"), ...t];
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  });
  return out;
}
