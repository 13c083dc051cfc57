import { closeSync, existsSync, fdatasyncSync, ftruncateSync, mkdirSync, openSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { hostname } from "node:os";
import { dirname, join } from "node:path";
import { FileLock } from "../common/flock.js";
import { formatIpv6 } from "../common/ipv6.js";
import { fsyncDir, writeFileAtomic } from "../common/fs-atomic.js";
import type { Logger } from "../common/log.js";
import { IpamIoError, IpamLockedError, IpamStateError } from "./errors.js";
import { readJournal, readSnapshot } from "./replay.js";
import { addressText, AllocationTable, encodeAllocation, keyOf, type Allocation, type Change } from "./table.js";

/**
 * Crash-safe allocation state under <state-dir>/ipam:
 *
 *   lock           flock(2)'d by the agent that owns the directory (common/flock.ts)
 *   snapshot.json  {"version":1,"seq":N,"allocations":[...],"cursors":{...},"cursors6":{...}}
 *                  (an allocation carries "ip" and/or "ip6"; cursors6, the IPv6
 *                  cursors as text, is left out when there are none, so a
 *                  store written before IPv6 reads as it always did)
 *                  written atomically (temporary file, fsync, rename, fsync dir)
 *   journal        one JSON line per change since: {"s":seq,"op":"add","a":{...}}
 *                  or {"s":seq,"op":"del","key":"net/container/if"}
 *
 * A change is applied to memory at once (so concurrent requests see it) and
 * its promise resolves only once its line is on disk (fdatasync). Lines
 * waiting while a write is in flight go out together in the next one (group
 * commit), so many concurrent ADDs share one sync. A caller replies to the
 * runtime only after that promise resolves, hence a SIGKILL at any instant
 * loses only changes nobody was told about, and replay never hands out an
 * address that a reply did.
 *
 * A failed write undoes, in reverse order, every change not yet on disk and
 * truncates the journal back to its last whole line. Records at or below the
 * snapshot's seq are skipped on replay, so a crash between writing a snapshot
 * and truncating the journal replays nothing twice. A torn last line (a crash
 * mid-write of an unacknowledged change) is cut off on open.
 *
 * State that cannot be read (replay.ts: a damaged snapshot, a journal line
 * that is not a whole record, an address held twice) is never guessed at:
 * the store opens read-only with `problem` set. It shows what it could read,
 * writes nothing and leaves the files as they are; every change is refused
 * with that IpamStateError until the files are repaired and the agent is
 * restarted.
 */

interface Pending {
  readonly seq: number;
  readonly change: Change;
  readonly undo: Change;
  readonly line: string;
  resolve(): void;
  reject(e: Error): void;
}

export interface StoreOptions {
  /** Snapshot and truncate the journal after this many lines (default 20000). */
  readonly compactEvery?: number;
  /** Test hook: called before each journal write (a fault that cannot be produced for real on demand: a full disk). */
  readonly beforeWrite?: () => void;
}

export class IpamStore {
  /** What memory says: includes changes still being written. */
  readonly table = new AllocationTable();
  /** What the disk says: the snapshot is taken from this one. */
  private readonly durable = new AllocationTable();
  /** Set when the state on disk cannot be trusted: the store is read-only, and says why. */
  problem: IpamStateError | undefined;
  private seq = 0;
  private journalLines = 0;
  private journalBytes = 0;
  /** Compact once the journal holds this many lines (pushed back after a failed compaction). */
  private compactAt: number;
  private queue: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private fh: FileHandle | undefined;
  private lock: FileLock | undefined;
  private closed = false;
  readonly stats = { writes: 0, syncs: 0, records: 0, compactions: 0, compactionFailures: 0 };

  private constructor(readonly dir: string, private readonly log: Logger, private readonly opts: StoreOptions) {
    this.compactAt = opts.compactEvery ?? 20_000;
  }

  /**
   * Opens (or creates) the state in `dir`. Throws IpamLockedError when
   * another process holds it; state it cannot trust opens read-only (see
   * `problem`), so that the agent still starts, answers DEL and shows what
   * it has.
   */
  static async open(dir: string, log: Logger, opts: StoreOptions = {}): Promise<IpamStore> {
    mkdirDurable(dir);
    const s = new IpamStore(dir, log, opts);
    s.lock = takeLock(dir);
    s.load();
    if (!s.problem) {
      const jPath = join(dir, "journal");
      try {
        const created = !existsSync(jPath);
        s.fh = await open(jPath, "a", 0o600);
        if (created) fsyncDir(dir);
      } catch (e) {
        await s.fh?.close();
        s.fh = undefined;
        s.untrusted(new IpamStateError(`the IPAM journal ${jPath} cannot be opened for writing: ${(e as Error).message}`, {
          hint: "check the disk under --state-dir (space, permissions), then restart the agent", cause: e,
        }));
      }
    }
    return s;
  }

  private load(): void {
    try {
      const snap = readSnapshot(join(this.dir, "snapshot.json"));
      const snapSeq = snap?.seq ?? 0;
      for (const a of snap?.allocations ?? []) this.replay({ op: "add", a }, "the snapshot");
      for (const [k, v] of snap?.cursors ?? []) {
        this.table.cursors.set(k, v);
        this.durable.cursors.set(k, v);
      }
      for (const [k, v] of snap?.cursors6 ?? []) {
        this.table.cursors6.set(k, v);
        this.durable.cursors6.set(k, v);
      }
      const jPath = join(this.dir, "journal");
      const j = readJournal(jPath, snapSeq);
      this.seq = Math.max(snapSeq, j.records.at(-1)?.seq ?? 0);
      for (const r of j.records) this.replay(r.change, `${jPath} line ${r.line}`);
      if (j.problem) throw j.problem; // after the readable records, so that `weft ipam ls` shows them
      this.journalLines = j.lines;
      this.journalBytes = j.end;
      if (j.torn > 0) {
        // Only now, with everything else readable: a damaged state is left exactly as found.
        this.log.warn({ bytes: j.torn }, "ipam: cutting off a torn last journal line (a change that was never acknowledged)");
        const fd = openSync(jPath, "r+");
        try {
          ftruncateSync(fd, j.end);
          fdatasyncSync(fd);
        } finally {
          closeSync(fd);
        }
      }
    } catch (e) {
      // An I/O error reading the files (EIO, EACCES) is no better ground to hand out addresses on.
      this.untrusted(e instanceof IpamStateError ? e : new IpamStateError(`the IPAM state in ${this.dir} cannot be read: ${(e as Error).message}; the files are left as they are`, {
        hint: "check the disk under --state-dir, then restart the agent", cause: e,
      }));
    }
  }

  private untrusted(e: IpamStateError): void {
    this.problem = e;
    this.log.error({ err: e.message, readable: this.table.size }, "ipam: the IPAM state cannot be trusted; no address is handed out until it is repaired");
  }

  private replay(c: Change, where: string): void {
    if (c.op === "add") {
      const other = (c.a.ip === undefined ? undefined : this.table.holder(c.a.ip)) ?? (c.a.ip6 === undefined ? undefined : this.table.holder6(c.a.ip6));
      if (!this.table.apply(c)) {
        throw new IpamStateError(`${where} gives ${addressText(c.a)} to ${keyOf(c.a)}, which ${other ? keyOf(other) : "another attachment"} already holds; the files are left as they are`, {
          hint: "the state contradicts itself (this store never writes that): find which pod really uses the address, then repair the files and restart the agent",
        });
      }
    } else this.table.apply(c);
    this.durable.apply(c);
  }

  /**
   * Applies `change` in memory now; resolves once it is on disk. Rejects
   * with IpamIoError (after undoing it) when it cannot be written, and with
   * the IpamStateError when the state cannot be trusted.
   */
  commit(change: Change): Promise<void> {
    if (this.problem) return Promise.reject(this.problem);
    if (this.closed) return Promise.reject(new IpamIoError("the IPAM store is closed"));
    const key = change.op === "add" ? keyOf(change.a) : change.key;
    const before = this.table.get(key);
    if (!this.table.apply(change)) return Promise.resolve(); // a del of nothing: nothing to write
    const seq = ++this.seq;
    const line = `${JSON.stringify(change.op === "add" ? { s: seq, op: "add", a: encodeAllocation(change.a) } : { s: seq, op: "del", key })}\n`;
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ seq, change, undo: AllocationTable.inverse(change, before), line, resolve, reject });
      this.flushing ??= this.flushLoop();
    });
  }

  private async flushLoop(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue;
        this.queue = [];
        const buf = Buffer.from(batch.map((p) => p.line).join(""));
        try {
          this.opts.beforeWrite?.();
          const fh = this.fh as FileHandle;
          let off = 0;
          while (off < buf.length) off += (await fh.write(buf, off)).bytesWritten;
          await fh.datasync();
        } catch (e) {
          this.failAll(batch, e as Error);
          continue;
        }
        this.journalBytes += buf.length;
        this.journalLines += batch.length;
        this.stats.writes++;
        this.stats.syncs++;
        this.stats.records += batch.length;
        for (const p of batch) this.durable.apply(p.change);
        for (const p of batch) p.resolve();
        if (this.journalLines >= this.compactAt) this.compact();
      }
    } finally {
      this.flushing = undefined;
    }
  }

  /** A write failed: undo it and everything queued after it, newest first; cut the journal back to its last good line. */
  private failAll(batch: Pending[], cause: Error): void {
    const all = [...batch, ...this.queue];
    this.queue = [];
    for (const p of [...all].reverse()) this.table.apply(p.undo);
    try {
      const fd = openSync(join(this.dir, "journal"), "r+");
      try {
        ftruncateSync(fd, this.journalBytes);
        fdatasyncSync(fd);
      } finally {
        closeSync(fd);
      }
    } catch (e) {
      this.log.error({ err: (e as Error).message }, "ipam: cannot truncate the journal after a failed write");
    }
    this.log.error({ err: cause.message, undone: all.length }, "ipam: writing the journal failed; the changes were undone");
    const err = new IpamIoError(`the IPAM state could not be written to ${this.dir}: ${cause.message}`, {
      recoverable: true, hint: "check the disk under --state-dir (space, permissions)", cause,
    });
    for (const p of all) p.reject(err);
  }

  /**
   * Writes the durable state as a snapshot and empties the journal. Runs
   * between writes, so nothing is half-applied. A snapshot that cannot be
   * written (a full disk) changes nothing: the journal stays whole and is
   * compacted later.
   */
  private compact(): void {
    const every = this.opts.compactEvery ?? 20_000;
    const snap = {
      version: 1,
      seq: this.seq - this.queue.length,
      allocations: this.durable.all().map(encodeAllocation),
      cursors: Object.fromEntries(this.durable.cursors),
      ...(this.durable.cursors6.size > 0 ? { cursors6: Object.fromEntries([...this.durable.cursors6].map(([k, v]) => [k, formatIpv6(v)])) } : {}),
    };
    // seq - queued: the queue holds the newest seqs (applied in memory, not on disk); they stay in the journal's future.
    try {
      writeFileAtomic(join(this.dir, "snapshot.json"), JSON.stringify(snap), 0o600);
      const fd = openSync(join(this.dir, "journal"), "r+");
      try {
        ftruncateSync(fd, 0);
        fdatasyncSync(fd);
      } finally {
        closeSync(fd);
      }
    } catch (e) {
      this.stats.compactionFailures++;
      this.compactAt = this.journalLines + every;
      this.log.error({ err: (e as Error).message, retryAfterLines: every }, "ipam: compacting the journal failed; the journal is kept whole");
      return;
    }
    this.journalBytes = 0;
    this.journalLines = 0;
    this.compactAt = every;
    this.stats.compactions++;
  }

  /** Waits for every queued change, then closes the journal and drops the lock. */
  async close(): Promise<void> {
    while (this.flushing) await this.flushing;
    this.closed = true;
    await this.fh?.close();
    this.fh = undefined;
    this.lock?.release();
  }
}

/**
 * One agent per state directory: a second would hand out the first's
 * addresses. The lock is the kernel's (flock), so it dies with its holder,
 * whatever PID namespace either runs in.
 */
function takeLock(dir: string): FileLock {
  const info = JSON.stringify({ pid: process.pid, host: hostname(), since: new Date().toISOString() });
  const r = FileLock.tryLock(join(dir, "lock"), info);
  if (r instanceof FileLock) return r;
  const h = r.heldBy;
  const who = [h.pidHere ? `pid ${h.pidHere} here` : "", h.recorded ? `its lock file says ${h.recorded}, as that process sees itself` : ""].filter(Boolean).join("; ");
  throw new IpamLockedError(`the IPAM state in ${dir} is locked by another running weft agent (${who || "unknown holder"})`, {
    hint: "run one agent per --state-dir: stop the other agent first (the lock goes when it exits)",
  });
}

/** mkdir -p, fsync'ing the parent of every directory it creates, so that the state directory itself survives a crash. */
function mkdirDurable(dir: string): void {
  const first = mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (first === undefined) return;
  for (let d = dir; ; d = dirname(d)) {
    fsyncDir(dirname(d));
    if (d === first || dirname(d) === d) break;
  }
}

export type { Allocation };
