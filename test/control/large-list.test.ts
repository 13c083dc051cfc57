import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NO_IPV4, encodeLeaseAttrs, subnetKey } from "../../src/subnet/lease.js";
import { Etcd3 } from "etcd3";
import { listPrefix } from "../../src/common/etcd-client.js";
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
  it("24,000 IPv6 leases list whole, at one revision, past the gRPC message limit", async () => {
    const reg = new SubnetRegistry({ endpoints: [env.etcd.localEndpoint], prefix: "/coreos.com/network" });
    try {
      const mac = Uint8Array.of(2, 0x5e, 0, 0, 0, 1);
      const N = 24_000; // about 5.2 MB listed at once
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
      // In one range, to a client with gRPC's defaults, the answer is past its 4 MB: what a single listing met.
      const plain = new Etcd3({ hosts: [env.etcd.localEndpoint] });
      try {
        await expect(plain.getAll().prefix(reg.subnetsPrefix).exec()).rejects.toThrow(/larger than max/);
      } finally {
        plain.close();
      }
      // Pages of 1,000 at one revision: every key once, in order.
      const paged = await listPrefix(reg.client, reg.subnetsPrefix, 1000);
      expect(paged.kvs).toHaveLength(N);
      expect(new Set(paged.kvs.map((kv) => kv.key.toString())).size).toBe(N);
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
