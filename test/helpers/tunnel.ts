import * as abi from "../../asm/abi.js";
import { parseCidr, parseIpv4, parseMac } from "../../src/common/ipv4.js";
import { inetChecksum, sum16 } from "../../src/dataplane/reference/checksum.js";
import { WasmCore } from "../../src/dataplane/core/wasm-core.js";
import { DEFAULT_TUNNEL, type CoreLimits, type PeerEntry, type TunnelConfig } from "../../src/dataplane/core/types.js";
import { RefTunnel } from "../../src/dataplane/reference/tunnel.js";

/** Three test nodes on the documentation underlay, pods in 198.18.0.0/15. */
export const NODES = [
  { underlay: parseIpv4("192.0.2.1"), vtepMac: parseMac("02:00:c0:00:02:01"), subnet: parseCidr("198.18.1.0/24") },
  { underlay: parseIpv4("192.0.2.2"), vtepMac: parseMac("02:00:c0:00:02:02"), subnet: parseCidr("198.18.2.0/24") },
  { underlay: parseIpv4("192.0.2.3"), vtepMac: parseMac("02:00:c0:00:02:03"), subnet: parseCidr("198.18.3.0/24") },
] as const;

export function tunnelFor(node: number, extra: Partial<TunnelConfig> = {}): TunnelConfig {
  const n = NODES[node];
  if (!n) throw new Error(`no test node ${node}`);
  return { ...DEFAULT_TUNNEL, localIp: n.underlay, localMac: n.vtepMac, ...extra };
}

/** Peer table as node `self` sees the cluster: index i = node i, its own entry local. */
export function peersFor(self: number): PeerEntry[] {
  return NODES.map((n, i) => ({ ...n, local: i === self }));
}

/** A WASM core set up as node `self`: tunnel, peers, one route per node subnet. */
export function coreAs(self: number, limits: Partial<CoreLimits> = {}, extra: Partial<TunnelConfig> = {}): WasmCore {
  const core = WasmCore.create({ maxPeers: 16, maxRules: 64, slots: 64, slotSize: 2048, headroom: 64, maxBatch: 64, ...limits });
  core.configure(tunnelFor(self, extra));
  peersFor(self).forEach((p, i) => {
    core.setPeer(i, p);
    core.lpmInsert(p.subnet, i);
  });
  return core;
}

/** The reference, set up like `coreAs(self)`, over a copy of the core's memory right now. */
export function refMirror(core: WasmCore, self: number, extra: Partial<TunnelConfig> = {}): RefTunnel {
  const ref = new RefTunnel(core.bytes().slice(), { pktBase: core.pktBase, pktSize: core.pktSize, descBase: core.descBase }, tunnelFor(self, extra));
  peersFor(self).forEach((p, i) => {
    ref.setPeer(i, p);
    ref.lpm.insert(p.subnet.addr, p.subnet.len, i);
  });
  return ref;
}

// ------------------------------------------------------------------ tun path

/** struct virtio_net_hdr flags and GSO types (include/uapi/linux/virtio_net.h). */
export const NEEDS_CSUM = 1;
export const GSO_NONE = 0;
export const GSO_TCPV4 = 1;
export const GSO_UDP_L4 = 5;

/** A 10-byte virtio_net_hdr (little-endian fields, as the TUN device uses them). */
export function vnet(flags: number, gsoType: number, hdrLen: number, gsoSize: number, csumStart: number, csumOffset: number): Uint8Array {
  const b = new Uint8Array(10);
  const v = new DataView(b.buffer);
  v.setUint8(0, flags);
  v.setUint8(1, gsoType);
  v.setUint16(2, hdrLen, true);
  v.setUint16(4, gsoSize, true);
  v.setUint16(6, csumStart, true);
  v.setUint16(8, csumOffset, true);
  return b;
}

