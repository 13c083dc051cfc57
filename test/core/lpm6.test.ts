import { describe, expect, it } from "vitest";
import { ipv6Bytes, maskOf6, parseCidr6, parseIpv6 } from "../../src/common/ipv6.js";
import { parseCidr, parseIpv4 } from "../../src/common/ipv4.js";
import { CoreError } from "../../src/common/errors.js";
import { WasmCore } from "../../src/dataplane/core/wasm-core.js";
import { RefLpm6 } from "../../src/dataplane/reference/lpm.js";
import { randInt, rng } from "../helpers/packets.js";

const small = { maxPeers: 16, maxRules: 1024, maxRules6: 50_000, slots: 4, maxBatch: 1024 };

/** Known answers: every level edge (16, 24, ..., 128), /0, nesting, and next hops near the limit. */
const routes: [string, number][] = [
  ["::/0", 1],
  ["2001:db8::/32", 2],
  ["2001:db8::/16", 3],
  ["2001:db8:1::/48", 4],
  ["2001:db8:1:2::/64", 5],
  ["2001:db8:1:2::/65", 6],
  ["2001:db8:1:2::1/128", 7],
  ["2001:db8:1:2:8000::/66", 8],
  ["2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128", 9],
  ["2001:db8:1:2:3:4:5:0/120", 10],
  ["2001:db8:1:2:3:4:5:80/121", 11],
  ["2001:db8:1:2:3:4:5:0/127", 0x7fffff],
  ["2001:db8:100::/40", 12],
  ["2001:db8:180::/41", 13],
  ["2001:8000::/17", 14],
];
const cases: [string, number][] = [
  ["2001:4860::1", 3],
  ["2002::", 1],
  ["::", 1],
  ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1],
  ["2001:db8::1", 2],
  ["2001:db8:1::1", 4],
  ["2001:db8:1:2::2", 6],
  ["2001:db8:1:2::1", 7],
  ["2001:db8:1:2:7fff:ffff:ffff:ffff", 6],
  ["2001:db8:1:2:bfff:ffff:ffff:ffff", 8],
  ["2001:db8:1:2:8000::", 8],
  ["2001:db8:1:2:c000::", 5],
  ["2001:db8:1:3::", 4],
  ["2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 9],
  ["2001:db8:ffff:ffff:ffff:ffff:ffff:fffe", 2],
  ["2001:db8:1:2:3:4:5:1", 0x7fffff],
  ["2001:db8:1:2:3:4:5:2", 10],
  ["2001:db8:1:2:3:4:5:81", 11],
  ["2001:db8:1:2:3:4:5:100", 6],
  ["2001:db8:1ff::", 13],
  ["2001:db8:17f::", 12],
  ["2001:db9::", 3],
  ["2001:8000::", 14],
  ["2001:7fff:ffff::", 3],
];

