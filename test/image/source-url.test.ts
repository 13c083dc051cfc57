import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";

/**
 * The image's org.opencontainers.image.source annotation is a URL whatever
 * the clone's origin looks like: CI clones from a local path, developers
 * from scp-style remotes.
 */
const url = (remote: string): { status: number | null; out: string; err: string } => {
  const r = spawnSync("scripts/source-url.sh", [remote], { encoding: "utf8" });
  return { status: r.status, out: r.stdout.trim(), err: r.stderr };
};

describe("scripts/source-url.sh", () => {
  it.each([
    ["https://example.com/weft/weft.git", "https://example.com/weft/weft.git"],
    ["ssh://git@example.com/weft/weft.git", "ssh://git@example.com/weft/weft.git"],
    ["file:///srv/weft.git", "file:///srv/weft.git"],
    ["/check/repo.git", "file:///check/repo.git"],
    ["git@example.com:weft/weft.git", "ssh://git@example.com/weft/weft.git"],
    ["example.com:/srv/weft.git", "ssh://example.com/srv/weft.git"],
    [".", `file://${process.cwd()}`],
  ])("%s -> %s", (remote, want) => {
    const r = url(remote);
    expect(r.status, r.err).toBe(0);
    expect(r.out).toBe(want);
    expect(r.out).toMatch(/^(https?|git|ssh|file):\/\/\S+$/);
  });

  it("refuses what is neither a URL nor a directory, saying so", () => {
    const r = url("no-such-dir-here");
    expect(r.status).toBe(1);
    expect(r.err).toContain("neither a URL nor a directory");
  });
});
