import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run } from "../../src/common/exec.js";
import type { Netns } from "../../src/harness/netns.js";
import { installPlugins, type CniOut } from "../helpers/cni.js";
import { PodHost } from "./podhost.js";

/**
 * hostPort for real: the conflist `weft install-cni` writes (weft, then
 * Debian's portmap with the portMappings capability) run as a runtime runs
 * a list (libcni: each plugin in order, the previous result as prevResult,
 * runtimeConfig for the capabilities a plugin declares; DEL in reverse), a
 * listener in a dual-stack pod, and a client in another namespace that
 * reaches it through the node's host port over IPv4 and IPv6.
 */
let plugins: ReturnType<typeof installPlugins>;
let node: PodHost;
let client: Netns;
let pod: Netns;
const HOST4 = "192.0.2.1";
const HOST6 = "2001:db8:ffff::1";
const MAPPINGS = [{ hostPort: 18080, containerPort: 8080, protocol: "tcp" }];

interface Conflist { cniVersion: string; name: string; plugins: Record<string, unknown>[] }

beforeAll(async () => {
  plugins = installPlugins();
  node = await PodHost.start("hp", "198.18.10.0/24", "2001:db8:10:1::/64");
  await node.ns.exec(["tee", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"], { input: "1\n" });
  client = await node.pod("cl");
  // client <-> node: 192.0.2.0/24 and 2001:db8:ffff::/64 (the node's "external" side).
  await node.ns.ip("link", "add", "hpn", "type", "veth", "peer", "name", "hpc", "netns", client.name);
  await node.ns.ip("addr", "add", `${HOST4}/24`, "dev", "hpn");
  await node.ns.ip("addr", "add", `${HOST6}/64`, "dev", "hpn", "nodad");
  await node.ns.ip("link", "set", "hpn", "up");
  await client.ip("addr", "add", "192.0.2.2/24", "dev", "hpc");
  await client.ip("addr", "add", "2001:db8:ffff::2/64", "dev", "hpc", "nodad");
  await client.ip("link", "set", "hpc", "up");
  pod = await node.pod("srv");
}, 60_000);
afterAll(async () => {
  await pod?.destroy();
  await client?.destroy();
  await node?.stop();
});

/** Runs the conflist for one attachment as libcni does. Returns each plugin's output. */
async function runList(list: Conflist, command: "ADD" | "DEL" | "CHECK", id: string, netns: string, prev?: Record<string, unknown>): Promise<CniOut[]> {
  const order = command === "DEL" ? [...list.plugins].reverse() : list.plugins;
  const outs: CniOut[] = [];
  let prevResult = command === "ADD" ? undefined : prev;
  for (const p of order) {
    const caps = (p["capabilities"] ?? {}) as Record<string, boolean>;
    const { capabilities: _c, ...rest } = p;
    const conf = {
      ...rest, cniVersion: list.cniVersion, name: list.name,
      ...(caps["portMappings"] ? { runtimeConfig: { portMappings: MAPPINGS } } : {}),
      ...(prevResult ? { prevResult } : {}),
    };
    const out = await node.plugin(join(String(p["type"]) === "weft" ? plugins.binDir : "/usr/lib/cni", String(p["type"])), plugins.cniPath, {
      command, containerId: id, netns, ifname: "eth0", conf,
    });
    outs.push(out);
    if (out.exit !== 0) throw new Error(`${String(p["type"])} ${command} failed (exit ${out.exit}): ${out.stdout} ${out.stderr}`);
    if (command === "ADD") prevResult = out.json;
  }
  return outs;
}

/** Connects from the client namespace; the listener's greeting, or the error. */
async function fetchFromClient(host: string): Promise<string> {
  const script = `const s=require("net").connect({host:${JSON.stringify(host)},port:18080,timeout:3000});let b="";` +
    `s.on("data",d=>b+=d);s.on("end",()=>{console.log(b.trim());process.exit(0)});s.on("timeout",()=>{console.log("timeout");process.exit(0)});s.on("error",e=>{console.log(e.code);process.exit(0)});`;
  return (await client.exec([process.execPath, "-e", script], { timeoutMs: 15_000 })).trim();
}

describe("hostPort through the installed conflist (weft + Debian portmap)", () => {
  let list: Conflist;
  let added: CniOut[];

  it("install-cni chained portmap with the portMappings capability, for a CNI version the installed portmap speaks", async () => {
    list = JSON.parse(readFileSync(join(plugins.confDir, "10-weft.conflist"), "utf8")) as Conflist;
    expect(list.plugins.map((p) => p["type"])).toEqual(["weft", "portmap"]);
    expect(list.plugins[1]).toMatchObject({ capabilities: { portMappings: true } });
    const answer = JSON.parse(await run(["sh", "-c", 'echo \'{"cniVersion":"1.0.0"}\' | CNI_COMMAND=VERSION /usr/lib/cni/portmap'])) as { supportedVersions: string[] };
    expect(answer.supportedVersions).toContain(list.cniVersion);
  });

  it("ADD runs weft then portmap; a listener in the pod is reached on the node's host port over IPv4 and IPv6", async () => {
    const netns = `/run/netns/${pod.name}`;
    added = await runList(list, "ADD", "hp1", netns);
    const ips = ((added[1]?.json?.["ips"] ?? []) as { address: string }[]).map((i) => i.address);
    expect(ips).toEqual(["198.18.10.2/24", "2001:db8:10:1::2/64"]);
    const srv = pod.spawn([process.execPath, "-e", 'require("net").createServer(s=>s.end("hello from the pod "+s.localAddress+"\\n")).listen(8080,"::")']);
    try {
      let got = "";
      for (let i = 0; i < 50 && !got.startsWith("hello"); i++) {
        got = await fetchFromClient(HOST4);
        if (!got.startsWith("hello")) await new Promise((r) => setTimeout(r, 100));
      }
      expect(got).toBe("hello from the pod ::ffff:198.18.10.2");
      expect(await fetchFromClient(HOST6)).toBe("hello from the pod 2001:db8:10:1::2");
      // CHECK of weft (both families) passes with the list's result. portmap's own CHECK is not run: Debian's
      // portmap 1.1.1 looks for its IPv4 rules in ip6tables and fails (containernetworking/plugins#819, fixed later).
      await runList({ ...list, plugins: list.plugins.slice(0, 1) }, "CHECK", "hp1", netns, added[1]?.json);
      // DEL in reverse order removes the mappings and the pod's interface: the host port answers no more.
      await runList(list, "DEL", "hp1", netns, added[1]?.json);
      expect(await fetchFromClient(HOST4)).not.toMatch(/^hello/);
      expect(await fetchFromClient(HOST6)).not.toMatch(/^hello/);
      expect(await node.ns.exec(["iptables-save", "-t", "nat"])).not.toContain("18080");
      expect(await node.ns.exec(["ip6tables-save", "-t", "nat"])).not.toContain("18080");
    } finally {
      srv.kill();
    }
  });
});
