import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { formatCidr, formatIpv4, formatMac, parseIpv4 } from "../../src/common/ipv4.js";
import { formatCidr6, formatIpv6 } from "../../src/common/ipv6.js";
import { silentLogger } from "../../src/common/log.js";
import { renderCache, RouteCache } from "../../src/routes/cache.js";
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

/** The file as the cache wrote it before it rendered text itself: JSON.stringify of one object per lease. */
function viaObjects(leases: readonly Lease[]): string {
  return JSON.stringify(leases.map((l) => ({
    subnet: formatCidr(l.subnet), publicIp: formatIpv4(l.attrs.publicIp), vni: l.attrs.vni, vtepMac: formatMac(l.attrs.vtepMac),
    key: l.key, createRevision: l.createRevision,
    ...(l.subnet6 ? { subnet6: formatCidr6(l.subnet6) } : {}),
    ...(l.attrs.publicIpv6 !== undefined && l.attrs.v6
      ? { publicIpv6: formatIpv6(l.attrs.publicIpv6), vni6: l.attrs.v6.vni, vtepMac6: formatMac(l.attrs.v6.vtepMac) }
      : {}),
  })));
}

/** An IPv4 lease (no IPv6 part), key with characters JSON must escape. */
function lease4(i: number, key = `198.18.${i}.0-24`): Lease {
  return {
    key, subnet: { addr: parseIpv4(`198.18.${i}.0`), len: 24 }, leaseId: "7", modRevision: "3", createRevision: "3",
    attrs: { publicIp: parseIpv4(`192.0.2.${i + 1}`), backendType: "vxlan", vni: 4096, vtepMac: Uint8Array.of(0xfe, 0, 0x0a, 0xb0, 1, i) },
  };
}

describe("route cache: written in chunks in the background, read back whole", () => {
  it("a table of many chunks comes back lease for lease (subnets, MACs, addresses, keys, revisions)", async () => {
    const path = join(dir, "a.json");
    const c = new RouteCache(path, silentLogger, { delayMs: 5, minGapMs: 0, chunk: 7 }); // 7 leases per chunk: 1,000 leases make 143 chunks
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
    const c = new RouteCache(path, silentLogger, { delayMs: 1, minGapMs: 0, chunk: 3 });
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
    const c = new RouteCache(path, silentLogger, { delayMs: 1, minGapMs: 0, chunk: 1 });
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

  it("the text is what JSON.stringify wrote for the same leases (IPv4, IPv6-only, dual-stack, a key JSON must escape)", () => {
    const dual: Lease = { ...lease4(9), subnet6: lease6(9).subnet6, attrs: { ...lease4(9).attrs, publicIpv6: lease6(9).attrs.publicIpv6, v6: { vni: 7, vtepMac: Uint8Array.of(2, 3, 4, 5, 6, 7) } } };
    const ls = [lease4(1), lease4(2, 'odd "key"\\ \u0001'), ...table(3), dual, { ...lease6(4), createRevision: "12345678901234567890" }];
    expect(renderCache(ls)).toBe(viaObjects(ls));
    expect(renderCache([])).toBe("[]");
  });

  it("flush() with nothing new writes nothing (a file removed meanwhile stays removed)", async () => {
    const path = join(dir, "d.json");
    const c = new RouteCache(path, silentLogger, { delayMs: 1 });
    c.save(table(5));
    await c.settled();
    rmSync(path);
    c.flush();
    expect(readdirSync(dir)).not.toContain("d.json");
  });
});
