import { formatIpv4 } from "../../common/ipv4.js";
import { run } from "../../common/exec.js";
import type { Cluster } from "../cluster.js";
import type { EtcdCluster } from "../etcd-cluster.js";
import type { CniPod, CniRunner } from "./cni.js";
import { gatherHeld, leftovers, nodePodState } from "./checks.js";
import { nodeChurn, type Joiner } from "./node-churn.js";
import { registryChurn } from "./registry-churn.js";
import type { Rng } from "./rng.js";
import { upstreamDown, type Upstream } from "./upstream.js";
import type { FaultKind, FaultRecord } from "./types.js";
import { sleep, within } from "./wait.js";

/** What a fault works with. `violation` records a broken invariant found while injecting. */
export interface FaultContext {
  readonly c: Cluster;
  readonly rng: Rng;
  readonly cni: CniRunner;
  /** Nodes running a weft agent. */
  readonly agentNodes: readonly number[];
  /** Container ids of the long-lived pods per node (the leftover check's "should exist"). */
  readonly live: ReadonlyMap<number, readonly string[]>;
  /** One long-lived pod per node, as a ping target for new pods. */
  readonly anchors: ReadonlyMap<number, CniPod>;
  readonly violation: (invariant: "leftovers" | "reachability" | "unique-address" | "dns", detail: string) => void;
  /** DNS names (A) the registry should answer, with their addresses ([]: none). */
  readonly dnsWant: Map<string, readonly string[]>;
  /** The node that joins and leaves (node-churn), while it is in; its node is in `extraNodes` too. */
  joiner: Joiner | undefined;
  readonly extraNodes: Set<number>;
  /** The DNS upstream every agent forwards to. */
  readonly upstream: Upstream | undefined;
  /** Records how long the nodes' DNS took to follow a registry change. */
  readonly dnsLag: (ms: number) => void;
  /** Pods a burst has made and not yet deleted (the address check counts them). */
  readonly transient: Set<CniPod>;
  /** Agent nodes no other fault in force takes away now: the ones a fault's checks look at. */
  readonly calm: (self: FaultRecord) => number[];
  /** Whether a fault other than `self` took node `node` away at some time since `sinceMs`: a failed check of it then says nothing. */
  readonly disturbed: (node: number, self: FaultRecord, sinceMs: number) => boolean;
  /** The soak's clock (ms since the faults began), the time base of FaultRecord. */
  readonly at: () => number;
  seq: number;
}

/** Kills an agent with `signal`, leaves it down a while, starts it again and waits until it is ready. */
async function agentKill(x: FaultContext, f: FaultRecord, signal: "SIGKILL" | "SIGTERM"): Promise<void> {
  const i = f.node ?? 0;
  await x.c.stopAgent(i, signal);
  const a = x.c.node(i).agent;
  f.observed = a !== undefined && (a.exitCode !== null || a.signalCode !== null);
  await sleep(x.rng.int(300, 2000));
  x.c.startAgent(i);
  await x.c.waitReady(i, 30_000);
}

function members(x: FaultContext): EtcdCluster {
  const m = x.c.etcdCluster;
  if (!m) throw new Error("the soak's cluster has no 3-member etcd");
  return m;
}

/** The etcd leader killed (SIGKILL); observed once another member leads; started again after a while. */
async function etcdLeaderKill(x: FaultContext, f: FaultRecord): Promise<void> {
  const m = members(x);
  const k = await m.leader();
  if (k === undefined) throw new Error("no etcd member knows a leader before the fault");
  f.detail = `member ${k}`;
  await m.member(k).stop();
  f.observed = await within(10_000, async () => {
    const now = await m.leader();
    return now !== undefined && now !== k;
  });
  await sleep(x.rng.int(1000, 4000));
  await m.member(k).run();
}

