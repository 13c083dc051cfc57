import pino from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { silentLogger, type Logger } from "../../src/common/log.js";
import type { EtcdServer } from "../../src/harness/etcd.js";
import { RegistryEntryError, RegistryUnavailableError } from "../../src/registry/errors.js";
import { ServiceRegistry } from "../../src/registry/store.js";
import { endpointKey, parseRegistryKey, serviceKey, type ServiceInput } from "../../src/registry/types.js";
import { RegistryWatcher, type RegistryChange } from "../../src/registry/watch.js";
import { startEtcd } from "../helpers/etcd.js";

let env: Awaited<ReturnType<typeof startEtcd>>;
let etcd: EtcdServer;
let n = 0;
let prefix = "";
const registries: ServiceRegistry[] = [];
const watchers: RegistryWatcher[] = [];

beforeAll(async () => {
  env = await startEtcd();
  etcd = env.etcd;
});
afterAll(async () => {
  await Promise.all(watchers.map((w) => w.close()));
  registries.forEach((r) => r.close());
  await env.close();
});
beforeEach(() => {
  prefix = `/t${++n}/registry`; // every test its own key space
});

function registry(endpoint = etcd.localEndpoint, log: Logger = silentLogger): ServiceRegistry {
  const r = new ServiceRegistry({ endpoints: [endpoint], prefix, requestTimeoutMs: 2000 }, log);
  registries.push(r);
  return r;
}
function watcher(reg: ServiceRegistry): RegistryWatcher {
  const w = new RegistryWatcher(reg, silentLogger, { retryMs: 100 });
  watchers.push(w);
  return w;
}
function captureLog(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { log: pino({ level: "info" }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) }), lines };
}
async function until(cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 50));
  }
}
const WEB: ServiceInput = { type: "ClusterIP", clusterIPs: ["198.18.255.10"], ports: [{ name: "http", protocol: "TCP", port: 80 }] };
const EP = { addresses: ["198.18.1.5"], hostname: "web-0", nodeName: "node-1", ports: [{ name: "http", port: 8080 }] };

describe("keys", () => {
  it("formats and parses service and endpoint keys; anything else is not a registry key", () => {
    expect(serviceKey("/p/", "default", "web")).toBe("/p/services/default/web");
    expect(endpointKey("/p", "default", "web", "web-0.a_b")).toBe("/p/endpoints/default/web/web-0.a_b");
    expect(parseRegistryKey("/p", "/p/services/default/web")).toEqual({ kind: "service", namespace: "default", name: "web" });
    expect(parseRegistryKey("/p", "/p/endpoints/default/web/Web_0")).toEqual({ kind: "endpoint", namespace: "default", service: "web", id: "Web_0" });
    for (const bad of ["/p/services/default", "/p/services/Default/web", "/p/services/default/web/x", "/p/endpoints/default/web",
      "/p/endpoints/default/web/a b", "/p/other/default/web", "/q/services/default/web", `/p/services/default/${"a".repeat(64)}`]) {
      expect(parseRegistryKey("/p", bad), bad).toBeUndefined();
    }
  });
});

