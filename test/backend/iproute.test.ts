import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BatchSession, batch } from "../../src/common/iproute.js";
import { Netns } from "../../src/harness/netns.js";

let ns: Netns;
beforeAll(async () => {
  ns = await Netns.create("nl");
});
afterAll(async () => {
  await ns?.destroy();
});

describe("iproute2 batches", () => {
  it("a one-shot batch reports exactly the lines that failed", async () => {
    const r = await batch("ip", ["link add a0 type veth peer name b0", "link add a0 type veth peer name b0", "link set a0 up", "link set nope up"], ns.name);
    expect(r.failed.map((f) => f.line)).toEqual([1, 3]);
    expect(r.failed[0]?.error).toMatch(/exists/);
  });

  it("a session runs batch after batch in one process, maps failures to each batch's lines, and restarts if killed", async () => {
    const s = new BatchSession("ip", ns.name);
    try {
      let r = await s.run(["link add a1 type veth peer name b1", "link add a1 type veth peer name b1", "link set a1 up"]);
      expect(r.failed.map((f) => f.line)).toEqual([1]);
      const pid = s.pid;
      r = await s.run(["link set b1 up", "addr add 198.18.9.1/24 dev a1", "addr add 198.18.9.1/24 dev a1"]);
      expect(r.failed).toEqual([{ line: 2, error: expect.stringMatching(/already assigned/) }]);
      expect(s.pid).toBe(pid);
      expect(await ns.ip("-br", "addr", "show", "dev", "a1")).toMatch(/UP.*198\.18\.9\.1\/24/);
      process.kill(pid!, "SIGKILL");
      await new Promise((res) => setTimeout(res, 100));
      r = await s.run(["link set a1 down", "link set nope down"]);
      expect(r.failed.map((f) => f.line)).toEqual([1]);
      expect(s.pid).not.toBe(pid);
      const b = new BatchSession("bridge", ns.name);
      expect((await b.run(["fdb add 02:00:00:00:00:01 dev nope"])).failed.map((f) => f.line)).toEqual([0]);
      b.close();
    } finally {
      s.close();
    }
  });

  it("an old process that exits after the session moved on does not fail the next batch", async () => {
    const s = new BatchSession("ip", ns.name);
    try {
      for (let i = 0; i < 30; i++) {
        // "Cannot find device" makes the session start a new process; the old one exits meanwhile.
        const r = await s.run(["link set nope-dev up"]);
        expect(r.failed.map((f) => f.line)).toEqual([0]);
        const next = await s.run(Array.from({ length: 50 }, () => "link show dev lo"));
        expect(next.failed).toEqual([]);
      }
    } finally {
      s.close();
    }
  });
});
