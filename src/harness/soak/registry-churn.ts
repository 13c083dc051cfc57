import { join } from "node:path";
import type { ChildProcess } from "node:child_process";
import { formatIpv4 } from "../../common/ipv4.js";
import { run, start } from "../../common/exec.js";
import { projectRoot } from "../../common/paths.js";
import type { Cluster } from "../cluster.js";
import { convergeCalm } from "./dns.js";
import type { FaultContext } from "./faults.js";
import type { FaultRecord } from "./types.js";

const WEFT = join(projectRoot(), "bin", "weft.js");
/** How soon every node's DNS must answer as the registry says after a change. */
export const DNS_LAG_MS = 1000;
const LEASE_TTL_S = 2;

function etcdFlag(c: Cluster): string[] {
  return ["--etcd-endpoints", c.etcdCluster?.localEndpoints.join(",") ?? c.etcd.localEndpoint];
}

function svc(c: Cluster, ...args: string[]): Promise<string> {
  return run([process.execPath, WEFT, "svc", ...args, ...etcdFlag(c)], { timeoutMs: 20_000 });
}

const fqdn = (name: string, sub = ""): string => `${sub ? `${sub}.` : ""}${name}.soak.svc.cluster.local`;

/**
 * Registry churn through `weft svc`: a ClusterIP service put (and, once a
 * few exist, the oldest removed), each change answered by every node's DNS
 * within DNS_LAG_MS; then a headless service with an endpoint published on
 * a TTL lease by a `weft svc put endpoint --ttl` process that is then
 * killed: its name must go from every node's DNS within the TTL (plus the
 * lag) of the kill. `x.dnsWant` is the registry as the soak expects it.
 */
export async function registryChurn(x: FaultContext, f: FaultRecord): Promise<void> {
  const c = x.c;
  const n = x.seq++;
  /** `timed`: the change was committed just now (the command returned), so the time taken is the DNS lag. */
  const check = async (what: string, want: Map<string, readonly string[]>, limitMs: number, timed = true): Promise<void> => {
    const r = await convergeCalm(x, f, want, limitMs);
    if (timed) x.dnsLag(r.ms);
    if (r.left.length > 0) x.violation("dns", `${what}: not answered as the registry says after ${r.ms} ms (limit ${limitMs} ms): ${r.left.join("; ")}`);
  };
  const ip = formatIpv4(0xc612ff00 + (n % 200) + 10); // 198.18.255.10-209: cluster IPs, outside every pod subnet in use
  await svc(c, "put", "service", `soak/s${n}`, "--cluster-ip", ip, "--port", "http:TCP:80");
  x.dnsWant.set(fqdn(`s${n}`), [ip]);
  await check(`put s${n}`, new Map([[fqdn(`s${n}`), [ip]]]), DNS_LAG_MS);
  const names = [...x.dnsWant.keys()].filter((k) => /^s\d+\.soak\./.test(k));
  if (names.length > 3) {
    const old = names[0] ?? "";
    await svc(c, "rm", "service", `soak/${old.split(".")[0] ?? ""}`);
    x.dnsWant.set(old, []);
    await check(`rm ${old}`, new Map([[old, []]]), DNS_LAG_MS);
    x.dnsWant.delete(old);
  }

  // A leased endpoint whose publisher dies.
  const anchor = x.rng.pick([...x.anchors.values()]);
  const addr = formatIpv4(anchor.addr);
  await svc(c, "put", "service", `soak/h${n}`, "--type", "Headless", "--port", "pg:TCP:5432");
  const pub: ChildProcess = start([process.execPath, WEFT, "svc", "put", "endpoint", `soak/h${n}/e0`, "--address", addr, "--hostname", "e0",
    "--port", "pg:TCP:5432", "--ttl", String(LEASE_TTL_S), ...etcdFlag(c)]);
  pub.stdout?.resume();
  pub.stderr?.resume();
  try {
    const name = fqdn(`h${n}`, "e0");
    await check(`leased endpoint e0.h${n} published`, new Map([[name, [addr]]]), 10_000, false);
    const exited = new Promise((r) => pub.once("exit", r));
    pub.kill("SIGKILL");
    await exited;
    f.observed = pub.signalCode === "SIGKILL";
    // The lease runs out at most TTL after the last keepalive; etcd checks expiry every 500 ms.
    await check(`leased endpoint e0.h${n} after its publisher was killed`, new Map([[name, []]]), LEASE_TTL_S * 1000 + 500 + DNS_LAG_MS, false);
  } finally {
    if (pub.exitCode === null && pub.signalCode === null) pub.kill("SIGKILL");
    await svc(c, "rm", "service", `soak/h${n}`).catch(() => undefined);
  }
}
