/** The soak's vocabulary: fault kinds, fault records, violations and the report. */

export const FAULT_KINDS = [
  "agent-sigkill",
  "agent-sigterm",
  "etcd-leader-kill",
  "etcd-quorum-loss",
  "etcd-cut",
  "cni-burst",
  "cni-burst-sigkill",
  "registry-churn",
  "upstream-down",
  "node-churn",
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** One injected fault: when it began, when the harness had undone it, when the cluster was whole again. */
export interface FaultRecord {
  readonly kind: FaultKind;
  readonly node: number | undefined;
  detail: string;
  readonly startMs: number;
  restoredMs: number | undefined;
  /** All pod pairs answered again (or the grace ran out: settledMs = restoredMs + grace). */
  settledMs: number | undefined;
  /** The longest time one pod pair went unanswered while this fault was in force. */
  maxOutageMs: number;
  /** The harness saw the fault take effect (the agent exited, etcd stopped answering, the burst's pods were made). */
  observed: boolean;
}

export type InvariantName = "unique-address" | "reachability" | "leftovers" | "dns" | "memory" | "fault-action";

export interface Violation {
  readonly invariant: InvariantName;
  readonly atMs: number;
  detail: string;
}

export interface SoakReport {
  readonly seed: number;
  /** Faults in force at once at most, as asked; how many began while another was in force; the most in force at once. */
  readonly overlap: number;
  readonly overlapped: number;
  readonly max_in_force: number;
  /** Every fault in order (times in s since the faults began): a run that found something can be read back. */
  readonly fault_list: readonly { readonly kind: FaultKind; readonly node: number | undefined; readonly detail: string; readonly start_s: number; readonly restored_s: number; readonly settled_s: number; readonly observed: boolean; readonly max_outage_ms: number }[];
  readonly duration_s: number;
  readonly faults: number;
  readonly fault_kinds: Partial<Record<FaultKind, number>>;
  readonly observed: Partial<Record<FaultKind, number>>;
  readonly violations: number;
  readonly violation_list: readonly Violation[];
  readonly max_outage_ms: Partial<Record<FaultKind, number>>;
  readonly checks: Readonly<Record<InvariantName, number>>;
  /** The slowest a node's DNS took to answer as the registry says after a change (registry churn). */
  readonly dns_max_lag_ms: number;
  /** Each agent process (a restart is a new one) sampled long enough for a verdict: its memory trend. */
  readonly memory: readonly { readonly node: number; readonly pid: number; readonly samples: number; readonly first_mib: number; readonly last_mib: number; readonly slope_mib_per_min: number; readonly grows: boolean }[];
  readonly pods: number;
  readonly pairs: number;
  readonly nodes: readonly { readonly index: number; readonly backend: string }[];
}
