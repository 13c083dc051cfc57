import { describe, expect, it } from "vitest";
import { parseCidr, parseIpv4, maskOf } from "../../src/common/ipv4.js";
import { CoreError } from "../../src/common/errors.js";
import { WasmCore } from "../../src/dataplane/core/wasm-core.js";
import { RefLpm } from "../../src/dataplane/reference/lpm.js";
import { randInt, rng } from "../helpers/packets.js";

const small = { maxPeers: 16, maxRules: 200_000, slots: 4, maxBatch: 1024 };

describe("LPM known answers", () => {
  const routes: [string, number][] = [
    ["0.0.0.0/0", 1],
    ["198.18.0.0/15", 2],
    ["198.18.0.0/16", 3],
    ["198.18.7.0/24", 4],
    ["198.18.7.128/25", 5],
    ["198.18.7.200/32", 6],
    ["198.19.255.255/32", 7],
    ["10.0.0.0/8", 8],
  ];
  const cases: [string, number][] = [
    ["1.2.3.4", 1],
    ["198.19.0.1", 2],
    ["198.18.0.1", 3],
    ["198.18.7.1", 4],
    ["198.18.7.129", 5],
    ["198.18.7.200", 6],
    ["198.18.7.201", 5],
    ["198.19.255.255", 7],
    ["198.19.255.254", 2],
    ["10.255.255.255", 8],
    ["11.0.0.0", 1],
  ];
  const core = WasmCore.create(small);
  for (const [p, nh] of routes) core.lpmInsert(parseCidr(p), nh);

  it.each(cases)("%s -> %i", (addr, nh) => {
    expect(core.lookup(parseIpv4(addr))).toBe(nh);
  });

  it("delete hands the addresses back to the next shorter prefix", () => {
    const c = WasmCore.create(small);
    for (const [p, nh] of routes) c.lpmInsert(parseCidr(p), nh);
    expect(c.lpmDelete(parseCidr("198.18.7.128/25"))).toBe(true);
    expect(c.lookup(parseIpv4("198.18.7.129"))).toBe(4);
    expect(c.lookup(parseIpv4("198.18.7.200"))).toBe(6);
    expect(c.lpmDelete(parseCidr("198.18.0.0/16"))).toBe(true);
    expect(c.lookup(parseIpv4("198.18.0.1"))).toBe(2);
    expect(c.lookup(parseIpv4("198.18.7.1"))).toBe(4);
    expect(c.lpmDelete(parseCidr("0.0.0.0/0"))).toBe(true);
    expect(c.lookup(parseIpv4("1.2.3.4"))).toBe(-1);
    expect(c.lpmDelete(parseCidr("0.0.0.0/0"))).toBe(false);
    expect(c.lpmSize()).toBe(routes.length - 3);
  });

  it("insert of an existing prefix changes its next hop only", () => {
    const c = WasmCore.create(small);
    c.lpmInsert(parseCidr("198.18.0.0/16"), 1);
    c.lpmInsert(parseCidr("198.18.1.0/24"), 2);
    c.lpmInsert(parseCidr("198.18.0.0/16"), 9);
    expect(c.lookup(parseIpv4("198.18.0.1"))).toBe(9);
    expect(c.lookup(parseIpv4("198.18.1.1"))).toBe(2);
    expect(c.lpmSize()).toBe(2);
    expect(c.lpmGet(parseCidr("198.18.0.0/16"))).toBe(9);
  });

  it("keeps a group whose entries agree but come from rules deeper than its parent level", () => {
    // Two /25s with one next hop cover a /24 uniformly; their group must not be
    // folded into a /24-level entry, or deleting one /25 later would miss.
    const c = WasmCore.create(small);
    c.lpmInsert(parseCidr("198.18.5.0/25"), 1);
    c.lpmInsert(parseCidr("198.18.5.128/25"), 1);
    c.lpmInsert(parseCidr("198.18.5.0/26"), 2);
    c.lpmInsert(parseCidr("198.18.0.0/17"), 3);
    c.lpmInsert(parseCidr("198.18.128.0/17"), 3);
    c.lpmInsert(parseCidr("198.18.200.0/24"), 4);
    expect(c.lpmDelete(parseCidr("198.18.5.0/26"))).toBe(true);
    expect(c.lpmDelete(parseCidr("198.18.200.0/24"))).toBe(true);
    expect(c.lpmDelete(parseCidr("198.18.5.0/25"))).toBe(true);
    expect(c.lookup(parseIpv4("198.18.5.1"))).toBe(3);
    expect(c.lookup(parseIpv4("198.18.5.129"))).toBe(1);
    expect(c.lpmDelete(parseCidr("198.18.0.0/17"))).toBe(true);
    expect(c.lookup(parseIpv4("198.18.1.1"))).toBe(-1);
    expect(c.lookup(parseIpv4("198.18.130.1"))).toBe(3);
  });

  it("host bits of an inserted prefix are ignored", () => {
    const c = WasmCore.create(small);
    c.lpmInsert({ addr: parseIpv4("198.18.1.77"), len: 24 }, 3);
    expect(c.lpmGet(parseCidr("198.18.1.0/24"))).toBe(3);
    expect(c.lookup(parseIpv4("198.18.1.1"))).toBe(3);
  });
});

