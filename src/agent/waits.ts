import type { Logger } from "../common/log.js";

/** What the agent can be waiting for. */
export type WaitKind = "etcd" | "network-config" | "subnet";

export interface Wait {
  readonly what: WaitKind;
  /** The last error, in words, with how to fix it. */
  readonly error: string;
  /** When the wait began (ISO 8601). */
  readonly since: string;
  readonly attempts: number;
}

/**
 * Everything the agent is waiting for, with the last error and since when:
 * shown by `weft status` and /readyz, and logged as a warning the first time
 * and then with backoff (after 2, 4, 8, ... attempts, at least once a minute),
 * so a mistyped endpoint or a missing config is never a silent wait.
 */
export class Waits {
  private readonly open = new Map<WaitKind, { error: string; since: number; attempts: number; loggedAt: number; nextLog: number }>();

  constructor(private readonly log: Logger, private readonly now: () => number = Date.now) {}

  report(what: WaitKind, error: string): void {
    const t = this.now();
    const w = this.open.get(what) ?? { error, since: t, attempts: 0, loggedAt: 0, nextLog: 1 };
    w.error = error;
    w.attempts++;
    this.open.set(what, w);
    if (w.attempts >= w.nextLog || t - w.loggedAt >= 60_000) {
      this.log.warn({ waitingFor: what, attempts: w.attempts, sinceSeconds: Math.round((t - w.since) / 1000), err: error }, `waiting for ${what}`);
      w.loggedAt = t;
      while (w.nextLog <= w.attempts) w.nextLog *= 2;
    }
  }

  clear(what: WaitKind): void {
    const w = this.open.get(what);
    if (!w) return;
    this.open.delete(what);
    this.log.info({ waitedFor: what, seconds: Math.round((this.now() - w.since) / 1000) }, `${what}: no longer waiting`);
  }

  has(what: WaitKind): boolean {
    return this.open.has(what);
  }

  list(): Wait[] {
    return [...this.open].map(([what, w]) => ({ what, error: w.error, since: new Date(w.since).toISOString(), attempts: w.attempts }));
  }
}

/**
 * The etcd client stops calling a host for a while after failures in a row
 * ("circuit breaker is open"), which says nothing of why: name the failure
 * before the pause (kept in `seen`, the last non-breaker messages).
 */
export function explainBreaker(msg: string, seen: string[]): string {
  if (!/circuit breaker is open/i.test(msg)) {
    seen.splice(0, seen.length, msg);
    return msg;
  }
  const before = seen[0];
  return before === undefined ? msg : `${msg}: the etcd client pauses calls after failures in a row; the failure before the pause: ${before}`;
}
