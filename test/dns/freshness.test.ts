/**
 * Registry changes reach DNS answers at once: a real etcd, the registry
 * watcher and DnsService, polled with the dnswire client every 5 ms from the
 * moment the write is issued (the etcd commit is part of the measured time).
 */
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/common/log.js";
import { DnsService } from "../../src/dns/service.js";
import { query, type DnsReply } from "../../src/harness/dnswire.js";
import { freeUdpTcpPort } from "../../src/harness/unbound.js";
import { ServiceRegistry } from "../../src/registry/store.js";
import { RegistryWatcher, type RegistryChange } from "../../src/registry/watch.js";
import { startEtcd } from "../helpers/etcd.js";
import { dig, sleep } from "../helpers/dns.js";

const Z = "cluster.local";
const LIMIT_MS = 100;
/** A single slow sample (a GC pause, an fsync on a loaded CI machine) may exceed the limit; none may exceed this. */
const OUTLIER_MS = 1000;
const ROUNDS = 20;

/**
 * The bound, as the README states it: 90 % of the samples within LIMIT_MS
 * (measured here: 3-52 ms), every one within OUTLIER_MS.
 */
const BOUND = `within ${LIMIT_MS} ms in 90% of ${ROUNDS} tries of each kind (every one within ${OUTLIER_MS / 1000} s)`;
function expectFresh(times: number[], what: string): void {
  const sorted = [...times].sort((a, b) => a - b);
  expect(sorted[Math.floor(sorted.length * 0.9) - 1] ?? Infinity, what).toBeLessThan(LIMIT_MS);
  expect(sorted.at(-1) ?? Infinity, what).toBeLessThan(OUTLIER_MS);
}

let env: Awaited<ReturnType<typeof startEtcd>>;
let registry: ServiceRegistry;
let watcher: RegistryWatcher;
let dns: DnsService;
let port = 0;
const more: DnsService[] = [];

beforeAll(async () => {
  env = await startEtcd();
  registry = new ServiceRegistry({ endpoints: [env.etcd.localEndpoint], prefix: "/fresh/registry" }, silentLogger);
  watcher = new RegistryWatcher(registry, silentLogger, { retryMs: 100 });
  await watcher.start();
  port = await freeUdpTcpPort();
  dns = new DnsService({ listen: [{ host: "127.0.0.1", port }], zone: { domain: Z, ttl: 30, pods: "disabled" }, upstreams: [], policy: "random", allow: [] }, watcher, silentLogger);
  await dns.start();
});

afterAll(async () => {
  await Promise.all([dns, ...more].map((d) => d?.close()));
  await watcher?.close();
  registry?.close();
  await env?.close();
});

const fqdn = (name: string): string => `${name}.default.svc.${Z}`;
const ask = (name: string): Promise<DnsReply> => query("127.0.0.1", port, fqdn(name), "A", { timeoutMs: 1000 });

/** Polls every 5 ms until `ok`; resolves with the ms since `t0` (performance.now()) when it first holds. */
async function visibleAfter(t0: number, name: string, ok: (r: DnsReply) => boolean, giveUpMs = 3000): Promise<number> {
  for (;;) {
    const r = await ask(name);
    const ms = performance.now() - t0;
    if (ok(r)) return ms;
    if (ms > giveUpMs) throw new Error(`${fqdn(name)} still answers ${r.rcodeName} ${JSON.stringify(r.answers)} after ${Math.round(ms)} ms`);
    await sleep(5);
  }
}
const hasA = (ip: string) => (r: DnsReply): boolean => r.rcodeName === "NOERROR" && r.answers.length === 1 && r.answers[0]?.data === ip;
const nx = (r: DnsReply): boolean => r.rcodeName === "NXDOMAIN";
const clusterIp = (ip: string) => ({ type: "ClusterIP" as const, clusterIPs: [ip], ports: [] });
const report = (what: string, ms: number[]): string => `${what}: max ${Math.max(...ms).toFixed(1)} ms, all ${ms.map((m) => m.toFixed(1)).join(" ")}`;

