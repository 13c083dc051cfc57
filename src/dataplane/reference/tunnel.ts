import * as abi from "../../../asm/abi.js";
import { RESULT_NAMES, type Counters, emptyCounters } from "../results.js";
import type { PeerEntry, TunnelConfig } from "../core/types.js";
import { maskOf } from "../../common/ipv4.js";
import { csumReplace16, sum16 } from "./checksum.js";
import { flowHash, flowSport } from "./flow.js";
import { RefLpm } from "./lpm.js";

/**
 * Reference VXLAN encap/decap: the same descriptors, the same byte layout and
 * the same results as the WASM core (asm/encap.ts, asm/decap.ts), written as
 * plain TypeScript over a Uint8Array. Tests run both on copies of one memory
 * and compare every byte; the benchmark uses it as the baseline.
 */
export class RefTunnel {
  readonly lpm = new RefLpm();
  readonly peers: (PeerEntry | undefined)[] = [];
  private readonly byUnderlay = new Map<number, number>();
  readonly counters = { encap: emptyCounters(), decap: emptyCounters() };
  private ipId = 0;

  constructor(
    readonly mem: Uint8Array,
    readonly region: { pktBase: number; pktSize: number; descBase: number },
    public cfg: TunnelConfig,
  ) {}

  setPeer(idx: number, peer: PeerEntry): void {
    this.clearPeer(idx);
    this.peers[idx] = peer;
    this.byUnderlay.set(peer.underlay, idx);
  }

  clearPeer(idx: number): void {
    const old = this.peers[idx];
    if (old) this.byUnderlay.delete(old.underlay);
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
    const front = frame ? abi.ENCAP_FRAME_OVERHEAD : abi.ENCAP_PAYLOAD_OVERHEAD;
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
    const innerEcn = v.getUint8(off + 1) & 3;
    const tos = innerEcn === 3 ? 2 : innerEcn;

    const eth = off - 14;
    this.mem.set(peer.vtepMac, eth);
    this.mem.set(this.cfg.localMac, eth + 6);
    v.setUint16(eth + 12, 0x0800);
    const vx = eth - 8;
    v.setUint32(vx, 0x08000000);
    v.setUint32(vx + 4, (this.cfg.vni << 8) >>> 0);
    let start = vx;
    let outLen = tot + abi.ENCAP_PAYLOAD_OVERHEAD;
    if (frame) {
      outLen = tot + abi.ENCAP_FRAME_OVERHEAD;
      start = off - abi.ENCAP_FRAME_OVERHEAD;
      this.writeOuter(v, start, outLen, tos, peer.underlay, sport);
    }
    v.setUint32(d + abi.DESC_OFF, start, true);
    v.setUint32(d + abi.DESC_LEN, outLen, true);
    v.setUint32(d + abi.DESC_ADDR, peer.underlay, true);
    v.setUint16(d + abi.DESC_SPORT, sport, true);
    v.setUint16(d + abi.DESC_DPORT, this.cfg.dstPort, true);
    v.setUint8(d + abi.DESC_TOS, tos);
    return nh;
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
    const v = this.dv();
    let ok = 0;
    for (let i = 0; i < n; i++) {
      const d = this.region.descBase + i * abi.DESC_SIZE;
      const res = this.decapOne(v, d);
      v.setInt32(d + abi.DESC_RES, res, true);
      this.count(this.counters.decap, res);
      if (res >= 0) ok++;
    }
    return ok;
  }

  private decapOne(v: DataView, d: number): number {
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
    if (v.getUint16(eth + 12) !== 0x0800) return abi.R_NOT_IPV4;
    const ip = eth + 14;
    const avail = len - 22;
    if (avail < 20) return abi.R_TRUNCATED;
    const vihl = v.getUint8(ip);
    if (vihl >> 4 !== 4) return abi.R_NOT_IPV4;
    const ihl = (vihl & 15) * 4;
    const tot = v.getUint16(ip + 2);
    if (ihl < 20 || tot < ihl || tot > avail) return abi.R_MALFORMED;
    if (sum16(this.mem, ip, ihl) !== 0xffff) return abi.R_BAD_CSUM;
    const outer = v.getUint32(d + abi.DESC_ADDR, true);
    const idx = this.byUnderlay.get(outer) ?? -1;
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

  private count(c: Counters, res: number): void {
    const name = RESULT_NAMES[res >= 0 ? 0 : -res] ?? "bad_desc";
    c[name] += 1n;
  }
}
