import { createHash } from "node:crypto";
import { existsSync, readFileSync, statfsSync, statSync, writeFileSync } from "node:fs";
import { formatIpv4 } from "../common/ipv4.js";
import { formatIpv6 } from "../common/ipv6.js";
import { BatchSession } from "../common/iproute.js";
import { CommandError, run } from "../common/exec.js";
import { batchSafe, ifnameProblem, NETNS_RULE, netnsProblem, show } from "./names.js";
import { CNI_CODE, CniError } from "./spec.js";

/**
 * The kernel objects of the weft main plugin: a bridge with the node's
 * gateway address (flannel's cni0 layout, so every backend and kernel
 * routing work unchanged), and per pod a veth pair with one end in the pod's
 * namespace. Host-side commands share one long-lived `ip -batch` process;
 * pod-side commands run as one `nsenter --net=<netns> ip -batch -` per pod.
 *
 * No shell anywhere: commands are argv arrays. Batch lines hold only
 * keywords, numbers and addresses weft formats itself, and names and paths
 * request.ts checked (names.ts); each is checked again here, where the line
 * is built, and a device is always named after the "dev"/"name" keyword so
 * that no name can be read as one of ip's keywords.
 */

/** statfs(2) f_type of the namespace filesystem (linux/magic.h NSFS_MAGIC). */
const NSFS_MAGIC = 0x6e736673;

/** A pod's address, its subnet's prefix length and the gateway, per family the node has (at least one set). */
export interface PodAddresses {
  readonly v4: { readonly ip: number; readonly len: number; readonly gateway: number } | undefined;
  readonly v6: { readonly ip: bigint; readonly len: number; readonly gateway: bigint } | undefined;
}

/** The bridge's MAC: from the IPv4 gateway, or the IPv6 gateway's low 32 bits on an IPv6-only node. */
function bridgeMac(a: PodAddresses): string {
  return podMac(a.v4?.gateway ?? Number((a.v6?.gateway ?? 0n) & 0xffffffffn));
}

function checkLen(len: number, max: number): number {
  if (!Number.isInteger(len) || len < 0 || len > max) throw new CniError(CNI_CODE.INTERNAL, `bad prefix length ${show(len)}`);
  return len;
}

/** The host end's name, derived from the attachment, so DEL finds it without state: "wv" + 11 hex digits. */
export function hostIfName(network: string, containerId: string, ifname: string): string {
  return `wv${createHash("sha256").update(`${network}/${containerId}/${ifname}`).digest("hex").slice(0, 11)}`;
}

/** The pod end's MAC: locally administered 0a:58 followed by the address (as OVN-Kubernetes does), so it is known before the link exists. */
export function podMac(ip: number): string {
  return `0a:58:${[ip >>> 24, (ip >>> 16) & 255, (ip >>> 8) & 255, ip & 255].map((b) => b.toString(16).padStart(2, "0")).join(":")}`;
}

export function linkExists(name: string): boolean {
  return !ifnameProblem(name) && existsSync(`/sys/class/net/${name}`);
}

export function linkMac(name: string): string | undefined {
  if (ifnameProblem(name)) return undefined;
  try {
    return readFileSync(`/sys/class/net/${name}/address`, "utf8").trim();
  } catch {
    return undefined;
  }
}

/** A device name as it goes into a command; anything else is a bug upstream and is refused, not run. */
function dev(name: string): string {
  const why = ifnameProblem(name);
  if (why) throw new CniError(CNI_CODE.INTERNAL, `refusing to name the device ${show(name)} in a command: ${why}`);
  return name;
}

/** A namespace path as it goes into a batch line. */
function nsPath(path: string): string {
  const why = netnsProblem(path);
  if (why || !batchSafe(path)) throw new CniError(CNI_CODE.INTERNAL, `refusing to put the path ${show(path)} into a command: ${why ?? "not one word"}`);
  return path;
}

/** Limits concurrent child processes (200 pods starting at once must not fork 400 processes). */
class Gate {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly max: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((r) => this.waiting.push(r));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

export class PodLinks {
  private readonly ip = new BatchSession("ip");
  private readonly gate = new Gate(32);
  private bridgeReady = "";

  /** Runs host-side lines; throws CniError (kernel) naming the first failure. */
  private async host(lines: string[], what: string): Promise<void> {
    const r = await this.ip.run(lines);
    const f = r.failed[0];
    if (f) throw new CniError(CNI_CODE.KERNEL, `${what} failed: ${f.error || "no message"} (ip ${lines[f.line] ?? "?"})`);
  }

