import type { ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { formatIpv4, parseCidr, type Ipv4Prefix } from "../common/ipv4.js";
import { formatIpv6, parseCidr6, parseIpv6, type Ipv6Prefix } from "../common/ipv6.js";
import { bridgedPod, makeBridge, pingFrom, pingPairs, routedPod, type Pod } from "./pod-wiring.js";
import { projectRoot } from "../common/paths.js";
import { queryStatus, requestEndpoint } from "../agent/control.js";
import type { AgentStatus } from "../agent/status.js";
import { SubnetRegistry } from "../subnet/registry.js";
import { formatNetworkConfig } from "../subnet/network-config.js";
import { EtcdServer } from "./etcd.js";
import { EtcdCluster } from "./etcd-cluster.js";
import { Pki } from "./pki.js";
import { NS_PREFIX, Netns, sweepNamespaces, uniqueTag, veth } from "./netns.js";
import { run } from "../common/exec.js";

const WEFT_BIN = join(projectRoot(), "bin", "weft.js");

export interface ClusterOptions {
  readonly nodes: number;
  readonly podsPerNode: number;
  /** Pod network (default 198.18.0.0/16) and per-node subnet length (default 24). */
  readonly network?: string;
  readonly subnetLen?: number;
  /** Extra `weft agent` flags for every node. */
  readonly agentArgs?: readonly string[];
  /** Extra JSON for the network config's Backend (e.g. {"DirectRouting": true}). */
  readonly directRouting?: boolean;
  /** Leave out the agent of these node indexes (the test programs them itself). */
  readonly manualNodes?: readonly number[];
  /** `weft agent --backend` for every node, or per node (default vxlan). */
  readonly backend?: string | readonly string[];
  /** Extra `weft agent` flags per node index (after `agentArgs`). */
  readonly nodeAgentArgs?: readonly (readonly string[] | undefined)[];
  /**
   * "none" (the default): agents get `--dns-upstream none`, so no query leaves
   * the namespaces. "default": no --dns-upstream flag, the agent's default
   * (the node's resolv.conf; see `setResolvConf`) applies.
   */
  readonly dnsUpstream?: "none" | "default";
  /**
   * etcd serves clients over TLS only (https://192.0.2.254:2379) and requires
   * a client certificate (--client-cert-auth); `pki` has the CA, and each
   * agent gets a certificate with CN `node-<index>` (`tlsFiles`).
   */
  readonly etcdTls?: boolean;
  /** Runs agents some other way than `weft agent` in the node's namespace (e.g. containers); see AgentLauncher. */
  readonly agentLauncher?: AgentLauncher;
  /**
   * How pods hang off their node: "bridge" (the default: a cni0 bridge
   * holding the gateway, as flannel's bridge CNI config does) or "routed"
   * (no bridge, as the ptp plugin wires pods: the pod has its address as a
   * /32 and a default route via the gateway on the link; the host side of
   * its veth holds the gateway as a /32, and the node routes the pod's /32
   * to it).
   */
  readonly podWiring?: "bridge" | "routed";
  /**
   * Runs IPv6 too (dual stack): the IPv6 pod network (2001:db8:1::/48 by
   * default when `ipv6` is true) and per-node subnet length (default 64).
   * The underlay gets 2001:db8:ff::<index + 1>/64 on each node's eth0 and
   * 2001:db8:ff::fe on the hub.
   */
  readonly ipv6?: boolean;
  readonly ipv6Network?: string;
  readonly ipv6SubnetLen?: number;
  /** IPv6 only: no IPv4 anywhere (pods, underlay, etcd at [2001:db8:ff::fe]:2379); implies `ipv6`. */
  readonly ipv6Only?: boolean;
  /** 3: a 3-member etcd cluster (EtcdCluster, on 192.0.2.251-253) instead of the one server; `etcd` is then member 0. */
  readonly etcdMembers?: 1 | 3;
}

const HUB6 = "2001:db8:ff::fe";
/** The hub bridge's MAC (locally administered), fixed for the cluster's life. */
export const HUB_MAC = "02:00:c0:00:02:fe";

/**
 * Starts a node's agent in place of `weft agent` run in its namespace. The
 * cluster still reads the agent through its files (`files(i)`: socket, subnet
 * file, state dir, bpffs), so a launcher must put them there.
 */
export interface AgentLauncher {
  /** Once per node, before its agent first starts (a pod's init containers). */
  prepare?(c: Cluster, i: number): Promise<void>;
  /** Starts node i's agent: the child's output is the agent's log, its exit the agent's. `extra`: flags from startAgent. */
  start(c: Cluster, i: number, extra: readonly string[]): ChildProcess;
  /** In destroy() (and when create() fails), before the namespaces go: removes what start() left. */
  destroy?(c: Cluster): Promise<void>;
}

export type { Pod } from "./pod-wiring.js";

export interface ClusterNode {
  readonly index: number;
  readonly ns: Netns;
  /** Underlay address on eth0: 192.0.2.<index + 1> (0 in an IPv6-only cluster). */
  readonly underlay: number;
  /** IPv6 underlay address on eth0, 2001:db8:ff::<index + 1>, when the cluster runs IPv6. */
  readonly underlay6: bigint | undefined;
  readonly dir: string;
  agent: ChildProcess | undefined;
  subnet: Ipv4Prefix | undefined;
  subnet6: Ipv6Prefix | undefined;
  readonly pods: Pod[];
}

/**
 * A cluster of network namespaces on one machine, for tests, benchmarks and
 * the demo: a hub namespace with the underlay bridge (192.0.2.0/24) and a
 * real etcd on 192.0.2.254:2379; N node namespaces, each with eth0 on the
 * bridge, its own `weft agent`, and pod namespaces on a cni0 bridge with
 * addresses from the node's subnet (set by the harness until the CNI plugin
 * does it). destroy() removes everything, and every name starts with "wft",
 * so a run that was killed is swept by the next.
 */
export class Cluster {
  readonly nodes: ClusterNode[] = [];
  /** The 3-member etcd, with `etcdMembers: 3`. */
  etcdCluster: EtcdCluster | undefined;
  /** /etc/netns/<name> directories written by setResolvConf, removed by destroy(). */
  private readonly etcNetns: string[] = [];
  private constructor(
    readonly tag: string,
    readonly dir: string,
    readonly hub: Netns,
    readonly etcd: EtcdServer,
    readonly opts: ClusterOptions,
    /** The certificates of a TLS etcd (`etcdTls`): its CA makes more on request. */
    readonly pki: Pki | undefined,
  ) {}

  static async create(opts: ClusterOptions): Promise<Cluster> {
    const tag = uniqueTag();
    const dir = mkdtempSync(join(tmpdir(), `weft-cluster-${tag}-`));
    // A bpffs mounted here, in the caller's namespace, outlives every agent (`ip netns exec` gives its
    // process a fresh /sys, and a bpffs mounted in there would vanish with it).
    mkdirSync(join(dir, "bpffs"));
    await run(["mount", "-t", "bpf", "bpf", join(dir, "bpffs")]);
    const hub = await Netns.create("hub", tag);
    let etcd: EtcdServer | undefined;
    let members: EtcdCluster | undefined;
    let cluster: Cluster | undefined;
    try {
      // A fixed MAC, as a real router's: a bridge without one takes its lowest port's, which changes
      // when a node joins or leaves, and every node keeps the old one for the hub's addresses (etcd,
      // the DNS upstream) in its ARP cache until the entry expires — tens of seconds of silence.
      await hub.ip("link", "add", "br0", "address", HUB_MAC, "type", "bridge");
      if (!opts.ipv6Only) await hub.ip("addr", "add", "192.0.2.254/24", "dev", "br0");
      if (opts.ipv6 || opts.ipv6Only) await hub.ip("-6", "addr", "add", `${HUB6}/64`, "dev", "br0", "nodad");
      await hub.ip("link", "set", "br0", "up");
      const pki = opts.etcdTls ? await Pki.create(join(dir, "pki")) : undefined;
      const server = pki ? await pki.issue("etcd-server", { usage: "server", ips: ["192.0.2.254", "127.0.0.1"] }) : undefined;
      const tls = pki && server ? { cert: server.cert, key: server.key, trustedCa: pki.ca.cert, clientCertAuth: true } : undefined;
      if (opts.etcdMembers === 3) members = await EtcdCluster.start(join(dir, "etcd"), hub);
      etcd = members ? members.member(0) : await EtcdServer.start({ dir: join(dir, "etcd"), netns: hub, host: opts.ipv6Only ? `[${HUB6}]` : "192.0.2.254", port: 2379, tls });
      const c = new Cluster(tag, dir, hub, etcd, opts, pki);
      c.etcdCluster = members;
      cluster = c;
      await c.initNetwork();
      for (let i = 0; i < opts.nodes; i++) await c.addNode(i);
      for (const n of c.nodes) {
        if (opts.manualNodes?.includes(n.index)) continue;
        await opts.agentLauncher?.prepare?.(c, n.index);
        c.startAgent(n.index);
      }
      for (const n of c.nodes) {
        if (!opts.manualNodes?.includes(n.index)) await c.waitReady(n.index);
      }
      for (const n of c.nodes) {
        if (n.subnet || n.subnet6) await c.addPods(n);
      }
      return c;
    } catch (e) {
      if (cluster) await opts.agentLauncher?.destroy?.(cluster).catch(() => undefined);
      await (members ?? etcd)?.close().catch(() => undefined);
      await sweepNamespaces(`${NS_PREFIX}${tag}`, true);
      await run(["umount", "-l", join(dir, "bpffs")]).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  get network(): Ipv4Prefix {
    return parseCidr(this.opts.network ?? "198.18.0.0/16");
  }

  /** The IPv6 pod network, when the cluster runs IPv6. */
  get network6(): Ipv6Prefix | undefined {
    return this.opts.ipv6 || this.opts.ipv6Only ? parseCidr6(this.opts.ipv6Network ?? "2001:db8:1::/48") : undefined;
  }

  /**
   * A registry client for the cluster's etcd, from this process: through the
   * unix socket, plain even with `etcdTls` (and refused once etcd auth is on).
   */
  registry(): SubnetRegistry {
    return new SubnetRegistry({ endpoints: this.etcdCluster?.localEndpoints ?? [this.etcd.localEndpoint], prefix: "/coreos.com/network" });
  }

  private async initNetwork(): Promise<void> {
    const reg = this.registry();
    try {
      const v6 = this.network6;
      const text = formatNetworkConfig({
        ...(this.opts.ipv6Only ? {} : { network: this.network, subnetLen: this.opts.subnetLen ?? 24 }),
        ...(v6 ? { ipv6Network: v6, ipv6SubnetLen: this.opts.ipv6SubnetLen ?? 64 } : {}),
        ...(this.opts.directRouting ? { directRouting: true } : {}),
      });
      await reg.putNetworkConfig(text, true);
    } finally {
      reg.close();
    }
  }

  /** Adds node i (its namespace, eth0 on the hub bridge, 192.0.2.<i + 1>); the caller starts its agent. */
  async addNode(i: number): Promise<void> {
    const ns = await Netns.create(`n${i}`, this.tag);
    if (this.pki) await this.pki.issue(`node-${i}`, { usage: "client", cn: `node-${i}` });
    await veth(ns, "eth0", this.hub, `h${i}`);
    await this.hub.ip("link", "set", `h${i}`, "master", "br0");
    const underlay = this.opts.ipv6Only ? 0 : (0xc0000200 | (i + 1)) >>> 0; // 192.0.2.(i+1)
    if (underlay !== 0) await ns.ip("addr", "add", `${formatIpv4(underlay)}/24`, "dev", "eth0");
    await ns.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    const underlay6 = this.network6 ? parseIpv6(`2001:db8:ff::${(i + 1).toString(16)}`) : undefined;
    if (underlay6 !== undefined) {
      await ns.ip("-6", "addr", "add", `${formatIpv6(underlay6)}/64`, "dev", "eth0", "nodad");
      await ns.exec(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    }
    const dir = join(this.dir, `n${i}`);
    mkdirSync(dir, { recursive: true });
    this.nodes.push({ index: i, ns, underlay, underlay6, dir, agent: undefined, subnet: undefined, subnet6: undefined, pods: [] });
  }

  node(i: number): ClusterNode {
    const n = this.nodes[i];
    if (!n) throw new Error(`no node ${i}`);
    return n;
  }

  /** Paths of a node's agent files. */
  files(i: number): { subnetFile: string; socket: string; discoverySocket: string; log: string; stateDir: string; bpffs: string } {
    const d = this.node(i).dir;
    return {
      subnetFile: join(d, "subnet.env"), socket: join(d, "agent.sock"), discoverySocket: join(d, "discovery.sock"), log: join(d, "agent.log"), stateDir: join(d, "state"),
      bpffs: join(this.dir, "bpffs", `n${i}`),
    };
  }

  /** The --backend node i runs with. */
  backendOf(i: number): string {
    const b = this.opts.backend;
    return (typeof b === "string" ? b : b?.[i]) ?? "vxlan";
  }

  /** With `etcdTls`: node i's client certificate and key (CN node-<i>) and the CA. */
  tlsFiles(i: number): { caFile: string; certFile: string; keyFile: string } {
    if (!this.pki) throw new Error("the cluster's etcd has no TLS (ClusterOptions.etcdTls)");
    return { caFile: this.pki.ca.cert, certFile: join(this.pki.dir, `node-${i}.pem`), keyFile: join(this.pki.dir, `node-${i}.key`) };
  }

  /** The etcd flags of node i's agent: the endpoint, and with `etcdTls` its certificate files. */
  etcdArgs(i: number): string[] {
    if (!this.pki) return ["--etcd-endpoints", this.etcdCluster?.endpoints ?? this.etcd.endpoint];
    const t = this.tlsFiles(i);
    return ["--etcd-endpoints", this.etcd.endpoint, "--etcd-cafile", t.caFile, "--etcd-certfile", t.certFile, "--etcd-keyfile", t.keyFile];
  }

  /**
   * Gives node i's namespace its own /etc/resolv.conf (`ip netns exec` binds
   * /etc/netns/<name>/resolv.conf over it), for agents on the default
   * --dns-upstream. destroy() removes it.
   */
  setResolvConf(i: number, text: string): void {
    const d = join("/etc/netns", this.node(i).ns.name);
    mkdirSync(d, { recursive: true });
    if (!this.etcNetns.includes(d)) this.etcNetns.push(d);
    writeFileSync(join(d, "resolv.conf"), text);
  }

  /**
   * Starts node i's agent (its log goes to <dir>/n<i>/agent.log). `wrap` is a
   * command prefix inside the namespace (e.g. setpriv dropping capabilities).
   * Later flags win: `extra` overrides `nodeAgentArgs`, which overrides `agentArgs`.
   * With `agentLauncher`, the launcher starts it (with `extra`; `wrap` does not apply).
   */
  startAgent(i: number, extra: readonly string[] = [], wrap: readonly string[] = []): ChildProcess {
    const n = this.node(i);
    const f = this.files(i);
    mkdirSync(f.bpffs, { recursive: true });
    const launcher = this.opts.agentLauncher;
    const child = launcher ? launcher.start(this, i, extra) : n.ns.spawn([...wrap, process.execPath, WEFT_BIN, "agent",
      ...this.etcdArgs(i), "--iface", "eth0", "--state-dir", f.stateDir, "--subnet-file", f.subnetFile,
      "--control-socket", f.socket, "--discovery-socket", f.discoverySocket, "--health-listen", "127.0.0.1:9099", "--reconcile-interval", "2",
      "--backend", this.backendOf(i), "--bpffs", f.bpffs,
      // Tests never send queries past the namespaces they create; "default" tests the node's resolv.conf.
      ...(this.opts.dnsUpstream === "default" ? [] : ["--dns-upstream", "none"]),
      ...(this.opts.agentArgs ?? []), ...(this.opts.nodeAgentArgs?.[i] ?? []), ...extra]);
    const out = createWriteStream(f.log, { flags: "a" });
    child.stdout?.pipe(out);
    child.stderr?.pipe(out);
    n.agent = child;
    return child;
  }

  /** Stops node i's agent with `signal` and waits for it to exit. */
  async stopAgent(i: number, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const c = this.node(i).agent;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once("exit", r));
    c.kill(signal);
    await exited;
  }

  async status(i: number): Promise<AgentStatus> {
    return queryStatus(this.files(i).socket);
  }

  /** Waits until node i's agent says it is ready; records its subnet. */
  async waitReady(i: number, timeoutMs = 30_000): Promise<AgentStatus> {
    const n = this.node(i);
    const end = Date.now() + timeoutMs;
    let last = "no answer";
    while (Date.now() < end) {
      if (n.agent && n.agent.exitCode !== null) {
        throw new Error(`agent ${i} exited (${n.agent.exitCode}): ${this.agentLog(i).slice(-2000)}`);
      }
      try {
        const st = await this.status(i);
        const want6 = this.network6 !== undefined;
        if (st.ready && (st.subnet || this.opts.ipv6Only) && (!want6 || st.subnet6)) {
          n.subnet = st.subnet ? parseCidr(st.subnet) : undefined;
          n.subnet6 = st.subnet6 ? parseCidr6(st.subnet6) : undefined;
          return st;
        }
        last = JSON.stringify(st.readiness);
      } catch (e) {
        last = (e as Error).message;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`agent ${i} not ready after ${timeoutMs} ms (${last}); log: ${this.agentLog(i).slice(-2000)}`);
  }

  agentLog(i: number): string {
    const f = this.files(i).log;
    return existsSync(f) ? readFileSync(f, "utf8") : "";
  }

  /** Pods on a cni0 bridge (or routed): each family's gateway = its first address, pods from the second on, MTU from the subnet file. */
  async addPods(n: ClusterNode, subnet = n.subnet, mtu = this.mtuOf(n.index), subnet6 = n.subnet6): Promise<void> {
    if (!subnet && !subnet6) throw new Error(`node ${n.index} has no subnet yet`);
    if (this.opts.podsPerNode === 0) return; // pods come from the CNI plugin (which makes cni0 itself)
    const s = { v4: subnet, v6: subnet6 };
    const routed = this.opts.podWiring === "routed";
    if (!routed) await makeBridge(n.ns, s, mtu);
    for (let j = 0; j < this.opts.podsPerNode; j++) {
      n.pods.push(await (routed ? routedPod : bridgedPod)(n.ns, n.index, j, this.tag, s, mtu));
      if (n.agent) await this.registerPod(n.index, j);
    }
  }

  /** Tells node i's agent about its pod j (as the CNI plugin will): addresses, host-side veth, MAC. */
  async registerPod(i: number, j: number): Promise<void> {
    const n = this.node(i);
    const pod = n.pods[j];
    if (!pod) throw new Error(`node ${i} has no pod ${j}`);
    const [link] = JSON.parse(await pod.ns.ip("-json", "link", "show", "dev", "eth0")) as { address: string }[];
    await requestEndpoint(this.files(i).socket, "endpoint-add", {
      ...(pod.addr !== 0 ? { ip: formatIpv4(pod.addr) } : {}), ...(pod.addr6 !== undefined ? { ip6: formatIpv6(pod.addr6) } : {}),
      ifname: `p${j}`, mac: link?.address ?? "",
    });
  }

  private mtuOf(i: number): number {
    const f = this.files(i).subnetFile;
    const m = existsSync(f) ? /^FLANNEL_MTU=(\d+)$/m.exec(readFileSync(f, "utf8")) : null;
    return m?.[1] ? Number(m[1]) : 1450;
  }

  get pods(): Pod[] {
    return this.nodes.flatMap((n) => n.pods);
  }

  /** One ping from a pod (to an IPv4 address as a number, or any address as text); true when answered. */
  ping(from: Pod, to: number | string, opts: { count?: number; waitSec?: number } = {}): Promise<boolean> {
    return pingFrom(from, typeof to === "number" ? formatIpv4(to) : to, opts);
  }

  /**
   * Every pod pings every other pod over `family`; returns the pairs that
   * failed. Throws with fewer than two pods: an empty list would pass.
   */
  pingAll(family: 4 | 6 = 4): Promise<string[]> {
    return pingPairs(this.pods, family);
  }

  /** Stops every agent and etcd, deletes every namespace, removes the directory. */
  async destroy(): Promise<void> {
    await Promise.all(this.nodes.map((n) => this.stopAgent(n.index, "SIGKILL").catch(() => undefined)));
    await this.opts.agentLauncher?.destroy?.(this).catch(() => undefined);
    await (this.etcdCluster ?? this.etcd).close().catch(() => undefined);
    for (const n of this.nodes) {
      for (const p of n.pods) await p.ns.destroy();
      await n.ns.destroy();
    }
    await this.hub.destroy();
    for (const d of this.etcNetns) rmSync(d, { recursive: true, force: true });
    await run(["umount", "-l", join(this.dir, "bpffs")]).catch(() => undefined);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
