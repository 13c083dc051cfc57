import { existsSync, readFileSync } from "node:fs";
import { parseIpv6 } from "../common/ipv6.js";
import { IpamStateError } from "./errors.js";
import { decodeAllocation, type Allocation, type Change } from "./table.js";

/**
 * Reading the IPAM state files back (store.ts writes them), strictly: a
 * record that cannot be read is an error naming the file, the line and the
 * byte, never skipped. Skipping an allocation record would let its address
 * be handed out again while its pod still uses it; skipping a release only
 * keeps an address that is free, but from a damaged line nobody can tell
 * which it was. The one exception is the torn tail: the bytes after the
 * last newline, which no reply ever acknowledged (a record is acknowledged
 * only after its whole line, newline included, was fdatasync'd).
 */

export interface Snapshot {
  readonly seq: number;
  readonly allocations: readonly Allocation[];
  readonly cursors: readonly (readonly [string, number])[];
  readonly cursors6: readonly (readonly [string, bigint])[];
}

export interface JournalRecord {
  readonly seq: number;
  readonly change: Change;
  /** 1-based line number, for messages. */
  readonly line: number;
}

export interface Journal {
  /** Records newer than the snapshot, in file order. */
  readonly records: readonly JournalRecord[];
  /** Complete lines in the file (older ones included). */
  readonly lines: number;
  /** Bytes up to and including the last newline. */
  readonly end: number;
  /** Bytes after it: a torn last record, to be cut off. */
  readonly torn: number;
  /** The first line that cannot be used; `records` then holds those before it. */
  readonly problem: IpamStateError | undefined;
}

const REPAIR = "the files are left as they are; repair or restore them and restart the agent";

export function readSnapshot(path: string): Snapshot | undefined {
  if (!existsSync(path)) return undefined;
  try {
    const snap = JSON.parse(readFileSync(path, "utf8")) as { version?: unknown; seq?: unknown; allocations?: unknown; cursors?: unknown; cursors6?: unknown };
    if (typeof snap !== "object" || snap === null) throw new Error("not a JSON object");
    if (snap.version !== 1 || !isSeq(snap.seq, true) || !Array.isArray(snap.allocations)) throw new Error("not a version-1 snapshot");
    const cursors = Object.entries((snap.cursors ?? {}) as Record<string, unknown>).map(([k, v]) => {
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`cursor ${JSON.stringify(k)} is not an address`);
      return [k, v] as const;
    });
    const cursors6 = Object.entries((snap.cursors6 ?? {}) as Record<string, unknown>).map(([k, v]) => {
      if (typeof v !== "string") throw new Error(`IPv6 cursor ${JSON.stringify(k)} is not an address`);
      return [k, withContext(() => parseIpv6(v), `IPv6 cursor ${JSON.stringify(k)}`)] as const;
    });
    return { seq: snap.seq, allocations: snap.allocations.map((a, i) => withContext(() => decodeAllocation(a), `allocation ${i}`)), cursors, cursors6 };
  } catch (e) {
    throw new IpamStateError(`the IPAM snapshot ${path} cannot be read: ${(e as Error).message}; ${REPAIR}`, {
      hint: "restore it from a backup; moving it aside starts with no allocations, and then addresses of running pods can be handed out again",
    });
  }
}

/**
 * Reads the journal; records at or below `snapSeq` are already in the
 * snapshot and are checked but not returned. Stops at the first line that
 * cannot be used (`problem`); `records` then holds those before it.
 */
export function readJournal(path: string, snapSeq: number): Journal {
  if (!existsSync(path)) return { records: [], lines: 0, end: 0, torn: 0, problem: undefined };
  const buf = readFileSync(path);
  const end = buf.lastIndexOf(0x0a) + 1;
  const records: JournalRecord[] = [];
  let lines = 0;
  let lastSeq = 0;
  for (let at = 0; at < end;) {
    const nl = buf.indexOf(0x0a, at);
    lines++;
    const r = parseRecord(buf.subarray(at, nl).toString("utf8"), lastSeq);
    if (typeof r === "string") {
      const problem = new IpamStateError(`the IPAM journal ${path} line ${lines} (byte ${at}) cannot be used: ${r}; ${REPAIR}`, {
        hint: `look at it with: sed -n '${lines}p' ${path}. A damaged release ("op":"del") can be deleted (its address stays held until GC or the reconciler frees it); a damaged allocation ("op":"add") must be restored, or deleted only once its pod is gone, else its address can be handed out twice`,
      });
      return { records, lines, end, torn: buf.length - end, problem };
    }
    lastSeq = r.seq;
    if (r.seq > snapSeq) records.push({ ...r, line: lines });
    at = nl + 1;
  }
  return { records, lines, end, torn: buf.length - end, problem: undefined };
}

/** One journal line: the record, or why it cannot be used. */
function parseRecord(text: string, lastSeq: number): { seq: number; change: Change } | string {
  let rec: { s?: unknown; op?: unknown; a?: unknown; key?: unknown };
  try {
    rec = JSON.parse(text) as typeof rec;
  } catch (e) {
    return `not JSON (${(e as Error).message})`;
  }
  if (typeof rec !== "object" || rec === null || Array.isArray(rec)) return "not a record";
  if (!isSeq(rec.s, false)) return `"s" ${String(JSON.stringify(rec.s)).slice(0, 40)} is not a sequence number`;
  if (rec.s <= lastSeq) return `sequence number ${rec.s} does not follow ${lastSeq}`;
  if (rec.op === "del") return typeof rec.key === "string" ? { seq: rec.s, change: { op: "del", key: rec.key } } : "a release without a key";
  if (rec.op !== "add") return `unknown op ${String(JSON.stringify(rec.op)).slice(0, 40)}`;
  try {
    return { seq: rec.s, change: { op: "add", a: decodeAllocation(rec.a) } };
  } catch (e) {
    return `the allocation: ${(e as Error).message}`;
  }
}

function isSeq(v: unknown, zeroOk: boolean): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && (zeroOk ? v >= 0 : v > 0);
}

function withContext<T>(fn: () => T, where: string): T {
  try {
    return fn();
  } catch (e) {
    throw new Error(`${where}: ${(e as Error).message}`);
  }
}
