import * as abi from "../../../asm/abi.js";
import { RESULT_NAMES, type Counters, emptyCounters } from "../results.js";
import type { PeerEntry, TunnelConfig } from "../core/types.js";
import { maskOf } from "../../common/ipv4.js";
import { csumReplace16, sum16 } from "./checksum.js";
import { flowHash, flowSport } from "./flow.js";
import { RefLpm, RefLpm6 } from "./lpm.js";
import { maskOf6 } from "../../common/ipv6.js";

/**
 * Reference VXLAN encap/decap: the same descriptors, the same byte layout and
 * the same results as the WASM core (asm/encap.ts, asm/decap.ts), written as
 * plain TypeScript over a Uint8Array. Tests run both on copies of one memory
 * and compare every byte; the benchmark uses it as the baseline.
 */
export class RefTunnel {
  readonly lpm = new RefLpm();
  readonly lpm6 = new RefLpm6();
  readonly peers: (PeerEntry | undefined)[] = [];
  private readonly byUnderlay = new Map<number, number>();
  private readonly byUnderlay6 = new Map<bigint, number>();
  readonly counters = { encap: emptyCounters(), decap: emptyCounters() };
  private ipId = 0;

  constructor(
    readonly mem: Uint8Array,
    /** addr6Base: decap6Batch's outer IPv6 sources, 16 bytes per descriptor (WasmCore.lpm6.addrBase). */
    readonly region: { pktBase: number; pktSize: number; descBase: number; addr6Base?: number },
    public cfg: TunnelConfig,
  ) {}

  setPeer(idx: number, peer: PeerEntry): void {
    this.clearPeer(idx);
    this.peers[idx] = peer;
    this.byUnderlay.set(peer.underlay, idx);
    if (peer.underlay6 !== undefined && peer.underlay6 !== 0n) this.byUnderlay6.set(peer.underlay6, idx);
  }

  clearPeer(idx: number): void {
    const old = this.peers[idx];
    if (old) this.byUnderlay.delete(old.underlay);
    if (old?.underlay6 !== undefined) this.byUnderlay6.delete(old.underlay6);
    this.peers[idx] = undefined;
  }

  private inPackets(off: number, len: number, front: number): boolean {
    return off >= this.region.pktBase + front && off + len <= this.region.pktBase + this.region.pktSize;
  }

  private dv(): DataView {
    return new DataView(this.mem.buffer, this.mem.byteOffset, this.mem.byteLength);
  }

  encapBatch(n: number, mode: number): number {
    const frame = mode === abi.ENCAP_MODE_FRAME;
    const front = frame ? (this.cfg.outer6 || this.cfg.split6 ? abi.ENCAP_FRAME6_OVERHEAD : abi.ENCAP_FRAME_OVERHEAD) : abi.ENCAP_PAYLOAD_OVERHEAD;
    const v = this.dv();
    let ok = 0;
    for (let i = 0; i < n; i++) {
      const d = this.region.descBase + i * abi.DESC_SIZE;
      const res = this.encapOne(v, d, front, frame);
      v.setInt32(d + abi.DESC_RES, res, true);
      this.count(this.counters.encap, res);
      if (res >= 0) ok++;
    }
    return ok;
  }

  private encapOne(v: DataView, d: number, front: number, frame: boolean): number {
    const off = v.getUint32(d + abi.DESC_OFF, true);
    const len = v.getUint32(d + abi.DESC_LEN, true);
    if (!this.inPackets(off, len, front)) return abi.R_BAD_DESC;
    if (len > 0 && v.getUint8(off) >> 4 === 6) return this.encap6(v, d, off, len, front, frame);
    if (len < 20) return abi.R_TRUNCATED;
    const vihl = v.getUint8(off);
    const ihl = (vihl & 15) * 4;
    const tot = v.getUint16(off + 2);
    if (vihl >> 4 !== 4) return abi.R_NOT_IPV4;
    if (ihl < 20 || tot < ihl || tot > len) return abi.R_MALFORMED;
    if (tot + front > 0xffff) return abi.R_TOO_BIG;
    const dst = v.getUint32(off + 16);
    const nh = this.lpm.lookup(dst);
    if (nh < 0) return abi.R_NO_ROUTE;
    const peer = this.peers[nh];
    if (!peer) return abi.R_NO_ROUTE;
    if (peer.local) return abi.R_LOCAL;

    const src = v.getUint32(off + 12);
    const proto = v.getUint8(off + 9);
    const fragBits = v.getUint16(off + 6) & 0x3fff;
    const hasPorts = proto === 6 || proto === 17 || proto === 33 || proto === 132 || proto === 136;
    const ports = fragBits === 0 && hasPorts && ihl + 4 <= tot ? v.getUint32(off + ihl) : 0;
    const sport = flowSport(flowHash(src, dst, ports, proto, this.cfg.hashSeed), this.cfg.srcPortMin, this.cfg.srcPortMax - 1);
    const hash = flowHash(src, dst, ports, proto, this.cfg.hashSeed);
    return this.write(v, d, off, tot, nh, peer, v.getUint8(off + 1) & 3, sport, hash, 0x0800, frame);
  }

