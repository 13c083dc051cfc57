import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll } from "vitest";
import { run } from "../../src/common/exec.js";
import type { Netns } from "../../src/harness/netns.js";

/**
 * What the ebpf network tests make and must remove: a bpffs of their own
 * (mounted here, so pins outlive each driver run), namespaces and state
 * dirs. Registers the hooks; the test pushes what it makes.
 */
export function bpfScratch(prefix: string): { readonly bpffs: () => string; readonly made: Netns[]; readonly dirs: string[] } {
  let bpffs = "";
  const made: Netns[] = [];
  const dirs: string[] = [];
  beforeAll(async () => {
    bpffs = mkdtempSync(join(tmpdir(), prefix));
    await run(["mount", "-t", "bpf", "bpf", bpffs]);
  });
  afterAll(async () => {
    for (const ns of made) await ns.destroy();
    await run(["umount", "-l", bpffs]).catch(() => undefined);
    rmSync(bpffs, { recursive: true, force: true });
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  return { bpffs: () => bpffs, made, dirs };
}
