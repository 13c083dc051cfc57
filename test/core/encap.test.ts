import { describe, expect, it } from "vitest";
import * as abi from "../../asm/abi.js";
import { parseCidr, parseIpv4 } from "../../src/common/ipv4.js";
import { resultName } from "../../src/dataplane/results.js";
import { sum16 } from "../../src/dataplane/reference/checksum.js";
import { flowHash, flowSport } from "../../src/dataplane/reference/flow.js";
import { icmpEcho, ipv4, randBytes, randInt, rng, udp } from "../helpers/packets.js";
import { NODES, coreAs, refMirror } from "../helpers/tunnel.js";

const A = 0, B = 1;
const podA = parseIpv4("198.18.1.5");
const podB = parseIpv4("198.18.2.7");

describe("encap: known answer", () => {
  it("frame mode writes outer IPv4, UDP, VXLAN and inner Ethernet exactly", () => {
    const core = coreAs(A);
    const inner = ipv4({ src: podA, dst: podB, proto: 17, tos: 0x02, payload: udp(40000, 53, new Uint8Array(32)) });
    const off = core.writeSlot(0, inner);
    core.setDesc(0, off, inner.length);
    expect(core.encap(1, abi.ENCAP_MODE_FRAME)).toBe(1);
    const d = core.desc(0);
    expect(d.res).toBe(B);
    expect(d.off).toBe(off - 50);
    expect(d.len).toBe(inner.length + 50);
    const f = core.bytes().slice(d.off, d.off + d.len);
    const v = new DataView(f.buffer);
    // outer IPv4
    expect(v.getUint8(0)).toBe(0x45);
    expect(v.getUint8(1)).toBe(0x02); // ECT(0) copied from the inner packet
    expect(v.getUint16(2)).toBe(f.length);
    expect(v.getUint16(6)).toBe(0); // no DF by default, as Linux vxlan
    expect(v.getUint8(8)).toBe(64);
    expect(v.getUint8(9)).toBe(17);
    expect(v.getUint32(12)).toBe(NODES[A].underlay);
    expect(v.getUint32(16)).toBe(NODES[B].underlay);
    expect(sum16(f, 0, 20)).toBe(0xffff);
    // UDP
    const sport = flowSport(flowHash(podA, podB, (40000 << 16) | 53, 17, 0), 32768, 60999);
    expect(v.getUint16(20)).toBe(sport);
    expect(v.getUint16(22)).toBe(8472);
    expect(v.getUint16(24)).toBe(f.length - 20);
    expect(v.getUint16(26)).toBe(0); // zero checksum, Linux vxlan's default
    // VXLAN: I flag, VNI 1
    expect(Array.from(f.subarray(28, 36))).toEqual([0x08, 0, 0, 0, 0, 0, 1, 0]);
    // inner Ethernet
    expect(Array.from(f.subarray(36, 42))).toEqual(Array.from(NODES[B].vtepMac));
    expect(Array.from(f.subarray(42, 48))).toEqual(Array.from(NODES[A].vtepMac));
    expect(v.getUint16(48)).toBe(0x0800);
    expect(Array.from(f.subarray(50))).toEqual(Array.from(inner));
    expect(d).toMatchObject({ addr: NODES[B].underlay, sport, dport: 8472, tos: 2 });
  });

  it("payload mode writes VXLAN + inner Ethernet only and names the peer's underlay", () => {
    const core = coreAs(A, {}, { vni: 0xabcdef, dstPort: 4789 });
    const inner = ipv4({ src: podA, dst: podB, proto: 1, payload: icmpEcho(1, 1, new Uint8Array(56)) });
    const off = core.writeSlot(3, inner);
    core.setDesc(0, off, inner.length);
    expect(core.encap(1)).toBe(1);
    const d = core.desc(0);
    expect(d).toMatchObject({ off: off - 22, len: inner.length + 22, res: B, addr: NODES[B].underlay, dport: 4789 });
    expect(Array.from(core.bytes().subarray(d.off, d.off + 8))).toEqual([0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
  });

  it("computes the outer UDP checksum and sets DF when configured", () => {
    const core = coreAs(A, {}, { udpChecksum: true, dontFragment: true });
    const inner = ipv4({ src: podA, dst: podB, proto: 6, payload: randBytes(rng(1), 301) });
    core.setDesc(0, core.writeSlot(0, inner), inner.length);
    core.encap(1, abi.ENCAP_MODE_FRAME);
    const d = core.desc(0);
    const f = core.bytes().slice(d.off, d.off + d.len);
    const v = new DataView(f.buffer);
    expect(v.getUint16(6)).toBe(0x4000);
    const src = NODES[A].underlay, dst = NODES[B].underlay, ulen = f.length - 20;
    const pseudo = (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + 17 + ulen;
    expect(v.getUint16(26)).not.toBe(0);
    expect(sum16(f, 20, ulen, pseudo)).toBe(0xffff);
  });

  it("fragments of one datagram share a source port; different ports spread", () => {
    const core = coreAs(A);
    const first = ipv4({ src: podA, dst: podB, proto: 17, frag: 0x2000, payload: udp(1111, 2222, new Uint8Array(64)) });
    const second = ipv4({ src: podA, dst: podB, proto: 17, frag: 0x0009, payload: new Uint8Array(40) });
    const ports = new Set<number>();
    for (let i = 0; i < 32; i++) {
      const p = ipv4({ src: podA, dst: podB, proto: 17, payload: udp(10000 + i, 80, new Uint8Array(8)) });
      core.setDesc(i, core.writeSlot(i, p), p.length);
    }
    core.setDesc(32, core.writeSlot(32, first), first.length);
    core.setDesc(33, core.writeSlot(33, second), second.length);
    expect(core.encap(34)).toBe(34);
    for (let i = 0; i < 32; i++) ports.add(core.desc(i).sport);
    expect(ports.size).toBeGreaterThan(24);
    expect(core.desc(32).sport).toBe(core.desc(33).sport);
  });
});

describe("encap: what it refuses", () => {
  const good = (): Uint8Array => ipv4({ src: podA, dst: podB, proto: 17, payload: udp(1, 2, new Uint8Array(20)) });
  const edit = (f: (b: Uint8Array, v: DataView) => void): Uint8Array => {
    const b = good();
    f(b, new DataView(b.buffer));
    return b;
  };
  const cases: [string, Uint8Array, number, string][] = [
    ["19 bytes", good().subarray(0, 19), 19, "truncated"],
    ["empty", new Uint8Array(0), 0, "truncated"],
    ["version nibble 5", edit((b) => (b[0] = 0x55)), 48, "not_ipv4"],
    ["IHL 4", edit((b) => (b[0] = 0x44)), 48, "malformed"],
    ["IHL beyond the packet", edit((b) => (b[0] = 0x4f)), 48, "malformed"],
    ["total length beyond the buffer", edit((_b, v) => v.setUint16(2, 49)), 48, "malformed"],
    ["total length below IHL", edit((_b, v) => v.setUint16(2, 19)), 48, "malformed"],
    ["no route", edit((_b, v) => v.setUint32(16, parseIpv4("203.0.113.9"))), 48, "no_route"],
    ["to this node's own subnet", edit((_b, v) => v.setUint32(16, parseIpv4("198.18.1.9"))), 48, "local"],
  ];
  it.each(cases.map(([name, bytes, len, want]) => ({ name, bytes, len, want })))("$name -> $want", ({ bytes, len, want }) => {
    const core = coreAs(A);
    const off = core.writeSlot(0, bytes);
    const before = core.bytes().slice(off - 64, off + 64);
    core.setDesc(0, off, len);
    expect(core.encap(1, abi.ENCAP_MODE_FRAME)).toBe(0);
    expect(resultName(core.desc(0).res)).toBe(want);
    expect(core.counters(abi.DIR_ENCAP)[want as "truncated"]).toBe(1n);
    // a refused packet is left untouched
    expect(core.bytes().slice(off - 64, off + 64)).toEqual(before);
  });

  it("a route to an empty peer slot is no_route", () => {
    const core = coreAs(A);
    core.lpmInsert(parseCidr("198.18.9.0/24"), 9);
    const p = ipv4({ src: podA, dst: parseIpv4("198.18.9.1"), proto: 1, payload: new Uint8Array(8) });
    core.setDesc(0, core.writeSlot(0, p), p.length);
    core.encap(1);
    expect(resultName(core.desc(0).res)).toBe("no_route");
  });

  it("descriptors outside the packet region or without headroom are bad_desc, never a trap", () => {
    const core = coreAs(A);
    const p = good();
    core.writeSlot(0, p);
    const end = core.pktBase + core.pktSize;
    const bad: [number, number][] = [
      [0, 48],
      [core.pktBase, 48], // no headroom before the region start
      [core.pktBase + 21, 48], // 21 < 22 bytes of payload-mode headroom
      [end - 20, 48],
      [end, 1],
      [0xffffffff, 48],
      [core.slot(0), 0xffffffff],
      [core.descBase + 64, 48],
    ];
    bad.forEach(([off, len], i) => core.setDesc(i, off, len));
    expect(core.encap(bad.length)).toBe(0);
    bad.forEach((_, i) => expect(resultName(core.desc(i).res)).toBe("bad_desc"));
    // frame mode needs 50 bytes in front
    core.setDesc(0, core.pktBase + 40, 48);
    core.encap(1, abi.ENCAP_MODE_FRAME);
    expect(resultName(core.desc(0).res)).toBe("bad_desc");
  });

  it("rejects a batch larger than the descriptor region and an unknown mode", () => {
    const core = coreAs(A);
    expect(() => core.encap(65)).toThrow(/at most 64 descriptors/);
    expect(() => core.encap(1, 7)).toThrow(/mode/);
  });
});

describe("encap equals the reference on random batches", () => {
  it.each([1, 2, 3, 4, 5, 6, 7, 8])("seed %i", (seed) => {
    const r = rng(seed * 1000);
    const core = coreAs(A, {}, { hashSeed: seed * 77, udpChecksum: seed % 2 === 0 });
    const ref = refMirror(core, A, { hashSeed: seed * 77, udpChecksum: seed % 2 === 0 });
    for (let round = 0; round < 20; round++) {
      const n = randInt(r, 1, 64);
      for (let i = 0; i < n; i++) {
        const dst = r() < 0.8 ? (0xc6120000 | (randInt(r, 1, 4) << 8) | randInt(r, 0, 255)) >>> 0 : randInt(r, 0, 0xffffffff);
        const proto = [1, 6, 17, 132, 47][randInt(r, 0, 4)] ?? 6;
        let p = ipv4({ src: podA, dst, proto, tos: randInt(r, 0, 255), frag: r() < 0.1 ? randInt(r, 0, 0xffff) : 0,
          payload: randBytes(r, randInt(r, 0, 1400)), options: r() < 0.1 ? new Uint8Array(4 * randInt(r, 1, 10)) : undefined });
        if (r() < 0.15) p = p.subarray(0, randInt(r, 0, p.length)); // truncated
        if (r() < 0.1) p[randInt(r, 0, Math.max(0, p.length - 1))] = randInt(r, 0, 255); // corrupted
        const off = core.writeSlot(i, p) - (r() < 0.05 ? randInt(r, 0, 64) : 0);
        core.setDesc(i, off, r() < 0.05 ? randInt(r, 0, 4096) : p.length);
      }
      ref.mem.set(core.bytes()); // same input bytes; the outer IP id counters stay in step
      const mode = r() < 0.5 ? abi.ENCAP_MODE_FRAME : abi.ENCAP_MODE_PAYLOAD;
      const got = core.encap(n, mode);
      expect(ref.encapBatch(n, mode)).toBe(got);
      const mem = core.bytes();
      const region = [core.descBase, core.descBase + n * abi.DESC_SIZE] as const;
      expect(mem.subarray(...region)).toEqual(ref.mem.subarray(...region));
      for (let k = core.pktBase; k < core.pktBase + core.pktSize; k++) {
        if (mem[k] !== ref.mem[k]) throw new Error(`byte ${k} (slot ${Math.floor((k - core.pktBase) / 2048)} +${(k - core.pktBase) % 2048}): wasm ${mem[k]} ref ${ref.mem[k]}; descs ${JSON.stringify(Array.from({ length: n }, (_, i) => core.desc(i)))}`);
      }
      expect(core.counters(abi.DIR_ENCAP)).toEqual(ref.counters.encap);
    }
  });
});