export function cat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A TCP header (ports 40000 -> 5201, ack 777, window 502) with `options` (a multiple of 4 bytes), then `payload`. */
export function tcp(payload: Uint8Array, seq: number, flags: number, options: Uint8Array = new Uint8Array(0)): Uint8Array {
  const h = 20 + options.length;
  const t = new Uint8Array(h + payload.length);
  const v = new DataView(t.buffer);
  v.setUint16(0, 40000);
  v.setUint16(2, 5201);
  v.setUint32(4, seq >>> 0);
  v.setUint32(8, 777);
  v.setUint8(12, (h / 4) << 4);
  v.setUint8(13, flags);
  v.setUint16(14, 502);
  t.set(options, 20);
  t.set(payload, h);
  return t;
}

/** The 16-bit ones'-complement sum of an IPv4 packet's pseudo-header for its L4 part (not folded into a field). */
function pseudo(ip: Uint8Array, ihl: number, l4len: number): number {
  const v = new DataView(ip.buffer, ip.byteOffset, ip.byteLength);
  const s = v.getUint32(12), d = v.getUint32(16);
  return (s >>> 16) + (s & 0xffff) + (d >>> 16) + (d & 0xffff) + ip[9]! + l4len;
}

/** True when the TCP/UDP checksum of a whole IPv4 packet verifies (a UDP zero checksum counts as none). */
export function l4Valid(ip: Uint8Array): boolean {
  const v = new DataView(ip.buffer, ip.byteOffset, ip.byteLength);
  const ihl = (ip[0]! & 15) * 4;
  const tot = v.getUint16(2);
  if (ip[9] === 17 && v.getUint16(ihl + 6) === 0) return true;
  return sum16(ip, ihl, tot - ihl, pseudo(ip, ihl, tot - ihl)) === 0xffff;
}

/**
 * What the kernel's GSO makes of a TSO (TCP) or USO (UDP) IPv4 super-packet
 * cut into `gso`-byte payloads: the segments, each with its own total length,
 * IP ID (+1 per segment), sequence number, flags (CWR on the first only, FIN
 * and PSH on the last only), UDP length, and fresh checksums. The oracle the
 * tun transmit path is checked against.
 */
export function gsoSegments(ip: Uint8Array, gso: number): Uint8Array[] {
  const v = new DataView(ip.buffer, ip.byteOffset, ip.byteLength);
  const ihl = (ip[0]! & 15) * 4;
  const tot = v.getUint16(2);
  const isTcp = ip[9] === 6;
  const hdrs = ihl + (isTcp ? (ip[ihl + 12]! >> 4) * 4 : 8);
  const payload = tot - hdrs;
  const segs = payload === 0 ? 1 : Math.ceil(payload / gso);
  const id0 = v.getUint16(4);
  const seq0 = isTcp ? v.getUint32(ihl + 4) : 0;
  const out: Uint8Array[] = [];
  for (let s = 0; s < segs; s++) {
    const size = Math.min(gso, payload - s * gso);
    const seg = new Uint8Array(hdrs + size);
    seg.set(ip.subarray(0, hdrs));
    seg.set(ip.subarray(hdrs + s * gso, hdrs + s * gso + size), hdrs);
    const w = new DataView(seg.buffer);
    w.setUint16(2, hdrs + size);
    w.setUint16(4, (id0 + s) & 0xffff);
    w.setUint16(10, 0);
    w.setUint16(10, inetChecksum(seg, 0, ihl));
    const l4 = hdrs - ihl + size;
    if (isTcp) {
      w.setUint32(ihl + 4, (seq0 + s * gso) >>> 0);
      let f = ip[ihl + 13]!;
      if (s > 0) f &= ~0x80;
      if (s < segs - 1) f &= ~0x09;
      seg[ihl + 13] = f;
      w.setUint16(ihl + 16, 0);
      w.setUint16(ihl + 16, ~sum16(seg, ihl, l4, pseudo(seg, ihl, l4)) & 0xffff);
    } else {
      w.setUint16(ihl + 4, l4);
      w.setUint16(ihl + 6, 0);
      const c = ~sum16(seg, ihl, l4, pseudo(seg, ihl, l4)) & 0xffff;
      w.setUint16(ihl + 6, c === 0 ? 0xffff : c);
    }
    out.push(seg);
  }
  return out;
}

