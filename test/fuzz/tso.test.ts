import { expect, it } from "vitest";
import * as abi from "../../asm/abi.js";
import { parseIpv4 } from "../../src/common/ipv4.js";
import type { WasmCore } from "../../src/dataplane/core/wasm-core.js";
import { sum16 } from "../../src/dataplane/reference/checksum.js";
import { ipv4, udp } from "../helpers/packets.js";
import {
  GSO_NONE, GSO_TCPV4, GSO_UDP_L4, NEEDS_CSUM, NODES, cat, coreAs, gsoSegments, tcp, tunRegions, unitDatagrams, vnet, writtenOutside, type Region,
} from "../helpers/tunnel.js";
import { EDGE_BYTES, fuzz, mutateBytes, type Rng } from "./lib.js";

/**
 * Fuzz target "tso": batches of [virtio_net_hdr][IPv4] descriptors, as the
 * TUN device hands them over, through the tun transmit path. Input i uses
 * gso_size 1 + i % MSS, so `npm test` sweeps every segment size once; the
 * super-packets have random header shapes (IP and TCP options, UDP) and
 * lengths, and a third of the virtio_net_hdrs and some packets are hostile
 * (GSO type, gso_size, hdr_len, csum_start/offset, flags; mutated bytes,
 * truncated descriptors). Invariants, per call: no trap; no write outside
 * the unit, iovec and arena tables, the counters and each packet's own
 * bytes and headroom (a full-memory canary); the call returns the next
 * descriptor or, mid-packet, the same one. Per packet: refused with exactly
 * one counted reason and one empty unit, or accepted and carried exactly
 * as the kernel's GSO (or a plain send) would carry it, every datagram
 * decapsulated by the receiving node's core and compared byte for byte.
 */
const A = 0, B = 1;
const podA = parseIpv4("198.18.1.5");
const podB = parseIpv4("198.18.2.7");
const MTU = 1450;
const MSS = MTU - 40;
const LIMITS = { slots: 4, slotSize: 65664, maxBatch: 4, units: 2048 };

/** A super-packet of a random shape whose segments of `gso` bytes fit the MTU (when they can). */
function superPacket(rng: Rng, gso: number): { ip: Uint8Array; udp: boolean } {
  const isUdp = rng.bool(0.25);
  let ipOpt = rng.bool(0.2) ? rng.int(1, 10) * 4 : 0;
  let tcpOpt = isUdp ? 0 : rng.pick([0, 12, 12, 20, 40]);
  while (ipOpt + tcpOpt + (isUdp ? 28 : 40) + gso > MTU && ipOpt + tcpOpt > 0) [ipOpt, tcpOpt] = [Math.max(0, ipOpt - 4), Math.max(0, tcpOpt - 4)];
  const hdrs = 20 + ipOpt + (isUdp ? 8 : 20 + tcpOpt);
  const max = 65535 - hdrs;
  const payloadLen = rng.bool(0.04) ? rng.int(max - 2 * gso, max) : Math.min(max, rng.int(0, gso * rng.int(1, rng.bool(0.2) ? 300 : 70) + 2));
  const payload = rng.bytes(Math.max(0, payloadLen));
  const options = new Uint8Array(ipOpt).fill(1); // NOPs
  const l4 = isUdp ? udp(rng.int(1, 65535), rng.int(1, 65535), payload) : tcp(payload, rng.u32(), rng.pick([0x10, 0x18, 0x19, 0x98, 0x11, 0xd8]), new Uint8Array(tcpOpt).fill(1));
  return { ip: ipv4({ src: podA, dst: podB, proto: isUdp ? 17 : 6, id: rng.int(0, 0xffff), tos: rng.int(0, 255), options, payload: l4 }), udp: isUdp };
}

