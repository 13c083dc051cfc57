import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import * as abi from "../../asm/abi.js";
import { BPF_REASONS, PACKET_REASONS, WASM_REASONS } from "../../src/dataplane/reasons.js";

/**
 * One vocabulary of packet reasons for every data path: the names the WASM
 * core, the eBPF programs, `weft status` and the metrics use come from
 * src/dataplane/reasons.ts, and both lists match their sources slot by slot.
 */
const root = new URL("../../", import.meta.url);

describe("packet reasons", () => {
  it("the WASM list is asm/abi.ts's R_* codes, slot -r for result r", () => {
    const codes = Object.entries(abi).filter(([k]) => /^R_[A-Z0-9_]+$/.test(k) && k !== "R_COUNT") as [string, number][];
    const bySlot = new Map(codes.map(([k, v]) => [-v, k.slice(2).toLowerCase()]));
    expect(WASM_REASONS.length).toBe(abi.R_COUNT);
    WASM_REASONS.forEach((name, slot) => expect(slot === 0 ? "ok" : bySlot.get(slot), `slot ${slot}`).toBe(name));
  });

  it("the eBPF list is bpf/lib/common.h's enum weft_reason, slot = value", () => {
    const h = readFileSync(new URL("bpf/lib/common.h", root), "utf8");
    const body = /enum weft_reason \{([^}]*)\}/.exec(h)?.[1] ?? "";
    const entries = [...body.matchAll(/REASON_([A-Z0-9_]+) = (\d+)/g)].map((m) => [m[1]!.toLowerCase(), Number(m[2])] as const);
    const slots = entries.filter(([n]) => n !== "max");
    expect(slots.map(([n, v]) => [n, v])).toEqual(BPF_REASONS.map((n, i) => [n, i]));
    expect(entries.find(([n]) => n === "max")?.[1]).toBe(BPF_REASONS.length);
  });

  it("every name on either path is in the vocabulary, and a concept has one name on both", () => {
    for (const n of [...WASM_REASONS, ...BPF_REASONS]) expect(Object.keys(PACKET_REASONS)).toContain(n);
    // The drops both paths make are spelled the same.
    for (const n of ["malformed", "bad_vni", "bad_dst_mac", "unknown_node", "spoofed", "no_route"] as const) {
      expect(WASM_REASONS as readonly string[]).toContain(n);
      expect(BPF_REASONS as readonly string[]).toContain(n);
    }
  });
});
