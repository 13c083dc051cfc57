import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseIpv4, parseMac } from "../../src/common/ipv4.js";
import { ipv6Bytes, parseCidr6, parseIpv6 } from "../../src/common/ipv6.js";
import { bpf } from "../../src/backend/ebpf/libbpf.js";
import { decodeNode, encodeNode, type NodeInfo, type Reason } from "../../src/backend/ebpf/maps.js";
import { sum16 } from "../../src/dataplane/reference/checksum.js";
import { ipv4, udp } from "../helpers/packets.js";
import { icmpv6, ipv6, neighbourSolicitation, pseudoSum6, solicitedNode } from "./packets6.js";
import { ProgramBench, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, cbWord, skb } from "./testrun.js";

/**
 * The tc programs on IPv6 packets, and on IPv4 inside an IPv6 underlay
 * (BPF_PROG_TEST_RUN, see testrun.ts). Inner and outer families are
 * independent: a node is reached over the underlay of the packet's family
 * when it has one, else over the other.
 */
const VTEP = parseMac("02:00:c0:00:02:01");
const HOST_MAC = parseMac("0e:00:00:00:00:01");
const POD_A_MAC = parseMac("0a:00:00:00:01:05"), POD_B_MAC = parseMac("0a:00:00:00:01:06");
const POD_A = parseIpv4("198.18.1.5"); // IPv4 of pod A (ifindex 1, where test runs come from)
const POD_A6 = parseIpv6("2001:db8:1::5");
const POD_B6 = parseIpv6("2001:db8:1::6"); // on ifindex 77
const mac = (last: number, v6 = false): Uint8Array => parseMac(`02:00:c0:00:${v6 ? "06" : "04"}:${last.toString(16).padStart(2, "0")}`);
/** Dual-stack, both underlays. */
const NODE2: NodeInfo = {
  underlay: parseIpv4("192.0.2.2"), vtepMac: mac(2), subnet: parseIpv4("198.18.2.0"), prefixLen: 24,
  underlay6: parseIpv6("2001:db8:ff::2"), vtepMac6: mac(2, true), subnet6: parseCidr6("2001:db8:2::/64"),
};
/** Dual-stack pods, IPv4 underlay only: its IPv6 pods are reached over IPv4. */
const NODE3: NodeInfo = { underlay: parseIpv4("192.0.2.3"), vtepMac: mac(3), subnet: parseIpv4("198.18.3.0"), prefixLen: 24, subnet6: parseCidr6("2001:db8:3::/64") };
/** Dual-stack pods, IPv6 underlay only: its IPv4 pods are reached over IPv6. */
const NODE4: NodeInfo = {
  underlay: 0, vtepMac: mac(4), subnet: parseIpv4("198.18.4.0"), prefixLen: 24,
  underlay6: parseIpv6("2001:db8:ff::4"), vtepMac6: mac(4, true), subnet6: parseCidr6("2001:db8:4::/64"),
};
/** IPv6 only: no IPv4 subnet at all. */
const NODE5: NodeInfo = { underlay: 0, vtepMac: mac(5), underlay6: parseIpv6("2001:db8:ff::5"), vtepMac6: mac(5, true), subnet6: parseCidr6("2001:db8:5::/64") };

let bench: ProgramBench;
beforeAll(() => {
  bench = ProgramBench.load();
  const m = bench.maps;
  m.setConfig({ vxlanIfindex: 42, vni: 1, vtepMac: VTEP });
  for (const n of [NODE2, NODE3, NODE4, NODE5]) {
    if (n.subnet !== undefined && n.prefixLen !== undefined) m.setRoute(n.subnet, n.prefixLen, n);
    if (n.subnet6) m.setRoute6(n.subnet6, n);
    if (n.underlay !== 0) m.setNode(n);
    if (n.underlay6 !== undefined) m.setNode6(n);
  }
  m.setEndpoint(POD_A, { ifindex: 1, mac: POD_A_MAC, hostMac: HOST_MAC });
  m.setEndpoint6(POD_A6, { ifindex: 1, mac: POD_A_MAC, hostMac: HOST_MAC });
  m.setEndpoint6(POD_B6, { ifindex: 77, mac: POD_B_MAC, hostMac: HOST_MAC });
});
afterAll(() => bench?.close());

