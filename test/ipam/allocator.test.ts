import { describe, expect, it } from "vitest";
import { formatIpv4, parseCidr, parseIpv4 } from "../../src/common/ipv4.js";
import { checkRequested, pickNext, reservedFor, selectPool, usage } from "../../src/ipam/allocator.js";
import { parseIpamSpec, parseRange, planFor } from "../../src/ipam/config.js";
import { AddressTakenError, AddressUnavailableError, IpamConfigError, PoolExhaustedError } from "../../src/ipam/errors.js";
import { AllocationTable, type Allocation } from "../../src/ipam/table.js";

const subnet = parseCidr("198.18.5.0/24");
const ip = (s: string): number => parseIpv4(s);

function alloc(table: AllocationTable, addr: number, id: string, pool = "default", requested = false): void {
  const a: Allocation = {
    ip: addr, network: "net", containerId: id, ifname: "eth0", pool, netns: "", netnsInode: 0, podNamespace: "", podName: "",
    hostIf: "", created: 0, requested,
  };
  expect(table.apply({ op: "add", a })).toBe(true);
}

describe("ranges as written in the ipam section", () => {
  it.each([
    ["198.18.5.10", false, ip("198.18.5.10"), ip("198.18.5.10")],
    ["198.18.5.10-198.18.5.20", false, ip("198.18.5.10"), ip("198.18.5.20")],
    ["198.18.5.64/27", false, ip("198.18.5.64"), ip("198.18.5.95")],
    ["+10", true, 10, 10],
    ["+10-+20", true, 10, 20],
    ["+10-20", true, 10, 20],
    ["+64/27", true, 64, 95],
  ])("%s", (text, relative, first, last) => {
    expect(parseRange(text, "x")).toMatchObject({ relative, first, last });
  });

  it.each([
    ["198.18.5.65/27", /host bits set.*198\.18\.5\.64\/27/],
    ["+65/27", /host bits set.*\+64\/27/],
    ["+20-+10", /ends before it starts/],
    ["198.18.5.300", /not an IPv4 address/],
    ["+1-198.18.5.9", /both ends must be offsets/],
    ["nonsense", /not an IPv4 address/],
    ["1.2.3.0/33", /prefix length/],
  ])("%s is refused", (text, msg) => {
    expect(() => parseRange(text, "x")).toThrow(msg);
  });
});

