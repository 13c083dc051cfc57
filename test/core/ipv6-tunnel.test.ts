import { describe, expect, it } from "vitest";
import * as abi from "../../asm/abi.js";
import { parseIpv4 } from "../../src/common/ipv4.js";
import { parseIpv6 } from "../../src/common/ipv6.js";
import { resultName, type ResultName } from "../../src/dataplane/results.js";
import type { WasmCore } from "../../src/dataplane/core/wasm-core.js";
import type { TunnelConfig } from "../../src/dataplane/core/types.js";
import { icmpEcho, ipv4, randBytes, randInt, rng, udp } from "../helpers/packets.js";
import { NODES6, core6As, icmp6Echo, ipv6, outerUdp6Valid, ref6Mirror } from "./v6-nodes.js";

const A = 0, B = 1, C = 2;
const pod6A = parseIpv6("2001:db8:1::5");
const pod6B = parseIpv6("2001:db8:2::7");
const pod6C = parseIpv6("2001:db8:3::9");
const podA = parseIpv4("198.18.1.5");
const podB = parseIpv4("198.18.2.7");

const inner6AB = (tc = 0, n = 56): Uint8Array => icmp6Echo(pod6A, pod6B, 7, 1, new Uint8Array(n).fill(0x5a), tc);
const inner4AB = (): Uint8Array => ipv4({ src: podA, dst: podB, proto: 1, tos: 0x02, payload: icmpEcho(7, 1, new Uint8Array(56)) });

function encapOne(core: WasmCore, inner: Uint8Array, mode: number = abi.ENCAP_MODE_PAYLOAD): { res: ResultName; out: Uint8Array; d: ReturnType<WasmCore["desc"]> } {
  core.setDesc(0, core.writeSlot(0, inner), inner.length);
  core.encap(1, mode);
  const d = core.desc(0);
  return { res: resultName(d.res), out: core.bytes().slice(d.off, d.off + d.len), d };
}

