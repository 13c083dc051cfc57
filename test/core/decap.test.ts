import { describe, expect, it } from "vitest";
import * as abi from "../../asm/abi.js";
import { parseIpv4 } from "../../src/common/ipv4.js";
import { resultName, type ResultName } from "../../src/dataplane/results.js";
import { sum16 } from "../../src/dataplane/reference/checksum.js";
import type { WasmCore } from "../../src/dataplane/core/wasm-core.js";
import { icmpEcho, ipv4, randBytes, randInt, rng, udp } from "../helpers/packets.js";
import { NODES, coreAs, refMirror } from "../helpers/tunnel.js";

const A = 0, B = 1, C = 2;
const podA = parseIpv4("198.18.1.5");
const podB = parseIpv4("198.18.2.7");

/** A VXLAN UDP payload from node A to node B, made by A's own encap (payload mode). */
function payloadFromA(inner: Uint8Array): Uint8Array {
  const a = coreAs(A);
  a.setDesc(0, a.writeSlot(0, inner), inner.length);
  expect(a.encap(1)).toBe(1);
  const d = a.desc(0);
  return a.bytes().slice(d.off, d.off + d.len);
}

const innerAB = (): Uint8Array => ipv4({ src: podA, dst: podB, proto: 1, tos: 0x02, payload: icmpEcho(7, 1, new Uint8Array(56)) });

function decapOne(core: WasmCore, payload: Uint8Array, from: number, tos = 0): { res: ResultName; off: number; len: number } {
  const off = core.writeSlot(0, payload);
  core.setDesc(0, off, payload.length, from, tos);
  core.decap(1);
  const d = core.desc(0);
  return { res: resultName(d.res), off: d.off, len: d.len };
}

describe("decap: accepts what encap makes", () => {
  it("round trip A -> B gives back the inner packet, trimmed of Ethernet padding", () => {
    const inner = innerAB();
    const padded = new Uint8Array(payloadFromA(inner).length + 6); // trailing padding, as on a short Ethernet frame
    padded.set(payloadFromA(inner));
    const b = coreAs(B);
    const d = decapOne(b, padded, NODES[A].underlay);
    expect(d.res).toBe("ok");
    expect(b.desc(0).res).toBe(A);
    expect(b.bytes().slice(d.off, d.off + d.len)).toEqual(inner);
    expect(b.counters(abi.DIR_DECAP).ok).toBe(1n);
  });
});

describe("decap: what it drops", () => {
  const good = payloadFromA(innerAB());
  const mod = (f: (b: Uint8Array, v: DataView) => void): Uint8Array => {
    const b = good.slice();
    f(b, new DataView(b.buffer));
    return b;
  };
  const fixIpCsum = (b: Uint8Array, v: DataView): void => {
    v.setUint16(32, 0);
    v.setUint16(32, ~sum16(b, 22, 20) & 0xffff);
  };
  type Case = { name: string; bytes: Uint8Array; from?: number; tos?: number; want: ResultName };
  const cases: Case[] = [
    { name: "I flag clear", bytes: mod((b) => (b[0] = 0x00)), want: "bad_flags" },
    { name: "G (GBP) flag set", bytes: mod((b) => (b[0] = 0x88)), want: "bad_flags" },
    { name: "reserved bit in the flags word", bytes: mod((b) => (b[2] = 0x01)), want: "bad_flags" },
    { name: "reserved byte after the VNI", bytes: mod((b) => (b[7] = 0x01)), want: "bad_flags" },
    { name: "another VNI", bytes: mod((b) => (b[6] = 0x02)), want: "bad_vni" },
    { name: "VNI checked before reserved bits", bytes: mod((b) => { b[6] = 2; b[7] = 1; }), want: "bad_vni" },
    { name: "inner dst MAC not ours", bytes: mod((b) => (b[13] = b[13]! ^ 1)), want: "bad_dst_mac" },
    { name: "inner dst MAC broadcast", bytes: mod((b) => b.fill(0xff, 8, 14)), want: "bad_dst_mac" },
    { name: "inner src MAC is our own (a loop)", bytes: mod((b) => b.set(NODES[B].vtepMac, 14)), want: "looped" },
    { name: "inner ARP", bytes: mod((_b, v) => v.setUint16(20, 0x0806)), want: "not_ipv4" },
    { name: "inner IPv6 EtherType", bytes: mod((_b, v) => v.setUint16(20, 0x86dd)), want: "not_ipv4" },
    { name: "IPv4 EtherType, version 6", bytes: mod((b) => (b[22] = 0x65)), want: "not_ipv4" },
    { name: "IHL 4", bytes: mod((b, v) => { b[22] = 0x44; fixIpCsum(b, v); }), want: "malformed" },
    { name: "total length beyond the payload", bytes: mod((b, v) => { v.setUint16(24, b.length - 21); fixIpCsum(b, v); }), want: "malformed" },
    { name: "bad inner header checksum", bytes: mod((b) => (b[33] = b[33]! ^ 0x40)), want: "bad_csum" },
    { name: "outer source is not a known node", bytes: good, from: parseIpv4("192.0.2.99"), want: "unknown_node" },
    { name: "inner source outside A's subnet (spoofed as C's pod)", bytes: mod((b, v) => { v.setUint32(34, parseIpv4("198.18.3.3")); fixIpCsum(b, v); }), want: "spoofed" },
    { name: "C sends a packet from A's subnet", bytes: good, from: NODES[C].underlay, want: "spoofed" },
    { name: "outer CE on a not-ECT inner packet", bytes: mod((b, v) => { b[23] = 0; fixIpCsum(b, v); }), tos: 3, want: "ecn" },
    { name: "outer ECT(1) leaves a not-ECT inner alone", bytes: mod((b, v) => { b[23] = 0; fixIpCsum(b, v); }), tos: 1, want: "ok" },
  ];
  it.each(cases)("$name -> $want", ({ bytes, from, tos, want }) => {
    const b = coreAs(B);
    const off = b.writeSlot(0, bytes);
    const before = b.bytes().slice(off, off + bytes.length);
    expect(decapOne(b, bytes, from ?? NODES[A].underlay, tos ?? 0).res).toBe(want);
    expect(b.counters(abi.DIR_DECAP)[want]).toBe(1n);
    if (want !== "ok") expect(b.bytes().slice(off, off + bytes.length)).toEqual(before);
  });

  it("outer CE marks an ECT inner packet CE and keeps its checksum right", () => {
    const b = coreAs(B);
    const d = decapOne(b, good, NODES[A].underlay, 0x03);
    expect(d.res).toBe("ok");
    const ip = b.bytes().slice(d.off, d.off + d.len);
    expect(ip[1]! & 3).toBe(3);
    expect(sum16(ip, 0, 20)).toBe(0xffff);
  });

  it("every truncation of a good payload is dropped with the right reason", () => {
    const b = coreAs(B);
    for (let len = 0; len < good.length; len++) {
      const want: ResultName = len < 42 ? "truncated" : "malformed";
      const got = decapOne(b, good.subarray(0, len), NODES[A].underlay).res;
      if (got !== want) throw new Error(`cut at ${len}: ${got}, want ${want}`);
    }
    expect(b.counters(abi.DIR_DECAP).truncated).toBe(42n);
    expect(b.counters(abi.DIR_DECAP).malformed).toBe(BigInt(good.length - 42));
  });

  it("descriptors outside the packet region are bad_desc, never a trap", () => {
    const b = coreAs(B);
    const end = b.pktBase + b.pktSize;
    const bad: [number, number][] = [[0, 100], [b.pktBase - 1, 100], [end - 50, 100], [end, 1], [0xffffffff, 1], [b.slot(0), 0xffffffff], [b.descBase, 64]];
    bad.forEach(([off, len], i) => b.setDesc(i, off, len, NODES[A].underlay));
    expect(b.decap(bad.length)).toBe(0);
    bad.forEach((_, i) => expect(resultName(b.desc(i).res)).toBe("bad_desc"));
  });
});

