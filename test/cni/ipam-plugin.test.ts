import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { queryIpam } from "../../src/agent/control.js";
import { formatIpv4, parseIpv4 } from "../../src/common/ipv4.js";
import { Cluster } from "../../src/harness/cluster.js";
import { Netns } from "../../src/harness/netns.js";
import { execPlugin, installPlugins, resultIp, type CniCall, type CniOut } from "../helpers/cni.js";

/**
 * weft-ipam under Debian's own bridge and ptp plugins (/usr/lib/cni), and
 * on its own: the spec's verbs, requested addresses, pools, exhaustion, GC,
 * concurrency and bad input, against a real agent on a netns node.
 */
let c: Cluster;
let plugins: ReturnType<typeof installPlugins>;
const pods: Netns[] = [];

beforeAll(async () => {
  c = await Cluster.create({ nodes: 1, podsPerNode: 0, subnetLen: 22 });
  plugins = installPlugins();
}, 120_000);
afterAll(async () => {
  for (const p of pods) await p.destroy();
  await c?.destroy();
});

const ctx = (inNode = true) => ({ cniPath: plugins.cniPath, socket: c.files(0).socket, ...(inNode ? { nodeNs: c.node(0).ns.name } : {}) });
const ipamPlugin = (): string => join(plugins.binDir, "weft-ipam");
const subnet = () => c.node(0).subnet!;
const off = (n: number): string => formatIpv4(subnet().addr + n);

async function pod(): Promise<Netns> {
  const ns = await Netns.create(`q${pods.length}`, c.tag);
  pods.push(ns);
  return ns;
}

function ipam(call: Omit<CniCall, "conf"> & { conf?: Record<string, unknown>; ipam?: Record<string, unknown>; version?: string; name?: string }): Promise<CniOut> {
  const conf = call.conf ?? { cniVersion: call.version ?? "1.1.0", name: call.name ?? "raw", type: "none", ipam: { type: "weft-ipam", ...(call.ipam ?? {}) } };
  return execPlugin(ipamPlugin(), { ifname: "eth0", ...call, conf }, ctx(false));
}

async function allocations(): Promise<{ ip: string; containerId: string; network: string; pool: string }[]> {
  return (await queryIpam<{ allocations: { ip: string; containerId: string; network: string; pool: string }[] }>(c.files(0).socket, "ipam-ls")).allocations;
}

describe("weft-ipam under Debian's bridge plugin", () => {
  const conf = { cniVersion: "1.0.0", name: "brnet", type: "bridge", bridge: "cni0", isGateway: true, ipam: { type: "weft-ipam", routes: [{ dst: "0.0.0.0/0" }] } };
  it("ADD gives an address in the node subnet, CHECK passes, DEL releases, DEL again succeeds", async () => {
    const ns = await pod();
    const netns = `/run/netns/${ns.name}`;
    const add = await execPlugin("/usr/lib/cni/bridge", { command: "ADD", containerId: "br1", netns, ifname: "eth0", conf }, ctx());
    expect(add.exit, add.stdout + add.stderr).toBe(0);
    const addr = resultIp(add);
    const ip = parseIpv4(addr.split("/")[0]!);
    expect(addr.endsWith("/22")).toBe(true);
    expect(ip - subnet().addr).toBeGreaterThanOrEqual(2); // never network or gateway
    expect(ip - subnet().addr).toBeLessThan(1023);
    expect((add.json?.["ips"] as { gateway: string }[])[0]?.gateway).toBe(off(1));
    // the pod reaches its gateway (the bridge plugin put it on cni0)
    await ns.exec(["ping", "-c", "1", "-W", "2", off(1)]);
    const check = await execPlugin("/usr/lib/cni/bridge", { command: "CHECK", containerId: "br1", netns, ifname: "eth0", conf: { ...conf, prevResult: add.json } }, ctx());
    expect(check.exit, check.stdout + check.stderr).toBe(0);
    expect((await allocations()).some((a) => a.containerId === "br1" && a.ip === addr.split("/")[0])).toBe(true);
    for (let i = 0; i < 2; i++) {
      const del = await execPlugin("/usr/lib/cni/bridge", { command: "DEL", containerId: "br1", netns, ifname: "eth0", conf }, ctx());
      expect(del.exit, del.stdout + del.stderr).toBe(0);
    }
    expect((await allocations()).some((a) => a.containerId === "br1")).toBe(false);
  });
});

