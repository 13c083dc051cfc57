import { expect, it } from "vitest";
import * as abi from "../../asm/abi.js";
import { parseIpv4 } from "../../src/common/ipv4.js";
import type { WasmCore } from "../../src/dataplane/core/wasm-core.js";
import { inetChecksum, sum16 } from "../../src/dataplane/reference/checksum.js";
import { resultName } from "../../src/dataplane/results.js";
import { ipv4, udp } from "../helpers/packets.js";
import {
  GSO_TCPV4, NEEDS_CSUM, NODES, cat, coreAs, receiveChecked, tcp, unitDatagrams, vnet, vxlanPayload, writtenOutside, type Region,
} from "../helpers/tunnel.js";
import { EDGE_BYTES, fuzz, mutateBytes, type Rng } from "./lib.js";

/**
 * Fuzz target "vxlan": VXLAN datagrams from the network, valid ones (made
 * with the test helpers and with node A's own transmit path) mutated field
 * by field (VXLAN flags and VNI, MACs, EtherType, IHL, total length,
 * fragments, TCP data offset and flags, checksums valid, partial or wrong,
 * the outer source and TOS) or byte by byte, and truncated at every length,
 * into node B's decap (decap_batch) and its tun receive path (tun_rx_batch,
 * as UDP_GRO buffers with true and hostile segment sizes). Invariants: no
 * trap; no write outside the descriptors, unit and iovec tables, counters
 * and the datagrams themselves (full-memory canary); every accepted packet
 * parses, with good checksums, from inside the sending node's subnet; every
 * datagram counted exactly once (inputs = accepted + counted drops).
 */
const A = 0, B = 1;
const podA = parseIpv4("198.18.1.5");
const podB = parseIpv4("198.18.2.7");

function pseudoSum(src: number, dst: number, proto: number, len: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + proto + len;
}

/** An inner IPv4 packet as a node may send it: mostly plausible, with options, fragments and checksums of every kind. */
function inner(rng: Rng): Uint8Array {
  const src = rng.bool(0.85) ? podA + rng.int(-5, 200) : rng.pick([podB, parseIpv4("198.18.3.9"), rng.u32()]);
  const dst = rng.bool(0.9) ? podB : rng.u32();
  const proto = rng.pick([6, 6, 6, 17, 17, 1, rng.int(0, 255)]);
  const len = rng.bool(0.05) ? rng.int(1400, 9000) : rng.length(1400);
  const body = rng.bytes(len);
  let l4: Uint8Array = body;
  if (proto === 6) l4 = tcp(body, rng.u32(), rng.pick([0x10, 0x18, 0x11, 0x02, 0x12, 0x04, rng.int(0, 255)]), new Uint8Array(rng.pick([0, 12, 12, 40])).fill(1));
  else if (proto === 17) l4 = udp(rng.int(0, 65535), rng.int(0, 65535), body);
  const options = rng.bool(0.15) ? rng.bytes(rng.int(1, 10) * 4) : undefined;
  const frag = rng.bool(0.1) ? rng.pick([0x2000, 0x0001, 0x20ff, 0x4000, 0x8000]) : rng.bool(0.5) ? 0x4000 : 0;
  const ip = ipv4({ src, dst, proto, tos: rng.int(0, 255), ttl: rng.int(0, 255), id: rng.int(0, 65535), frag, options, payload: l4 });
  const ihl = (ip[0]! & 15) * 4;
  const at = proto === 6 ? 16 : proto === 17 ? 6 : -1;
  if (at >= 0 && l4.length >= at + 2) {
    const v = new DataView(ip.buffer);
    const ps = pseudoSum(src >>> 0, dst >>> 0, proto, l4.length);
    const kind = rng.int(0, 9);
    if (kind < 7) v.setUint16(ihl + at, ~sum16(ip, ihl, l4.length, ps) & 0xffff); // valid
    else if (kind < 9) v.setUint16(ihl + at, sum16(new Uint8Array(0), 0, 0, ps)); // left partial by the sender
    else v.setUint16(ihl + at, rng.int(0, 0xffff));
  }
  return ip;
}

