import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { queryIpam, requestCni } from "../../src/agent/control.js";
import { Cluster } from "../../src/harness/cluster.js";
import { Netns } from "../../src/harness/netns.js";
import { execPlugin, installPlugins, resultIp, type CniCall, type CniOut } from "../helpers/cni.js";

/**
 * The CNI door as a hostile runtime sees it: values in CNI_* and in the
 * config that a shell, an iproute2 batch line or the kernel would
 * interpret. Every one goes through weft's real plugin binary to a real
 * agent on a netns node; each must be refused with the spec's code before
 * any command runs, and leave the node as it was.
 */
let c: Cluster;
let plugins: ReturnType<typeof installPlugins>;
let pod: Netns;
const conf = { cniVersion: "1.1.0", name: "hostile", type: "weft", bridge: "cni0" };

beforeAll(async () => {
  c = await Cluster.create({ nodes: 1, podsPerNode: 0, subnetLen: 24 });
  plugins = installPlugins();
  pod = await Netns.create("hpod", c.tag);
}, 120_000);
afterAll(async () => {
  await pod?.destroy();
  await c?.destroy();
});

const ctx = () => ({ cniPath: plugins.cniPath, socket: c.files(0).socket, nodeNs: c.node(0).ns.name });
const podPath = (): string => `/run/netns/${pod.name}`;

function weft(call: Partial<CniCall> & { command: string }): Promise<CniOut> {
  return execPlugin(join(plugins.binDir, "weft"), { containerId: "h1", netns: podPath(), ifname: "eth0", conf, ...call }, ctx());
}

const nodeLinks = async (): Promise<string[]> =>
  (JSON.parse(await c.node(0).ns.ip("-json", "link", "show")) as { ifname: string }[]).map((l) => l.ifname).sort();
const nodeAddrs = async (): Promise<string> => c.node(0).ns.ip("-4", "-o", "addr", "show", "dev", "eth0");
const podLinks = async (): Promise<string[]> =>
  (JSON.parse(await pod.ip("-json", "link", "show")) as { ifname: string }[]).map((l) => l.ifname).sort();
const held = async (): Promise<string[]> =>
  (await queryIpam<{ allocations: { containerId: string }[] }>(c.files(0).socket, "ipam-ls")).allocations.map((a) => a.containerId);
const metrics = (): Promise<string> => c.node(0).ns.exec([process.execPath, "-e", 'fetch("http://127.0.0.1:9099/metrics").then(async (r) => console.log(await r.text()))']);

function refused(out: CniOut, code: number, msg: RegExp): void {
  expect(out.exit, out.stdout + out.stderr).toBe(1);
  expect(out.json?.["code"], out.stdout).toBe(code);
  expect(`${String(out.json?.["msg"])} ${String(out.json?.["details"] ?? "")}`).toMatch(msg);
}

