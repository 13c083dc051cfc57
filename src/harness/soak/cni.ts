import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseIpv4 } from "../../common/ipv4.js";
import { start } from "../../common/exec.js";
import { installCni } from "../../cni/install.js";
import type { Cluster } from "../cluster.js";
import { Netns } from "../netns.js";

/**
 * Pods attached as a runtime attaches them: weft's CNI plugin binary
 * (installed into the cluster's directory) exec'd in the node's namespace
 * with CNI_* in the environment and the config on stdin.
 */
export const CNI_CONF = { cniVersion: "1.1.0", name: "weft", type: "weft", bridge: "cni0" };

export interface CniPod {
  readonly id: string;
  readonly node: number;
  readonly ns: Netns;
  readonly addr: number;
}

export class CniRunner {
  private constructor(readonly binDir: string) {}

  static install(c: Cluster): CniRunner {
    const dir = join(c.dir, "cni");
    const binDir = join(dir, "bin");
    mkdirSync(dir, { recursive: true });
    installCni({ binDir, confDir: join(dir, "net.d"), networkName: "weft", confName: "10-weft.conflist", bridge: "cni0", controlSocket: undefined, ipam: undefined, force: false });
    return new CniRunner(binDir);
  }

  /** One plugin call; resolves with the exit code and stdout. */
  call(c: Cluster, node: number, command: string, id: string, netns: string | undefined): Promise<{ exit: number; stdout: string }> {
    const env: Record<string, string> = {
      PATH: process.env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin", CNI_PATH: `${this.binDir}:/usr/lib/cni`, WEFT_CONTROL_SOCKET: c.files(node).socket,
      CNI_COMMAND: command, CNI_CONTAINERID: id, CNI_IFNAME: "eth0", ...(netns ? { CNI_NETNS: netns } : {}),
    };
    const child = start(["ip", "netns", "exec", c.node(node).ns.name, join(this.binDir, "weft")], { env, stdio: ["pipe", "pipe", "pipe"] });
    return new Promise((resolve, reject) => {
      let stdout = "";
      child.stdout?.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr?.resume();
      child.on("error", reject);
      child.on("close", (code) => resolve({ exit: code ?? -1, stdout }));
      child.stdin?.on("error", () => undefined);
      child.stdin?.end(JSON.stringify(CNI_CONF));
    });
  }

  /** A new pod namespace on `node`, attached by CNI ADD; throws (after removing the namespace) when ADD fails. */
  async add(c: Cluster, node: number, role: string): Promise<CniPod> {
    const ns = await Netns.create(role, c.tag);
    const id = `soak-${role}`;
    const out = await this.call(c, node, "ADD", id, `/run/netns/${ns.name}`).catch((e: unknown) => ({ exit: -1, stdout: String(e) }));
    const ip = out.exit === 0 ? ((JSON.parse(out.stdout) as { ips?: { address: string }[] }).ips?.[0]?.address ?? "") : "";
    if (!ip) {
      await ns.destroy();
      throw new Error(`CNI ADD ${id} on node ${node} failed (exit ${out.exit}): ${out.stdout.slice(0, 500)}`);
    }
    return { id, node, ns, addr: parseIpv4(ip.split("/")[0] ?? "") };
  }

  /** CNI DEL (with the namespace still there, or `nsGone`: removed first, as a runtime may), then the namespace goes. */
  async del(c: Cluster, p: CniPod, nsGone = false): Promise<void> {
    if (nsGone) await p.ns.destroy();
    const out = await this.call(c, p.node, "DEL", p.id, `/run/netns/${p.ns.name}`);
    if (!nsGone) await p.ns.destroy();
    if (out.exit !== 0) throw new Error(`CNI DEL ${p.id} on node ${p.node} failed (exit ${out.exit}): ${out.stdout.slice(0, 500)}`);
  }
}