/** One descriptor's bytes: mostly a well-formed offload, else something hostile. */
function descriptor(rng: Rng, gso: number): Uint8Array {
  const { ip, udp: isUdp } = superPacket(rng, gso);
  const ihl = (ip[0]! & 15) * 4;
  const hdrs = ihl + (isUdp ? 8 : (ip[ihl + 12]! >> 4) * 4);
  let hdr = rng.bool(0.85)
    ? vnet(NEEDS_CSUM, isUdp ? GSO_UDP_L4 : GSO_TCPV4, hdrs, gso, ihl, isUdp ? 6 : 16)
    : vnet(rng.bool() ? NEEDS_CSUM : 0, GSO_NONE, 0, 0, ihl, isUdp ? 6 : 16);
  if (hdr[1] === GSO_NONE && ip.length > 65535 - 22) hdr = vnet(NEEDS_CSUM, isUdp ? GSO_UDP_L4 : GSO_TCPV4, hdrs, gso, ihl, isUdp ? 6 : 16);
  let pkt = ip;
  if (rng.bool(0.3)) {
    const v = new DataView(hdr.buffer);
    switch (rng.int(0, 6)) {
      case 0: v.setUint8(1, rng.pick([0, 1, 2, 3, 4, 5, 6, 0x7f, 0x80, 0x81, 0x85, 0xff])); break;
      case 1: v.setUint16(4, rng.pick([0, 1, 2, gso - 1, gso + 1, MSS + 1, 0x7fff, 0xffff].map((x) => Math.max(0, x)))); break;
      case 2: v.setUint16(2, rng.int(0, 0xffff), true); break;
      case 3: v.setUint16(6, rng.pick([0, 1, 19, ihl, ip.length - 1, ip.length, 0xffff]), true); v.setUint16(8, rng.pick([0, 6, 16, 0xfffe, 0xffff, ip.length]), true); break;
      case 4: v.setUint8(0, rng.pick(EDGE_BYTES)); break;
      case 5: pkt = mutateBytes(rng, ip.subarray(0, Math.min(ip.length, 120)), 200); pkt = cat(pkt, ip.subarray(Math.min(ip.length, 120))); break;
      default: hdr = mutateBytes(rng, hdr, 10); break;
    }
  }
  const out = cat(hdr.length === 10 ? hdr : cat(hdr, new Uint8Array(10)).subarray(0, 10), pkt);
  return rng.bool(0.05) ? out.subarray(0, rng.int(0, out.length)) : out.length > 65535 + 10 ? out.subarray(0, 65545) : out;
}

interface Expect {
  /** The datagrams' inner packets, in order (for an accepted packet). */
  readonly want: Uint8Array[];
  readonly plain: boolean;
}

/** What an accepted descriptor must become: the kernel's GSO segments, or the packet itself with its checksum finished. */
function expected(bytes: Uint8Array): Expect {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const ip = bytes.subarray(10, 10 + v.getUint16(12));
  const gsoType = bytes[1]! & 0x7f;
  if (gsoType !== GSO_NONE) return { want: gsoSegments(ip, v.getUint16(4, true)), plain: false };
  const out = ip.slice();
  if (bytes[0]! & NEEDS_CSUM) {
    // The field holds the pseudo-header sum the kernel left: the sum from csum_start over it, inverted.
    const cs = v.getUint16(6, true), co = v.getUint16(8, true);
    let c = ~sum16(out, cs, out.length - cs) & 0xffff;
    if (c === 0 && out[9] === 17) c = 0xffff;
    new DataView(out.buffer).setUint16(cs + co, c);
  }
  return { want: [out], plain: true };
}

/** VXLAN (VNI 1) + inner Ethernet from A to node `to`: what every datagram to it starts with. */
const vxlanEth = (to: number): Uint8Array => cat(Uint8Array.of(0x08, 0, 0, 0, 0, 0, 1, 0), NODES[to]!.vtepMac, NODES[A].vtepMac, Uint8Array.of(0x08, 0x00));

/** The node whose subnet holds the (possibly mutated) packet's destination: where A must send it. */
function peerOf(bytes: Uint8Array): number {
  const dst = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(10 + 16);
  return NODES.findIndex((n) => ((dst & (~0 << (32 - n.subnet.len))) >>> 0) === n.subnet.addr >>> 0);
}

/**
 * Checks datagrams against the next inner packets of `want`, byte for byte
 * after the 22-byte VXLAN + Ethernet header; those whose inner packet the
 * receiving node should take (a good IPv4 header from A's subnet, as every
 * segment is) are also decapsulated by B's core, which must accept them.
 */
