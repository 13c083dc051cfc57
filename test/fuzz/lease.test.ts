import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatCidr, formatIpv4, maskOf } from "../../src/common/ipv4.js";
import { silentLogger } from "../../src/common/log.js";
import { checkLease, policyOf, type SelfLease } from "../../src/routes/accept.js";
import { RouteTable } from "../../src/routes/table.js";
import { LeaseFormatError, parseLeaseAttrs, parseLeaseKey, parseSubnetKey, type Lease } from "../../src/subnet/lease.js";
import { formatCidr6, parseIpv6 } from "../../src/common/ipv6.js";
import { parseNetworkConfig } from "../../src/subnet/network-config.js";
import { SubnetRegistry } from "../../src/subnet/registry.js";
import { LeaseWatcher } from "../../src/subnet/watcher.js";
import { startEtcd } from "../helpers/etcd.js";
import { fuzz, mutateJson, mutateText, type Rng } from "./lib.js";

/**
 * Lease keys and values as anyone with write access under the subnet prefix
 * can write them: flannel's documented lease, mutated at the JSON level and
 * byte level, and random keys. Every input is refused with LeaseFormatError
 * or decodes; what decodes goes through the route table, whose invariants
 * (only valid, non-conflicting leases are routes) are checked after every
 * input.
 */
