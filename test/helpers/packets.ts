import { inetChecksum } from "../../src/dataplane/reference/checksum.js";

/** Small builders for the packets tests feed the core. */
export interface Ipv4Opts {
  src: number;
  dst: number;
  proto: number;
  payload: Uint8Array;
  tos?: number;
  ttl?: number;
  id?: number;
  /** Flags + fragment offset field (e.g. 0x2000 = MF). */
  frag?: number;
  /** Extra option bytes (multiple of 4). */
  options?: Uint8Array;
}

export function ipv4(o: Ipv4Opts): Uint8Array {
  const opt = o.options ?? new Uint8Array(0);
  const ihl = 20 + opt.length;
  const b = new Uint8Array(ihl + o.payload.length);
  const v = new DataView(b.buffer);
  v.setUint8(0, 0x40 | (ihl / 4));
  v.setUint8(1, o.tos ?? 0);
  v.setUint16(2, b.length);
  v.setUint16(4, o.id ?? 0x1234);
  v.setUint16(6, o.frag ?? 0);
  v.setUint8(8, o.ttl ?? 64);
  v.setUint8(9, o.proto);
  v.setUint32(12, o.src >>> 0);
  v.setUint32(16, o.dst >>> 0);
  b.set(opt, 20);
  v.setUint16(10, inetChecksum(b, 0, ihl));
  b.set(o.payload, ihl);
  return b;
}

export function udp(sport: number, dport: number, data: Uint8Array): Uint8Array {
  const b = new Uint8Array(8 + data.length);
  const v = new DataView(b.buffer);
  v.setUint16(0, sport);
  v.setUint16(2, dport);
  v.setUint16(4, b.length);
  b.set(data, 8);
  return b;
}

export function icmpEcho(id: number, seq: number, data: Uint8Array): Uint8Array {
  const b = new Uint8Array(8 + data.length);
  const v = new DataView(b.buffer);
  v.setUint8(0, 8);
  v.setUint16(4, id);
  v.setUint16(6, seq);
  b.set(data, 8);
  v.setUint16(2, inetChecksum(b));
  return b;
}

/** Deterministic PRNG (mulberry32) so a failing random case can be replayed from its seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randInt(r: () => number, lo: number, hiIncl: number): number {
  return lo + Math.floor(r() * (hiIncl - lo + 1));
}

export function randBytes(r: () => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}
