import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { formatCidr, parseCidr, parseIpv4, parseMac } from "../../src/common/ipv4.js";
import { createLogger, silentLogger } from "../../src/common/log.js";
import { policyOf } from "../../src/routes/accept.js";
import { RouteTable } from "../../src/routes/table.js";
import { encodeLeaseAttrs, type Lease, type LeaseAttrs } from "../../src/subnet/lease.js";
import { PublicIpConflictError, SubnetManager, SubnetRangeFullError } from "../../src/subnet/manager.js";
import { parseNetworkConfig } from "../../src/subnet/network-config.js";
import { SubnetRegistry } from "../../src/subnet/registry.js";
import { LeaseWatcher } from "../../src/subnet/watcher.js";
import { startEtcd } from "../helpers/etcd.js";
import type { EtcdServer } from "../../src/harness/etcd.js";

let env: Awaited<ReturnType<typeof startEtcd>>;
let etcd: EtcdServer;
let prefixN = 0;
let prefix = "";
const registries: SubnetRegistry[] = [];
const managers: SubnetManager[] = [];

beforeAll(async () => {
  env = await startEtcd();
  etcd = env.etcd;
});
afterAll(async () => {
  managers.forEach((m) => m.close());
  registries.forEach((r) => r.close());
  await env.close();
});
beforeEach(() => {
  prefix = `/test${++prefixN}/network`; // every test its own key space
});

function registry(endpoint = etcd.localEndpoint): SubnetRegistry {
  const r = new SubnetRegistry({ endpoints: [endpoint], prefix, requestTimeoutMs: 2000 });
  registries.push(r);
  return r;
}
const attrs = (ip: string, mac = "02:00:00:00:00:01"): LeaseAttrs => ({ publicIp: parseIpv4(ip), backendType: "vxlan", vni: 1, vtepMac: parseMac(mac) });
const CONFIG = '{"Network":"198.18.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}';

function manager(reg: SubnetRegistry, a: LeaseAttrs, config = CONFIG, extra: Partial<ConstructorParameters<typeof SubnetManager>[3]> = {}): SubnetManager {
  const m = new SubnetManager(reg, parseNetworkConfig(config), a, { ttlSec: 60, renewMarginSec: 10, retrySec: 1, ...extra }, silentLogger);
  managers.push(m);
  return m;
}

