import type { Logger } from "../common/log.js";
import { usageRatio } from "./allocator.js";
import type { IpamService } from "./ipam.js";
import type { NetnsReconciler } from "./reconciler.js";

/**
 * Reclaim under pressure (seed 2.1.3): when a pool's usage crosses the
 * threshold, addresses of pods whose network namespace is gone are freed at
 * once instead of at the reconciler's next timer, after a shorter grace
 * (still re-validated right before each release, as every reconciler
 * release is: a live pod is never touched).
 *
 * - After every allocation that leaves its pool at or above the threshold,
 *   a pass runs in the background; while dead-looking addresses wait out the
 *   pressure grace, one more pass is scheduled for when it ends.
 * - An ADD that finds its pool full runs a pass itself and tries again
 *   before it fails; a failure then says how many addresses are held and how
 *   many wait out their grace.
 *
 * Usage is what `weft_ipam_pool_usage_ratio` shows: addresses in use over
 * those that can be handed out (capacity less reservations not in use).
 */
export interface PressureOptions {
  /** 0 < threshold <= 1: the usage at which reclaiming starts. */
  readonly threshold: number;
  /** How long a pod's namespace must look gone before it is freed under pressure. */
  readonly graceMs: number;
}

export class PoolPressure {
  /** Pools at or above the threshold: key -> its network and name. */
  private readonly above = new Map<string, { network: string; pool: string }>();
  private followUp: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Pressure events since start (a pool going from below the threshold to at or above it). */
  events = 0;

  constructor(private readonly ipam: IpamService, private readonly reconciler: NetnsReconciler, private readonly log: Logger, readonly opts: PressureOptions) {}

  /** Usage ratio of `pool` in `network` (usageRatio; 0 when the pool is unknown here). O(pool size). */
  ratio(network: string, pool: string): number {
    const u = this.ipam.poolUsage(network, pool);
    return u ? usageRatio(u) : 0;
  }

  /** After an allocation from `pool`: reclaims in the background when the pool is at or above the threshold. */
  allocated(network: string, pool: string): void {
    const r = this.ratio(network, pool);
    if (r < this.opts.threshold) {
      this.above.delete(JSON.stringify([network, pool]));
      return;
    }
    this.enter(network, pool, { usage: Math.round(r * 1000) / 1000 }, "ipam: pool usage crossed the reclaim threshold; freeing the addresses of pods whose network namespace is gone");
    this.reclaim().catch((e: Error) => this.log.warn({ network, pool, err: e.message }, "ipam: early reclaim failed; the reconciler's timer will try again"));
  }

  /** Before an ADD fails for a full pool: one pass now; true when it freed something. */
  async exhausted(network: string, pool: string): Promise<boolean> {
    this.enter(network, pool, {}, "ipam: pool full; freeing the addresses of pods whose network namespace is gone");
    return (await this.reclaim()) > 0;
  }

  /** Notes `pool` as under pressure; the first time (since it was last below the threshold) it counts and logs the event. */
  private enter(network: string, pool: string, fields: Record<string, unknown>, msg: string): void {
    const key = JSON.stringify([network, pool]);
    if (this.above.has(key)) return;
    this.above.set(key, { network, pool });
    this.events++;
    this.log.warn({ network, pool, ...fields, threshold: this.opts.threshold, graceMs: this.opts.graceMs }, msg);
  }

  /** How many addresses look dead and wait out their grace (for the ADD's error). */
  get waiting(): number {
    return this.reconciler.waiting;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.followUp);
  }

  private async reclaim(): Promise<number> {
    if (this.stopped) return 0;
    const released = await this.reconciler.pass(Date.now(), this.opts.graceMs);
    for (const [key, { network, pool }] of [...this.above]) if (this.ratio(network, pool) < this.opts.threshold) this.above.delete(key);
    if (this.reconciler.waiting > 0 && this.followUp === undefined && !this.stopped) {
      this.followUp = setTimeout(() => {
        this.followUp = undefined;
        if (this.above.size > 0) this.reclaim().catch((e: Error) => this.log.warn({ err: e.message }, "ipam: early reclaim failed; the reconciler's timer will try again"));
      }, this.opts.graceMs + 10);
      this.followUp.unref();
    }
    return released;
  }
}
