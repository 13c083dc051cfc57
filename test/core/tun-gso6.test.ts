import { describe, expect, it } from "vitest";
import * as abi from "../../asm/abi.js";
import { parseIpv6 } from "../../src/common/ipv6.js";
import type { WasmCore } from "../../src/dataplane/core/wasm-core.js";
import { sum16 } from "../../src/dataplane/reference/checksum.js";
import { resultName, type ResultName } from "../../src/dataplane/results.js";
import { randBytes, rng, udp } from "../helpers/packets.js";
import { GSO_TCPV4, GSO_UDP_L4, NEEDS_CSUM, cat, tcp, tunRegions, unitDatagrams, vnet, writtenOutside } from "../helpers/tunnel.js";
import { NODES6, core6As, ipv6, pseudo6 } from "./v6-nodes.js";

/**
 * TSO6 and USO6 on the tun transmit path: IPv6 super-packets from the TUN
 * device cut at many segment sizes, over an IPv4 and an IPv6 underlay, each
 * datagram decapsulated by the receiving node's core and compared byte for
 * byte with what the kernel's GSO makes of it (payload length, sequence
 * numbers, CWR/FIN/PSH, TCP/UDP checksums over the IPv6 pseudo-header);
 * every call checked for writes outside its tables. Then hostile headers.
 */
const A = 0, B = 1;
const GSO_TCPV6 = 4;
const pod6A = parseIpv6("2001:db8:1::5");
const pod6B = parseIpv6("2001:db8:2::7");
const MTU = 1430;
const LIMITS = { slots: 4, slotSize: 65664, maxBatch: 4, units: 2048 };
const TS_OPT = Uint8Array.from([1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7]);

/** What the kernel's GSO makes of an IPv6 TCP/UDP super-packet cut into `gso`-byte payloads. */
function gsoSegments6(ip: Uint8Array, gso: number): Uint8Array[] {
  const isTcp = ip[6] === 6;
  const hdrs = 40 + (isTcp ? (ip[52]! >> 4) * 4 : 8);
  const payload = ip.length - hdrs;
  const segs = payload === 0 ? 1 : Math.ceil(payload / gso);
  const seq0 = isTcp ? new DataView(ip.buffer, ip.byteOffset).getUint32(44) : 0;
  const out: Uint8Array[] = [];
  for (let s = 0; s < segs; s++) {
    const size = Math.min(gso, payload - s * gso);
    const seg = new Uint8Array(hdrs + size);
    seg.set(ip.subarray(0, hdrs));
    seg.set(ip.subarray(hdrs + s * gso, hdrs + s * gso + size), hdrs);
    const w = new DataView(seg.buffer);
    const l4 = hdrs - 40 + size;
    w.setUint16(4, l4);
    if (isTcp) {
      w.setUint32(44, (seq0 + s * gso) >>> 0);
      let f = ip[53]!;
      if (s > 0) f &= ~0x80;
      if (s < segs - 1) f &= ~0x09;
      seg[53] = f;
      w.setUint16(56, 0);
      w.setUint16(56, ~sum16(seg, 40, l4, pseudo6(seg, l4, 6)) & 0xffff);
    } else {
      w.setUint16(44, l4);
      w.setUint16(46, 0);
      const c = ~sum16(seg, 40, l4, pseudo6(seg, l4, 17)) & 0xffff;
      w.setUint16(46, c === 0 ? 0xffff : c);
    }
    out.push(seg);
  }
  return out;
}

function tso6(payloadLen: number, seed: number): Uint8Array {
  return ipv6({ src: pod6A, dst: pod6B, nh: 6, payload: tcp(randBytes(rng(seed), payloadLen), 0xfffff000 + seed, 0x80 | 0x18 | 0x01, TS_OPT) });
}
function uso6(payloadLen: number, seed: number): Uint8Array {
  return ipv6({ src: pod6A, dst: pod6B, nh: 17, payload: udp(5000, 6000, randBytes(rng(seed), payloadLen)) });
}

/** A's transmit path on one super-packet, resumed until done; B decapsulates every datagram; returns the inner packets. */
function carry(a: WasmCore, b: WasmCore, pkt: Uint8Array, over6: boolean): Uint8Array[] {
  a.setDesc(0, a.writeSlot(0, pkt), pkt.length);
  const got: Uint8Array[] = [];
  let next = 0, calls = 0;
  while (next < 1) {
    const before = a.bytes().slice();
    next = a.tunTx(next, 1);
    const bad = writtenOutside(a, before, tunRegions(a));
    if (bad) throw new Error(`call ${calls}: ${bad}`);
    if (++calls > 70_000) throw new Error("no progress");
    for (let u = 0; u < a.tunUnits(); u++) {
      const unit = a.unit(u);
      if (unit.res !== B) throw new Error(`unit result ${unit.res}`);
      for (const dg of unitDatagrams(a, unit)) {
        b.setDesc(0, b.writeSlot(0, dg), dg.length, NODES6[A]!.underlay);
        b.setSource6(0, NODES6[A]!.underlay6);
        if ((over6 ? b.decap6(1) : b.decap(1)) !== 1) throw new Error(`B refused a datagram: ${resultName(b.desc(0).res)}`);
        const d = b.desc(0);
        got.push(b.bytes().slice(d.off, d.off + d.len));
      }
    }
  }
  return got;
}