/** A structured mutation of a VXLAN datagram (flags, VNI, MACs, EtherType, IPv4 and TCP header fields), maybe re-fixing the IPv4 checksum. */
function mutate(rng: Rng, dg: Uint8Array): Uint8Array {
  let d: Uint8Array = dg.slice();
  for (let n = rng.int(1, 3); n > 0; n--) {
    const v = new DataView(d.buffer, d.byteOffset, d.byteLength);
    const ihl = d.length > 22 ? (d[22]! & 15) * 4 : 20;
    switch (rng.int(0, 11)) {
      case 0: if (d.length >= 4) d[rng.int(0, 3)] = rng.pick([...EDGE_BYTES, 0x08, 0x0c, 0x88]); break; // flags, reserved
      case 1: if (d.length >= 8) d[rng.int(4, 7)] = rng.pick(EDGE_BYTES); break; // VNI, reserved
      case 2: if (d.length >= 14) d.set(rng.pick([NODES[A].vtepMac, NODES[2].vtepMac, new Uint8Array(6).fill(0xff), rng.bytes(6)]), 8); break; // dst MAC
      case 3: if (d.length >= 20) d.set(NODES[B].vtepMac, 14); break; // our own source MAC: looped
      case 4: if (d.length >= 22) v.setUint16(20, rng.pick([0x86dd, 0x0806, 0x8100, 0, rng.int(0, 0xffff)])); break;
      case 5: if (d.length > 22) d[22] = (rng.bool(0.8) ? 0x40 : rng.int(0, 15) << 4) | rng.int(0, 15); break; // version, IHL
      case 6: if (d.length >= 26) v.setUint16(24, rng.pick([0, 19, 20, ihl, d.length - 23, d.length - 22, d.length - 21, 0xffff, rng.int(0, 0xffff)])); break;
      case 7: if (d.length >= 30) v.setUint16(28, rng.pick([0x2000, 0x0001, 0x3fff, 0x4000, rng.int(0, 0xffff)])); break; // fragments
      case 8: if (d.length > 22 + ihl + 13) d[22 + ihl + 12] = rng.int(0, 15) << 4; break; // TCP data offset
      case 9: if (d.length > 22 + ihl + 13) d[22 + ihl + 13] = rng.pick([0, 0x01, 0x02, 0x04, 0x08, 0x10, 0x18, 0xff]); break;
      case 10: if (d.length >= 24) d[23] = rng.pick([0, 1, 2, 3, rng.int(0, 255)]); break; // TOS/ECN
      default: d = mutateBytes(rng, d, d.length + 64); break;
    }
  }
  if (d.length >= 42 && rng.bool(0.6)) {
    const h = Math.min((d[22]! & 15) * 4, d.length - 22);
    if (h >= 20) {
      new DataView(d.buffer).setUint16(32, 0);
      new DataView(d.buffer).setUint16(32, inetChecksum(d, 22, h));
    }
  }
  return d;
}

/** One datagram: a valid one from A (85%), maybe mutated, sometimes truncated at `cut` bytes. */
function datagram(rng: Rng, cut?: number): Uint8Array {
  let dg: Uint8Array = vxlanPayload(A, B, inner(rng));
  if (rng.bool(0.4)) dg = mutate(rng, dg);
  if (cut !== undefined) dg = dg.subarray(0, Math.min(cut, dg.length));
  return dg;
}

/** Datagrams in, accepted: one decap batch. */
function decapRound(core: WasmCore, rng: Rng, i: number): { n: number; ok: number } {
  const n = rng.int(1, core.limits.maxBatch);
  const dgs = Array.from({ length: n }, (_, k) => datagram(rng, k === 0 ? i % 1600 : rng.bool(0.1) ? rng.int(0, 80) : undefined).slice(0, core.limits.slotSize - core.limits.headroom));
  const own: Region[] = [
    { what: "descriptors", start: core.descBase, end: core.descBase + core.limits.maxBatch * abi.DESC_SIZE },
    { what: "counters", start: core.countersBase(abi.DIR_ENCAP), end: core.countersBase(abi.DIR_ENCAP) + 2 * abi.R_COUNT * 8 },
  ];
  const from = dgs.map(() => (rng.bool(0.85) ? NODES[A].underlay : rng.bool(0.7) ? NODES[2].underlay : rng.u32()));
  dgs.forEach((dg, k) => {
    const off = core.writeSlot(k, dg);
    core.setDesc(k, off, dg.length, from[k], rng.int(0, 255));
    own.push({ what: `datagram ${k}`, start: off, end: off + dg.length });
  });
  const c0 = core.counters(abi.DIR_DECAP);
  const before = core.bytes().slice();
  const ok = core.decap(n);
  const bad = writtenOutside(core, before, own);
  if (bad) throw new Error(`decap: ${bad}`);
  let seen = 0;
  dgs.forEach((dg, k) => {
    const d = core.desc(k);
    resultName(d.res); // a known reason, or throws
    if (d.res < 0) return;
    seen++;
    const peer = NODES[d.res];
    if (!peer || peer.underlay !== from[k]) throw new Error(`accepted from ${from[k]} as peer ${d.res}`);
    const start = own[2 + k]!.start;
    const ip = core.bytes().subarray(d.off, d.off + d.len);
    const v = new DataView(ip.buffer, ip.byteOffset, ip.byteLength);
    const ihl = (ip[0]! & 15) * 4;
    if (d.off !== start + 22 || d.len > dg.length - 22 || ip[0]! >> 4 !== 4 || ihl < 20 || v.getUint16(2) !== d.len || sum16(ip, 0, ihl) !== 0xffff) {
      throw new Error(`accepted datagram ${k} does not hold a well-formed IPv4 packet where its descriptor says`);
    }
    if ((v.getUint32(12) & ~((1 << (32 - peer.subnet.len)) - 1)) >>> 0 !== peer.subnet.addr >>> 0) throw new Error("accepted an inner source outside the sender's subnet");
  });
  const c = core.counters(abi.DIR_DECAP);
  const moved = Object.keys(c).reduce((s, key) => s + Number(c[key as keyof typeof c] - c0[key as keyof typeof c]), 0);
  if (ok !== seen || moved !== n || Number(c.ok - c0.ok) !== ok) throw new Error(`decap: ${ok} returned, ${seen} accepted, counters moved ${moved} for ${n}`);
  return { n, ok };
}

