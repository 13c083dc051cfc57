import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PodService } from "../../src/agent/pods.js";
import { formatIpv4, parseCidr } from "../../src/common/ipv4.js";
import { silentLogger } from "../../src/common/log.js";
import type { EtcdServer } from "../../src/harness/etcd.js";
import { Netns } from "../../src/harness/netns.js";
import { parseIpamSpec } from "../../src/ipam/config.js";
import { RegistryConflictError, ServiceRegistry } from "../../src/registry/store.js";
import { endpointKey } from "../../src/registry/types.js";
import { startEtcd } from "../helpers/etcd.js";
import { http, startDiscovery, until, type DiscoveryEnv } from "./env.js";

/**
 * Publication through the discovery API with the agent's real IPAM (its
 * PodService: pods are what IPAM allocated, with the network namespace each
 * was ADDed with) and real namespaces: a process in a pod's namespace posts
 * over the Unix socket with curl, and the agent knows the pod by the peer's
 * network namespace (SO_PEERCRED). Endpoints go on the agent's etcd lease,
 * go with the pod's address, survive an agent restart, and come back when
 * the lease is lost.
 */
let env: Awaited<ReturnType<typeof startEtcd>>;
let etcd: EtcdServer;
let dir: string;
let pods: PodService;
let d: DiscoveryEnv;
const ns: Netns[] = [];
const prefix = "/pub/registry";
const subnet = parseCidr("198.18.7.0/24");
const metrics = new Registry();

/** A pod: a namespace, and an address from IPAM for it. */
async function pod(name: string, namespace = "shop"): Promise<{ ns: Netns; ip: string; id: string }> {
  const n = await Netns.create(`pub-${name}`);
  ns.push(n);
  const id = `c0ffee${name}${"0".repeat(20)}`;
  const g = await pods.ipam.allocate({
    network: "weft", containerId: id, ifname: "eth0", netns: `/run/netns/${n.name}`, hostIf: "",
    pod: { namespace, name, labels: {} }, requested: undefined, spec: parseIpamSpec({}),
  }, "test");
  return { ns: n, ip: formatIpv4(g.allocation.ip ?? 0), id };
}

/** curl inside a pod's namespace over the Unix socket: status and JSON body. */
async function curl(from: Netns, method: string, path: string, body?: string, type = "application/json"): Promise<{ status: number; json: Record<string, unknown> }> {
  const out = await from.exec(["curl", "-s", "-w", "\n%{http_code}", "--unix-socket", d.socket, "-X", method,
    ...(body === undefined ? [] : ["-H", `content-type: ${type}`, "--data-binary", "@-"]), `http://agent${path}`], body === undefined ? {} : { input: body });
  const nl = out.lastIndexOf("\n");
  const text = out.slice(0, nl);
  return { status: Number(out.slice(nl + 1)), json: text ? JSON.parse(text) as Record<string, unknown> : {} };
}

/** Reads etcd as an administrator would, whatever the agent does. */
let side: ServiceRegistry;
const leaseOf = async (key: string): Promise<string | undefined> => (await side.client.get(key).exec()).kvs[0]?.lease;
const exists = async (key: string): Promise<boolean> => (await side.client.get(key).string()) !== null;