describe("acquiring a subnet lease in a real etcd", () => {
  it("writes flannel's key and JSON, attached to an etcd lease with the TTL", async () => {
    const reg = registry();
    const l = await manager(reg, attrs("192.0.2.1")).acquire();
    expect(l.subnet.len).toBe(24);
    const key = `${prefix}/subnets/${formatCidr(l.subnet).replace("/", "-")}`;
    const kv = await reg.client.get(key).string();
    expect(kv).toBe(encodeLeaseAttrs(attrs("192.0.2.1")));
    const ttl = await reg.timeToLive(l.leaseId);
    expect(ttl).toBeGreaterThan(50);
    expect(ttl).toBeLessThanOrEqual(60);
  });

  it("a restart with the same PublicIP gets the same subnet", async () => {
    const reg = registry();
    const first = await manager(reg, attrs("192.0.2.1")).acquire();
    const again = await manager(reg, attrs("192.0.2.1")).acquire();
    expect(formatCidr(again.subnet)).toBe(formatCidr(first.subnet));
    expect(again.key).toBe(first.key);
    expect((await reg.listLeases()).leases).toHaveLength(1);
  });

  it("a live lease holding our PublicIP with another VtepMAC is another machine's: the agent stops with a clear error, and takes nothing", async () => {
    const reg = registry();
    const other = await manager(reg, attrs("192.0.2.1", "02:00:00:00:00:01")).acquire();
    const m = manager(reg, attrs("192.0.2.1", "02:00:00:00:00:99"));
    await expect(m.acquire()).rejects.toThrow(PublicIpConflictError);
    await expect(m.acquire()).rejects.toThrow(new RegExp(`live lease ${other.key.replace(/\./g, "\\.")} holds this node's PublicIP 192\\.0\\.2\\.1 with VtepMAC 02:00:00:00:00:01.*another machine.*etcdctl del`));
    const leases = (await reg.listLeases()).leases;
    expect(leases).toHaveLength(1);
    expect(leases[0]?.attrs.vtepMac).toEqual(parseMac("02:00:00:00:00:01")); // untouched
    // Once the other machine's lease is gone, the address is free to take.
    await reg.revoke(other.leaseId);
    expect(formatCidr((await m.acquire()).subnet)).toBeDefined();
  });

  it("prefers the subnet from the subnet file when it is free", async () => {
    const reg = registry();
    const l = await manager(reg, attrs("192.0.2.7"), CONFIG, { previousSubnet: parseCidr("198.18.77.0/24") }).acquire();
    expect(formatCidr(l.subnet)).toBe("198.18.77.0/24");
  });

  it("two agents racing for the last free subnet: exactly one wins, the other says the range is full", async () => {
    // /28 network, /30 subnets: SubnetMin .4, SubnetMax .12, three subnets; two are taken.
    const cfg = '{"Network":"198.18.0.0/28","SubnetLen":30,"Backend":{"Type":"vxlan"}}';
    const reg = registry();
    await reg.putNetworkConfig(cfg, true);
    await manager(reg, attrs("192.0.2.1"), cfg, { previousSubnet: parseCidr("198.18.0.4/30") }).acquire();
    await manager(reg, attrs("192.0.2.2"), cfg, { previousSubnet: parseCidr("198.18.0.8/30") }).acquire();
    const results = await Promise.allSettled([
      manager(registry(), attrs("192.0.2.3"), cfg).acquire(),
      manager(registry(), attrs("192.0.2.4"), cfg).acquire(),
    ]);
    const won = results.filter((r) => r.status === "fulfilled");
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    expect(lost[0]?.reason).toBeInstanceOf(SubnetRangeFullError);
    expect(String(lost[0]?.reason.message)).toMatch(/no free \/30 subnet in 198\.18\.0\.4-198\.18\.0\.12: 3 leased/);
    expect((await reg.listLeases()).leases.map((l) => formatCidr(l.subnet)).sort()).toEqual(["198.18.0.12/30", "198.18.0.4/30", "198.18.0.8/30"]);
  });

  it("never takes a reservation or a key it cannot read; the reserved node gets its reservation", async () => {
    const cfg = '{"Network":"198.18.0.0/28","SubnetLen":30,"Backend":{"Type":"vxlan"}}';
    const reg = registry();
    await reg.client.put(`${prefix}/subnets/198.18.0.4-30`).value(encodeLeaseAttrs(attrs("192.0.2.50"))); // reservation: no lease
    await reg.client.put(`${prefix}/subnets/198.18.0.8-30`).value("{garbage");
    const l = await manager(reg, attrs("192.0.2.1"), cfg).acquire();
    expect(formatCidr(l.subnet)).toBe("198.18.0.12/30");
    await expect(manager(reg, attrs("192.0.2.2"), cfg).acquire()).rejects.toThrow(SubnetRangeFullError);
    const r = await manager(reg, attrs("192.0.2.50", "02:00:00:00:00:50"), cfg).acquire();
    expect(formatCidr(r.subnet)).toBe("198.18.0.4/30");
    expect(r.leaseId).toBe("0"); // still a reservation, now with the node's MAC
    expect((await reg.listLeases()).skipped.map((s) => [s.key, s.reason, s.detail])).toEqual([["198.18.0.8-30", "bad_value", expect.stringMatching(/not JSON/)]]);
  });

  it("renews before expiry, and acquires again (same subnet) when its key is deleted", async () => {
    const reg = registry();
    const m = manager(reg, attrs("192.0.2.1"), CONFIG, { ttlSec: 6, renewMarginSec: 4 });
    const l = await m.acquire();
    await new Promise((r) => setTimeout(r, 4500)); // renewal was due at 2 s
    expect(await reg.timeToLive(l.leaseId)).toBeGreaterThan(3);
    const again = new Promise((r) => m.once("acquired", r));
    await reg.deleteLease(l);
    m.onKeyDeleted(l.key);
    await again;
    expect(formatCidr(m.lease!.subnet)).toBe(formatCidr(l.subnet));
    expect((await reg.listLeases()).leases).toHaveLength(1);
  });

  it("a restart that finds its own key close to expiry renews it at once (never serves a subnet about to be free)", async () => {
    const reg = registry();
    const first = manager(reg, attrs("192.0.2.1"), CONFIG, { ttlSec: 5, renewMarginSec: 3 });
    const l = await first.acquire();
    first.close(); // the old agent dies: its lease keeps ticking
    await new Promise((r) => setTimeout(r, 3200));
    expect(await reg.timeToLive(l.leaseId)).toBeLessThanOrEqual(2);
    const m = manager(reg, attrs("192.0.2.1"), CONFIG, { ttlSec: 5, renewMarginSec: 3 });
    const again = await m.acquire();
    expect(again.leaseId).toBe(l.leaseId);
    expect(m.secondsLeft).toBeGreaterThan(3);
    expect(await reg.timeToLive(l.leaseId)).toBeGreaterThan(3);
  });

  it("a TTL past setTimeout's limit (~24.8 days) waits, instead of renewing in a tight loop", async () => {
    const reg = registry();
    let keepalives = 0;
    const real = reg.keepAlive.bind(reg);
    reg.keepAlive = (id: string) => (keepalives++, real(id)); // counts calls; etcd answers them for real
    const m = manager(reg, attrs("192.0.2.1"), CONFIG, { ttlSec: 30 * 86400, renewMarginSec: 3600 });
    await m.acquire();
    await new Promise((r) => setTimeout(r, 1500));
    expect(keepalives).toBe(0);
    expect(m.secondsLeft).toBeGreaterThan(29 * 86400);
  });

  it("closing while acquiring again after a loss (etcd unreachable) ends quietly: no unhandled rejection", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => void unhandled.push(e);
    process.on("unhandledRejection", onUnhandled);
    const { forwardTcpToUnix } = await import("../../src/harness/forward.js");
    const fwd = await forwardTcpToUnix(etcd.socket);
    try {
      const m = manager(registry(`http://127.0.0.1:${fwd.port}`), attrs("192.0.2.1"));
      const l = await m.acquire();
      fwd.pause(); // every attempt to acquire again fails, and waits to retry
      m.onKeyDeleted(l.key);
      await new Promise((r) => setTimeout(r, 200));
      m.close(); // the agent stops meanwhile
      await new Promise((r) => setTimeout(r, 2500));
      expect(unhandled).toEqual([]);
    } finally {
      process.off("unhandledRejection", onUnhandled);
      await fwd.close();
    }
  });

  it("says clearly when etcd is unreachable", async () => {
    const reg = registry("http://127.0.0.1:9"); // nothing listens there
    await expect(manager(reg, attrs("192.0.2.1")).acquire()).rejects.toThrow(/etcd: listing .* failed/);
  });
});