/** A unit of the last tun batch as bytes: its iovecs concatenated, cut every `gso` bytes (UDP_SEGMENT's datagrams). */
export function unitDatagrams(core: WasmCore, u: ReturnType<WasmCore["unit"]>): Uint8Array[] {
  const mem = core.bytes();
  const all = cat(...u.iovs.map(([o, l]) => mem.subarray(o, o + l)));
  if (u.gso === 0) return [all];
  const out: Uint8Array[] = [];
  for (let i = 0; i < all.length; i += u.gso) out.push(all.subarray(i, i + u.gso));
  return out;
}

/** A byte range of the core's memory [start, end) that a call may write. */
export interface Region {
  readonly what: string;
  readonly start: number;
  readonly end: number;
}

/** What a tun batch call writes besides packets: the unit table, the iovec table, the header arena, the counters. */
export function tunRegions(core: WasmCore): Region[] {
  const units = core.limits.units;
  return [
    { what: "units", start: core.unitBase, end: core.unitBase + units * abi.UNIT_SIZE },
    { what: "iovecs", start: core.iovBase, end: core.iovBase + 2 * units * abi.IOV_SIZE },
    { what: "arena", start: core.iovBase + 2 * units * abi.IOV_SIZE, end: core.iovBase + 2 * units * abi.IOV_SIZE + units * abi.ARENA_BLOCK },
    { what: "counters", start: core.countersBase(abi.DIR_ENCAP), end: core.countersBase(abi.DIR_ENCAP) + 2 * abi.R_COUNT * 8 },
  ];
}

/**
 * The canary check: the first byte of memory that differs from `before`
 * outside the allowed regions (described), or undefined when none does.
 * Memory that grew counts as written.
 */
export function writtenOutside(core: WasmCore, before: Uint8Array, allowed: readonly Region[]): string | undefined {
  const now = core.bytes();
  if (now.length !== before.length) return `memory grew from ${before.length} to ${now.length} bytes`;
  const cuts = [...allowed].sort((a, b) => a.start - b.start);
  let at = 0;
  const check = (from: number, to: number): string | undefined => {
    if (to <= from || Buffer.compare(Buffer.from(now.buffer, now.byteOffset + from, to - from), Buffer.from(before.buffer, before.byteOffset + from, to - from)) === 0) return undefined;
    for (let i = from; i < to; i++) if (now[i] !== before[i]) return `byte ${i} changed (${before[i]} -> ${now[i]}) outside ${cuts.map((r) => `${r.what} [${r.start}, ${r.end})`).join(", ")}`;
    return undefined;
  };
  for (const r of cuts) {
    const bad = check(at, r.start);
    if (bad) return bad;
    at = Math.max(at, r.end);
  }
  return check(at, now.length);
}

/**
 * Checks one unit of a tun receive batch as the TUN device's kernel will
 * read it: [virtio_net_hdr][IPv4 packet] whose every byte comes from
 * `inputs` (the received buffers), a well-formed IPv4 header with a good
 * checksum and a total length that matches, an offload header consistent
 * with the packet, and a TCP/UDP checksum that verifies once finished (a
 * partial one is finished as the kernel would). Throws on anything else.
 */