describe("encap of IPv6 and over IPv6", () => {
  it("inner IPv6 is routed by the IPv6 table and framed with EtherType 0x86DD (IPv4 underlay)", () => {
    const a = core6As(A);
    const { res, out, d } = encapOne(a, inner6AB());
    expect(res).toBe("ok");
    expect(a.desc(0).res).toBe(B);
    expect(d.addr).toBe(NODES6[B]!.underlay);
    expect(d.len).toBe(inner6AB().length + 22);
    expect([...out.subarray(8, 14)]).toEqual([...NODES6[B]!.vtepMac]);
    expect((out[20]! << 8) | out[21]!).toBe(0x86dd);
    expect(out.subarray(22)).toEqual(inner6AB());
    // Pod C's address goes to C; an address in no subnet is no_route; A's own is local.
    expect(encapOne(a, icmp6Echo(pod6A, pod6C, 1, 1, new Uint8Array(8))).d.res).toBe(C);
    expect(encapOne(a, icmp6Echo(pod6A, parseIpv6("2001:db8:9::1"), 1, 1, new Uint8Array(8))).res).toBe("no_route");
    expect(encapOne(a, icmp6Echo(pod6B, pod6A, 1, 1, new Uint8Array(8))).res).toBe("local");
  });

  it("over IPv6: outer IPv6 + UDP with a valid, non-zero checksum, hop limit and flow label, for inner IPv4 and IPv6", () => {
    for (const flowLabel of [false, true]) {
      const a = core6As(A, { outer6: true, hopLimit: 33, flowLabel });
      for (const inner of [inner6AB(0x01), inner4AB()]) {
        const { res, out, d } = encapOne(a, inner, abi.ENCAP_MODE_FRAME);
        expect(res).toBe("ok");
        const v = new DataView(out.buffer);
        expect(out[0]! >> 4).toBe(6);
        expect(v.getUint16(4)).toBe(out.length - 40);
        expect(out[6]).toBe(17);
        expect(out[7]).toBe(33);
        expect(out.subarray(8, 24)).toEqual(bytes16(NODES6[A]!.underlay6));
        expect(out.subarray(24, 40)).toEqual(bytes16(NODES6[B]!.underlay6));
        expect(v.getUint16(40)).toBe(d.sport);
        expect(v.getUint16(42)).toBe(8472);
        expect(outerUdp6Valid(out)).toBe(true);
        const label = v.getUint32(0) & 0xfffff;
        if (flowLabel) expect(label).not.toBe(0);
        else expect(label).toBe(0);
        expect(d.addr).toBe(0); // over IPv6 the caller sends to peerUnderlay6(res)
        expect(a.peerUnderlay6(a.desc(0).res)).toBe(NODES6[B]!.underlay6);
        out[50] = out[50]! ^ 1; // the check can fail
        expect(outerUdp6Valid(out)).toBe(false);
      }
    }
  });

  it("over IPv6, a peer without an IPv6 underlay address is no_route; frame mode needs 70 bytes of headroom", () => {
    const a = core6As(A, { outer6: true });
    a.setPeer(B, { ...NODES6[B]!, underlay6: undefined });
    expect(encapOne(a, inner6AB()).res).toBe("no_route");
    expect(a.counters(abi.DIR_ENCAP).no_route).toBe(1n);
    const small = core6As(A, { outer6: true }, { headroom: 64 });
    expect(encapOne(small, inner6AB(), abi.ENCAP_MODE_FRAME).res).toBe("bad_desc");
    expect(encapOne(small, inner6AB(), abi.ENCAP_MODE_PAYLOAD).res).toBe("ok");
  });

  it("refuses broken inner IPv6 with the reason, leaving the packet alone", () => {
    const good = inner6AB();
    const cases: [string, Uint8Array, ResultName][] = [
      ["39 bytes", good.subarray(0, 39), "truncated"],
      ["payload length beyond the packet", (() => { const b = good.slice(); b[5] = b[5]! + 1; return b; })(), "malformed"],
      ["payload length 65535", (() => { const b = good.slice(); b[4] = 0xff; b[5] = 0xff; return b; })(), "malformed"],
    ];
    for (const [what, bytes, want] of cases) {
      const a = core6As(A);
      const off = a.writeSlot(0, bytes);
      a.setDesc(0, off, bytes.length);
      a.encap(1);
      expect(resultName(a.desc(0).res), what).toBe(want);
      expect(a.bytes().slice(off, off + bytes.length), what).toEqual(bytes);
    }
    expect(() => core6As(A, { outer6: true, localIp6: undefined })).toThrow(/localIp6/);
    expect(() => core6As(A, { hopLimit: 0 })).toThrow(/hop limit/);
  });
});

function bytes16(a: bigint): Uint8Array {
  const b = new Uint8Array(16);
  for (let i = 0; i < 16; i++) b[i] = Number((a >> BigInt(8 * (15 - i))) & 0xffn);
  return b;
}

/** A random inner packet A sends: IPv4 or IPv6, to B, C, A itself or nowhere, sometimes broken. */
function randomInner(r: () => number): Uint8Array {
  const v6 = r() < 0.6;
  const to = randInt(r, 0, 3);
  const data = randBytes(r, randInt(r, 0, 300));
  let p: Uint8Array;
  if (v6) {
    const dst = to === 3 ? parseIpv6("2001:db8:77::1") : parseIpv6(`2001:db8:${to + 1}::${randInt(r, 1, 0xffff).toString(16)}`);
    const nh = [6, 17, 58, 0, 132][randInt(r, 0, 4)]!;
    p = ipv6({ src: pod6A, dst, nh, payload: nh === 17 ? udp(randInt(r, 1, 65535), 4789, data) : data, tc: randInt(r, 0, 255), label: randInt(r, 0, 0xfffff) });
  } else {
    const dst = to === 3 ? parseIpv4("198.19.77.1") : parseIpv4(`198.18.${to + 1}.${randInt(r, 1, 254)}`);
    p = ipv4({ src: podA, dst, proto: 17, tos: randInt(r, 0, 255), payload: udp(randInt(r, 1, 65535), 53, data) });
  }
  const k = r();
  if (k < 0.1) return p.subarray(0, randInt(r, 0, p.length));
  if (k < 0.2) {
    const b = p.slice();
    b[randInt(r, 0, Math.min(b.length - 1, 45))] = randInt(r, 0, 255);
    return b;
  }
  return p;
}

