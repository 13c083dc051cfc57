import { describe, expect, it } from "vitest";
import * as abi from "../../asm/abi.js";
import { parseIpv4 } from "../../src/common/ipv4.js";
import type { WasmCore } from "../../src/dataplane/core/wasm-core.js";
import { resultName, type ResultName } from "../../src/dataplane/results.js";
import { ipv4, randBytes, rng, udp } from "../helpers/packets.js";
import {
  GSO_NONE, GSO_TCPV4, GSO_UDP_L4, NEEDS_CSUM, NODES, cat, coreAs, gsoSegments, l4Valid, tcp, tunRegions, unitDatagrams, vnet, writtenOutside,
} from "../helpers/tunnel.js";

/**
 * The tun transmit path against every segment size a peer can force on it:
 * a remote TCP peer steers a local pod's MSS with its MSS option, and the
 * kernel hands the TUN device GSO packets with whatever gso_size their
 * virtio_net_hdr carries. Every gso_size from 1 byte to the MSS is cut,
 * encapsulated, decapsulated by the receiving node's core and compared byte
 * for byte with what the kernel's GSO would make; every call is checked for
 * writes outside the unit, iovec and arena tables (a full-memory canary).
 * Then hostile virtio_net_hdr fields, each refused with its counter.
 */
const A = 0, B = 1;
const podA = parseIpv4("198.18.1.5");
const podB = parseIpv4("198.18.2.7");
const MTU = 1450;
/** The transmit worker's core: 64 KiB slots, 2048 units (src/backend/tun/worker.ts). */
const LIMITS = { slots: 4, slotSize: 65664, maxBatch: 4, units: 2048 };
const TS_OPT = Uint8Array.from([1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7]);
const IP_OPT = Uint8Array.from([1, 1, 1, 0]); // NOP NOP NOP EOL

function put(core: WasmCore, slot: number, bytes: Uint8Array, desc = slot): void {
  core.setDesc(desc, core.writeSlot(slot, bytes), bytes.length);
}

/** A TSO super-packet of `payload` bytes; `shape` picks the headers: 0 TCP timestamps (52), 1 bare (40), 2 IP options + timestamps (56). */
function tso(payloadLen: number, shape: number, seed: number): Uint8Array {
  const payload = randBytes(rng(seed), payloadLen);
  return ipv4({
    src: podA, dst: podB, proto: 6, id: 0xfff0 + (seed % 16), options: shape === 2 ? IP_OPT : undefined,
    payload: tcp(payload, 0xfffff000 + seed, 0x80 | 0x18 | 0x01, shape === 1 ? undefined : TS_OPT),
  });
}

function uso(payloadLen: number, seed: number): Uint8Array {
  return ipv4({ src: podA, dst: podB, proto: 17, id: seed & 0xffff, payload: udp(5000, 6000, randBytes(rng(seed), payloadLen)) });
}

const hdrsOf = (ip: Uint8Array): number => (ip[0]! & 15) * 4 + (ip[9] === 6 ? (ip[(ip[0]! & 15) * 4 + 12]! >> 4) * 4 : 8);

/**
 * Sends one [virtio_net_hdr][packet] through A's transmit path, calling it
 * again while it returns the same descriptor (a super-packet bigger than
 * one call's room), and checks every call's writes and every datagram
 * against `want` (decapsulated by B, compared byte for byte).
 */
