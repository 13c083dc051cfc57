import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { open, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { WeftError } from "./errors.js";

/** A file could not be written in full; what was there before is unchanged. */
export class FileWriteError extends WeftError {
  readonly code = "WEFT_FILE_WRITE";
}

/**
 * Writes `text` to `path` so that readers see the old or the new file, never
 * a mix: a temporary file beside it, written in full (write(2) may write
 * less than asked, e.g. on a nearly full disk, so it loops), fsync'd, then
 * renamed over `path`, then the directory fsync'd so the rename survives a
 * crash. Any failure removes the temporary file and throws FileWriteError;
 * `path` is then as it was.
 */
export function writeFileAtomic(path: string, text: string, mode = 0o644): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`);
  const buf = Buffer.from(text, "utf8");
  let written = 0;
  try {
    const fd = openSync(tmp, "w", mode);
    try {
      while (written < buf.length) {
        const n = writeSync(fd, buf, written, buf.length - written);
        if (n <= 0) throw new Error("write(2) wrote nothing");
        written += n;
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    const why = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new FileWriteError(`writing ${path} failed after ${written} of ${buf.length} bytes: ${why}; the file was left as it was`, {
      hint: `check the filesystem of ${dir} (free space: df ${dir}; permissions)`, recoverable: true, cause: e,
    });
  }
  fsyncDir(dir);
}

/**
 * writeFileAtomic without blocking the event loop on the write and the fsync
 * (a route cache of 20,000 leases is 4 MB): the same temporary file, fsync,
 * rename, directory fsync and FileWriteError. `content` may come in pieces
 * (an iterable, also async), written as they come, so that a large file is
 * never one string or one buffer in memory. `commit` is asked just before
 * the rename (a synchronous step, so nothing runs in between): when it
 * answers false, newer content was written meanwhile, the temporary file is
 * removed and false is returned. The temporary file's name carries `tag`, so
 * that a synchronous writeFileAtomic of the same path does not collide.
 */
export async function writeFileAtomicAsync(path: string, content: string | Iterable<string> | AsyncIterable<string>, mode = 0o644,
  commit: () => boolean = () => true, tag = "async"): Promise<boolean> {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${tag}.tmp`);
  let written = 0;
  try {
    const fh = await open(tmp, "w", mode);
    try {
      for await (const piece of typeof content === "string" ? [content] : content) {
        const buf = Buffer.from(piece, "utf8");
        let off = 0;
        while (off < buf.length) {
          const { bytesWritten } = await fh.write(buf, off, buf.length - off);
          if (bytesWritten <= 0) throw new Error("write(2) wrote nothing");
          off += bytesWritten;
          written += bytesWritten;
        }
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (!commit()) {
      await rm(tmp, { force: true });
      return false;
    }
    renameSync(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    const why = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new FileWriteError(`writing ${path} failed after ${written} bytes: ${why}; the file was left as it was`, {
      hint: `check the filesystem of ${dir} (free space: df ${dir}; permissions)`, recoverable: true, cause: e,
    });
  }
  fsyncDir(dir);
  return true;
}

/** Makes the entries of `dir` (a file created, renamed or removed in it) durable. */
export function fsyncDir(dir: string): void {
  const dfd = openSync(dir, "r");
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}