/** Two of the three members killed: no quorum, no writes, no lease renewals; both started again after a while. */
async function etcdQuorumLoss(x: FaultContext, f: FaultRecord): Promise<void> {
  const m = members(x);
  const keep = x.rng.int(0, 2);
  const kill = [0, 1, 2].filter((k) => k !== keep);
  f.detail = `members ${kill.join(", ")}`;
  await Promise.all(kill.map((k) => m.member(k).stop()));
  f.observed = !(await etcdctl(m.member(keep).localEndpoint, "endpoint", "health").then(() => true, () => false));
  await sleep(x.rng.int(2000, 5000));
  await Promise.all(kill.map((k) => m.member(k).run()));
}

function etcdctl(endpoint: string, ...args: string[]): Promise<string> {
  return run(["etcdctl", "--endpoints", endpoint, "--command-timeout", "2s", ...args]);
}

const CUT_TABLE = "wftsoakcut";

/** One node cut off from etcd (nftables drops its packets to etcd's client port) for a while. */
async function etcdCut(x: FaultContext, f: FaultRecord): Promise<void> {
  const ns = x.c.node(f.node ?? 0).ns;
  const nft = (...args: string[]): Promise<string> => ns.exec(["nft", ...args]);
  const etcdIp = new URL(x.c.etcd.endpoint).hostname; // every member listens on 2379: the rule drops them all
  await nft("add", "table", "inet", CUT_TABLE);
  try {
    await nft("add", "chain", "inet", CUT_TABLE, "out", "{", "type", "filter", "hook", "output", "priority", "0", ";", "}");
    await nft("add", "rule", "inet", CUT_TABLE, "out", "tcp", "dport", "2379", "counter", "drop");
    // A probe of our own: the cut is observed when its packets are counted.
    await ns.exec(["curl", "-s", "-m", "1", `http://${etcdIp}:2379/health`]).catch(() => undefined);
    await sleep(x.rng.int(2000, 5000));
    const listed = await nft("list", "table", "inet", CUT_TABLE);
    const m = /counter packets (\d+)/.exec(listed);
    f.observed = m !== null && Number(m[1]) > 0;
  } finally {
    await nft("delete", "table", "inet", CUT_TABLE);
  }
}

/**
 * Pod `p` pings the long-lived pod of another node no other fault takes
 * away, up to 5 tries; no reply is a violation unless that node was taken
 * away meanwhile after all.
 */
async function reachesAnchor(x: FaultContext, f: FaultRecord, p: CniPod, what: string): Promise<void> {
  const calm = new Set(x.calm(f));
  const others = [...x.anchors.values()].filter((a) => a.node !== p.node && calm.has(a.node));
  if (others.length === 0) return;
  const to = x.rng.pick(others);
  const since = x.at();
  let ok = false;
  for (let t = 0; t < 5 && !ok; t++) ok = await p.ns.exec(["ping", "-n", "-c", "1", "-W", "1", formatIpv4(to.addr)]).then(() => true, () => false);
  if (!ok && !x.disturbed(to.node, f, since)) x.violation("reachability", `${what} ${formatIpv4(p.addr)} (node ${p.node}) never reached ${formatIpv4(to.addr)} (node ${to.node}) in 5 tries`);
}

/**
 * A burst of CNI ADDs on one node (in parallel), each new pod pinging a
 * long-lived pod on another node, then DELs (some after the namespace is
 * already gone, as a runtime may); afterwards nothing of them may be left.
 */
async function cniBurst(x: FaultContext, f: FaultRecord): Promise<void> {
  const i = f.node ?? 0;
  const k = x.rng.int(3, 6);
  const roles = Array.from({ length: k }, () => `b${x.seq++}`);
  const made = await Promise.allSettled(roles.map((r) => x.cni.add(x.c, i, r)));
  const pods: CniPod[] = [];
  for (const m of made) {
    if (m.status === "fulfilled") {
      pods.push(m.value);
      x.transient.add(m.value);
    } else {
      x.violation("leftovers", `burst on node ${i}: ${(m.reason as Error).message}`);
    }
  }
  f.observed = pods.length === k;
  await Promise.all(pods.map((p) => reachesAnchor(x, f, p, "new pod")));
  for (const p of pods) {
    await x.cni.del(x.c, p, x.rng.next() < 0.3).catch((e: unknown) => x.violation("leftovers", (e as Error).message));
    x.transient.delete(p);
  }
  const left = leftovers(new Map([[i, x.live.get(i) ?? []]]), [await nodePodState(x.c, i)]);
  for (const l of left) x.violation("leftovers", `after a burst: ${l}`);
}