function carry(a: WasmCore, b: WasmCore, pkt: Uint8Array, want: Uint8Array[]): { calls: number; units: number } {
  put(a, 0, pkt);
  const okBefore = a.counters(abi.DIR_ENCAP).ok;
  let next = 0, k = 0, calls = 0, units = 0, sport = -1;
  const pending: Uint8Array[] = [];
  const flush = (): void => {
    pending.forEach((dg, i) => b.setDesc(i, b.writeSlot(i, dg), dg.length, NODES[A].underlay));
    expect(b.decap(pending.length)).toBe(pending.length);
    const mem = b.bytes();
    pending.forEach((_, i) => {
      const d = b.desc(i);
      const exp = want[k++];
      if (!exp || Buffer.compare(mem.subarray(d.off, d.off + d.len), exp) !== 0) {
        throw new Error(`datagram ${k - 1} of ${want.length} differs from the kernel's GSO segment`);
      }
    });
    pending.length = 0;
  };
  while (next < 1) {
    const before = a.bytes().slice();
    next = a.tunTx(next, 1);
    const bad = writtenOutside(a, before, tunRegions(a));
    if (bad) throw new Error(`call ${calls}: ${bad}`);
    if (++calls > 70_000) throw new Error("no progress");
    for (let u = 0; u < a.tunUnits(); u++) {
      const unit = a.unit(u);
      expect(unit).toMatchObject({ res: B, addr: NODES[B].underlay, dport: 8472 });
      if (sport < 0) sport = unit.sport;
      expect(unit.sport).toBe(sport);
      const dgrams = unitDatagrams(a, unit);
      expect(unit.segs).toBe(dgrams.length);
      expect(unit.segs).toBeLessThanOrEqual(abi.UDP_MAX_SEGS);
      expect(unit.iovs.reduce((n, [, l]) => n + l, 0)).toBeLessThanOrEqual(65507);
      units++;
      for (const dg of dgrams) {
        pending.push(dg);
        if (pending.length === b.limits.maxBatch) flush();
      }
    }
    flush();
  }
  expect(k).toBe(want.length);
  expect(a.counters(abi.DIR_ENCAP).ok).toBe(okBefore + 1n);
  return { calls, units };
}

describe("tun transmit: every segment size from 1 byte to the MSS", () => {
  const a = coreAs(A, LIMITS);
  a.setTunMtu(MTU);
  const b = coreAs(B, { slots: 64, slotSize: 8192, maxBatch: 64 });

  it("TSO: each gso_size 1..MSS (three header shapes) is cut exactly as the kernel's GSO cuts it", () => {
    let calls = 0;
    for (let g = 1; g <= MTU - 40; g++) {
      const shape = g > MTU - 56 ? 1 : g % 3;
      const ip = tso(45 * g + (g >> 1) + 1, shape, g);
      calls += carry(a, b, cat(vnet(NEEDS_CSUM, GSO_TCPV4, hdrsOf(ip), g, (ip[0]! & 15) * 4, 16), ip), gsoSegments(ip, g)).calls;
    }
    expect(calls).toBe(MTU - 40); // 46 segments always fit one call
  });

  it("TSO: 64 KiB super-packets at tiny segment sizes take several calls, each inside the tables", () => {
    for (const g of [1, 2, 3, 7, 31, 36, 48, 88, 536]) {
      const ip = tso(65535 - 52, 0, 1000 + g);
      const { calls } = carry(a, b, cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, g, 20, 16), ip), gsoSegments(ip, g));
      expect(calls).toBe(Math.ceil(Math.ceil((65535 - 52) / g) / LIMITS.units));
    }
  });

  it("USO: each gso_size 1..MSS is cut into equal UDP datagrams with valid checksums", () => {
    for (let g = 1; g <= MTU - 28; g++) {
      const ip = uso(8 * g + 3, g);
      carry(a, b, cat(vnet(NEEDS_CSUM, GSO_UDP_L4, 28, g, 20, 6), ip), gsoSegments(ip, g));
    }
    const ip = uso(65535 - 28, 7);
    const want = gsoSegments(ip, 5);
    expect(want.every(l4Valid)).toBe(true);
    carry(a, b, cat(vnet(NEEDS_CSUM, GSO_UDP_L4, 28, 5, 20, 6), ip), want);
  });
});

