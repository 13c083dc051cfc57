import { describe, expect, it } from "vitest";
import * as abi from "../../asm/abi.js";
import { parseIpv4 } from "../../src/common/ipv4.js";
import type { WasmCore } from "../../src/dataplane/core/wasm-core.js";
import { sum16 } from "../../src/dataplane/reference/checksum.js";
import { resultName } from "../../src/dataplane/results.js";
import { ipv4, randBytes, rng } from "../helpers/packets.js";
import { GSO_TCPV4, GSO_UDP_L4, NEEDS_CSUM, NODES, cat, coreAs, l4Valid, unitDatagrams, vnet, vxlanPayload } from "../helpers/tunnel.js";

/**
 * The tun path's offload work in the WASM core: TSO/USO super-packets from
 * the TUN device split into VXLAN datagrams (checked by decapsulating them
 * and verifying every header and checksum), and received datagrams
 * coalesced back into one TSO packet for the device.
 */
const A = 0, B = 1;
const podA = parseIpv4("198.18.1.5");
const podB = parseIpv4("198.18.2.7");
const LIMITS = { slots: 8, slotSize: 65536 + 192, maxBatch: 8, units: 2048 };

/** A TCP segment (header with a 12-byte timestamp option) as the kernel hands it for TSO: pseudo-header sum in the checksum. */
function tcpSuper(payload: Uint8Array, seq: number, flags: number): Uint8Array {
  const t = new Uint8Array(32 + payload.length);
  const v = new DataView(t.buffer);
  v.setUint16(0, 40000);
  v.setUint16(2, 5201);
  v.setUint32(4, seq);
  v.setUint32(8, 777);
  v.setUint8(12, 8 << 4);
  v.setUint8(13, flags);
  v.setUint16(14, 502);
  t.set([1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7], 20);
  t.set(payload, 32);
  return t;
}

function put(core: WasmCore, slot: number, bytes: Uint8Array, desc = slot): void {
  core.setDesc(desc, core.writeSlot(slot, bytes), bytes.length);
}

/** The datagrams of a unit: its iovecs concatenated, cut every `gso` bytes. */
const datagrams = (core: WasmCore, u: ReturnType<WasmCore["unit"]>): Uint8Array[] => unitDatagrams(core, u).map((d) => d.slice());

