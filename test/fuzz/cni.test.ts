import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { queryIpam } from "../../src/agent/control.js";
import { formatIpv4, parseCidr, type Ipv4Prefix } from "../../src/common/ipv4.js";
import { silentLogger } from "../../src/common/log.js";
import { handleCni } from "../../src/cni/handler.js";
import { PodLinks } from "../../src/cni/links.js";
import { ifnameProblem, netnsProblem } from "../../src/cni/names.js";
import type { Invocation } from "../../src/cni/request.js";
import { CNI_CODE, SUPPORTED_VERSIONS } from "../../src/cni/spec.js";
import type { CniHost, CniReply } from "../../src/cni/types.js";
import { Cluster } from "../../src/harness/cluster.js";
import { Netns } from "../../src/harness/netns.js";
import { IpamService } from "../../src/ipam/ipam.js";
import { IpamMetrics } from "../../src/ipam/metrics.js";
import { IpamStore } from "../../src/ipam/store.js";
import { execPlugin, installPlugins } from "../helpers/cni.js";
import { fuzz, mutateJson, mutateText, randomJson, type Rng } from "./lib.js";

/**
 * Fuzz target "cni": CNI invocations (the CNI_* environment and the config
 * on stdin) built from valid ones of the other CNI tests, mutated, and
 * mixed with hostile strings in every variable.
 *
 * In-process (volume): through the real decoding and handler path against a
 * real IPAM store in a temporary state dir. The host's data path reports
 * "not ready", so the main plugin's ADD stops before creating anything
 * (this process runs in the machine's own network namespace); its link
 * calls go through a PodLinks that first checks every name and path it is
 * given, which is the "no unvalidated value reaches a command" invariant.
 *
 * Through the plugin binary (fewer): the same generator against a real
 * agent on a netns node, where the main plugin really creates bridges and
 * veths in pod namespaces.
 *
 * Invariants: every reply is exit 0, or exit 1 with the spec's error JSON
 * (supported cniVersion, a known code, a message), never "internal error";
 * no exception escapes; no address is held twice; the journal reopens to
 * the same state; metric labels stay within fixed sets; heap bounded.
 */

const KNOWN_CODES = new Set<number>(Object.values(CNI_CODE));
const SUBNET: Ipv4Prefix = parseCidr("198.18.9.0/24");
const IDS = ["c0", "c1", "c2", "c3", "c4", "c5", "ctr-0123456789abcdef", "pod_1.a"];
const IFNAMES = ["eth0", "net1", "eth0"];
const COMMANDS = ["ADD", "ADD", "ADD", "DEL", "DEL", "CHECK", "GC", "STATUS", "VERSION"];
const HOSTILE = [
  "a;id>x", "a;id>wftfz", "eth0\nlink add wftinj0 type dummy", "eth0\rx", "../../etc/passwd", "/run/netns/x y", "'", '"', "#", "\\", "eth%d",
  "x".repeat(5000), "\u0000", "\u00e9th0", "eth\u00a0", "\u2028", "-eth0", "", " ", "/proc/self/ns/net", "/", ".", "..", "eth0:1", "$(id>x)", "`id`",
  "IP=198.18.9.5", "K8S_POD_NAMESPACE=db;K8S_POD_NAME=db-0", "IgnoreUnknown=1;A=B", "IP=198.18.9.5;IP=198.18.9.6", "K8S_POD_NAME=a\nb", "ADD", "VERSION",
  "lo", "cni0", "wftinj0", "/etc/hostname", "/run/netns/", "0", "-1", "1e999",
];