function frame(ip: Uint8Array, opts: { dst?: Uint8Array; src?: Uint8Array; type?: number } = {}): Buffer {
  const b = Buffer.alloc(14 + ip.length);
  b.set(opts.dst ?? HOST_MAC, 0);
  b.set(opts.src ?? POD_A_MAC, 6);
  b.writeUInt16BE(opts.type ?? 0x86dd, 12);
  b.set(ip, 14);
  return b;
}
const udp6 = (src: bigint, dst: bigint, hop = 64): Uint8Array => ipv6({ src, dst, next: 17, hop, payload: udp(4000, 53, new Uint8Array(40)) });
const pod4 = (src: number, dst: number): Uint8Array => ipv4({ src, dst, proto: 17, ttl: 64, payload: udp(4000, 53, new Uint8Array(40)) });
const macs = (b: Buffer): number[] => [...b.subarray(0, 12)];
const run = (name: string, pkt: Buffer, ctx: Buffer | null = skb(1)) => bench.run(name, pkt, ctx);
/** test_overlay6's ctx: the IPv6 outer source in cb[0..3], the VNI in cb[4]. */
const outer6 = (a: bigint, vni = 1): Buffer => {
  const b = ipv6Bytes(a);
  return skb(1, cbWord(b, 0), cbWord(b, 4), cbWord(b, 8), cbWord(b, 12), vni);
};
const outer4 = (a: number, vni = 1): Buffer => skb(1, Buffer.from([a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255]).readUInt32LE(0), vni);
const TUNNEL_CSUM = 0x0001;

describe("node_info encoding", () => {
  it.each([["NODE2", NODE2], ["NODE3", NODE3], ["NODE4", NODE4], ["NODE5", NODE5]] as const)("%s reads back as written", (_n, n) => {
    const d = decodeNode(encodeNode(n));
    expect(d.underlay).toBe(n.underlay);
    expect([d.subnet, d.prefixLen]).toEqual([n.subnet, n.prefixLen]);
    expect(d.underlay6).toBe(n.underlay6);
    expect(d.subnet6).toEqual(n.subnet6);
    expect([...(d.vtepMac6 ?? [])]).toEqual([...(n.vtepMac6 ?? n.vtepMac)]);
  });
});