describe("IPv6 LPM known answers", () => {
  const core = WasmCore.create(small);
  const ref = new RefLpm6();
  for (const [p, nh] of routes) {
    const c = parseCidr6(p, { strict: false });
    core.lpm6.insert(c, nh);
    ref.insert(c.addr, c.len, nh);
  }

  it.each(cases)("%s -> %i (WASM and reference)", (addr, nh) => {
    expect(ref.lookup(parseIpv6(addr))).toBe(nh);
    expect(core.lpm6.lookup(parseIpv6(addr))).toBe(nh);
  });

  it("batch lookups of wire-order addresses equal single lookups", () => {
    const bytes = new Uint8Array(cases.length * 16);
    cases.forEach(([a], i) => bytes.set(ipv6Bytes(parseIpv6(a)), i * 16));
    const out = new Int32Array(cases.length);
    core.lpm6.lookupBatch(bytes, out);
    expect([...out]).toEqual(cases.map(([, nh]) => nh));
  });

  it("delete hands the addresses back to the next shorter prefix, at every level", () => {
    const c = WasmCore.create(small);
    for (const [p, nh] of routes) c.lpm6.insert(parseCidr6(p, { strict: false }), nh);
    expect(c.lpm6.delete(parseCidr6("2001:db8:1:2::1/128"))).toBe(true);
    expect(c.lpm6.lookup(parseIpv6("2001:db8:1:2::1"))).toBe(6);
    expect(c.lpm6.delete(parseCidr6("2001:db8:1:2::/65"))).toBe(true);
    expect(c.lpm6.lookup(parseIpv6("2001:db8:1:2::1"))).toBe(5);
    expect(c.lpm6.lookup(parseIpv6("2001:db8:1:2:8000::"))).toBe(8);
    expect(c.lpm6.lookup(parseIpv6("2001:db8:1:2:3:4:5:100"))).toBe(5);
    expect(c.lpm6.delete(parseCidr6("2001:db8::/32"))).toBe(true);
    expect(c.lpm6.lookup(parseIpv6("2001:db8::1"))).toBe(3);
    expect(c.lpm6.lookup(parseIpv6("2001:db8:1:2::1"))).toBe(5);
    expect(c.lpm6.delete(parseCidr6("::/0"))).toBe(true);
    expect(c.lpm6.lookup(parseIpv6("2002::"))).toBe(-1);
    expect(c.lpm6.delete(parseCidr6("::/0"))).toBe(false);
    expect(c.lpm6.size()).toBe(routes.length - 4);
  });

  it("insert of an existing prefix changes its next hop only; host bits are ignored", () => {
    const c = WasmCore.create(small);
    c.lpm6.insert(parseCidr6("2001:db8::/48"), 1);
    c.lpm6.insert(parseCidr6("2001:db8:0:1::/64"), 2);
    c.lpm6.insert({ addr: parseIpv6("2001:db8::77"), len: 48 }, 9);
    expect(c.lpm6.lookup(parseIpv6("2001:db8::1"))).toBe(9);
    expect(c.lpm6.lookup(parseIpv6("2001:db8:0:1::1"))).toBe(2);
    expect(c.lpm6.size()).toBe(2);
    expect(c.lpm6.get(parseCidr6("2001:db8::/48"))).toBe(9);
    expect(c.lpm6.get(parseCidr6("2001:db8::/47"))).toBe(-1);
  });

  it("keeps a group whose entries agree but come from rules deeper than its parent level", () => {
    const c = WasmCore.create(small);
    // Two /57s with one next hop cover a /56 uniformly: deleting one must not take the other.
    c.lpm6.insert(parseCidr6("2001:db8:0:100::/57"), 1);
    c.lpm6.insert(parseCidr6("2001:db8:0:180::/57"), 1);
    c.lpm6.insert(parseCidr6("2001:db8::/32"), 3);
    expect(c.lpm6.delete(parseCidr6("2001:db8:0:100::/57"))).toBe(true);
    expect(c.lpm6.lookup(parseIpv6("2001:db8:0:100::1"))).toBe(3);
    expect(c.lpm6.lookup(parseIpv6("2001:db8:0:180::1"))).toBe(1);
  });

  it("the IPv4 and IPv6 tables share the pool but not their routes, counts or clears", () => {
    const c = WasmCore.create(small);
    c.lpmInsert(parseCidr("198.18.1.0/24"), 4);
    c.lpm6.insert(parseCidr6("2001:db8:1::/64"), 6);
    expect(c.lpmGroups()).toBe(1);
    expect(c.lpm6.groups()).toBeGreaterThan(0);
    c.lpmClear();
    expect(c.lpm6.lookup(parseIpv6("2001:db8:1::1"))).toBe(6);
    expect(c.lookup(parseIpv4("198.18.1.1"))).toBe(-1);
    c.lpmInsert(parseCidr("198.18.1.0/24"), 5);
    c.lpm6.clear();
    expect(c.lookup(parseIpv4("198.18.1.1"))).toBe(5);
    expect(c.lpm6.lookup(parseIpv6("2001:db8:1::1"))).toBe(-1);
    expect(c.lpm6.groups()).toBe(0);
    expect(c.lpm6.memoryBytes()).toBe(65536 * 4);
    expect(c.lpmGroups()).toBe(1);
  });
});

