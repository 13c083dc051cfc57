import { describe, expect, it } from "vitest";
import { KeyedSerial } from "../../src/common/keyed-serial.js";

/** One operation at a time per key (IPAM allocations, discovery publications). */
describe("KeyedSerial", () => {
  const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

  it("runs one key's work in call order, one at a time, and other keys alongside; a failure does not stop the queue", async () => {
    const s = new KeyedSerial();
    const log: string[] = [];
    let inA = 0;
    const a = (name: string, fail = false) => s.run("a", async () => {
      inA++;
      expect(inA).toBe(1);
      log.push(`${name} start`);
      await tick();
      await tick();
      log.push(`${name} end`);
      inA--;
      if (fail) throw new Error(name);
      return name;
    });
    const b = s.run("b", async () => {
      log.push("b start");
      await tick();
      log.push("b end");
      return "b";
    });
    const results = await Promise.allSettled([a("a1"), a("a2", true), a("a3"), b]);
    expect(results.map((r) => (r.status === "fulfilled" ? r.value : (r.reason as Error).message))).toEqual(["a1", "a2", "a3", "b"]);
    expect(log.filter((l) => l.startsWith("a"))).toEqual(["a1 start", "a1 end", "a2 start", "a2 end", "a3 start", "a3 end"]);
    expect(log.indexOf("b start")).toBeLessThan(log.indexOf("a1 end")); // b did not wait for a
    expect(s.size).toBe(0); // idle keys are forgotten
  });
});