describe("decap equals the reference on random and corrupted payloads", () => {
  it.each([1, 2, 3, 4, 5, 6])("seed %i", (seed) => {
    const r = rng(seed * 31);
    const a = coreAs(A);
    const b = coreAs(B);
    const ref = refMirror(b, B);
    for (let round = 0; round < 15; round++) {
      const n = randInt(r, 1, 64);
      const sources: number[] = [];
      for (let i = 0; i < n; i++) {
        const inner = ipv4({ src: r() < 0.9 ? (podA & ~0xff) | randInt(r, 0, 255) : randInt(r, 0, 0xffffffff), dst: podB,
          proto: 17, tos: randInt(r, 0, 255), payload: udp(randInt(r, 1, 65535), 53, randBytes(r, randInt(r, 0, 1200))) });
        a.setDesc(0, a.writeSlot(0, inner), inner.length);
        a.encap(1);
        const d = a.desc(0);
        let p: Uint8Array = a.bytes().slice(d.off, d.off + d.len);
        const k = r();
        if (k < 0.2) p = p.subarray(0, randInt(r, 0, p.length));
        else if (k < 0.5) for (let f = randInt(r, 1, 3); f > 0; f--) {
          const at = randInt(r, 0, Math.min(p.length - 1, 60));
          p[at] = p[at]! ^ (1 << randInt(r, 0, 7));
        }
        else if (k < 0.55) p = randBytes(r, randInt(r, 0, 100));
        b.writeSlot(i, p);
        const from = [NODES[A].underlay, NODES[C].underlay, randInt(r, 0, 0xffffffff)][r() < 0.8 ? 0 : randInt(r, 1, 2)] ?? 0;
        sources.push(from);
        b.setDesc(i, b.slot(i), r() < 0.03 ? randInt(r, 0, 5000) : p.length, from, randInt(r, 0, 255));
      }
      ref.mem.set(b.bytes());
      expect(ref.decapBatch(n)).toBe(b.decap(n));
      const mem = b.bytes();
      for (let k = b.descBase; k < b.pktBase + b.pktSize; k++) {
        if (k >= b.descBase + n * abi.DESC_SIZE && k < b.pktBase) continue;
        if (mem[k] !== ref.mem[k]) throw new Error(`seed ${seed} round ${round}: byte ${k} differs (wasm ${mem[k]}, ref ${ref.mem[k]})`);
      }
      expect(b.counters(abi.DIR_DECAP)).toEqual(ref.counters.decap);
    }
    // The random mix must reach the interesting outcomes, or the test proves little.
    const c = b.counters(abi.DIR_DECAP);
    for (const name of ["ok", "truncated", "bad_flags", "bad_csum", "unknown_node", "spoofed", "ecn"] as const) {
      expect(c[name], name).toBeGreaterThan(0n);
    }
  });
});
