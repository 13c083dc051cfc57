import { parseCidr6, parseIpv6 } from "../../src/common/ipv6.js";
import { sum16 } from "../../src/dataplane/reference/checksum.js";
import { WasmCore } from "../../src/dataplane/core/wasm-core.js";
import type { CoreLimits, PeerEntry, TunnelConfig } from "../../src/dataplane/core/types.js";
import { RefTunnel } from "../../src/dataplane/reference/tunnel.js";
import { NODES, tunnelFor } from "../helpers/tunnel.js";
import { parseMac } from "../../src/common/ipv4.js";

/** The test nodes of test/helpers/tunnel.ts, dual-stack: IPv6 underlay 2001:db8:ff::N, pods 2001:db8:N::/64. */
export const NODES6 = NODES.map((n, i) => ({
  ...n,
  underlay6: parseIpv6(`2001:db8:ff::${i + 1}`),
  subnet6: parseCidr6(`2001:db8:${i + 1}::/64`),
  // Node C's IPv6 device has its own VTEP MAC (as flannel's flannel-v6.1); A and B use one for both.
  ...(i === 2 ? { vtepMac6: parseMac("02:00:c0:00:06:03") } : {}),
}));

export function peers6For(self: number): PeerEntry[] {
  return NODES6.map((n, i) => ({ ...n, local: i === self }));
}

export function tunnel6For(self: number, extra: Partial<TunnelConfig> = {}): TunnelConfig {
  return tunnelFor(self, { localIp6: NODES6[self]!.underlay6, ...extra });
}

/** A core as node `self` with IPv4 and IPv6 routes to every node (headroom for outer IPv6). */
export function core6As(self: number, extra: Partial<TunnelConfig> = {}, limits: Partial<CoreLimits> = {}): WasmCore {
  const core = WasmCore.create({ maxPeers: 16, maxRules: 64, maxRules6: 64, slots: 64, slotSize: 2048, headroom: 128, maxBatch: 64, ...limits });
  core.configure(tunnel6For(self, extra));
  peers6For(self).forEach((p, i) => {
    core.setPeer(i, p);
    core.lpmInsert(p.subnet, i);
    if (p.subnet6) core.lpm6.insert(p.subnet6, i);
  });
  return core;
}

/** The reference set up like core6As(self), over a copy of the core's memory now. */
export function ref6Mirror(core: WasmCore, self: number, extra: Partial<TunnelConfig> = {}): RefTunnel {
  const ref = new RefTunnel(core.bytes().slice(), { pktBase: core.pktBase, pktSize: core.pktSize, descBase: core.descBase, addr6Base: core.lpm6.addrBase }, tunnel6For(self, extra));
  peers6For(self).forEach((p, i) => {
    ref.setPeer(i, p);
    ref.lpm.insert(p.subnet.addr, p.subnet.len, i);
    if (p.subnet6) ref.lpm6.insert(p.subnet6.addr, p.subnet6.len, i);
  });
  return ref;
}

export interface Ipv6Opts {
  src: bigint;
  dst: bigint;
  nh: number;
  payload: Uint8Array;
  tc?: number;
  hop?: number;
  label?: number;
}

export function ipv6(o: Ipv6Opts): Uint8Array {
  const b = new Uint8Array(40 + o.payload.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, ((6 << 28) | ((o.tc ?? 0) << 20) | (o.label ?? 0)) >>> 0);
  v.setUint16(4, o.payload.length);
  v.setUint8(6, o.nh);
  v.setUint8(7, o.hop ?? 64);
  for (let i = 0; i < 16; i++) {
    b[8 + i] = Number((o.src >> BigInt(8 * (15 - i))) & 0xffn);
    b[24 + i] = Number((o.dst >> BigInt(8 * (15 - i))) & 0xffn);
  }
  b.set(o.payload, 40);
  return b;
}

/** An ICMPv6 echo request with its checksum over the IPv6 pseudo-header. */
export function icmp6Echo(src: bigint, dst: bigint, id: number, seq: number, data: Uint8Array, tc = 0): Uint8Array {
  const m = new Uint8Array(8 + data.length);
  const v = new DataView(m.buffer);
  v.setUint8(0, 128);
  v.setUint16(4, id);
  v.setUint16(6, seq);
  m.set(data, 8);
  const pkt = ipv6({ src, dst, nh: 58, payload: m, tc });
  v.setUint16(2, ~sum16(pkt, 40, m.length, pseudo6(pkt, m.length, 58)) & 0xffff);
  pkt.set(m, 40);
  return pkt;
}

/** The unfolded ones'-complement sum of an IPv6 packet's pseudo-header (addresses, length, next header). */
export function pseudo6(pkt: Uint8Array, len: number, nh: number): number {
  return sum16(pkt, 8, 32) + (len >>> 16) + (len & 0xffff) + nh;
}

/** True when the UDP checksum of the outer IPv6 + UDP at the start of `frame` verifies and is not zero. */
export function outerUdp6Valid(frame: Uint8Array): boolean {
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const len = v.getUint16(4);
  if (v.getUint16(46) === 0) return false;
  return sum16(frame, 40, len, pseudo6(frame, len, 17)) === 0xffff;
}