describe("weft-ipam under Debian's ptp plugin", () => {
  const conf = { cniVersion: "1.0.0", name: "ptpnet", type: "ptp", ipam: { type: "weft-ipam", routes: [{ dst: "0.0.0.0/0" }] } };
  it("ADD, CHECK, DEL, repeated DEL; the pod reaches the host end", async () => {
    const ns = await pod();
    const netns = `/run/netns/${ns.name}`;
    const add = await execPlugin("/usr/lib/cni/ptp", { command: "ADD", containerId: "pp1", netns, ifname: "eth0", conf }, ctx());
    expect(add.exit, add.stdout + add.stderr).toBe(0);
    const addr = resultIp(add);
    await ns.exec(["ping", "-c", "1", "-W", "2", off(1)]);
    const check = await execPlugin("/usr/lib/cni/ptp", { command: "CHECK", containerId: "pp1", netns, ifname: "eth0", conf: { ...conf, prevResult: add.json } }, ctx());
    expect(check.exit, check.stdout + check.stderr).toBe(0);
    expect((await allocations()).find((a) => a.containerId === "pp1")?.ip).toBe(addr.split("/")[0]);
    for (let i = 0; i < 2; i++) {
      const del = await execPlugin("/usr/lib/cni/ptp", { command: "DEL", containerId: "pp1", netns, ifname: "eth0", conf }, ctx());
      expect(del.exit, del.stdout + del.stderr).toBe(0);
    }
    expect((await allocations()).some((a) => a.containerId === "pp1")).toBe(false);
  });
});