const CONFIG = parseNetworkConfig('{"Network":"198.18.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1}}');
const POLICY = policyOf(CONFIG);
const SELF: SelfLease = { subnet: { addr: 0xc6120100, len: 24 }, publicIp: 0xc0000201 };
const FLANNEL = { PublicIP: "192.0.2.7", PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" } };

function key(rng: Rng): string {
  const good = `198.18.${rng.int(0, 255)}.0-24`;
  switch (rng.int(0, 5)) {
    case 0: return good;
    case 1: return `${good}&fc00::-64`;
    case 2: return mutateText(rng, good);
    case 3: return `${rng.int(0, 300)}.${rng.int(0, 300)}.${rng.int(0, 300)}.${rng.int(0, 300)}-${rng.int(0, 40)}`;
    case 4: return rng.string(rng.length(40));
    default: return `${rng.pick(["", "x/", "../", "\n"])}${good}${rng.pick(["", "junk", "\u0000", "&", "&::-200"])}`;
  }
}

function value(rng: Rng): string {
  const base = { ...FLANNEL, PublicIP: `192.0.2.${rng.int(0, 255)}`, BackendData: { VNI: rng.pick([1, 1, 1, 2]), VtepMAC: `02:00:00:00:00:${rng.int(16, 255).toString(16)}` } };
  switch (rng.int(0, 3)) {
    case 0: return JSON.stringify(base);
    case 1: return JSON.stringify(mutateJson(rng, base));
    case 2: return mutateText(rng, JSON.stringify(base));
    default: return JSON.stringify(mutateJson(rng, mutateJson(rng, base)));
  }
}

function checkInvariants(t: RouteTable): void {
  const routes = t.all();
  expect(new Set(routes.map((l) => formatCidr(l.subnet))).size).toBe(routes.length);
  expect(new Set(routes.map((l) => l.attrs.publicIp)).size).toBe(routes.length);
  for (const l of routes) {
    expect(checkLease(l, POLICY, SELF)).toBeUndefined();
    expect((l.subnet.addr & maskOf(l.subnet.len)) >>> 0).toBe(l.subnet.addr);
  }
}

describe("fuzz: lease keys and JSON", () => {
  it("decode + route table, in process", async () => {
    const t = new RouteTable();
    t.setPolicy(POLICY);
    t.setSelf(SELF);
    let rev = 0;
    const report = await fuzz("lease", { iterations: 8_000 }, (rng, i) => {
      const k = key(rng);
      const subnet = parseSubnetKey(k);
      if (rng.int(0, 9) === 0) {
        t.delete(k);
        return "accepted";
      }
      let outcome: "accepted" | "refused" = "accepted";
      if (!subnet) {
        t.skip({ key: k, reason: "bad_key", detail: "x" });
        outcome = "refused";
      } else {
        try {
          const attrs = parseLeaseAttrs(value(rng));
          const l: Lease = { key: k, subnet, attrs, leaseId: "1", modRevision: String(++rev), createRevision: String(rng.int(1, 1000)) };
          t.put(l);
          if (checkLease(l, POLICY, SELF)) outcome = "refused";
        } catch (e) {
          if (!(e instanceof LeaseFormatError)) throw e;
          t.skip({ key: k, reason: e.reason, detail: e.message });
          outcome = "refused";
        }
      }
      if (i % 64 === 0) checkInvariants(t);
      return outcome;
    });
    checkInvariants(t);
    expect(report.refused).toBeGreaterThan(0);
    expect(report.accepted).toBeGreaterThan(0);
  });

  it("dual stack: hostile IPv6 halves of keys and values; no two routes share either family's subnet or public address", async () => {
    const dual = parseNetworkConfig('{"Network":"198.18.0.0/16","SubnetLen":24,"EnableIPv6":true,"IPv6Network":"2001:db8:1::/48","Backend":{"Type":"vxlan","VNI":1}}');
    const policy = policyOf(dual);
    const self: SelfLease = { ...SELF, subnet6: { addr: parseIpv6("2001:db8:1:1::"), len: 64 }, publicIpv6: parseIpv6("2001:db8:ff::1") };
    const key6 = (rng: Rng): string => {
      const v6 = `2001:db8:${rng.pick(["1", "1", "1", "2"])}:${rng.int(0, 300).toString(16)}::${rng.pick(["", "", "1"])}-${rng.pick([64, 64, 64, 80, 129])}`;
      const good = `198.18.${rng.int(0, 255)}.0-24&${v6}`;
      return rng.int(0, 3) === 0 ? mutateText(rng, good) : good;
    };
    const value6 = (rng: Rng): string => {
      const base = {
        ...FLANNEL, PublicIP: `192.0.2.${rng.int(0, 255)}`, PublicIPv6: rng.pick(["2001:db8:ff::" + rng.int(1, 0xffff).toString(16), "fe80::1", "ff02::1", "2001:db8:1:7::1", null]),
        BackendData: { VNI: 1, VtepMAC: `02:00:00:00:00:${rng.int(16, 255).toString(16)}` },
        BackendV6Data: { VNI: rng.pick([1, 1, 1, 2]), VtepMAC: `02:00:00:00:01:${rng.int(16, 255).toString(16)}` },
      };
      return rng.int(0, 2) === 0 ? JSON.stringify(mutateJson(rng, base)) : JSON.stringify(base);
    };
    const t = new RouteTable();
    t.setPolicy(policy);
    t.setSelf(self);
    let rev = 0;
    const invariants = (): void => {
      const routes = t.all();
      const picks: ((l: Lease) => unknown)[] = [(l) => formatCidr(l.subnet), (l) => l.attrs.publicIp, (l) => (l.subnet6 ? formatCidr6(l.subnet6) : l.key), (l) => l.attrs.publicIpv6 ?? l.key];
      for (const pick of picks) expect(new Set(routes.map(pick)).size).toBe(routes.length);
      for (const l of routes) expect(checkLease(l, policy, self)).toBeUndefined();
    };
    const report = await fuzz("lease-dual", { iterations: 6_000 }, (rng, i) => {
      const k = key6(rng);
      const parsed = parseLeaseKey(k);
      let outcome: "accepted" | "refused" = "accepted";
      if (!parsed) {
        t.skip({ key: k, reason: "bad_key", detail: "x" });
        outcome = "refused";
      } else {
        try {
          const l: Lease = { key: k, ...parsed, attrs: parseLeaseAttrs(value6(rng)), leaseId: "1", modRevision: String(++rev), createRevision: String(rng.int(1, 1000)) };
          t.put(l);
          if (checkLease(l, policy, self)) outcome = "refused";
        } catch (e) {
          if (!(e instanceof LeaseFormatError)) throw e;
          t.skip({ key: k, reason: e.reason, detail: e.message });
          outcome = "refused";
        }
      }
      if (i % 64 === 0) invariants();
      return outcome;
    });
    invariants();
    expect(report.refused).toBeGreaterThan(0);
    expect(report.accepted).toBeGreaterThan(0);
    expect(t.all().some((l) => l.subnet6 !== undefined)).toBe(true);
  });

  describe("through a real etcd and the lease watcher", () => {
    let env: Awaited<ReturnType<typeof startEtcd>>;
    beforeAll(async () => {
      env = await startEtcd();
    });
    afterAll(async () => {
      await env.close();
    });

    it("hostile keys and values are skipped or judged, and a good lease still arrives", async () => {
      const reg = new SubnetRegistry({ endpoints: [env.etcd.localEndpoint], prefix: "/fuzz/network" });
      const w = new LeaseWatcher(reg, silentLogger);
      const t = new RouteTable();
      t.setPolicy(POLICY);
      t.setSelf(SELF);
      w.on("snapshot", (s) => t.replaceAll(s.leases, s.skipped));
      w.on("put", (l) => t.put(l));
      w.on("skip", (s) => t.skip(s));
      w.on("delete", (k) => t.delete(k));
      try {
        await w.start();
        const report = await fuzz("lease-etcd", { iterations: 300 }, async (rng) => {
          const k = key(rng);
          await reg.client.put(`${reg.subnetsPrefix}${k}`).value(value(rng));
          return parseSubnetKey(k) ? "accepted" : "refused";
        });
        // The good lease must not meet an older key for its subnet (the fuzz writes every /24, and the older one would win).
        await reg.client.delete().prefix(`${reg.subnetsPrefix}198.18.250.0-24`);
        await reg.client.put(`${reg.subnetsPrefix}198.18.250.0-24`).value(JSON.stringify({ ...FLANNEL, PublicIP: "198.51.100.250" }));
        const end = Date.now() + 10_000;
        while (!t.all().some((l) => formatIpv4(l.attrs.publicIp) === "198.51.100.250") && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
        expect(t.all().some((l) => formatIpv4(l.attrs.publicIp) === "198.51.100.250")).toBe(true);
        checkInvariants(t);
        // A fresh listing judges the same.
        const fresh = new RouteTable();
        fresh.setPolicy(POLICY);
        fresh.setSelf(SELF);
        const snap = await reg.listLeases();
        fresh.replaceAll(snap.leases, snap.skipped);
        expect(fresh.all().map((l) => l.key).sort()).toEqual(t.all().map((l) => l.key).sort());
        expect(report.iterations).toBeGreaterThan(0);
      } finally {
        await w.close();
        reg.close();
      }
    }, 120_000);
  });
});
