import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseIpv4, parseMac } from "../../src/common/ipv4.js";
import { bpf } from "../../src/backend/ebpf/libbpf.js";
import { MAP_LAYOUT, MAP_NAMES, type Reason } from "../../src/backend/ebpf/maps.js";
import { sum16 } from "../../src/dataplane/reference/checksum.js";
import { ipv4, udp } from "../helpers/packets.js";
import { ProgramBench, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, skb } from "./testrun.js";

/** The tc programs on IPv4 packets (BPF_PROG_TEST_RUN, see testrun.ts; IPv6 in programs6.test.ts). */
const VTEP = parseMac("02:00:c0:00:02:01");
const NODE2 = { underlay: parseIpv4("192.0.2.2"), vtepMac: parseMac("02:00:c0:00:02:02"), subnet: parseIpv4("198.18.2.0"), prefixLen: 24 };
const POD_A = parseIpv4("198.18.1.5"); // local, on ifindex 1 (where test runs come from)
const POD_B = parseIpv4("198.18.1.6"); // local, on ifindex 77
const POD_A_MAC = parseMac("0a:00:00:00:01:05"), POD_B_MAC = parseMac("0a:00:00:00:01:06");
const HOST_MAC = parseMac("0e:00:00:00:00:01");

let bench: ProgramBench;

beforeAll(() => {
  bench = ProgramBench.load();
  const maps = bench.maps;
  maps.setConfig({ vxlanIfindex: 42, vni: 1, vtepMac: VTEP });
  maps.setRoute(NODE2.subnet, 24, NODE2);
  maps.setNode(NODE2);
  maps.setEndpoint(POD_A, { ifindex: 1, mac: POD_A_MAC, hostMac: HOST_MAC });
  maps.setEndpoint(POD_B, { ifindex: 77, mac: POD_B_MAC, hostMac: HOST_MAC });
});
afterAll(() => {
  bench?.close();
});

function frame(ip: Uint8Array, opts: { dst?: Uint8Array; src?: Uint8Array; type?: number } = {}): Buffer {
  const b = Buffer.alloc(14 + ip.length);
  b.set(opts.dst ?? HOST_MAC, 0);
  b.set(opts.src ?? POD_A_MAC, 6);
  b.writeUInt16BE(opts.type ?? 0x0800, 12);
  b.set(ip, 14);
  return b;
}

const run = (name: string, pkt: Buffer, ctx: Buffer | null = skb(1)) => bench.run(name, pkt, ctx);

const pod = (src: number, dst: number, extra: Partial<Parameters<typeof ipv4>[0]> = {}): Uint8Array =>
  ipv4({ src, dst, proto: 17, ttl: 64, payload: udp(4000, 53, new Uint8Array(40)), ...extra });

describe("map layouts match the C structs", () => {
  it.each(MAP_NAMES)("%s", (name) => {
    const info = bpf.mapInfo(bench.maps.fds[name]);
    expect({ key: info.keySize, value: info.valueSize }).toEqual(MAP_LAYOUT[name]);
  });
});

describe("weft_from_pod", () => {
  it("remote pod subnet: tunnel key, inner MACs to the node's VTEP, TTL - 1, redirect to the VXLAN device", () => {
    const r = run("weft_from_pod", frame(pod(POD_A, parseIpv4("198.18.2.7"))));
    expect(r.verdict).toBe(TC_ACT_REDIRECT);
    expect(r.delta).toEqual({ forwarded: 1n });
    expect([...r.out.subarray(0, 6)]).toEqual([...NODE2.vtepMac]);
    expect([...r.out.subarray(6, 12)]).toEqual([...VTEP]);
    expect(r.out[14 + 8]).toBe(63);
    expect(sum16(r.out, 14, 20)).toBe(0xffff);
  });

  it("local pod: its MACs, TTL - 1, redirect into its namespace", () => {
    const r = run("weft_from_pod", frame(pod(POD_A, POD_B)));
    expect(r.verdict).toBe(TC_ACT_REDIRECT);
    expect(r.delta).toEqual({ delivered: 1n });
    expect([...r.out.subarray(0, 12)]).toEqual([...POD_B_MAC, ...HOST_MAC]);
    expect(sum16(r.out, 14, 20)).toBe(0xffff);
  });

  it.each([
    ["no route (outside the cluster)", pod(POD_A, parseIpv4("203.0.113.9"))],
    ["TTL 1 (the kernel answers time exceeded)", pod(POD_A, parseIpv4("198.18.2.7"), { ttl: 1 })],
  ])("%s: to the stack, untouched", (_n, ip) => {
    const pkt = frame(ip);
    const r = run("weft_from_pod", pkt);
    expect(r.verdict).toBe(TC_ACT_OK);
    expect(r.delta).toEqual({ passed: 1n });
    expect(r.out.equals(pkt)).toBe(true);
  });

  it("ARP goes to the stack", () => {
    expect(run("weft_from_pod", frame(new Uint8Array(28), { type: 0x0806 })).delta).toEqual({ passed: 1n });
  });

  it("IP fragments are routed by destination like any packet", () => {
    const first = run("weft_from_pod", frame(pod(POD_A, parseIpv4("198.18.2.7"), { frag: 0x2000 })));
    const later = run("weft_from_pod", frame(ipv4({ src: POD_A, dst: parseIpv4("198.18.2.7"), proto: 17, frag: 0x00b9, payload: new Uint8Array(64) })));
    expect([first.verdict, later.verdict]).toEqual([TC_ACT_REDIRECT, TC_ACT_REDIRECT]);
  });

  it("a pod sending from an address that is not its own is dropped", () => {
    expect(run("weft_from_pod", frame(pod(parseIpv4("198.18.1.99"), parseIpv4("198.18.2.7")))).delta).toEqual({ pod_spoofed: 1n });
    // POD_B's address, but from A's interface (ifindex 1, not 77)
    const r = run("weft_from_pod", frame(pod(POD_B, parseIpv4("198.18.2.7"))));
    expect([r.verdict, r.delta]).toEqual([TC_ACT_SHOT, { pod_spoofed: 1n }]);
  });

  it("truncated at every length and malformed headers are dropped as malformed, never read past the end", () => {
    const full = frame(pod(POD_A, parseIpv4("198.18.2.7")));
    // BPF_PROG_TEST_RUN builds no IPv4 skb shorter than Ethernet + IPv4 headers; below that the
    // verifier's bounds checks are the guarantee. From there on, cut at every length:
    // the IPv4 total length then exceeds the frame, as ip_rcv would refuse it.
    expect(() => bpf.testRun(bench.progFd("weft_from_pod"), full.subarray(0, 33), skb(1))).toThrow(/EINVAL/);
    for (let len = 34; len < full.length; len++) {
      const r = run("weft_from_pod", full.subarray(0, len));
      expect(r.delta, `length ${len}`).toEqual({ malformed: 1n });
    }
    const bad = [
      (b: Buffer) => (b[14] = 0x44), // IHL 4
      (b: Buffer) => (b[14] = 0x65), // version 6 with the IPv4 EtherType
      (b: Buffer) => b.writeUInt16BE(10, 16), // total length below the header
    ];
    for (const f of bad) {
      const b = Buffer.from(full);
      f(b);
      expect(run("weft_from_pod", b).delta).toEqual({ malformed: 1n });
    }
  });
});