function ipamConfs(): Record<string, unknown>[] {
  const base = { cniVersion: "1.1.0", name: "fz", type: "none", ipam: { type: "weft-ipam" } };
  return [
    base,
    { cniVersion: "1.0.0", name: "fzbr", type: "bridge", bridge: "cni0", isGateway: true, ipam: { type: "weft-ipam", routes: [{ dst: "0.0.0.0/0" }] } },
    { ...base, cniVersion: "0.3.1", name: "fzold" },
    {
      ...base, name: "fzpool",
      ipam: {
        type: "weft-ipam", pools: [{ name: "db", range: "+64/28", namespaces: ["db"], podLabels: { tier: "db" } }], exclude: ["+2-+9"],
        reservations: ["+10", { ip: "+11", podNamespace: "dns", podName: "coredns-0" }], routes: [{ dst: "0.0.0.0/0", gw: "198.18.9.1" }], gcMinAgeSeconds: 0,
      },
    },
    { ...base, args: { cni: { ips: ["198.18.9.200"], labels: [{ key: "tier", value: "db" }] } }, runtimeConfig: { ips: ["198.18.9.200/24"] }, dns: { nameservers: ["198.18.0.10"], search: ["svc.cluster.local"], options: ["ndots:5"] } },
    { ...base, ipam: { type: "weft-ipam", gcMinAgeSeconds: 0 }, "cni.dev/valid-attachments": [{ containerID: "c1", ifname: "eth0" }] },
    { ...base, prevResult: { cniVersion: "1.1.0", ips: [{ address: "198.18.9.2/24", gateway: "198.18.9.1" }], interfaces: [{ name: "eth0" }] } },
  ];
}

function mainConfs(): Record<string, unknown>[] {
  return [
    { cniVersion: "1.1.0", name: "fzmain", type: "weft", bridge: "cni0" },
    { cniVersion: "1.1.0", name: "fzmain", type: "weft", bridge: "cni0", mtu: 1400, ipam: { gcMinAgeSeconds: 0 }, "cni.dev/valid-attachments": [] },
    { cniVersion: "1.0.0", name: "fzmain2", type: "weft", ipam: { type: "weft-ipam", exclude: ["+2-+99"] } },
  ];
}

function hostile(rng: Rng, current: string | undefined): string {
  const r = rng.int(0, 9);
  if (r < 4) return rng.pick(HOSTILE);
  if (r < 8) return mutateText(rng, current ?? rng.pick(HOSTILE));
  return rng.string(rng.length(40));
}

/** One invocation: a valid one, then (often) broken in its environment, its config or both. */
function invocation(rng: Rng, netns: readonly string[], forBinary: boolean): Invocation {
  const role = rng.bool(forBinary ? 0.5 : 0.3) ? "weft" : "weft-ipam";
  const env: Record<string, unknown> = {
    CNI_COMMAND: rng.pick(COMMANDS), CNI_CONTAINERID: rng.pick(IDS), CNI_IFNAME: rng.pick(IFNAMES), CNI_NETNS: rng.pick(netns),
    CNI_ARGS: rng.pick(["", "K8S_POD_NAMESPACE=db;K8S_POD_NAME=db-0", "IgnoreUnknown=1;K8S_POD_UID=u1", `IP=198.18.9.${rng.int(0, 255)}`, "K8S_POD_NAMESPACE=dns;K8S_POD_NAME=coredns-0"]),
    CNI_PATH: "/opt/cni/bin",
  };
  if (rng.bool(0.5)) {
    for (let n = rng.int(1, 3); n > 0; n--) {
      const k = rng.bool(0.9) ? rng.pick(Object.keys(env)) : `CNI_${rng.string(3)}`;
      const r = rng.int(0, 9);
      if (r === 0) delete env[k];
      else if (r === 1 && !forBinary) env[k] = randomJson(rng); // only a client speaking to the socket directly can send these
      else env[k] = hostile(rng, typeof env[k] === "string" ? env[k] : undefined);
    }
  }
  const conf = rng.pick(role === "weft" ? mainConfs() : ipamConfs());
  let stdin: string;
  const r = rng.int(0, 99);
  if (r < 45) stdin = JSON.stringify(conf);
  else if (r < 80) {
    let v: unknown = conf;
    for (let n = rng.int(1, 3); n > 0; n--) v = mutateJson(rng, v);
    stdin = JSON.stringify(v) ?? "null";
  } else if (r < 90) stdin = mutateText(rng, JSON.stringify(conf));
  else if (r < 95) stdin = JSON.stringify(randomJson(rng)) ?? "";
  else if (r < 97) stdin = `{"cniVersion":"1.1.0","name":"fz","type":"none","ipam":{"type":"weft-ipam"},"dns":${"[".repeat(rng.int(60, 5000))}${"]".repeat(rng.int(60, 5000))}}`;
  else stdin = rng.string(rng.length(200));
  if (forBinary) {
    // An environment cannot carry a NUL, nor a name with "=".
    for (const [k, v] of Object.entries(env)) {
      delete env[k];
      env[k.replace(/[^A-Za-z0-9_]/g, "_")] = String(v).replace(/\u0000/g, "");
    }
  }
  if (!forBinary && rng.bool(0.01)) return { role: rng.pick(["weft", "x", ""]), env: rng.pick([null, [], env]), stdin: rng.pick([stdin, 5, null]) } as unknown as Invocation;
  return { role, env: env as Record<string, string>, stdin };
}