describe("weft-ipam verbs", () => {
  it("VERSION answers without an agent", async () => {
    const out = await execPlugin(ipamPlugin(), { command: "VERSION", conf: { cniVersion: "0.4.0" } }, { cniPath: plugins.cniPath, socket: "/nonexistent.sock" });
    expect(out.exit).toBe(0);
    expect(out.json).toEqual({ cniVersion: "0.4.0", supportedVersions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] });
  });

  it("an unreachable agent is code 11 for ADD and 50 for STATUS", async () => {
    const conf = { cniVersion: "1.1.0", name: "raw", type: "none", ipam: { type: "weft-ipam" } };
    const add = await execPlugin(ipamPlugin(), { command: "ADD", containerId: "x", netns: "/x", ifname: "eth0", conf }, { cniPath: plugins.cniPath, socket: "/nonexistent.sock" });
    expect(add.exit).toBe(1);
    expect(add.json).toMatchObject({ cniVersion: "1.1.0", code: 11, msg: expect.stringContaining("unreachable on /nonexistent.sock") });
    const st = await execPlugin(ipamPlugin(), { command: "STATUS", conf }, { cniPath: plugins.cniPath, socket: "/nonexistent.sock" });
    expect(st.json).toMatchObject({ code: 50 });
  });

  it("ADD twice for the same container and interface returns the same address; a new container gets the next one", async () => {
    const a = await ipam({ command: "ADD", containerId: "same", netns: "/proc/self/ns/net" });
    const b = await ipam({ command: "ADD", containerId: "same", netns: "/proc/self/ns/net" });
    expect(resultIp(b)).toBe(resultIp(a));
    expect(a.json).toMatchObject({ cniVersion: "1.1.0", ips: [{ address: expect.any(String), gateway: off(1) }] });
    expect((a.json?.["ips"] as Record<string, unknown>[])[0]).not.toHaveProperty("version");
    await ipam({ command: "DEL", containerId: "same" });
    const c2 = await ipam({ command: "ADD", containerId: "other", netns: "/proc/self/ns/net" });
    expect(resultIp(c2)).not.toBe(resultIp(a)); // round-robin: the released address rests
    await ipam({ command: "DEL", containerId: "other" });
  });

  it("0.3.1 and 0.4.0 results carry the IP version field", async () => {
    const r = await ipam({ command: "ADD", containerId: "old", netns: "/proc/self/ns/net", version: "0.3.1" });
    expect(r.json).toMatchObject({ cniVersion: "0.3.1", ips: [{ version: "4" }] });
    expect((await ipam({ command: "DEL", containerId: "old", version: "0.3.1" })).exit).toBe(0);
  });

  it("DEL of a container it never saw succeeds", async () => {
    expect((await ipam({ command: "DEL", containerId: "never-seen" })).exit).toBe(0);
  });

  it("requested addresses: CNI_ARGS IP=, args.cni.ips, runtimeConfig.ips; taken, gateway and out of range are refused", async () => {
    const r1 = await ipam({ command: "ADD", containerId: "req1", netns: "/proc/self/ns/net", args: `IP=${off(700)}` });
    expect(resultIp(r1)).toBe(`${off(700)}/22`);
    const conf = (extra: Record<string, unknown>) => ({ cniVersion: "1.1.0", name: "raw", type: "none", ipam: { type: "weft-ipam" }, ...extra });
    const r2 = await ipam({ command: "ADD", containerId: "req2", netns: "/proc/self/ns/net", conf: conf({ args: { cni: { ips: [off(701)] } } }) });
    expect(resultIp(r2)).toBe(`${off(701)}/22`);
    const r3 = await ipam({ command: "ADD", containerId: "req3", netns: "/proc/self/ns/net", conf: conf({ runtimeConfig: { ips: [`${off(702)}/22`] } }) });
    expect(resultIp(r3)).toBe(`${off(702)}/22`);
    const taken = await ipam({ command: "ADD", containerId: "req4", netns: "/proc/self/ns/net", args: `IP=${off(700)}` });
    expect(taken.json).toMatchObject({ code: 101, msg: expect.stringContaining("held by container req1") });
    const gw = await ipam({ command: "ADD", containerId: "req4", netns: "/proc/self/ns/net", args: `IP=${off(1)}` });
    expect(gw.json).toMatchObject({ code: 102, msg: expect.stringContaining("gateway") });
    const out = await ipam({ command: "ADD", containerId: "req4", netns: "/proc/self/ns/net", args: "IP=198.19.200.1" });
    expect(out.json).toMatchObject({ code: 102, msg: expect.stringContaining("outside this node's subnet") });
    expect((await allocations()).some((a) => a.containerId === "req4")).toBe(false);
    for (const id of ["req1", "req2", "req3"]) await ipam({ command: "DEL", containerId: id });
  });

  it("pools by namespace: addresses from the pool, a clear error when it is exhausted, STATUS still fine", async () => {
    const spec = { pools: [{ name: "db", range: "+900/30", namespaces: ["db"] }] };
    const got: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await ipam({ command: "ADD", containerId: `db${i}`, netns: "/proc/self/ns/net", args: `K8S_POD_NAMESPACE=db;K8S_POD_NAME=db-${i}`, ipam: spec, name: "poolnet" });
      got.push(resultIp(r));
    }
    expect(got).toEqual([900, 901, 902, 903].map((n) => `${off(n)}/22`));
    const full = await ipam({ command: "ADD", containerId: "db4", netns: "/proc/self/ns/net", args: "K8S_POD_NAMESPACE=db;K8S_POD_NAME=db-4", ipam: spec, name: "poolnet" });
    expect(full.exit).toBe(1);
    expect(full.json).toMatchObject({ code: 100, msg: expect.stringMatching(/no free address in pool "db".*4 of 4 in use/) });
    const other = await ipam({ command: "ADD", containerId: "web0", netns: "/proc/self/ns/net", args: "K8S_POD_NAMESPACE=web;K8S_POD_NAME=web-0", ipam: spec, name: "poolnet" });
    const webIp = parseIpv4(resultIp(other).split("/")[0]!) - subnet().addr;
    expect(webIp < 900 || webIp > 903).toBe(true);
    expect((await ipam({ command: "STATUS", ipam: spec, name: "poolnet" })).exit).toBe(0);
    const metrics = await c.node(0).ns.exec(["curl", "-s", "http://127.0.0.1:9099/metrics"]).catch(async () =>
      c.node(0).ns.exec([process.execPath, "-e", 'fetch("http://127.0.0.1:9099/metrics").then(async (r) => console.log(await r.text()))']));
    expect(metrics).toMatch(/weft_ipam_pool_addresses\{network="poolnet",pool="db",family="4",state="used"\} 4/);
    expect(metrics).toMatch(/weft_ipam_pool_addresses\{network="poolnet",pool="db",family="4",state="free"\} 0/);
    expect(metrics).toMatch(/weft_ipam_exhausted_total\{pool="db"\} 1/);
    for (const id of ["db0", "db1", "db2", "db3", "web0"]) await ipam({ command: "DEL", containerId: id, name: "poolnet", ipam: spec });
  });

  it("an exhausted default pool: ADD code 100, STATUS code 50; a release makes room again", async () => {
    const spec = { exclude: ["+2-+1018"] }; // leaves +1019..+1022
    for (let i = 0; i < 4; i++) expect((await ipam({ command: "ADD", containerId: `t${i}`, netns: "/proc/self/ns/net", ipam: spec, name: "tiny" })).exit).toBe(0);
    const full = await ipam({ command: "ADD", containerId: "t4", netns: "/proc/self/ns/net", ipam: spec, name: "tiny" });
    expect(full.json).toMatchObject({ code: 100 });
    const st = await ipam({ command: "STATUS", ipam: spec, name: "tiny" });
    expect(st.exit).toBe(1);
    expect(st.json).toMatchObject({ code: 50, msg: expect.stringContaining("exhausted") });
    await ipam({ command: "DEL", containerId: "t0", ipam: spec, name: "tiny" });
    expect((await ipam({ command: "STATUS", ipam: spec, name: "tiny" })).exit).toBe(0);
    for (const id of ["t1", "t2", "t3"]) await ipam({ command: "DEL", containerId: id, ipam: spec, name: "tiny" });
  });

  it("GC releases what is not in cni.dev/valid-attachments, and only for its network", async () => {
    const spec = { gcMinAgeSeconds: 0 };
    for (const id of ["g1", "g2", "g3"]) await ipam({ command: "ADD", containerId: id, netns: "/proc/self/ns/net", ipam: spec, name: "gcnet" });
    await ipam({ command: "ADD", containerId: "keepme", netns: "/proc/self/ns/net", name: "othernet" });
    const gc = await ipam({
      command: "GC", conf: { cniVersion: "1.1.0", name: "gcnet", type: "none", ipam: { type: "weft-ipam", ...spec }, "cni.dev/valid-attachments": [{ containerID: "g1", ifname: "eth0" }] },
    });
    expect(gc.exit, gc.stdout).toBe(0);
    const left = (await allocations()).map((a) => a.containerId);
    expect(left).toContain("g1");
    expect(left).toContain("keepme");
    expect(left).not.toContain("g2");
    expect(left).not.toContain("g3");
    await ipam({ command: "DEL", containerId: "g1", name: "gcnet" });
    await ipam({ command: "DEL", containerId: "keepme", name: "othernet" });
  });

  it("GC leaves young allocations alone (an ADD that raced the runtime's list)", async () => {
    await ipam({ command: "ADD", containerId: "young", netns: "/proc/self/ns/net", name: "gcnet2" });
    const gc = await ipam({ command: "GC", conf: { cniVersion: "1.1.0", name: "gcnet2", type: "none", ipam: { type: "weft-ipam" }, "cni.dev/valid-attachments": [] } });
    expect(gc.exit).toBe(0);
    expect((await allocations()).some((a) => a.containerId === "young")).toBe(true);
    await ipam({ command: "DEL", containerId: "young", name: "gcnet2" });
  });

  it("200 concurrent ADDs get 200 distinct addresses; a concurrent ADD/DEL mix stays consistent", async () => {
    const adds = await Promise.all(Array.from({ length: 200 }, (_x, i) => ipam({ command: "ADD", containerId: `burst${i}`, netns: "/proc/self/ns/net", name: "burst" })));
    for (const r of adds) expect(r.exit, r.stdout).toBe(0);
    const ips = adds.map(resultIp);
    expect(new Set(ips).size).toBe(200);
    const mix = await Promise.all([
      ...Array.from({ length: 100 }, (_x, i) => ipam({ command: "DEL", containerId: `burst${i}`, name: "burst" })),
      ...Array.from({ length: 100 }, (_x, i) => ipam({ command: "ADD", containerId: `late${i}`, netns: "/proc/self/ns/net", name: "burst" })),
    ]);
    for (const r of mix) expect(r.exit, r.stdout).toBe(0);
    const held = (await allocations()).filter((a) => a.network === "burst");
    expect(held).toHaveLength(200);
    expect(new Set(held.map((a) => a.ip)).size).toBe(200);
    const want = [...Array.from({ length: 100 }, (_x, i) => `burst${i + 100}`), ...Array.from({ length: 100 }, (_x, i) => `late${i}`)].sort();
    expect(held.map((a) => a.containerId).sort()).toEqual(want);
    await Promise.all(want.map((id) => ipam({ command: "DEL", containerId: id, name: "burst" })));
  });
});

