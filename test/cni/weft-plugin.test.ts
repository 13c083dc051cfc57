import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { queryIpam } from "../../src/agent/control.js";
import { parseIpv4 } from "../../src/common/ipv4.js";
import { hostIfName, podMac } from "../../src/cni/links.js";
import { Cluster } from "../../src/harness/cluster.js";
import { Netns } from "../../src/harness/netns.js";
import { execPlugin, installPlugins, resultIp, type CniOut } from "../helpers/cni.js";

/**
 * The weft main plugin in a 3-node cluster, one node per backend (kernel
 * vxlan, ebpf, tun): pods made by CNI ADD reach pods on every other node;
 * CHECK, DEL (also with the namespace gone), GC, and the reconciler that
 * releases the address of a pod whose namespace vanished without a DEL.
 */
let c: Cluster;
let plugins: ReturnType<typeof installPlugins>;
const extra: Netns[] = [];
const conf = { cniVersion: "1.1.0", name: "weft", type: "weft", bridge: "cni0" };

beforeAll(async () => {
  c = await Cluster.create({
    nodes: 3, podsPerNode: 0, backend: ["vxlan", "ebpf", "tun"],
    agentArgs: ["--ipam-reconcile-interval", "0.5", "--ipam-release-grace", "2"],
  });
  plugins = installPlugins();
}, 120_000);
afterAll(async () => {
  for (const p of extra) await p.destroy();
  await c?.destroy();
});

function weft(node: number, command: string, containerId: string, netns: string | undefined, cfg: Record<string, unknown> = conf): Promise<CniOut> {
  return execPlugin(join(plugins.binDir, "weft"), { command, containerId, ...(netns ? { netns } : {}), ifname: "eth0", conf: cfg },
    { cniPath: plugins.cniPath, socket: c.files(node).socket, nodeNs: c.node(node).ns.name });
}

async function podNs(role: string): Promise<Netns> {
  const ns = await Netns.create(role, c.tag);
  extra.push(ns);
  return ns;
}

const inNode = (node: number, ifname: string): Promise<boolean> =>
  c.node(node).ns.ip("link", "show", "dev", ifname).then(() => true, () => false);

const held = async (node: number, id: string): Promise<boolean> =>
  (await queryIpam<{ allocations: { containerId: string }[] }>(c.files(node).socket, "ipam-ls")).allocations.some((a) => a.containerId === id);

