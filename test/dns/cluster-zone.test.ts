/**
 * The cluster zone as weft serves it (Kubernetes DNS specification 1.1.0),
 * asked with the real `dig`. The same fixtures are written twice, once with
 * `weft svc put` (after the watcher has synced: the watch path) and once as
 * raw JSON put straight into etcd under another prefix (before the watcher
 * starts: the list path); every case runs against both.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/common/log.js";
import { CACHE_DEFAULTS, DnsCache } from "../../src/dns/cache/cache.js";
import { Forwarder } from "../../src/dns/forward/forwarder.js";
import { parseUpstream, UpstreamSet } from "../../src/dns/forward/upstreams.js";
import { ClientAcl } from "../../src/dns/server/acl.js";
import { DnsCounters } from "../../src/dns/server/counters.js";
import { DnsHandler } from "../../src/dns/server/handler.js";
import { DnsService, type DnsOptions } from "../../src/dns/service.js";
import { nameToKey } from "../../src/dns/wire/query.js";
import { decodeReply, encodeQuery, query } from "../../src/harness/dnswire.js";
import { freeUdpTcpPort, UnboundServer } from "../../src/harness/unbound.js";
import { ServiceRegistry } from "../../src/registry/store.js";
import { RegistryWatcher } from "../../src/registry/watch.js";
import { startEtcd } from "../helpers/etcd.js";
import { dig, rr, until, weft, type DigRecord, type DigResult } from "../helpers/dns.js";

const Z = "cluster.local";
const TTL = 25; // not a default anywhere: a TTL of 25 can only come from the zone options
const uz = UnboundServer.testZone();

interface SvcFix { ref: string; type: "ClusterIP" | "Headless" | "ExternalName"; ips?: string[]; ports?: string[]; externalName?: string; publishNotReady?: boolean }
interface EpFix { ref: string; addresses: string[]; hostname?: string; notReady?: boolean; ports?: string[] }

const SERVICES: SvcFix[] = [
  { ref: "default/web", type: "ClusterIP", ips: ["198.18.255.10"], ports: ["http:TCP:80"] },
  { ref: "default/web6", type: "ClusterIP", ips: ["fd00::a"], ports: ["http:TCP:80"] },
  { ref: "default/db", type: "Headless", ports: ["http:TCP:80"] },
  { ref: "default/pub", type: "Headless", ports: ["http:TCP:80"], publishNotReady: true },
  { ref: "default/empty", type: "Headless" },
  { ref: "default/dual", type: "Headless", ports: ["http:TCP:80"] },
  { ref: "default/ext", type: "ExternalName", externalName: "www.upstream.test" },
];
const ENDPOINTS: EpFix[] = [
  { ref: "default/db/db-0", addresses: ["198.18.1.5"], hostname: "db-0", ports: ["http:TCP:8080"] },
  { ref: "default/db/db-1", addresses: ["198.18.1.6"], ports: ["http:TCP:8080"] },
  { ref: "default/db/db-2", addresses: ["198.18.1.7"], hostname: "db-2", notReady: true, ports: ["http:TCP:8080"] },
  { ref: "default/pub/pub-0", addresses: ["198.18.2.5"], hostname: "pub-0", notReady: true },
  { ref: "default/empty/empty-0", addresses: ["198.18.3.5"], notReady: true },
  { ref: "default/dual/dual-0", addresses: ["198.18.4.5", "fd00::45"], ports: ["http:TCP:80"] },
];

const port = (p: string): { name: string; protocol: string; port: number } => {
  const [name = "", protocol = "", n = ""] = p.split(":");
  return { name, protocol, port: Number(n) };
};
const serviceCli = (s: SvcFix): string[] => ["svc", "put", "service", s.ref, "--type", s.type,
  ...(s.ips ?? []).flatMap((ip) => ["--cluster-ip", ip]), ...(s.ports ?? []).flatMap((p) => ["--port", p]),
  ...(s.externalName ? ["--external-name", s.externalName] : []), ...(s.publishNotReady ? ["--publish-not-ready"] : [])];
const endpointCli = (e: EpFix): string[] => ["svc", "put", "endpoint", e.ref, ...e.addresses.flatMap((a) => ["--address", a]),
  ...(e.hostname ? ["--hostname", e.hostname] : []), ...(e.notReady ? ["--not-ready"] : []), ...(e.ports ?? []).flatMap((p) => ["--port", p])];
// Raw JSON as someone would write it by hand: defaulted fields (ready: true, publishNotReadyAddresses: false) left out.
const serviceJson = (s: SvcFix): string => JSON.stringify({ type: s.type, ...(s.ips ? { clusterIPs: s.ips } : {}), ...(s.externalName ? { externalName: s.externalName } : {}),
  ports: (s.ports ?? []).map(port), ...(s.publishNotReady ? { publishNotReadyAddresses: true } : {}) });
const endpointJson = (e: EpFix): string => JSON.stringify({ addresses: e.addresses, ...(e.hostname ? { hostname: e.hostname } : {}),
  ...(e.notReady ? { ready: false } : {}), ports: (e.ports ?? []).map(port) });

type Writer = "cli" | "raw";
type Server = "main" | "disabled" | "verified";
interface Stack { registry: ServiceRegistry; watcher: RegistryWatcher; dns: Record<Server, DnsService>; ports: Record<Server, number> }

let env: Awaited<ReturnType<typeof startEtcd>>;
let dir: string;
let unbound: UnboundServer;
const stacks = new Map<Writer, Stack>();
const extra: { dns: DnsService[]; watchers: RegistryWatcher[]; registries: ServiceRegistry[] } = { dns: [], watchers: [], registries: [] };

async function startDns(view: RegistryWatcher, pods: "insecure" | "disabled" | "verified", upstream: boolean): Promise<{ dns: DnsService; port: number }> {
  const p = await freeUdpTcpPort();
  const opts: DnsOptions = {
    listen: [{ host: "127.0.0.1", port: p }], zone: { domain: Z, ttl: TTL, pods },
    upstreams: upstream ? [parseUpstream(`127.0.0.1:${unbound.port}`)] : [], policy: "random", allow: [], deadlineMs: 1500, attemptMs: 500,
  };
  const dns = new DnsService(opts, view, silentLogger);
  await dns.start();
  return { dns, port: p };
}

async function stack(writer: Writer): Promise<Stack> {
  const prefix = `/${writer}/registry`;
  const registry = new ServiceRegistry({ endpoints: [env.etcd.localEndpoint], prefix, requestTimeoutMs: 5000 }, silentLogger);
  const watcher = new RegistryWatcher(registry, silentLogger, { retryMs: 100 });
  if (writer === "raw") {
    for (const s of SERVICES) await registry.client.put(`${prefix}/services/${s.ref}`).value(serviceJson(s));
    for (const e of ENDPOINTS) await registry.client.put(`${prefix}/endpoints/${e.ref}`).value(endpointJson(e));
  }
  await watcher.start();
  if (writer === "cli") {
    const common = ["--etcd-endpoints", env.etcd.localEndpoint, "--registry-prefix", prefix];
    const runs = await Promise.all([...SERVICES.map(serviceCli), ...ENDPOINTS.map(endpointCli)].map((a) => weft(...a, ...common)));
    for (const r of runs) if (r.status !== 0) throw new Error(`weft svc put failed: ${r.stderr}`);
  }
  await until(() => watcher.services().size === SERVICES.length && ENDPOINTS.every((e) => {
    const [ns = "", svc = "", id = ""] = e.ref.split("/");
    return watcher.endpointsOf(ns, svc).some((x) => x.id === id);
  }), 15_000, 20, `${writer} entries in the watcher`);
  const [main, disabled, verified] = await Promise.all([startDns(watcher, "insecure", true), startDns(watcher, "disabled", false), startDns(watcher, "verified", false)]);
  await new Promise((r) => setImmediate(r)); // a queued zone rebuild runs first
  return { registry, watcher, dns: { main: main.dns, disabled: disabled.dns, verified: verified.dns }, ports: { main: main.port, disabled: disabled.port, verified: verified.port } };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "weft-dns-zone-"));
  [env, unbound] = await Promise.all([startEtcd(), UnboundServer.start({ dir: join(dir, "unbound"), authZones: [{ name: uz.name, zonefile: uz.text }] })]);
  stacks.set("raw", await stack("raw"));
  stacks.set("cli", await stack("cli"));
});

afterAll(async () => {
  await Promise.all([...[...stacks.values()].flatMap((s) => Object.values(s.dns)), ...extra.dns].map((d) => d.close()));
  await Promise.all([...[...stacks.values()].map((s) => s.watcher.close()), ...extra.watchers.map((w) => w.close())]);
  for (const s of stacks.values()) s.registry.close();
  extra.registries.forEach((r) => r.close());
  await env?.close();
  await unbound?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The record as the tables write it; SRV weight left out (the spec does not fix it). */
