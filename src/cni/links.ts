import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { formatIpv4 } from "../common/ipv4.js";
import { BatchSession } from "../common/iproute.js";
import { CommandError, run } from "../common/exec.js";
import { CNI_CODE, CniError } from "./spec.js";

/**
 * The kernel objects of the weft main plugin: a bridge with the node's
 * gateway address (flannel's cni0 layout, so every backend and kernel
 * routing work unchanged), and per pod a veth pair with one end in the pod's
 * namespace. Host-side commands share one long-lived `ip -batch` process;
 * pod-side commands run as one `nsenter --net=<netns> ip -batch -` per pod.
 */

/** The host end's name, derived from the attachment, so DEL finds it without state: "wv" + 11 hex digits. */
export function hostIfName(network: string, containerId: string, ifname: string): string {
  return `wv${createHash("sha256").update(`${network}/${containerId}/${ifname}`).digest("hex").slice(0, 11)}`;
}

/** The pod end's MAC: locally administered 0a:58 followed by the address (as OVN-Kubernetes does), so it is known before the link exists. */
export function podMac(ip: number): string {
  return `0a:58:${[ip >>> 24, (ip >>> 16) & 255, (ip >>> 8) & 255, ip & 255].map((b) => b.toString(16).padStart(2, "0")).join(":")}`;
}

export function linkExists(name: string): boolean {
  return existsSync(`/sys/class/net/${name}`);
}

export function linkMac(name: string): string | undefined {
  try {
    return readFileSync(`/sys/class/net/${name}/address`, "utf8").trim();
  } catch {
    return undefined;
  }
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

  /** The bridge exists, is up, carries the gateway address and the MTU. Cheap once it is so. */
  async ensureBridge(name: string, gateway: number, len: number, mtu: number): Promise<void> {
    const want = `${name}|${gateway}|${len}|${mtu}`;
    if (this.bridgeReady === want && linkExists(name)) return;
    if (!linkExists(name)) {
      const r = await this.ip.run([`link add ${name} type bridge`]);
      const err = r.failed[0]?.error ?? "";
      if (err && !/exists/i.test(err)) throw new CniError(CNI_CODE.KERNEL, `creating bridge ${name} failed: ${err}`);
    }
    await this.host([`addr replace ${formatIpv4(gateway)}/${len} dev ${name}`, `link set ${name} mtu ${mtu} up`], `configuring bridge ${name}`);
    this.bridgeReady = want;
  }

  /** The veth pair: host end on the bridge and up, pod end (named, addressed by MAC) moved into the namespace. */
  async createVeth(hostIf: string, podIf: string, netns: string, mtu: number, mac: string, bridge: string): Promise<void> {
    await this.host([
      `link add ${hostIf} mtu ${mtu} type veth peer name ${podIf} mtu ${mtu} address ${mac} netns ${netns}`,
    ], `creating the veth pair ${hostIf}/${podIf}`);
    await this.host([`link set ${hostIf} master ${bridge} up`], `attaching ${hostIf} to ${bridge}`);
  }

  /** Address, link up, default route via the gateway: inside the pod's namespace. */
  async configurePod(netns: string, podIf: string, cidr: string, gateway: number): Promise<void> {
    const lines = [`addr replace ${cidr} dev ${podIf}`, `link set ${podIf} up`, `route replace default via ${formatIpv4(gateway)} dev ${podIf}`];
    await this.gate.run(async () => {
      try {
        await run(["nsenter", `--net=${netns}`, "ip", "-batch", "-"], { input: `${lines.join("\n")}\n`, timeoutMs: 30_000 });
      } catch (e) {
        const msg = e instanceof CommandError ? e.stderr.trim() : (e as Error).message;
        throw new CniError(CNI_CODE.KERNEL, `configuring ${podIf} in ${netns} failed: ${msg}`);
      }
    });
  }

  /** Deletes the host end (the kernel deletes the pod end with it). Absent is fine: DEL is idempotent. */
  async deleteVeth(hostIf: string): Promise<void> {
    if (!linkExists(hostIf)) return;
    const r = await this.ip.run([`link del ${hostIf}`]);
    const err = r.failed[0]?.error ?? "";
    if (err && !/Cannot find device|does not exist/i.test(err)) throw new CniError(CNI_CODE.KERNEL, `deleting ${hostIf} failed: ${err}`);
  }

  /** What CHECK compares: the host end's bridge, and inside the pod its addresses and default route. */
  async inspect(hostIf: string, netns: string, podIf: string): Promise<{ master: string | undefined; hostUp: boolean; addrs: string[]; defaultVia: string | undefined }> {
    let master: string | undefined;
    let hostUp = false;
    try {
      master = readFileSync(`/sys/class/net/${hostIf}/master/uevent`, "utf8").match(/INTERFACE=(\S+)/)?.[1];
      hostUp = readFileSync(`/sys/class/net/${hostIf}/operstate`, "utf8").trim() !== "down";
    } catch {
      // no host end
    }
    const out = await this.gate.run(() => run(["nsenter", `--net=${netns}`, "sh", "-c", `(ip -json addr show dev ${podIf} 2>/dev/null || echo '[]'); echo; ip -json route show default`])).catch((e: Error) => {
      throw new CniError(CNI_CODE.CHECK_FAILED, `cannot look into ${netns}: ${e instanceof CommandError ? e.stderr.trim() : e.message}`);
    });
    const [addrText = "[]", routeText = "[]"] = out.split("\n").filter((l) => l.trim());
    const addrs = (JSON.parse(addrText) as { addr_info?: { family: string; local: string; prefixlen: number }[] }[])
      .flatMap((l) => l.addr_info ?? []).filter((a) => a.family === "inet").map((a) => `${a.local}/${a.prefixlen}`);
    const route = (JSON.parse(routeText) as { gateway?: string }[])[0];
    return { master, hostUp, addrs, defaultVia: route?.gateway };
  }

  close(): void {
    this.ip.close();
  }
}