/**
 * A burst of CNI ADDs on one node with its agent SIGKILLed in the middle of
 * it, then started again. ADDs that failed get a DEL, as a runtime sends
 * one; ADDs that succeeded keep their address through the restart and reach
 * a long-lived pod on another node; after the DELs nothing is left.
 */
async function cniBurstKill(x: FaultContext, f: FaultRecord): Promise<void> {
  const i = f.node ?? 0;
  const k = x.rng.int(4, 8);
  const roles = Array.from({ length: k }, () => `k${x.seq++}`);
  const adds = Promise.allSettled(roles.map((r) => x.cni.add(x.c, i, r)));
  await sleep(x.rng.int(30, 250)); // ADDs take ~50-300 ms each here: some done, some in flight
  await x.c.stopAgent(i, "SIGKILL");
  const a = x.c.node(i).agent;
  f.observed = a !== undefined && a.signalCode === "SIGKILL";
  const made = await adds;
  x.c.startAgent(i);
  await x.c.waitReady(i, 30_000);
  const pods = made.flatMap((m) => (m.status === "fulfilled" ? [m.value] : []));
  f.detail = `${pods.length} of ${k} ADDs done before the kill`;
  const held = new Set((await gatherHeld(x.c, [i])).map((h) => h.containerId));
  for (const p of pods) if (!held.has(p.id)) x.violation("leftovers", `pod ${p.id}'s ADD succeeded before the agent was killed, but the restarted agent does not hold its address`);
  await Promise.all(pods.map((p) => reachesAnchor(x, f, p, "pod added before its agent was killed")));
  for (const p of pods) await x.cni.del(x.c, p).catch((e: unknown) => x.violation("leftovers", (e as Error).message));
  for (let n = 0; n < roles.length; n++) {
    if (made[n]?.status !== "rejected") continue;
    const id = `soak-${roles[n] ?? ""}`;
    const out = await x.cni.call(x.c, i, "DEL", id, `/run/netns/wft${x.c.tag}-${roles[n] ?? ""}`);
    if (out.exit !== 0) x.violation("leftovers", `DEL of ${id} (its ADD failed when the agent was killed) failed: ${out.stdout.slice(0, 300)}`);
  }
  const left = leftovers(new Map([[i, x.live.get(i) ?? []]]), [await nodePodState(x.c, i)]);
  for (const l of left) x.violation("leftovers", `after a burst cut by SIGKILL: ${l}`);
}

/** How each kind is injected (which node it picks and what it holds: schedule.ts). */
export const FAULTS: Record<FaultKind, (x: FaultContext, f: FaultRecord) => Promise<void>> = {
  "agent-sigkill": (x, f) => agentKill(x, f, "SIGKILL"),
  "agent-sigterm": (x, f) => agentKill(x, f, "SIGTERM"),
  "etcd-leader-kill": etcdLeaderKill,
  "etcd-quorum-loss": etcdQuorumLoss,
  "etcd-cut": etcdCut,
  "cni-burst": cniBurst,
  "cni-burst-sigkill": cniBurstKill,
  "registry-churn": registryChurn,
  "upstream-down": upstreamDown,
  "node-churn": nodeChurn,
};

/** Removes what an interrupted etcd-cut may have left (idempotent). */
export async function clearCut(c: Cluster, i: number): Promise<void> {
  await run(["ip", "netns", "exec", c.node(i).ns.name, "nft", "delete", "table", "inet", CUT_TABLE]).catch(() => undefined);
}