/** The reply as a runtime sees it: exit 0, or exit 1 with the spec's error JSON; never an internal error. */
function verdict(reply: { exit: number; stdout: string }, what: string): "accepted" | "refused" {
  const fail = (why: string): never => {
    throw new Error(`${what}: ${why}: exit ${reply.exit}, stdout ${reply.stdout.slice(0, 500)}`);
  };
  if (reply.exit === 0) {
    if (reply.stdout.trim()) {
      const j = JSON.parse(reply.stdout) as { cniVersion?: unknown };
      if (!(SUPPORTED_VERSIONS as readonly unknown[]).includes(j.cniVersion)) fail("a result without a supported cniVersion");
    }
    return "accepted";
  }
  if (reply.exit !== 1) fail("an exit code other than 0 or 1");
  let j: { cniVersion?: unknown; code?: unknown; msg?: unknown };
  try {
    j = JSON.parse(reply.stdout) as typeof j;
  } catch {
    return fail("an error that is not JSON");
  }
  if (!(SUPPORTED_VERSIONS as readonly unknown[]).includes(j.cniVersion)) fail("an error without a supported cniVersion");
  if (typeof j.code !== "number" || !KNOWN_CODES.has(j.code as never)) fail("an unknown error code");
  if (j.code === CNI_CODE.INTERNAL) fail("an internal error (an exception the code did not expect)");
  if (typeof j.msg !== "string" || !j.msg) fail("an error without a message");
  return "refused";
}

/** PodLinks that checks what it is asked to name before doing it, and refuses to create anything (the fuzz host is "not ready"). */
class CheckedLinks extends PodLinks {
  private static check(names: string[], paths: string[], call: string): void {
    for (const n of names) if (ifnameProblem(n)) throw new Error(`${call} was called with an unvalidated interface name ${JSON.stringify(n)}`);
    for (const p of paths) if (netnsProblem(p)) throw new Error(`${call} was called with an unvalidated path ${JSON.stringify(p)}`);
  }
  override async ensureBridge(name: string): Promise<void> {
    CheckedLinks.check([name], [], "ensureBridge");
    throw new Error("ensureBridge ran although the host is not ready");
  }
  override async createVeth(hostIf: string, podIf: string, netns: string, _mtu: number, _mac: string, bridge: string): Promise<void> {
    CheckedLinks.check([hostIf, podIf, bridge], [netns], "createVeth");
    throw new Error("createVeth ran although the host is not ready");
  }
  override async configurePod(netns: string, podIf: string): Promise<void> {
    CheckedLinks.check([podIf], [netns], "configurePod");
    throw new Error("configurePod ran although the host is not ready");
  }
  override deleteVeth(hostIf: string): Promise<void> {
    CheckedLinks.check([hostIf], [], "deleteVeth");
    return super.deleteVeth(hostIf);
  }
  override inspect(hostIf: string, netns: string, podIf: string): ReturnType<PodLinks["inspect"]> {
    CheckedLinks.check([podIf], [netns], "inspect");
    return super.inspect(hostIf, netns, podIf);
  }
}

