import { describe, expect, it } from "vitest";
import { WasmCore } from "../../src/dataplane/core/wasm-core.js";
import { csumReplace16, csumReplace32, inetChecksum, sum16 } from "../../src/dataplane/reference/checksum.js";
import { flowHash, flowSport, jhash3 } from "../../src/dataplane/reference/flow.js";
import { randBytes, randInt, rng } from "../helpers/packets.js";

const core = WasmCore.create({ slots: 2, slotSize: 4096, maxPeers: 4, maxRules: 16 });
const hex = (s: string): Uint8Array => Uint8Array.from(s.replace(/\s/g, "").match(/../g) ?? [], (h) => parseInt(h, 16));

describe("Internet checksum", () => {
  // RFC 1071 section 3's worked example, and a well-known IPv4 header whose checksum field is b861.
  const rfc1071 = hex("0001 f203 f4f5 f6f7");
  const ipHdr = hex("4500 0073 0000 4000 4011 0000 c0a8 0001 c0a8 00c7");

  it.each([
    ["RFC 1071 example", rfc1071, 0xddf2],
    ["empty", new Uint8Array(0), 0],
    ["one odd byte", hex("ab"), 0xab00],
    ["carry wraps", hex("ffff ffff 0001"), 0x0001],
  ])("%s: known sum, both sides", (_name, bytes, want) => {
    expect(core.sum16(bytes)).toBe(want);
    expect(sum16(bytes, 0, bytes.length)).toBe(want);
  });

  it("an IPv4 header's checksum reads back as b861 and verifies to 0xffff", () => {
    expect(inetChecksum(ipHdr)).toBe(0xb861);
    expect((~core.sum16(ipHdr)) & 0xffff).toBe(0xb861);
    const filled = ipHdr.slice();
    filled[10] = 0xb8;
    filled[11] = 0x61;
    expect(core.sum16(filled)).toBe(0xffff);
  });

  it("equals the reference at every length 0..300 and at random lengths to 4000, with an initial sum", () => {
    const r = rng(7);
    const lens = [...Array.from({ length: 301 }, (_, i) => i), ...Array.from({ length: 200 }, () => randInt(r, 0, 4000))];
    for (const len of lens) {
      const b = randBytes(r, len);
      const init = randInt(r, 0, 0x3ffff);
      expect(core.sum16(b, init)).toBe(sum16(b, 0, len, init));
    }
  });

  it("equals the reference past the SIMD lanes' emptying point (256 KiB), with every word at its maximum", () => {
    const big = WasmCore.create({ slots: 1, slotSize: 600_000, maxPeers: 4, maxRules: 16 });
    const r = rng(9);
    for (const b of [new Uint8Array(300_000).fill(0xff), randBytes(r, 524_321), new Uint8Array(262_176).fill(0xff)]) {
      expect(big.sum16(b, 0x1234)).toBe(sum16(b, 0, b.length, 0x1234));
    }
  });

  it("incremental update (RFC 1624) equals recomputing, for 16- and 32-bit fields", () => {
    const r = rng(8);
    for (let i = 0; i < 2000; i++) {
      const b = randBytes(r, 20);
      b[10] = 0;
      b[11] = 0;
      const check = inetChecksum(b);
      const at = randInt(r, 0, 3) * 4; // a 32-bit field not overlapping the checksum at 10
      const field = at === 8 ? 12 : at;
      const dv = new DataView(b.buffer);
      const old32 = dv.getUint32(field);
      const new32 = r() < 0.05 ? old32 : randInt(r, 0, 0xffffffff);
      const old16 = dv.getUint16(field);
      // 32-bit change
      dv.setUint32(field, new32);
      const want32 = inetChecksum(b);
      expect(core.csumReplace32(check, old32, new32)).toBe(want32);
      expect(csumReplace32(check, old32, new32)).toBe(want32);
      // 16-bit change from the original
      dv.setUint32(field, old32);
      const new16 = randInt(r, 0, 0xffff);
      dv.setUint16(field, new16);
      const want16 = inetChecksum(b);
      expect(core.csumReplace16(check, old16, new16)).toBe(want16);
      expect(csumReplace16(check, old16, new16)).toBe(want16);
    }
  });
});

describe("flow hash and UDP source port", () => {
  // Computed by a C transcription of the kernel's jhash_3words (include/linux/jhash.h).
  const vectors: [number, number, number, number, number][] = [
    [0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x1b68e557],
    [0x00000001, 0x00000002, 0x00000003, 0x00000000, 0xa46158f5],
    [0xc6120105, 0xc6120207, 0x04d20050, 0x00000000, 0xbc1dae2e],
    [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xc343af0b],
    [0xc0000201, 0xc6330001, 0x1f90d431, 0x12345678, 0x333330ff],
  ];
  it.each(vectors)("jhash_3words(%i, %i, %i, %i) = %i on both sides", (a, b, c, iv, want) => {
    expect(core.jhash3(a, b, c, iv)).toBe(want);
    expect(jhash3(a, b, c, iv)).toBe(want);
  });

  it("is the same in both directions of a flow, and equal on both sides", () => {
    const r = rng(9);
    for (let i = 0; i < 5000; i++) {
      const s = randInt(r, 0, 0xffffffff), d = randInt(r, 0, 0xffffffff);
      const sp = randInt(r, 0, 0xffff), dp = randInt(r, 0, 0xffff);
      const proto = [1, 6, 17, 132][i % 4] ?? 6;
      const seed = randInt(r, 0, 0xffffffff);
      const fwd = flowHash(s, d, ((sp << 16) | dp) >>> 0, proto, seed);
      expect(flowHash(d, s, ((dp << 16) | sp) >>> 0, proto, seed)).toBe(fwd);
      expect(core.flowHash(s, d, ((sp << 16) | dp) >>> 0, proto, seed)).toBe(fwd);
      expect(fwd).not.toBe(0);
      const port = flowSport(fwd, 32768, 60999);
      expect(core.flowSport(fwd, 32768, 60999)).toBe(port);
      expect(port).toBeGreaterThanOrEqual(32768);
      expect(port).toBeLessThanOrEqual(60999);
    }
  });

  it("spreads 20k flows over the port range like a uniform draw", () => {
    const r = rng(10);
    const buckets = new Array<number>(64).fill(0);
    const n = 20000;
    for (let i = 0; i < n; i++) {
      const h = core.flowHash(0xc6120105, 0xc6120207, (randInt(r, 1024, 65535) << 16) | 80, 6, 0);
      const port = core.flowSport(h, 32768, 60999);
      buckets[Math.floor(((port - 32768) * 64) / (60999 - 32768 + 1))]! += 1;
    }
    // Chi-square with 63 degrees of freedom: 99.9th percentile is about 103.
    const e = n / 64;
    const chi = buckets.reduce((s, o) => s + ((o - e) ** 2) / e, 0);
    expect(chi).toBeLessThan(103);
    expect(Math.min(...buckets)).toBeGreaterThan(0);
  });
});
