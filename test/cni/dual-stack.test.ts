import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostIfName } from "../../src/cni/links.js";
import type { Netns } from "../../src/harness/netns.js";
import { installPlugins, type CniOut } from "../helpers/cni.js";
import { PodHost } from "./podhost.js";
import { join } from "node:path";

/**
 * The weft main plugin on a dual-stack node and an IPv6-only node, in real
 * namespaces: both families in the pod (IPv6 usable at once: no DAD wait,
 * router advertisements ignored), default routes 0.0.0.0/0 and ::/0 via the
 * bridge's gateways, pods ping each other and the gateway over IPv6; CHECK
 * verifies both families; DEL removes everything; hostile requests fail
 * saying why.
 */
const V4 = "198.18.9.0/24";
const V6 = "2001:db8:9:1::/64";
let plugins: ReturnType<typeof installPlugins>;
let node: PodHost;
let only6: PodHost;
const pods: Netns[] = [];
const conf = { cniVersion: "1.1.0", name: "weft", type: "weft", bridge: "cni0" };

beforeAll(async () => {
  plugins = installPlugins();
  node = await PodHost.start("ds", V4, V6);
  // As the agent binds an IPv6-only lease: its IPv4 subnet is 0.0.0.0/0 (flannel's key has an empty IPv4 part).
  only6 = await PodHost.start("v6", "0.0.0.0/0", "2001:db8:9:2::/64");
}, 60_000);
afterAll(async () => {
  for (const p of pods) await p.destroy();
  await node?.stop();
  await only6?.stop();
});

async function pod(h: PodHost, role: string): Promise<Netns> {
  const ns = await h.pod(role);
  pods.push(ns);
  return ns;
}

function weft(h: PodHost, command: string, id: string, ns: Netns | undefined, extra: { conf?: Record<string, unknown>; args?: string } = {}): Promise<CniOut> {
  return h.plugin(join(plugins.binDir, "weft"), plugins.cniPath, {
    command, containerId: id, ifname: "eth0", ...(ns ? { netns: `/run/netns/${ns.name}` } : {}), conf: extra.conf ?? conf, ...(extra.args ? { args: extra.args } : {}),
  });
}

const ips = (out: CniOut): string[] => ((out.json?.["ips"] ?? []) as { address: string }[]).map((i) => i.address);

