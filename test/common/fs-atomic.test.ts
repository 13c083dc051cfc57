import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run } from "../../src/common/exec.js";
import { FileWriteError, writeFileAtomic } from "../../src/common/fs-atomic.js";

/**
 * writeFileAtomic on a real, small tmpfs: a nearly full filesystem makes
 * write(2) return fewer bytes than asked (then ENOSPC), the short write that
 * once left a truncated IPAM snapshot or endpoints.json in place.
 */
const dir = mkdtempSync(join(tmpdir(), "weft-fs-atomic-"));

beforeAll(async () => {
  await run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", dir]);
});
afterAll(async () => {
  await run(["umount", dir]).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

/** Fills the filesystem, then frees `leave` bytes. */
function fillLeaving(leave: number): void {
  const filler = join(dir, "filler");
  const fd = openSync(filler, "w");
  const chunk = Buffer.alloc(4096, 0x61);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (e) {
    expect((e as NodeJS.ErrnoException).code).toBe("ENOSPC");
  } finally {
    closeSync(fd);
  }
  const size = readFileSync(filler).length;
  writeFileSync(filler, Buffer.alloc(Math.max(0, size - leave), 0x61));
}

describe("writeFileAtomic", () => {
  it("writes and replaces a file", () => {
    const p = join(dir, "a.json");
    writeFileAtomic(p, "one\n", 0o600);
    writeFileAtomic(p, "two\n", 0o600);
    expect(readFileSync(p, "utf8")).toBe("two\n");
    rmSync(p);
  });

  it("a short write on a nearly full tmpfs: a typed error, the old file intact, no temporary file left", () => {
    const p = join(dir, "state.json");
    const old = `${JSON.stringify({ version: 1, keep: "x".repeat(1000) })}\n`;
    writeFileAtomic(p, old, 0o600);
    fillLeaving(8192);
    expect(statfsSync(dir).bavail * statfsSync(dir).bsize).toBeLessThanOrEqual(8192);
    const big = JSON.stringify({ version: 1, allocations: "y".repeat(40_000) });
    let err: unknown;
    try {
      writeFileAtomic(p, big, 0o600);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FileWriteError);
    expect((err as FileWriteError).code).toBe("WEFT_FILE_WRITE");
    // Says which file, how far it got, why, that nothing changed and what to check.
    expect((err as Error).message).toMatch(/writing .*state\.json failed after \d+ of \d+ bytes: ENOSPC; the file was left as it was \(check the filesystem/);
    expect(Number(/after (\d+) of/.exec((err as Error).message)?.[1])).toBeGreaterThan(0); // it really was a short write first
    expect(readFileSync(p, "utf8")).toBe(old);
    expect(readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    rmSync(join(dir, "filler"));
    writeFileAtomic(p, big, 0o600); // room again: it works
    expect(readFileSync(p, "utf8")).toBe(big);
  });
});