describe("IPv6 LPM bad input", () => {
  it("rejects a length above 128, a next hop above 2^23-1 and a non-128-bit address, leaving the table as it was", () => {
    const c = WasmCore.create(small);
    c.lpm6.insert(parseCidr6("2001:db8::/32"), 1);
    expect(() => c.lpm6.insert({ addr: 0n, len: 129 }, 1)).toThrow(/prefix length 129/);
    expect(() => c.lpm6.insert(parseCidr6("2001:db8::/48"), 1 << 23)).toThrow(/next hop/);
    expect(() => c.lpm6.insert(parseCidr6("2001:db8::/48"), -1)).toThrow(CoreError);
    expect(() => c.lpm6.insert({ addr: 1n << 128n, len: 0 }, 1)).toThrow(/128-bit/);
    expect(() => c.lpm6.insert({ addr: -1n, len: 0 }, 1)).toThrow(/128-bit/);
    expect(() => c.lpm6.lookupBatch(new Uint8Array(15), new Int32Array(1))).toThrow(/16-byte/);
    expect(() => c.lpm6.delete({ addr: 0n, len: -1 })).toThrow(/prefix length -1/);
    expect(c.lpm6.size()).toBe(1);
    expect(c.lpm6.lookup(parseIpv6("2001:db8::9"))).toBe(1);
  });

  it("says the table is full at maxRules6 and keeps what it holds", () => {
    const c = WasmCore.create({ ...small, maxRules6: 2 });
    c.lpm6.insert(parseCidr6("2001:db8:1::/48"), 1);
    c.lpm6.insert(parseCidr6("2001:db8:2::/48"), 2);
    let err: unknown;
    try {
      c.lpm6.insert(parseCidr6("2001:db8:3::/48"), 3);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CoreError);
    expect((err as CoreError).code).toBe("WEFT_CORE_FULL");
    expect((err as CoreError).message).toMatch(/raise maxRules6/);
    c.lpm6.insert(parseCidr6("2001:db8:2::/48"), 7);
    expect([1, 2, 3].map((i) => c.lpm6.lookup(parseIpv6(`2001:db8:${i}::1`)))).toEqual([1, 7, -1]);
  });

  it("rejects bad maxRules6 with a message naming the field", () => {
    expect(() => WasmCore.create({ maxRules6: 0 })).toThrow(/maxRules6/);
  });
});

const rand128 = (r: () => number): bigint => {
  let v = 0n;
  for (let i = 0; i < 4; i++) v = (v << 32n) | BigInt(randInt(r, 0, 0xffffffff));
  return v;
};

/** Random prefixes biased to the hard cases: /0, /128, the level edges 16, 24, ..., 120 and one past, nesting near a few hubs. */
function randomPrefix(r: () => number, hubs: bigint[]): [bigint, number] {
  const edges = [0, 1, 15, 16, 17, 24, 25, 32, 33, 47, 48, 56, 63, 64, 65, 72, 96, 104, 112, 119, 120, 121, 127, 128];
  const len = r() < 0.5 ? (edges[randInt(r, 0, edges.length - 1)] ?? 64) : randInt(r, 0, 128);
  // Most prefixes near a hub, differing in a few bits somewhere, so that they nest and overlap.
  let base = r() < 0.8 ? (hubs[randInt(r, 0, hubs.length - 1)] ?? 0n) : rand128(r);
  const flips = randInt(r, 0, 3);
  for (let i = 0; i < flips; i++) base ^= 1n << BigInt(randInt(r, 0, 127));
  return [base & maskOf6(len), len];
}

