import { describe, expect, it } from "vitest";
import { parseIpv4 } from "../../src/common/ipv4.js";
import { ipv4, randBytes, rng, udp } from "../helpers/packets.js";
import { cat, coreAs, receiveChecked, tcp, vxlanPayload } from "../helpers/tunnel.js";
import { inetChecksum, sum16 } from "../../src/dataplane/reference/checksum.js";

/**
 * The tun receive path against hostile buffers: the UDP_GRO segment size
 * comes from the kernel and every byte from the network. Each case goes
 * through receiveChecked (test/helpers/tunnel.ts): every call is checked for
 * writes outside its tables and buffers, every unit for a well-formed
 * packet and offload header, and every datagram must be counted once.
 */
const A = 0, B = 1;
const podA = parseIpv4("198.18.1.5");
const podB = parseIpv4("198.18.2.7");
const LIMITS = { slots: 8, slotSize: 65536 + 192, maxBatch: 16, units: 64 };

/** A UDP packet A -> B with a valid checksum. */
function udpPacket(n: number, seed: number, opts: { frag?: number; options?: Uint8Array } = {}): Uint8Array {
  const u = udp(7000 + seed, 53, randBytes(rng(seed), n));
  const ip = ipv4({ src: podA, dst: podB, proto: 17, payload: u, ...opts });
  const ihl = (ip[0]! & 15) * 4;
  const v = new DataView(ip.buffer);
  const ps = (podA >>> 16) + (podA & 0xffff) + (podB >>> 16) + (podB & 0xffff) + 17 + u.length;
  v.setUint16(ihl + 6, ~sum16(ip, ihl, u.length, ps) & 0xffff || 0xffff);
  return ip;
}

/** A TCP packet A -> B (data offset `doff` words, as given) with a valid checksum over what is there. */
function tcpPacket(payload: number, doff: number, seed: number): Uint8Array {
  const t = tcp(randBytes(rng(seed), payload), 1000 * seed, 0x10);
  t[12] = doff << 4;
  const ip = ipv4({ src: podA, dst: podB, proto: 6, payload: t });
  const ps = (podA >>> 16) + (podA & 0xffff) + (podB >>> 16) + (podB & 0xffff) + 6 + t.length;
  new DataView(ip.buffer).setUint16(36, ~sum16(ip, 20, t.length, ps) & 0xffff);
  return ip;
}

/** A UDP_GRO buffer: `count` datagrams A -> B of equal size (`size` bytes of UDP payload each). */
function groBuffer(count: number, size: number): { buf: Uint8Array; gso: number } {
  const dgs = Array.from({ length: count }, (_, i) => vxlanPayload(A, B, udpPacket(size, i + 1)));
  return { buf: cat(...dgs), gso: dgs[0]!.length };
}

describe("tun receive: hostile buffers and segment sizes", () => {
  it("a buffer of more datagrams than one call's units is finished over several calls, none lost", () => {
    const b = coreAs(B, LIMITS);
    const g = groBuffer(130, 20); // 130 datagrams of 70 bytes, 64 units per call
    const r = receiveChecked(b, [g, groBuffer(3, 100)]);
    expect(r).toMatchObject({ ok: 133, dropped: 0, units: 133 });
    expect(r.calls).toBe(3);
  });

  it("refuses the pieces of a buffer cut at a segment size below any VXLAN frame, each counted", () => {
    const b = coreAs(B, LIMITS);
    const g = groBuffer(40, 1400);
    g.buf[24] = 0; // the first inner packet claims no length: a reported size of 22 or more is believed
    g.buf[25] = 0;
    for (const gso of [1, 2, 7, 21, 22, 23, 30, 41]) {
      const r = receiveChecked(b, [{ buf: g.buf.slice(), gso }]);
      expect(r.ok).toBe(0);
      expect(r.dropped, `gso ${gso}`).toBe(gso < 22 ? 1 : Math.ceil(g.buf.length / gso));
    }
  });

  it("a reported segment size that is not the datagrams' size delivers only whole, checked packets", () => {
    const b = coreAs(B, LIMITS);
    const g = groBuffer(10, 1400);
    for (const gso of [0, 1, 41, 42, 1000, g.gso - 1, g.gso + 1, 2 * g.gso, g.buf.length - 1, g.buf.length, g.buf.length + 1, 65535]) {
      const r = receiveChecked(b, [{ buf: g.buf.slice(), gso }]);
      expect(r.ok, `gso ${gso}`).toBeGreaterThanOrEqual(gso === g.gso ? 10 : 1);
    }
    expect(receiveChecked(b, [{ buf: g.buf.slice(), gso: g.gso }])).toMatchObject({ ok: 10, dropped: 0 });
  });

  it("an inner packet claiming more bytes than its datagram holds is malformed; one claiming the rest of its buffer is one oversized packet", () => {
    const b = coreAs(B, LIMITS);
    const long = vxlanPayload(A, B, udpPacket(600, 1));
    new DataView(long.buffer).setUint16(24, 600 + 28 + 1); // one byte more than present
    fixIpCsum(long);
    expect(receiveChecked(b, [{ buf: long, gso: 0 }])).toMatchObject({ ok: 0, dropped: 1 });
    expect(b.counters(1).malformed).toBe(1n);

    const big = udpPacket(3000, 2); // a 3028-byte UDP packet sent whole, reported with the inner MSS as GRO size
    const r = receiveChecked(b, [{ buf: vxlanPayload(A, B, big), gso: 1400 }]);
    expect(r).toMatchObject({ ok: 1, units: 1 });
  });

  it("drops a TCP header whose data offset is below 5 words or past the packet, even with a valid checksum", () => {
    const b = coreAs(B, LIMITS);
    for (const [doff, payload] of [[0, 100], [4, 100], [15, 20], [5, 0]] as const) {
      const r = receiveChecked(b, [{ buf: vxlanPayload(A, B, tcpPacket(payload, doff, doff + 1)), gso: 0 }]);
      expect(r.ok, `data offset ${doff}`).toBe(doff === 5 ? 1 : 0);
    }
    // The same past the MTU (where the packet would become a TSO packet with hdr_len from the data offset).
    b.setTunMtu(1450);
    expect(receiveChecked(b, [{ buf: vxlanPayload(A, B, tcpPacket(3000, 2, 9)), gso: 0 }]).ok).toBe(0);
    expect(b.counters(1).malformed).toBe(4n);
  });

  it("delivers IP options and fragments whole, never coalesced, fragments unchecked", () => {
    const b = coreAs(B, LIMITS);
    const opt = Uint8Array.from([1, 1, 1, 0]);
    const bufs = [
      { buf: vxlanPayload(A, B, udpPacket(100, 1, { options: opt })), gso: 0 },
      { buf: vxlanPayload(A, B, ipv4({ src: podA, dst: podB, proto: 17, frag: 0x2000, payload: randBytes(rng(3), 800) })), gso: 0 },
      { buf: vxlanPayload(A, B, ipv4({ src: podA, dst: podB, proto: 6, frag: 0x0064, payload: randBytes(rng(4), 9) })), gso: 0 },
    ];
    expect(receiveChecked(b, bufs)).toMatchObject({ ok: 3, units: 3, dropped: 0 });
  });
});

function fixIpCsum(dg: Uint8Array): void {
  const v = new DataView(dg.buffer, dg.byteOffset);
  v.setUint16(32, 0);
  v.setUint16(32, inetChecksum(dg, 22, (dg[22]! & 15) * 4));
}
