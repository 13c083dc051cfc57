import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseCidr } from "../../src/common/ipv4.js";
import { silentLogger } from "../../src/common/log.js";
import { Netns } from "../../src/harness/netns.js";
import { parseIpamSpec } from "../../src/ipam/config.js";
import { PoolExhaustedError } from "../../src/ipam/errors.js";
import { IpamService } from "../../src/ipam/ipam.js";
import { IpamMetrics } from "../../src/ipam/metrics.js";
import { PoolPressure } from "../../src/ipam/pressure.js";
import { NetnsReconciler } from "../../src/ipam/reconciler.js";
import { IpamStore } from "../../src/ipam/store.js";

/**
 * Reclaim under pressure (seed 2.1.3): a pool filled with pods whose network
 * namespaces then vanish gives new ADDs addresses at once, without the
 * reconciler's timer (an hour here) and before its grace (an hour); live
 * pods are never touched; a pool full of live pods fails the ADD saying
 * what is held and what waits. Real namespaces, a real store.
 */
const root = mkdtempSync(join(tmpdir(), "weft-pressure-"));
const spec = parseIpamSpec({});
const made: Netns[] = [];
const HOUR = 3_600_000;

interface Node { ipam: IpamService; rec: NetnsReconciler; pressure: PoolPressure; registry: Registry }
const nodes: Node[] = [];
async function node(name: string, subnet: string, graceMs: number): Promise<Node> {
  const registry = new Registry();
  const store = await IpamStore.open(join(root, name), silentLogger);
  const ipam = new IpamService(store, silentLogger, new IpamMetrics(registry));
  ipam.bind(parseCidr(subnet));
  const rec = new NetnsReconciler(ipam, silentLogger, { intervalMs: HOUR, graceMs: HOUR }); // never started: no timer
  const pressure = new PoolPressure(ipam, rec, silentLogger, { threshold: 0.9, graceMs });
  ipam.pressure = pressure;
  const n = { ipam, rec, pressure, registry };
  nodes.push(n);
  return n;
}
beforeAll(() => undefined);
afterAll(async () => {
  for (const n of nodes) {
    n.pressure.stop();
    await n.ipam.close();
  }
  for (const ns of made) await ns.destroy();
  rmSync(root, { recursive: true, force: true });
});

const add = (n: Node, id: string, netns: string) =>
  n.ipam.allocate({ network: "net", containerId: id, ifname: "eth0", netns, hostIf: "", pod: { namespace: "", name: "", labels: {} }, requested: undefined, spec }, "k");
async function pod(n: Node, id: string): Promise<Netns> {
  const ns = await Netns.create(`pr${id}`);
  made.push(ns);
  await add(n, id, `/run/netns/${ns.name}`);
  return ns;
}
const ratio = async (n: Node): Promise<number> => Number(/^weft_ipam_pool_usage_ratio\{network="net",pool="default",family="4"\} ([\d.]+)$/m.exec(await n.registry.metrics())?.[1]);

describe("reclaim under pressure", () => {
  it("a full pool of vanished pods: the next ADD frees them (grace 0) and gets an address; live pods keep theirs", async () => {
    const n = await node("full", "198.18.9.0/28", 0); // 13 addresses to hand out (network, gateway, broadcast kept)
    const live = [await pod(n, "live0"), await pod(n, "live1")];
    const dead: Netns[] = [];
    for (let i = 0; i < 11; i++) dead.push(await pod(n, `dead${i}`));
    expect(n.ipam.list()).toHaveLength(13);
    expect(await ratio(n)).toBe(1);
    for (const ns of dead) await ns.destroy();
    const g = await add(n, "new", "");
    expect(g.existed).toBe(false);
    expect(n.ipam.find("net", "live0", "eth0")).toBeDefined();
    expect(n.ipam.find("net", "live1", "eth0")).toBeDefined();
    for (let i = 0; i < 11; i++) expect(n.ipam.find("net", `dead${i}`, "eth0")).toBeUndefined();
    expect(n.pressure.events).toBeGreaterThan(0);
    expect(await ratio(n)).toBeCloseTo(3 / 13, 5);
    expect(live).toHaveLength(2);
  });

  it("crossing the threshold reclaims in the background after the pressure grace, without an ADD failing or the timer", async () => {
    const n = await node("cross", "198.18.10.0/28", 300);
    const dead: Netns[] = [];
    for (let i = 0; i < 11; i++) dead.push(await pod(n, `d${i}`)); // 11 of 13: below 0.9
    for (const ns of dead) await ns.destroy();
    expect(n.pressure.events).toBe(0);
    await pod(n, "l0"); // 12 of 13 = 0.92: pressure
    expect(n.pressure.events).toBe(1);
    const t0 = Date.now();
    while (n.ipam.list().length > 1 && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 50));
    expect(n.ipam.list().map((a) => a.containerId)).toEqual(["l0"]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250); // not before the pressure grace
  });

  it("an early pass asked while a timer pass runs is not lost: it runs after it with its own, shorter grace", async () => {
    const n = await node("overlap", "198.18.12.0/28", 0);
    const ns = await pod(n, "gone");
    await ns.destroy();
    const timer = n.rec.pass(Date.now(), HOUR); // the timer's pass: an hour's grace frees nothing
    const early = n.rec.pass(Date.now(), 0); // asked while it runs
    expect([await timer, await early]).toEqual([0, 1]);
    expect(n.ipam.find("net", "gone", "eth0")).toBeUndefined();
  });

  it("a pass skips an attachment with an ADD or DEL in flight instead of waiting behind it (that ADD may be waiting on the pass)", async () => {
    const n = await node("busy", "198.18.13.0/28", 0);
    const ns = await pod(n, "inflight");
    await ns.destroy();
    const busy = n.ipam.busy.bind(n.ipam);
    n.ipam.busy = (key) => key.endsWith("/inflight/eth0") || busy(key);
    try {
      expect(await n.rec.pass(Date.now(), 0)).toBe(0);
      expect(n.ipam.find("net", "inflight", "eth0")).toBeDefined();
    } finally {
      n.ipam.busy = busy;
    }
    expect(await n.rec.pass(Date.now(), 0)).toBe(1);
  });

  it("a pool full of live pods: the ADD fails saying what is held and that none waits; nothing is freed", async () => {
    const n = await node("live", "198.18.11.0/29", 0); // 5 addresses
    for (let i = 0; i < 5; i++) await pod(n, `x${i}`);
    const err = await add(n, "one-more", "").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PoolExhaustedError);
    expect((err as Error).message).toMatch(/no free address in pool "default" of 198\.18\.11\.0\/29: 5 of 5 in use; 0 of them held by pods whose network namespace is gone, freed once gone for 0 s/);
    expect(n.ipam.list()).toHaveLength(5);
  });
});