describe("registry → DNS freshness", () => {
  it("the README states the bound these tests hold", () => {
    expect(readFileSync(new URL("../../README.md", import.meta.url), "utf8").replace(/\s+/g, " ")).toContain(`registry changes visible in DNS ${BOUND}`);
  });

  it(`a new service answers ${BOUND}`, async () => {
    const times: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const ip = `198.18.10.${i + 1}`;
      expect(nx(await ask(`new${i}`))).toBe(true);
      const t0 = performance.now();
      const put = registry.putService("default", `new${i}`, clusterIp(ip));
      times.push(await visibleAfter(t0, `new${i}`, hasA(ip)));
      await put;
    }
    expectFresh(times, report("put → answer", times));
  });

  it(`a changed cluster IP is answered ${BOUND}`, async () => {
    await registry.putService("default", "moving", clusterIp("198.18.11.1"));
    await visibleAfter(performance.now(), "moving", hasA("198.18.11.1"));
    const times: number[] = [];
    for (let i = 2; i < ROUNDS + 2; i++) {
      const t0 = performance.now();
      const put = registry.putService("default", "moving", clusterIp(`198.18.11.${i}`));
      times.push(await visibleAfter(t0, "moving", hasA(`198.18.11.${i}`)));
      await put;
    }
    expectFresh(times, report("update → answer", times));
  });

  it(`a deleted service answers NXDOMAIN ${BOUND}`, async () => {
    const times: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const ip = `198.18.12.${i + 1}`;
      await registry.putService("default", `gone${i}`, clusterIp(ip));
      await visibleAfter(performance.now(), `gone${i}`, hasA(ip));
      const t0 = performance.now();
      const rm = registry.removeService("default", `gone${i}`);
      times.push(await visibleAfter(t0, `gone${i}`, nx));
      await rm;
    }
    expectFresh(times, report("delete → NXDOMAIN", times));
  });

  it(`headless endpoints appear and disappear ${BOUND}`, async () => {
    await registry.putService("default", "pool", { type: "Headless", ports: [] });
    const up: number[] = [];
    const down: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const ip = `198.18.13.${i + 1}`;
      let t0 = performance.now();
      const put = registry.putEndpoint("default", "pool", `p${i}`, { addresses: [ip] });
      up.push(await visibleAfter(t0, "pool", hasA(ip)));
      await put;
      t0 = performance.now();
      const rm = registry.removeEndpoint("default", "pool", `p${i}`);
      down.push(await visibleAfter(t0, "pool", nx)); // no ready endpoint left: NXDOMAIN
      await rm;
    }
    expectFresh(up, report("endpoint put → answer", up));
    expectFresh(down, report("endpoint delete → NXDOMAIN", down));
  });

  it("a service created right after a query for it got NXDOMAIN is answered at once (no stale negative answer)", async () => {
    for (let i = 0; i < 5; i++) expect((await ask("late")).rcodeName).toBe("NXDOMAIN");
    expect((await dig(port, fqdn("late"), "A")).status).toBe("NXDOMAIN");
    const seen = new Promise<void>((resolve) => {
      const f = (c: RegistryChange): void => {
        if (c.kind !== "service" || c.name !== "late") return;
        watcher.off("change", f);
        resolve();
      };
      watcher.on("change", f);
    });
    const t0 = performance.now();
    await registry.putService("default", "late", clusterIp("198.18.14.1"));
    await seen;
    // DnsService subscribed first: its zone rebuild is queued ahead of this.
    await new Promise((r) => setImmediate(r));
    const r = await ask("late");
    expect([r.rcodeName, r.answers.map((a) => a.data)]).toEqual(["NOERROR", ["198.18.14.1"]]);
    expect(performance.now() - t0).toBeLessThan(OUTLIER_MS);
    const d = await dig(port, fqdn("late"), "A");
    expect([d.status, d.answer.map((a) => a.data)]).toEqual(["NOERROR", ["198.18.14.1"]]);
  });

  it("six DNS services in one process (six listen addresses) still answer at once, and the process's file I/O is not held up", async () => {
    const ports: number[] = [];
    for (let i = 0; i < 5; i++) {
      const p = await freeUdpTcpPort();
      const d = new DnsService({ listen: [{ host: "127.0.0.1", port: p }], zone: { domain: Z, ttl: 30, pods: "disabled" }, upstreams: [], policy: "random", allow: [] }, watcher, silentLogger);
      more.push(d);
      await d.start();
      ports.push(p);
    }
    await registry.putService("default", "many", clusterIp("198.18.15.1"));
    await visibleAfter(performance.now(), "many", hasA("198.18.15.1"));
    await sleep(300);
    const medians: number[] = [];
    for (const p of [port, ...ports]) {
      const times: number[] = [];
      for (let i = 0; i < 7; i++) {
        const t0 = performance.now();
        const r = await query("127.0.0.1", p, fqdn("many"), "A", { timeoutMs: 1000 });
        times.push(performance.now() - t0);
        expect(r.answers.map((a) => a.data)).toEqual(["198.18.15.1"]);
        await sleep(5);
      }
      medians.push([...times].sort((a, b) => a - b)[3] ?? 0);
    }
    expect(Math.max(...medians), report("median query time per service", medians)).toBeLessThan(50); // ~1 ms; 186 ms when each listener held a threadpool thread
    const t0 = performance.now();
    await readFile("/etc/hostname").catch(() => undefined); // libuv threadpool work
    expect(performance.now() - t0, "fs.readFile while the services idle").toBeLessThan(200); // 595 ms with the threadpool held
  });
});
