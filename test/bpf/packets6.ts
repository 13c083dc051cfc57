import { ipv6Bytes } from "../../src/common/ipv6.js";
import { sum16 } from "../../src/dataplane/reference/checksum.js";

/** IPv6 packet builders for the BPF program tests. */
export interface Ipv6Opts {
  src: bigint;
  dst: bigint;
  next: number;
  payload: Uint8Array;
  hop?: number;
}

export function ipv6(o: Ipv6Opts): Uint8Array {
  const b = new Uint8Array(40 + o.payload.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, 0x60000000);
  v.setUint16(4, o.payload.length);
  v.setUint8(6, o.next);
  v.setUint8(7, o.hop ?? 64);
  b.set(ipv6Bytes(o.src), 8);
  b.set(ipv6Bytes(o.dst), 24);
  b.set(o.payload, 40);
  return b;
}

/** Ones'-complement sum of the IPv6 pseudo-header (RFC 8200 8.1) for an upper-layer packet of `len` bytes. */
export function pseudoSum6(src: bigint, dst: bigint, next: number, len: number): number {
  const p = new Uint8Array(40);
  p.set(ipv6Bytes(src), 0);
  p.set(ipv6Bytes(dst), 16);
  new DataView(p.buffer).setUint32(32, len);
  p[39] = next;
  return sum16(p, 0, 40);
}

/** An ICMPv6 message with its checksum (over the pseudo-header). */
export function icmpv6(src: bigint, dst: bigint, type: number, code: number, body: Uint8Array): Uint8Array {
  const b = new Uint8Array(4 + body.length);
  b[0] = type;
  b[1] = code;
  b.set(body, 4);
  new DataView(b.buffer).setUint16(2, ~sum16(b, 0, b.length, pseudoSum6(src, dst, 58, b.length)) & 0xffff);
  return b;
}

/** A neighbour solicitation for `target` (RFC 4861 4.3), with a source link-layer address option unless from ::. */
export function neighbourSolicitation(src: bigint, dst: bigint, target: bigint, mac: Uint8Array): Uint8Array {
  const withOpt = src !== 0n;
  const body = new Uint8Array(20 + (withOpt ? 8 : 0));
  body.set(ipv6Bytes(target), 4);
  if (withOpt) {
    body[20] = 1; // source link-layer address
    body[21] = 1; // 8 bytes
    body.set(mac, 22);
  }
  return ipv6({ src, dst, next: 58, hop: 255, payload: icmpv6(src, dst, 135, 0, body) });
}

/** The solicited-node multicast address of `a` (ff02::1:ffXX:XXXX). */
export function solicitedNode(a: bigint): bigint {
  return (0xff02n << 112n) | (1n << 32n) | (0xffn << 24n) | (a & 0xffffffn);
}
