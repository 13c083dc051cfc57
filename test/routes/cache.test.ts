import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { formatCidr6 } from "../../src/common/ipv6.js";
import { silentLogger } from "../../src/common/log.js";
import { RouteCache } from "../../src/routes/cache.js";
import { NO_IPV4, subnetKey, type Lease } from "../../src/subnet/lease.js";

const dir = mkdtempSync(join(tmpdir(), "weft-route-cache-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** IPv6-only lease i: 2001:db8:1:<i+1>::/64, PublicIPv6 2001:db8:fe::<i+1>, as bench:control writes them. */
function lease6(i: number, rev = 1): Lease {
  const subnet6 = { addr: (0x20010db80001n << 80n) + (BigInt(i + 1) << 64n), len: 64 };
  const vtepMac = Uint8Array.of(0x02, 0x5e, (i >> 16) & 255, (i >> 8) & 255, i & 255, 0x01);
  return {
    key: subnetKey(NO_IPV4, subnet6), subnet: NO_IPV4, subnet6, leaseId: "7", modRevision: String(rev), createRevision: String(rev),
    attrs: { publicIp: 0, backendType: "vxlan", vni: 1, vtepMac, publicIpv6: (0x20010db800fen << 80n) + BigInt(i + 1), v6: { vni: 1, vtepMac } },
  };
}

const table = (n: number, rev = 1): Lease[] => Array.from({ length: n }, (_, i) => lease6(i, rev));
const subnets = (ls: readonly Lease[]): string[] => ls.map((l) => (l.subnet6 ? formatCidr6(l.subnet6) : "?"));

describe("route cache: written in chunks in the background, read back whole", () => {
  it("a table of many chunks comes back lease for lease (subnets, MACs, addresses, keys, revisions)", async () => {
    const path = join(dir, "a.json");
    const c = new RouteCache(path, silentLogger, 5, 7); // 7 leases per chunk: 1,000 leases make 143 chunks
    const ls = table(1000, 42);
    c.save(ls);
    await c.settled();
    const back = new RouteCache(path, silentLogger).load();
    expect(back).toHaveLength(1000);
    expect(subnets(back)).toEqual(subnets(ls));
    expect(back.map((l) => [l.key, l.createRevision, l.attrs.publicIpv6, [...(l.attrs.v6?.vtepMac ?? [])]]))
      .toEqual(ls.map((l) => [l.key, "42", l.attrs.publicIpv6, [...(l.attrs.v6?.vtepMac ?? [])]]));
    expect(JSON.parse(readFileSync(path, "utf8"))).toHaveLength(1000); // one valid JSON document
  });

  it("saves made while a write runs end with the last table in the file", async () => {
    const path = join(dir, "b.json");
    const c = new RouteCache(path, silentLogger, 1, 3);
    for (let n = 1; n <= 60; n++) {
      c.save(table(n * 10));
      if (n % 7 === 0) await new Promise((r) => setImmediate(r)); // let a background write start in between
    }
    await c.settled();
    expect(new RouteCache(path, silentLogger).load()).toHaveLength(600);
    expect(readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  it("flush() writes the latest table at once, and a background write of an older one does not replace it", async () => {
    const path = join(dir, "c.json");
    const c = new RouteCache(path, silentLogger, 1, 1);
    c.save(table(5000));
    // Until the background write of 5,000 (one lease per turn of the event loop) has started, then save and flush 3.
    const running = (): boolean => (c as unknown as { writing?: Promise<void> }).writing !== undefined;
    while (!running()) await new Promise((r) => setTimeout(r, 1));
    c.save(table(3));
    c.flush();
    expect(new RouteCache(path, silentLogger).load()).toHaveLength(3);
    await c.settled();
    expect(new RouteCache(path, silentLogger).load()).toHaveLength(3);
    expect(readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  it("flush() with nothing new writes nothing (a file removed meanwhile stays removed)", async () => {
    const path = join(dir, "d.json");
    const c = new RouteCache(path, silentLogger, 1);
    c.save(table(5));
    await c.settled();
    rmSync(path);
    c.flush();
    expect(readdirSync(dir)).not.toContain("d.json");
  });
});
