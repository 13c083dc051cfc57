import { queryIpam } from "../../agent/control.js";
import { hostIfName } from "../../cni/links.js";
import type { Cluster } from "../cluster.js";

/** One address a node's IPAM holds for a container. */
export interface Held {
  readonly node: number;
  readonly containerId: string;
  readonly ip: string;
}

/** Addresses held by more than one allocation across the cluster, one line each. */
export function duplicates(held: readonly Held[]): string[] {
  const by = new Map<string, Held[]>();
  for (const h of held) by.set(h.ip, [...(by.get(h.ip) ?? []), h]);
  return [...by].filter(([, hs]) => hs.length > 1).map(([ip, hs]) => `${ip} held by ${hs.map((h) => `node ${h.node}/${h.containerId}`).join(" and ")}`);
}

/** What a node has for pods, as the leftover check compares it with the pods that should exist. */
export interface NodePodState {
  readonly node: number;
  /** Container ids of the node's IPAM allocations. */
  readonly allocations: readonly string[];
  /** Host-side pod veths (weft's wv… names) in the node's namespace. */
  readonly veths: readonly string[];
  /** The agent's BPF endpoint count (ebpf nodes only). */
  readonly endpoints: number | undefined;
}

/** Allocations, veths and BPF endpoints with no live pod, and live pods missing theirs. */
export function leftovers(live: ReadonlyMap<number, readonly string[]>, states: readonly NodePodState[], network = "weft"): string[] {
  const out: string[] = [];
  for (const s of states) {
    const ids = live.get(s.node) ?? [];
    const want = new Set(ids);
    for (const a of s.allocations) if (!want.has(a)) out.push(`node ${s.node}: IPAM allocation for ${a}, which no longer exists`);
    for (const id of ids) if (!s.allocations.includes(id)) out.push(`node ${s.node}: live pod ${id} has no IPAM allocation`);
    const veths = new Set(ids.map((id) => hostIfName(network, id, "eth0")));
    for (const v of s.veths) if (!veths.has(v)) out.push(`node ${s.node}: veth ${v} belongs to no live pod`);
    if (s.endpoints !== undefined && s.endpoints !== ids.length) out.push(`node ${s.node}: ${s.endpoints} BPF endpoints for ${ids.length} live pods`);
  }
  return out;
}

/** Every address each reachable agent's IPAM holds (an agent that does not answer is skipped). */
export async function gatherHeld(c: Cluster, nodes: readonly number[]): Promise<Held[]> {
  const all = await Promise.all(nodes.map(async (i) => {
    const r = await queryIpam<{ allocations: { containerId: string; ip?: string; ip6?: string }[] }>(c.files(i).socket, "ipam-ls", 1000).catch(() => undefined);
    return (r?.allocations ?? []).flatMap((a) => [a.ip, a.ip6].filter((x): x is string => x !== undefined).map((ip) => ({ node: i, containerId: a.containerId, ip })));
  }));
  return all.flat();
}

/** A node's pod state for the leftover check; throws when its agent does not answer. */
export async function nodePodState(c: Cluster, i: number): Promise<NodePodState> {
  const r = await queryIpam<{ allocations: { containerId: string }[] }>(c.files(i).socket, "ipam-ls", 3000);
  const links = JSON.parse(await c.node(i).ns.ip("-json", "link", "show")) as { ifname: string }[];
  const endpoints = c.backendOf(i) === "ebpf" ? (await c.status(i)).counters["endpoints"] : undefined;
  return { node: i, allocations: r.allocations.map((a) => a.containerId), veths: links.map((l) => l.ifname).filter((n) => /^wv[0-9a-f]{11}$/.test(n)), endpoints };
}
