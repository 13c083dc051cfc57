import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEtcdClient, type EtcdClientOptions } from "../../src/common/etcd-client.js";
import { probeEndpoints } from "../../src/common/etcd-probe.js";
import { ConfigError } from "../../src/common/errors.js";
import { parseCidr, parseIpv4, parseMac } from "../../src/common/ipv4.js";
import type { CertFiles } from "../../src/harness/pki.js";
import { RegistryUnavailableError as ServiceRegistryUnavailable } from "../../src/registry/errors.js";
import { ServiceRegistry } from "../../src/registry/store.js";
import { RegistryUnavailableError } from "../../src/subnet/errors.js";
import { SubnetRegistry } from "../../src/subnet/registry.js";
import { startEtcd, startTlsEtcd, type TlsEtcd } from "../helpers/etcd.js";

/**
 * etcd with TLS and client certificates, for real: a server that speaks only
 * TLS and requires a client certificate, with certificates made by openssl.
 * The registries work over it; every way the files can be wrong fails, and
 * says which file and what to do.
 */
let env: TlsEtcd;
let plain: Awaited<ReturnType<typeof startEtcd>>;
let ca2: CertFiles;
let expired: CertFiles;
let untrusted: CertFiles;
beforeAll(async () => {
  [env, plain] = await Promise.all([startTlsEtcd(), startEtcd()]);
  ca2 = await env.pki.newCa("ca2");
  [expired, untrusted] = await Promise.all([
    env.pki.issue("expired", { usage: "client", cn: "root", expired: true }),
    env.pki.issue("untrusted", { usage: "client", cn: "root", ca: { ...ca2, name: "ca2" } }),
  ]);
}, 60_000);
afterAll(async () => {
  await env?.close();
  await plain?.close();
});

const good = (): EtcdClientOptions => ({ endpoints: [env.etcd.endpoint], caFile: env.pki.ca.cert, certFile: env.client.cert, keyFile: env.client.key, requestTimeoutMs: 3000 });
const attrs = { publicIp: parseIpv4("192.0.2.1"), backendType: "vxlan", vni: 1, vtepMac: parseMac("02:00:00:00:00:01") };

describe("the registries over TLS with a client certificate", () => {
  it("subnet leases and the service registry read, write and watch over https", async () => {
    const reg = new SubnetRegistry({ ...good(), prefix: "/tls/network" });
    const svc = new ServiceRegistry({ ...good(), prefix: "/tls/registry" });
    try {
      expect(await reg.putNetworkConfig('{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan"}}', true)).toBe(true);
      expect(await reg.getNetworkConfig()).toMatch(/198\.18\.0\.0\/16/);
      const seen: string[] = [];
      const snap = await reg.listLeases();
      const w = await reg.watch(String(BigInt(snap.revision) + 1n), (ev) => seen.push(ev.type === "put" ? ev.lease.key : ev.type), () => undefined, () => undefined);
      const l = await reg.create(parseCidr("198.18.7.0/24"), undefined, attrs, 30);
      expect(l?.key).toBe("198.18.7.0-24");
      await until(() => seen.includes("198.18.7.0-24"));
      await w.cancel();
      await svc.putService("default", "web", { type: "ClusterIP", clusterIPs: ["198.18.200.1"], ports: [] });
      expect((await svc.snapshot()).services.map((s) => s.name)).toEqual(["web"]);
    } finally {
      reg.close();
      svc.close();
    }
  });

  it("one client shared by both registries: closing them leaves it open for its owner, who closes it", async () => {
    const o = good();
    const client = createEtcdClient(o);
    const reg = new SubnetRegistry({ client, endpoints: o.endpoints, prefix: "/tls/network" });
    const svc = new ServiceRegistry({ client, endpoints: o.endpoints, prefix: "/tls/registry" });
    expect(reg.client).toBe(client);
    expect(svc.client).toBe(client);
    reg.close();
    svc.close();
    expect(await reg.getNetworkConfig()).toMatch(/198\.18\.0\.0\/16/); // still open
    expect((await svc.snapshot()).services).toHaveLength(1);
    client.close();
    await expect(reg.getNetworkConfig()).rejects.toThrow(RegistryUnavailableError);
    // The old form owns its client: close() closes it (what makes the assertions above mean something).
    const own = new SubnetRegistry({ ...o, prefix: "/tls/network" });
    expect(await own.getNetworkConfig()).toMatch(/198\.18/);
    own.close();
    await expect(own.getNetworkConfig()).rejects.toThrow(RegistryUnavailableError);
  });
});