/** Runs encap (or decap/decap6) on the core and the reference over the same memory; every byte must agree. */
function sameAsReference(core: WasmCore, cfg: Partial<TunnelConfig>, self: number, n: number, run: (c: WasmCore) => void, runRef: (r: ReturnType<typeof ref6Mirror>) => void): void {
  const ref = ref6Mirror(core, self, cfg);
  run(core);
  runRef(ref);
  const got = core.bytes();
  const cmp = (what: string, from: number, len: number): void => {
    for (let i = from; i < from + len; i++) {
      if (got[i] !== ref.mem[i]) throw new Error(`${what}: byte ${i - from} differs: wasm ${got[i]}, reference ${ref.mem[i]}`);
    }
  };
  cmp("descriptors", core.descBase, n * abi.DESC_SIZE);
  cmp("packets", core.pktBase, core.pktSize);
}

describe("dual-stack underlay (split6): each inner family over its own underlay", () => {
  it("inner IPv4 goes to the IPv4 underlay in an outer IPv4 frame, inner IPv6 to the IPv6 underlay in an outer IPv6 frame", () => {
    const a = core6As(A, { split6: true, udpChecksum: true });
    const v4 = encapOne(a, inner4AB(), abi.ENCAP_MODE_FRAME);
    expect(v4.res).toBe("ok");
    expect(v4.d.addr).toBe(NODES6[B]!.underlay);
    expect(v4.out[0]! >> 4).toBe(4);
    const v6 = encapOne(a, inner6AB(), abi.ENCAP_MODE_FRAME);
    expect(v6.res).toBe("ok");
    expect(v6.d.addr).toBe(0);
    expect(v6.out[0]! >> 4).toBe(6);
    expect(outerUdp6Valid(v6.out)).toBe(true);
    expect(() => core6As(A, { split6: true, outer6: true })).toThrow(/exclude each other/);
  });

  it("IPv6 frames to a node with its own IPv6 VTEP MAC carry that MAC; IPv4 frames its IPv4 one", () => {
    const a = core6As(A, { split6: true });
    const to6 = encapOne(a, icmp6Echo(pod6A, pod6C, 1, 1, new Uint8Array(8)));
    expect([...to6.out.subarray(8, 14)]).toEqual([...NODES6[C]!.vtepMac6!]);
    const to4 = encapOne(a, ipv4({ src: podA, dst: parseIpv4("198.18.3.3"), proto: 1, payload: icmpEcho(1, 1, new Uint8Array(8)) }));
    expect([...to4.out.subarray(8, 14)]).toEqual([...NODES6[C]!.vtepMac]);
  });
});

