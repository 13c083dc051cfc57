import { type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { projectRoot } from "../../src/common/paths.js";
import { Netns, uniqueTag } from "../../src/harness/netns.js";
import { execPlugin, type CniCall, type CniOut } from "../helpers/cni.js";

/**
 * A node for the CNI tests without etcd: a network namespace running the
 * agent's pod side (pod-host.mjs, from dist/) bound to the given subnets,
 * so IPv6 and dual-stack can be tested before leases carry an IPv6 subnet.
 */
export class PodHost {
  private constructor(readonly ns: Netns, readonly dir: string, readonly socket: string, private readonly proc: ChildProcess, readonly tag: string) {}

  static async start(role: string, v4: string | undefined, v6: string | undefined, mtu = 1450): Promise<PodHost> {
    const tag = uniqueTag();
    const ns = await Netns.create(role, tag);
    const dir = mkdtempSync(join(tmpdir(), "weft-podhost-"));
    const socket = join(dir, "agent.sock");
    writeFileSync(join(dir, "subnet.env"), `FLANNEL_MTU=${mtu}\n`);
    const proc = ns.spawn([process.execPath, join(projectRoot(), "test", "cni", "pod-host.mjs"), join(dir, "state"), socket, join(dir, "subnet.env"), v4 ?? "-", v6 ?? "-"]);
    let err = "";
    proc.stderr?.on("data", (d: Buffer) => (err += d.toString()));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`pod-host did not start: ${err}`)), 20_000);
      proc.stdout?.on("data", (d: Buffer) => {
        if (d.toString().includes("ready")) {
          clearTimeout(t);
          resolve();
        }
      });
      proc.on("exit", (code) => {
        clearTimeout(t);
        reject(new Error(`pod-host exited ${code}: ${err}`));
      });
    });
    return new PodHost(ns, dir, socket, proc, tag);
  }

  /** A pod namespace of this test run. */
  pod(role: string): Promise<Netns> {
    return Netns.create(role, this.tag);
  }

  plugin(binary: string, cniPath: string, call: CniCall): Promise<CniOut> {
    return execPlugin(binary, call, { cniPath, socket: this.socket, nodeNs: this.ns.name });
  }

  /** Binds other subnets, as the agent does for a new lease. */
  bind(v4: string | undefined, v6: string | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      const s = createConnection(this.socket, () => s.write(`bind ${v4 ?? "-"} ${v6 ?? "-"}\n`));
      s.on("data", () => undefined);
      s.on("end", () => resolve());
      s.on("error", reject);
    });
  }

  /** What the data path was told (endpoint add/del), in order. */
  endpoints(): Promise<{ op: string; ip: string | null; ip6: string | null }[]> {
    return new Promise((resolve, reject) => {
      let buf = "";
      const s = createConnection(this.socket, () => s.write("endpoints\n"));
      s.on("data", (d) => (buf += d.toString()));
      s.on("end", () => resolve(JSON.parse(buf) as { op: string; ip: string | null; ip6: string | null }[]));
      s.on("error", reject);
    });
  }

  async stop(): Promise<void> {
    this.proc.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 200));
    await this.ns.destroy();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