function show(r: DigRecord): string {
  if (r.type !== "SRV") return rr(r);
  const [prio, , p, target] = r.data.split(" ");
  return `${r.name} ${r.ttl} SRV ${prio} ${p} ${target}`;
}
const ptr4 = (ip: string): string => `${ip.split(".").reverse().join(".")}.in-addr.arpa`;
function ptr6(ip: string): string {
  const [head = "", tail = ""] = ip.split("::");
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill("0"), ...t];
  return `${groups.map((g) => g.padStart(4, "0")).join("").split("").reverse().join(".")}.ip6.arpa`;
}
const svc = (n: string): string => `${n}.default.svc.${Z}.`;

interface Want { status: string; answer?: string[]; ordered?: boolean; soa?: boolean; additional?: string[] }
interface Case { title: string; server?: Server; args: string[]; want?: Want; check?: (r: DigResult, port: number) => Promise<void> | void }

const NODATA: Want = { status: "NOERROR", answer: [], soa: true };
const NXDOMAIN: Want = { status: "NXDOMAIN", answer: [], soa: true };

const CASES: Case[] = [
  { title: "A of a ClusterIP service (aa, TTL = zone ttl)", args: [svc("web"), "A"], want: { status: "NOERROR", answer: [`${svc("web")} ${TTL} A 198.18.255.10`] } },
  { title: "AAAA of an IPv6 ClusterIP", args: [svc("web6"), "AAAA"], want: { status: "NOERROR", answer: [`${svc("web6")} ${TTL} AAAA fd00::a`] } },
  { title: "AAAA of an IPv4-only service: NODATA with SOA", args: [svc("web"), "AAAA"], want: NODATA },
  { title: "A of an IPv6-only service: NODATA with SOA", args: [svc("web6"), "A"], want: NODATA },
  { title: "headless: one A per ready endpoint, not-ready left out", args: [svc("db"), "A"], want: { status: "NOERROR", answer: [`${svc("db")} ${TTL} A 198.18.1.5`, `${svc("db")} ${TTL} A 198.18.1.6`] } },
  { title: "headless with publishNotReadyAddresses: not-ready included", args: [svc("pub"), "A"], want: { status: "NOERROR", answer: [`${svc("pub")} ${TTL} A 198.18.2.5`] } },
  { title: "headless without a ready endpoint: NXDOMAIN", args: [svc("empty"), "A"], want: NXDOMAIN },
  { title: "<hostname>.<svc>.<ns>.svc A", args: [`db-0.${svc("db")}`, "A"], want: { status: "NOERROR", answer: [`db-0.${svc("db")} ${TTL} A 198.18.1.5`] } },
  { title: "hostname of a not-ready endpoint: NXDOMAIN", args: [`db-2.${svc("db")}`, "A"], want: NXDOMAIN },
  { title: "endpoint without hostname by its dashed IP", args: [`198-18-1-6.${svc("db")}`, "A"], want: { status: "NOERROR", answer: [`198-18-1-6.${svc("db")} ${TTL} A 198.18.1.6`] } },
  {
    title: "SRV of a ClusterIP service: target = service name, port = service port, A glue", args: [`_http._tcp.${svc("web")}`, "SRV"],
    want: { status: "NOERROR", answer: [`_http._tcp.${svc("web")} ${TTL} SRV 0 80 ${svc("web")}`], additional: [`${svc("web")} ${TTL} A 198.18.255.10`] },
  },
  {
    title: "SRV of a headless service: one per ready endpoint, hostname or dashed IP, A glue", args: [`_http._tcp.${svc("db")}`, "SRV"],
    want: {
      status: "NOERROR",
      answer: [`_http._tcp.${svc("db")} ${TTL} SRV 0 8080 db-0.${svc("db")}`, `_http._tcp.${svc("db")} ${TTL} SRV 0 8080 198-18-1-6.${svc("db")}`],
      additional: [`db-0.${svc("db")} ${TTL} A 198.18.1.5`, `198-18-1-6.${svc("db")} ${TTL} A 198.18.1.6`],
    },
  },
  {
    title: "SRV of a dual-stack endpoint without hostname: a target per address, glue only for that target's own address", args: [`_http._tcp.${svc("dual")}`, "SRV"],
    want: {
      status: "NOERROR",
      answer: [`_http._tcp.${svc("dual")} ${TTL} SRV 0 80 198-18-4-5.${svc("dual")}`, `_http._tcp.${svc("dual")} ${TTL} SRV 0 80 fd00--45.${svc("dual")}`],
      additional: [`198-18-4-5.${svc("dual")} ${TTL} A 198.18.4.5`, `fd00--45.${svc("dual")} ${TTL} AAAA fd00::45`],
    },
  },
  { title: "the dashed IPv4 name of a dual-stack endpoint has no AAAA (NODATA)", args: [`198-18-4-5.${svc("dual")}`, "AAAA"], want: NODATA },
  { title: "PTR of a ClusterIP", args: [ptr4("198.18.255.10"), "PTR"], want: { status: "NOERROR", answer: [`${ptr4("198.18.255.10")}. ${TTL} PTR ${svc("web")}`] } },
  { title: "PTR of an IPv6 ClusterIP", args: [ptr6("fd00::a"), "PTR"], want: { status: "NOERROR", answer: [`${ptr6("fd00::a")}. ${TTL} PTR ${svc("web6")}`] } },
  { title: "PTR of a headless endpoint with hostname", args: [ptr4("198.18.1.5"), "PTR"], want: { status: "NOERROR", answer: [`${ptr4("198.18.1.5")}. ${TTL} PTR db-0.${svc("db")}`] } },
  {
    title: "ExternalName: CNAME to the target, then the upstream's A", args: [svc("ext"), "A"],
    want: { status: "NOERROR", ordered: true, answer: [`${svc("ext")} ${TTL} CNAME ${uz.a.name}`, `${uz.a.name} ${uz.a.ttl} A ${uz.a.address}`] },
  },
  { title: "dns-version TXT is 1.1.0", args: [`dns-version.${Z}`, "TXT"], want: { status: "NOERROR", answer: [`dns-version.${Z}. ${TTL} TXT "1.1.0"`] } },
  { title: "pod A with pods insecure", args: [`1-2-3-4.default.pod.${Z}`, "A"], want: { status: "NOERROR", answer: [`1-2-3-4.default.pod.${Z}. ${TTL} A 1.2.3.4`] } },
  { title: "pod A with pods disabled: NXDOMAIN", server: "disabled", args: [`1-2-3-4.default.pod.${Z}`, "A"], want: NXDOMAIN },
  { title: "pod A with pods verified: an endpoint address of the namespace", server: "verified", args: [`198-18-1-5.default.pod.${Z}`, "A"], want: { status: "NOERROR", answer: [`198-18-1-5.default.pod.${Z}. ${TTL} A 198.18.1.5`] } },
  { title: "pod A with pods verified: no endpoint has it, NXDOMAIN", server: "verified", args: [`1-2-3-4.default.pod.${Z}`, "A"], want: NXDOMAIN },
  { title: "pod A with pods verified: endpoint of another namespace, NXDOMAIN", server: "verified", args: [`198-18-1-5.other.pod.${Z}`, "A"], want: NXDOMAIN },
  { title: "svc.<zone> A: NODATA", args: [`svc.${Z}`, "A"], want: NODATA },
  { title: "<ns>.svc.<zone> A: NODATA", args: [`default.svc.${Z}`, "A"], want: NODATA },
  { title: "a missing service: NXDOMAIN with SOA (minimum = ttl)", args: [svc("nosuch"), "A"], want: NXDOMAIN },
  { title: "case-insensitive; the answer keeps the question's case", args: [`WEB.Default.SVC.${Z}`, "A"], want: { status: "NOERROR", answer: [`WEB.Default.SVC.${Z}. ${TTL} A 198.18.255.10`] } },
  {
    title: "AXFR is refused", args: ["AXFR", Z],
    check: async (r, p) => {
      expect(r.transferFailed, r.text).toBe(true);
      expect(r.answer).toEqual([]);
      expect((await query("127.0.0.1", p, Z, 252, { tcp: true })).rcodeName).toBe("REFUSED");
    },
  },
];

