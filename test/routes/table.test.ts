import { describe, expect, it } from "vitest";
import { formatCidr, formatIpv4, parseIpv4, parseMac } from "../../src/common/ipv4.js";
import { LEASE_REJECT_REASONS, policyOf, type Rejection } from "../../src/routes/accept.js";
import { RouteTable } from "../../src/routes/table.js";
import { NO_IPV4, parseLeaseKey, parseSubnetKey, type Lease } from "../../src/subnet/lease.js";
import { parseCidr6, parseIpv6 } from "../../src/common/ipv6.js";
import { parseNetworkConfig } from "../../src/subnet/network-config.js";
import { Rng } from "../fuzz/lib.js";

const CONFIG = parseNetworkConfig('{"Network":"198.18.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1}}');
const RANGED = parseNetworkConfig('{"Network":"198.18.0.0/16","SubnetLen":24,"SubnetMin":"198.18.10.0","SubnetMax":"198.18.20.0","Backend":{"Type":"vxlan","VNI":1}}');
const SELF = { subnet: { addr: parseIpv4("198.18.1.0"), len: 24 }, publicIp: parseIpv4("192.0.2.1") };

/** A lease as the registry decodes it: `key` as written in etcd, create revision `rev`. */
function lease(key: string, ip: string, opts: { rev?: number; mac?: string; vni?: number } = {}): Lease {
  const subnet = parseSubnetKey(key) ?? (() => {
    throw new Error(`bad test key ${key}`);
  })();
  return {
    key, subnet, leaseId: "7", modRevision: String(opts.rev ?? 1), createRevision: String(opts.rev ?? 1),
    attrs: { publicIp: parseIpv4(ip), backendType: "vxlan", vni: opts.vni ?? 1, vtepMac: parseMac(opts.mac ?? "02:00:00:00:00:01") },
  };
}

function table(config = CONFIG): { t: RouteTable; reported: Rejection[] } {
  const reported: Rejection[] = [];
  const t = new RouteTable({ onReject: (r) => reported.push(r) });
  t.setPolicy(policyOf(config));
  t.setSelf(SELF);
  return { t, reported };
}

const names = (ls: readonly Lease[]): string[] => ls.map((l) => formatCidr(l.subnet));

