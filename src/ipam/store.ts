import { closeSync, existsSync, fdatasyncSync, ftruncateSync, mkdirSync, openSync, readFileSync, statSync, writeSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../common/log.js";
import { writeFileAtomic } from "../common/fs-atomic.js";
import { IpamIoError, IpamStateError } from "./errors.js";
import { AllocationTable, decodeAllocation, encodeAllocation, type Allocation, type Change } from "./table.js";

/**
 * Crash-safe allocation state under <state-dir>/ipam:
 *
 *   snapshot.json  {"version":1,"seq":N,"allocations":[...],"cursors":{...}}
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
  private seq = 0;
  private journalLines = 0;
  private journalBytes = 0;
  private queue: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private fh: FileHandle | undefined;
  private closed = false;
  readonly stats = { writes: 0, syncs: 0, records: 0, compactions: 0 };

  private constructor(readonly dir: string, private readonly log: Logger, private readonly opts: StoreOptions) {}

  /** Opens (or creates) the state in `dir`; throws IpamStateError for state it cannot trust. */
  static async open(dir: string, log: Logger, opts: StoreOptions = {}): Promise<IpamStore> {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const s = new IpamStore(dir, log, opts);
    takeLock(dir);
    s.load();
    s.fh = await open(join(dir, "journal"), "a", 0o600);
    return s;
  }

  private load(): void {
    const snapPath = join(this.dir, "snapshot.json");
    let snapSeq = 0;
    if (existsSync(snapPath)) {
      try {
        const snap = JSON.parse(readFileSync(snapPath, "utf8")) as { version?: number; seq?: number; allocations?: unknown[]; cursors?: Record<string, number> };
        if (snap.version !== 1 || typeof snap.seq !== "number" || !Array.isArray(snap.allocations)) throw new Error("not a version-1 snapshot");
        snapSeq = snap.seq;
        for (const raw of snap.allocations) this.replay({ op: "add", a: decodeAllocation(raw) }, "snapshot");
        for (const [k, v] of Object.entries(snap.cursors ?? {})) {
          this.table.cursors.set(k, v);
          this.durable.cursors.set(k, v);
        }
      } catch (e) {
        throw new IpamStateError(`the IPAM snapshot ${snapPath} cannot be read: ${(e as Error).message}; nothing was changed`, {
          hint: "restore it from a backup; moving it aside starts with no allocations, and then addresses of running pods can be handed out again",
        });
      }
    }
    this.seq = snapSeq;
    const jPath = join(this.dir, "journal");
    if (!existsSync(jPath)) return;
    const buf = readFileSync(jPath);
    const end = buf.lastIndexOf(0x0a) + 1; // a torn last line was never acknowledged
    if (end < buf.length) {
      this.log.warn({ bytes: buf.length - end }, "ipam: cutting off a torn last journal line (a change that was never acknowledged)");
      const fd = openSync(jPath, "r+");
      try {
        ftruncateSync(fd, end);
        fdatasyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
    const lines = buf.subarray(0, end).toString("utf8").split("\n");
    for (const [i, line] of lines.entries()) {
      if (!line) continue;
      this.journalLines++;
      let rec: { s: number; op: string; a?: unknown; key?: unknown };
      try {
        rec = JSON.parse(line) as typeof rec;
      } catch {
        this.log.error({ line: i + 1 }, "ipam: skipping an unreadable journal line");
        continue;
      }
      if (typeof rec.s !== "number" || rec.s <= snapSeq) continue;
      this.seq = Math.max(this.seq, rec.s);
      try {
        if (rec.op === "add") this.replay({ op: "add", a: decodeAllocation(rec.a) }, `journal line ${i + 1}`);
        else if (rec.op === "del" && typeof rec.key === "string") this.replay({ op: "del", key: rec.key }, `journal line ${i + 1}`);
        else throw new Error(`unknown op ${JSON.stringify(rec.op)}`);
      } catch (e) {
        this.log.error({ line: i + 1, err: (e as Error).message }, "ipam: skipping a bad journal record");
      }
    }
    this.journalBytes = end;
  }

  private replay(c: Change, where: string): void {
    if (c.op === "add" && !this.table.apply(c)) {
      // Cannot happen with this store's own files; keep the first holder rather than guess.
      this.log.error({ where, ip: c.a.ip }, "ipam: state names an address twice; keeping the first holder");
      return;
    }
    if (c.op === "del") this.table.apply(c);
    this.durable.apply(c);
  }

  /**
   * Applies `change` in memory now; resolves once it is on disk. Rejects
   * with IpamIoError (after undoing it) when it cannot be written.
   */
  commit(change: Change): Promise<void> {
    if (this.closed) return Promise.reject(new IpamIoError("the IPAM store is closed"));
    const key = change.op === "add" ? `${change.a.network}/${change.a.containerId}/${change.a.ifname}` : change.key;
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
        const text = batch.map((p) => p.line).join("");
        try {
          this.opts.beforeWrite?.();
          const fh = this.fh as FileHandle;
          const buf = Buffer.from(text);
          let off = 0;
          while (off < buf.length) off += (await fh.write(buf, off)).bytesWritten;
          await fh.datasync();
        } catch (e) {
          this.failAll(batch, e as Error);
          continue;
        }
        this.journalBytes += Buffer.byteLength(text);
        this.journalLines += batch.length;
        this.stats.writes++;
        this.stats.syncs++;
        this.stats.records += batch.length;
        for (const p of batch) this.durable.apply(p.change);
        for (const p of batch) p.resolve();
        if (this.journalLines >= (this.opts.compactEvery ?? 20_000)) this.compact();
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

  /** Writes the durable state as a snapshot and empties the journal. Runs between writes, so nothing is half-applied. */
  private compact(): void {
    const snap = {
      version: 1,
      seq: this.seq - this.queue.length,
      allocations: this.durable.all().map(encodeAllocation),
      cursors: Object.fromEntries(this.durable.cursors),
    };
    // seq - queued: the queue holds the newest seqs (applied in memory, not on disk); they stay in the journal's future.
    writeFileAtomic(join(this.dir, "snapshot.json"), JSON.stringify(snap), 0o600);
    const fd = openSync(join(this.dir, "journal"), "r+");
    try {
      ftruncateSync(fd, 0);
      fdatasyncSync(fd);
    } finally {
      closeSync(fd);
    }
    this.journalBytes = 0;
    this.journalLines = 0;
    this.stats.compactions++;
  }

  /** Waits for every queued change, then closes the journal. */
  async close(): Promise<void> {
    while (this.flushing) await this.flushing;
    this.closed = true;
    await this.fh?.close();
    this.fh = undefined;
    releaseLock(this.dir);
  }
}

/**
 * One agent per state directory: a second would hand out the first's
 * addresses. The lock is a pid file; a pid that no longer runs weft is stale
 * (the agent was killed) and is taken over.
 */
function takeLock(dir: string): void {
  const path = join(dir, "lock");
  if (existsSync(path)) {
    const pid = Number(readFileSync(path, "utf8").trim());
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && runsWeft(pid)) {
      throw new IpamStateError(`the IPAM state in ${dir} belongs to another running weft process (pid ${pid})`, {
        hint: "run one agent per --state-dir; stop the other agent first",
      });
    }
  }
  const fd = openSync(path, "w", 0o600);
  try {
    writeSync(fd, `${process.pid}\n`);
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function runsWeft(pid: number): boolean {
  try {
    statSync(`/proc/${pid}`);
    const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    return cmd.includes("weft");
  } catch {
    return false;
  }
}

function releaseLock(dir: string): void {
  try {
    const path = join(dir, "lock");
    if (Number(readFileSync(path, "utf8").trim()) === process.pid) writeFileAtomic(path, "", 0o600);
  } catch {
    // gone already
  }
}

export type { Allocation };
