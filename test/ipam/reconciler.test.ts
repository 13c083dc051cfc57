import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run } from "../../src/common/exec.js";
import { parseCidr } from "../../src/common/ipv4.js";
import { silentLogger } from "../../src/common/log.js";
import { Netns } from "../../src/harness/netns.js";
import { parseIpamSpec } from "../../src/ipam/config.js";
import { IpamService } from "../../src/ipam/ipam.js";
import { isDead, NetnsReconciler } from "../../src/ipam/reconciler.js";
import { IpamStore } from "../../src/ipam/store.js";

/**
 * The reconciler's rule: only an allocation whose network namespace the
 * agent identified at ADD (a namespace file it could stat: its inode) is
 * ever freed as "vanished". Real namespaces, a real store.
 */
const root = mkdtempSync(join(tmpdir(), "weft-reconciler-"));
let store: IpamStore;
let ipam: IpamService;
let rec: NetnsReconciler;
const spec = parseIpamSpec({});
const made: Netns[] = [];

beforeAll(async () => {
  store = await IpamStore.open(join(root, "ipam"), silentLogger);
  ipam = new IpamService(store, silentLogger);
  ipam.bind(parseCidr("198.18.7.0/24"));
  rec = new NetnsReconciler(ipam, silentLogger, { intervalMs: 60_000, graceMs: 0 });
});
afterAll(async () => {
  for (const ns of made) await ns.destroy();
  await ipam?.close();
  rmSync(root, { recursive: true, force: true });
});

const add = (id: string, netns: string) =>
  ipam.allocate({ network: "net", containerId: id, ifname: "eth0", netns, hostIf: "", pod: { namespace: "", name: "", labels: {} }, requested: undefined, spec }, "k");
const held = (id: string): boolean => ipam.find("net", id, "eth0") !== undefined;

describe("the netns reconciler frees only what it identified", () => {
  it("a namespace the agent saw at ADD and that is gone now is freed; a live one is kept", async () => {
    const dead = await Netns.create("rdead");
    const live = await Netns.create("rlive");
    made.push(dead, live);
    const g1 = await add("dead", `/run/netns/${dead.name}`);
    const g2 = await add("live", `/run/netns/${live.name}`);
    expect(g1.allocation.netnsInode).toBeGreaterThan(0);
    expect(g2.allocation.netnsInode).toBeGreaterThan(0);
    await dead.destroy();
    expect(await rec.pass(Date.now(), 0)).toBe(1);
    expect(held("dead")).toBe(false);
    expect(held("live")).toBe(true);
  });

  it("a namespace replaced by another at the same path counts as gone", async () => {
    const ns = await Netns.create("rswap");
    made.push(ns);
    await add("swap", `/run/netns/${ns.name}`);
    await run(["ip", "netns", "del", ns.name]);
    await run(["ip", "netns", "add", ns.name]); // same path, another namespace
    expect(isDead(ipam.find("net", "swap", "eth0")!)).toBe(true);
    expect(await rec.pass(Date.now(), 0)).toBe(1);
  });

  it("a path the agent could not see at ADD (the plugin ran in another mount namespace) is never freed, only by DEL", async () => {
    const g = await add("elsewhere", "/run/netns/only-in-the-runtimes-mount-namespace");
    expect(g.allocation.netnsInode).toBe(0);
    expect(isDead(g.allocation)).toBe(false);
    expect(await rec.pass(Date.now(), 0)).toBe(0);
    expect(await rec.pass(Date.now() + 3_600_000, 0)).toBe(0);
    expect(held("elsewhere")).toBe(true);
    expect(await ipam.release("net", "elsewhere", "eth0", "del")).toBeDefined();
  });

  it("a path that was not a namespace file at ADD is never freed, even once it is gone", async () => {
    const file = join(root, "not-a-netns");
    writeFileSync(file, "");
    const g = await add("plainfile", file);
    expect(g.allocation.netnsInode).toBe(0);
    rmSync(file);
    expect(await rec.pass(Date.now(), 0)).toBe(0);
    expect(held("plainfile")).toBe(true);
    await ipam.release("net", "plainfile", "eth0", "del");
  });
});
