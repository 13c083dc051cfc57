import type { Logger } from "../common/log.js";
import { statSync } from "node:fs";
import type { IpamService } from "./ipam.js";
import { addressText, keyOf, type Allocation } from "./table.js";

/**
 * Releases addresses whose pod is gone without a DEL (a runtime crash, a
 * node reboot, a lost DEL). Calico's rule applies: never free a live
 * address. The rule:
 *
 * - Only an allocation whose namespace identity was established at ADD is
 *   ever a candidate: the agent itself saw CNI_NETNS as a network namespace
 *   file and recorded its inode (netnsInode != 0). Without it (no path; the
 *   plugin ran in another mount namespace, so the path meant nothing here;
 *   not a namespace file) the reconciler cannot tell a dead pod from one it
 *   cannot see, and leaves the address to DEL and CNI GC.
 * - Evidence of death: the path is gone (ENOENT, ENOTDIR), or it now is
 *   another namespace (another inode). Any other error proves nothing.
 * - It must look dead for a whole grace period, and is checked once more
 *   right before it is released.
 * - Nothing is released while the IPAM state cannot be trusted.
 */
export class NetnsReconciler {
  /** key → when it was first seen dead. */
  private readonly suspects = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<number> | undefined;
  /** The grace of the pass in `running` (a shorter one asked meanwhile runs after it, not instead). */
  private runningGrace = Infinity;

  constructor(private readonly ipam: IpamService, private readonly log: Logger, readonly opts: { intervalMs: number; graceMs: number }) {}

  start(): void {
    const tick = (): void => {
      this.timer = setTimeout(() => void this.pass().finally(() => this.timer && tick()), this.opts.intervalMs);
      this.timer.unref();
    };
    tick();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /**
   * One pass; returns how many were released. `graceMs` overrides the grace
   * (0: `weft ipam gc --dead-now`; the pressure grace). A pass asked while one
   * runs shares it when its grace is no shorter, and otherwise runs right
   * after it with its own grace (an early reclaim is not lost to a timer pass).
   */
  pass(now = Date.now(), graceMs = this.opts.graceMs): Promise<number> {
    if (this.running && graceMs >= this.runningGrace) return this.running;
    const after = this.running?.catch(() => 0) ?? Promise.resolve(0);
    const p = after.then(() => this.passNow(now, graceMs));
    this.running = p;
    this.runningGrace = graceMs;
    p.finally(() => {
      if (this.running !== p) return;
      this.running = undefined;
      this.runningGrace = Infinity;
    }).catch(() => undefined);
    return p;
  }

  private async passNow(now: number, graceMs: number): Promise<number> {
    if (this.ipam.store.problem) return 0;
    const live = new Set<string>();
    let released = 0;
    for (const a of this.ipam.list()) {
      const key = keyOf(a);
      live.add(key);
      if (!isDead(a)) {
        this.suspects.delete(key);
        continue;
      }
      const since = this.suspects.get(key) ?? now;
      this.suspects.set(key, since);
      if (now - since < graceMs) continue;
      // Re-validate just before the release: the namespace may have come back (or the pod been re-added).
      const current = this.ipam.find(a.network, a.containerId, a.ifname);
      if (!current || current !== a || !isDead(current)) continue;
      // An ADD or DEL of this attachment in flight owns it now: never wait behind it (an ADD that
      // finds its pool full waits on this pass). The next pass looks again.
      if (this.ipam.busy(key)) continue;
      this.log.info({ ip: addressText(a), container: a.containerId, netns: a.netns, deadForMs: now - since }, "ipam: releasing the address of a pod whose network namespace is gone");
      if (await this.ipam.release(a.network, a.containerId, a.ifname, "reconcile")) released++;
      this.suspects.delete(key);
    }
    for (const k of this.suspects.keys()) if (!live.has(k)) this.suspects.delete(k);
    return released;
  }

  /** How many allocations look dead and wait out their grace. */
  get waiting(): number {
    return this.suspects.size;
  }
}

/** The ADD's namespace no longer exists (or is another one now). Unknown (no path, or no identity recorded at ADD) is never dead. */
export function isDead(a: Allocation): boolean {
  if (!a.netns || a.netnsInode === 0) return false;
  let ino: number;
  try {
    ino = statSync(a.netns).ino;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === "ENOENT" || code === "ENOTDIR"; // anything else (EACCES, EIO) proves nothing
  }
  return ino !== a.netnsInode;
}
