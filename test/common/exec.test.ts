import { describe, expect, it } from "vitest";
import { CommandError, run } from "../../src/common/exec.js";

describe("running commands from an argv array", () => {
  it("a child that exits before reading its input does not take the process down (EPIPE on its stdin)", async () => {
    // `true` never reads: writing 8 MiB to it ends in EPIPE, which must stay inside run().
    for (let i = 0; i < 5; i++) await expect(run(["true"], { input: "x".repeat(8 << 20) })).resolves.toBe("");
    await expect(run(["false"], { input: "x".repeat(8 << 20) })).rejects.toBeInstanceOf(CommandError);
  });

  it("never interprets its arguments: a value with shell syntax is one argument", async () => {
    expect(await run(["printf", "%s", "a;id>x $(id) `id`"])).toBe("a;id>x $(id) `id`");
  });
});