describe("tun transmit: super-packets from the device", () => {
  it("a 60 KB TSO packet becomes one UDP_SEGMENT unit of 43 equal VXLAN datagrams, every header and checksum right", () => {
    const a = coreAs(A, LIMITS);
    const payload = randBytes(rng(5), 60_000);
    const ip = ipv4({ src: podA, dst: podB, proto: 6, id: 100, payload: tcpSuper(payload, 1_000_000, 0x18 | 0x01) });
    put(a, 0, cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, 1398, 20, 16), ip));
    expect(a.tunTx(0, 1)).toBe(1);
    expect(a.tunUnits()).toBe(1);
    const u = a.unit(0);
    expect(u).toMatchObject({ res: B, addr: NODES[B].underlay, dport: 8472, segs: 43, gso: 22 + 52 + 1398 });
    expect(u.iovs).toHaveLength(86);
    const dgrams = datagrams(a, u);
    expect(dgrams).toHaveLength(43);
    // Node B decapsulates each datagram with every check, then we verify the TCP side.
    const b = coreAs(B, LIMITS);
    const got: Uint8Array[] = [];
    dgrams.forEach((dg, i) => {
      b.setDesc(0, b.writeSlot(0, dg), dg.length, NODES[A].underlay);
      expect(b.decap(1)).toBe(1);
      const d = b.desc(0);
      const seg = b.bytes().slice(d.off, d.off + d.len);
      const v = new DataView(seg.buffer);
      expect(v.getUint16(4)).toBe(100 + i); // IP id increments
      expect(l4Valid(seg)).toBe(true);
      expect(v.getUint32(24)).toBe(1_000_000 + i * 1398); // sequence
      const flags = seg[33]!;
      expect(flags & 0x09).toBe(i === 42 ? 0x09 : 0); // PSH and FIN only on the last
      got.push(seg.slice(52));
    });
    expect(cat(...got)).toEqual(payload);
    expect(a.counters(abi.DIR_ENCAP).ok).toBe(1n);
  });

  it("a unit stops at 64 datagrams or 65507 bytes, whichever comes first", () => {
    const a = coreAs(A, LIMITS);
    const ip = ipv4({ src: podA, dst: podB, proto: 6, payload: tcpSuper(randBytes(rng(9), 65_000), 5, 0x10) });
    put(a, 0, cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, 1398, 20, 16), ip));
    a.tunTx(0, 1);
    const per = Math.floor(65507 / (22 + 52 + 1398)); // 44 datagrams of 1472 bytes
    expect([a.tunUnits(), a.unit(0).segs, a.unit(1).segs]).toEqual([2, per, Math.ceil(65_000 / 1398) - per]);
  });

  it("more than 64 segments are split over several units", () => {
    const a = coreAs(A, LIMITS);
    const payload = randBytes(rng(6), 65_000);
    const ip = ipv4({ src: podA, dst: podB, proto: 6, payload: tcpSuper(payload, 5, 0x10) });
    put(a, 0, cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, 536, 20, 16), ip));
    a.tunTx(0, 1);
    expect(a.tunUnits()).toBe(2);
    expect([a.unit(0).segs, a.unit(1).segs]).toEqual([64, Math.ceil(65_000 / 536) - 64]);
  });

  it("small segments (MSS 88) are packed: one iovec per unit, headers and payload back to back, every datagram right", () => {
    const a = coreAs(A, LIMITS);
    const payload = randBytes(rng(11), 20_000);
    const ip = ipv4({ src: podA, dst: podB, proto: 6, id: 7, payload: tcpSuper(payload, 9, 0x18) });
    put(a, 0, cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, 88, 20, 16), ip));
    expect(a.tunTx(0, 1)).toBe(1);
    const segs = Math.ceil(20_000 / 88);
    expect(a.tunUnits()).toBe(Math.ceil(segs / 64));
    const b = coreAs(B, LIMITS);
    const got: Uint8Array[] = [];
    for (let i = 0; i < a.tunUnits(); i++) {
      const u = a.unit(i);
      expect(u.iovs).toHaveLength(1);
      expect(u.gso).toBe(22 + 52 + 88);
      for (const dg of datagrams(a, u)) {
        b.setDesc(0, b.writeSlot(0, dg), dg.length, NODES[A].underlay);
        expect(b.decap(1)).toBe(1);
        const d = b.desc(0);
        const seg = b.bytes().slice(d.off, d.off + d.len);
        expect(l4Valid(seg)).toBe(true);
        expect(new DataView(seg.buffer).getUint32(24)).toBe(9 + got.length * 88);
        got.push(seg.slice(52));
      }
    }
    expect(got).toHaveLength(segs);
    expect(cat(...got)).toEqual(payload);
  });

  it("with the kernel's limit set to 128, a unit carries 128 datagrams (and never more than 65507 bytes); 0 and 129 are refused", () => {
    const a = coreAs(A, LIMITS);
    a.setUdpSegs(128);
    const ip = ipv4({ src: podA, dst: podB, proto: 6, payload: tcpSuper(randBytes(rng(13), 30_000), 1, 0x10) });
    put(a, 0, cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, 88, 20, 16), ip));
    a.tunTx(0, 1);
    const segs = Math.ceil(30_000 / 88);
    expect(Array.from({ length: a.tunUnits() }, (_, i) => a.unit(i).segs)).toEqual([128, 128, segs - 256]);
    put(a, 0, cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, 1398, 20, 16), ipv4({ src: podA, dst: podB, proto: 6, payload: tcpSuper(randBytes(rng(14), 65_000), 1, 0x10) })));
    a.tunTx(0, 1);
    expect(a.unit(0).segs).toBe(Math.floor(65507 / (22 + 52 + 1398))); // bytes bind first at a full MSS
    expect(() => a.setUdpSegs(0)).toThrow(/1\.\.128/);
    expect(() => a.setUdpSegs(129)).toThrow(/1\.\.128/);
  });

  it("a USO packet becomes equal UDP datagrams with valid checksums", () => {
    const a = coreAs(A, LIMITS);
    const payload = randBytes(rng(7), 4_000);
    const udp = new Uint8Array(8 + payload.length);
    new DataView(udp.buffer).setUint16(0, 5000);
    new DataView(udp.buffer).setUint16(2, 6000);
    udp.set(payload, 8);
    const ip = ipv4({ src: podA, dst: podB, proto: 17, payload: udp });
    put(a, 0, cat(vnet(NEEDS_CSUM, GSO_UDP_L4, 28, 1000, 20, 6), ip));
    a.tunTx(0, 1);
    const dgrams = datagrams(a, a.unit(0));
    expect(dgrams.map((d) => d.length)).toEqual([1050, 1050, 1050, 1050]);
    for (const dg of dgrams) expect(l4Valid(dg.slice(22))).toBe(true);
  });

  it("a plain packet with a partial checksum gets it finished", () => {
    const a = coreAs(A, LIMITS);
    const ip = ipv4({ src: podA, dst: podB, proto: 6, payload: tcpSuper(randBytes(rng(8), 301), 9, 0x18) });
    const v = new DataView(ip.buffer);
    const s = podA, d = podB;
    let ps = (s >>> 16) + (s & 0xffff) + (d >>> 16) + (d & 0xffff) + 6 + (ip.length - 20);
    ps = (ps & 0xffff) + (ps >>> 16);
    v.setUint16(36, ps); // what the kernel leaves for CHECKSUM_PARTIAL
    put(a, 0, cat(vnet(NEEDS_CSUM, 0, 0, 0, 20, 16), ip));
    a.tunTx(0, 1);
    const [dg] = datagrams(a, a.unit(0));
    expect(dg!.length).toBe(22 + ip.length);
    expect(l4Valid(dg!.slice(22))).toBe(true);
  });

  it("refuses a GSO type it did not ask for, and what has no route, with counters", () => {
    const a = coreAs(A, LIMITS);
    put(a, 0, cat(vnet(0, 4 /* TCPV6 */, 52, 1000, 20, 16), ipv4({ src: podA, dst: podB, proto: 6, payload: new Uint8Array(100) })));
    put(a, 1, cat(vnet(0, 0, 0, 0, 0, 0), ipv4({ src: podA, dst: parseIpv4("203.0.113.1"), proto: 17, payload: new Uint8Array(10) })));
    put(a, 2, new Uint8Array(15));
    a.tunTx(0, 3);
    expect([0, 1, 2].map((i) => resultName(a.unit(i).res))).toEqual(["bad_vnet", "no_route", "truncated"]);
    expect(a.unit(0).iovs).toEqual([]);
  });
});

