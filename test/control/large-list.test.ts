import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NO_IPV4, encodeLeaseAttrs, subnetKey } from "../../src/subnet/lease.js";
import { SubnetRegistry } from "../../src/subnet/registry.js";
import { startEtcd } from "../helpers/etcd.js";

/**
 * 20,000 leases in a real etcd: their listing is about 5 MB, past gRPC's
 * default 4 MB message limit. An agent of a cluster that size must still
 * list them (in pages at one revision), or it never syncs, reporting only
 * "etcd: false" (issue 17).
 */
let env: Awaited<ReturnType<typeof startEtcd>>;
beforeAll(async () => {
  env = await startEtcd();
}, 60_000);
afterAll(async () => {
  await env?.close();
});

describe("listing a large cluster's leases", () => {
  it("20,000 IPv6 leases list whole, at one revision, past the gRPC message limit", async () => {
    const reg = new SubnetRegistry({ endpoints: [env.etcd.localEndpoint], prefix: "/big/network" });
    try {
      const mac = Uint8Array.of(2, 0x5e, 0, 0, 0, 1);
      const N = 20_000;
      for (let i = 0; i < N; i += 100) {
        const ops = [];
        for (let j = i; j < i + 100; j++) {
          const subnet6 = { addr: (0x20010db80001n << 80n) + (BigInt(j + 1) << 64n), len: 64 };
          // A long value, as a real dual-stack lease's is (about 250 bytes with its key).
          const value = encodeLeaseAttrs({ publicIp: 0, backendType: "vxlan", vni: 1, vtepMac: mac, publicIpv6: (0x20010db800fen << 80n) + BigInt(j + 1), v6: { vni: 1, vtepMac: mac } });
          ops.push(reg.client.put(`${reg.subnetsPrefix}${subnetKey(NO_IPV4, subnet6)}`).value(value));
        }
        await reg.client.if("/never", "Version", "==", 0).then(...ops).commit();
      }
      const before = await reg.client.getAll().prefix(reg.subnetsPrefix).count();
      expect(before).toBe(N);
      const t0 = performance.now();
      const whole = await reg.client.getAll().prefix(reg.subnetsPrefix).exec();
      console.log(`one range of ${whole.kvs.length}: ${(performance.now() - t0).toFixed(0)} ms`);
      const snap = await reg.listLeases();
      expect(snap.leases).toHaveLength(N);
      expect(new Set(snap.leases.map((l) => l.key)).size).toBe(N);
      expect(snap.skipped).toEqual([]);
      // One revision for every page: a write after the listing started is not in it, and the watch resumes after it.
      const rev = BigInt(snap.revision);
      await reg.client.put(`${reg.subnetsPrefix}0.0.0.0-0&2001:db8:1:ffff::-64`).value("junk");
      const again = await reg.listLeases();
      expect(BigInt(again.revision)).toBe(rev + 1n);
      expect(again.skipped.map((s) => s.key)).toEqual(["0.0.0.0-0&2001:db8:1:ffff::-64"]);
    } finally {
      reg.close();
    }
  }, 120_000);
});