/** Node A's transmit path cutting a TCP super-packet: the datagrams of one UDP_SEGMENT send, as UDP_GRO hands them to B. */
function tcpFlow(a: WasmCore, rng: Rng): { dgs: Uint8Array[]; size: number } {
  const mss = rng.pick([1398, 1000, 536, 88, rng.int(1, 1398)]);
  const payload = rng.bytes(Math.min(65000, mss * rng.int(1, 64) - rng.int(0, mss - 1)));
  const ip = ipv4({ src: podA, dst: podB, proto: 6, payload: tcp(payload, rng.u32(), rng.pick([0x10, 0x18, 0x11]), new Uint8Array(12).fill(1)) });
  const v = a.writeSlot(0, cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, mss, 20, 16), ip));
  a.setDesc(0, v, ip.length + 10);
  a.tunTx(0, 1);
  const u = a.unit(0);
  return { dgs: unitDatagrams(a, u).map((d) => d.slice()), size: u.gso };
}

/** Datagrams dropped with a counted reason in one receive batch. */
function rxRound(b: WasmCore, a: WasmCore, rng: Rng, i: number): number {
  const bufs: { buf: Uint8Array; gso: number; from: number; tos: number }[] = [];
  let room = b.pktSize - 64;
  for (let k = rng.int(1, 4); k > 0; k--) {
    let dgs: Uint8Array[];
    let size: number;
    if (rng.bool(0.5)) {
      ({ dgs, size } = tcpFlow(a, rng));
      if (dgs.length > 1 && rng.bool(0.3)) dgs[rng.int(0, dgs.length - 1)] = mutate(rng, dgs[rng.int(0, dgs.length - 1)]!).slice(0, size);
      if (dgs.length > 2 && rng.bool(0.2)) dgs.splice(rng.int(1, dgs.length - 2), 1); // a gap in the sequence
    } else {
      const first = datagram(rng, rng.bool(0.1) ? i % 1600 : undefined);
      size = Math.max(1, first.length);
      dgs = [first, ...Array.from({ length: rng.int(0, 63) }, () => datagram(rng))].map((d) => {
        const out = new Uint8Array(size);
        out.set(d.subarray(0, size));
        return out;
      });
      dgs[dgs.length - 1] = dgs[dgs.length - 1]!.subarray(0, rng.int(1, size));
    }
    let buf = cat(...dgs);
    if (buf.length > 65535) buf = buf.subarray(0, 65535);
    if (buf.length + 64 > room) break;
    room -= buf.length + 64;
    const gso = rng.bool(0.75) ? (dgs.length > 1 ? size : 0) : rng.pick([0, 1, 7, 21, 22, 41, 42, size - 1, size + 1, buf.length - 1, buf.length, 65535, rng.int(0, 65535)].map((x) => Math.max(0, Math.min(65535, x))));
    bufs.push({ buf, gso, from: rng.bool(0.9) ? NODES[A].underlay : NODES[2].underlay, tos: rng.pick([0, 1, 2, 3, rng.int(0, 255)]) });
  }
  if (bufs.length === 0) return 0;
  return receiveChecked(b, bufs).dropped;
}

it("fuzz: VXLAN datagrams into decap and into the tun receive path", async () => {
  const dec = coreAs(B, { slots: 16, slotSize: 2048, maxBatch: 16 });
  const rx = coreAs(B, { slots: 5, slotSize: 65664, maxBatch: 8, units: 2048 });
  rx.setTunMtu(1450);
  const a = coreAs(A, { slots: 2, slotSize: 65664, maxBatch: 2, units: 2048 });
  a.setTunMtu(1450);
  const report = await fuzz("vxlan", { iterations: 1600 }, (rng, i) => {
    const d = decapRound(dec, rng, i);
    const dropped = d.n - d.ok + rxRound(rx, a, rng, i);
    return dropped > 0 ? "refused" : "accepted"; // "refused": at least one datagram dropped with a counted reason
  });
  expect(report.iterations).toBeGreaterThan(0);
}, 600_000);