describe("weft_from_pod, IPv6", () => {
  it("remote pod subnet over an IPv6 underlay: IPv6 tunnel key (outer checksum on), the node's IPv6 VTEP MAC, hop limit - 1, redirect", () => {
    const r = run("test_from_pod", frame(udp6(POD_A6, parseIpv6("2001:db8:2::7"))));
    expect([r.verdict, r.delta]).toEqual([TC_ACT_REDIRECT, { forwarded: 1n }]);
    expect(macs(r.out)).toEqual([...NODE2.vtepMac6!, ...VTEP]);
    expect(r.out[14 + 7]).toBe(63);
    const t = bench.tunnelSeen();
    expect([t.rc4, t.rc6]).toEqual([-71, 0]); // EPROTO without BPF_F_TUNINFO_IPV6: the key is IPv6
    expect(t.dst6.equals(Buffer.from(ipv6Bytes(NODE2.underlay6!)))).toBe(true);
    expect([t.vni, t.ttl, t.flags & TUNNEL_CSUM]).toEqual([1, 64, TUNNEL_CSUM]);
  });

  it("v6-in-v4: a dual-stack node with only an IPv4 underlay gets the IPv6 packet over IPv4 (its IPv4 VTEP MAC, zero outer checksum)", () => {
    const r = run("test_from_pod", frame(udp6(POD_A6, parseIpv6("2001:db8:3::7"))));
    expect([r.verdict, r.delta]).toEqual([TC_ACT_REDIRECT, { forwarded: 1n }]);
    expect(macs(r.out)).toEqual([...NODE3.vtepMac, ...VTEP]);
    const t = bench.tunnelSeen();
    expect([t.rc4, t.dst4, t.vni, t.ttl, t.flags & TUNNEL_CSUM]).toEqual([0, NODE3.underlay, 1, 64, 0]);
  });

  it("v4-in-v6: an IPv4 pod packet to a node with only an IPv6 underlay goes over IPv6 (its IPv6 VTEP MAC)", () => {
    const r = run("test_from_pod", frame(pod4(POD_A, parseIpv4("198.18.4.7")), { type: 0x0800 }));
    expect([r.verdict, r.delta]).toEqual([TC_ACT_REDIRECT, { forwarded: 1n }]);
    expect(macs(r.out)).toEqual([...NODE4.vtepMac6!, ...VTEP]);
    expect(sum16(r.out, 14, 20)).toBe(0xffff);
    const t = bench.tunnelSeen();
    expect([t.rc4, t.rc6, t.flags & TUNNEL_CSUM]).toEqual([-71, 0, TUNNEL_CSUM]);
    expect(t.dst6.equals(Buffer.from(ipv6Bytes(NODE4.underlay6!)))).toBe(true);
  });

  it("IPv4 to a node with both underlays stays on IPv4 (the families match when they can)", () => {
    const r = run("test_from_pod", frame(pod4(POD_A, parseIpv4("198.18.2.7")), { type: 0x0800 }));
    expect(macs(r.out)).toEqual([...NODE2.vtepMac, ...VTEP]);
    expect([bench.tunnelSeen().rc4, bench.tunnelSeen().dst4]).toEqual([0, NODE2.underlay]);
  });

  it("local pod: its MACs, hop limit - 1, redirect into its namespace", () => {
    const r = run("weft_from_pod", frame(udp6(POD_A6, POD_B6)));
    expect([r.verdict, r.delta]).toEqual([TC_ACT_REDIRECT, { delivered: 1n }]);
    expect(macs(r.out)).toEqual([...POD_B_MAC, ...HOST_MAC]);
    expect(r.out[14 + 7]).toBe(63);
  });

  it("a pod sending from an IPv6 address that is not its own is dropped as pod_spoofed", () => {
    for (const src of [parseIpv6("2001:db8:1::99"), POD_B6 /* B's, from A's interface */, parseIpv6("2001:db8:2::7")]) {
      const r = run("weft_from_pod", frame(udp6(src, parseIpv6("2001:db8:2::7"))));
      expect([r.verdict, r.delta]).toEqual([TC_ACT_SHOT, { pod_spoofed: 1n }]);
    }
    // Neighbour discovery does not open a hole: an NS from a foreign global address is dropped too.
    const ns = neighbourSolicitation(parseIpv6("2001:db8:1::99"), solicitedNode(parseIpv6("2001:db8:1::1")), parseIpv6("2001:db8:1::1"), POD_A_MAC);
    expect(run("weft_from_pod", frame(ns)).delta).toEqual({ pod_spoofed: 1n });
  });

  it.each([
    ["no route (outside the cluster)", udp6(POD_A6, parseIpv6("2001:db8:99::1"))],
    ["hop limit 1 (the kernel answers time exceeded)", udp6(POD_A6, parseIpv6("2001:db8:2::7"), 1)],
    ["to the gateway (the node's own address)", udp6(POD_A6, parseIpv6("2001:db8:1::1"))],
  ])("%s: to the stack, untouched", (_n, ip) => {
    const pkt = frame(ip);
    const r = run("weft_from_pod", pkt);
    expect([r.verdict, r.delta]).toEqual([TC_ACT_OK, { passed: 1n }]);
    expect(r.out.equals(pkt)).toBe(true);
  });

  it.each([
    ["duplicate address detection (from ::)", 0n],
    ["from the pod's link-local address", parseIpv6("fe80::800:ff:fe00:105")],
    ["from the pod's own address", POD_A6],
  ])("neighbour solicitation for the gateway, %s: to the kernel, which answers it (as ARP)", (_n, src) => {
    const gw = parseIpv6("2001:db8:1::1");
    const ip = neighbourSolicitation(src, solicitedNode(gw), src === 0n ? POD_A6 : gw, POD_A_MAC);
    // The packet is a valid NS: its ICMPv6 checksum (with the pseudo-header) verifies.
    expect(sum16(ip, 40, ip.length - 40, pseudoSum6(src, solicitedNode(gw), 58, ip.length - 40))).toBe(0xffff);
    const pkt = frame(ip, { dst: parseMac("33:33:ff:00:00:01") });
    const r = run("weft_from_pod", pkt);
    expect([r.verdict, r.delta]).toEqual([TC_ACT_OK, { passed: 1n }]);
    expect(r.out.equals(pkt)).toBe(true);
  });

  it("a pod's neighbour advertisement to a pod on its bridge goes to the kernel untouched: routed, its hop limit would drop below the 255 the receiver requires", () => {
    // NA (type 136, solicited + override) from pod A's own address to pod B, a local endpoint that a
    // plain packet would be delivered to with hop limit - 1 (the case above).
    const body = new Uint8Array(28);
    body[0] = 0x60;
    body.set(ipv6Bytes(POD_A6), 4);
    body[20] = 2; // target link-layer address
    body[21] = 1;
    body.set(POD_A_MAC, 22);
    const ip = ipv6({ src: POD_A6, dst: POD_B6, next: 58, hop: 255, payload: icmpv6(POD_A6, POD_B6, 136, 0, body) });
    const pkt = frame(ip, { dst: POD_B_MAC });
    const r = run("weft_from_pod", pkt);
    expect([r.verdict, r.delta]).toEqual([TC_ACT_OK, { passed: 1n }]);
    expect(r.out.equals(pkt)).toBe(true);
    // From a foreign address it is still spoofing.
    const forged = ipv6({ src: parseIpv6("2001:db8:1::99"), dst: POD_B6, next: 58, hop: 255, payload: icmpv6(parseIpv6("2001:db8:1::99"), POD_B6, 136, 0, body) });
    expect(run("weft_from_pod", frame(forged, { dst: POD_B_MAC })).delta).toEqual({ pod_spoofed: 1n });
  });

  it("truncated at every length and malformed headers are dropped as malformed, never read past the end", () => {
    const full = frame(udp6(POD_A6, parseIpv6("2001:db8:2::7")));
    for (let len = 54; len < full.length; len++) {
      expect(run("weft_from_pod", full.subarray(0, len)).delta, `length ${len}`).toEqual({ malformed: 1n });
    }
    const bad = [
      (b: Buffer) => (b[14] = 0x40), // version 4 with the IPv6 EtherType
      (b: Buffer) => b.writeUInt16BE(b.length - 14 - 40 + 1, 18), // payload length past the frame
    ];
    for (const f of bad) {
      const b = Buffer.from(full);
      f(b);
      expect(run("weft_from_pod", b).delta).toEqual({ malformed: 1n });
    }
  });
});