describe("writing: bad input is refused with the field and the fix", () => {
  const svcCases: [string, string, string, unknown, RegExp][] = [
    ["unknown type", "default", "web", { ...WEB, type: "LoadBalancer" }, /type "LoadBalancer" is not a service type: ClusterIP, Headless or ExternalName/],
    ["missing type", "default", "web", { clusterIPs: ["198.18.255.10"] }, /type is required: ClusterIP, Headless or ExternalName/],
    ["ClusterIP without IPs", "default", "web", { type: "ClusterIP" }, /clusterIPs is required for type ClusterIP: give at least one .*or use type Headless/],
    ["bad cluster IP", "default", "web", { ...WEB, clusterIPs: ["198.18.255"] }, /clusterIPs\[0\] "198\.18\.255" is not an IPv4 or IPv6 address/],
    ["zone index", "default", "web", { ...WEB, clusterIPs: ["fe80::1%eth0"] }, /clusterIPs\[0\] "fe80::1%eth0" is not an IPv4 or IPv6/],
    ["duplicate cluster IP", "default", "web", { ...WEB, clusterIPs: ["fd00::1", "FD00:0::1"] }, /clusterIPs\[1\] "fd00::1" is listed twice/],
    ["Headless with IPs", "default", "web", { ...WEB, type: "Headless" }, /clusterIPs must be empty for type Headless/],
    ["ExternalName without name", "default", "web", { type: "ExternalName" }, /externalName is required for type ExternalName: give the DNS name/],
    ["bad external name", "default", "web", { type: "ExternalName", externalName: "-db.example.com" }, /externalName "-db\.example\.com" is not a DNS name/],
    ["externalName on ClusterIP", "default", "web", { ...WEB, externalName: "db.example.com" }, /externalName is only for type ExternalName; remove it/],
    ["bad protocol", "default", "web", { ...WEB, ports: [{ protocol: "HTTP", port: 80 }] }, /ports\[0\]\.protocol "HTTP" is not a protocol: TCP, UDP or SCTP/],
    ["port 0", "default", "web", { ...WEB, ports: [{ port: 0 }] }, /ports\[0\]\.port must be 1-65535 \(got 0\)/],
    ["port 65536", "default", "web", { ...WEB, ports: [{ port: 65536 }] }, /ports\[0\]\.port must be 1-65535 \(got 65536\)/],
    ["port as a string", "default", "web", { ...WEB, ports: [{ port: "80" }] }, /ports\[0\]\.port must be a port number 1-65535 \(got "80"\)/],
    ["port name too long", "default", "web", { ...WEB, ports: [{ name: "a-very-long-name", port: 80 }] }, /ports\[0\]\.name "a-very-long-name" is 16 characters long; at most 15/],
    ["port name not a label", "default", "web", { ...WEB, ports: [{ name: "HTTP", port: 80 }] }, /ports\[0\]\.name "HTTP" is not a DNS-1123 label/],
    ["duplicate port names", "default", "web", { ...WEB, ports: [{ name: "http", port: 80 }, { name: "http", port: 81 }] }, /ports\[1\]\.name "http" is used by two ports; port names must be unique/],
    ["unknown field", "default", "web", { ...WEB, clusterIP: "198.18.255.10" }, /clusterIP is not a field of a service \(the fields are type, clusterIPs, /],
    ["unknown port field", "default", "web", { ...WEB, ports: [{ port: 80, targetPort: 8080 }] }, /ports\[0\]\.targetPort is not a field of a port/],
    ["bad boolean", "default", "web", { ...WEB, publishNotReadyAddresses: "yes" }, /publishNotReadyAddresses must be true or false \(got "yes"\)/],
    ["not an object", "default", "web", [1], /service default\/web: must be a JSON object/],
    ["a label key that is not one", "default", "web", { ...WEB, labels: { "-app": "web" } }, /labels\.-app "-app": "web" is not a label key/],
    ["a label value that is not one", "default", "web", { ...WEB, labels: { app: "we b" } }, /labels\.app "app": "we b" is not a label value/],
    ["a label value that is not a string", "default", "web", { ...WEB, labels: { app: 1 } }, /labels\.app must be a string label value/],
    ["a type that is an object without a usable toString", "default", "web", { ...WEB, type: { toString: 1 } }, /type "\{"toString":1\}" is not a service type/],
    ["a protocol that is an object without a usable toString", "default", "web", { ...WEB, ports: [{ protocol: { toString: 1 }, port: 80 }] }, /protocol "\{"toString":1\}" is not a protocol/],
    ["bad namespace", "Default", "web", WEB, /service Default\/web: namespace "Default" is not a DNS-1123 label/],
    ["name too long", "default", "a".repeat(64), WEB, /name "a{64}" is 64 characters long; at most 63/],
  ];
  it.each(svcCases)("service: %s", async (_what, ns, name, value, msg) => {
    const reg = registry();
    const err = await reg.putService(ns, name, value as never).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryEntryError);
    expect((err as RegistryEntryError).code).toBe("WEFT_REGISTRY_INVALID");
    expect((err as RegistryEntryError).recoverable).toBe(false);
    expect((err as Error).message).toMatch(msg);
    expect((await reg.snapshot()).services).toEqual([]);
  });

  const epCases: [string, string, unknown, { ttlSec?: number }, RegExp][] = [
    ["no addresses", "web-0", { addresses: [] }, {}, /addresses must list at least one IPv4 or IPv6 address/],
    ["addresses missing", "web-0", { ready: true }, {}, /addresses is required: a list of IPv4 or IPv6 addresses/],
    ["bad address", "web-0", { addresses: ["198.18.1.300"] }, {}, /addresses\[0\] "198\.18\.1\.300" is not an IPv4 or IPv6 address/],
    ["bad hostname", "web-0", { ...EP, hostname: "Web_0" }, {}, /hostname "Web_0" is not a DNS-1123 label/],
    ["ready as a string", "web-0", { ...EP, ready: "true" }, {}, /ready must be true or false \(got "true"\)/],
    ["empty nodeName", "web-0", { ...EP, nodeName: "" }, {}, /nodeName must not be empty/],
    ["bad id", "web 0", EP, {}, /endpoint default\/web\/web 0: id "web 0" is not an endpoint id/],
    ["bad ttl", "web-0", EP, { ttlSec: 0 }, /ttlSec must be a whole number of seconds/],
    ["unknown field", "web-0", { ...EP, address: "198.18.1.5" }, {}, /address is not a field of an endpoint/],
  ];
  it.each(epCases)("endpoint: %s", async (_what, id, value, opts, msg) => {
    const reg = registry();
    const err = await reg.putEndpoint("default", "web", id, value as never, opts).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryEntryError);
    expect((err as Error).message).toMatch(msg);
    expect((await reg.snapshot()).endpoints).toEqual([]);
  });

  it("an unreachable etcd is a recoverable WEFT_REGISTRY_UNAVAILABLE saying which etcd", async () => {
    const reg = new ServiceRegistry({ endpoints: ["http://127.0.0.1:9"], prefix, requestTimeoutMs: 500 });
    registries.push(reg);
    for (const op of [() => reg.snapshot(), () => reg.putService("default", "web", WEB)]) {
      const err = await op().then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(RegistryUnavailableError);
      expect((err as RegistryUnavailableError).code).toBe("WEFT_REGISTRY_UNAVAILABLE");
      expect((err as RegistryUnavailableError).recoverable).toBe(true);
      expect((err as Error).message).toMatch(/etcd at http:\/\/127\.0\.0\.1:9 cannot be reached.*--etcd-endpoints/);
    }
  });
});