describe("weft main plugin, one node per backend", () => {
  const added = new Map<string, CniOut>();

  it("ADD wires two pods on each node: veth into the namespace, address, default route, MTU from the subnet file", async () => {
    for (const n of c.nodes) {
      for (let j = 0; j < 2; j++) {
        const ns = await podNs(`n${n.index}c${j}`);
        const id = `n${n.index}c${j}`;
        const out = await weft(n.index, "ADD", id, `/run/netns/${ns.name}`);
        expect(out.exit, out.stdout + out.stderr + c.agentLog(n.index).slice(-1500)).toBe(0);
        added.set(id, out);
        const addr = resultIp(out);
        n.pods.push({ ns, node: n.index, addr: parseIpv4(addr.split("/")[0]!) });
        expect(out.json).toMatchObject({
          cniVersion: "1.1.0",
          interfaces: [{ name: "cni0" }, { name: hostIfName("weft", id, "eth0") }, { name: "eth0", sandbox: `/run/netns/${ns.name}` }],
          ips: [{ interface: 2, gateway: expect.any(String) }],
          routes: [{ dst: "0.0.0.0/0" }],
        });
        const st = await c.status(n.index);
        const [link] = JSON.parse(await ns.ip("-json", "link", "show", "dev", "eth0")) as { mtu: number; address: string }[];
        expect(link?.mtu).toBe(st.mtu);
        expect(link?.address).toBe((out.json?.["interfaces"] as { mac: string }[])[2]?.mac);
        expect(await ns.ip("route", "show", "default")).toContain(`via ${(out.json?.["ips"] as { gateway: string }[])[0]?.gateway}`);
      }
    }
    // The ebpf node registered its pods in the endpoint map.
    expect((await c.status(1)).counters["endpoints"]).toBe(2);
  });

  it("every pod pings every other pod, across all three backends", async () => {
    expect(c.pods).toHaveLength(6);
    expect(await c.pingAll()).toEqual([]);
  });

  it("the bridge keeps one MAC (the gateway's) as pods come and go, so pods' ARP entries for the gateway stay right", async () => {
    const n = c.node(0);
    const mac = async (): Promise<string> => (JSON.parse(await n.ns.ip("-json", "link", "show", "dev", "cni0")) as { address: string }[])[0]!.address;
    const gw = (added.get("n0c0")!.json?.["ips"] as { gateway: string }[])[0]!.gateway;
    expect(await mac()).toBe(podMac(parseIpv4(gw)));
    const ns = await podNs("n0mac");
    expect((await weft(0, "ADD", "n0mac", `/run/netns/${ns.name}`)).exit).toBe(0);
    expect((await weft(0, "DEL", "n0mac", `/run/netns/${ns.name}`)).exit).toBe(0);
    expect(await mac()).toBe(podMac(parseIpv4(gw)));
  });

  it("CHECK passes as ADD left things, fails when the route is gone, and a repeated ADD repairs it with the same address", async () => {
    const pod = c.node(0).pods[0]!;
    const netns = `/run/netns/${pod.ns.name}`;
    const prev = added.get("n0c0")!.json;
    expect((await weft(0, "CHECK", "n0c0", netns, { ...conf, prevResult: prev })).exit).toBe(0);
    await pod.ns.ip("route", "del", "default");
    const bad = await weft(0, "CHECK", "n0c0", netns, { ...conf, prevResult: prev });
    expect(bad.exit).toBe(1);
    expect(bad.json).toMatchObject({ code: 103, msg: expect.stringContaining("default route") });
    const again = await weft(0, "ADD", "n0c0", netns);
    expect(resultIp(again)).toBe(resultIp(added.get("n0c0")!));
    expect((await weft(0, "CHECK", "n0c0", netns, { ...conf, prevResult: prev })).exit).toBe(0);
    const wrong = await weft(0, "CHECK", "n0c0", netns, { ...conf, prevResult: { ...prev, ips: [{ address: "198.18.99.99/24" }] } });
    expect(wrong.json).toMatchObject({ code: 103, msg: expect.stringContaining("prevResult says 198.18.99.99") });
  });

  it("DEL removes the veth, the endpoint and the address; DEL again and DEL with the namespace gone succeed", async () => {
    const ns = await podNs("del1");
    const add = await weft(1, "ADD", "del1", `/run/netns/${ns.name}`);
    expect(add.exit, add.stdout).toBe(0);
    const hostIf = hostIfName("weft", "del1", "eth0");
    expect(await inNode(1, hostIf)).toBe(true);
    expect((await c.status(1)).counters["endpoints"]).toBe(3);
    expect((await weft(1, "DEL", "del1", `/run/netns/${ns.name}`)).exit).toBe(0);
    expect(await inNode(1, hostIf)).toBe(false);
    expect(await held(1, "del1")).toBe(false);
    expect((await c.status(1)).counters["endpoints"]).toBe(2);
    expect((await weft(1, "DEL", "del1", `/run/netns/${ns.name}`)).exit).toBe(0);

    const gone = await podNs("del2");
    expect((await weft(0, "ADD", "del2", `/run/netns/${gone.name}`)).exit).toBe(0);
    await gone.destroy();
    const del = await weft(0, "DEL", "del2", `/run/netns/${gone.name}`);
    expect(del.exit, del.stdout).toBe(0);
    expect(await held(0, "del2")).toBe(false);
    expect(await inNode(0, hostIfName("weft", "del2", "eth0"))).toBe(false);
  });

  it("the reconciler releases the address of a pod whose namespace vanished without DEL, and not a live one's", async () => {
    const dead = await podNs("dead");
    const live = await podNs("live");
    expect((await weft(2, "ADD", "dead", `/run/netns/${dead.name}`)).exit).toBe(0);
    expect((await weft(2, "ADD", "live", `/run/netns/${live.name}`)).exit).toBe(0);
    await dead.destroy();
    // Grace 2 s, passes every 0.5 s: released within ~3 s, not before the grace is over.
    await new Promise((r) => setTimeout(r, 1000));
    expect(await held(2, "dead")).toBe(true);
    const end = Date.now() + 10_000;
    while ((await held(2, "dead")) && Date.now() < end) await new Promise((r) => setTimeout(r, 200));
    expect(await held(2, "dead")).toBe(false);
    expect(await held(2, "live")).toBe(true);
    expect(c.agentLog(2)).toContain("releasing the address of a pod whose network namespace is gone");
    expect((await weft(2, "DEL", "live", `/run/netns/${live.name}`)).exit).toBe(0);
  });

  it("GC releases attachments the runtime no longer has and removes their veth", async () => {
    const ns = await podNs("gc1");
    const cfg = { ...conf, ipam: { gcMinAgeSeconds: 0 } };
    expect((await weft(0, "ADD", "gc1", `/run/netns/${ns.name}`, cfg)).exit).toBe(0);
    const valid = [...c.node(0).pods.keys()].map((j) => ({ containerID: `n0c${j}`, ifname: "eth0" }));
    const gc = await weft(0, "GC", "", undefined, { ...cfg, "cni.dev/valid-attachments": valid });
    expect(gc.exit, gc.stdout).toBe(0);
    expect(await held(0, "gc1")).toBe(false);
    expect(await inNode(0, hostIfName("weft", "gc1", "eth0"))).toBe(false);
    expect(await held(0, "n0c0")).toBe(true);
    expect(await c.pingAll()).toEqual([]);
  });

  it("STATUS answers 0 on a ready node; a config asking for another IPAM plugin is refused", async () => {
    expect((await weft(1, "STATUS", "", undefined)).exit).toBe(0);
    const bad = await weft(1, "ADD", "x", "/proc/self/ns/net", { ...conf, ipam: { type: "host-local" } });
    expect(bad.json).toMatchObject({ code: 7, msg: expect.stringContaining("allocates addresses itself") });
    expect(existsSync(c.files(1).socket)).toBe(true);
  });
});