export function checkRxUnit(core: WasmCore, u: ReturnType<WasmCore["unit"]>, inputs: readonly Region[]): void {
  if (u.iovs.length === 0) throw new Error("an accepted unit has no iovecs");
  for (const [o, l] of u.iovs) {
    if (!inputs.some((r) => o >= r.start && o + l <= r.end)) throw new Error(`iovec [${o}, ${o + l}) lies outside every received buffer`);
  }
  const pkt = cat(...u.iovs.map(([o, l]) => core.bytes().subarray(o, o + l)));
  const hv = new DataView(pkt.buffer);
  const [flags, gsoType, hdrLen, gsoSize, cstart, coff] = [hv.getUint8(0), hv.getUint8(1), hv.getUint16(2, true), hv.getUint16(4, true), hv.getUint16(6, true), hv.getUint16(8, true)];
  const ip = pkt.subarray(10);
  const v = new DataView(ip.buffer, ip.byteOffset, ip.byteLength);
  if (ip.length < 20 || ip[0]! >> 4 !== 4) throw new Error("not an IPv4 packet");
  const ihl = (ip[0]! & 15) * 4;
  if (ihl < 20 || v.getUint16(2) !== ip.length) throw new Error(`IPv4 total length ${v.getUint16(2)} but ${ip.length} bytes`);
  if (sum16(ip, 0, ihl) !== 0xffff) throw new Error("bad IPv4 header checksum");
  const proto = ip[9]!;
  const frag = (v.getUint16(6) & 0x3fff) !== 0;
  if (!frag && proto === 6 && (ip.length < ihl + 20 || (ip[ihl + 12]! >> 4) < 5 || (ip[ihl + 12]! >> 4) * 4 > ip.length - ihl)) throw new Error("a TCP header that does not fit its data offset");
  if (gsoType === GSO_NONE) {
    if (flags !== 0) throw new Error(`flags ${flags} on a complete packet`);
    if (!frag && (proto === 6 || proto === 17) && !l4Valid(ip)) throw new Error("bad TCP/UDP checksum on a complete packet");
    return;
  }
  const tcpGso = gsoType === GSO_TCPV4 && proto === 6;
  if (!tcpGso && !(gsoType === GSO_UDP_L4 && proto === 17)) throw new Error(`GSO type ${gsoType} on protocol ${proto}`);
  const hdrs = ihl + (tcpGso ? (ip[ihl + 12]! >> 4) * 4 : 8);
  if (frag || flags !== NEEDS_CSUM || hdrLen !== hdrs || cstart !== ihl || coff !== (tcpGso ? 16 : 6) || gsoSize === 0 || hdrs + gsoSize > 65535 || hdrs >= ip.length) {
    throw new Error(`inconsistent virtio_net_hdr ${JSON.stringify({ flags, gsoType, hdrLen, gsoSize, cstart, coff })} for headers of ${hdrs} bytes`);
  }
  const l4 = ip.length - ihl;
  const partial = ((): number => {
    let s = pseudo(ip, ihl, l4);
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    return s;
  })();
  if (v.getUint16(ihl + coff) !== partial) throw new Error("the checksum field does not hold the partial pseudo-header sum");
  const done = ip.slice();
  new DataView(done.buffer).setUint16(ihl + coff, ~sum16(done, ihl, l4) & 0xffff);
  if (!l4Valid(done)) throw new Error("the finished checksum does not verify");
}

/** A VXLAN UDP payload (VNI 1) from node `from` to node `to` carrying `inner` as-is. */
export function vxlanPayload(from: number, to: number, inner: Uint8Array): Uint8Array {
  return vxlanFrame(NODES[to]!.vtepMac, NODES[from]!.vtepMac, 0x0800, inner);
}

/** A VXLAN UDP payload (VNI 1): header, inner Ethernet (destination and source MACs, EtherType), `inner` as-is. */
export function vxlanFrame(dstMac: Uint8Array, srcMac: Uint8Array, etherType: number, inner: Uint8Array): Uint8Array {
  const dg = new Uint8Array(22 + inner.length);
  const v = new DataView(dg.buffer);
  v.setUint32(0, 0x08000000);
  v.setUint32(4, 1 << 8);
  dg.set(dstMac, 8);
  dg.set(srcMac, 14);
  v.setUint16(20, etherType);
  dg.set(inner, 22);
  return dg;
}