describe("watching leases", () => {
  it("keeps the route table right across a compacted revision (re-list and diff)", async () => {
    const side = registry(); // writes behind the watcher's back
    await manager(side, attrs("192.0.2.2")).acquire();
    await manager(side, attrs("192.0.2.3")).acquire();
    // The watcher goes through its own forwarder, so the test can partition it from etcd.
    const { forwardTcpToUnix } = await import("../../src/harness/forward.js");
    const fwd = await forwardTcpToUnix(etcd.socket);
    const wreg = registry(`http://127.0.0.1:${fwd.port}`);
    const w = new LeaseWatcher(wreg, process.env["WEFT_TEST_LOG"] ? createLogger("watch-test") : silentLogger, 200);
    const table = new RouteTable();
    table.setPolicy(policyOf(parseNetworkConfig(CONFIG)));
    w.on("snapshot", (snap) => table.replaceAll(snap.leases, snap.skipped));
    w.on("put", (l) => table.put(l));
    w.on("skip", (k) => table.skip(k));
    w.on("delete", (k) => table.delete(k));
    await w.start();
    expect(table.size).toBe(2);
    await manager(side, attrs("192.0.2.4")).acquire();
    await until(() => table.size === 3);

    fwd.pause(); // partition; meanwhile leases change and history is compacted away
    const gone = (await side.listLeases()).leases.find((l) => l.attrs.publicIp === parseIpv4("192.0.2.2"))!;
    await side.deleteLease(gone);
    await manager(side, attrs("192.0.2.5")).acquire();
    await side.client.put(`${prefix}/subnets/198.18.200.0-24`).value("not json"); // skipped on re-list
    const rev = (await side.listLeases()).revision;
    await side.client.kv.compact({ revision: rev, physical: true });
    const before = w.resyncs;
    fwd.resume();
    await until(() => w.resyncs > before && table.size === 3, 20_000);
    expect(table.all().map((l) => l.attrs.publicIp).sort()).toEqual(["192.0.2.3", "192.0.2.4", "192.0.2.5"].map(parseIpv4).sort());
    expect(table.rejections()).toEqual([{ key: "198.18.200.0-24", reason: "bad_value", detail: expect.stringMatching(/not JSON/) }]);
    await w.close();
    await fwd.close();
  }, 40_000);
});

describe("our own key, seen through the watch", () => {
  it("a periodic check notices our key gone even when no event said so", async () => {
    const reg = registry();
    const m = manager(reg, attrs("192.0.2.1"));
    const l = await m.acquire();
    expect(await m.check()).toBe(true);
    await reg.deleteLease(l);
    const again = new Promise<Lease>((r) => m.once("acquired", r));
    expect(await m.check()).toBe(false);
    expect((await again).key).toBe(l.key);
  });

  it("deleted while the watch was cut off and history compacted: the re-list shows it gone, and the lease is acquired again", async () => {
    const reg = registry();
    const m = manager(reg, attrs("192.0.2.1"));
    const l = await m.acquire();
    const { forwardTcpToUnix } = await import("../../src/harness/forward.js");
    const fwd = await forwardTcpToUnix(etcd.socket);
    const w = new LeaseWatcher(registry(`http://127.0.0.1:${fwd.port}`), silentLogger, 200);
    w.on("snapshot", (snap) => m.onSnapshot(snap));
    w.on("put", (x) => m.onKeyPut(x));
    w.on("delete", (k) => m.onKeyDeleted(k));
    await w.start();
    fwd.pause();
    await reg.deleteLease(l); // no delete event can reach the watcher
    await reg.client.put(`${prefix}/other`).value("x"); // history goes on past the deletion
    const rev = (await reg.listLeases()).revision;
    await reg.client.kv.compact({ revision: rev, physical: true });
    const again = new Promise<Lease>((r) => m.once("acquired", r));
    fwd.resume();
    const got = await Promise.race([again, new Promise<undefined>((r) => setTimeout(() => r(undefined), 20_000))]);
    expect(got?.key).toBe(l.key); // the same subnet, acquired again
    expect((await reg.listLeases()).leases.map((x) => x.key)).toEqual([l.key]);
    await w.close();
    await fwd.close();
  }, 40_000);
});

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 50));
  }
}