describe("IPv6 encap and decap equal the reference", () => {
  const configs: [string, Partial<TunnelConfig>, number][] = [
    ["IPv4 underlay, payload", {}, abi.ENCAP_MODE_PAYLOAD],
    ["IPv4 underlay, frame, UDP checksum", { udpChecksum: true }, abi.ENCAP_MODE_FRAME],
    ["IPv6 underlay, payload", { outer6: true }, abi.ENCAP_MODE_PAYLOAD],
    ["IPv6 underlay, frame", { outer6: true, hopLimit: 7 }, abi.ENCAP_MODE_FRAME],
    ["IPv6 underlay, frame, flow label", { outer6: true, flowLabel: true, hashSeed: 99 }, abi.ENCAP_MODE_FRAME],
    ["dual-stack underlay, payload", { split6: true }, abi.ENCAP_MODE_PAYLOAD],
    ["dual-stack underlay, frame", { split6: true, udpChecksum: true }, abi.ENCAP_MODE_FRAME],
  ];
  it.each(configs)("encap, %s", (_name, cfg, mode) => {
    let taken = 0, v6taken = 0;
    for (let seed = 1; seed <= 20; seed++) {
      const r = rng(seed);
      const a = core6As(A, cfg);
      for (let i = 0; i < 64; i++) {
        const p = randomInner(r);
        a.setDesc(i, a.writeSlot(i, p), p.length);
      }
      sameAsReference(a, cfg, A, 64, (c) => c.encap(64, mode), (ref) => ref.encapBatch(64, mode));
      for (let i = 0; i < 64; i++) {
        const d = a.desc(i);
        if (d.res < 0) continue;
        taken++;
        const outer6 = cfg.outer6 === true || (cfg.split6 === true && d.addr === 0);
        const etAt = d.off + (mode === abi.ENCAP_MODE_FRAME ? (outer6 ? 68 : 48) : 20);
        if (((a.bytes()[etAt]! << 8) | a.bytes()[etAt + 1]!) === 0x86dd) v6taken++;
      }
    }
    // Both families are carried, and the refusals are a minority: the comparison is not of empty batches.
    expect(taken).toBeGreaterThan(20 * 64 * 0.4);
    expect(taken).toBeLessThan(20 * 64);
    expect(v6taken).toBeGreaterThan(taken * 0.3);
  });

  it.each([false, true])("decap (over IPv6: %s) of A's payloads, some corrupted, some from strangers", (over6) => {
    for (let seed = 1; seed <= 20; seed++) {
      const r = rng(seed + 100);
      const a = core6As(A, { outer6: over6 });
      const b = core6As(B, { outer6: over6 });
      const descs: { bytes: Uint8Array; from: number; from6: bigint; tos: number }[] = [];
      for (let i = 0; i < 64; i++) {
        const inner = r() < 0.5 ? icmp6Echo(r() < 0.9 ? pod6A : pod6C, pod6B, i, seed, randBytes(r, randInt(r, 0, 200)), randInt(r, 0, 255)) : inner4AB();
        const { res, out } = encapOne(a, inner);
        if (res !== "ok") throw new Error(`encap: ${res}`);
        const bytes = out.slice();
        if (r() < 0.2) bytes[randInt(r, 0, Math.min(bytes.length - 1, 70))] = randInt(r, 0, 255);
        const cut = r() < 0.1 ? bytes.subarray(0, randInt(r, 0, bytes.length)) : bytes;
        const stranger = r() < 0.1;
        descs.push({ bytes: cut, from: stranger ? parseIpv4("192.0.2.99") : NODES6[A]!.underlay, from6: stranger ? parseIpv6("2001:db8:ff::99") : NODES6[A]!.underlay6, tos: randInt(r, 0, 3) });
      }
      descs.forEach((x, i) => {
        b.setDesc(i, b.writeSlot(i, x.bytes), x.bytes.length, x.from, x.tos);
        b.setSource6(i, x.from6);
      });
      sameAsReference(b, { outer6: over6 }, B, 64, (c) => (over6 ? c.decap6(64) : c.decap(64)), (ref) => (over6 ? ref.decap6Batch(64) : ref.decapBatch(64)));
    }
  });
});