/** The datagram size tun receive cuts a buffer at (asm/tun-rx.ts datagramSize, the spec the tests hold it to). */
export function rxDatagramSize(buf: Uint8Array, gso: number): number {
  if (gso === 0 || gso >= buf.length) return buf.length;
  // Inner IPv6 (version 6): its length is 40 + the payload length at bytes 4-5.
  if (buf.length >= 28 && buf[22]! >> 4 === 6) return 40 + ((buf[26]! << 8) | buf[27]!) + 22 > gso ? buf.length : gso;
  if (buf.length >= 26 && ((buf[24]! << 8) | buf[25]!) + 22 > gso) return buf.length;
  return gso;
}

/**
 * Feeds received buffers (with their UDP_GRO sizes) from node `from` to a
 * receiving core, calling tun_rx_batch again while it has not finished,
 * and checks every call: nothing written outside the unit and iovec tables,
 * the counters and the buffers themselves; every unit well-formed
 * (checkRxUnit); every datagram counted once, accepted ones in exactly one
 * unit. Returns the counter deltas and the units' segment counts.
 */
export function receiveChecked(core: WasmCore, bufs: readonly { buf: Uint8Array; gso: number; from?: number; tos?: number }[], maxCalls = 10_000): { calls: number; ok: number; dropped: number; units: number } {
  const inputs: Region[] = [];
  let at = core.pktBase;
  bufs.forEach((b, i) => {
    core.bytes().set(b.buf, at);
    core.setDesc(i, at, b.buf.length, b.from ?? NODES[0].underlay, b.tos ?? 0);
    new DataView(core.bytes().buffer).setUint16(core.descBase + i * abi.DESC_SIZE + abi.DESC_GSO, b.gso, true);
    inputs.push({ what: `buffer ${i}`, start: at, end: at + b.buf.length });
    at += b.buf.length + 64;
  });
  if (at > core.pktBase + core.pktSize) throw new Error("the buffers do not fit the packet region");
  const total = (): bigint => Object.values(core.counters(abi.DIR_DECAP)).reduce((a, b) => a + b, 0n);
  const ok0 = core.counters(abi.DIR_DECAP).ok;
  const all0 = total();
  let next = 0, calls = 0, segs = 0, units = 0;
  while (next < bufs.length) {
    const before = core.bytes().slice();
    next = core.tunRx(next, bufs.length);
    if (++calls > maxCalls) throw new Error(`no progress after ${maxCalls} calls (at descriptor ${next})`);
    const bad = writtenOutside(core, before, [...tunRegions(core), ...inputs]);
    if (bad) throw new Error(`call ${calls}: ${bad}`);
    for (let u = 0; u < core.tunUnits(); u++) {
      const unit = core.unit(u);
      if (unit.res < 0) throw new Error(`a receive unit with result ${unit.res}`);
      checkRxUnit(core, unit, inputs);
      checkRxOrigin(core, unit, bufs, inputs);
      segs += unit.segs;
      units++;
    }
  }
  const ok = Number(core.counters(abi.DIR_DECAP).ok - ok0);
  const all = Number(total() - all0);
  const want = bufs.reduce((n, b) => n + (b.buf.length === 0 ? 1 : Math.ceil(b.buf.length / rxDatagramSize(b.buf, b.gso))), 0);
  if (all !== want) throw new Error(`counters moved by ${all}, but ${want} datagrams came in`);
  if (segs !== ok) throw new Error(`${ok} datagrams accepted, but the units carry ${segs}`);
  return { calls, ok, dropped: all - ok, units };
}

/**
 * Why the receive path must not have taken this original inner packet
 * (undefined: it may): a bad IPv4 header checksum, a source outside the
 * sending node's subnet, or a TCP/UDP checksum that neither verifies nor
 * was left partial by the sender (nor is UDP's "none").
 */
