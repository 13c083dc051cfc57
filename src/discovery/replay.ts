import type { RegistryChange } from "../registry/watch.js";

/** One change kept for reconnecting clients, with its frame (encoded once). */
export interface ReplayEntry {
  readonly revision: bigint;
  readonly rev: string;
  readonly change: RegistryChange;
  readonly frame: Buffer;
  /** The entry's labels before this change (label filters turn a put that leaves them into a delete). */
  readonly prevLabels: Readonly<Record<string, unknown>> | undefined;
}

/**
 * The last changes by revision, bounded by count and bytes. `floor` is the
 * revision from which the log is complete: a client whose Last-Event-ID is
 * at or above it can be given exactly what it missed; one below it gets a
 * snapshot. Appends must come in revision order.
 */
export class ReplayLog {
  private entries: ReplayEntry[] = [];
  private head = 0;
  private bytes = 0;
  /** Entries of revisions above `floor` are all here. */
  floor: bigint;
  /** Changes dropped from the front to stay within bounds. */
  evicted = 0;

  constructor(private readonly maxEntries: number, private readonly maxBytes: number, floor = 0n) {
    this.floor = floor;
  }

  get size(): number {
    return this.entries.length - this.head;
  }

  get byteSize(): number {
    return this.bytes;
  }

  /** Starts over at `floor` (a first list: nothing before it is known). */
  reset(floor: bigint): void {
    this.entries = [];
    this.head = 0;
    this.bytes = 0;
    this.floor = floor;
  }

  append(e: ReplayEntry): void {
    this.entries.push(e);
    this.bytes += e.frame.length + 64;
    while (this.size > this.maxEntries || (this.bytes > this.maxBytes && this.size > 1)) {
      const old = this.entries[this.head++];
      if (!old) break;
      this.bytes -= old.frame.length + 64;
      this.evicted++;
      // Everything up to this revision may now be incomplete: the floor moves past it.
      if (old.revision > this.floor) this.floor = old.revision;
    }
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }

  /** The entries after `revision`, or undefined when the log no longer reaches back to it. */
  since(revision: bigint): ReplayEntry[] | undefined {
    if (revision < this.floor) return undefined;
    let lo = this.head;
    let hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.entries[mid]?.revision ?? 0n) <= revision) lo = mid + 1;
      else hi = mid;
    }
    return this.entries.slice(lo);
  }
}
