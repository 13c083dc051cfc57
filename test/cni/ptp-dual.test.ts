import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Netns } from "../../src/harness/netns.js";
import { installPlugins, type CniOut } from "../helpers/cni.js";
import { PodHost } from "./podhost.js";

/**
 * weft-ipam as the IPAM of Debian's ptp plugin on a dual-stack node and an
 * IPv6-only node: one address per family from the node's subnets, ptp
 * configures both, the pod reaches the host end over IPv6 and IPv4, CHECK
 * passes, DEL (twice) releases both.
 */
let plugins: ReturnType<typeof installPlugins>;
let dual: PodHost;
let only6: PodHost;
const pods: Netns[] = [];
const ipam = { type: "weft-ipam", routes: [{ dst: "0.0.0.0/0" }, { dst: "::/0" }] };
const conf = { cniVersion: "1.0.0", name: "ptpnet", type: "ptp", ipam };

beforeAll(async () => {
  plugins = installPlugins();
  dual = await PodHost.start("pd", "198.18.11.0/24", "2001:db8:11:1::/64");
  only6 = await PodHost.start("p6", undefined, "2001:db8:11:2::/64");
}, 60_000);
afterAll(async () => {
  for (const p of pods) await p.destroy();
  await dual?.stop();
  await only6?.stop();
});

function ptp(h: PodHost, command: string, id: string, ns: Netns, c: Record<string, unknown> = conf): Promise<CniOut> {
  return h.plugin("/usr/lib/cni/ptp", plugins.cniPath, { command, containerId: id, netns: `/run/netns/${ns.name}`, ifname: "eth0", conf: c });
}

async function weftIpamHolds(h: PodHost, id: string): Promise<boolean> {
  // weft-ipam's own CHECK answers 3 (unknown container) once the address is released.
  const out = await h.plugin(join(plugins.binDir, "weft-ipam"), plugins.cniPath, { command: "CHECK", containerId: id, ifname: "eth0", netns: "/proc/self/ns/net", conf: { ...conf, type: "none" } });
  return out.exit === 0;
}

describe("weft-ipam under Debian's ptp plugin, dual-stack", () => {
  it("ADD gives both families; the pod reaches the host end over IPv6 and IPv4; CHECK passes; DEL twice releases both", async () => {
    const ns = await dual.pod("a");
    pods.push(ns);
    const add = await ptp(dual, "ADD", "pp1", ns);
    expect(add.exit, add.stdout + add.stderr).toBe(0);
    const ips = add.json?.["ips"] as { address: string; gateway: string }[];
    expect(ips.map((i) => i.address)).toEqual(["198.18.11.2/24", "2001:db8:11:1::2/64"]);
    expect(ips.map((i) => i.gateway)).toEqual(["198.18.11.1", "2001:db8:11:1::1"]);
    expect(await ns.ip("-6", "route", "show", "default")).toContain("via 2001:db8:11:1::1");
    await ns.exec(["ping", "-6", "-c", "1", "-W", "3", "2001:db8:11:1::1"]);
    await ns.exec(["ping", "-c", "1", "-W", "2", "198.18.11.1"]);
    const check = await ptp(dual, "CHECK", "pp1", ns, { ...conf, prevResult: add.json });
    expect(check.exit, check.stdout + check.stderr).toBe(0);
    expect(await weftIpamHolds(dual, "pp1")).toBe(true);
    for (let i = 0; i < 2; i++) {
      const del = await ptp(dual, "DEL", "pp1", ns);
      expect(del.exit, del.stdout + del.stderr).toBe(0);
    }
    expect(await weftIpamHolds(dual, "pp1")).toBe(false);
  });

  it("0.4.0 results label each address with its version (4, 6)", async () => {
    const ns = await dual.pod("old");
    pods.push(ns);
    const add = await ptp(dual, "ADD", "pp-old", ns, { ...conf, cniVersion: "0.4.0" });
    expect(add.exit, add.stdout + add.stderr).toBe(0);
    expect((add.json?.["ips"] as { version: string }[]).map((i) => i.version)).toEqual(["4", "6"]);
    expect((await ptp(dual, "DEL", "pp-old", ns, { ...conf, cniVersion: "0.4.0" })).exit).toBe(0);
  });
});

describe("weft-ipam under Debian's ptp plugin, IPv6-only", () => {
  it("ADD gives IPv6 alone (the IPv4 route of the ipam section is left out); the pod reaches the host end", async () => {
    const ns = await only6.pod("b");
    pods.push(ns);
    const add = await ptp(only6, "ADD", "pp6", ns);
    expect(add.exit, add.stdout + add.stderr).toBe(0);
    expect(add.json).toMatchObject({ ips: [{ address: "2001:db8:11:2::2/64", gateway: "2001:db8:11:2::1" }], routes: [{ dst: "::/0" }] });
    expect((add.json?.["routes"] as unknown[]).length).toBe(1);
    await ns.exec(["ping", "-6", "-c", "1", "-W", "3", "2001:db8:11:2::1"]);
    expect((await ptp(only6, "DEL", "pp6", ns)).exit).toBe(0);
    expect(await weftIpamHolds(only6, "pp6")).toBe(false);
  });
});
