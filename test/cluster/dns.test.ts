import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatIpv4 } from "../../src/common/ipv4.js";
import { Cluster } from "../../src/harness/cluster.js";

/**
 * The node-local DNS server of real agents in a netns cluster: pods ask
 * 169.254.20.10 (the agent put it on a dummy device or lo) with dig, for
 * services published with `weft svc` into the cluster's etcd.
 */
let c: Cluster;
// Asynchronously: the etcd endpoint is a forwarder in this process.
const weft = async (...args: string[]): Promise<string> =>
  (await promisify(execFile)(process.execPath, ["bin/weft.js", "svc", ...args, "--etcd-endpoints", c.etcd.localEndpoint], { encoding: "utf8" })).stdout;

beforeAll(async () => {
  c = await Cluster.create({ nodes: 2, podsPerNode: 1 });
}, 120_000);
afterAll(async () => {
  await c?.destroy();
});

/** An HTTP GET from inside node i's namespace (the health server listens on its loopback). */
async function get(i: number, path: string): Promise<string> {
  return c.node(i).ns.exec([process.execPath, "-e", `fetch("http://127.0.0.1:9099${path}").then(async (r) => process.stdout.write(await r.text()))`]);
}

async function dig(pod: number, ...q: string[]): Promise<string> {
  return c.pods[pod]!.ns.exec(["dig", "@169.254.20.10", "+time=2", "+tries=1", ...q], { timeoutMs: 10_000 });
}

describe("node-local DNS in a cluster", () => {
  it("pods on every node resolve a service published with `weft svc`, and see changes at once", async () => {
    await weft("put", "service", "default/web", "--cluster-ip", "198.18.255.10", "--port", "http:TCP:80");
    for (let p = 0; p < c.pods.length; p++) {
      await expect.poll(async () => (await dig(p, "+short", "web.default.svc.cluster.local")).trim(), { timeout: 5000 }).toBe("198.18.255.10");
    }
    await weft("put", "service", "default/db", "--type", "Headless", "--port", "pg:TCP:5432");
    const podIp = formatIpv4(c.pods[1]!.addr);
    await weft("put", "endpoint", "default/db/db-0", "--address", podIp, "--hostname", "db-0", "--port", "pg:TCP:5432");
    await expect.poll(async () => (await dig(0, "+short", "db-0.db.default.svc.cluster.local")).trim(), { timeout: 5000 }).toBe(podIp);
    const srv = await dig(0, "+noall", "+answer", "+additional", "_pg._tcp.db.default.svc.cluster.local", "SRV");
    expect(srv).toMatch(/SRV\s+0 100 5432 db-0\.db\.default\.svc\.cluster\.local\./);
    expect(srv).toMatch(new RegExp(`db-0\\.db\\.default\\.svc\\.cluster\\.local\\.\\s+5\\s+IN\\s+A\\s+${podIp.replace(/\./g, "\\.")}`));
    await weft("rm", "service", "default/web");
    await expect.poll(async () => dig(0, "web.default.svc.cluster.local"), { timeout: 5000 }).toMatch(/status: NXDOMAIN/);
  }, 60_000);

  it("answers authoritatively with the agent's readiness including the registry, and counts on /metrics", async () => {
    const out = await dig(0, "dns-version.cluster.local", "TXT");
    expect(out).toMatch(/flags: qr aa/);
    expect(out).toMatch(/"1\.1\.0"/);
    const metrics = await get(0, "/metrics");
    expect(metrics).toMatch(/weft_dns_requests_total\{proto="udp",type="A"\} [1-9]/);
    expect(metrics).toMatch(/weft_dns_responses_total\{rcode="NXDOMAIN"\} [1-9]/);
    expect(metrics).toMatch(/weft_dns_cluster_answers_total [1-9]/);
    expect(metrics).toContain('weft_dns_udp_path{listen="169.254.20.10:53",path="batch"} 1');
    expect(metrics).not.toMatch(/weft_dns_udp_path\{[^}]*path="dgram"/);
    const ready = await get(0, "/readyz");
    expect(JSON.parse(ready)).toMatchObject({ ready: true, registrySynced: true });
    const status = (await promisify(execFile)(process.execPath, ["bin/weft.js", "status", "--control-socket", c.files(0).socket], { encoding: "utf8" })).stdout;
    expect(status).toMatch(/^dns: +169\.254\.20\.10:53 +registry synced +zone serial \d+, \d+ names$/m);
    // The default IPv4 listener runs the recvmmsg/sendmmsg batch path, not the dgram fallback.
    expect(status).toMatch(/^ +udp 169\.254\.20\.10:53 batch$/m);
    expect(status).toMatch(/queries [1-9]\d* \(noerror [1-9]\d*, nxdomain [1-9]\d*/);
    expect(status).toMatch(/upstreams none \(forwarding off\)/);
  }, 30_000);
});
