import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import * as abi from "../../asm/abi.js";

/** native/abi.h (the shim's copy of the descriptor and unit layouts) must match asm/abi.ts. */
describe("the native shim's ABI header", () => {
  const h = readFileSync(new URL("../../native/abi.h", import.meta.url), "utf8");
  const defs = Object.fromEntries([...h.matchAll(/^#define WEFT_(\w+) (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
  it.each(Object.keys(defs))("WEFT_%s", (name) => {
    expect(defs[name]).toBe((abi as Record<string, number>)[name]);
  });
  it("covers every field the shim reads", () => {
    expect(Object.keys(defs).sort()).toEqual([
      "DESC_ADDR", "DESC_DPORT", "DESC_GSO", "DESC_LEN", "DESC_OFF", "DESC_RES", "DESC_SIZE", "DESC_SPORT", "DESC_TOS",
      "IOV_SIZE", "UNIT_ADDR", "UNIT_DPORT", "UNIT_GSO", "UNIT_IOV", "UNIT_NIOV", "UNIT_RES", "UNIT_SEGS", "UNIT_SIZE", "UNIT_SPORT", "VNET_HLEN",
    ]);
  });
});
