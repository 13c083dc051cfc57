import { describe, expect, it } from "vitest";
import * as abi from "../../asm/abi.js";
import { parseIpv6 } from "../../src/common/ipv6.js";
import type { WasmCore } from "../../src/dataplane/core/wasm-core.js";
import { sum16 } from "../../src/dataplane/reference/checksum.js";
import { resultName } from "../../src/dataplane/results.js";
import { icmpEcho, ipv4, randBytes, rng, udp } from "../helpers/packets.js";
import { parseIpv4 } from "../../src/common/ipv4.js";
import { GSO_NONE, NEEDS_CSUM, cat, tcp, unitDatagrams, vnet, vxlanFrame } from "../helpers/tunnel.js";
import { NODES6, core6As, icmp6Echo, ipv6, pseudo6 } from "./v6-nodes.js";

/**
 * The tun path with inner IPv6, over an IPv4 or an IPv6 underlay, in the
 * WASM core: packets from the TUN device become VXLAN datagrams (the unit's
 * address is the peer's IPv4 underlay, or over IPv6 the offset of its 16-byte
 * IPv6 underlay in memory, for the shim), and received datagrams become
 * packets for the device, their TCP/UDP checksums checked or finished.
 */
const A = 0, B = 1, C = 2;
const pod6A = parseIpv6("2001:db8:1::5");
const pod6B = parseIpv6("2001:db8:2::7");
const LIMITS = { slots: 8, slotSize: 4096, maxBatch: 8, units: 2048 };

/** An IPv6 UDP datagram; `csum`: "good", "partial" (pseudo-header sum, as the kernel leaves it), or "bad". */
function udp6(src: bigint, dst: bigint, n: number, csum: "good" | "partial" | "bad" = "good"): Uint8Array {
  const u = udp(40000, 5353, randBytes(rng(n), n));
  const p = ipv6({ src, dst, nh: 17, payload: u });
  const v = new DataView(p.buffer);
  const ps = pseudo6(p, u.length, 17);
  let fold = ps;
  while (fold > 0xffff) fold = (fold & 0xffff) + (fold >>> 16);
  const good = ~sum16(p, 40, u.length, ps) & 0xffff;
  v.setUint16(46, csum === "partial" ? fold : csum === "good" ? good || 0xffff : (good ^ 0x1234) & 0xffff);
  return p;
}

/** An IPv6 TCP segment (20-byte header) of n payload bytes with a right checksum. */
function tcp6(n: number): Uint8Array {
  const t = tcp(randBytes(rng(n), n), 1000, 0x10);
  const p = ipv6({ src: pod6A, dst: pod6B, nh: 6, payload: t });
  new DataView(p.buffer).setUint16(56, ~sum16(p, 40, t.length, pseudo6(p, t.length, 6)) & 0xffff);
  return p;
}

const udp6Valid = (p: Uint8Array): boolean => sum16(p, 40, p.length - 40, pseudo6(p, p.length - 40, 17)) === 0xffff;

function put(core: WasmCore, slot: number, bytes: Uint8Array): void {
  core.setDesc(slot, core.writeSlot(slot, bytes), bytes.length);
}

describe("tun transmit of inner IPv6", () => {
  it.each([false, true])("a plain packet becomes one VXLAN datagram to the peer (IPv6 underlay: %s)", (outer6) => {
    const a = core6As(A, { outer6 }, LIMITS);
    const pkt = icmp6Echo(pod6A, pod6B, 1, 2, new Uint8Array(64));
    put(a, 0, cat(vnet(0, GSO_NONE, 0, 0, 0, 0), pkt));
    expect(a.tunTx(0, 1)).toBe(1);
    expect(a.tunUnits()).toBe(1);
    const u = a.unit(0);
    expect(u.res).toBe(B);
    if (outer6) {
      const addr = a.bytes().slice(u.addr, u.addr + 16);
      expect(Buffer.from(addr).toString("hex")).toBe(NODES6[B]!.underlay6.toString(16).padStart(32, "0"));
    } else expect(u.addr).toBe(NODES6[B]!.underlay);
    const [dg] = unitDatagrams(a, u);
    expect(dg!.length).toBe(22 + pkt.length);
    expect((dg![20]! << 8) | dg![21]!).toBe(0x86dd);
    expect(dg!.slice(22)).toEqual(pkt);
    // Node B takes the datagram back.
    const b = core6As(B, { outer6 }, LIMITS);
    b.setDesc(0, b.writeSlot(0, dg!), dg!.length, NODES6[A]!.underlay);
    b.setSource6(0, NODES6[A]!.underlay6);
    expect(b.tunRx(0, 1)).toBe(1);
    const r = b.unit(0);
    expect(r.res).toBe(A);
    const out = unitDatagrams(b, r)[0]!;
    expect(out.slice(0, 10)).toEqual(new Uint8Array(10));
    expect(out.slice(10)).toEqual(pkt);
  });

  it("finishes a checksum the kernel left partial (NEEDS_CSUM, csum_start 40)", () => {
    const a = core6As(A, {}, LIMITS);
    const pkt = udp6(pod6A, pod6B, 300, "partial");
    expect(udp6Valid(pkt)).toBe(false);
    put(a, 0, cat(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 40, 6), pkt));
    expect(a.tunTx(0, 1)).toBe(1);
    const dg = unitDatagrams(a, a.unit(0))[0]!;
    expect(udp6Valid(dg.slice(22))).toBe(true);
  });

  it("refuses what it cannot carry: a GSO type that does not fit, a bad csum_start, no IPv6 underlay, no route", () => {
    const cases: [string, Uint8Array, string, boolean][] = [
      ["TSO6 (gso type 4) on a UDP packet", cat(vnet(NEEDS_CSUM, 4, 60, 1200, 40, 16), udp6(pod6A, pod6B, 3000)), "bad_vnet", false],
      ["csum_start inside the IPv6 header", cat(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 20, 6), udp6(pod6A, pod6B, 100)), "bad_vnet", false],
      ["no route", cat(vnet(0, GSO_NONE, 0, 0, 0, 0), udp6(pod6A, parseIpv6("2001:db8:99::1"), 10)), "no_route", false],
      ["truncated", cat(vnet(0, GSO_NONE, 0, 0, 0, 0), udp6(pod6A, pod6B, 10).subarray(0, 39)), "truncated", false],
      ["over IPv6, a peer without one", cat(vnet(0, GSO_NONE, 0, 0, 0, 0), udp6(pod6A, parseIpv6("2001:db8:3::1"), 10)), "no_route", true],
    ];
    for (const [what, bytes, want, outer6] of cases) {
      const a = core6As(A, { outer6 }, LIMITS);
      a.setPeer(C, { ...NODES6[C]!, underlay6: undefined });
      put(a, 0, bytes);
      expect(a.tunTx(0, 1), what).toBe(1);
      expect(resultName(a.unit(0).res), what).toBe(want);
      expect(a.counters(abi.DIR_ENCAP)[want as "ok"], what).toBe(1n);
    }
  });
});