describe("lease validation: what other nodes write is checked before anything is programmed", () => {
  // [case, key, PublicIP, options, reason]
  const cases: [string, string, string, { mac?: string; vni?: number }, string, typeof CONFIG?][] = [
    ["the cloud metadata address as a subnet", "169.254.169.254-32", "192.0.2.9", {}, "subnet_outside_network"],
    ["a range outside the cluster network", "10.0.0.0-8", "192.0.2.9", {}, "subnet_outside_network"],
    ["a prefix that covers the whole network", "198.18.0.0-15", "192.0.2.9", {}, "subnet_outside_network"],
    ["a subnet of another length", "198.18.5.0-25", "192.0.2.9", {}, "subnet_length"],
    ["host bits in the key", "198.18.5.7-24", "192.0.2.9", {}, "subnet_host_bits"],
    ["below SubnetMin", "198.18.9.0-24", "192.0.2.9", {}, "subnet_outside_range", RANGED],
    ["above SubnetMax", "198.18.21.0-24", "192.0.2.9", {}, "subnet_outside_range", RANGED],
    ["another VNI", "198.18.5.0-24", "192.0.2.9", { vni: 2 }, "vni_mismatch"],
    ["a multicast VtepMAC", "198.18.5.0-24", "192.0.2.9", { mac: "01:00:5e:00:00:01" }, "vtep_mac_not_unicast"],
    ["a broadcast VtepMAC", "198.18.5.0-24", "192.0.2.9", { mac: "ff:ff:ff:ff:ff:ff" }, "vtep_mac_not_unicast"],
    ["an all-zero VtepMAC", "198.18.5.0-24", "192.0.2.9", { mac: "00:00:00:00:00:00" }, "vtep_mac_not_unicast"],
    ["PublicIP 0.0.0.0", "198.18.5.0-24", "0.0.0.0", {}, "public_ip_not_unicast"],
    ["PublicIP loopback", "198.18.5.0-24", "127.0.0.1", {}, "public_ip_not_unicast"],
    ["PublicIP multicast", "198.18.5.0-24", "239.1.1.1", {}, "public_ip_not_unicast"],
    ["PublicIP broadcast", "198.18.5.0-24", "255.255.255.255", {}, "public_ip_not_unicast"],
    ["PublicIP inside the cluster network", "198.18.5.0-24", "198.18.7.1", {}, "public_ip_in_cluster"],
    ["our own subnet under another PublicIP", "198.18.1.0-24", "192.0.2.9", {}, "overlaps_own_subnet"],
    ["our own subnet in a dual-stack key", "198.18.1.0-24&fc00::-64", "192.0.2.9", {}, "overlaps_own_subnet"],
    ["our PublicIP on another subnet", "198.18.5.0-24", "192.0.2.1", {}, "public_ip_is_ours"],
  ];
  it.each(cases)("refuses %s (%s via %s): %s", (_what, key, ip, opts, reason, config) => {
    const { t, reported } = table(config);
    const good = lease("198.18.12.0-24", "192.0.2.50");
    const d = t.replaceAll([good, lease(key, ip, opts)]);
    expect(names(d.added)).toEqual(["198.18.12.0/24"]); // only the good one reaches a backend
    expect(t.all().map((l) => l.key)).toEqual(["198.18.12.0-24"]);
    expect(t.rejections()).toEqual([{ key, reason, detail: expect.any(String) }]);
    expect(reported.map((r) => r.reason)).toEqual([reason]);
    // The same refusal as a watch event, on a fresh table.
    const w = table(config);
    expect(w.t.put(lease(key, ip, opts))).toEqual({ added: [], removed: [], changed: [] });
    expect(w.reported.map((r) => [r.key, r.reason])).toEqual([[key, reason]]);
  });

  // IPv6: [case, key, PublicIPv6 (undefined: none), options, reason, config]
  const DUAL = parseNetworkConfig('{"Network":"198.18.0.0/16","SubnetLen":24,"EnableIPv6":true,"IPv6Network":"2001:db8:1::/48","Backend":{"Type":"vxlan","VNI":1}}');
  const DUAL_RANGED = parseNetworkConfig('{"Network":"198.18.0.0/16","SubnetLen":24,"EnableIPv6":true,"IPv6Network":"2001:db8:1::/48","IPv6SubnetMin":"2001:db8:1:10::","IPv6SubnetMax":"2001:db8:1:20::","Backend":{"Type":"vxlan","VNI":1}}');
  const ONLY6 = parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:1::/48","Backend":{"Type":"vxlan","VNI":1}}');
  const SELF6 = { ...SELF, subnet6: parseCidr6("2001:db8:1:1::/64"), publicIpv6: parseIpv6("2001:db8:ff::1") };
  const cases6: [string, string, string | undefined, { mac6?: string; vni6?: number }, string, typeof CONFIG][] = [
    ["a v6 subnet outside IPv6Network", "198.18.5.0-24&2001:db8:2:5::-64", "2001:db8:ff::9", {}, "subnet6_outside_network", DUAL],
    ["a v6 subnet of another length", "198.18.5.0-24&2001:db8:1:5::-80", "2001:db8:ff::9", {}, "subnet6_length", DUAL],
    ["host bits in the v6 key", "198.18.5.0-24&2001:db8:1:5::1-64", "2001:db8:ff::9", {}, "subnet6_host_bits", DUAL],
    ["a v6 subnet below IPv6SubnetMin", "198.18.5.0-24&2001:db8:1:5::-64", "2001:db8:ff::9", {}, "subnet6_outside_range", DUAL_RANGED],
    ["a v6 key without PublicIPv6", "198.18.5.0-24&2001:db8:1:5::-64", undefined, {}, "family_mismatch", DUAL],
    ["an IPv4 key on an IPv6-only network", "198.18.5.0-24", "2001:db8:ff::9", {}, "family_mismatch", ONLY6],
    ["a real IPv4 part on an IPv6-only network", "198.18.5.0-24&2001:db8:1:5::-64", "2001:db8:ff::9", {}, "family_mismatch", ONLY6],
    ["PublicIPv6 multicast", "198.18.5.0-24&2001:db8:1:5::-64", "ff02::1", {}, "public_ipv6_not_unicast", DUAL],
    ["PublicIPv6 link-local", "198.18.5.0-24&2001:db8:1:5::-64", "fe80::1", {}, "public_ipv6_not_unicast", DUAL],
    ["PublicIPv6 inside the cluster's IPv6Network", "198.18.5.0-24&2001:db8:1:5::-64", "2001:db8:1:7::1", {}, "public_ipv6_in_cluster", DUAL],
    ["our own v6 subnet", "198.18.5.0-24&2001:db8:1:1::-64", "2001:db8:ff::9", {}, "overlaps_own_subnet", DUAL],
    ["our PublicIPv6", "198.18.5.0-24&2001:db8:1:5::-64", "2001:db8:ff::1", {}, "public_ip_is_ours", DUAL],
    ["another BackendV6Data VNI", "198.18.5.0-24&2001:db8:1:5::-64", "2001:db8:ff::9", { vni6: 9 }, "vni_mismatch", DUAL],
    ["a multicast BackendV6Data VtepMAC", "198.18.5.0-24&2001:db8:1:5::-64", "2001:db8:ff::9", { mac6: "33:33:00:00:00:01" }, "vtep_mac_not_unicast", DUAL],
  ];
  const lease6 = (key: string, ip4: string, ip6: string | undefined, o: { mac6?: string; vni6?: number; rev?: number } = {}): Lease => {
    const k = parseLeaseKey(key);
    if (!k) throw new Error(`bad test key ${key}`);
    const base = lease(key.split("&")[0] ?? key, ip4, { rev: o.rev });
    return {
      ...base, key, subnet: k.subnet, subnet6: k.subnet6,
      attrs: { ...base.attrs, ...(ip6 === undefined ? {} : { publicIpv6: parseIpv6(ip6), v6: { vni: o.vni6 ?? 1, vtepMac: parseMac(o.mac6 ?? "02:00:00:00:00:06") } }) },
    };
  };
  it.each(cases6)("refuses %s (%s via %s): %s", (_what, key, ip6, opts, reason, config) => {
    const reported: Rejection[] = [];
    const t = new RouteTable({ onReject: (r) => reported.push(r) });
    t.setPolicy(policyOf(config));
    t.setSelf(config.enableIpv4 ? SELF6 : { ...SELF6, subnet: NO_IPV4, publicIp: 0 });
    const goodKey = config.enableIpv4 ? "198.18.12.0-24&2001:db8:1:12::-64" : "0.0.0.0-0&2001:db8:1:12::-64";
    const ip4 = (k: string): string => (k.startsWith("0.0.0.0-0") ? "0.0.0.0" : "192.0.2.50");
    const d = t.replaceAll([lease6(goodKey, ip4(goodKey), "2001:db8:ff::50", { rev: 1 }), lease6(key, key.startsWith("0.0.0.0") ? "0.0.0.0" : "192.0.2.9", ip6, { ...opts, rev: 2 })]);
    expect(d.added.map((l) => l.key)).toEqual([goodKey]);
    expect(t.rejections()).toEqual([{ key, reason, detail: expect.any(String) }]);
    expect(reported.map((r) => r.reason)).toEqual([reason]);
  });

  it("a dual-stack network routes an IPv4-only peer over IPv4; an IPv4-only network ignores a peer's v6 part (mixed clusters)", () => {
    const t = new RouteTable();
    t.setPolicy(policyOf(DUAL));
    const d = t.replaceAll([lease("198.18.7.0-24", "192.0.2.7"), lease6("198.18.8.0-24&2001:db8:1:8::-64", "192.0.2.8", "2001:db8:ff::8")]);
    expect(d.added.map((l) => l.key).sort()).toEqual(["198.18.7.0-24", "198.18.8.0-24&2001:db8:1:8::-64"]);
    const v4only = new RouteTable();
    v4only.setPolicy(policyOf(CONFIG));
    expect(v4only.replaceAll([lease6("198.18.8.0-24&2001:db8:2:8::-64", "192.0.2.8", "2001:db8:ff::8")]).added).toHaveLength(1);
  });

  it("two leases with one IPv6 subnet or one PublicIPv6: the older wins, on an IPv6-only network too", () => {
    const t = new RouteTable();
    t.setPolicy(policyOf(ONLY6));
    const a = lease6("0.0.0.0-0&2001:db8:1:8::-64", "0.0.0.0", "2001:db8:ff::8", { rev: 5 });
    const b = lease6("0.0.0.0-0&2001:db8:1:9::-64", "0.0.0.0", "2001:db8:ff::8", { rev: 6 });
    const c = lease6("0.0.0.0-0&2001:db8:1:a::-64", "0.0.0.0", "2001:db8:ff::a", { rev: 7 });
    const d = t.replaceAll([b, c, a]);
    expect(d.added.map((l) => l.key).sort()).toEqual([a.key, c.key]);
    expect(t.rejections().map((r) => [r.key, r.reason])).toEqual([[b.key, "public_ip_taken"]]);
    // The winner goes: the next in line takes its place.
    expect(t.delete(a.key).added.map((l) => l.key)).toEqual([b.key]);
  });

  it("every reason has a test case or a conflict test, and a metric label", () => {
    const covered = new Set([...cases.map((c) => c[4]), ...cases6.map((c) => c[4]), "bad_key", "bad_value", "foreign_backend", "overlaps_lease", "public_ip_taken"]);
    expect([...covered].sort()).toEqual([...LEASE_REJECT_REASONS].sort());
  });

  it("our own key is neither a route nor a rejection", () => {
    const { t, reported } = table();
    t.replaceAll([lease("198.18.1.0-24", "192.0.2.1")]);
    expect(t.size).toBe(0);
    expect(reported).toEqual([]);
  });

  it("a key that did not decode replaces what that key held, and is reported once per key and reason", () => {
    const { t, reported } = table();
    t.put(lease("198.18.5.0-24", "192.0.2.5"));
    const d = t.skip({ key: "198.18.5.0-24", reason: "bad_value", detail: "lease value is not JSON" });
    expect(names(d.removed)).toEqual(["198.18.5.0/24"]);
    t.skip({ key: "198.18.5.0-24", reason: "bad_value", detail: "lease value is not JSON" });
    t.replaceAll([], [{ key: "198.18.5.0-24", reason: "bad_value", detail: "lease value is not JSON" }]);
    expect(reported.map((r) => r.reason)).toEqual(["bad_value"]);
    t.skip({ key: "198.18.5.0-24", reason: "foreign_backend", detail: "host-gw" });
    expect(reported.map((r) => r.reason)).toEqual(["bad_value", "foreign_backend"]);
    t.delete("198.18.5.0-24");
    expect(t.rejectedCount).toBe(0); // a deleted key leaves the list: it is bounded by the keys that exist
  });
});