describe("bad input gets the spec's error code and changes nothing", () => {
  const good = { cniVersion: "1.1.0", name: "bad", type: "none", ipam: { type: "weft-ipam" } };
  const env = { command: "ADD", containerId: "bad1", netns: "/proc/self/ns/net", ifname: "eth0" };
  const cases: [string, CniCall, number, RegExp][] = [
    ["broken JSON", { ...env, conf: '{"cniVersion": "1.1.0", "name": ' }, 6, /cannot decode/],
    ["a JSON array", { ...env, conf: "[]" }, 6, /JSON object/],
    ["no CNI_COMMAND", { ...env, command: "", conf: good }, 4, /CNI_COMMAND is not set/],
    ["an unknown CNI_COMMAND", { ...env, command: "FROB", conf: good }, 4, /not a CNI command/],
    ["no CNI_CONTAINERID", { ...env, containerId: "", conf: good }, 4, /CNI_CONTAINERID is not set/],
    ["no CNI_NETNS on ADD", { ...env, netns: "", conf: good }, 4, /CNI_NETNS is not set/],
    ["a bad CNI_IFNAME", { ...env, ifname: "this-name-is-far-too-long", conf: good }, 4, /not a usable interface name/],
    ["an unknown CNI_ARGS key", { ...env, args: "FOO=bar", conf: good }, 4, /unknown key\(s\) FOO.*IgnoreUnknown/],
    ["malformed CNI_ARGS", { ...env, args: "justtext", conf: good }, 4, /not KEY=VALUE/],
    ["cniVersion 0.2.0", { ...env, conf: { ...good, cniVersion: "0.2.0" } }, 1, /0\.2\.0.*not supported.*1\.1\.0/],
    ["cniVersion 2.0.0", { ...env, conf: { ...good, cniVersion: "2.0.0" } }, 1, /not supported/],
    ["no cniVersion", { ...env, conf: { name: "bad", type: "none", ipam: { type: "weft-ipam" } } }, 1, /null.*not supported/],
    ["GC with a 1.0.0 config", { ...env, command: "GC", conf: { ...good, cniVersion: "1.0.0" } }, 1, /GC needs cniVersion 1\.1\.0/],
    ["no name", { ...env, conf: { cniVersion: "1.1.0", type: "none", ipam: { type: "weft-ipam" } } }, 7, /"name"/],
    ["no ipam section", { ...env, conf: { cniVersion: "1.1.0", name: "bad", type: "none" } }, 7, /no "ipam" section/],
    ["a /31 pool", { ...env, conf: { ...good, ipam: { type: "weft-ipam", pools: [{ name: "p", range: "+64/31", namespaces: ["x"] }] } } }, 7, /at least 4/],
    ["host bits set", { ...env, conf: { ...good, ipam: { type: "weft-ipam", pools: [{ name: "p", range: "+65/30", namespaces: ["x"] }] } } }, 7, /host bits set/],
    ["overlapping pools", { ...env, conf: { ...good, ipam: { type: "weft-ipam", pools: [{ name: "p", range: "+64/28", namespaces: ["x"] }, { name: "q", range: "+72/30", namespaces: ["y"] }] } } }, 7, /overlap/],
    ["a pool on another node's subnet", { ...env, conf: { ...good, ipam: { type: "weft-ipam", pools: [{ name: "p", range: "198.19.250.0/28", namespaces: ["x"] }] } } }, 7, /does not lie inside this node's subnet/],
    ["host-local's subnet key", { ...env, conf: { ...good, ipam: { type: "weft-ipam", subnet: "198.18.0.0/16" } } }, 7, /unknown field.*ipam\.subnet/],
    ["an IPv6 request on an IPv4-only node", { ...env, conf: { ...good, runtimeConfig: { ips: ["2001:db8::1/64"] } } }, 102, /2001:db8::1 is IPv6, and this node has no IPv6 subnet/],
    ["a malformed IPv6 request", { ...env, conf: { ...good, runtimeConfig: { ips: ["2001:db8::g1/64"] } } }, 7, /requested address "2001:db8::g1\/64".*not an IPv6 address/],
    ["two requested addresses", { ...env, args: "IP=198.18.0.9", conf: { ...good, args: { cni: { ips: ["198.18.0.10"] } } } }, 7, /2 different IPv4 addresses/],
  ];
  it.each(cases)("%s", async (_name, call, code, msg) => {
    const before = (await allocations()).length;
    const out = await execPlugin(ipamPlugin(), call, ctx(false));
    expect(out.exit).toBe(1);
    expect(out.json?.["code"]).toBe(code);
    expect(`${String(out.json?.["msg"])} ${String(out.json?.["details"] ?? "")}`).toMatch(msg);
    expect(out.json?.["cniVersion"]).toMatch(/^\d\.\d\.\d$/);
    expect((await allocations()).length).toBe(before);
  });

  it("unknown CNI_ARGS pass with IgnoreUnknown=1", async () => {
    const out = await execPlugin(ipamPlugin(), { ...env, containerId: "ign", args: "IgnoreUnknown=1;FOO=bar", conf: good }, ctx(false));
    expect(out.exit, out.stdout).toBe(0);
    await execPlugin(ipamPlugin(), { command: "DEL", containerId: "ign", ifname: "eth0", conf: good }, ctx(false));
  });
});