describe("tun transmit over a dual-stack underlay (split6)", () => {
  it("an IPv4 packet's unit is family 4 with the IPv4 address; an IPv6 packet's family 6 with its address's offset", () => {
    const a = core6As(A, { split6: true }, LIMITS);
    const v4 = ipv4({ src: parseIpv4("198.18.1.5"), dst: parseIpv4("198.18.2.9"), proto: 1, payload: icmpEcho(1, 1, new Uint8Array(8)) });
    put(a, 0, cat(vnet(0, GSO_NONE, 0, 0, 0, 0), v4));
    put(a, 1, cat(vnet(0, GSO_NONE, 0, 0, 0, 0), icmp6Echo(pod6A, pod6B, 1, 1, new Uint8Array(8))));
    expect(a.tunTx(0, 2)).toBe(2);
    expect(a.tunUnits()).toBe(2);
    const [u4, u6] = [a.unit(0), a.unit(1)];
    const fam = (i: number): number => a.bytes()[a.unitBase + i * abi.UNIT_SIZE + abi.UNIT_FAMILY]!;
    expect([fam(0), u4.addr]).toEqual([4, NODES6[B]!.underlay]);
    expect(fam(1)).toBe(6);
    expect(Buffer.from(a.bytes().slice(u6.addr, u6.addr + 16)).toString("hex")).toBe(NODES6[B]!.underlay6.toString(16).padStart(32, "0"));
  });
});

