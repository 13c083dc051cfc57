import { describe, expect, it } from "vitest";
import {
  contains6, formatCidr6, formatIpv6, ipv6Bytes, ipv6FromBytes, isUnicastIpv6, maskOf6, overlaps6, parseCidr6, parseIpv6,
} from "../../src/common/ipv6.js";

describe("ipv6 text", () => {
  // Each pair: input, Go's net.IP.String() of it (RFC 5952).
  it.each([
    ["2001:db8::1", "2001:db8::1"],
    ["2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    ["::", "::"],
    ["::1", "::1"],
    ["2001:db8:0:1:0:0:0:0", "2001:db8:0:1::"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // first of two equal runs
    ["2001:db8:1:1:1:1:0:1", "2001:db8:1:1:1:1:0:1"], // one zero group is not compressed
    ["2001:db8:1::", "2001:db8:1::"],
    ["fd00::c612:1", "fd00::c612:1"],
    ["::ffff:198.18.0.1", "::ffff:c612:1"],
  ])("%s reads and prints as %s", (input, want) => {
    expect(formatIpv6(parseIpv6(input))).toBe(want);
  });

  it.each(["", ":", ":::", "1::2::3", "2001:db8::1%eth0", "12345::", "g::1", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::8", "::256.1.1.1", "2001:db8:::1"])(
    "refuses %j", (input) => {
      expect(() => parseIpv6(input)).toThrow(/IPv6|too long/);
    });

  it("prints what the WHATWG URL parser prints, for random addresses with zero runs", () => {
    let seed = 12345;
    const rnd = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
    for (let n = 0; n < 2000; n++) {
      const g = Array.from({ length: 8 }, () => (rnd() % 3 === 0 ? 0 : rnd() & 0xffff));
      const text = g.map((x) => x.toString(16)).join(":");
      const v = parseIpv6(text);
      expect(formatIpv6(v)).toBe(new URL(`http://[${text}]/`).hostname.slice(1, -1));
      expect(ipv6FromBytes(ipv6Bytes(v))).toBe(v);
    }
  });
});

describe("ipv6 prefixes", () => {
  it("parses, masks and compares", () => {
    const p = parseCidr6("2001:db8:1::/64");
    expect(formatCidr6(p)).toBe("2001:db8:1::/64");
    expect(contains6(p, parseIpv6("2001:db8:1::ffff"))).toBe(true);
    expect(contains6(p, parseIpv6("2001:db8:2::1"))).toBe(false);
    expect(() => parseCidr6("2001:db8:1::1/64")).toThrow(/host bits.*2001:db8:1::\/64/);
    expect(parseCidr6("2001:db8:1::1/64", { strict: false }).addr).toBe(p.addr);
    expect(() => parseCidr6("2001:db8::/129")).toThrow(/0-128/);
    expect(() => parseCidr6("2001:db8::/064")).toThrow(/0-128/);
    expect(maskOf6(0)).toBe(0n);
    expect(maskOf6(128)).toBe((1n << 128n) - 1n);
    expect(overlaps6(parseCidr6("2001:db8::/32"), p)).toBe(true);
    expect(overlaps6(parseCidr6("2001:db9::/32"), p)).toBe(false);
  });

  it("knows unicast", () => {
    for (const a of ["2001:db8::1", "fd00::1"]) expect(isUnicastIpv6(parseIpv6(a))).toBe(true);
    for (const a of ["::", "::1", "ff02::1", "fe80::1", "::ffff:192.0.2.1"]) expect(isUnicastIpv6(parseIpv6(a))).toBe(false);
  });
});
