import { EventEmitter } from "node:events";
import { ListWatch } from "../common/list-watch.js";
import type { Logger } from "../common/log.js";
import type { Lease } from "./lease.js";
import type { LeaseEvent, LeaseSnapshot, SkippedKey, SubnetRegistry } from "./registry.js";

/**
 * Every node's lease, kept current by the shared list-then-watch loop: a
 * snapshot, then a watch; when the watch cannot continue (the revision was
 * compacted, the stream was cancelled) a new snapshot, which the route table
 * diffs against what it had and the subnet manager checks for our own key.
 * Keys that do not decode are passed on as "skip" (the route table judges,
 * logs and counts them, once per key).
 */
export class LeaseWatcher extends EventEmitter<{
  snapshot: [LeaseSnapshot];
  put: [Lease];
  skip: [SkippedKey];
  /** A key (relative to the subnets prefix) was deleted. */
  delete: [string];
}> {
  private readonly loop: ListWatch<LeaseSnapshot, LeaseEvent>;

  constructor(registry: SubnetRegistry, log: Logger, retryMs = 1000) {
    super();
    this.loop = new ListWatch("lease", {
      list: async () => {
        const snap = await registry.listLeases();
        return { snapshot: snap, revision: snap.revision };
      },
      watch: (from, onEvent, onError, onConnection) => registry.watch(from, (e) => onEvent(e), onError, onConnection),
    }, {
      snapshot: (s) => this.emit("snapshot", s),
      event: (e) => {
        if (e.type === "put") this.emit("put", e.lease);
        else if (e.type === "delete") this.emit("delete", e.key);
        else this.emit("skip", e.skipped);
      },
    }, log, retryMs);
  }

  /** True once a snapshot is applied and its watch is connected (false while the stream reconnects). */
  get synced(): boolean {
    return this.loop.connected;
  }

  /** Snapshots taken (1 at start; more after compaction or watch failures). */
  get resyncs(): number {
    return this.loop.resyncs;
  }

  /** Watches abandoned after staying disconnected (stuck on a silent etcd member), then started anew. */
  get stalls(): number {
    return this.loop.stalls;
  }

  /** Takes the first snapshot (retrying while etcd is unreachable) and starts watching. */
  start(): Promise<void> {
    return this.loop.start();
  }

  close(): Promise<void> {
    return this.loop.close();
  }
}