describe("tun receive of inner IPv6", () => {
  const vx = (inner: Uint8Array, from = A, to = B): Uint8Array => vxlanFrame(NODES6[to]!.vtepMac, NODES6[from]!.vtepMac, 0x86dd, inner);

  it("a UDP_GRO buffer of IPv6 datagrams over IPv6 becomes one complete packet per datagram", () => {
    const b = core6As(B, { outer6: true }, LIMITS);
    const pkts = [0, 1, 2].map(() => udp6(pod6A, pod6B, 200));
    const buf = cat(...pkts.map((p) => vx(p)));
    const off = b.writeSlot(0, buf);
    b.setDesc(0, off, buf.length);
    new DataView(b.bytes().buffer).setUint16(b.descBase + abi.DESC_GSO, 22 + pkts[0]!.length, true);
    b.setSource6(0, NODES6[A]!.underlay6);
    expect(b.tunRx(0, 1)).toBe(1);
    expect(b.tunUnits()).toBe(3);
    for (let i = 0; i < 3; i++) expect(unitDatagrams(b, b.unit(i))[0]!.slice(10)).toEqual(pkts[i]);
    expect(b.counters(abi.DIR_DECAP).ok).toBe(3n);
  });

  it("consecutive TCP segments of one flow coalesce into one TSO6 packet for the device (GRO)", () => {
    const b = core6As(B, { outer6: true }, LIMITS);
    const mss = 800;
    const data = randBytes(rng(77), 4 * mss - 300);
    const segs = [0, 1, 2, 3].map((i) => {
      const chunk = data.subarray(i * mss, Math.min(data.length, (i + 1) * mss));
      const t = tcp(chunk, 5000 + i * mss, i === 3 ? 0x18 : 0x10);
      const p = ipv6({ src: pod6A, dst: pod6B, nh: 6, payload: t });
      new DataView(p.buffer).setUint16(56, ~sum16(p, 40, t.length, pseudo6(p, t.length, 6)) & 0xffff);
      return p;
    });
    const dgs = segs.map((p) => vx(p));
    const buf = cat(...dgs);
    b.setDesc(0, b.writeSlot(0, buf), buf.length);
    new DataView(b.bytes().buffer).setUint16(b.descBase + abi.DESC_GSO, dgs[0]!.length, true);
    b.setSource6(0, NODES6[A]!.underlay6);
    expect(b.tunRx(0, 1)).toBe(1);
    expect(b.tunUnits()).toBe(1);
    const u = b.unit(0);
    expect(u.segs).toBe(4);
    const out = unitDatagrams(b, u)[0]!;
    const v = new DataView(out.buffer, out.byteOffset);
    expect([out[0], out[1], v.getUint16(2, true), v.getUint16(4, true), v.getUint16(6, true), v.getUint16(8, true)]).toEqual([NEEDS_CSUM, 4, 60, mss, 40, 16]);
    const ip = out.slice(10);
    const iv = new DataView(ip.buffer);
    expect(iv.getUint16(4)).toBe(20 + data.length);
    expect(ip[53]).toBe(0x18); // PSH of the last segment
    expect(ip.slice(60)).toEqual(data);
    iv.setUint16(56, ~sum16(ip, 40, ip.length - 40) & 0xffff);
    expect(sum16(ip, 40, ip.length - 40, pseudo6(ip, ip.length - 40, 6))).toBe(0xffff);
    // A gap in the sequence numbers ends the coalescing: two units.
    const c = core6As(B, { outer6: true }, LIMITS);
    const gap = cat(dgs[0]!, dgs[2]!);
    c.setDesc(0, c.writeSlot(0, gap), gap.length);
    new DataView(c.bytes().buffer).setUint16(c.descBase + abi.DESC_GSO, dgs[0]!.length, true);
    c.setSource6(0, NODES6[A]!.underlay6);
    expect(c.tunRx(0, 1)).toBe(1);
    expect(c.tunUnits()).toBe(2);
  });

  it("a TCP packet bigger than the device MTU goes to it as TSO6 cut at the MTU, with a partial checksum", () => {
    const b = core6As(B, { outer6: true }, LIMITS);
    b.setTunMtu(1400);
    const seg = tcp6(3000);
    const dg = vx(seg);
    b.setDesc(0, b.writeSlot(0, dg), dg.length);
    b.setSource6(0, NODES6[A]!.underlay6);
    expect(b.tunRx(0, 1)).toBe(1);
    const out = unitDatagrams(b, b.unit(0))[0]!;
    const v = new DataView(out.buffer, out.byteOffset);
    expect([out[0], out[1], v.getUint16(2, true), v.getUint16(4, true), v.getUint16(6, true), v.getUint16(8, true)]).toEqual([NEEDS_CSUM, 4, 60, 1340, 40, 16]);
    const ip = out.slice(10);
    let partial = pseudo6(ip, ip.length - 40, 6);
    while (partial > 0xffff) partial = (partial & 0xffff) + (partial >>> 16);
    expect(new DataView(ip.buffer).getUint16(56)).toBe(partial);
    new DataView(ip.buffer).setUint16(56, ~sum16(ip, 40, ip.length - 40) & 0xffff); // as the kernel finishes it
    expect(sum16(ip, 40, ip.length - 40, pseudo6(ip, ip.length - 40, 6))).toBe(0xffff);
    expect(ip.slice(60)).toEqual(seg.slice(60));
  });

  it.each([
    ["a partial UDP checksum is finished", udp6(pod6A, pod6B, 100, "partial"), NODES6[A]!.underlay6, "ok"],
    ["a wrong UDP checksum", udp6(pod6A, pod6B, 100, "bad"), NODES6[A]!.underlay6, "bad_l4_csum"],
    ["a source outside A's IPv6 subnet", udp6(parseIpv6("2001:db8:3::1"), pod6B, 100), NODES6[A]!.underlay6, "spoofed"],
    ["from a stranger", udp6(pod6A, pod6B, 100), parseIpv6("2001:db8:ff::77"), "unknown_node"],
    ["a UDP header cut short", ipv6({ src: pod6A, dst: pod6B, nh: 17, payload: new Uint8Array(4) }), NODES6[A]!.underlay6, "malformed"],
  ] as const)("%s -> %s", (_what, pkt, from6, want) => {
    const b = core6As(B, { outer6: true }, LIMITS);
    const dg = vx(pkt);
    b.setDesc(0, b.writeSlot(0, dg), dg.length);
    b.setSource6(0, from6);
    expect(b.tunRx(0, 1)).toBe(1);
    expect(b.counters(abi.DIR_DECAP)[want]).toBe(1n);
    if (want === "ok") expect(udp6Valid(unitDatagrams(b, b.unit(0))[0]!.slice(10))).toBe(true);
    else expect(b.tunUnits()).toBe(0);
  });
});