const sorted = (l: readonly string[]): string[] => [...l].sort();

describe.each(["cli", "raw"] as const)("cluster zone, entries written with %s", (writer) => {
  it.each(CASES)("$title", async (c) => {
    const s = stacks.get(writer);
    if (!s) throw new Error("stack not started");
    const p = s.ports[c.server ?? "main"];
    const r = await dig(p, ...c.args);
    if (c.check) await c.check(r, p);
    const w = c.want;
    if (!w) return;
    expect(r.status, r.text).toBe(w.status);
    expect(r.flags, r.text).toContain("aa");
    if (w.answer) expect(w.ordered ? r.answer.map(show) : sorted(r.answer.map(show)), r.text).toEqual(w.ordered ? w.answer : sorted(w.answer));
    if (w.soa) {
      expect(r.authority, r.text).toHaveLength(1);
      const soa = r.authority[0];
      expect(soa?.type).toBe("SOA");
      expect(soa?.name.toLowerCase()).toBe(`${Z}.`);
      expect(soa?.ttl).toBe(TTL);
      expect(Number(soa?.data.split(" ").at(-1)), "SOA minimum").toBe(TTL);
    } else {
      expect(r.authority, r.text).toEqual([]);
    }
    expect(sorted(r.additional.map(show)), r.text).toEqual(sorted(w.additional ?? []));
  });
});