  /** encapOne() for an inner IPv6 packet (asm/encap.ts routePacket6). */
  private encap6(v: DataView, d: number, off: number, len: number, front: number, frame: boolean): number {
    if (len < 40) return abi.R_TRUNCATED;
    const tot = 40 + v.getUint16(off + 4);
    if (tot > len) return abi.R_MALFORMED;
    if (tot + front > 0xffff) return abi.R_TOO_BIG;
    let dst = 0n;
    for (let i = 0; i < 16; i++) dst = (dst << 8n) | BigInt(this.mem[off + 24 + i] ?? 0);
    const nh = this.lpm6.lookup(dst);
    if (nh < 0) return abi.R_NO_ROUTE;
    const peer = this.peers[nh];
    if (!peer) return abi.R_NO_ROUTE;
    if (peer.local) return abi.R_LOCAL;
    const fold = (at: number): number => (v.getUint32(at) ^ v.getUint32(at + 4) ^ v.getUint32(at + 8) ^ v.getUint32(at + 12)) >>> 0;
    const proto = v.getUint8(off + 6);
    const hasPorts = proto === 6 || proto === 17 || proto === 33 || proto === 132 || proto === 136;
    const ports = hasPorts && tot >= 44 ? v.getUint32(off + 40) : 0;
    const hash = flowHash(fold(off + 8), fold(off + 24), ports, proto, this.cfg.hashSeed);
    const sport = flowSport(hash, this.cfg.srcPortMin, this.cfg.srcPortMax - 1);
    return this.write(v, d, off, tot, nh, peer, (v.getUint8(off + 1) >> 4) & 3, sport, hash, 0x86dd, frame);
  }

  /** Writes the headers in front of an accepted inner packet and fills its descriptor. */
  private write(v: DataView, d: number, off: number, tot: number, nh: number, peer: PeerEntry, innerEcn: number, sport: number, hash: number, etype: number, frame: boolean): number {
    const outer6 = this.cfg.outer6 === true || (this.cfg.split6 === true && etype === 0x86dd);
    if (outer6 && (peer.underlay6 === undefined || peer.underlay6 === 0n)) return abi.R_NO_ROUTE;
    const tos = innerEcn === 3 ? 2 : innerEcn;
    const eth = off - 14;
    this.mem.set(etype === 0x86dd && peer.vtepMac6 ? peer.vtepMac6 : peer.vtepMac, eth);
    this.mem.set(this.cfg.localMac, eth + 6);
    v.setUint16(eth + 12, etype);
    const vx = eth - 8;
    v.setUint32(vx, 0x08000000);
    v.setUint32(vx + 4, (this.cfg.vni << 8) >>> 0);
    let start = vx;
    let outLen = tot + abi.ENCAP_PAYLOAD_OVERHEAD;
    if (frame && outer6) {
      outLen = tot + abi.ENCAP_FRAME6_OVERHEAD;
      start = off - abi.ENCAP_FRAME6_OVERHEAD;
      this.writeOuter6(v, start, outLen - 40, tos, peer.underlay6 ?? 0n, sport, hash);
    } else if (frame) {
      outLen = tot + abi.ENCAP_FRAME_OVERHEAD;
      start = off - abi.ENCAP_FRAME_OVERHEAD;
      this.writeOuter(v, start, outLen, tos, peer.underlay, sport);
    }
    v.setUint32(d + abi.DESC_OFF, start, true);
    v.setUint32(d + abi.DESC_LEN, outLen, true);
    v.setUint32(d + abi.DESC_ADDR, outer6 ? 0 : peer.underlay, true);
    v.setUint16(d + abi.DESC_SPORT, sport, true);
    v.setUint16(d + abi.DESC_DPORT, this.cfg.dstPort, true);
    v.setUint8(d + abi.DESC_TOS, tos);
    return nh;
  }

