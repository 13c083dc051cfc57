import { describe, expect, it } from "vitest";
import * as abi from "../../asm/abi.js";
import { parseIpv6 } from "../../src/common/ipv6.js";
import { sum16 } from "../../src/dataplane/reference/checksum.js";
import { randBytes, randInt, rng, udp } from "../helpers/packets.js";
import { cat, rxDatagramSize, tcp, tunRegions, unitDatagrams, vxlanFrame, writtenOutside } from "../helpers/tunnel.js";
import { NODES6, core6As, icmp6Echo, ipv6, pseudo6 } from "./v6-nodes.js";

/**
 * Hostile VXLAN over IPv6 into the tun receive path: UDP_GRO buffers of
 * IPv6 datagrams from node A, valid ones then broken byte by byte, cut
 * short, with true and hostile segment sizes, from A, C or a stranger.
 * Invariants, for every buffer: no trap; no write outside the unit and
 * iovec tables, the counters and the buffer itself (full-memory canary);
 * every datagram counted exactly once; every unit made of bytes of the
 * buffer; every packet handed to the device well-formed, from inside A's
 * IPv6 subnet, with a TCP/UDP checksum that verifies (or is left partial
 * for an offload).
 */
const A = 0, B = 1;
const pod6A = parseIpv6("2001:db8:1::5");
const pod6B = parseIpv6("2001:db8:2::7");
const LIMITS = { slots: 2, slotSize: 65664, maxBatch: 2, units: 2048 };

function inner(r: () => number): Uint8Array {
  const kind = randInt(r, 0, 2);
  const data = randBytes(r, randInt(r, 0, 1300));
  let p: Uint8Array;
  let at = -1;
  if (kind === 0) {
    p = ipv6({ src: pod6A, dst: pod6B, nh: 6, payload: tcp(data, randInt(r, 0, 0xffffffff), 0x10) });
    at = 56;
  } else if (kind === 1) {
    p = ipv6({ src: pod6A, dst: pod6B, nh: 17, payload: udp(1000, 2000, data) });
    at = 46;
  } else p = icmp6Echo(pod6A, pod6B, 1, 1, data);
  if (at > 0) {
    const l4 = p.length - 40;
    const ps = pseudo6(p, l4, p[6]!);
    let fold = ps;
    while (fold > 0xffff) fold = (fold & 0xffff) + (fold >>> 16);
    new DataView(p.buffer).setUint16(at, r() < 0.2 ? fold : ~sum16(p, 40, l4, ps) & 0xffff || 0xffff);
  }
  return p;
}

function vx(p: Uint8Array): Uint8Array {
  return vxlanFrame(NODES6[B]!.vtepMac, NODES6[A]!.vtepMac, 0x86dd, p);
}

function checkPacket(pkt: Uint8Array): void {
  const gsoType = pkt[1]!;
  const ip = pkt.subarray(10);
  const v = new DataView(ip.buffer, ip.byteOffset, ip.byteLength);
  if (ip.length < 40 || ip[0]! >> 4 !== 6) throw new Error("a unit that is not IPv6");
  if (v.getUint16(4) + 40 !== ip.length) throw new Error(`payload length ${v.getUint16(4)} but ${ip.length - 40} bytes`);
  if ((BigInt(v.getUint32(8)) << 32n | BigInt(v.getUint32(12))) !== 0x20010db800010000n) throw new Error("a source outside A's IPv6 subnet");
  const nh = ip[6]!;
  if (gsoType !== 0 || (nh !== 6 && nh !== 17)) return;
  if (nh === 17 && v.getUint16(46) === 0) return;
  if (sum16(ip, 40, ip.length - 40, pseudo6(ip, ip.length - 40, nh)) !== 0xffff) throw new Error("a TCP/UDP checksum that does not verify on a complete packet");
}

describe("tun receive over IPv6 against hostile buffers", () => {
  it("holds every invariant on 400 broken UDP_GRO buffers", () => {
    const b = core6As(B, { outer6: true }, LIMITS);
    let accepted = 0, dropped = 0;
    for (let seed = 1; seed <= 400; seed++) {
      const r = rng(seed * 31);
      const size = randInt(r, 60, 1400);
      const n = randInt(r, 1, 6);
      const dgs = Array.from({ length: n }, () => {
        const p = inner(r);
        const d = vx(p.length > size ? p.subarray(0, size) : p);
        if (p.length > size) new DataView(d.buffer).setUint16(26, size - 40); // a shorter but consistent packet
        return d;
      });
      // As UDP_GRO would hand them: equal size but the last (pad the others to the first's size).
      const g = dgs[0]!.length;
      let buf = cat(...dgs.map((d, i) => (i < n - 1 ? cat(d, new Uint8Array(Math.max(0, g - d.length))).subarray(0, g) : d)));
      const flips = randInt(r, 0, 6);
      for (let f = 0; f < flips; f++) buf[randInt(r, 0, buf.length - 1)] = randInt(r, 0, 255);
      if (r() < 0.15) buf = buf.subarray(0, randInt(r, 0, buf.length));
      const gso = r() < 0.7 ? (n > 1 ? g : 0) : randInt(r, 0, 2000);
      const from = [NODES6[A]!.underlay6, NODES6[A]!.underlay6, NODES6[A]!.underlay6, NODES6[2]!.underlay6, parseIpv6("2001:db8:ff::99")][randInt(r, 0, 4)]!;
      const off = b.slot(0);
      b.bytes().set(buf, off);
      b.setDesc(0, off, buf.length, 0, randInt(r, 0, 3));
      new DataView(b.bytes().buffer).setUint16(b.descBase + abi.DESC_GSO, gso, true);
      b.setSource6(0, from);
      const input = [{ what: "buffer", start: off, end: off + buf.length }];
      const total = (): bigint => Object.values(b.counters(abi.DIR_DECAP)).reduce((x, y) => x + y, 0n);
      const all0 = total(), ok0 = b.counters(abi.DIR_DECAP).ok;
      let next = 0, calls = 0, segs = 0;
      while (next < 1) {
        const before = b.bytes().slice();
        next = b.tunRx(next, 1);
        const bad = writtenOutside(b, before, [...tunRegions(b), ...input]);
        if (bad) throw new Error(`seed ${seed}, call ${calls}: ${bad}`);
        if (++calls > 1000) throw new Error(`seed ${seed}: no progress`);
        for (let u = 0; u < b.tunUnits(); u++) {
          const unit = b.unit(u);
          for (const [o, l] of unit.iovs) if (o < off || o + l > off + buf.length) throw new Error(`seed ${seed}: an iovec outside the buffer`);
          const pkt = unitDatagrams(b, unit)[0]!.slice();
          try {
            checkPacket(pkt);
          } catch (e) {
            throw new Error(`seed ${seed}: ${(e as Error).message}`);
          }
          segs += unit.segs;
        }
      }
      const want = buf.length === 0 ? 1 : Math.ceil(buf.length / rxDatagramSize(buf, gso));
      const moved = Number(total() - all0);
      const ok = Number(b.counters(abi.DIR_DECAP).ok - ok0);
      if (moved !== want) throw new Error(`seed ${seed}: counters moved by ${moved}, but ${want} datagrams came in`);
      if (segs !== ok) throw new Error(`seed ${seed}: ${ok} accepted, the units carry ${segs}`);
      accepted += ok;
      dropped += moved - ok;
    }
    // The inputs are neither all refused nor all taken: both sides of every check ran.
    expect(accepted).toBeGreaterThan(100);
    expect(dropped).toBeGreaterThan(100);
  });
});
