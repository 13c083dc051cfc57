import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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

/**
 * Who made each tag's namespaces: a sweep removes what a killed run left,
 * never what a live one still uses (a test suite started beside a soak or a
 * benchmark would otherwise delete their namespaces under them). One file
 * per tag holding the owner's pid and start time (a reused pid is not the
 * owner).
 */
const OWNERS = "/run/weft-harness";

function processStart(pid: number | "self"): string | undefined {
  try {
    // Field 22 of /proc/<pid>/stat, counted after the command name's closing parenthesis.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

function own(tag: string): void {
  mkdirSync(OWNERS, { recursive: true });
  writeFileSync(join(OWNERS, tag), `${process.pid} ${processStart("self") ?? ""}\n`);
}

/** Whether the process that made tag `tag`'s namespaces still runs. */
export function ownerAlive(tag: string): boolean {
  let mark: string;
  try {
    mark = readFileSync(join(OWNERS, tag), "utf8");
  } catch {
    return false;
  }
  const [pid, started] = mark.trim().split(" ");
  return pid !== undefined && pid !== "" && processStart(Number(pid)) === started;
}

/** The tag in a namespace name `wft<tag>-<role>` (undefined for another name). */
function tagOf(name: string): string | undefined {
  const dash = name.indexOf("-");
  return name.startsWith(NS_PREFIX) && dash > NS_PREFIX.length ? name.slice(NS_PREFIX.length, dash) : undefined;
}

export class Netns {
  private constructor(readonly name: string) {}

  /** Creates `wft<tag>-<role>` with loopback up. */
  static async create(role: string, tag = uniqueTag()): Promise<Netns> {
    const name = `${NS_PREFIX}${tag}-${role}`;
    own(tag);
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

/**
 * Deletes every namespace whose name starts with `prefix` and whose maker
 * is gone (left behind by killed runs); `force` deletes those of live makers
 * too (a cluster removing its own).
 */
export async function sweepNamespaces(prefix = NS_PREFIX, force = false): Promise<string[]> {
  const out = await run(["ip", "netns", "list"]).catch(() => "");
  const names = out.split("\n").map((l) => l.split(" ")[0] ?? "").filter((n) => n.startsWith(prefix))
    .filter((n) => force || !ownerAlive(tagOf(n) ?? ""));
  for (const n of names) {
    await killNamespacePids(n);
    await run(["ip", "netns", "del", n]).catch(() => undefined);
    rmSync(join("/etc/netns", n), { recursive: true, force: true }); // a per-namespace resolv.conf (ip netns del leaves it)
    const tag = tagOf(n);
    if (tag && !ownerAlive(tag)) rmSync(join(OWNERS, tag), { force: true });
  }
  return names;
}

/** Unmounts bpffs mounts left under the temp dir by harness runs that were killed (a live cluster's stay). */
export async function sweepMounts(): Promise<string[]> {
  const mounts = await run(["findmnt", "-rn", "-t", "bpf", "-o", "TARGET"]).catch(() => "");
  const stale = mounts.split("\n").map((l) => l.trim()).filter((t) => /\/weft-cluster-[^/]+\/bpffs$/.test(t) || /\/weft-bpffs-[^/]+$/.test(t))
    .filter((t) => !ownerAlive(/\/weft-cluster-([0-9a-f]+)-/.exec(t)?.[1] ?? ""));
  for (const t of stale) await run(["umount", "-l", t]).catch(() => undefined);
  return stale;
}
