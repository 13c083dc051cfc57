import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Cluster } from "../../src/harness/cluster.js";

let c: Cluster;
beforeAll(async () => {
  c = await Cluster.create({ nodes: 3, podsPerNode: 2 });
}, 120_000);
afterAll(async () => {
  await c?.destroy();
});

describe("3-node cluster, kernel vxlan backend", () => {
  it("every pod pings every other pod", async () => {
    expect(await c.pingAll()).toEqual([]);
  });
});