describe("the registry in a real etcd", () => {
  it("round trip: normalised values, stored JSON, snapshot", async () => {
    const reg = registry();
    await reg.putService("default", "web", { ...WEB, clusterIPs: ["198.18.255.10", "FD00:0:0:0:0:0:0:A"] });
    await reg.putService("default", "db", { type: "ExternalName", externalName: "DB.Example.com." });
    await reg.putService("default", "web-headless", { type: "Headless", publishNotReadyAddresses: true });
    const h = await reg.putEndpoint("default", "web", "web-0", EP);
    expect(h.leaseId).toBe("0");
    await reg.putEndpoint("default", "web", "web-1", { addresses: ["198.18.2.5"], ready: false });
    expect(await reg.client.get(serviceKey(prefix, "default", "web")).string())
      .toBe('{"type":"ClusterIP","clusterIPs":["198.18.255.10","fd00::a"],"ports":[{"name":"http","protocol":"TCP","port":80}],"publishNotReadyAddresses":false}');
    expect(await reg.client.get(endpointKey(prefix, "default", "web", "web-0")).string())
      .toBe('{"addresses":["198.18.1.5"],"hostname":"web-0","ready":true,"nodeName":"node-1","ports":[{"name":"http","protocol":"TCP","port":8080}]}');
    const snap = await reg.snapshot();
    expect(snap.skipped).toEqual([]);
    expect(BigInt(snap.revision)).toBeGreaterThan(0n);
    expect(snap.services.map((s) => `${s.namespace}/${s.name}`)).toEqual(["default/db", "default/web", "default/web-headless"]);
    expect(snap.services[0]).toEqual({ namespace: "default", name: "db", type: "ExternalName", clusterIPs: [], externalName: "db.example.com", ports: [], publishNotReadyAddresses: false });
    expect(snap.endpoints).toEqual([
      { namespace: "default", service: "web", id: "web-0", addresses: ["198.18.1.5"], hostname: "web-0", ready: true, nodeName: "node-1", ports: [{ name: "http", protocol: "TCP", port: 8080 }] },
      { namespace: "default", service: "web", id: "web-1", addresses: ["198.18.2.5"], ready: false, ports: [] },
    ]);
  });

  it("removeService removes the service and its endpoints only", async () => {
    const reg = registry();
    await reg.putService("default", "web", WEB);
    await reg.putService("default", "web2", WEB);
    await reg.putEndpoint("default", "web", "a", EP);
    await reg.putEndpoint("default", "web", "b", EP);
    await reg.putEndpoint("default", "web2", "a", EP);
    expect(await reg.removeService("default", "web")).toEqual({ service: true, endpoints: 2 });
    const snap = await reg.snapshot();
    expect(snap.services.map((s) => s.name)).toEqual(["web2"]);
    expect(snap.endpoints.map((e) => `${e.service}/${e.id}`)).toEqual(["web2/a"]);
    expect(await reg.removeService("default", "web")).toEqual({ service: false, endpoints: 0 });
    expect(await reg.removeEndpoint("default", "web2", "a")).toBe(true);
    expect(await reg.removeEndpoint("default", "web2", "a")).toBe(false);
  });

  it("garbage written straight into etcd is skipped, reported and logged once; snapshot and watcher go on", async () => {
    const { log, lines } = captureLog();
    const reg = registry(etcd.localEndpoint, log);
    await reg.putService("default", "web", WEB);
    await reg.putEndpoint("default", "web", "web-0", EP);
    const raw = async (k: string, v: string): Promise<void> => void (await reg.client.put(`${prefix}/${k}`).value(v));
    await raw("services/default/notjson", "{nope");
    await raw("services/default/noips", '{"type":"ClusterIP"}');
    await raw("services/Default/web", JSON.stringify(WEB));
    await raw("endpoints/default/web", JSON.stringify(EP));
    await raw("stray", "x");
    await raw("services/default/future", '{"type":"Headless","someNewField":1}'); // unknown fields are ignored on read
    const snap = await reg.snapshot();
    expect(snap.services.map((s) => s.name)).toEqual(["future", "web"]);
    expect(snap.endpoints.map((e) => e.id)).toEqual(["web-0"]);
    const reasons = Object.fromEntries(snap.skipped.map((s) => [s.key.slice(prefix.length + 1), s.reason]));
    expect(Object.keys(reasons).sort()).toEqual(["endpoints/default/web", "services/Default/web", "services/default/noips", "services/default/notjson", "stray"]);
    expect(reasons["services/default/notjson"]).toMatch(/is not JSON/);
    expect(reasons["services/default/noips"]).toMatch(/clusterIPs is required for type ClusterIP/);
    expect(reasons["services/Default/web"]).toMatch(/namespace "Default" is not a DNS-1123 label/);
    expect(reasons["stray"]).toMatch(/not a registry key/);
    await reg.snapshot();
    const w = watcher(reg);
    await w.start();
    expect([...w.services().keys()].sort()).toEqual(["default/future", "default/web"]);
    expect(lines.filter((l) => l["msg"] === "skipping a service registry entry weft cannot use")).toHaveLength(5); // once each

    // an invalid value over a valid one: the entry is gone from the view (a delete)
    const changes: RegistryChange[] = [];
    w.on("change", (c) => changes.push(c));
    await raw("endpoints/default/web/web-0", '{"addresses":["nope"]}');
    await until(() => changes.length === 1);
    expect(changes[0]).toEqual({ kind: "endpoint", op: "delete", namespace: "default", name: "web", id: "web-0" });
    expect(w.endpointsOf("default", "web")).toEqual([]);
  });

  it("a leased endpoint lives while kept alive, goes on revoke, and expires after its TTL once the keepalive stops", async () => {
    const reg = registry();
    const key = endpointKey(prefix, "default", "web", "a");
    const h = await reg.putEndpoint("default", "web", "a", EP, { ttlSec: 2 });
    expect(h.leaseId).not.toBe("0");
    const ttl = await reg.client.leaseClient.leaseTimeToLive({ ID: h.leaseId, keys: true });
    expect(Number(ttl.grantedTTL)).toBeGreaterThanOrEqual(2);
    expect(ttl.keys.map((k) => k.toString())).toEqual([key]);
    await new Promise((r) => setTimeout(r, 3500)); // past the TTL: the keepalive holds it
    expect(await reg.client.get(key).string()).not.toBeNull();
    await h.revoke();
    expect(await reg.client.get(key).string()).toBeNull();

    const h2 = await reg.putEndpoint("default", "web", "a", EP, { ttlSec: 2 });
    expect(await reg.client.get(key).string()).not.toBeNull();
    const stopped = Date.now();
    h2.close(); // the publisher "dies"
    await until(async () => (await reg.client.get(key).string()) === null, 8000);
    expect(Date.now() - stopped).toBeLessThan(7000);
  }, 30_000);

  it("a lost lease (revoked behind the publisher's back) is replaced and the key written again", async () => {
    const reg = registry();
    const key = endpointKey(prefix, "default", "web", "a");
    const h = await reg.putEndpoint("default", "web", "a", EP, { ttlSec: 2 });
    const first = h.leaseId;
    await reg.client.leaseClient.leaseRevoke({ ID: first });
    expect(await reg.client.get(key).string()).toBeNull();
    await until(async () => h.leaseId !== first && (await reg.client.get(key).string()) !== null, 10_000);
    await h.revoke();
    expect(await reg.client.get(key).string()).toBeNull();
  }, 20_000);
});