  private writeOuter6(v: DataView, ip: number, udpLen: number, tc: number, dst: bigint, sport: number, hash: number): void {
    const label = this.cfg.flowLabel ? hash & 0xfffff : 0;
    v.setUint32(ip, ((6 << 28) | (tc << 20) | label) >>> 0);
    v.setUint16(ip + 4, udpLen);
    v.setUint8(ip + 6, 17);
    v.setUint8(ip + 7, this.cfg.hopLimit ?? 64);
    const put = (at: number, a: bigint): void => {
      for (let i = 0; i < 16; i++) this.mem[at + i] = Number((a >> BigInt(8 * (15 - i))) & 0xffn);
    };
    put(ip + 8, this.cfg.localIp6 ?? 0n);
    put(ip + 24, dst);
    const udp = ip + 40;
    v.setUint16(udp, sport);
    v.setUint16(udp + 2, this.cfg.dstPort);
    v.setUint16(udp + 4, udpLen);
    v.setUint16(udp + 6, 0);
    // Pseudo-header (RFC 8200 8.1): source, destination, upper-layer length, next header.
    const pseudo = sum16(this.mem, ip + 8, 32) + (udpLen >>> 16) + (udpLen & 0xffff) + 17;
    const c = ~sum16(this.mem, udp, udpLen, pseudo) & 0xffff;
    v.setUint16(udp + 6, c === 0 ? 0xffff : c);
  }

  private writeOuter(v: DataView, ip: number, totLen: number, tos: number, dstIp: number, sport: number): void {
    const id = this.ipId;
    this.ipId = (this.ipId + 1) >>> 0;
    v.setUint8(ip, 0x45);
    v.setUint8(ip + 1, tos);
    v.setUint16(ip + 2, totLen);
    v.setUint16(ip + 4, id & 0xffff);
    v.setUint16(ip + 6, this.cfg.dontFragment ? 0x4000 : 0);
    v.setUint8(ip + 8, this.cfg.ttl);
    v.setUint8(ip + 9, 17);
    v.setUint16(ip + 10, 0);
    v.setUint32(ip + 12, this.cfg.localIp);
    v.setUint32(ip + 16, dstIp);
    v.setUint16(ip + 10, ~sum16(this.mem, ip, 20) & 0xffff);
    const udp = ip + 20;
    const udpLen = totLen - 20;
    v.setUint16(udp, sport);
    v.setUint16(udp + 2, this.cfg.dstPort);
    v.setUint16(udp + 4, udpLen);
    v.setUint16(udp + 6, 0);
    if (this.cfg.udpChecksum) {
      const s = this.cfg.localIp, t = dstIp;
      const pseudo = (s >>> 16) + (s & 0xffff) + (t >>> 16) + (t & 0xffff) + 17 + udpLen;
      const c = ~sum16(this.mem, udp, udpLen, pseudo) & 0xffff;
      v.setUint16(udp + 6, c === 0 ? 0xffff : c);
    }
  }

  decapBatch(n: number): number {
    return this.decapAll(n, (v, d) => this.byUnderlay.get(v.getUint32(d + abi.DESC_ADDR, true)) ?? -1);
  }

  /** decapBatch() for VXLAN that arrived over IPv6 (outer sources at region.addr6Base). */
  decap6Batch(n: number): number {
    const base = this.region.addr6Base;
    if (base === undefined) throw new Error("decap6Batch needs region.addr6Base");
    return this.decapAll(n, (_v, _d, i) => {
      let a = 0n;
      for (let k = 0; k < 16; k++) a = (a << 8n) | BigInt(this.mem[base + i * 16 + k] ?? 0);
      return this.byUnderlay6.get(a) ?? -1;
    });
  }

  private decapAll(n: number, sender: (v: DataView, d: number, i: number) => number): number {
    const v = this.dv();
    let ok = 0;
    for (let i = 0; i < n; i++) {
      const d = this.region.descBase + i * abi.DESC_SIZE;
      const res = this.decapOne(v, d, sender(v, d, i));
      v.setInt32(d + abi.DESC_RES, res, true);
      this.count(this.counters.decap, res);
      if (res >= 0) ok++;
    }
    return ok;
  }

