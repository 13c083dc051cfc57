import type { Watcher } from "etcd3";
import type { Logger } from "./log.js";

/** Where a ListWatch reads from: a list at a revision, and a watch from a revision. */
export interface ListWatchSource<S, E> {
  /** Everything under the prefix, and the store revision it was read at. Throws when etcd cannot be read. */
  list(): Promise<{ readonly snapshot: S; readonly revision: string }>;
  /**
   * Watches from `fromRevision`: events in order; `onError` once when the
   * watch cannot go on (compacted, cancelled); `onConnection` as the stream
   * drops and resumes (the client resumes it where it stopped). `revision`
   * is the event's etcd revision (kv.mod_revision), when the source gives it.
   */
  watch(fromRevision: string, onEvent: (e: E, revision?: string) => void, onError: (e: Error) => void, onConnection: (up: boolean) => void): Promise<Watcher>;
}

export interface ListWatchHooks<S, E> {
  /** A full listing: the first, and every one after the watch could not go on; `revision`: the store revision it was read at. */
  readonly snapshot: (s: S, revision: string) => void;
  /** One watch event, with its etcd revision when the source gives it. */
  readonly event: (e: E, revision: string | undefined) => void;
}

/**
 * List, then watch from the list's revision + 1; when the watch cannot go on,
 * list again (the consumer diffs the new snapshot against what it has) and
 * watch anew. The one list-then-watch loop behind the lease watcher and the
 * registry watcher. It guards what such loops get wrong: events and errors of
 * a watch that was replaced are ignored (a generation number), a close during
 * a re-list stops it (nothing is applied or watched after close), and only
 * one re-list runs at a time. And a watch whose stream dropped and does not
 * come back within `stallMs` (the client drew a silent etcd member to resume
 * on, and a TCP connect whose packets vanish takes minutes to fail) is
 * abandoned: listed again and watched anew on a fresh stream.
 */
export class ListWatch<S, E> {
  private watcher: Watcher | undefined;
  private closed = false;
  private resyncing = false;
  /** A re-list was asked for while one ran. */
  private again = false;
  private generation = 0;
  private up = false;
  /** Listings taken (1 after start; more after compaction or a lost watch). */
  resyncs = 0;
  /** Watches abandoned because they stayed disconnected past `stallMs`. */
  stalls = 0;
  private stallTimer: NodeJS.Timeout | undefined;

  constructor(
    /** What is watched, for log lines: "lease", "registry". */
    private readonly what: string,
    private readonly source: ListWatchSource<S, E>,
    private readonly hooks: ListWatchHooks<S, E>,
    private readonly log: Logger,
    private readonly retryMs = 1000,
    /**
     * How long a listing or the creation of a watch may take before it is
     * given up and tried again (the client has no deadline of its own: a call
     * that never returned left the loop, and the agent's readiness, stuck).
     */
    private readonly callTimeoutMs = 15_000,
    /**
     * How long a watch may stay disconnected before it is abandoned, and how
     * long the creation of a watch may take (at most `callTimeoutMs`). The
     * client resumes a dropped stream within its watch backoff (2 s at most,
     * see createEtcdClient), so a watch still down after 10 s is stuck on a
     * member that does not answer; abandoning it costs one listing.
     */
    private readonly stallMs = 10_000,
  ) {}

  /** True while a listing is applied and its watch is connected. */
  get connected(): boolean {
    return this.up;
  }

  /** Takes the first listing (retrying while etcd cannot be read) and starts watching. */
  async start(): Promise<void> {
    await this.resync();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.up = false;
    this.generation++;
    this.clearStall();
    const w = this.watcher;
    this.watcher = undefined;
    await cancel(w);
  }

  /** Lists and watches until a watch is up; a re-list asked for meanwhile (the new watch failed at once) runs after. */
  private async resync(): Promise<void> {
    if (this.resyncing) {
      this.again = true;
      return;
    }
    this.resyncing = true;
    try {
      do {
        this.again = false;
        await this.listAndWatch();
      } while (this.again && !this.closed);
    } finally {
      this.resyncing = false;
    }
  }

  private async listAndWatch(): Promise<void> {
    for (let delay = this.retryMs; !this.closed; delay = Math.min(delay * 2, 10_000)) {
      try {
        const { snapshot, revision } = await deadline(this.source.list(), this.callTimeoutMs, `listing for the ${this.what} watch`);
        if (this.closed) return;
        const gen = ++this.generation; // from here on, the old watch is not heard
        await cancel(this.watcher);
        this.watcher = undefined;
        this.resyncs++;
        this.hooks.snapshot(snapshot, revision);
        const next = (BigInt(revision) + 1n).toString();
        const w = await deadline(this.source.watch(
          next,
          (e, rev) => gen === this.generation && !this.closed && this.hooks.event(e, rev),
          (err) => gen === this.generation && this.onWatchError(err),
          (up) => {
            if (gen !== this.generation || this.up === up) return;
            this.up = up;
            if (up) {
              this.clearStall();
              this.log.info(`${this.what} watch reconnected; it resumes where it stopped`);
            } else {
              this.log.warn(`${this.what} watch disconnected; reconnecting`);
              this.armStall(gen);
            }
          },
        ), Math.min(this.callTimeoutMs, this.stallMs), `starting the ${this.what} watch`, (late) => void cancel(late));
        if (this.closed || gen !== this.generation || this.again) {
          await cancel(w); // closed, or this watch already failed: resync() lists again
          return;
        }
        this.watcher = w;
        this.up = true;
        return;
      } catch (e) {
        this.up = false;
        this.log.warn({ err: (e as Error).message, retryInMs: delay }, `listing for the ${this.what} watch failed; retrying`);
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
  }

  /** From the first disconnect of watch `gen` on: abandons it when it is not connected again within stallMs. */
  private armStall(gen: number): void {
    this.clearStall();
    this.stallTimer = setTimeout(() => {
      this.stallTimer = undefined;
      if (this.closed || gen !== this.generation || this.up) return;
      this.stalls++;
      this.log.warn({ stalledMs: this.stallMs }, `${this.what} watch has not reconnected in ${this.stallMs} ms; listing again and watching on a fresh stream`);
      void this.resync(); // cancels the stuck watch (it is still this.watcher) once the listing is in
    }, this.stallMs);
    this.stallTimer.unref();
  }

  private clearStall(): void {
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
  }

  private onWatchError(err: Error): void {
    if (this.closed) return;
    this.clearStall();
    this.up = false;
    this.watcher = undefined; // the server ended it: cancelling it again would wait for an answer that never comes
    this.log.warn({ err: err.message }, `${this.what} watch ended; listing again`);
    void this.resync();
  }
}

/**
 * `p`, or a rejection after `ms` naming `what`; `onLate` gets a value that
 * arrives after the deadline (a watch started too late: to be cancelled).
 */
function deadline<T>(p: Promise<T>, ms: number, what: string, onLate?: (v: T) => void): Promise<T> {
  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true;
      reject(new Error(`${what} got no answer in ${ms} ms`));
    }, ms);
    timer.unref();
  });
  return Promise.race([
    p.then((v) => {
      clearTimeout(timer);
      if (timedOut) onLate?.(v);
      return v;
    }, (e: unknown) => {
      clearTimeout(timer);
      throw e;
    }),
    t,
  ]);
}

/** Cancels a watch, giving up after a second (an unreachable etcd never answers). */
async function cancel(w: Watcher | undefined): Promise<void> {
  if (!w) return;
  await Promise.race([w.cancel().catch(() => undefined), new Promise((r) => setTimeout(r, 1000).unref())]);
}