describe("watching", () => {
  it("emits synced, then put/delete changes within 100 ms of the write", async () => {
    const reg = registry();
    await reg.putService("default", "pre", WEB);
    const w = watcher(reg);
    const seen: RegistryChange[] = [];
    let syncedAt = -1;
    w.on("change", (c) => seen.push(c));
    w.on("synced", () => (syncedAt = seen.length));
    expect(w.isSynced).toBe(false);
    await w.start();
    expect(w.isSynced).toBe(true);
    expect(syncedAt).toBe(1); // the existing entry came first, as a put
    expect(seen[0]).toMatchObject({ kind: "service", op: "put", namespace: "default", name: "pre" });

    const lat: number[] = [];
    const timed = async (write: () => Promise<unknown>, match: (c: RegistryChange) => boolean): Promise<RegistryChange> => {
      const t0 = performance.now();
      const got = new Promise<RegistryChange>((resolve) => {
        const on = (c: RegistryChange): void => {
          if (!match(c)) return;
          w.off("change", on);
          resolve(c);
        };
        w.on("change", on);
      });
      await write();
      const c = await got;
      lat.push(performance.now() - t0);
      return c;
    };
    const v0 = w.version;
    const put = await timed(() => reg.putService("default", "web", WEB), (c) => c.name === "web");
    expect(put).toMatchObject({ kind: "service", op: "put", value: { namespace: "default", name: "web", clusterIPs: ["198.18.255.10"] } });
    for (let i = 0; i < 5; i++) {
      const c = await timed(() => reg.putEndpoint("default", "web", `e${i}`, { addresses: [`198.18.1.${i + 1}`] }), (x) => x.kind === "endpoint" && x.id === `e${i}`);
      expect(c).toMatchObject({ kind: "endpoint", op: "put", namespace: "default", name: "web", id: `e${i}` });
    }
    expect(w.endpointsOf("default", "web").map((e) => e.id)).toEqual(["e0", "e1", "e2", "e3", "e4"]);
    const del = await timed(() => reg.removeEndpoint("default", "web", "e0"), (x) => x.op === "delete");
    expect(del).toEqual({ kind: "endpoint", op: "delete", namespace: "default", name: "web", id: "e0" });
    await timed(() => reg.removeService("default", "web"), (x) => x.kind === "service" && x.op === "delete");
    expect(w.service("default", "web")).toBeUndefined();
    expect(w.endpointsOf("default", "web")).toEqual([]);
    expect(w.version).toBe(v0 + 1 + 5 + 1 + 4 + 1);
    console.log(`registry watch latency ms: ${lat.map((l) => l.toFixed(1)).join(" ")}`);
    for (const l of lat) expect(l).toBeLessThan(100);
  });

  it("recovers from a compacted revision: re-lists and emits the difference; the view ends right", async () => {
    const side = registry(); // writes behind the watcher's back
    await side.putService("default", "gone", WEB);
    await side.putService("default", "kept", WEB);
    await side.putEndpoint("default", "kept", "a", EP);
    await side.putEndpoint("default", "kept", "b", EP);
    const { forwardTcpToUnix } = await import("../../src/harness/forward.js");
    const fwd = await forwardTcpToUnix(etcd.socket);
    const w = watcher(registry(`http://127.0.0.1:${fwd.port}`));
    await w.start();
    expect(w.services().size).toBe(2);

    fwd.pause(); // partition; meanwhile things change and history is compacted away
    await side.removeService("default", "gone");
    await side.putService("default", "new", { type: "Headless" });
    await side.putEndpoint("default", "kept", "a", { ...EP, ready: false });
    await side.removeEndpoint("default", "kept", "b");
    await side.putEndpoint("default", "kept", "c", EP);
    await side.client.put(`${prefix}/services/default/junk`).value("not json"); // skipped on re-list
    const rev = (await side.snapshot()).revision;
    await side.client.kv.compact({ revision: rev, physical: true });
    const changes: RegistryChange[] = [];
    w.on("change", (c) => changes.push(c));
    const before = w.resyncs;
    fwd.resume();
    await until(() => w.resyncs > before && w.services().has("default/new"), 20_000);
    expect([...w.services().keys()].sort()).toEqual(["default/kept", "default/new"]);
    expect(w.endpointsOf("default", "kept").map((e) => [e.id, e.ready])).toEqual([["a", false], ["c", true]]);
    const summary = changes.map((c) => `${c.op} ${c.kind} ${c.name}${"id" in c ? `/${c.id}` : ""}`).sort();
    expect(summary).toEqual(["delete endpoint kept/b", "delete service gone", "put endpoint kept/a", "put endpoint kept/c", "put service new"]);
    // and it watches again
    await side.putService("default", "after", { type: "Headless" });
    await until(() => w.services().has("default/after"));
    await w.close();
    await fwd.close();
  }, 40_000);
});