function verify(b: WasmCore, to: number, dgrams: Uint8Array[], want: Uint8Array[], at: number): void {
  const forB: [Uint8Array, Uint8Array][] = [];
  dgrams.forEach((dg, k) => {
    const w = want[at + k];
    if (!w || dg.length !== 22 + w.length || Buffer.compare(dg.subarray(0, 22), vxlanEth(to)) !== 0 || Buffer.compare(dg.subarray(22), w) !== 0) {
      throw new Error(`datagram ${at + k} differs from what the kernel would send`);
    }
    const v = new DataView(w.buffer, w.byteOffset, w.byteLength);
    if (to === B && sum16(w, 0, (w[0]! & 15) * 4) === 0xffff && v.getUint32(12) >>> 8 === podA >>> 8) forB.push([dg, w]);
  });
  for (let i = 0; i < forB.length; i += b.limits.maxBatch) {
    const part = forB.slice(i, i + b.limits.maxBatch);
    part.forEach(([dg], k) => b.setDesc(k, b.writeSlot(k, dg), dg.length, NODES[A].underlay));
    if (b.decap(part.length) !== part.length) throw new Error("the receiving node refused a datagram");
    part.forEach(([, w], k) => {
      const d = b.desc(k);
      if (Buffer.compare(b.bytes().subarray(d.off, d.off + d.len), w) !== 0) throw new Error("decapsulated packet differs");
    });
  }
}

it("fuzz: TSO/USO descriptors with every gso_size and hostile virtio headers through the transmit path", async () => {
  const a = coreAs(A, LIMITS);
  a.setTunMtu(MTU);
  const b = coreAs(B, { slots: 64, slotSize: 65664, maxBatch: 64 });
  const report = await fuzz("tso", { iterations: MSS }, (rng, i) => {
    const gso = 1 + (i % MSS);
    const descs = Array.from({ length: rng.int(1, LIMITS.maxBatch) }, () => descriptor(rng, gso));
    const own: Region[] = [];
    descs.forEach((bytes, k) => {
      const off = a.pktBase + k * LIMITS.slotSize + 64;
      a.bytes().set(bytes, off);
      a.setDesc(k, off, bytes.length);
      own.push({ what: `packet ${k}`, start: off - 12, end: off + bytes.length });
    });
    const counts0 = a.counters(abi.DIR_ENCAP);
    let d = 0, sent = 0, refused = 0, accepted = 0, calls = 0;
    let cur: Expect | undefined;
    while (d < descs.length) {
      const before = a.bytes().slice();
      const next = a.tunTx(d, descs.length);
      const bad = writtenOutside(a, before, [...tunRegions(a), ...own]);
      if (bad) throw new Error(`call ${calls}: ${bad}`);
      if (++calls > 100_000) throw new Error("no progress");
      for (let u = 0; u < a.tunUnits(); u++) {
        const unit = a.unit(u);
        if (unit.res < 0) {
          if (cur || unit.iovs.length !== 0) throw new Error(`a refusal unit in the middle of a packet, or with iovecs (descriptor ${d})`);
          refused++;
          d++;
          continue;
        }
        const to = peerOf(descs[d]!);
        if (unit.res !== to || unit.addr !== NODES[to]?.underlay || unit.segs > abi.UDP_MAX_SEGS) throw new Error(`unit ${u} for node ${to}: ${JSON.stringify(unit)}`);
        cur ??= expected(descs[d]!);
        const dgrams = unitDatagrams(a, unit);
        if (dgrams.length !== unit.segs) throw new Error(`unit says ${unit.segs} datagrams, holds ${dgrams.length}`);
        verify(b, to, dgrams, cur.want, sent);
        sent += dgrams.length;
        if (sent === cur.want.length) {
          accepted++;
          d++;
          sent = 0;
          cur = undefined;
        }
      }
      if (next !== d) throw new Error(`the call returned ${next}, but units finished descriptor ${d - 1}${cur ? " and began the next" : ""}`);
    }
    const counts = a.counters(abi.DIR_ENCAP);
    const moved = Object.keys(counts).reduce((n, k) => n + Number(counts[k as keyof typeof counts] - counts0[k as keyof typeof counts]), 0);
    if (moved !== descs.length || Number(counts.ok - counts0.ok) !== accepted) throw new Error(`counters moved ${moved} (ok ${counts.ok - counts0.ok}) for ${descs.length} packets, ${accepted} accepted, ${refused} refused`);
    return refused > 0 ? "refused" : "accepted"; // "refused": at least one packet of the batch dropped with a counted reason
  });
  expect(report.iterations).toBeGreaterThan(0);
}, 600_000);
