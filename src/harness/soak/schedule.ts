import type { Rng } from "./rng.js";
import type { FaultKind, FaultRecord } from "./types.js";

/**
 * What a fault holds while in force. Two faults in force never hold the same
 * one: "node" stands for the node the fault picks (node:<i>); "etcd" for
 * etcd's membership and the harness's own etcd writes (a registry change or
 * a lease revoke made during a leader election or without quorum fails in
 * the harness, not in weft); "upstream" for the DNS upstream; "joiner" for
 * the node that joins and leaves.
 */
export type Lock = "node" | "etcd" | "upstream" | "joiner";

export interface FaultShape {
  readonly locks: readonly Lock[];
  /**
   * The fault takes its node's agent away (killed) or cuts it off from etcd:
   * while it is in force, other faults' checks of that node (its DNS, pings
   * to its pods, its view of the peers) say nothing.
   */
  readonly disturbsNode: boolean;
}

export const FAULT_SHAPES: Record<FaultKind, FaultShape> = {
  "agent-sigkill": { locks: ["node"], disturbsNode: true },
  "agent-sigterm": { locks: ["node"], disturbsNode: true },
  "etcd-leader-kill": { locks: ["etcd"], disturbsNode: false },
  "etcd-quorum-loss": { locks: ["etcd"], disturbsNode: false },
  "etcd-cut": { locks: ["node"], disturbsNode: true },
  "cni-burst": { locks: ["node"], disturbsNode: false },
  "cni-burst-sigkill": { locks: ["node"], disturbsNode: true },
  "registry-churn": { locks: ["etcd"], disturbsNode: false },
  "upstream-down": { locks: ["upstream"], disturbsNode: false },
  "node-churn": { locks: ["etcd", "joiner"], disturbsNode: false },
};

export const picksNode = (kind: FaultKind): boolean => FAULT_SHAPES[kind].locks.includes("node");

function lockNames(kind: FaultKind, node: number | undefined): string[] {
  return FAULT_SHAPES[kind].locks.map((l) => (l === "node" ? `node:${node ?? -1}` : l));
}

/**
 * The seeded schedule: each kind once per shuffled round, taken in round
 * order except that a kind whose locks are held waits for a later turn (the
 * next kind that fits goes first). With one fault in force at a time every
 * kind fits and the order is the round's.
 */
export class Schedule {
  private round: FaultKind[] = [];
  private readonly held = new Set<string>();

  constructor(private readonly kinds: readonly FaultKind[], private readonly rng: Rng, private readonly nodes: readonly number[]) {}

  /** The next fault that fits beside those in force, with its node; undefined when none fits now. */
  next(): { kind: FaultKind; node: number | undefined } | undefined {
    if (this.round.length === 0) this.round = shuffle([...this.kinds], this.rng);
    for (let k = 0; k < this.round.length; k++) {
      const kind = this.round[k] as FaultKind;
      const free = picksNode(kind) ? this.nodes.filter((i) => !this.held.has(`node:${i}`)) : [undefined];
      if (free.length === 0 || FAULT_SHAPES[kind].locks.some((l) => l !== "node" && this.held.has(l))) continue;
      this.round.splice(k, 1);
      return { kind, node: picksNode(kind) ? this.rng.pick(free) : undefined };
    }
    return undefined;
  }

  take(f: Pick<FaultRecord, "kind" | "node">): void {
    for (const l of lockNames(f.kind, f.node)) this.held.add(l);
  }

  release(f: Pick<FaultRecord, "kind" | "node">): void {
    for (const l of lockNames(f.kind, f.node)) this.held.delete(l);
  }
}

/**
 * Whether a fault other than `self` that takes node `node` away was in
 * force at some time in [sinceMs, nowMs]: a check of that node over that
 * time says nothing about weft.
 */
export function disturbed(faults: readonly FaultRecord[], node: number, self: FaultRecord | undefined, sinceMs: number, nowMs: number): boolean {
  return faults.some((g) => g !== self && g.node === node && FAULT_SHAPES[g.kind].disturbsNode
    && g.startMs <= nowMs && (g.settledMs === undefined || g.settledMs >= sinceMs));
}

export function shuffle<T>(xs: T[], rng: Rng): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [xs[i], xs[j]] = [xs[j] as T, xs[i] as T];
  }
  return xs;
}