function refusable(ip: Uint8Array, from: number): string | undefined {
  const v = new DataView(ip.buffer, ip.byteOffset, ip.byteLength);
  const ihl = (ip[0]! & 15) * 4;
  if (sum16(ip, 0, ihl) !== 0xffff) return "a bad IPv4 header checksum";
  const peer = NODES.find((n) => n.underlay === from);
  const mask = peer ? (peer.subnet.len === 0 ? 0 : (~0 << (32 - peer.subnet.len)) >>> 0) : 0;
  if (!peer || ((v.getUint32(12) & mask) >>> 0) !== peer.subnet.addr >>> 0) return "a source outside the sender's subnet";
  const proto = ip[9]!;
  if ((v.getUint16(6) & 0x3fff) !== 0 || (proto !== 6 && proto !== 17)) return undefined;
  const at = ihl + (proto === 6 ? 16 : 6);
  if (proto === 17 && v.getUint16(at) === 0) return undefined;
  if (l4Valid(ip)) return undefined;
  let partial = pseudo(ip, ihl, ip.length - ihl);
  while (partial > 0xffff) partial = (partial & 0xffff) + (partial >>> 16);
  return v.getUint16(at) === partial ? undefined : "a TCP/UDP checksum that is wrong";
}

/**
 * Holds a receive unit against the datagrams it came from (their bytes as
 * received): each segment's original inner packet is one the path may take
 * (refusable), its payload reaches the device unchanged, and a complete
 * packet differs from its original only in the ECN bits (RFC 6040, outer CE
 * on ECT), the IPv4 checksum, and a TCP/UDP checksum the sender left
 * partial.
 */
function checkRxOrigin(core: WasmCore, u: ReturnType<WasmCore["unit"]>, bufs: readonly { buf: Uint8Array; gso: number; from?: number; tos?: number }[], inputs: readonly Region[]): void {
  const mem = core.bytes();
  const hdrLen = new DataView(mem.buffer).getUint16(u.iovs[0]![0] + 2, true);
  const gso = mem[u.iovs[0]![0] + 1]!;
  u.iovs.forEach(([o, l], k) => {
    const r = inputs.findIndex((x) => o >= x.start && o + l <= x.end);
    const b = bufs[r]!;
    const rel = o - inputs[r]!.start;
    const g = rxDatagramSize(b.buf, b.gso);
    const start = Math.floor(rel / g) * g;
    const orig = b.buf.subarray(start + 22, start + 22 + ((b.buf[start + 24]! << 8) | b.buf[start + 25]!));
    const why = refusable(orig, b.from ?? NODES[0].underlay);
    if (why) throw new Error(`a unit carries a packet with ${why}`);
    const out = mem.subarray(o, o + l);
    if (k > 0 || gso !== GSO_NONE) {
      // Payload (or, for the first iovec of an offload, what follows the headers) is the received bytes, untouched.
      const skip = k === 0 ? 10 + hdrLen : 0;
      if (Buffer.compare(out.subarray(skip), b.buf.subarray(rel + skip, rel + l)) !== 0) throw new Error("a unit's payload differs from the bytes received");
      return;
    }
    if (rel - start !== 12 || l - 10 !== orig.length) throw new Error("a complete packet is not where its datagram put it");
    const ip = out.subarray(10);
    const ihl = (orig[0]! & 15) * 4;
    const at = ihl + (orig[9] === 6 ? 16 : 6);
    const partialField = (orig[9] === 6 || orig[9] === 17) && (new DataView(orig.buffer, orig.byteOffset).getUint16(6) & 0x3fff) === 0 && !l4Valid(orig);
    for (let i = 0; i < ip.length; i++) {
      if (ip[i] === orig[i] || i === 10 || i === 11 || (partialField && (i === at || i === at + 1))) continue;
      if (i === 1 && ((b.tos ?? 0) & 3) === 3 && ((orig[1]! & 3) === 1 || (orig[1]! & 3) === 2) && ip[1] === (orig[1]! | 3)) continue;
      throw new Error(`a complete packet differs from the one received at byte ${i} (${orig[i]} -> ${ip[i]})`);
    }
  });
}