describe.each([false, true])("TSO6/USO6 over an IPv6 underlay: %s", (over6) => {
  const a = core6As(A, { outer6: over6 }, LIMITS);
  a.setTunMtu(MTU);
  const b = core6As(B, { outer6: over6 }, { slots: 4, slotSize: 4096, maxBatch: 4 });
  const sizes = [1, 2, 7, 64, 100, 536, 999, 1200, MTU - 72];

  it.each(sizes)("TSO6, 20 KB cut at gso_size %i as the kernel cuts it", (gso) => {
    const ip = tso6(20_000, gso);
    const got = carry(a, b, cat(vnet(NEEDS_CSUM, GSO_TCPV6, 72, gso, 40, 16), ip), over6);
    const want = gso6(ip, gso);
    expect(got.length).toBe(want.length);
    got.forEach((g, i) => {
      if (Buffer.compare(g, want[i]!) !== 0) throw new Error(`segment ${i} of ${want.length} differs from the kernel's`);
    });
  });

  it.each([1, 333, MTU - 48])("USO6, 30 KB cut at gso_size %i into datagrams with valid checksums", (gso) => {
    const ip = uso6(30_000, gso);
    const got = carry(a, b, cat(vnet(NEEDS_CSUM, GSO_UDP_L4, 48, gso, 40, 6), ip), over6);
    const want = gso6(ip, gso);
    expect(got.length).toBe(want.length);
    got.forEach((g, i) => expect(Buffer.compare(g, want[i]!), `datagram ${i}`).toBe(0));
  });

  it("a 64 KB TSO6 packet at 1-byte segments takes several calls, each inside its tables", () => {
    const ip = tso6(65_000, 1);
    const got = carry(a, b, cat(vnet(NEEDS_CSUM, GSO_TCPV6, 72, 1, 40, 16), ip), over6);
    expect(got.length).toBe(65_000);
    expect(Buffer.compare(got[64_999]!, gso6(ip, 1)[64_999]!)).toBe(0);
  });
});

const gso6 = gsoSegments6;

describe("TSO6/USO6: hostile virtio_net_hdr and headers", () => {
  const cases: [string, Uint8Array, ResultName][] = [
    ["TSO4 type on an IPv6 packet", cat(vnet(NEEDS_CSUM, GSO_TCPV4, 72, 1000, 40, 16), tso6(5000, 1)), "bad_vnet"],
    ["TSO6 type on UDP", cat(vnet(NEEDS_CSUM, GSO_TCPV6, 48, 1000, 40, 6), uso6(5000, 1)), "bad_vnet"],
    ["USO on TCP", cat(vnet(NEEDS_CSUM, GSO_UDP_L4, 72, 1000, 40, 16), tso6(5000, 1)), "bad_vnet"],
    ["gso_size 0", cat(vnet(NEEDS_CSUM, GSO_TCPV6, 72, 0, 40, 16), tso6(5000, 1)), "bad_vnet"],
    ["a hop-by-hop header before TCP", cat(vnet(NEEDS_CSUM, GSO_TCPV6, 72, 1000, 40, 16), (() => { const p = tso6(5000, 1); p[6] = 0; return p; })()), "bad_vnet"],
    ["TCP data offset beyond the packet", cat(vnet(NEEDS_CSUM, GSO_TCPV6, 72, 1000, 40, 16), (() => { const p = tso6(0, 1); p[52] = 0xf0; return p; })()), "bad_vnet"],
    ["segments bigger than the MTU", cat(vnet(NEEDS_CSUM, GSO_TCPV6, 72, MTU, 40, 16), tso6(5000, 1)), "too_big"],
    ["payload length beyond the read", cat(vnet(NEEDS_CSUM, GSO_TCPV6, 72, 1000, 40, 16), tso6(5000, 1).subarray(0, 3000)), "malformed"],
  ];
  it.each(cases)("%s -> %s", (_what, bytes, want) => {
    const a = core6As(A, {}, LIMITS);
    a.setTunMtu(MTU);
    a.setDesc(0, a.writeSlot(0, bytes), bytes.length);
    expect(a.tunTx(0, 1)).toBe(1);
    expect(resultName(a.unit(0).res)).toBe(want);
    expect(a.unit(0).iovs).toEqual([]);
    expect(a.counters(abi.DIR_ENCAP)[want]).toBe(1n);
  });
});
