import { describe, expect, it } from "vitest";
import { containerIdProblem, ifnameProblem, netnsProblem } from "../../src/cni/names.js";
import { decode, type Invocation } from "../../src/cni/request.js";
import { CniError } from "../../src/cni/spec.js";

/**
 * Decoding an invocation, in process: the cases a runtime cannot send
 * through the plugin binary (a client on the socket can: NUL bytes,
 * oversize input) and the limits that keep one config from costing the
 * agent unbounded memory or time.
 */
const env = { CNI_COMMAND: "ADD", CNI_CONTAINERID: "c1", CNI_IFNAME: "eth0", CNI_NETNS: "/run/netns/p1" };
const conf = { cniVersion: "1.1.0", name: "n", type: "none", ipam: { type: "weft-ipam" } };
const inv = (e: Record<string, string> = {}, c: unknown = conf): Invocation => ({ role: "weft-ipam", env: { ...env, ...e }, stdin: typeof c === "string" ? c : JSON.stringify(c) });

function refusal(i: Invocation): CniError {
  try {
    decode(i);
  } catch (e) {
    expect(e).toBeInstanceOf(CniError);
    return e as CniError;
  }
  throw new Error("decode accepted it");
}

describe("names and paths", () => {
  it.each(["eth0", "net1", "vlan.100", "br-data", "cni0", "_x", "abcdefghijklmno", "e"])("interface name %j is usable", (n) => {
    expect(ifnameProblem(n)).toBeUndefined();
  });
  it.each(["", "abcdefghijklmnop", ".", "..", ".x", "-x", "a b", "a;b", "a'b", 'a"b', "a\\b", "a#b", "a%d", "a:b", "a/b", "a@b", "a\u00a0", "\u00e9", "a\u0000"])(
    "interface name %j is not", (n) => {
      expect(ifnameProblem(n)).toBeTypeOf("string");
    });
  it.each(["/run/netns/p1", "/proc/1234/ns/net", "/var/run/netns/cni-1234-abcd"])("netns %j is usable", (p) => {
    expect(netnsProblem(p)).toBeUndefined();
  });
  it.each(["run/netns/p1", "", "/a b", "/a\u0000b", "/a\nb", "/a\tb", "/a#b", "/a'b", '/a"b', "/a\\b", `/${"a".repeat(4095)}`])("netns %j is not", (p) => {
    expect(netnsProblem(p)).toBeTypeOf("string");
  });
  it("container IDs follow the spec, at most 256 characters", () => {
    expect(containerIdProblem("a".repeat(256))).toBeUndefined();
    expect(containerIdProblem("a".repeat(257))).toMatch(/longer than 256/);
    expect(containerIdProblem("_a")).toMatch(/not a container ID/);
  });
});

describe("decode refuses, with the input it was about", () => {
  it("a NUL in CNI_NETNS (only a direct socket client can send one)", () => {
    const e = refusal(inv({ CNI_NETNS: "/run/netns/p1\u0000/x" }));
    expect([e.cniCode, e.input]).toEqual([4, "netns"]);
    expect(e.message).toMatch(/control character U\+0000/);
  });

  it("stdin over 4 MiB", () => {
    const e = refusal(inv({}, `{"cniVersion":"1.1.0","x":"${"a".repeat(4 << 20)}"}`));
    expect([e.cniCode, e.input]).toEqual([6, "stdin"]);
    expect(e.message).toMatch(/at most 4194304/);
  });

  it("a hostile value is shown escaped and cut short in the message", () => {
    const e = refusal(inv({ CNI_IFNAME: `a\n${"b".repeat(10_000)}` }));
    expect(e.message.length).toBeLessThan(300);
    expect(e.message).toContain("a\\nbbb");
  });

  it.each([
    ["5000 exclusions", { exclude: Array.from({ length: 5000 }, (_x, i) => `+${i}`) }, /ipam\.exclude.*at most 256/],
    ["5000 reservations", { reservations: Array.from({ length: 5000 }, (_x, i) => `+${i}`) }, /ipam\.reservations.*at most 1024/],
    ["100 pools", { pools: Array.from({ length: 100 }, (_x, i) => ({ name: `p${i}`, range: `+${i * 4}/30`, namespaces: ["x"] })) }, /ipam\.pools.*at most 64/],
    ["a namespace name of 1000 characters", { pools: [{ name: "p", range: "+64/30", namespaces: ["x".repeat(1000)] }] }, /ipam\.pools\.0\.namespaces\.0.*at most 253/],
    ["a reserved pod name of 1000 characters", { reservations: [{ ip: "+10", podName: "x".repeat(1000) }] }, /at most 253/],
    ["an exclusion string of 10000 characters", { exclude: [`+1-${"9".repeat(10_000)}`] }, /ipam\.exclude\.0.*at most 96/],
  ])("an ipam section with %s (the cost of a config stays bounded)", (_what, ipam, msg) => {
    const e = refusal(inv({}, { ...conf, ipam: { type: "weft-ipam", ...ipam } }));
    expect([e.cniCode, e.input]).toEqual([7, "ipam"]);
    expect(e.message).toMatch(msg);
  });
});

describe("decode accepts, typed", () => {
  it("the plan cache key does not grow with the config", () => {
    const big = { ...conf, ipam: { type: "weft-ipam", pools: [{ name: "p", range: "+64/30", podLabels: Object.fromEntries(Array.from({ length: 60 }, (_x, i) => [`k${i}`, "v".repeat(60)])) }] } };
    const d = decode(inv({}, big));
    if (d.kind !== "request") throw new Error("not a request");
    expect(d.req.ipamKey.length).toBeLessThanOrEqual(64);
    const d2 = decode(inv({}, { ...big, ipam: { ...big.ipam, exclude: ["+2"] } }));
    if (d2.kind !== "request") throw new Error("not a request");
    expect(d2.req.ipamKey).not.toBe(d.req.ipamKey);
  });

  it("a label named __proto__ is a label, not a prototype", () => {
    const d = decode(inv({}, { ...conf, args: { cni: { labels: [{ key: "__proto__", value: "x" }, { key: "tier", value: "db" }] } } }));
    if (d.kind !== "request") throw new Error("not a request");
    expect(Object.getPrototypeOf(d.req.labels)).toBeNull();
    expect(d.req.labels["__proto__"]).toBe("x");
    expect(d.req.labels["tier"]).toBe("db");
  });
});
