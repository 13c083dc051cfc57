import type { Refusal } from "./errors.js";
import type { StreamEnd } from "./subscriber.js";

/** Why a watch began with a snapshot. */
export type SnapshotReason = "initial" | "compacted" | "outside_replay" | "unknown_revision";

/** The discovery API's counts, kept once here; /metrics and `weft status` read them. */
export class DiscoveryCounters {
  /** Change events written to streams (one per subscriber that got it). */
  eventsSent = 0;
  /** Watches that began with a snapshot, by reason. */
  readonly snapshots: Record<SnapshotReason, number> = { initial: 0, compacted: 0, outside_replay: 0, unknown_revision: 0 };
  /** Watches resumed from the replay log (Last-Event-ID), and the events replayed to them. */
  resumed = 0;
  replayed = 0;
  /** Streams ended, by why. */
  readonly ended: Record<StreamEnd, number> = { client: 0, slow: 0, shutdown: 0, error: 0 };
  /** Requests refused, by reason. */
  readonly refused = new Map<Refusal, number>();
  /** Snapshot answers (GET without watch). */
  gets = 0;
  /** Endpoints published and removed through the API (removals: by the pod, or because the pod went). */
  published = 0;
  unpublished = 0;
  releasedWithPod = 0;

  refuse(reason: Refusal): void {
    this.refused.set(reason, (this.refused.get(reason) ?? 0) + 1);
  }
}