describe("LPM bad input", () => {
  it("rejects a length above 32 and a next hop above 2^24-1, leaving the table as it was", () => {
    const c = WasmCore.create(small);
    c.lpmInsert(parseCidr("198.18.0.0/16"), 1);
    expect(() => c.lpmInsert({ addr: 0, len: 33 }, 1)).toThrow(/prefix length 33/);
    expect(() => c.lpmInsert(parseCidr("198.18.0.0/24"), 1 << 24)).toThrow(/next hop/);
    expect(() => c.lpmInsert(parseCidr("198.18.0.0/24"), -1)).toThrow(CoreError);
    expect(c.lpmSize()).toBe(1);
    expect(c.lookup(parseIpv4("198.18.0.9"))).toBe(1);
  });

  it("says the table is full at maxRules and keeps what it holds", () => {
    const c = WasmCore.create({ ...small, maxRules: 3 });
    c.lpmInsert(parseCidr("198.18.1.0/24"), 1);
    c.lpmInsert(parseCidr("198.18.2.0/24"), 2);
    c.lpmInsert(parseCidr("198.18.3.0/24"), 3);
    let err: unknown;
    try {
      c.lpmInsert(parseCidr("198.18.4.0/24"), 4);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CoreError);
    expect((err as CoreError).code).toBe("WEFT_CORE_FULL");
    expect((err as CoreError).message).toMatch(/raise maxRules/);
    // Updating an existing prefix still works at the limit.
    c.lpmInsert(parseCidr("198.18.3.0/24"), 7);
    expect([1, 2, 3].map((i) => c.lookup(parseIpv4(`198.18.${i}.1`)))).toEqual([1, 2, 7]);
    expect(c.lookup(parseIpv4("198.18.4.1"))).toBe(-1);
  });

  it("rejects bad limits with a message naming the field", () => {
    expect(() => WasmCore.create({ slotSize: 100 })).toThrow(/slotSize: must be a multiple of 64/);
    expect(() => WasmCore.create({ headroom: 8 })).toThrow(/headroom/);
    expect(() => WasmCore.create({ maxRules: 0 })).toThrow(/maxRules/);
  });
});

/** Random prefix sets biased toward the hard cases: /0, /32, the 16/24 level edges, overlap. */
function randomPrefix(r: () => number, hubs: number[]): [number, number] {
  const lens = [0, 1, 8, 15, 16, 17, 23, 24, 25, 31, 32];
  const len = r() < 0.5 ? (lens[randInt(r, 0, lens.length - 1)] ?? 24) : randInt(r, 0, 32);
  // Most prefixes near a few hubs so that they nest and overlap.
  // Spans from one /24 to one /16, so that some /24s fill up with many prefixes.
  const span = [0xff, 0x3ff, 0xffff][randInt(r, 0, 2)] ?? 0xffff;
  const base = r() < 0.8 ? (hubs[randInt(r, 0, hubs.length - 1)] ?? 0) ^ randInt(r, 0, span) : randInt(r, 0, 0xffffffff);
  return [(base & maskOf(len)) >>> 0, len];
}

