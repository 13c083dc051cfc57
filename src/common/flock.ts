import { closeSync, fstatSync, ftruncateSync, openSync, readFileSync, writeSync } from "node:fs";
import koffi from "koffi";
import { WeftError } from "./errors.js";

/**
 * An exclusive lock on a file, held by the kernel for as long as this
 * process keeps the file open: flock(2) with LOCK_EX | LOCK_NB. The kernel
 * drops it when the process dies, however it dies (SIGKILL included), so a
 * lock is never stale; and it is a property of the file, so it holds
 * across PID and mount namespaces (a process in a container that opens the
 * same file is refused too). The file also holds a line about the holder
 * (its pid as it sees itself, and when it took the lock), only to say who
 * holds the lock in the refusal: that text is never what decides.
 */

/** The lock could not be taken for a reason other than another holder (an I/O error, no libc). */
export class FileLockError extends WeftError {
  readonly code = "WEFT_LOCK_FAILED";
}

const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;
const EINTR = 4;

let flockFn: ((fd: number, op: number) => number) | undefined;

function flock(): (fd: number, op: number) => number {
  flockFn ??= koffi.load("libc.so.6").func("int flock(int fd, int operation)") as (fd: number, op: number) => number;
  return flockFn;
}

/** Who holds a lock: what its file says, and its pid as seen from here (/proc/locks), when the kernel shows it. */
export interface LockHolder {
  readonly recorded: string;
  readonly pidHere: number | undefined;
}

export class FileLock {
  private constructor(readonly path: string, private fd: number | undefined) {}

  /**
   * Takes the lock on `path` (created 0600 if missing) and writes `info`
   * into it; returns the holder instead when another open file holds it.
   */
  static tryLock(path: string, info: string): FileLock | { readonly heldBy: LockHolder } {
    let fd: number;
    try {
      fd = openSync(path, "a+", 0o600); // O_CLOEXEC (libuv): children never inherit the lock
    } catch (e) {
      throw new FileLockError(`cannot open the lock file ${path}: ${(e as Error).message}`, { cause: e });
    }
    for (;;) {
      if (flock()(fd, LOCK_EX | LOCK_NB) === 0) break;
      const errno = koffi.errno();
      if (errno === EINTR) continue;
      const st = fstatSync(fd);
      closeSync(fd);
      if (errno === EWOULDBLOCK) return { heldBy: { recorded: readInfo(path), pidHere: holderPid(st.dev, st.ino) } };
      throw new FileLockError(`flock(${path}) failed: errno ${errno}`);
    }
    try {
      ftruncateSync(fd, 0);
      const buf = Buffer.from(`${info}\n`);
      for (let off = 0; off < buf.length;) off += writeSync(fd, buf, off, buf.length - off);
    } catch {
      // The text is information only; the lock is what counts.
    }
    return new FileLock(path, fd);
  }

  get held(): boolean {
    return this.fd !== undefined;
  }

  /** Drops the lock (closing the file drops it). The file stays: removing it would race with the next holder. */
  release(): void {
    if (this.fd === undefined) return;
    const fd = this.fd;
    this.fd = undefined;
    try {
      ftruncateSync(fd, 0);
    } catch {
      // information only
    }
    closeSync(fd);
  }
}

function readInfo(path: string): string {
  try {
    return readFileSync(path, "utf8").trim().slice(0, 200);
  } catch {
    return "";
  }
}

/** The pid (in this process's PID namespace) of the FLOCK holder of the file (dev, ino), from /proc/locks; undefined when not shown. */
function holderPid(dev: number, ino: number): number | undefined {
  // st_dev as the kernel encodes it (new_encode_dev); /proc/locks prints major:minor in hex, then the inode.
  const major = (dev >> 8) & 0xfff;
  const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
  const id = `${major.toString(16).padStart(2, "0")}:${minor.toString(16).padStart(2, "0")}:${ino}`;
  try {
    for (const line of readFileSync("/proc/locks", "utf8").split("\n")) {
      // "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF"
      const f = line.trim().split(/\s+/);
      if (f[1] !== "FLOCK" || f[5] !== id) continue;
      const pid = Number(f[4]);
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    }
  } catch {
    // no /proc
  }
  return undefined;
}
