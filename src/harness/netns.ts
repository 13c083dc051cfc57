import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { join } from "node:path";
import type { ChildProcess } from "node:child_process";
import { run, start } from "../common/exec.js";

/**
 * Network namespaces for tests, benchmarks and the demo cluster. Every name
 * starts with NS_PREFIX so that a run that was killed can be swept clean by
 * the next one (sweepNamespaces).
 */
export const NS_PREFIX = "wft";

/** A short unique tag (interface names are limited to 15 bytes). */
export function uniqueTag(): string {
  return randomBytes(3).toString("hex");
}

export class Netns {
  private constructor(readonly name: string) {}

  /** Creates `wft<tag>-<role>` with loopback up. */
  static async create(role: string, tag = uniqueTag()): Promise<Netns> {
    const name = `${NS_PREFIX}${tag}-${role}`;
    await run(["ip", "netns", "add", name]);
    const ns = new Netns(name);
    await ns.ip("link", "set", "lo", "up");
    return ns;
  }

  /** `ip -n <ns> ...` */
  ip(...args: string[]): Promise<string> {
    return run(["ip", "-n", this.name, ...args]);
  }

  /** Runs a command inside the namespace. */
  exec(argv: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
    return run(["ip", "netns", "exec", this.name, ...argv], opts);
  }

  /** Starts a long-running command inside the namespace. */
  spawn(argv: readonly string[]): ChildProcess {
    return start(["ip", "netns", "exec", this.name, ...argv]);
  }

  /** Kills what runs inside and deletes the namespace (its devices go with it). */
  async destroy(): Promise<void> {
    await killNamespacePids(this.name);
    await run(["ip", "netns", "del", this.name]).catch(() => undefined);
  }
}

async function killNamespacePids(name: string): Promise<void> {
  const pids = (await run(["ip", "netns", "pids", name]).catch(() => "")).split(/\s+/).filter(Boolean);
  for (const pid of pids) {
    try {
      process.kill(Number(pid), "SIGKILL");
    } catch {
      // already gone
    }
  }
}

/** Creates a veth pair with one end in each namespace, both up. */
export async function veth(a: Netns, aName: string, b: Netns, bName: string): Promise<void> {
  await run(["ip", "link", "add", aName, "netns", a.name, "type", "veth", "peer", "name", bName, "netns", b.name]);
  await a.ip("link", "set", aName, "up");
  await b.ip("link", "set", bName, "up");
}

/** Deletes every namespace whose name starts with `prefix` (left behind by killed runs). */
export async function sweepNamespaces(prefix = NS_PREFIX): Promise<string[]> {
  const out = await run(["ip", "netns", "list"]).catch(() => "");
  const names = out.split("\n").map((l) => l.split(" ")[0] ?? "").filter((n) => n.startsWith(prefix));
  for (const n of names) {
    await killNamespacePids(n);
    await run(["ip", "netns", "del", n]).catch(() => undefined);
    rmSync(join("/etc/netns", n), { recursive: true, force: true }); // a per-namespace resolv.conf (ip netns del leaves it)
  }
  return names;
}

/** Unmounts bpffs mounts left under the temp dir by harness runs that were killed. */
export async function sweepMounts(): Promise<string[]> {
  const mounts = await run(["findmnt", "-rn", "-t", "bpf", "-o", "TARGET"]).catch(() => "");
  const stale = mounts.split("\n").map((l) => l.trim()).filter((t) => /\/weft-cluster-[^/]+\/bpffs$/.test(t) || /\/weft-bpffs-[^/]+$/.test(t));
  for (const t of stale) await run(["umount", "-l", t]).catch(() => undefined);
  return stale;
}