describe("overlay arrivals with IPv6 (handle_overlay via test_overlay6 / test_overlay)", () => {
  const inner6 = (src: bigint, dst = POD_A6, from = NODE2): Buffer => frame(udp6(src, dst), { dst: VTEP, src: from.vtepMac6 });

  it("IPv6 over an IPv6 underlay, from inside the sender's subnet, to a local pod: delivered into the pod", () => {
    const r = run("test_overlay6", inner6(parseIpv6("2001:db8:2::7")), outer6(NODE2.underlay6!));
    expect([r.verdict, r.delta]).toEqual([TC_ACT_REDIRECT, { delivered: 1n }]);
    expect(macs(r.out)).toEqual([...POD_A_MAC, ...HOST_MAC]);
    expect(r.out[14 + 7]).toBe(63);
  });

  it("v6-in-v4 arrival: IPv6 from a node's IPv6 subnet over its IPv4 underlay is delivered", () => {
    const r = run("test_overlay", inner6(parseIpv6("2001:db8:3::7")), outer4(NODE3.underlay));
    expect([r.verdict, r.delta]).toEqual([TC_ACT_REDIRECT, { delivered: 1n }]);
  });

  it("v4-in-v6 arrival: IPv4 from a node's IPv4 subnet over its IPv6 underlay is delivered", () => {
    const pkt = frame(pod4(parseIpv4("198.18.4.7"), POD_A), { dst: VTEP, src: NODE4.vtepMac6, type: 0x0800 });
    const r = run("test_overlay6", pkt, outer6(NODE4.underlay6!));
    expect([r.verdict, r.delta]).toEqual([TC_ACT_REDIRECT, { delivered: 1n }]);
    expect(sum16(r.out, 14, 20)).toBe(0xffff);
  });

  it.each([
    { name: "inner IPv6 source outside the sender's IPv6 subnet", pkt: () => inner6(parseIpv6("2001:db8:3::7")), ctx: () => outer6(NODE2.underlay6!), reason: "spoofed" },
    { name: "inner IPv6 source of one node over another node's IPv4 underlay", pkt: () => inner6(parseIpv6("2001:db8:2::7")), ctx: () => outer4(NODE3.underlay), via: 4, reason: "spoofed" },
    { name: "inner IPv4 from an IPv6-only node (it owns no IPv4 subnet)", pkt: () => frame(pod4(parseIpv4("198.18.5.7"), POD_A), { dst: VTEP, type: 0x0800 }), ctx: () => outer6(NODE5.underlay6!), reason: "spoofed" },
    { name: "IPv6 outer source is no node", pkt: () => inner6(parseIpv6("2001:db8:2::7")), ctx: () => outer6(parseIpv6("2001:db8:ff::99")), reason: "unknown_node" },
    { name: "another VNI", pkt: () => inner6(parseIpv6("2001:db8:2::7")), ctx: () => outer6(NODE2.underlay6!, 2), reason: "bad_vni" },
    { name: "inner destination MAC not ours", pkt: () => frame(udp6(parseIpv6("2001:db8:2::7"), POD_A6), { dst: HOST_MAC }), ctx: () => outer6(NODE2.underlay6!), reason: "bad_dst_mac" },
    { name: "truncated inner IPv6", pkt: () => inner6(parseIpv6("2001:db8:2::7")).subarray(0, 70), ctx: () => outer6(NODE2.underlay6!), reason: "malformed" },
  ] as { name: string; pkt: () => Buffer; ctx: () => Buffer; via?: 4; reason: Reason }[])("$name: dropped as $reason", ({ pkt, ctx, via, reason }) => {
    const c = ctx();
    const r = run(via === 4 ? "test_overlay" : "test_overlay6", pkt(), c);
    expect([r.verdict, r.delta]).toEqual([TC_ACT_SHOT, { [reason]: 1n }]);
  });

  it("for the node itself (not a pod): to the stack", () => {
    const r = run("test_overlay6", inner6(parseIpv6("2001:db8:2::7"), parseIpv6("2001:db8:1::")), outer6(NODE2.underlay6!));
    expect([r.verdict, r.delta]).toEqual([TC_ACT_OK, { passed: 1n }]);
  });
});