describe("conflicts between leases: the older one by create revision wins, in any event order", () => {
  it("a second key for the same subnet (dual-stack spelling) loses to the older; when the older goes, it takes over", () => {
    for (const order of [0, 1]) {
      const { t } = table();
      const old = lease("198.18.5.0-24", "192.0.2.5", { rev: 10 });
      const dup = lease("198.18.5.0-24&fc00::-64", "192.0.2.66", { rev: 20, mac: "02:00:00:00:00:66" });
      if (order === 0) {
        t.put(old);
        expect(t.put(dup)).toEqual({ added: [], removed: [], changed: [] });
      } else {
        t.put(dup);
        const d = t.put(old); // the older arrives later: it replaces the newer one
        expect(d.changed.map((c) => [formatIpv4(c.before.attrs.publicIp), formatIpv4(c.after.attrs.publicIp)])).toEqual([["192.0.2.66", "192.0.2.5"]]);
      }
      expect(t.all().map((l) => l.key)).toEqual(["198.18.5.0-24"]);
      expect(t.rejections()).toEqual([{ key: dup.key, reason: "overlaps_lease", detail: expect.stringMatching(/older key 198\.18\.5\.0-24/) }]);
      const d = t.delete(old.key);
      expect(d.changed.map((c) => formatIpv4(c.after.attrs.publicIp))).toEqual(["192.0.2.66"]);
      expect(t.rejectedCount).toBe(0);
    }
  });

  it("a second lease naming an existing node's PublicIP gets no neighbour or FDB entry: it is not a route", () => {
    const { t } = table();
    t.put(lease("198.18.5.0-24", "192.0.2.5", { rev: 10 }));
    const d = t.put(lease("198.18.6.0-24", "192.0.2.5", { rev: 11, mac: "02:00:00:00:00:66" }));
    expect(d).toEqual({ added: [], removed: [], changed: [] });
    expect(t.rejections().map((r) => [r.key, r.reason])).toEqual([["198.18.6.0-24", "public_ip_taken"]]);
    // The owner moves to another address: the waiting lease may now be used.
    const moved = t.put(lease("198.18.5.0-24", "192.0.2.55", { rev: 10 }));
    expect(names(moved.added)).toEqual(["198.18.6.0/24"]);
    expect(moved.changed).toHaveLength(1);
  });

  it("incremental updates always equal a from-scratch judgement (random puts, skips and deletes)", () => {
    const rng = new Rng(42);
    const subnets = ["198.18.5.0-24", "198.18.5.0-24&fc00::-64", "198.18.6.0-24", "198.18.7.0-24", "198.18.1.0-24", "198.18.8.0-25", "10.0.0.0-24"];
    const ips = ["192.0.2.5", "192.0.2.6", "192.0.2.7", "192.0.2.1", "198.18.9.9"];
    for (let run = 0; run < 40; run++) {
      const { t } = table();
      const live = new Map<string, Lease>();
      let rev = 1;
      for (let step = 0; step < 60; step++) {
        const key = rng.pick(subnets);
        const r = rng.int(0, 9);
        if (r < 6) {
          const created = live.get(key)?.createRevision;
          const l = { ...lease(key, rng.pick(ips), { rev: ++rev, mac: rng.pick(["02:00:00:00:00:01", "02:00:00:00:00:02"]) }), ...(created ? { createRevision: created } : {}) };
          live.set(key, l);
          t.put(l);
        } else if (r < 8) {
          live.delete(key);
          t.delete(key);
        } else {
          live.delete(key);
          t.skip({ key, reason: "bad_value", detail: "x" });
        }
        const fresh = table().t;
        fresh.replaceAll([...live.values()]);
        const view = (x: RouteTable): string[] => x.all().map((l) => `${l.key}@${formatIpv4(l.attrs.publicIp)}`).sort();
        expect(view(t)).toEqual(view(fresh));
        // No two routes share a subnet or a PublicIP, and none is ours.
        const routes = t.all();
        expect(new Set(routes.map((l) => formatCidr(l.subnet))).size).toBe(routes.length);
        expect(new Set(routes.map((l) => l.attrs.publicIp)).size).toBe(routes.length);
        expect(routes.some((l) => l.attrs.publicIp === SELF.publicIp)).toBe(false);
      }
    }
  });
});