describe("weft plugin, dual-stack node", () => {
  const added = new Map<string, { ns: Netns; out: CniOut }>();

  it("ADD gives each pod an IPv4 and an IPv6 address, default routes for both families via the bridge's gateways", async () => {
    for (const id of ["a", "b"]) {
      const ns = await pod(node, id);
      const out = await weft(node, "ADD", id, ns);
      expect(out.exit, out.stdout + out.stderr).toBe(0);
      added.set(id, { ns, out });
    }
    const a = added.get("a")!.out;
    expect(a.json).toMatchObject({
      ips: [{ address: "198.18.9.2/24", gateway: "198.18.9.1", interface: 2 }, { address: "2001:db8:9:1::2/64", gateway: "2001:db8:9:1::1", interface: 2 }],
      routes: [{ dst: "0.0.0.0/0", gw: "198.18.9.1" }, { dst: "::/0", gw: "2001:db8:9:1::1" }],
    });
    expect(ips(added.get("b")!.out)).toEqual(["198.18.9.3/24", "2001:db8:9:1::3/64"]);
    // The bridge carries both gateways.
    const br = await node.ns.ip("-6", "addr", "show", "dev", "cni0");
    expect(br).toContain("inet6 2001:db8:9:1::1/64");
    expect(br).not.toMatch(/2001:db8:9:1::1\/64.*tentative/);
    // In the pod: the address is usable at once (not tentative), RAs are ignored, the IPv6 default route is weft's.
    const ns = added.get("a")!.ns;
    const addr = await ns.ip("-6", "addr", "show", "dev", "eth0");
    expect(addr).toContain("inet6 2001:db8:9:1::2/64");
    expect(addr).not.toMatch(/2001:db8:9:1::2\/64.*tentative/);
    expect(await ns.ip("-6", "route", "show", "default")).toContain("via 2001:db8:9:1::1 dev eth0");
    expect((await ns.exec(["cat", "/proc/sys/net/ipv6/conf/eth0/accept_ra"])).trim()).toBe("0");
    const [link] = JSON.parse(await ns.ip("-json", "link", "show", "dev", "eth0")) as { mtu: number }[];
    expect(link?.mtu).toBe(1450);
    // The data path was told both addresses.
    expect(await node.endpoints()).toEqual(expect.arrayContaining([expect.objectContaining({ op: "add", ip: "198.18.9.2", ip6: "2001:db8:9:1::2" })]));
  });

  it("pods ping each other and the gateway over IPv6 (ping -6) at once, and over IPv4", async () => {
    const a = added.get("a")!.ns;
    const b = added.get("b")!.ns;
    await a.exec(["ping", "-6", "-c", "2", "-W", "2", "2001:db8:9:1::3"]);
    await b.exec(["ping", "-6", "-c", "2", "-W", "2", "2001:db8:9:1::2"]);
    await a.exec(["ping", "-6", "-c", "1", "-W", "2", "2001:db8:9:1::1"]);
    await a.exec(["ping", "-c", "1", "-W", "2", "198.18.9.3"]);
    await b.exec(["ping", "-c", "1", "-W", "2", "198.18.9.1"]);
  });

  it("CHECK passes as ADD left things; fails naming the IPv6 route or address when one is gone; a repeated ADD repairs", async () => {
    const { ns, out } = added.get("a")!;
    const prev = { ...conf, prevResult: out.json };
    const ok = await weft(node, "CHECK", "a", ns, { conf: prev });
    expect(ok.exit, ok.stdout).toBe(0);
    await ns.ip("-6", "route", "del", "default");
    const noRoute = await weft(node, "CHECK", "a", ns, { conf: prev });
    expect(noRoute.json).toMatchObject({ code: 103, msg: expect.stringContaining("IPv6 default route") });
    const again = await weft(node, "ADD", "a", ns);
    expect(ips(again)).toEqual(ips(out));
    expect((await weft(node, "CHECK", "a", ns, { conf: prev })).exit).toBe(0);
    await ns.ip("-6", "addr", "del", "2001:db8:9:1::2/64", "dev", "eth0");
    const noAddr = await weft(node, "CHECK", "a", ns, { conf: prev });
    expect(noAddr.json).toMatchObject({ code: 103, msg: expect.stringContaining("does not carry 2001:db8:9:1::2/64") });
    expect((await weft(node, "ADD", "a", ns)).exit).toBe(0);
    // A prevResult naming only the IPv4 address does not match a dual-stack attachment.
    const partial = await weft(node, "CHECK", "a", ns, { conf: { ...conf, prevResult: { ...out.json, ips: [{ address: "198.18.9.2/24" }] } } });
    expect(partial.json).toMatchObject({ code: 103, msg: expect.stringContaining("holds 198.18.9.2, 2001:db8:9:1::2") });
  });

  it("requested addresses of both families (runtimeConfig.ips, CNI_ARGS IP=) are given", async () => {
    const ns = await pod(node, "req");
    const out = await weft(node, "ADD", "req", ns, { conf: { ...conf, runtimeConfig: { ips: ["198.18.9.50/24", "2001:db8:9:1::50/64"] } } });
    expect(out.exit, out.stdout).toBe(0);
    expect(ips(out)).toEqual(["198.18.9.50/24", "2001:db8:9:1::50/64"]);
    await ns.exec(["ping", "-6", "-c", "1", "-W", "2", "2001:db8:9:1::2"]);
    expect((await weft(node, "DEL", "req", ns)).exit).toBe(0);
    const ns2 = await pod(node, "req2");
    const out2 = await weft(node, "ADD", "req2", ns2, { args: "IP=2001:db8:9:1::51" });
    expect(ips(out2)).toEqual(["198.18.9.4/24", "2001:db8:9:1::51/64"]);
    expect((await weft(node, "DEL", "req2", ns2)).exit).toBe(0);
  });

  it.each([
    ["an IPv6 address outside the node's subnet", "IP=2001:db8:8::5", 102, /2001:db8:8::5 cannot be handed out: it is outside this node's IPv6 subnet 2001:db8:9:1::\/64/],
    ["malformed IPv6", "IP=2001:db8::zz", 7, /requested address "2001:db8::zz".*not an IPv6 address/],
    ["the IPv6 gateway", "IP=2001:db8:9:1::1", 102, /IPv6 gateway/],
    ["two IPv6 addresses", "IP=2001:db8:9:1::60,2001:db8:9:1::61", 7, /2 different IPv6 addresses/],
    ["an IPv4-mapped address", "IP=::ffff:198.18.9.70", 102, /IPv4-mapped/],
  ])("a request of %s is refused with a clear error, and nothing is left behind", async (_what, args, code, msg) => {
    const ns = await pod(node, `h${code}${args.length}`);
    const id = `hostile${args.length}`;
    const out = await weft(node, "ADD", id, ns, { args });
    expect(out.exit).toBe(1);
    expect(out.json).toMatchObject({ code });
    expect(String(out.json?.["msg"])).toMatch(msg);
    expect(await node.ns.ip("link", "show", "dev", hostIfName("weft", id, "eth0")).then(() => true, () => false)).toBe(false);
  });

  it("DEL removes the veth, the endpoint (both addresses) and the allocation; the address is free again", async () => {
    const { ns } = added.get("b")!;
    expect((await weft(node, "DEL", "b", ns)).exit).toBe(0);
    expect(await node.ns.ip("link", "show", "dev", hostIfName("weft", "b", "eth0")).then(() => true, () => false)).toBe(false);
    expect(await node.endpoints()).toEqual(expect.arrayContaining([{ op: "del", ip: "198.18.9.3", ip6: "2001:db8:9:1::3" }]));
    expect((await weft(node, "DEL", "b", ns)).exit).toBe(0);
    const again = await weft(node, "ADD", "b2", ns, { args: "IP=2001:db8:9:1::3" });
    expect(again.exit, again.stdout).toBe(0);
    expect((await weft(node, "DEL", "b2", ns)).exit).toBe(0);
  });
});

describe("weft plugin, a node that becomes dual-stack", () => {
  it("a pod added while the node was IPv4-only keeps its IPv4 address at a repeated ADD and gains IPv6 in place", async () => {
    const h = await PodHost.start("up", "198.18.12.0/24", undefined);
    try {
      const ns = await pod(h, "u");
      const first = await weft(h, "ADD", "u", ns);
      expect(ips(first)).toEqual(["198.18.12.2/24"]);
      await h.bind("198.18.12.0/24", "2001:db8:12:1::/64");
      const again = await weft(h, "ADD", "u", ns);
      expect(again.exit, again.stdout).toBe(0);
      expect(ips(again)).toEqual(["198.18.12.2/24", "2001:db8:12:1::2/64"]);
      expect(await ns.ip("-6", "route", "show", "default")).toContain("via 2001:db8:12:1::1");
      await ns.exec(["ping", "-6", "-c", "1", "-W", "2", "2001:db8:12:1::1"]);
      await ns.exec(["ping", "-c", "1", "-W", "2", "198.18.12.1"]);
      expect((await weft(h, "CHECK", "u", ns, { conf: { ...conf, prevResult: again.json } })).exit).toBe(0);
      expect((await weft(h, "DEL", "u", ns)).exit).toBe(0);
    } finally {
      await h.stop();
    }
  });
});

describe("weft plugin, IPv6-only node", () => {
  it("ADD gives IPv6 alone with ::/0 via the gateway; pods ping each other and the gateway; an IPv4 request is refused", async () => {
    // A node whose new devices start with IPv6 disabled: weft switches it on for its bridge (and the pod's end).
    await only6.ns.exec(["tee", "/proc/sys/net/ipv6/conf/default/disable_ipv6"], { input: "1\n" });
    const x = await pod(only6, "x");
    const y = await pod(only6, "y");
    const ox = await weft(only6, "ADD", "x", x);
    expect(ox.exit, ox.stdout + ox.stderr).toBe(0);
    expect(ox.json).toMatchObject({ ips: [{ address: "2001:db8:9:2::2/64", gateway: "2001:db8:9:2::1", interface: 2 }], routes: [{ dst: "::/0", gw: "2001:db8:9:2::1" }] });
    expect((ox.json?.["ips"] as unknown[]).length).toBe(1);
    expect((await only6.ns.exec(["cat", "/proc/sys/net/ipv6/conf/cni0/disable_ipv6"])).trim()).toBe("0");
    expect((await weft(only6, "ADD", "y", y)).exit).toBe(0);
    expect(await x.ip("-4", "addr", "show", "dev", "eth0")).not.toContain("inet ");
    await x.exec(["ping", "-6", "-c", "2", "-W", "2", "2001:db8:9:2::3"]);
    await y.exec(["ping", "-6", "-c", "1", "-W", "2", "2001:db8:9:2::1"]);
    expect((await weft(only6, "CHECK", "x", x, { conf: { ...conf, prevResult: ox.json } })).exit).toBe(0);
    const z = await pod(only6, "z");
    const bad = await weft(only6, "ADD", "z", z, { args: "IP=198.18.9.9" });
    expect(bad.json).toMatchObject({ code: 102, msg: expect.stringContaining("198.18.9.9 is IPv4, and this node has no IPv4 subnet") });
    for (const [id, ns] of [["x", x], ["y", y]] as const) expect((await weft(only6, "DEL", id, ns)).exit).toBe(0);
    expect(await only6.ns.ip("link", "show", "dev", hostIfName("weft", "x", "eth0")).then(() => true, () => false)).toBe(false);
  });
});