function ipsUnique(list: readonly { ip?: number | string | undefined }[], what: string): void {
  const ips = list.map((a) => String(a.ip));
  if (new Set(ips).size !== ips.length) throw new Error(`${what}: an address is held twice: ${ips.sort().join(" ")}`);
}

const summary = (s: IpamStore): string => s.table.all().map((a) => `${a.network}/${a.containerId}/${a.ifname}=${formatIpv4(a.ip ?? 0)}`).sort().join(",");

describe("fuzz: cni", () => {
  const dir = mkdtempSync(join(tmpdir(), "weft-fuzz-cni-"));
  let pod: Netns;
  beforeAll(async () => {
    pod = await Netns.create("fzpod");
  });
  afterAll(async () => {
    await pod?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it("in process: CNI env and stdin through the real decoding, handler and IPAM store", async () => {
    const registry = new Registry();
    const metrics = new IpamMetrics(registry);
    const open = async (): Promise<IpamService> => {
      const s = await IpamStore.open(join(dir, "ipam"), silentLogger);
      const ipam = new IpamService(s, silentLogger, metrics);
      ipam.bind(SUBNET);
      return ipam;
    };
    let ipam = await open();
    const links = new CheckedLinks();
    const host: CniHost = {
      get ipam() {
        return ipam;
      },
      links, log: silentLogger,
      addEndpoint: () => Promise.reject(new Error("addEndpoint ran although the host is not ready")),
      removeEndpoint: () => Promise.resolve(false),
      podMtu: () => 1450,
      notReady: () => "the fuzz host has no data path",
    };
    const netns = [`/run/netns/${pod.name}`, `/run/netns/${pod.name}`, "/run/netns/wft-fuzz-gone"];
    try {
      const report = await fuzz("cni", { iterations: 10_000 }, async (rng, i) => {
        const inv = invocation(rng, netns, false);
        const reply: CniReply = await handleCni(host, inv);
        const out = verdict(reply, `${JSON.stringify(inv).slice(0, 300)}`);
        const all = ipam.store.table.all();
        ipsUnique(all, "in memory");
        for (const a of all) if (a.ip === undefined || a.ip <= SUBNET.addr + 1 || a.ip >= SUBNET.addr + 255) throw new Error(`${formatIpv4(a.ip ?? 0)} is the network, gateway or broadcast address, or outside ${formatIpv4(SUBNET.addr)}/24`);
        if (i % 500 === 499) {
          const before = summary(ipam.store);
          await ipam.close();
          ipam = await open();
          if (summary(ipam.store) !== before) throw new Error(`the journal reopened to another state:\n${before}\n${summary(ipam.store)}`);
          if (ipam.store.problem) throw new Error(`the store's own journal is unreadable: ${ipam.store.problem.message}`);
        }
        return out;
      });
      expect(report.refused).toBeGreaterThan(report.iterations / 4);
      expect(report.accepted).toBeGreaterThan(report.iterations / 10);
      // Metric labels stay within fixed sets, whatever the runtime sent.
      const m = await registry.getMetricsAsJSON();
      const labels = (name: string, label: string): Set<string> => new Set(m.find((x) => x.name === name)?.values.map((v) => String(v.labels[label])) ?? []);
      for (const c of labels("weft_cni_request_seconds", "command")) expect(["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "invalid", "none"]).toContain(c);
      for (const p of labels("weft_cni_request_seconds", "plugin")) expect(["weft", "weft-ipam", "invalid"]).toContain(p);
      expect(labels("weft_cni_refusals_total", "reason").size).toBeGreaterThan(5);
      expect(labels("weft_cni_refusals_total", "reason").size).toBeLessThanOrEqual(16);
    } finally {
      links.close();
      await ipam.close();
    }
  }, 120_000);
});

describe("fuzz: cni through the plugin binary", () => {
  let c: Cluster;
  let plugins: ReturnType<typeof installPlugins>;
  const pods: Netns[] = [];
  beforeAll(async () => {
    c = await Cluster.create({ nodes: 1, podsPerNode: 0, subnetLen: 24 });
    plugins = installPlugins();
    for (const r of ["fza", "fzb"]) pods.push(await Netns.create(r, c.tag));
  }, 120_000);
  afterAll(async () => {
    for (const p of pods) await p.destroy();
    await c?.destroy();
  });

  it("weft and weft-ipam against a real agent: replies well-formed, nothing injected, everything removable afterwards", async () => {
    const ctx = { cniPath: plugins.cniPath, socket: c.files(0).socket, nodeNs: c.node(0).ns.name };
    const eth0 = await c.node(0).ns.ip("-4", "-o", "addr", "show", "dev", "eth0");
    const routes = await c.node(0).ns.ip("route", "show", "default");
    const netns = [...pods.map((p) => `/run/netns/${p.name}`), "/run/netns/wft-fuzz-gone"];
    const report = await fuzz("cni-plugin", { iterations: 200 }, async (rng) => {
      const inv = invocation(rng, netns, true);
      const env = inv.env as Record<string, string>;
      const out = await execPlugin(join(plugins.binDir, inv.role), {
        command: env["CNI_COMMAND"] ?? "", conf: inv.stdin,
        env: { ...Object.fromEntries(["CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_ARGS", "CNI_PATH"].map((k) => [k, undefined])), ...env },
      }, ctx);
      if (existsSync(join(process.cwd(), "x")) || existsSync(join(process.cwd(), "wftfz"))) throw new Error("a shell ran a command from the input");
      if (/unreachable|closed the connection|timed out/.test(out.stdout)) throw new Error(`the agent no longer answers: ${out.stdout}\n${c.agentLog(0).slice(-3000)}`);
      return verdict({ exit: out.exit, stdout: out.stdout }, `${inv.role} ${JSON.stringify(env).slice(0, 300)} ${inv.stdin.slice(0, 200)}`);
    });
    expect(report.refused).toBeGreaterThan(10);
    expect(report.accepted).toBeGreaterThan(10);
    const links = (JSON.parse(await c.node(0).ns.ip("-json", "link", "show")) as { ifname: string }[]).map((l) => l.ifname);
    expect(links.filter((l) => l.startsWith("wftinj"))).toEqual([]);
    expect(await c.node(0).ns.ip("-4", "-o", "addr", "show", "dev", "eth0")).toBe(eth0);
    expect(await c.node(0).ns.ip("route", "show", "default")).toBe(routes);
    // Everything the fuzz left can be deleted by a plain DEL, veths included.
    const ls = async () => (await queryIpam<{ allocations: { ip: string; network: string; containerId: string; ifname: string; hostIf: string }[] }>(c.files(0).socket, "ipam-ls")).allocations;
    const held = await ls();
    ipsUnique(held, "the agent");
    for (const a of held) {
      const role = a.hostIf ? "weft" : "weft-ipam";
      const conf = { cniVersion: "1.1.0", name: a.network, type: role === "weft" ? "weft" : "none", ipam: { type: "weft-ipam" } };
      const del = await execPlugin(join(plugins.binDir, role), { command: "DEL", containerId: a.containerId, ifname: a.ifname, conf }, ctx);
      expect(del.exit, del.stdout).toBe(0);
    }
    expect(await ls()).toEqual([]);
    const after = (JSON.parse(await c.node(0).ns.ip("-json", "link", "show")) as { ifname: string }[]).map((l) => l.ifname);
    expect(after.filter((l) => l.startsWith("wv"))).toEqual([]);
    expect((await c.status(0)).ready).toBe(true);
  }, 120_000);
});
