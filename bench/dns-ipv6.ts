/**
 * `node dist/bench/dns-ipv6.js [-- --seconds 3] [-- --rounds 3] [-- --json]`
 *
 * The DNS server's UDP paths on IPv6 against IPv4, measured with dnsperf
 * within one run (ratios are what count on a shared machine):
 *   v4-batch:  127.0.0.1, the recvmmsg/sendmmsg batch path
 *   v6-batch:  ::1, the batch path (sockaddr_in6, IPV6_PKTINFO, the
 *              client's address written as text for the ACL)
 *   v6-dgram:  ::1, Node's dgram socket (udpBatch: false)
 * Queries: AAAA of 100 ClusterIP services with IPv6 cluster IPs and of 100
 * IPv6 pod names, shuffled; answered from the cluster zone (no upstream).
 * Rounds alternate the targets' order; the best round of each is reported.
 * A round with any rcode but NOERROR, or lost queries above 0.1%, fails the run.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { silentLogger } from "../src/common/log.js";
import type { ZoneService } from "../src/dns/cluster/records.js";
import { DnsService, type ServiceView } from "../src/dns/service.js";
import { runDnsperf } from "../src/harness/dnsperf.js";
import { benchArgs } from "./args.js";

const args = benchArgs("bench:dns-ipv6", {
  json: { type: "boolean", help: "print one JSON document as the last line" },
  seconds: { type: "number", default: 3, min: 1, integer: true, help: "dnsperf seconds per target per round" },
  rounds: { type: "number", default: 3, min: 1, integer: true, help: "rounds, alternating the targets" },
});

const SERVICES: ZoneService[] = Array.from({ length: 100 }, (_, i) => ({
  namespace: "default", name: `web-${i}`, type: "ClusterIP", clusterIPs: [`2001:db8:5::${(i + 1).toString(16)}`], ports: [], publishNotReadyAddresses: false,
}));
const view: ServiceView = {
  isSynced: true,
  services: () => new Map(SERVICES.map((s) => [`${s.namespace}/${s.name}`, s])),
  endpointsOf: () => [],
  on: () => undefined,
};
const queries = [
  ...SERVICES.map((s) => `${s.name}.default.svc.cluster.local AAAA`),
  ...Array.from({ length: 100 }, (_, i) => `2001-db8-7--${(i + 1).toString(16)}.default.pod.cluster.local AAAA`),
].sort(() => Math.random() - 0.5);

const TARGETS = [
  { name: "v4-batch", host: "127.0.0.1", batch: true },
  { name: "v6-batch", host: "::1", batch: true },
  { name: "v6-dgram", host: "::1", batch: false },
] as const;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "weft-bench-dns6-"));
  const servers = new Map<string, { dns: DnsService; port: number; path: string }>();
  try {
    for (const t of TARGETS) {
      const dns = new DnsService({ listen: [{ host: t.host, port: 0 }], zone: { domain: "cluster.local", ttl: 30, pods: "insecure" }, upstreams: [], policy: "random", allow: [], udpBatch: t.batch },
        view, silentLogger);
      await dns.start();
      servers.set(t.name, { dns, port: dns.addresses()[0]?.port ?? 0, path: dns.udpPaths()[0]?.path ?? "?" });
    }
    const best = new Map<string, number>();
    for (let r = 0; r < args.rounds; r++) {
      const order = r % 2 === 0 ? TARGETS : [...TARGETS].reverse();
      for (const t of order) {
        const s = servers.get(t.name)!;
        const res = await runDnsperf({ server: t.host, port: s.port, queries, seconds: args.seconds, clients: 4, maxOutstanding: 100, dir, p99: false });
        const bad = Object.entries(res.rcodes).filter(([k]) => k !== "NOERROR");
        if (bad.length || res.lost > res.sent / 1000) throw new Error(`${t.name} round ${r + 1}: rcodes ${JSON.stringify(res.rcodes)}, lost ${res.lost} of ${res.sent}`);
        best.set(t.name, Math.max(best.get(t.name) ?? 0, res.qps));
        process.stderr.write(`round ${r + 1} ${t.name} (${s.path}): ${Math.round(res.qps)} q/s\n`);
      }
    }
    const q = (n: string): number => Math.round(best.get(n) ?? 0);
    const ratio = (a: string, b: string): number => Math.round(((best.get(a) ?? 0) / (best.get(b) ?? 1)) * 100) / 100;
    const out = {
      v4_batch_qps: q("v4-batch"), v6_batch_qps: q("v6-batch"), v6_dgram_qps: q("v6-dgram"),
      v6_batch_vs_v4_batch: ratio("v6-batch", "v4-batch"), v6_batch_vs_v6_dgram: ratio("v6-batch", "v6-dgram"),
      paths: Object.fromEntries([...servers].map(([k, v]) => [k, v.path])),
    };
    if (args.json) console.log(JSON.stringify(out));
    else console.log(`best of ${args.rounds} × ${args.seconds} s: v4 batch ${out.v4_batch_qps} q/s, v6 batch ${out.v6_batch_qps} q/s (${out.v6_batch_vs_v4_batch}x v4), v6 dgram ${out.v6_dgram_qps} q/s (batch ${out.v6_batch_vs_v6_dgram}x dgram)`);
  } finally {
    await Promise.all([...servers.values()].map((s) => s.dns.close()));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error((e as Error).message);
  process.exit(1);
});