function probes(r: () => number, prefixes: [number, number][], n: number): Uint32Array {
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const p = prefixes[randInt(r, 0, Math.max(0, prefixes.length - 1))];
    if (p && r() < 0.7) {
      const host = ~maskOf(p[1]) >>> 0;
      const pick = r() < 0.2 ? 0 : r() < 0.25 ? host : randInt(r, 0, host);
      out[i] = (p[0] | pick) >>> 0;
      if (r() < 0.1) out[i] = (out[i]! + (r() < 0.5 ? 1 : -1)) >>> 0; // just outside
    } else out[i] = randInt(r, 0, 0xffffffff);
  }
  return out;
}

describe("LPM equals the reference on random prefix sets", () => {
  it.each(Array.from({ length: 24 }, (_, i) => i + 1))("seed %i", (seed) => {
    const r = rng(seed);
    const c = WasmCore.create(small);
    const ref = new RefLpm();
    const hubs = Array.from({ length: 4 }, () => randInt(r, 0, 0xffffffff));
    const live: [number, number][] = [];
    const rounds = 6;
    // Half the seeds use few next hops, so neighbouring prefixes often share one
    // (the case where folding a group back must still respect depths).
    const maxNh = seed % 2 === 0 ? 3 : 0xffffff;
    for (let round = 0; round < rounds; round++) {
      const inserts = randInt(r, 50, 600);
      for (let i = 0; i < inserts; i++) {
        const [a, len] = randomPrefix(r, hubs);
        const nh = randInt(r, 0, maxNh);
        c.lpmInsert({ addr: a, len }, nh);
        ref.insert(a, len, nh);
        live.push([a, len]);
      }
      const deletes = randInt(r, 0, live.length);
      for (let i = 0; i < deletes; i++) {
        const k = randInt(r, 0, live.length - 1);
        const [a, len] = live[k]!;
        // Sometimes delete something never inserted: both must say false.
        const [da, dl] = r() < 0.1 ? randomPrefix(r, hubs) : [a, len];
        expect(c.lpmDelete({ addr: da, len: dl })).toBe(ref.delete(da, dl));
        if (da === a && dl === len) live.splice(k, 1);
      }
      expect(c.lpmSize()).toBe(ref.size);
      const addrs = probes(r, live, 4000);
      const got = new Int32Array(addrs.length);
      c.lookupBatch(addrs, got);
      for (let i = 0; i < addrs.length; i++) {
        if (got[i] !== ref.lookup(addrs[i]!)) {
          throw new Error(`seed ${seed} round ${round}: ${addrs[i]} -> wasm ${got[i]}, ref ${ref.lookup(addrs[i]!)}`);
        }
        expect(c.lookup(addrs[i]!)).toBe(got[i]);
      }
    }
  });

  it("returns every group to the pool once all prefixes are deleted", () => {
    const r = rng(99);
    const c = WasmCore.create(small);
    const hubs = [parseIpv4("198.18.0.0"), parseIpv4("192.0.2.0")];
    const ps = new Map<string, [number, number]>();
    for (let i = 0; i < 3000; i++) {
      const p = randomPrefix(r, hubs);
      ps.set(p.join("/"), p);
      c.lpmInsert({ addr: p[0], len: p[1] }, i);
    }
    expect(c.lpmGroups()).toBeGreaterThan(0);
    const order = [...ps.values()].sort(() => r() - 0.5);
    for (const [a, len] of order) expect(c.lpmDelete({ addr: a, len })).toBe(true);
    expect(c.lpmSize()).toBe(0);
    expect(c.lpmGroups()).toBe(0);
    expect(c.lpmMemoryBytes()).toBe(65536 * 4);
    expect(c.lookup(parseIpv4("198.18.0.1"))).toBe(-1);
  });
});
