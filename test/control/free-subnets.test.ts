import { describe, expect, it } from "vitest";
import { freeSubnets } from "../../src/subnet/manager.js";

const p4 = (a: number, b: number, c: number, d: number): bigint => BigInt(((a << 24) | (b << 16) | (c << 8) | d) >>> 0);

describe("free subnets (both families)", () => {
  it("skips taken subnets of the length, and anything a prefix of another length covers or sits inside", () => {
    const min = p4(198, 18, 1, 0);
    const max = p4(198, 18, 9, 0);
    const taken = [
      { addr: p4(198, 18, 1, 0), len: 24 }, // exact
      { addr: p4(198, 18, 2, 0), len: 23 }, // covers .2 and .3
      { addr: p4(198, 18, 5, 128), len: 25 }, // inside .5
      { addr: p4(10, 0, 0, 0), len: 8 }, // elsewhere
    ];
    expect(freeSubnets(min, max, 24, 32, taken, 100).map((a) => Number(a >> 8n) & 255)).toEqual([4, 6, 7, 8, 9]);
    expect(freeSubnets(min, max, 24, 32, taken, 2).map((a) => Number(a >> 8n) & 255)).toEqual([4, 6]);
    expect(freeSubnets(min, max, 24, 32, [{ addr: 0n, len: 0 }], 100)).toEqual([]); // 0.0.0.0/0 covers all
  });

  it("IPv6 /64s, with 20,000 taken, by set lookups", () => {
    const base = 0x20010db80001n << 80n;
    const taken = Array.from({ length: 20_000 }, (_, i) => ({ addr: base + (BigInt(i + 1) << 64n), len: 64 }));
    const free = freeSubnets(base + (1n << 64n), base + (0xffffn << 64n), 64, 128, taken, 3);
    expect(free).toEqual([20_001n, 20_002n, 20_003n].map((k) => base + (k << 64n)));
  });
});