describe("tun transmit: hostile virtio_net_hdr fields", () => {
  const a = coreAs(A, LIMITS);
  a.setTunMtu(MTU);
  const b = coreAs(B, { slots: 64, slotSize: 8192, maxBatch: 64 });
  const ip = tso(5000, 0, 3);
  const plain = tso(300, 0, 4);
  const udpIp = uso(3000, 5);
  const frag = (p: Uint8Array, bits: number): Uint8Array => {
    const q = p.slice();
    new DataView(q.buffer).setUint16(6, bits);
    new DataView(q.buffer).setUint16(10, 0);
    let s = 0;
    for (let i = 0; i < 20; i += 2) s += (q[i]! << 8) | q[i + 1]!;
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    new DataView(q.buffer).setUint16(10, ~s & 0xffff);
    return q;
  };
  const doff = (p: Uint8Array, words: number): Uint8Array => {
    const q = p.slice();
    q[32] = words << 4;
    return q;
  };
  const refused: [string, Uint8Array, ResultName][] = [
    ["gso_size 0", cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, 0, 20, 16), ip), "bad_vnet"],
    ["GSO type UDP (UFO)", cat(vnet(NEEDS_CSUM, 3, 52, 1000, 20, 16), ip), "bad_vnet"],
    ["GSO type TCPV6", cat(vnet(NEEDS_CSUM, 4, 52, 1000, 20, 16), ip), "bad_vnet"],
    ["GSO type 0x7f", cat(vnet(NEEDS_CSUM, 0x7f, 52, 1000, 20, 16), ip), "bad_vnet"],
    ["TSO on a UDP packet", cat(vnet(NEEDS_CSUM, GSO_TCPV4, 28, 1000, 20, 6), udpIp), "bad_vnet"],
    ["USO on a TCP packet", cat(vnet(NEEDS_CSUM, GSO_UDP_L4, 52, 1000, 20, 16), ip), "bad_vnet"],
    ["TSO on a first fragment (MF)", cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, 1000, 20, 16), frag(ip, 0x2000)), "bad_vnet"],
    ["TSO on a later fragment", cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, 1000, 20, 16), frag(ip, 0x0010)), "bad_vnet"],
    ["TCP data offset 4 words", cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, 1000, 20, 16), doff(ip, 4)), "bad_vnet"],
    ["TCP data offset past the packet", cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, 1000, 20, 16), doff(tso(0, 1, 6), 15)), "bad_vnet"],
    ["TSO on a bare IPv4 header", cat(vnet(NEEDS_CSUM, GSO_TCPV4, 20, 1000, 20, 16), ipv4({ src: podA, dst: podB, proto: 6, payload: new Uint8Array(0) })), "bad_vnet"],
    ["segments bigger than the MTU", cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, MTU - 52 + 1, 20, 16), ip), "too_big"],
    ["csum_start past the packet", cat(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 60000, 16), plain), "bad_vnet"],
    ["csum_start inside the IP header", cat(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 10, 0), plain), "bad_vnet"],
    ["csum_offset past the packet", cat(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 20, 65535), plain), "bad_vnet"],
    ["checksum field straddling the end", cat(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 20, plain.length - 21), plain), "bad_vnet"],
    ["shorter than virtio_net_hdr + IPv4", cat(vnet(0, 0, 0, 0, 0, 0), plain.subarray(0, 19)), "truncated"],
  ];
  it.each(refused)("refuses %s, counted, writing nothing but its refusal", (_, pkt, want) => {
    const before0 = a.counters(abi.DIR_ENCAP)[want];
    put(a, 0, pkt);
    const before = a.bytes().slice();
    expect(a.tunTx(0, 1)).toBe(1);
    expect(writtenOutside(a, before, tunRegions(a))).toBeUndefined();
    expect(a.tunUnits()).toBe(1);
    expect(resultName(a.unit(0).res)).toBe(want);
    expect(a.unit(0).iovs).toEqual([]);
    expect(a.counters(abi.DIR_ENCAP)[want]).toBe(before0 + 1n);
  });

  const carried: [string, Uint8Array, Uint8Array[]][] = [
    ["gso_size larger than the payload: one datagram", cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, 5000 + 1, 20, 16), ip), gsoSegments(ip, 5001)],
    ["gso_size 65535 (GSO_BY_FRAGS in the kernel)", cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, 65535, 20, 16), ip), gsoSegments(ip, 65535)],
    ["hdr_len 0 and csum_start/csum_offset off the packet (GSO ignores them)", cat(vnet(0, GSO_TCPV4, 0, 1000, 65535, 65535), ip), gsoSegments(ip, 1000)],
    ["hdr_len 65535", cat(vnet(NEEDS_CSUM, GSO_TCPV4, 65535, 1000, 20, 16), ip), gsoSegments(ip, 1000)],
    ["the ECN bit on the GSO type (CWR on the first segment only)", cat(vnet(NEEDS_CSUM, GSO_TCPV4 | 0x80, 52, 1000, 20, 16), ip), gsoSegments(ip, 1000)],
    ["a TSO packet with headers only", cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, 100, 20, 16), tso(0, 0, 8)), gsoSegments(tso(0, 0, 8), 100)],
  ];
  it.each(carried)("carries %s", (_, pkt, want) => {
    carry(a, b, pkt, want);
  });
});
