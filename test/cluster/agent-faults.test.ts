import { mkdirSync, rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Cluster } from "../../src/harness/cluster.js";

/**
 * Failures in the agent's background work (after start) are logged, counted
 * and retried; none of them may end the process through an unhandled
 * rejection.
 */
let c: Cluster;
beforeAll(async () => {
  c = await Cluster.create({ nodes: 2, podsPerNode: 1 });
}, 120_000);
afterAll(async () => {
  await c?.destroy();
});

describe("agent background faults", () => {
  it("a lease acquired again whose subnet file cannot be written: logged, retried, and done once it can be; the agent never exits", async () => {
    const before = await c.status(0);
    const reg = c.registry();
    try {
      // The subnet file's path becomes a directory: writing it (rename over it) fails with EISDIR.
      rmSync(c.files(0).subnetFile, { force: true });
      mkdirSync(c.files(0).subnetFile);
      const key = `/coreos.com/network/subnets/${before.subnet!.replace("/", "-")}`;
      await reg.client.delete().key(key); // the agent acquires again, then fails to write the subnet file
      const end = Date.now() + 15_000;
      while (!c.agentLog(0).includes("setting up the data path for the new lease failed") && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
      expect(c.agentLog(0)).toContain("setting up the data path for the new lease failed");
      await new Promise((r) => setTimeout(r, 1500));
      expect(c.node(0).agent?.exitCode).toBeNull(); // still running
      expect((await c.status(0)).ready).toBe(false);
      rmSync(c.files(0).subnetFile, { recursive: true });
      const st = await c.waitReady(0, 40_000);
      expect(st.subnet).toBe(before.subnet);
      const metrics = await c.node(0).ns.exec([process.execPath, "-e", 'fetch("http://127.0.0.1:9099/metrics").then(async (r) => console.log(await r.text()))']);
      expect(metrics).toMatch(/^weft_internal_errors_total\{task="lease-acquired"\} [1-9]\d*$/m);
      expect(await c.pingAll()).toEqual([]);
    } finally {
      reg.close();
    }
  }, 90_000);
});