beforeAll(async () => {
  env = await startEtcd();
  etcd = env.etcd;
  side = new ServiceRegistry({ endpoints: [etcd.localEndpoint], prefix });
  dir = mkdtempSync(join(tmpdir(), "weft-pub-"));
  pods = await PodService.open({
    stateDir: dir, subnetFile: join(dir, "subnet.env"), registry: new Registry(), reconcileIntervalSec: 3600, releaseGraceSec: 3600, reclaimThreshold: 0.9, pressureGraceSec: 10, log: silentLogger,
    dataPath: { notReady: () => undefined, leaseProblem: () => undefined, addEndpoint: async () => undefined, removeEndpoint: async () => false },
  });
  pods.bind(subnet);
  d = await startDiscovery(etcd.localEndpoint, prefix, { pods, ttlSec: 3, maxPerPod: 3, dir, metrics });
}, 30_000);
afterAll(async () => {
  await d?.close();
  await pods?.close();
  for (const n of ns) await n.destroy();
  side?.close();
  await env.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("publication bound to the pod", () => {
  let a: Awaited<ReturnType<typeof pod>>;
  let b: Awaited<ReturnType<typeof pod>>;

  it("a pod publishes its own endpoint: its address and name by default, on the agent's lease, in every view", async () => {
    a = await pod("web-a");
    b = await pod("web-b");
    const r = await curl(a.ns, "POST", "/v1/endpoints", JSON.stringify({ service: "web", ports: [{ name: "http", port: 8080 }] }));
    expect(r.status).toBe(201);
    const key = endpointKey(prefix, "shop", "web", "web-a");
    expect(r.json).toEqual({
      key, pod: { containerId: a.id, namespace: "shop", name: "web-a" },
      endpoint: { namespace: "shop", service: "web", id: "web-a", addresses: [a.ip], ready: true, ports: [{ name: "http", protocol: "TCP", port: 8080 }] },
    });
    const lease = await leaseOf(key);
    expect(lease).toMatch(/^[1-9]\d*$/);
    await until(() => d.watcher.endpointsOf("shop", "web").length === 1);
    // publishing again replaces it (200), on the same lease
    const again = await curl(a.ns, "POST", "/v1/endpoints", JSON.stringify({ service: "web", hostname: "a", ports: [{ name: "http", port: 8080 }] }));
    expect(again.status).toBe(200);
    expect(await leaseOf(key)).toBe(lease);
    await until(() => d.watcher.endpointsOf("shop", "web")[0]?.hostname === "a");
    const mine = await curl(a.ns, "GET", "/v1/endpoints");
    expect((mine.json["publications"] as { key: string }[]).map((p) => p.key)).toEqual([key]);
    expect((await curl(b.ns, "GET", "/v1/endpoints")).json).toEqual({ publications: [] });
  });

  it("refuses another pod's address, another namespace, a caller that is not a pod, and bad bodies, each with its reason", async () => {
    const post = (from: Netns, body: unknown, type?: string) => curl(from, "POST", "/v1/endpoints", typeof body === "string" ? body : JSON.stringify(body), type);
    const cases: [unknown, number, string, RegExp][] = [
      [{ service: "web", addresses: [b.ip] }, 403, "not_own_address", new RegExp(`${b.ip.replace(/\./g, "\\.")} is not an address of this pod`)],
      [{ service: "web", addresses: [a.ip, b.ip] }, 403, "not_own_address", /publishes only its own addresses/],
      [{ service: "web", namespace: "kube-system" }, 403, "other_namespace", /this pod is in "shop"/],
      ["{not json", 400, "bad_body", /not JSON/],
      [[1, 2], 400, "bad_body", /JSON object/],
      [{ service: "web", nodeName: "x" }, 400, "bad_body", /unknown field\(s\) "nodeName"/],
      [{ ports: [] }, 400, "bad_body", /service is required/],
      [{ service: "Web!" }, 400, "bad_body", /service .*DNS-1123/],
      [{ service: "web", id: "a/b" }, 400, "bad_body", /not an endpoint id/],
      [{ service: "web", ports: [{ port: 70000 }] }, 400, "bad_body", /ports\[0\]\.port/],
      [{ service: "web", addresses: ["not-an-ip"] }, 400, "bad_body", /addresses\[0\]/],
      [{ service: "web", ready: "yes" }, 400, "bad_body", /ready/],
    ];
    for (const [body, status, reason, msg] of cases) {
      const r = await post(a.ns, body);
      expect([JSON.stringify(body), r.status, r.json["reason"]]).toEqual([JSON.stringify(body), status, reason]);
      expect(String(r.json["error"])).toMatch(msg);
    }
    expect((await post(a.ns, "service=web", "application/x-www-form-urlencoded")).json["reason"]).toBe("media_type");
    const huge = await post(a.ns, JSON.stringify({ service: "web", hostname: "x".repeat(70_000) }));
    expect([huge.status, huge.json["reason"]]).toEqual([413, "too_large"]);
    // this process is in no pod's namespace: refused over the socket and over TCP
    const host = await http({ socketPath: d.socket }, "POST", "/v1/endpoints", { headers: { "content-type": "application/json" }, body: '{"service":"web"}' });
    expect([host.status, host.json["reason"]]).toEqual([403, "not_a_pod"]);
    expect(String(host.json["error"])).toMatch(/not in the network namespace of a pod this node attached through CNI/);
    const tcp = await http({ port: d.port }, "POST", "/v1/endpoints", { headers: { "content-type": "application/json" }, body: '{"service":"web"}' });
    expect([tcp.status, tcp.json["reason"]]).toEqual([403, "not_a_pod"]);
    expect(d.watcher.endpointsOf("shop", "web").map((e) => e.addresses)).toEqual([[a.ip]]); // nothing else got in
  });

  it("an id held by another pod or another publisher is not taken over (409); a pod has a limit (429); it removes only its own", async () => {
    const held = await curl(b.ns, "POST", "/v1/endpoints", JSON.stringify({ service: "web", id: "web-a" }));
    expect([held.status, held.json["reason"]]).toEqual([409, "conflict"]);
    expect(String(held.json["error"])).toMatch(/published by another pod on this node \(shop\/web-a\)/);
    await side.putEndpoint("shop", "web", "admin", { addresses: ["198.51.100.7"] }); // written with etcd credentials
    await until(() => d.watcher.endpointsOf("shop", "web").length === 2);
    const taken = await curl(b.ns, "POST", "/v1/endpoints", JSON.stringify({ service: "web", id: "admin" }));
    expect([taken.status, taken.json["reason"]]).toEqual([409, "conflict"]);
    expect((await side.client.get(endpointKey(prefix, "shop", "web", "admin")).string())).toContain("198.51.100.7");
    for (const s of ["api", "db"]) expect((await curl(a.ns, "POST", "/v1/endpoints", JSON.stringify({ service: s }))).status).toBe(201);
    const over = await curl(a.ns, "POST", "/v1/endpoints", JSON.stringify({ service: "cache" }));
    expect([over.status, over.json["reason"]]).toEqual([429, "too_many_publications"]);
    const notMine = await curl(b.ns, "DELETE", "/v1/endpoints/shop/db/web-a");
    expect([notMine.status, notMine.json["reason"]]).toEqual([403, "not_owner"]);
    expect((await curl(a.ns, "DELETE", "/v1/endpoints/shop/db/web-a")).status).toBe(204);
    expect(await exists(endpointKey(prefix, "shop", "db", "web-a"))).toBe(false);
    expect((await curl(a.ns, "DELETE", "/v1/endpoints/shop/db/web-a")).status).toBe(404);
    const m = await metrics.metrics();
    expect(m).toMatch(/weft_discovery_publications\{pod="shop\/web-a"\} 2/);
    expect(m).toMatch(/weft_discovery_requests_refused_total\{reason="conflict"\} 2/);
  });

  it("the exclusive write itself: absent or on our lease is written, another lease's key is not", async () => {
    const reg = new ServiceRegistry({ endpoints: [etcd.localEndpoint], prefix });
    try {
      const l1 = reg.client.lease(30);
      const l2 = reg.client.lease(30);
      await reg.putEndpoint("x", "svc", "one", { addresses: ["198.18.1.1"] }, { lease: l1, exclusive: true });
      await reg.putEndpoint("x", "svc", "one", { addresses: ["198.18.1.2"] }, { lease: l1, exclusive: true });
      await expect(reg.putEndpoint("x", "svc", "one", { addresses: ["198.18.1.3"] }, { lease: l2, exclusive: true })).rejects.toThrow(RegistryConflictError);
      expect(await reg.client.get(endpointKey(prefix, "x", "svc", "one")).string()).toContain("198.18.1.2");
      await l1.revoke();
      await l2.revoke();
    } finally {
      reg.close();
    }
  });

  it("releasing the pod's address (CNI DEL) removes its endpoints from etcd", async () => {
    const keys = ["web", "api"].map((s) => endpointKey(prefix, "shop", s, "web-a"));
    for (const k of keys) expect(await exists(k)).toBe(true);
    await pods.ipam.release("weft", a.id, "eth0", "del");
    for (const k of keys) expect(await exists(k)).toBe(false);
    await until(() => d.watcher.endpointsOf("shop", "web").every((e) => e.id !== "web-a"));
    expect(d.discovery.summary().publications).toEqual([]);
    expect(await metrics.metrics()).toMatch(/weft_discovery_unpublished_total\{why="released"\} 2/);
  });

  it("a restarted agent publishes again on a new lease what live pods published, and drops the rest with the old lease", async () => {
    const c = await pod("web-c");
    for (const p of [b, c]) expect((await curl(p.ns, "POST", "/v1/endpoints", JSON.stringify({ service: "web" }))).status).toBe(201);
    const kb = endpointKey(prefix, "shop", "web", "web-b");
    const kc = endpointKey(prefix, "shop", "web", "web-c");
    const old = await leaseOf(kb);
    await d.close(); // the agent stops: its lease is no longer kept alive, the keys stay for now
    await pods.ipam.release("weft", c.id, "eth0", "del"); // a pod goes while no agent listens
    expect(await exists(kc)).toBe(true);
    d = await startDiscovery(etcd.localEndpoint, prefix, { pods, ttlSec: 3, maxPerPod: 3, dir });
    await until(async () => (await leaseOf(kb)) !== old && !(await exists(kc)), 10_000, "the restore");
    expect(await exists(kb)).toBe(true);
    expect(d.discovery.summary().publications).toEqual([{ pod: "shop/web-b", count: 1 }]);
    // past the old lease's TTL the key is still there: it is on the new, kept-alive lease
    await new Promise((r) => setTimeout(r, 3500));
    expect(await exists(kb)).toBe(true);
  }, 20_000);

  it("a lost lease (revoked behind the agent's back) is granted again and the endpoints written again", async () => {
    const kb = endpointKey(prefix, "shop", "web", "web-b");
    const lease = await leaseOf(kb);
    await side.client.leaseClient.leaseRevoke({ ID: lease ?? "0" });
    expect(await exists(kb)).toBe(false);
    await until(async () => (await exists(kb)) && (await leaseOf(kb)) !== lease, 10_000, "the endpoint to come back on a new lease");
  }, 20_000);
});