  private decapOne(v: DataView, d: number, idx: number): number {
    const off = v.getUint32(d + abi.DESC_OFF, true);
    const len = v.getUint32(d + abi.DESC_LEN, true);
    if (!this.inPackets(off, len, 0)) return abi.R_BAD_DESC;
    if (len < 8) return abi.R_TRUNCATED;
    const flags = v.getUint32(off);
    const vniWord = v.getUint32(off + 4);
    if ((flags & 0x08000000) === 0) return abi.R_BAD_FLAGS;
    if (vniWord >>> 8 !== this.cfg.vni) return abi.R_BAD_VNI;
    if ((flags & ~0x08000000) !== 0 || (vniWord & 0xff) !== 0) return abi.R_BAD_FLAGS;
    if (len < 22) return abi.R_TRUNCATED;
    const eth = off + 8;
    const mac = this.cfg.localMac;
    const same = (at: number): boolean => mac.every((b, k) => this.mem[at + k] === b);
    if (!same(eth)) return abi.R_BAD_DST_MAC;
    if (same(eth + 6)) return abi.R_LOOPED;
    const ip = eth + 14;
    const avail = len - 22;
    if (v.getUint16(eth + 12) === 0x86dd) return this.decap6(v, d, ip, avail, idx);
    if (v.getUint16(eth + 12) !== 0x0800) return abi.R_NOT_IPV4;
    if (avail < 20) return abi.R_TRUNCATED;
    const vihl = v.getUint8(ip);
    if (vihl >> 4 !== 4) return abi.R_NOT_IPV4;
    const ihl = (vihl & 15) * 4;
    const tot = v.getUint16(ip + 2);
    if (ihl < 20 || tot < ihl || tot > avail) return abi.R_MALFORMED;
    if (sum16(this.mem, ip, ihl) !== 0xffff) return abi.R_BAD_CSUM;
    if (idx < 0) return abi.R_UNKNOWN_NODE;
    const peer = this.peers[idx] as PeerEntry;
    const src = v.getUint32(ip + 12);
    if (((src & maskOf(peer.subnet.len)) >>> 0) !== ((peer.subnet.addr & maskOf(peer.subnet.len)) >>> 0)) return abi.R_SPOOFED;
    if ((v.getUint8(d + abi.DESC_TOS) & 3) === 3) {
      const tos = v.getUint8(ip + 1);
      if ((tos & 3) === 0) return abi.R_ECN;
      if ((tos & 3) !== 3) {
        const check = v.getUint16(ip + 10);
        v.setUint8(ip + 1, tos | 3);
        v.setUint16(ip + 10, csumReplace16(check, (vihl << 8) | tos, (vihl << 8) | tos | 3));
      }
    }
    v.setUint32(d + abi.DESC_OFF, ip, true);
    v.setUint32(d + abi.DESC_LEN, tot, true);
    return idx;
  }

  private decap6(v: DataView, d: number, ip: number, avail: number, idx: number): number {
    if (avail < 40) return abi.R_TRUNCATED;
    if (v.getUint8(ip) >> 4 !== 6) return abi.R_NOT_IPV4;
    const tot = 40 + v.getUint16(ip + 4);
    if (tot > avail) return abi.R_MALFORMED;
    if (idx < 0) return abi.R_UNKNOWN_NODE;
    const s6 = this.peers[idx]?.subnet6;
    let src = 0n;
    for (let i = 0; i < 16; i++) src = (src << 8n) | BigInt(this.mem[ip + 8 + i] ?? 0);
    if (!s6 || (src & maskOf6(s6.len)) !== (s6.addr & maskOf6(s6.len))) return abi.R_SPOOFED;
    if ((v.getUint8(d + abi.DESC_TOS) & 3) === 3) {
      const b1 = v.getUint8(ip + 1);
      if (((b1 >> 4) & 3) === 0) return abi.R_ECN;
      v.setUint8(ip + 1, b1 | 0x30);
    }
    v.setUint32(d + abi.DESC_OFF, ip, true);
    v.setUint32(d + abi.DESC_LEN, tot, true);
    return idx;
  }

  private count(c: Counters, res: number): void {
    const name = RESULT_NAMES[res >= 0 ? 0 : -res] ?? "bad_desc";
    c[name] += 1n;
  }
}
