import { describe, expect, it } from "vitest";
import { forwardingProblems, requireFamilies } from "../../src/agent/iface.js";
import { explainBreaker } from "../../src/agent/waits.js";
import type { ExternalInterface } from "../../src/backend/types.js";
import { parseIpv6 } from "../../src/common/ipv6.js";

const iface = (o: Partial<ExternalInterface>): ExternalInterface => ({ name: "eth0", index: 2, addr: 0, prefixLen: 0, publicIp: 0, mtu: 1500, ...o });

describe("what the network needs of the node", () => {
  it.each([
    [{ enableIpv4: true }, iface({}), /runs IPv4 but interface eth0 has no IPv4 address/],
    [{ enableIpv4: false, ipv6: {} }, iface({}), /runs IPv6.*has no global IPv6 address/],
    [{ enableIpv4: true, ipv6: {} }, iface({ publicIp: 0xc0000201 }), /runs IPv6/],
  ])("refuses %j on an interface that lacks a family", (cfg, i, msg) => {
    expect(() => requireFamilies(i, cfg)).toThrow(msg);
  });

  it("accepts an interface with what the network runs", () => {
    expect(() => requireFamilies(iface({ addr6: parseIpv6("2001:db8::1"), publicIpv6: parseIpv6("2001:db8::1") }), { enableIpv4: false, ipv6: {} })).not.toThrow();
    expect(() => requireFamilies(iface({ publicIp: 0xc0000201 }), { enableIpv4: true })).not.toThrow();
  });

  it("names forwarding that is off, per family the network runs, with the fix", () => {
    const sysctl = (v4: string, v6: string) => (p: string): string => (p.includes("ipv6") ? v6 : v4);
    expect(forwardingProblems({ enableIpv4: true, ipv6: {} }, sysctl("0\n", "0\n")).map((w) => w.fix)).toEqual(["sysctl -w net.ipv4.ip_forward=1", "sysctl -w net.ipv6.conf.all.forwarding=1"]);
    expect(forwardingProblems({ enableIpv4: true }, sysctl("1\n", "0\n"))).toEqual([]);
    expect(forwardingProblems({ enableIpv4: false, ipv6: {} }, sysctl("0\n", "1\n"))).toEqual([]);
    expect(forwardingProblems({ enableIpv4: true, ipv6: {} }, () => {
      throw new Error("ENOENT");
    })).toEqual([]);
  });
});

describe("an etcd client that paused itself says why", () => {
  it("names the failure before the circuit breaker opened", () => {
    const seen: string[] = [];
    expect(explainBreaker("listing /x failed: deadline exceeded", seen)).toBe("listing /x failed: deadline exceeded");
    expect(explainBreaker("listing /x failed: Execution prevented because the circuit breaker is open", seen))
      .toMatch(/circuit breaker is open: the etcd client pauses calls after failures in a row; the failure before the pause: listing \/x failed: deadline exceeded$/);
    expect(explainBreaker("Execution prevented because the circuit breaker is open", [])).toBe("Execution prevented because the circuit breaker is open");
  });
});
