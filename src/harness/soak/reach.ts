/**
 * Pod-pair reachability as outage windows: each pair is pinged continuously
 * (by `Pinger`), every reply is fed in with its time, and a pair that has
 * had no reply for `lossMs` is down from its last reply on. Pure state (the
 * caller supplies the clock), so the soak's accounting is testable alone.
 */
export interface Outage {
  readonly pair: string;
  readonly startMs: number;
  readonly endMs: number;
}

interface PairState {
  lastReplyMs: number;
  downSinceMs: number | undefined;
}

export class Reachability {
  private readonly pairs = new Map<string, PairState>();
  constructor(readonly lossMs: number, private readonly onOutageEnd: (o: Outage) => void) {}

  /** Starts tracking a pair as if it had answered at `nowMs`. */
  add(pair: string, nowMs: number): void {
    this.pairs.set(pair, { lastReplyMs: nowMs, downSinceMs: undefined });
  }

  get size(): number {
    return this.pairs.size;
  }

  reply(pair: string, nowMs: number): void {
    const p = this.pairs.get(pair);
    if (!p) return;
    if (p.downSinceMs !== undefined) this.onOutageEnd({ pair, startMs: p.downSinceMs, endMs: nowMs });
    p.lastReplyMs = nowMs;
    p.downSinceMs = undefined;
  }

  /** Marks pairs silent for longer than lossMs as down; returns the newly down ones with their start. */
  tick(nowMs: number): { pair: string; startMs: number }[] {
    const fresh: { pair: string; startMs: number }[] = [];
    for (const [pair, p] of this.pairs) {
      if (p.downSinceMs === undefined && nowMs - p.lastReplyMs > this.lossMs) {
        p.downSinceMs = p.lastReplyMs;
        fresh.push({ pair, startMs: p.lastReplyMs });
      }
    }
    return fresh;
  }

  /** Pairs down now, with how long (ms). */
  down(nowMs: number): { pair: string; forMs: number }[] {
    return [...this.pairs].filter(([, p]) => p.downSinceMs !== undefined).map(([pair, p]) => ({ pair, forMs: nowMs - (p.downSinceMs ?? nowMs) }));
  }
}

/**
 * The faults an outage starting at `startMs` belongs to: each injected no
 * more than `slackMs` after the start (the last reply before a fault comes
 * just before it) and not yet settled then — several when faults overlap.
 * Empty: an outage with no fault in force, a violation.
 */
export function inForce<F extends { startMs: number; settledMs: number | undefined }>(startMs: number, faults: readonly F[], slackMs: number): F[] {
  return faults.filter((f) => f.startMs - slackMs <= startMs && (f.settledMs === undefined || startMs <= f.settledMs));
}