describe("tun receive: datagrams coalesced for the device", () => {
  /** A's TSO output for one flow, as one UDP_GRO receive buffer on B. */
  function groBuffer(payloadLen: number, seq = 77, flags = 0x18): { buf: Uint8Array; gso: number; payload: Uint8Array } {
    const a = coreAs(A, LIMITS);
    const payload = randBytes(rng(payloadLen), payloadLen);
    const ip = ipv4({ src: podA, dst: podB, proto: 6, payload: tcpSuper(payload, seq, flags) });
    put(a, 0, cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, 1398, 20, 16), ip));
    a.tunTx(0, 1);
    const u = a.unit(0);
    return { buf: cat(...datagrams(a, u)), gso: u.gso, payload };
  }

  function receive(b: WasmCore, buf: Uint8Array, gso: number, from = NODES[A].underlay): void {
    const off = b.writeSlot(0, buf);
    b.setDesc(0, off, buf.length, from);
    new DataView(b.bytes().buffer).setUint16(b.descBase + abi.DESC_GSO, gso, true);
    expect(b.tunRx(0, 1)).toBe(1);
  }

  it("small segments (MSS 88) from several received buffers coalesce past 64 into one TSO packet, as GRO would", () => {
    const a = coreAs(A, LIMITS);
    const payload = randBytes(rng(12), 20_000);
    const ip = ipv4({ src: podA, dst: podB, proto: 6, payload: tcpSuper(payload, 77, 0x10) });
    put(a, 0, cat(vnet(NEEDS_CSUM, GSO_TCPV4, 52, 88, 20, 16), ip));
    a.tunTx(0, 1);
    const segs = Math.ceil(20_000 / 88);
    const bufs = Array.from({ length: a.tunUnits() }, (_, i) => ({ buf: cat(...datagrams(a, a.unit(i))), gso: a.unit(i).gso }));
    expect(bufs).toHaveLength(4); // 64 + 64 + 64 + 36 datagrams
    const b = coreAs(B, LIMITS);
    const dv = new DataView(b.bytes().buffer);
    bufs.forEach(({ buf, gso }, i) => {
      b.setDesc(i, b.writeSlot(i, buf), buf.length, NODES[A].underlay);
      dv.setUint16(b.descBase + i * abi.DESC_SIZE + abi.DESC_GSO, gso, true);
    });
    expect(b.tunRx(0, bufs.length)).toBe(bufs.length);
    expect(b.tunUnits()).toBe(1);
    const u = b.unit(0);
    expect(u.segs).toBe(segs);
    expect(u.iovs).toHaveLength(segs); // [virtio_net_hdr + headers + first payload], then one per segment
    const mem = b.bytes();
    const pkt = cat(...u.iovs.map(([o, l]) => mem.slice(o, o + l)));
    expect(new DataView(pkt.buffer).getUint16(4, true)).toBe(88); // gso_size
    expect(pkt.slice(10 + 52)).toEqual(payload);
  });

  it("43 segments of one flow become one TSO packet: [virtio_net_hdr + headers][payload]...", () => {
    const { buf, gso, payload } = groBuffer(60_000);
    const b = coreAs(B, LIMITS);
    receive(b, buf, gso);
    expect(b.tunUnits()).toBe(1);
    const u = b.unit(0);
    expect(u.segs).toBe(43);
    expect(u.iovs).toHaveLength(43);
    const mem = b.bytes();
    const pkt = cat(...u.iovs.map(([o, l]) => mem.slice(o, o + l)));
    const h = new DataView(pkt.buffer);
    expect([h.getUint8(0), h.getUint8(1), h.getUint16(2, true), h.getUint16(4, true), h.getUint16(6, true), h.getUint16(8, true)])
      .toEqual([NEEDS_CSUM, GSO_TCPV4, 52, 1398, 20, 16]);
    const ip = pkt.slice(10);
    const v = new DataView(ip.buffer);
    expect(v.getUint16(2)).toBe(ip.length);
    expect(sum16(ip, 0, 20)).toBe(0xffff);
    expect(ip[33]! & 0x08).toBe(0x08); // PSH of the last segment
    expect(ip.slice(52)).toEqual(payload);
    // The checksum field holds the partial pseudo-header sum: finishing it as the kernel would verifies.
    const full = ~sum16(ip, 20, ip.length - 20) & 0xffff;
    v.setUint16(36, full);
    expect(l4Valid(ip)).toBe(true);
    expect(b.counters(abi.DIR_DECAP).ok).toBe(43n);
  });

  it("stops coalescing at a gap, and drops a spoofed datagram without losing the rest", () => {
    const one = groBuffer(1398 * 3, 1000);
    const gap = groBuffer(1398 * 2, 1000 + 1398 * 3 + 1); // not the next sequence number
    const b = coreAs(B, LIMITS);
    receive(b, cat(one.buf, gap.buf), one.gso);
    expect([b.tunUnits(), b.unit(0).segs, b.unit(1).segs]).toEqual([2, 3, 2]);

    // A short segment ends a super-packet even without PSH, as in GRO.
    const short = groBuffer(1398 * 2 + 100, 1, 0x10);
    const next = groBuffer(1398 * 2, 1 + 1398 * 2 + 100, 0x10);
    const e = coreAs(B, LIMITS);
    const tail = short.buf.length - 2 * short.gso;
    const buf = cat(short.buf, next.buf);
    // one receive buffer per datagram size run: [2 full + 1 short] then [2 full]
    const o1 = e.writeSlot(0, buf.subarray(0, short.buf.length));
    e.setDesc(0, o1, short.buf.length, NODES[A].underlay);
    const o2 = e.writeSlot(1, buf.subarray(short.buf.length));
    e.setDesc(1, o2, next.buf.length, NODES[A].underlay);
    const dv = new DataView(e.bytes().buffer);
    dv.setUint16(e.descBase + abi.DESC_GSO, short.gso, true);
    dv.setUint16(e.descBase + abi.DESC_SIZE + abi.DESC_GSO, next.gso, true);
    expect(tail).toBe(22 + 52 + 100);
    expect(e.tunRx(0, 2)).toBe(2);
    expect([e.tunUnits(), e.unit(0).segs, e.unit(1).segs]).toEqual([2, 3, 2]);

    const c = coreAs(B, LIMITS);
    const spoof = groBuffer(1398 * 3, 5);
    receive(c, spoof.buf, spoof.gso, NODES[2].underlay); // node C sends A's subnet
    expect(c.tunUnits()).toBe(0);
    expect(c.counters(abi.DIR_DECAP).spoofed).toBe(3n);
  });

  /** One VXLAN datagram from A carrying `inner` as-is (what a kernel peer on a virtual underlay may send). */
  const raw = (inner: Uint8Array): Uint8Array => vxlanPayload(A, B, inner);

  /** A TCP packet whose checksum field holds what CHECKSUM_PARTIAL leaves: the folded pseudo-header sum. */
  function partialTcp(payloadLen: number): Uint8Array {
    const ip = ipv4({ src: podA, dst: podB, proto: 6, payload: tcpSuper(randBytes(rng(payloadLen), payloadLen), 3, 0x10) });
    let ps = (podA >>> 16) + (podA & 0xffff) + (podB >>> 16) + (podB & 0xffff) + 6 + (ip.length - 20);
    ps = (ps & 0xffff) + (ps >>> 16);
    new DataView(ip.buffer).setUint16(36, ps);
    return ip;
  }

  it("finishes a checksum the sender left partial, and drops a wrong one", () => {
    const b = coreAs(B, LIMITS);
    receive(b, raw(partialTcp(500)), 0);
    const [o, l] = b.unit(0).iovs[0]!;
    expect(l4Valid(b.bytes().slice(o + 10, o + l))).toBe(true);
    const bad = partialTcp(500);
    bad[60]! ^= 0xff; // payload corrupted after the sender computed nothing
    const c = coreAs(B, LIMITS);
    const full = bad.slice();
    new DataView(full.buffer).setUint16(36, 0x1234); // neither valid nor partial
    receive(c, raw(full), 0);
    expect(c.tunUnits()).toBe(0);
    expect(c.counters(abi.DIR_DECAP).bad_l4_csum).toBe(1n);
  });

  it("a TCP packet bigger than the MTU in one datagram goes to the device as TSO cut at the MTU", () => {
    const b = coreAs(B, LIMITS);
    b.setTunMtu(1450);
    const big = partialTcp(6_990);
    // Whole, as one datagram, and also with a UDP_GRO size that is the inner MSS (as the kernel reports it).
    for (const gso of [0, 1398]) {
      receive(b, raw(big), gso);
      expect(b.tunUnits()).toBe(1);
      const [o] = b.unit(0).iovs[0]!;
      const h = new DataView(b.bytes().buffer, o, 10);
      expect([h.getUint8(0), h.getUint8(1), h.getUint16(2, true), h.getUint16(4, true)]).toEqual([NEEDS_CSUM, GSO_TCPV4, 52, 1450 - 52]);
    }
  });
});

