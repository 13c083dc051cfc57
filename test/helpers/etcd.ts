import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EtcdServer } from "../../src/harness/etcd.js";

/** A real etcd for one test file, in a temporary directory; `close` removes both. */
export async function startEtcd(): Promise<{ etcd: EtcdServer; dir: string; close: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), "weft-etcd-"));
  const etcd = await EtcdServer.start({ dir });
  return {
    etcd,
    dir,
    close: async () => {
      await etcd.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
