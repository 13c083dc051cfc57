import { describe, expect, it } from "vitest";
import { Rng } from "../../src/harness/soak/rng.js";
import { disturbed, FAULT_SHAPES, picksNode, Schedule } from "../../src/harness/soak/schedule.js";
import { FAULT_KINDS, type FaultKind, type FaultRecord } from "../../src/harness/soak/types.js";

const rec = (kind: FaultKind, node: number | undefined, startMs: number, settledMs: number | undefined): FaultRecord =>
  ({ kind, node, detail: "", startMs, restoredMs: undefined, settledMs, maxOutageMs: 0, observed: false });

describe("soak schedule", () => {
  it("one at a time: every kind once per round, each round a permutation, the same for the same seed", () => {
    const run = (seed: number): FaultKind[] => {
      const s = new Schedule(FAULT_KINDS, new Rng(seed), [0, 1, 2]);
      const out: FaultKind[] = [];
      for (let i = 0; i < FAULT_KINDS.length * 3; i++) {
        const n = s.next();
        if (!n) throw new Error("nothing fits with no fault in force");
        expect(n.node === undefined).toBe(!picksNode(n.kind));
        out.push(n.kind);
      }
      return out;
    };
    const a = run(7);
    expect(run(7)).toEqual(a);
    expect(run(8)).not.toEqual(a);
    for (let r = 0; r < 3; r++) expect([...a.slice(r * FAULT_KINDS.length, (r + 1) * FAULT_KINDS.length)].sort()).toEqual([...FAULT_KINDS].sort());
  });

  it("faults in force: no two hold one node, etcd, the upstream or the joiner; a kind that does not fit waits its turn", () => {
    const s = new Schedule(["agent-sigkill", "etcd-cut", "etcd-leader-kill", "registry-churn", "upstream-down"], new Rng(3), [0, 1]);
    const inForce: { kind: FaultKind; node: number | undefined }[] = [];
    const seen = new Set<FaultKind>();
    for (let step = 0; step < 200; step++) {
      const n = s.next();
      if (n) {
        for (const g of inForce) {
          if (n.node !== undefined) expect(g.node).not.toBe(n.node);
          const shared = FAULT_SHAPES[n.kind].locks.filter((l) => l !== "node" && FAULT_SHAPES[g.kind].locks.includes(l));
          expect(shared, `${n.kind} beside ${g.kind}`).toEqual([]);
        }
        s.take(n);
        inForce.push(n);
        seen.add(n.kind);
      }
      // Faults end in a seeded order, sometimes several steps later.
      if (inForce.length > 0 && (step % 3 === 0 || !n)) s.release(inForce.splice(step % inForce.length, 1)[0]!);
    }
    expect([...seen].sort()).toEqual(["agent-sigkill", "etcd-cut", "etcd-leader-kill", "registry-churn", "upstream-down"]);
  });

  it("nothing fits when every node and etcd are held; a release makes room", () => {
    const s = new Schedule(["agent-sigkill", "registry-churn"], new Rng(1), [0]);
    const a = { kind: "agent-sigkill" as const, node: 0 };
    const b = { kind: "registry-churn" as const, node: undefined };
    s.take(a);
    s.take(b);
    expect(s.next()).toBeUndefined();
    s.release(a);
    expect(s.next()).toEqual(a);
  });

  it("disturbed: another fault taking the node away at some time in the window, not the fault itself, not a harmless one", () => {
    const kill = rec("agent-sigkill", 1, 1000, 4000);
    const burst = rec("cni-burst", 2, 1000, undefined);
    const cut = rec("etcd-cut", 2, 9000, undefined);
    const faults = [kill, burst, cut];
    expect(disturbed(faults, 1, undefined, 0, 500)).toBe(false); // before
    expect(disturbed(faults, 1, undefined, 3000, 3500)).toBe(true); // during
    expect(disturbed(faults, 1, undefined, 500, 6000)).toBe(true); // the window spans it
    expect(disturbed(faults, 1, undefined, 4500, 6000)).toBe(false); // after it settled
    expect(disturbed(faults, 1, kill, 3000, 3500)).toBe(false); // itself
    expect(disturbed(faults, 2, undefined, 2000, 8000)).toBe(false); // a burst without a kill
    expect(disturbed(faults, 2, undefined, 2000, 9500)).toBe(true); // the cut, still in force
  });
});