describe("overlay arrivals (handle_overlay via test_overlay: outer source in cb[0], VNI in cb[1])", () => {
  const fromNode2 = (src = parseIpv4("198.18.2.7"), dst = POD_A) =>
    frame(pod(src, dst), { dst: VTEP, src: NODE2.vtepMac });
  const outer = (a: number) => Buffer.from([a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255]).readUInt32LE(0);

  it("from a known node, from inside its subnet, to a local pod: delivered into the pod", () => {
    const r = run("test_overlay", fromNode2(), skb(1, outer(NODE2.underlay), 1));
    expect(r.verdict).toBe(TC_ACT_REDIRECT);
    expect(r.delta).toEqual({ delivered: 1n });
    expect([...r.out.subarray(0, 12)]).toEqual([...POD_A_MAC, ...HOST_MAC]);
  });

  it.each([
    { name: "inner source outside the sender's subnet", pkt: fromNode2(parseIpv4("198.18.3.3")), src: NODE2.underlay, vni: 1, reason: "spoofed" },
    { name: "outer source is no node", pkt: fromNode2(), src: parseIpv4("192.0.2.99"), vni: 1, reason: "unknown_node" },
    { name: "another VNI", pkt: fromNode2(), src: NODE2.underlay, vni: 2, reason: "bad_vni" },
    { name: "inner destination MAC not ours", pkt: frame(pod(parseIpv4("198.18.2.7"), POD_A), { dst: HOST_MAC }), src: NODE2.underlay, vni: 1, reason: "bad_dst_mac" },
    { name: "truncated inner IPv4", pkt: fromNode2().subarray(0, 50), src: NODE2.underlay, vni: 1, reason: "malformed" },
  ] as { name: string; pkt: Buffer; src: number; vni: number; reason: Reason }[])("$name: dropped as $reason", ({ pkt, src, vni, reason }) => {
    const r = run("test_overlay", pkt, skb(1, outer(src), vni));
    expect([r.verdict, r.delta]).toEqual([TC_ACT_SHOT, { [reason]: 1n }]);
  });

  it("for the node itself (not a pod): to the stack", () => {
    const r = run("test_overlay", fromNode2(parseIpv4("198.18.2.7"), parseIpv4("198.18.1.0")), skb(1, outer(NODE2.underlay), 1));
    expect([r.verdict, r.delta]).toEqual([TC_ACT_OK, { passed: 1n }]);
  });

  it("the real program drops what arrives without tunnel metadata", () => {
    expect(run("weft_from_overlay", fromNode2()).delta).toEqual({ no_tunnel: 1n });
  });
});

describe("weft_to_overlay (host packets routed into the device)", () => {
  it("gets the owning node's tunnel key and MACs", () => {
    const r = run("weft_to_overlay", frame(pod(parseIpv4("198.18.1.0"), parseIpv4("198.18.2.7"))));
    expect([r.verdict, r.delta]).toEqual([TC_ACT_OK, { to_overlay: 1n }]);
    expect([...r.out.subarray(0, 12)]).toEqual([...NODE2.vtepMac, ...VTEP]);
  });
  it("no node owns the destination: dropped as no_route", () => {
    expect(run("weft_to_overlay", frame(pod(parseIpv4("198.18.1.0"), parseIpv4("198.18.9.7")))).delta).toEqual({ no_route: 1n });
  });
});