describe("decap of inner IPv6", () => {
  function payloadFromA(inner: Uint8Array): Uint8Array {
    const a = core6As(A);
    return encapOne(a, inner).out;
  }
  function decap6One(core: WasmCore, payload: Uint8Array, from6: bigint, tos = 0): { res: ResultName; ip: Uint8Array } {
    const off = core.writeSlot(0, payload);
    core.setDesc(0, off, payload.length, 0, tos);
    core.setSource6(0, from6);
    core.decap6(1);
    const d = core.desc(0);
    return { res: resultName(d.res), ip: core.bytes().slice(d.off, d.off + d.len) };
  }

  it("round trip A -> B over IPv6 gives back the inner packet; over IPv4 too", () => {
    const inner = inner6AB();
    const b = core6As(B, { outer6: true });
    const got = decap6One(b, payloadFromA(inner), NODES6[A]!.underlay6);
    expect(got.res).toBe("ok");
    expect(b.desc(0).res).toBe(A);
    expect(got.ip).toEqual(inner);
    const b4 = core6As(B);
    const p = payloadFromA(inner);
    b4.setDesc(0, b4.writeSlot(0, p), p.length, NODES6[A]!.underlay);
    expect(b4.decap(1)).toBe(1);
    expect(b4.findPeer6(NODES6[C]!.underlay6)).toBe(C);
  });

  it.each([
    ["source outside A's IPv6 subnet", () => payloadFromA(icmp6Echo(pod6C, pod6B, 1, 1, new Uint8Array(8))), NODES6[A]!.underlay6, 0, "spoofed"],
    ["C sends A's pod's packet", () => payloadFromA(inner6AB()), NODES6[C]!.underlay6, 0, "spoofed"],
    ["a stranger's IPv6 underlay", () => payloadFromA(inner6AB()), parseIpv6("2001:db8:ff::99"), 0, "unknown_node"],
    ["A's IPv4 underlay as IPv6 (::ffff:192.0.2.1)", () => payloadFromA(inner6AB()), parseIpv6("::ffff:192.0.2.1"), 0, "unknown_node"],
    ["inner cut to 39 bytes", () => payloadFromA(inner6AB()).subarray(0, 22 + 39), NODES6[A]!.underlay6, 0, "truncated"],
    ["inner payload length beyond the datagram", () => payloadFromA(inner6AB()).subarray(0, 22 + 60), NODES6[A]!.underlay6, 0, "malformed"],
    ["0x86DD EtherType carrying IPv4", () => { const p = payloadFromA(inner4AB()); p[20] = 0x86; p[21] = 0xdd; return p; }, NODES6[A]!.underlay6, 0, "not_ipv4"],
    ["outer CE on a not-ECT inner packet", () => payloadFromA(inner6AB(0)), NODES6[A]!.underlay6, 3, "ecn"],
  ] as const)("%s -> %s", (_what, make, from6, tos, want) => {
    const b = core6As(B, { outer6: true });
    const bytes = make();
    const off = b.writeSlot(0, bytes);
    expect(decap6One(b, bytes, from6, tos).res).toBe(want);
    expect(b.counters(abi.DIR_DECAP)[want]).toBe(1n);
    expect(b.bytes().slice(off, off + bytes.length)).toEqual(bytes);
  });

  it("a peer without an IPv6 subnet may send no IPv6; outer CE marks an ECT inner packet CE", () => {
    const b = core6As(B, { outer6: true });
    b.setPeer(A, { ...NODES6[A]!, subnet6: undefined });
    expect(decap6One(b, payloadFromA(inner6AB()), NODES6[A]!.underlay6).res).toBe("spoofed");
    const b2 = core6As(B, { outer6: true });
    const got = decap6One(b2, payloadFromA(inner6AB(0x02)), NODES6[A]!.underlay6, 3);
    expect(got.res).toBe("ok");
    expect((got.ip[1]! >> 4) & 3).toBe(3);
  });

  it("on an IPv6-only network peers have no IPv4 underlay (0): two such peers do not collide; 0 without an IPv6 one is refused", () => {
    const b = core6As(B, { outer6: true });
    b.setPeer(A, { ...NODES6[A]!, underlay: 0 });
    b.setPeer(C, { ...NODES6[C]!, underlay: 0 });
    expect(b.findPeer(0)).toBe(-1);
    expect(b.findPeer6(NODES6[C]!.underlay6)).toBe(C);
    expect(decap6One(b, payloadFromA(inner6AB()), NODES6[A]!.underlay6).res).toBe("ok");
    expect(() => b.setPeer(A, { ...NODES6[A]!, underlay: 0, underlay6: undefined })).toThrow(/non-zero underlay/);
    b.clearPeer(C);
    expect(b.findPeer6(NODES6[C]!.underlay6)).toBe(-1);
  });

  it("clearing a peer forgets its IPv6 underlay; a second peer cannot take it", () => {
    const b = core6As(B, { outer6: true });
    expect(() => b.setPeer(C, { ...NODES6[C]!, underlay6: NODES6[A]!.underlay6 })).toThrow(/IPv6 underlay/);
    b.clearPeer(A);
    expect(b.findPeer6(NODES6[A]!.underlay6)).toBe(-1);
    expect(decap6One(b, payloadFromA(inner6AB()), NODES6[A]!.underlay6).res).toBe("unknown_node");
  });
});