describe("ipam config errors say what to fix", () => {
  it.each([
    [{ pools: [{ name: "a", range: "+64/31", namespaces: ["x"] }] }, /holds 2 address\(es\); a pool needs at least 4/],
    [{ pools: [{ name: "a", range: "+64/27", namespaces: ["x"] }, { name: "b", range: "+80/28", namespaces: ["y"] }] }, /overlap/],
    [{ pools: [{ name: "a", range: "+64/27" }] }, /neither namespaces nor podLabels/],
    [{ pools: [{ name: "default", range: "+64/27", namespaces: ["x"] }] }, /implicit pool/],
    [{ pools: [{ name: "a", range: "+64/27", namespaces: ["x"] }, { name: "a", range: "+128/27", namespaces: ["x"] }] }, /used twice/],
    [{ pools: [{ name: "a", range: "198.18.9.0/27", namespaces: ["x"] }] }, /does not lie inside this node's subnet 198\.18\.5\.0\/24.*relative/],
    [{ subnet: "198.18.0.0/16" }, /unknown field\(s\) ipam\.subnet.*leased subnet/],
    [{ pools: [{ name: "Bad_Name", range: "+64/27", namespaces: ["x"] }] }, /ipam\.pools\.0\.name/],
    [{ routes: [{ dst: "default" }] }, /not an IPv4 prefix/],
  ])("%j", (raw, msg) => {
    expect(() => planFor(parseIpamSpec(raw), subnet)).toThrow(msg);
    try {
      planFor(parseIpamSpec(raw), subnet);
    } catch (e) {
      expect(e).toBeInstanceOf(IpamConfigError);
    }
  });

  it("a /31 node subnet leaves nothing for pods", () => {
    expect(() => planFor(parseIpamSpec({}), parseCidr("198.18.5.0/31"))).toThrow(/SubnetLen of 30 or less/);
  });
});

describe("allocation", () => {
  const plan = planFor(parseIpamSpec({}), subnet);

  it("starts after the gateway and never hands out network, gateway or broadcast", () => {
    const t = new AllocationTable();
    const seen: number[] = [];
    for (let i = 0; i < 253; i++) {
      const a = pickNext(plan, t, "net", undefined);
      seen.push(a);
      alloc(t, a, `c${i}`);
    }
    expect(formatIpv4(seen[0] as number)).toBe("198.18.5.2");
    expect(formatIpv4(seen[252] as number)).toBe("198.18.5.254");
    expect(new Set(seen).size).toBe(253);
    expect(seen).not.toContain(ip("198.18.5.0"));
    expect(seen).not.toContain(ip("198.18.5.1"));
    expect(seen).not.toContain(ip("198.18.5.255"));
    expect(() => pickNext(plan, t, "net", undefined)).toThrow(PoolExhaustedError);
    expect(() => pickNext(plan, t, "net", undefined)).toThrow(/253 of 253 in use/);
  });

  it("goes round-robin: a released address is not handed out again at once", () => {
    const t = new AllocationTable();
    alloc(t, pickNext(plan, t, "net", undefined), "a"); // .2
    alloc(t, pickNext(plan, t, "net", undefined), "b"); // .3
    t.apply({ op: "del", key: "net/a/eth0" });
    expect(formatIpv4(pickNext(plan, t, "net", undefined))).toBe("198.18.5.4");
  });

  it("wraps around to released addresses when the end is reached", () => {
    const t = new AllocationTable();
    alloc(t, ip("198.18.5.254"), "last");
    expect(formatIpv4(pickNext(plan, t, "net", undefined))).toBe("198.18.5.2");
  });

  it("skips exclusions and reservations; a reservation goes to its pod or to a request", () => {
    const p = planFor(parseIpamSpec({ exclude: ["+2-+9", "10.0.0.1"], reservations: ["+10", { ip: "+11", podNamespace: "dns", podName: "coredns-0" }] }), subnet);
    const t = new AllocationTable();
    expect(formatIpv4(pickNext(p, t, "net", undefined))).toBe("198.18.5.12");
    expect(reservedFor(p, t, { namespace: "dns", name: "coredns-0", labels: {} })).toBe(ip("198.18.5.11"));
    expect(reservedFor(p, t, { namespace: "other", name: "coredns-0", labels: {} })).toBeUndefined();
    expect(() => checkRequested(p, t, ip("198.18.5.10"), "net/x/eth0")).not.toThrow();
    expect(() => checkRequested(p, t, ip("198.18.5.5"), "net/x/eth0")).toThrow(/excluded/);
    expect(usage(p, t, undefined)).toEqual({ pool: "default", capacity: 253 - 8, used: 0, reserved: 2 });
  });

  it.each([
    ["198.18.5.1", AddressUnavailableError, /gateway/],
    ["198.18.5.0", AddressUnavailableError, /network address/],
    ["198.18.5.255", AddressUnavailableError, /broadcast/],
    ["198.18.6.7", AddressUnavailableError, /outside this node's subnet/],
    ["198.18.5.7", AddressTakenError, /held by container taken/],
  ])("a request for %s is refused", (addr, cls, msg) => {
    const t = new AllocationTable();
    alloc(t, ip("198.18.5.7"), "taken");
    expect(() => checkRequested(plan, t, ip(addr), "net/x/eth0")).toThrow(cls);
    expect(() => checkRequested(plan, t, ip(addr), "net/x/eth0")).toThrow(msg);
  });

  it("pools are chosen by namespace and labels; the default pool is everything else", () => {
    const p = planFor(parseIpamSpec({
      pools: [
        { name: "db", range: "+64/30", namespaces: ["db"], podLabels: { tier: "db" } },
        { name: "infra", range: "+128/26", namespaces: ["kube-system", "monitoring"] },
      ],
    }), subnet);
    const pod = (namespace: string, labels: Record<string, string> = {}) => ({ namespace, name: "p", labels });
    expect(selectPool(p, pod("db", { tier: "db" }))?.name).toBe("db");
    expect(selectPool(p, pod("db"))).toBeUndefined(); // labels must match too
    expect(selectPool(p, pod("monitoring"))?.name).toBe("infra");
    expect(selectPool(p, pod("default"))).toBeUndefined();
    const t = new AllocationTable();
    const db = selectPool(p, pod("db", { tier: "db" }));
    const got = [0, 1, 2, 3].map((i) => {
      const a = pickNext(p, t, "net", db);
      alloc(t, a, `db${i}`, "db");
      return formatIpv4(a);
    });
    expect(got).toEqual(["198.18.5.64", "198.18.5.65", "198.18.5.66", "198.18.5.67"]);
    expect(() => pickNext(p, t, "net", db)).toThrow(/no free address in pool "db".*4 of 4 in use/);
    // The default pool never strays into a named pool.
    for (let i = 0; i < 253 - 4 - 64; i++) {
      const a = pickNext(p, t, "net", undefined);
      expect(a < ip("198.18.5.64") || (a > ip("198.18.5.67") && a < ip("198.18.5.128")) || a > ip("198.18.5.191")).toBe(true);
      alloc(t, a, `d${i}`);
    }
    expect(() => pickNext(p, t, "net", undefined)).toThrow(PoolExhaustedError);
  });

  it("the table refuses an address held by another attachment, whatever it is told", () => {
    const t = new AllocationTable();
    alloc(t, ip("198.18.5.9"), "a");
    expect(t.apply({ op: "add", a: { ...(t.get("net/a/eth0") as Allocation), containerId: "b" } })).toBe(false);
    expect(t.holder(ip("198.18.5.9"))?.containerId).toBe("a");
  });
});