describe("before the registry has synced", () => {
  it("answers SERVFAIL for cluster names and still forwards other names", async () => {
    const registry = new ServiceRegistry({ endpoints: [env.etcd.localEndpoint], prefix: "/raw/registry" }, silentLogger);
    const watcher = new RegistryWatcher(registry, silentLogger); // start() never called: never syncs
    extra.registries.push(registry);
    extra.watchers.push(watcher);
    const { dns, port: p } = await startDns(watcher, "insecure", true);
    extra.dns.push(dns);
    expect(dns.ready).toBe(false);
    const r = await dig(p, svc("web"), "A");
    expect(r.status, r.text).toBe("SERVFAIL");
    expect((await dig(p, `dns-version.${Z}`, "TXT")).status).toBe("SERVFAIL");
    expect(dns.counters.notSynced).toBe(2);
    const up = await dig(p, uz.a.name, "A");
    expect(up.status, up.text).toBe("NOERROR");
    expect(up.answer.map(rr)).toEqual([`${uz.a.name} ${uz.a.ttl} A ${uz.a.address}`]);
  });
});

describe("client ACL", () => {
  const local = new Set(["192.168.7.7", "fe80::1"]);
  const acl = new ClientAcl(["10.0.0.0/8", "198.18.0.0/15"], () => local);
  const v4 = (a: string): number => a.split(".").reduce((n, o) => n * 256 + Number(o), 0);
  it.each([
    ["127.0.0.1", true], ["127.5.6.7", true], ["::1", true], ["::ffff:127.0.0.1", true],
    ["10.255.0.1", true], ["::ffff:10.0.0.1", true], ["198.19.255.255", true], ["192.168.7.7", true], ["fe80::1", true],
    ["198.20.0.1", false], ["11.0.0.1", false], ["8.8.8.8", false], ["192.168.7.8", false], ["::ffff:8.8.8.8", false], ["2001:db8::1", false],
  ] as const)("%s allowed: %s", (addr, ok) => {
    expect(acl.allows(addr)).toBe(ok);
    expect(acl.allows(addr)).toBe(ok); // the cached decision too
    if (/^\d+\.\d+\.\d+\.\d+$/.test(addr)) expect(acl.allowsV4(v4(addr)), "allowsV4 (the batch path)").toBe(ok);
  });

  it("::/0 opens IPv6, 0.0.0.0/0 opens IPv4", () => {
    expect(new ClientAcl(["::/0"], () => new Set()).allows("2001:db8::1")).toBe(true);
    expect(new ClientAcl(["0.0.0.0/0"], () => new Set()).allows("8.8.8.8")).toBe(true);
    expect(new ClientAcl(["0.0.0.0/0"], () => new Set()).allows("2001:db8::1")).toBe(false);
  });

  it("allows an address the node gains after the first query from it (DnsService refreshes its addresses)", () => {
    const addrs = new Set<string>();
    const a = new ClientAcl([], () => addrs);
    expect(a.allows("192.168.50.1")).toBe(false);
    addrs.add("192.168.50.1"); // e.g. a new interface address, picked up by DnsService's 30 s refresh
    expect(a.allows("192.168.50.1")).toBe(true);
    expect(a.allowsV4(v4("192.168.50.2"))).toBe(false);
    addrs.add("192.168.50.2");
    expect(a.allowsV4(v4("192.168.50.2")), "allowsV4").toBe(true);
  });

  it("the handler answers REFUSED to a client outside the ACL, and lets allowed ones through", () => {
    const counters = new DnsCounters();
    const handler = new DnsHandler({
      zone: () => undefined, zoneKey: nameToKey(Z), cache: new DnsCache({ ...CACHE_DEFAULTS, now: Date.now }),
      forwarder: new Forwarder({ upstreams: new UpstreamSet([], "random"), maxConcurrent: 1, deadlineMs: 100, attemptMs: 100, healthCheckMs: 1000, log: silentLogger }),
      acl: new ClientAcl(["10.0.0.0/8"], () => new Set()), counters, log: silentLogger, maxWaiting: 100,
    });
    const ask = (from: string): ReturnType<typeof decodeReply> => {
      const q = encodeQuery(svc("web"), "A", { id: 4242 });
      const out = Buffer.alloc(65535);
      const n = handler.handle(q, q.length, from, false, out);
      if (typeof n !== "number") throw new Error("expected a synchronous answer");
      return decodeReply(Buffer.from(out.subarray(0, n)));
    };
    const refused = ask("203.0.113.7");
    expect([refused.id, refused.rcodeName, refused.flags.qr]).toEqual([4242, "REFUSED", true]);
    expect(counters.refusedClients).toBe(1);
    expect(ask("10.1.2.3").rcodeName).toBe("SERVFAIL"); // past the ACL: the zone has not synced
    expect(ask("127.0.0.1").rcodeName).toBe("SERVFAIL");
    expect(counters.refusedClients).toBe(1);
    const q = encodeQuery(svc("web"), "A", { id: 7 });
    const out = Buffer.alloc(65535);
    const n = handler.handle(q, q.length, 0xcb007107, false, out); // 203.0.113.7 as the batch path passes it
    expect(typeof n === "number" && decodeReply(Buffer.from(out.subarray(0, n))).rcodeName).toBe("REFUSED");
    expect(counters.refusedClients).toBe(2);
  });

  it("a dig from loopback is allowed with no extra prefixes", async () => {
    const s = stacks.get("raw");
    if (!s) throw new Error("stack not started");
    const r = await dig(s.ports.main, svc("web"), "A");
    expect(r.status, r.text).toBe("NOERROR");
    expect(s.dns.main.counters.refusedClients).toBe(0);
  });
});
