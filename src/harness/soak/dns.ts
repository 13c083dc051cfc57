import type { Cluster } from "../cluster.js";
import type { FaultContext } from "./faults.js";
import type { FaultRecord } from "./types.js";
import { sleep } from "./wait.js";

/** The node-local DNS address every agent serves (its default --dns-listen). */
export const NODE_DNS = "169.254.20.10";

/** The A records node i's DNS gives for each name (one dig, every name; a name without answer maps to []). */
export async function lookup(c: Cluster, i: number, names: readonly string[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>(names.map((n) => [n, []]));
  if (names.length === 0) return out;
  const text = await c.node(i).ns.exec(["dig", `@${NODE_DNS}`, "+time=1", "+tries=1", "+noall", "+answer", ...names.flatMap((n) => [n, "A"])], { timeoutMs: 5000 });
  for (const line of text.split("\n")) {
    const m = /^(\S+)\.\s+\d+\s+IN\s+A\s+(\S+)$/.exec(line.trim());
    if (m?.[1] && m[2]) out.get(m[1])?.push(m[2]);
  }
  for (const v of out.values()) v.sort();
  return out;
}

/** Names whose answers on node i differ from `want` (name → sorted addresses; [] means no such name). */
export async function mismatches(c: Cluster, i: number, want: ReadonlyMap<string, readonly string[]>): Promise<string[]> {
  const names = [...want.keys()];
  const got = await lookup(c, i, names).catch((e: unknown) => new Error((e as Error).message.slice(0, 200)));
  if (got instanceof Error) return [`node ${i}: dig failed: ${got.message}`];
  return names.filter((n) => (got.get(n) ?? []).join(",") !== [...(want.get(n) ?? [])].sort().join(","))
    .map((n) => `node ${i}: ${n} is ${JSON.stringify(got.get(n))}, the registry says ${JSON.stringify(want.get(n))}`);
}

/**
 * Polls every node until its answers match `want`; resolves with the time
 * taken (ms) by the slowest node, or the remaining mismatches (all of them
 * in `left`, by node in `byNode`) once `limitMs` has passed.
 */
export async function converge(c: Cluster, nodes: readonly number[], want: ReadonlyMap<string, readonly string[]>, limitMs: number): Promise<{ ms: number; left: string[]; byNode: Map<number, string[]> }> {
  const t0 = Date.now();
  const left = await Promise.all(nodes.map(async (i) => {
    for (;;) {
      const bad = await mismatches(c, i, want);
      if (bad.length === 0 || Date.now() - t0 > limitMs) return bad;
      await sleep(50);
    }
  }));
  const byNode = new Map(nodes.map((i, k) => [i, left[k] ?? []] as const).filter(([, l]) => l.length > 0));
  return { ms: Date.now() - t0, left: left.flat(), byNode };
}

/**
 * `converge` over the nodes no other fault in force takes away (an agent
 * killed answers nothing, one cut off from etcd cannot follow the registry);
 * a node that another fault took away while it was polled is left out of
 * what is left too.
 */
export async function convergeCalm(x: Pick<FaultContext, "c" | "calm" | "disturbed" | "at">, self: FaultRecord, want: ReadonlyMap<string, readonly string[]>, limitMs: number): Promise<{ ms: number; left: string[] }> {
  const since = x.at();
  const r = await converge(x.c, x.calm(self), want, limitMs);
  return { ms: r.ms, left: [...r.byNode].filter(([i]) => !x.disturbed(i, self, since)).flatMap(([, l]) => l) };
}