describe("no shell, no unchecked value in a batch line", () => {
  it("CNI_IFNAME a;id>x: ADD and CHECK are refused and no command runs (no file x appears)", async () => {
    const marker = join(process.cwd(), "x");
    const marker2 = join(process.cwd(), "wftpwn");
    expect(existsSync(marker), `${marker} exists before the test: remove it`).toBe(false);
    const before = { links: await nodeLinks(), pod: await podLinks(), held: await held() };
    try {
      // Every call first, then the verdicts: the old code only ran the shell on CHECK, after a successful ADD.
      const outs: [string, CniOut][] = [];
      for (const ifname of ["a;id>x", "a;id>wftpwn", "a|id>x", "a$(id>x)", "a`id>x`"]) {
        outs.push([`ADD ${ifname}`, await weft({ command: "ADD", ifname })]);
        outs.push([`CHECK ${ifname}`, await weft({ command: "CHECK", ifname, conf: { ...conf, prevResult: { cniVersion: "1.1.0", ips: [] } } })]);
        outs.push([`DEL ${ifname}`, await weft({ command: "DEL", ifname })]);
      }
      expect(existsSync(marker), "a shell ran `id>x`").toBe(false);
      expect(existsSync(marker2), "a shell ran `id>wftpwn`").toBe(false);
      for (const [what, out] of outs) {
        expect(out.json?.["code"], `${what}: ${out.stdout}`).toBe(4);
        expect(String(out.json?.["msg"])).toMatch(/CNI_IFNAME .* is not a usable interface name/);
      }
      expect(await nodeLinks()).toEqual(before.links);
      expect(await podLinks()).toEqual(before.pod);
      expect(await held()).toEqual(before.held);
    } finally {
      // Only what the old code could have made, and only if the test made it.
      if (existsSync(marker2)) rmSync(marker2);
    }
  });

  it.each([
    ["too long (16 bytes)", "abcdefghijklmnop"],
    ["15 bytes but 8 characters (UTF-8)", "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9e"],
    ["a space", "eth 0"],
    ["a tab", "eth\t0"],
    ["a newline", "eth0\nlink"],
    ["#", "eth#0"],
    ["a double quote", 'eth"0'],
    ["a single quote", "eth'0"],
    ["a backslash", "eth\\0"],
    ["%d (a kernel name template)", "eth%d"],
    [":", "eth0:1"],
    ["/", "eth/0"],
    [".", "."],
    ["a leading -", "-eth0"],
    ["a shell pipe", "eth0|sh"],
    ["@ (ip's name@peer)", "eth0@if2"],
    ["..", ".."],
    ["a control character", "eth\u00010"],
    ["DEL", "eth\u007f"],
    ["a no-break space (the kernel's isspace)", "eth\u00a0"],
  ])("CNI_IFNAME with %s is refused (code 4) and changes nothing", async (_what, ifname) => {
    const before = { links: await nodeLinks(), pod: await podLinks(), held: await held() };
    refused(await weft({ command: "ADD", ifname, containerId: "h2" }), 4, /CNI_IFNAME .* is not a usable interface name.*1-15 characters/);
    expect(await nodeLinks()).toEqual(before.links);
    expect(await podLinks()).toEqual(before.pod);
    expect(await held()).toEqual(before.held);
  });

  it.each([
    ["a newline and a second batch command", (p: string) => `${p}\nlink add wftinj0 type dummy`],
    ["a carriage return", (p: string) => `${p}\rlink add wftinj0 type dummy`],
    ["a relative path", (p: string) => p.slice(1)],
    ["a bare name", () => "wftpod"],
    ["a space", (p: string) => `${p} netns 1`],
    ["#", (p: string) => `${p}#x`],
    ["a quote", (p: string) => `${p}"`],
  ])("CNI_NETNS with %s is refused (code 4) and nothing is injected", async (_what, mk) => {
    const before = { links: await nodeLinks(), held: await held() };
    const netns = mk(podPath());
    const out = await weft({ command: "ADD", netns, containerId: "h3" });
    expect((await nodeLinks()).includes("wftinj0"), "a second batch command ran").toBe(false);
    refused(out, 4, /CNI_NETNS .* (is not an absolute path|may not hold)/);
    expect(await nodeLinks()).toEqual(before.links);
    expect((await nodeLinks()).includes("wftinj0")).toBe(false);
    expect(await held()).toEqual(before.held);
  });

  it.each([
    ["a quote (would end the ip batch process)", "br'0"],
    ["# (would comment out the rest of the line)", "br#0"],
    ["a newline with a command", "br0\nlink add wftinj1 type dummy"],
    ["a space with an argument", "br0 type dummy"],
    ["too long", "bridge-name-too-long"],
    ["%d", "br%d"],
  ])("a bridge name with %s is refused (code 7)", async (_what, bridge) => {
    const before = { links: await nodeLinks(), held: await held() };
    refused(await weft({ command: "ADD", containerId: "h4", conf: { ...conf, bridge } }), 7, /"bridge" .* is not a usable interface name/);
    expect(await nodeLinks()).toEqual(before.links);
    expect(await held()).toEqual(before.held);
  });

  it("a bridge name that is the node's uplink (eth0) is refused: its addresses and MTU stay", async () => {
    const addrs = await nodeAddrs();
    const links = await c.node(0).ns.ip("-o", "link", "show", "dev", "eth0");
    refused(await weft({ command: "ADD", containerId: "h5", conf: { ...conf, bridge: "eth0" } }), 7, /eth0 exists and is not a bridge/);
    expect(await nodeAddrs()).toBe(addrs);
    expect(await c.node(0).ns.ip("-o", "link", "show", "dev", "eth0")).toBe(links);
    expect(await held()).not.toContain("h5");
  });

  it("CNI_NETNS naming the node's own namespace is refused by the main plugin: the node's routes stay", async () => {
    const routes = await c.node(0).ns.ip("route", "show");
    for (const netns of ["/proc/self/ns/net", `/run/netns/${c.node(0).ns.name}`]) {
      refused(await weft({ command: "ADD", containerId: "h6", netns, ifname: "wftpodif" }), 4, /CNI_NETNS .* is the node's own network namespace/);
    }
    refused(await weft({ command: "ADD", containerId: "h6", netns: "/etc/hostname", ifname: "wftpodif" }), 4, /CNI_NETNS .* is not a network namespace/);
    expect(await c.node(0).ns.ip("route", "show")).toBe(routes);
    expect(await nodeLinks()).not.toContain("wftpodif");
    expect(await held()).not.toContain("h6");
  });

  it("CHECK with the pod's namespace gone, or a path that is no namespace, answers 103 and the agent keeps running", async () => {
    const gone = await Netns.create("hgone", c.tag);
    const add = await weft({ command: "ADD", containerId: "gone1", netns: `/run/netns/${gone.name}` });
    expect(add.exit, add.stdout).toBe(0);
    await gone.destroy();
    for (const netns of [`/run/netns/${gone.name}`, "/etc/hostname", "/run/netns"]) {
      const check = await weft({ command: "CHECK", containerId: "gone1", netns, conf: { ...conf, prevResult: add.json } });
      refused(check, 103, /cannot look into/);
      expect((await c.status(0)).ready).toBe(true);
    }
    expect((await weft({ command: "DEL", containerId: "gone1", netns: `/run/netns/${gone.name}` })).exit).toBe(0);
  });

  it("a good ADD still works after all of it (the batch process was not killed), CHECK and DEL too", async () => {
    const add = await weft({ command: "ADD", containerId: "ok1" });
    expect(add.exit, add.stdout + c.agentLog(0).slice(-1500)).toBe(0);
    expect(resultIp(add)).toMatch(/\/24$/);
    const check = await weft({ command: "CHECK", containerId: "ok1", conf: { ...conf, prevResult: add.json } });
    expect(check.exit, check.stdout).toBe(0);
    expect((await weft({ command: "DEL", containerId: "ok1" })).exit).toBe(0);
  });
});

describe("the rest of the CNI door", () => {
  it("CNI_CONTAINERID: the spec's characters, at most 256 of them", async () => {
    refused(await weft({ command: "ADD", containerId: "x".repeat(257) }), 4, /CNI_CONTAINERID .* longer than 256/);
    refused(await weft({ command: "ADD", containerId: "a;b" }), 4, /CNI_CONTAINERID .* is not a container ID/);
    refused(await weft({ command: "ADD", containerId: "-a" }), 4, /CNI_CONTAINERID/);
  });

  it("a prevResult of the wrong shape is a config error (7), not an internal one", async () => {
    for (const prevResult of [{ ips: "198.18.0.2/24" }, { ips: [null] }, { ips: [{ address: 5 }] }, { interfaces: {} }]) {
      refused(await weft({ command: "CHECK", containerId: "pv", conf: { ...conf, prevResult } }), 7, /prevResult/);
    }
  });

  it("dns of the wrong shape, and JSON nested too deep, are refused before any address is given", async () => {
    const ipamConf = { cniVersion: "1.1.0", name: "hostile-ipam", type: "none", ipam: { type: "weft-ipam" } };
    const ipam = (extra: Record<string, unknown> | string, id: string): Promise<CniOut> =>
      execPlugin(join(plugins.binDir, "weft-ipam"), { command: "ADD", containerId: id, netns: "/proc/self/ns/net", ifname: "eth0", conf: typeof extra === "string" ? extra : { ...ipamConf, ...extra } }, { cniPath: plugins.cniPath, socket: c.files(0).socket });
    refused(await ipam({ dns: { nameservers: "198.18.0.53" } }, "d1"), 7, /dns\.nameservers/);
    refused(await ipam({ dns: { search: [1] } }, "d2"), 7, /dns\.search/);
    const deep = `{"cniVersion":"1.1.0","name":"hostile-ipam","type":"none","ipam":{"type":"weft-ipam"},"dns":{"x":${"[".repeat(100_000)}${"]".repeat(100_000)}}}`;
    refused(await ipam(deep, "d3"), 6, /nested deeper than 64/);
    refused(await ipam({ ipam: { type: "weft-ipam", routes: [{ dst: "0.0.0.0/0", gw: "not-an-address" }] } }, "d4"), 7, /ipam\.routes.*gw/);
    refused(await ipam({ ipam: { type: "weft-ipam", routes: [{ dst: "999.1.2.3/99" }] } }, "d5"), 7, /ipam\.routes.*dst/);
    const ids = await held();
    for (const id of ["d1", "d2", "d3", "d4", "d5"]) expect(ids).not.toContain(id);
  });

  it("CNI_ARGS naming a key twice with different values is refused", async () => {
    refused(await weft({ command: "ADD", containerId: "a2", args: "IP=198.18.0.9;IP=198.18.0.10" }), 4, /CNI_ARGS: IP is given twice/);
  });

  it("a hostile CNI_COMMAND is refused without becoming a metric label; refusals are counted by reason", async () => {
    for (let i = 0; i < 5; i++) refused(await weft({ command: `ADD${i}\u2028x` }), 4, /is not a CNI command/);
    refused(await weft({ command: "ADD", ifname: "a;id>x" }), 4, /CNI_IFNAME/);
    const m = await metrics();
    expect(m).not.toMatch(/command="ADD\d/);
    expect(m).toMatch(/weft_cni_request_seconds_count\{command="invalid",plugin="weft",result="4"\} [1-9]/);
    expect(m).toMatch(/weft_cni_refusals_total\{reason="command"\} [1-9]/);
    expect(m).toMatch(/weft_cni_refusals_total\{reason="ifname"\} [1-9]/);
    expect(m).toMatch(/weft_cni_refusals_total\{reason="netns"\} [1-9]/);
  });

  it("env values that are not strings (a client speaking to the socket directly) get code 4, not a crash", async () => {
    const env = { CNI_COMMAND: "ADD", CNI_CONTAINERID: 7, CNI_IFNAME: "eth0", CNI_NETNS: podPath() } as unknown as Record<string, string>;
    const r = await requestCni(c.files(0).socket, { role: "weft-ipam", env, stdin: JSON.stringify({ ...conf, type: "none" }) });
    expect(r.exit).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ code: 4, msg: expect.stringContaining('"CNI_CONTAINERID" must be a string') });
    const bad = await requestCni(c.files(0).socket, { role: "weft-ipam", env: null, stdin: "{}" } as unknown as Parameters<typeof requestCni>[1]);
    expect(bad.exit).toBe(1);
    expect([4, 6]).toContain(JSON.parse(bad.stdout).code);
    expect((await c.status(0)).ready).toBe(true);
  });
});