describe("what is wrong with TLS is said, naming the file and the fix", () => {
  const cases: [string, () => EtcdClientOptions, () => RegExp][] = [
    ["a wrong CA", () => ({ ...good(), caFile: ca2.cert }),
      () => new RegExp(`not signed by the CA in --etcd-cafile ${esc(ca2.cert)} \\(CN=weft-test-ca2\\): unable to verify the first certificate \\(wrong --etcd-cafile\\?\\)`)],
    ["an expired client certificate", () => ({ ...good(), certFile: expired.cert, keyFile: expired.key }),
      () => new RegExp(`refused the client certificate --etcd-certfile ${esc(expired.cert)}: it expired on \\S+ \\(certificate has expired\\); renew it`)],
    ["no client certificate where the server requires one", () => ({ ...good(), certFile: undefined, keyFile: undefined }),
      () => /the server requires a client certificate: give --etcd-certfile and --etcd-keyfile/],
    ["a client certificate of a CA the server does not trust", () => ({ ...good(), certFile: untrusted.cert, keyFile: untrusted.key }),
      () => new RegExp(`refused the client certificate --etcd-certfile ${esc(untrusted.cert)} \\(CN=root, issued by CN=weft-test-ca2.*\\): is it signed by the CA etcd trusts`)],
    ["http:// to the TLS port", () => ({ endpoints: [env.etcd.endpoint.replace("https:", "http:")], requestTimeoutMs: 3000 }),
      () => /TCP connects; the server speaks TLS on this port: use https:\/\/127\.0\.0\.1:\d+ with --etcd-cafile/],
    ["https:// to a plain etcd", () => ({ endpoints: [plain.etcd.localEndpoint.replace("http:", "https:")], caFile: env.pki.ca.cert, requestTimeoutMs: 3000 }),
      () => /does not speak TLS on this port but answers plain HTTP: use http:\/\/127\.0\.0\.1:\d+/],
  ];
  it.each(cases)("%s: requests fail, and the probe says why", async (_name, opts, why) => {
    const reg = new SubnetRegistry({ ...opts(), prefix: "/tls/network" });
    const svc = new ServiceRegistry({ ...opts(), prefix: "/tls/registry" });
    try {
      await expect(reg.getNetworkConfig()).rejects.toThrow(RegistryUnavailableError);
      await expect(svc.snapshot()).rejects.toThrow(ServiceRegistryUnavailable);
    } finally {
      reg.close();
      svc.close();
    }
    const [line, ...more] = await probeEndpoints(opts());
    expect(more).toEqual([]);
    expect(line).toMatch(why());
  });

  it("the right files: the probe finds nothing wrong with TLS and says etcd answers", async () => {
    expect(await probeEndpoints(good())).toEqual([`${env.etcd.endpoint}: TLS handshake ok; etcd answers (/health: true), so the request itself failed: see the error (permissions, authentication, a timeout)`]);
  });

  it("a key that does not match its certificate fails at start-up, naming both files", async () => {
    const o = { ...good(), keyFile: expired.key };
    const msg = new RegExp(`--etcd-keyfile ${esc(expired.key)} does not match --etcd-certfile ${esc(env.client.cert)} \\(CN=root, .*\\): the key is not the one the certificate was issued for`);
    expect(() => createEtcdClient(o)).toThrow(ConfigError);
    expect(() => new SubnetRegistry({ ...o, prefix: "/tls/network" })).toThrow(msg);
    expect(() => new ServiceRegistry(o)).toThrow(msg);
    expect(await probeEndpoints(o)).toEqual([expect.stringMatching(msg)]);
  });

  it("files that cannot work are refused at start-up with the flag to fix", () => {
    const notPem = join(env.pki.dir, "not-a-cert.pem");
    writeFileSync(notPem, "hello\n");
    const table: [Partial<EtcdClientOptions>, RegExp][] = [
      [{ keyFile: undefined }, /--etcd-certfile given without --etcd-keyfile: they go together/],
      [{ caFile: join(env.pki.dir, "missing.pem") }, /--etcd-cafile .*missing\.pem cannot be read: ENOENT/],
      [{ caFile: notPem }, /--etcd-cafile .*not-a-cert\.pem holds no PEM certificate/],
      [{ certFile: notPem }, /--etcd-certfile .*not-a-cert\.pem is not a PEM certificate/],
      [{ keyFile: env.pki.ca.cert }, /--etcd-keyfile .*ca\.pem is not a PEM private key/],
      [{ endpoints: ["http://127.0.0.1:2379"] }, /TLS files are given .* but --etcd-endpoints http:\/\/127\.0\.0\.1:2379 are http:\/\/.*use https:\/\//],
      [{ endpoints: ["https://127.0.0.1:2379", "http://127.0.0.1:2380"] }, /mixes http:\/\/ and https:\/\//],
    ];
    for (const [patch, msg] of table) expect(() => createEtcdClient({ ...good(), ...patch }), msg.source).toThrow(msg);
  });
});

const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

async function until(ok: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error("not in time");
    await new Promise((r) => setTimeout(r, 50));
  }
}
