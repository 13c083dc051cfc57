import { EventEmitter } from "node:events";
import type { Watcher } from "etcd3";
import type { Logger } from "../common/log.js";
import type { Lease } from "./lease.js";
import type { LeaseEvent, LeaseSnapshot, SkippedKey, SubnetRegistry } from "./registry.js";

/**
 * Every node's lease, kept current: a snapshot (list), then a watch from the
 * snapshot's revision + 1. When the watch cannot continue (the revision was
 * compacted, the stream was cancelled) it lists again and emits a new
 * snapshot, which the route table diffs against what it had and the subnet
 * manager checks for our own key. Keys that do not decode are passed on as
 * "skip" (the route table judges, logs and counts them, once per key).
 */
export class LeaseWatcher extends EventEmitter<{
  snapshot: [LeaseSnapshot];
  put: [Lease];
  skip: [SkippedKey];
  /** A key (relative to the subnets prefix) was deleted. */
  delete: [string];
}> {
  private watcher: Watcher | undefined;
  private closed = false;
  private resyncing = false;
  /** Which watch is current: events and errors of an older one are ignored. */
  private generation = 0;
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
    if (this.resyncing) return;
    this.resyncing = true;
    try {
      for (let delay = this.retryMs; !this.closed; delay = Math.min(delay * 2, 10_000)) {
        try {
          const snap = await this.registry.listLeases();
          if (this.closed) return;
          this.resyncs++;
          this.emit("snapshot", snap);
          const next = (BigInt(snap.revision) + 1n).toString();
          await cancel(this.watcher);
          this.watcher = undefined;
          const gen = ++this.generation;
          const w = await this.registry.watch(next, (e) => gen === this.generation && this.onEvent(e), (err) => gen === this.generation && this.onWatchError(err), (up) => {
            if (gen !== this.generation || this.synced === up) return;
            this.synced = up;
            if (up) this.log.info("lease watch reconnected; it resumes where it stopped");
            else this.log.warn("lease watch disconnected; reconnecting");
          });
          if (this.closed) {
            await cancel(w);
            return;
          }
          this.watcher = w;
          this.synced = true;
          return;
        } catch (e) {
          this.synced = false;
          this.log.warn({ err: (e as Error).message, retryInMs: delay }, "listing leases failed; retrying");
          await new Promise((r) => setTimeout(r, delay).unref());
        }
      }
    } finally {
      this.resyncing = false;
    }
  }

  private onEvent(e: LeaseEvent): void {
    if (this.closed) return;
    if (e.type === "put") this.emit("put", e.lease);
    else if (e.type === "delete") this.emit("delete", e.key);
    else this.emit("skip", e.skipped);
  }

  private onWatchError(err: Error): void {
    if (this.closed) return;
    this.synced = false;
    this.watcher = undefined; // the server ended it: cancelling it again would wait for an answer that never comes
    this.log.warn({ err: err.message }, "lease watch ended; listing again");
    void this.resync();
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