  /**
   * CNI_NETNS names a network namespace, and not the node's own (the pod's
   * end, its address and a default route would land on the node). Run
   * before anything is created.
   */
  checkPodNetns(path: string): void {
    const refuse = (why: string): never => {
      throw new CniError(CNI_CODE.INVALID_ENV, `CNI_NETNS ${show(path)} ${why}`, NETNS_RULE, "netns");
    };
    let st: { dev: number; ino: number };
    try {
      st = statSync(nsPath(path));
      if (statfsSync(path).type !== NSFS_MAGIC) refuse("is not a network namespace (not a file of the nsfs filesystem)");
    } catch (e) {
      if (e instanceof CniError) throw e;
      return refuse(`cannot be opened: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const own = statSync("/proc/self/ns/net");
    if (st.dev === own.dev && st.ino === own.ino) refuse("is the node's own network namespace; a pod needs a namespace of its own");
  }

  /**
   * The bridge exists, is a bridge, is up, carries the gateway address of
   * each family (IPv6 without duplicate address detection, so that it serves
   * at once) and the MTU. Cheap once it is so.
   */
  async ensureBridge(name: string, addrs: PodAddresses, mtu: number): Promise<void> {
    if (!Number.isInteger(mtu)) throw new CniError(CNI_CODE.INTERNAL, `bad MTU ${show(mtu)}`);
    if (!addrs.v4 && !addrs.v6) throw new CniError(CNI_CODE.INTERNAL, "no address family to configure the bridge for");
    const lines: string[] = [];
    if (addrs.v4) lines.push(`addr replace ${formatIpv4(addrs.v4.gateway)}/${checkLen(addrs.v4.len, 32)} dev ${dev(name)}`);
    if (addrs.v6) lines.push(`addr replace ${formatIpv6(addrs.v6.gateway)}/${checkLen(addrs.v6.len, 128)} dev ${dev(name)} nodad`);
    const want = `${name}|${lines.join("|")}|${mtu}`;
    if (this.bridgeReady === want && linkExists(name)) return;
    if (!linkExists(dev(name))) {
      const r = await this.ip.run([`link add name ${dev(name)} type bridge`]);
      const err = r.failed[0]?.error ?? "";
      if (err && !/exists/i.test(err)) throw new CniError(CNI_CODE.KERNEL, `creating bridge ${name} failed: ${err}`);
    }
    // A device of another kind must not get the gateway address and the pods' MTU (e.g. "bridge": "eth0").
    if (!existsSync(`/sys/class/net/${name}/bridge`)) {
      throw new CniError(CNI_CODE.INVALID_CONFIG, `"bridge": ${name} exists and is not a bridge`, "name a bridge weft may create or own (default cni0)", "bridge");
    }
    if (addrs.v6) {
      // A node whose default is disable_ipv6=1 would refuse the gateway address: IPv6 is switched on for the bridge alone.
      try {
        writeFileSync(`/proc/sys/net/ipv6/conf/${dev(name)}/disable_ipv6`, "0");
      } catch (e) {
        throw new CniError(CNI_CODE.KERNEL, `switching IPv6 on for bridge ${name} failed: ${(e as Error).message}`, "is IPv6 disabled on this node (ipv6.disable=1 on the kernel command line)?");
      }
    }
    // A fixed MAC: a bridge without one takes its lowest port's, which changes as pods come and go,
    // and pods keep the old one in their ARP cache for the gateway until it expires.
    await this.host([
      `link set dev ${dev(name)} address ${bridgeMac(addrs)}`, ...lines, `link set dev ${dev(name)} mtu ${mtu} up`,
    ], `configuring bridge ${name}`);
    this.bridgeReady = want;
  }

  /** The veth pair: host end on the bridge and up, pod end (named, addressed by MAC) moved into the namespace. */
  async createVeth(hostIf: string, podIf: string, netns: string, mtu: number, mac: string, bridge: string): Promise<void> {
    if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac) || !Number.isInteger(mtu)) throw new CniError(CNI_CODE.INTERNAL, `bad MAC ${show(mac)} or MTU ${show(mtu)}`);
    await this.host([
      `link add name ${dev(hostIf)} mtu ${mtu} type veth peer name ${dev(podIf)} mtu ${mtu} address ${mac} netns ${nsPath(netns)}`,
    ], `creating the veth pair ${hostIf}/${podIf}`);
    await this.host([`link set dev ${dev(hostIf)} master ${dev(bridge)} up`], `attaching ${hostIf} to ${bridge}`);
  }

  /**
   * Inside the pod's namespace: per family its address and a default route
   * via the gateway, the link up. IPv6: the namespace's IPv6 is switched on
   * for the interface, router advertisements are ignored (the routes are
   * weft's) and the address skips duplicate address detection (IPAM already
   * made it unique), so the pod can use it at once.
   */
  async configurePod(netns: string, podIf: string, addrs: PodAddresses): Promise<void> {
    const ifn = dev(podIf);
    const lines: string[] = [];
    if (addrs.v4) lines.push(`addr replace ${formatIpv4(addrs.v4.ip)}/${checkLen(addrs.v4.len, 32)} dev ${ifn}`);
    if (addrs.v6) lines.push(`addr replace ${formatIpv6(addrs.v6.ip)}/${checkLen(addrs.v6.len, 128)} dev ${ifn} nodad`);
    lines.push(`link set dev ${ifn} up`);
    if (addrs.v4) lines.push(`route replace default via ${formatIpv4(addrs.v4.gateway)} dev ${ifn}`);
    if (addrs.v6) lines.push(`route replace ::/0 via ${formatIpv6(addrs.v6.gateway)} dev ${ifn}`);
    const ns = `--net=${nsPath(netns)}`;
    const fail = (e: unknown, what: string): never => {
      const msg = e instanceof CommandError ? e.stderr.trim() : (e as Error).message;
      throw new CniError(CNI_CODE.KERNEL, `${what} ${podIf} in ${netns} failed: ${msg}`);
    };
    await this.gate.run(async () => {
      if (addrs.v6) {
        // A file under /proc/sys/net is the opener's namespace's: tee, run in the pod's, writes the pod's settings
        // (tee, not sysctl: coreutils is in every image, procps is not in the agent's).
        const conf = `/proc/sys/net/ipv6/conf/${ifn}`;
        await run(["nsenter", ns, "tee", `${conf}/disable_ipv6`, `${conf}/accept_ra`], { input: "0\n", timeoutMs: 30_000 })
          .catch((e: unknown) => fail(e, "enabling IPv6 on"));
      }
      await run(["nsenter", ns, "ip", "-batch", "-"], { input: `${lines.join("\n")}\n`, timeoutMs: 30_000 }).catch((e: unknown) => fail(e, "configuring"));
    });
  }

  /** Deletes the host end (the kernel deletes the pod end with it). Absent is fine: DEL is idempotent. */
  async deleteVeth(hostIf: string): Promise<void> {
    if (!linkExists(hostIf)) return;
    const r = await this.ip.run([`link del dev ${dev(hostIf)}`]);
    const err = r.failed[0]?.error ?? "";
    if (err && !/Cannot find device|does not exist/i.test(err)) throw new CniError(CNI_CODE.KERNEL, `deleting ${hostIf} failed: ${err}`);
  }

  /** What CHECK compares: the host end's bridge, and inside the pod its addresses and default route. */
  async inspect(hostIf: string, netns: string, podIf: string): Promise<{
    master: string | undefined; hostUp: boolean; addrs: string[]; defaultVia: string | undefined; addrs6: string[]; defaultVia6: string | undefined;
  }> {
    let master: string | undefined;
    let hostUp = false;
    try {
      master = readFileSync(`/sys/class/net/${dev(hostIf)}/master/uevent`, "utf8").match(/INTERFACE=(\S+)/)?.[1];
      hostUp = readFileSync(`/sys/class/net/${hostIf}/operstate`, "utf8").trim() !== "down";
    } catch {
      // no host end
    }
    // Two plain commands (no stdin: a child that exits before reading it, e.g. nsenter on a namespace that is gone,
    // must not leave a write to a closed pipe behind); the pod's interface is picked out of the JSON, never named.
    const look = (args: string[]): Promise<string> => this.gate.run(() => run(["nsenter", `--net=${nsPath(netns)}`, "ip", "-json", ...args])).catch((e: Error) => {
      throw new CniError(CNI_CODE.CHECK_FAILED, `cannot look into ${netns}: ${e instanceof CommandError ? e.stderr.trim() : e.message}`);
    });
    const [linkText, routeText, route6Text] = [await look(["addr", "show"]), await look(["route", "show", "default"]), await look(["-6", "route", "show", "default"])];
    let links: { ifname?: string; addr_info?: { family: string; local: string; prefixlen: number }[] }[];
    let routes: { gateway?: string }[];
    let routes6: { gateway?: string }[];
    try {
      links = JSON.parse(linkText.trim() || "[]") as typeof links;
      routes = JSON.parse(routeText.trim() || "[]") as typeof routes;
      routes6 = JSON.parse(route6Text.trim() || "[]") as typeof routes6;
    } catch (e) {
      throw new CniError(CNI_CODE.CHECK_FAILED, `cannot read what ip printed in ${netns}: ${(e as Error).message}`);
    }
    const info = links.filter((l) => l.ifname === podIf).flatMap((l) => l.addr_info ?? []);
    const addrs = info.filter((a) => a.family === "inet").map((a) => `${a.local}/${a.prefixlen}`);
    // ip prints IPv6 as RFC 5952 text, as weft formats it.
    const addrs6 = info.filter((a) => a.family === "inet6").map((a) => `${a.local}/${a.prefixlen}`);
    return { master, hostUp, addrs, defaultVia: routes[0]?.gateway, addrs6, defaultVia6: routes6[0]?.gateway };
  }

  close(): void {
    this.ip.close();
  }
}
