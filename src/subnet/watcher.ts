import { EventEmitter } from "node:events";
import type { Watcher } from "etcd3";
import type { Ipv4Prefix } from "../common/ipv4.js";
import type { Logger } from "../common/log.js";
import type { Lease } from "./lease.js";
import type { LeaseEvent, SkippedKey, SubnetRegistry } from "./registry.js";

/**
 * Every node's lease, kept current: a snapshot (list), then a watch from the
 * snapshot's revision + 1. When the watch cannot continue (the revision was
 * compacted, the stream was cancelled) it lists again and emits a new
 * snapshot, which the route table diffs against what it had. Unreadable keys
 * are logged once each and skipped.
 */
export class LeaseWatcher extends EventEmitter<{
  snapshot: [Lease[]];
  put: [Lease];
  delete: [Ipv4Prefix];
}> {
  private watcher: Watcher | undefined;
  private closed = false;
  private readonly reported = new Set<string>();
  /** True once a snapshot is applied and its watch is connected (false while the stream reconnects). */
  synced = false;
  /** Snapshots taken (1 at start; more after compaction or watch failures). */
  resyncs = 0;

  constructor(
    private readonly registry: SubnetRegistry,
    private readonly log: Logger,
    private readonly retryMs = 1000,
  ) {
    super();
  }

  /** Takes the first snapshot (retrying while etcd is unreachable) and starts watching. */
  async start(): Promise<void> {
    await this.resync();
  }

  private async resync(): Promise<void> {
    for (let delay = this.retryMs; !this.closed; delay = Math.min(delay * 2, 10_000)) {
      try {
        const snap = await this.registry.listLeases();
        snap.skipped.forEach((s) => this.skip(s));
        this.resyncs++;
        this.emit("snapshot", snap.leases);
        const next = (BigInt(snap.revision) + 1n).toString();
        await cancel(this.watcher);
        const w = await this.registry.watch(next, (e) => this.onEvent(e), (err) => this.onWatchError(err), (up) => {
          if (this.watcher !== w || this.synced === up) return;
          this.synced = up;
          if (up) this.log.info("lease watch reconnected; it resumes where it stopped");
          else this.log.warn("lease watch disconnected; reconnecting");
        });
        this.watcher = w;
        this.synced = true;
        return;
      } catch (e) {
        this.synced = false;
        this.log.warn({ err: (e as Error).message, retryInMs: delay }, "listing leases failed; retrying");
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
  }

  private onEvent(e: LeaseEvent): void {
    if (e.type === "put") this.emit("put", e.lease);
    else if (e.type === "delete") this.emit("delete", e.subnet);
    else this.skip(e.skipped);
  }

  private onWatchError(err: Error): void {
    if (this.closed) return;
    this.synced = false;
    this.watcher = undefined; // the server ended it: cancelling it again would wait for an answer that never comes
    this.log.warn({ err: err.message }, "lease watch ended; listing again");
    void this.resync();
  }

  private skip(s: SkippedKey): void {
    const id = `${s.key}\u0000${s.reason}`;
    if (this.reported.has(id)) return;
    this.reported.add(id);
    this.log.warn({ key: s.key, reason: s.reason }, "skipping a lease weft cannot use");
  }

  async close(): Promise<void> {
    this.closed = true;
    await cancel(this.watcher);
  }
}

/** Cancels a watch, giving up after a second (an unreachable etcd never answers). */
async function cancel(w: Watcher | undefined): Promise<void> {
  if (!w) return;
  await Promise.race([w.cancel().catch(() => undefined), new Promise((r) => setTimeout(r, 1000).unref())]);
}