describe("weft_to_overlay with IPv6 (host packets routed into the device)", () => {
  const host6 = (dst: bigint): Buffer => frame(udp6(parseIpv6("2001:db8:1::"), dst), { dst: VTEP, src: VTEP });
  it("gets the owning node's MACs for its IPv6 underlay", () => {
    const r = run("weft_to_overlay", host6(parseIpv6("2001:db8:2::7")));
    expect([r.verdict, r.delta]).toEqual([TC_ACT_OK, { to_overlay: 1n }]);
    expect(macs(r.out)).toEqual([...NODE2.vtepMac6!, ...VTEP]);
  });
  it("a node without an IPv6 underlay: its IPv4 VTEP MAC", () => {
    expect(macs(run("weft_to_overlay", host6(parseIpv6("2001:db8:3::7"))).out)).toEqual([...NODE3.vtepMac, ...VTEP]);
  });
  it("no node owns the destination (or it is link-scoped): dropped as no_route", () => {
    expect(run("weft_to_overlay", host6(parseIpv6("2001:db8:99::7"))).delta).toEqual({ no_route: 1n });
    expect(run("weft_to_overlay", host6(parseIpv6("ff02::16"))).delta).toEqual({ no_route: 1n });
  });
  it("a truncated IPv6 packet is dropped as malformed", () => {
    expect(run("weft_to_overlay", host6(parseIpv6("2001:db8:2::7")).subarray(0, 60)).delta).toEqual({ malformed: 1n });
  });
});

describe("the maps from user space", () => {
  it("weft_routes6 is longest-prefix: a /48 inside a /32 wins for its addresses", () => {
    const m = bench.maps;
    const wide = parseCidr6("2001:db8:7000::/36"), narrow = parseCidr6("2001:db8:7000::/48");
    m.setRoute6(wide, NODE3);
    m.setRoute6(narrow, NODE2);
    try {
      expect(macs(run("weft_from_pod", frame(udp6(POD_A6, parseIpv6("2001:db8:7000::9")))).out)).toEqual([...NODE2.vtepMac6!, ...VTEP]);
      expect(macs(run("weft_from_pod", frame(udp6(POD_A6, parseIpv6("2001:db8:7001::9")))).out)).toEqual([...NODE3.vtepMac, ...VTEP]);
      expect(m.routes6().map((p) => `${p.addr}/${p.len}`)).toEqual(expect.arrayContaining([`${wide.addr}/36`, `${narrow.addr}/48`]));
    } finally {
      m.deleteRoute6(wide);
      m.deleteRoute6(narrow);
    }
    expect(m.route6(wide)).toBeUndefined();
  });

  it("endpoints6 are keyed by the 16 address bytes", () => {
    expect(bench.maps.endpoint6(POD_B6)?.ifindex).toBe(77);
    expect(bench.maps.endpointAddrs6()).toEqual(expect.arrayContaining([POD_A6, POD_B6]));
    expect(bpf.mapInfo(bench.maps.fds.weft_routes6).type).toBe(11); // BPF_MAP_TYPE_LPM_TRIE
  });
});