describe("route table diffs", () => {
  it("snapshot, put, renewal, change, delete, self", () => {
    const { t } = table();
    let d = t.replaceAll([lease("198.18.1.0-24", "192.0.2.1"), lease("198.18.2.0-24", "192.0.2.2"), lease("198.18.3.0-24", "192.0.2.3")]);
    expect(names(d.added).sort()).toEqual(["198.18.2.0/24", "198.18.3.0/24"]);
    expect(t.put(lease("198.18.2.0-24", "192.0.2.2")).added).toEqual([]); // renewal: nothing to do
    d = t.put(lease("198.18.2.0-24", "192.0.2.2", { mac: "02:00:00:00:00:09" }));
    expect(d.changed.map((c) => formatIpv4(c.before.attrs.publicIp))).toEqual(["192.0.2.2"]);
    d = t.delete("198.18.3.0-24");
    expect(names(d.removed)).toEqual(["198.18.3.0/24"]);
    expect(formatIpv4(d.removed[0]!.attrs.publicIp)).toBe("192.0.2.3"); // removal keeps the attributes
    expect(t.delete("198.18.3.0-24").removed).toEqual([]);
    d = t.replaceAll([lease("198.18.4.0-24", "192.0.2.4")]);
    expect(names(d.added)).toEqual(["198.18.4.0/24"]);
    expect(names(d.removed)).toEqual(["198.18.2.0/24"]);
    d = t.setSelf({ subnet: { addr: parseIpv4("198.18.4.0"), len: 24 }, publicIp: parseIpv4("192.0.2.1") });
    expect(names(d.removed)).toEqual(["198.18.4.0/24"]);
    expect(t.size).toBe(0);
  });

  it("nothing is used before the network config is known", () => {
    const t = new RouteTable();
    expect(t.replaceAll([lease("198.18.2.0-24", "192.0.2.2")]).added).toEqual([]);
    expect(names(t.setPolicy(policyOf(CONFIG)).added)).toEqual(["198.18.2.0/24"]);
  });
});