function probes(r: () => number, prefixes: [bigint, number][], n: number): bigint[] {
  const out: bigint[] = [];
  const all = (1n << 128n) - 1n;
  for (let i = 0; i < n; i++) {
    const p = prefixes[randInt(r, 0, Math.max(0, prefixes.length - 1))];
    if (p && r() < 0.8) {
      const host = all ^ maskOf6(p[1]);
      const pick = r() < 0.2 ? 0n : r() < 0.25 ? host : rand128(r) & host;
      let a = p[0] | pick;
      if (r() < 0.1) a = (a + (r() < 0.5 ? 1n : all)) & all; // just outside
      out.push(a);
    } else out.push(rand128(r));
  }
  return out;
}

describe("IPv6 LPM equals the reference on random prefix sets", () => {
  it.each(Array.from({ length: 16 }, (_, i) => i + 1))("seed %i", (seed) => {
    const r = rng(seed * 7919);
    const c = WasmCore.create(small);
    const ref = new RefLpm6();
    const hubs = Array.from({ length: 4 }, () => rand128(r));
    const live: [bigint, number][] = [];
    const maxNh = seed % 2 === 0 ? 3 : 0x7fffff;
    for (let round = 0; round < 5; round++) {
      const inserts = randInt(r, 50, 700);
      for (let i = 0; i < inserts; i++) {
        const [a, len] = randomPrefix(r, hubs);
        const nh = randInt(r, 0, maxNh);
        c.lpm6.insert({ addr: a, len }, nh);
        ref.insert(a, len, nh);
        live.push([a, len]);
      }
      const deletes = randInt(r, 0, live.length);
      for (let i = 0; i < deletes; i++) {
        const k = randInt(r, 0, live.length - 1);
        const [a, len] = live[k]!;
        const [da, dl] = r() < 0.1 ? randomPrefix(r, hubs) : [a, len];
        expect(c.lpm6.delete({ addr: da, len: dl })).toBe(ref.delete(da, dl));
        if (da === a && dl === len) live.splice(k, 1);
      }
      expect(c.lpm6.size()).toBe(ref.size);
      const addrs = probes(r, live, 3000);
      const bytes = new Uint8Array(addrs.length * 16);
      addrs.forEach((a, i) => bytes.set(ipv6Bytes(a), i * 16));
      const got = new Int32Array(addrs.length);
      c.lpm6.lookupBatch(bytes, got);
      for (let i = 0; i < addrs.length; i++) {
        const want = ref.lookup(addrs[i]!);
        if (got[i] !== want) throw new Error(`seed ${seed} round ${round}: ${addrs[i]!.toString(16)} -> wasm ${got[i]}, ref ${want}`);
        if (i % 10 === 0) expect(c.lpm6.lookup(addrs[i]!)).toBe(want);
      }
    }
  });

  it("returns every group to the pool once all prefixes are deleted", () => {
    const r = rng(4242);
    const c = WasmCore.create(small);
    const hubs = [parseIpv6("2001:db8::"), parseIpv6("2001:db8:8000::")];
    const ps = new Map<string, [bigint, number]>();
    for (let i = 0; i < 3000; i++) {
      const p = randomPrefix(r, hubs);
      ps.set(`${p[0]}/${p[1]}`, p);
      c.lpm6.insert({ addr: p[0], len: p[1] }, i);
    }
    expect(c.lpm6.groups()).toBeGreaterThan(0);
    const order = [...ps.values()].sort(() => r() - 0.5);
    for (const [a, len] of order) expect(c.lpm6.delete({ addr: a, len })).toBe(true);
    expect(c.lpm6.size()).toBe(0);
    expect(c.lpm6.groups()).toBe(0);
    expect(c.lpm6.memoryBytes()).toBe(65536 * 4);
    expect(c.lpmGroups()).toBe(0);
    expect(c.lpm6.lookup(parseIpv6("2001:db8::1"))).toBe(-1);
  });
});
