import { formatIpv4 } from "../../common/ipv4.js";
import { Cluster } from "../cluster.js";
import { programFlannelNode } from "../flannel-node.js";
import type { Netns } from "../netns.js";
import { bridgedPod, makeBridge } from "../pod-wiring.js";
import { gatherHeld, duplicates, leftovers, nodePodState } from "./checks.js";
import { CniRunner, type CniPod } from "./cni.js";
import { clearCut, FAULTS, type FaultContext } from "./faults.js";
import { converge, convergeCalm } from "./dns.js";
import { memoryTrend, rssMib } from "./memory.js";
import { Pinger } from "./pinger.js";
import { ServiceRegistry } from "../../registry/store.js";
import { Upstream, UPSTREAM_IP } from "./upstream.js";
import { inForce, Reachability } from "./reach.js";
import { disturbed, Schedule } from "./schedule.js";
import { Rng } from "./rng.js";
import { FAULT_KINDS, type FaultKind, type FaultRecord, type InvariantName, type SoakReport, type Violation } from "./types.js";
import { sleep } from "./wait.js";

export interface SoakOptions {
  readonly seconds: number;
  readonly seed: number;
  /** One node per backend (default ebpf, tun, vxlan). */
  readonly backends?: readonly string[];
  /** Long-lived CNI pods per node (default 2). */
  readonly podsPerNode?: number;
  /** Fault kinds to draw from (default all). */
  readonly kinds?: readonly FaultKind[];
  /**
   * Faults in force at once at most (default 2): with more, a fault starts a
   * seeded gap after the one before it whether or not that one has settled,
   * if it fits beside those in force (schedule.ts: no two hold one node, etcd,
   * the upstream or the joining node).
   */
  readonly overlap?: number;
  /** A tun node no fault takes away, with no pods: its agent's memory is judged over the whole soak (default true). */
  readonly steady?: boolean;
  /** How long after a fault is undone every pod pair must answer again (default 15 s). */
  readonly graceMs?: number;
  /** A pair with no reply for this long is down (default 1000 ms; pings go every 200 ms). */
  readonly lossMs?: number;
  /**
   * Runs once the cluster and its pods are up, before the pings and the faults
   * start; tests break things here on purpose to see the invariants fail.
   */
  readonly afterSetup?: (c: Cluster, pods: readonly CniPod[]) => Promise<void>;
  /** Progress lines (to stderr in the CLI). */
  readonly log?: (line: string) => void;
}

/**
 * The chaos soak: a netns cluster with one node per backend, long-lived pods
 * attached through weft's CNI plugin pinging each other continuously, and a
 * seeded schedule of faults, each a seeded gap after the one before it, up
 * to `overlap` in force at once (each kind once per shuffled round; which
 * kinds may be in force together: schedule.ts). Invariants are checked throughout:
 * no address held twice (every second), every pod pair reachable except in
 * an outage window while a fault is in force and until it has settled,
 * nothing left behind by CNI bursts and at the end.
 */
export async function runSoak(o: SoakOptions): Promise<SoakReport> {
  const log = o.log ?? ((): void => undefined);
  const rng = new Rng(o.seed);
  const backends = o.backends ?? ["ebpf", "tun", "vxlan"];
  const kinds = o.kinds ?? FAULT_KINDS;
  const graceMs = o.graceMs ?? 15_000;
  const lossMs = o.lossMs ?? 1000;
  const overlap = o.overlap ?? 2;
  const violations: Violation[] = [];
  const checks: Record<InvariantName, number> = { "unique-address": 0, reachability: 0, leftovers: 0, dns: 0, memory: 0, "fault-action": 0 };
  let dnsMaxLag = 0;
  const rss = new Map<string, [number, number][]>();
  const memory: SoakReport["memory"][number][] = [];
  const faults: FaultRecord[] = [];
  let t0 = Date.now(); // reset once the cluster is up: duration_s counts the faulted time
  const at = (): number => Date.now() - t0;
  const seen = new Set<string>();
  const violation = (invariant: InvariantName, detail: string): void => {
    if (seen.has(`${invariant}:${detail}`)) return;
    seen.add(`${invariant}:${detail}`);
    violations.push({ invariant, atMs: at(), detail });
    log(`VIOLATION ${invariant} at ${(at() / 1000).toFixed(1)} s: ${detail}`);
  };

  log(`soak: seed ${o.seed}, ${o.seconds} s, nodes ${backends.join(", ")}`);
  // After the faulted nodes: one that runs no weft, programmed by hand as flanneld programs a vxlan
  // node; then (unless left out) a steady tun node that no fault takes away, whose agent lives
  // through the whole soak: its memory is the one judged over the run, and its DNS is checked too.
  const flannelNode = backends.length;
  const steady = (o.steady ?? true) ? flannelNode + 1 : undefined;
  const c = await Cluster.create({
    nodes: backends.length + (steady === undefined ? 1 : 2), podsPerNode: 0, backend: [...backends, "vxlan", "tun"], manualNodes: [flannelNode],
    etcdMembers: 3, agentArgs: ["--dns-upstream", UPSTREAM_IP],
  });
  const pingers: Pinger[] = [];
  const timers: NodeJS.Timeout[] = [];
  let upstream: Upstream | undefined;
  try {
    upstream = await Upstream.create(c.hub);
    const cni = CniRunner.install(c);
    const agentNodes = c.nodes.map((n) => n.index).filter((i) => i !== flannelNode && i !== steady);
    /** Every node running a weft agent from the start: the faulted ones and the steady one. */
    const weftNodes = steady === undefined ? agentNodes : [...agentNodes, steady];
    const live = new Map<number, string[]>();
    const anchors = new Map<number, CniPod>();
    const stable: CniPod[] = [];
    for (const i of agentNodes) {
      for (let j = 0; j < (o.podsPerNode ?? 2); j++) {
        const p = await cni.add(c, i, `n${i}s${j}`);
        c.node(i).pods.push({ ns: p.ns, node: i, addr: p.addr });
        stable.push(p);
        live.set(i, [...(live.get(i) ?? []), p.id]);
        if (!anchors.has(i)) anchors.set(i, p);
      }
    }
    await programFlannelNode(c, flannelNode);
    const fl = c.node(flannelNode);
    const flSubnet = { v4: fl.subnet, v6: undefined };
    await makeBridge(fl.ns, flSubnet, 1450);
    const flPod = await bridgedPod(fl.ns, flannelNode, 0, c.tag, flSubnet, 1450);
    fl.pods.push(flPod);
    const meshed: { ns: Netns; addr: number }[] = [...stable, flPod];
    // A headless service with every pod as an endpoint: every node's DNS must answer it after every fault.
    const dnsWant = new Map<string, readonly string[]>();
    const reg = new ServiceRegistry({ endpoints: c.etcdCluster?.localEndpoints ?? [c.etcd.localEndpoint] });
    try {
      await reg.putService("soak", "mesh", { type: "Headless", clusterIPs: [], ports: [], publishNotReadyAddresses: false });
      for (const [k, p] of meshed.entries()) {
        await reg.putEndpoint("soak", "mesh", `p${k}`, { addresses: [formatIpv4(p.addr)], hostname: `p${k}`, ready: true, ports: [] });
        dnsWant.set(`p${k}.mesh.soak.svc.cluster.local`, [formatIpv4(p.addr)]);
      }
    } finally {
      await reg.close();
    }
    const first = await converge(c, weftNodes, dnsWant, 10_000);
    if (first.left.length > 0) throw new Error(`the nodes' DNS does not answer the soak's services before any fault: ${first.left.join("; ")}`);
    const failed = await c.pingAll();
    if (failed.length > 0) throw new Error(`the cluster is not whole before any fault: ${failed.join(", ")}`);
    await o.afterSetup?.(c, stable);
    t0 = Date.now();

    const reach = new Reachability(lossMs, (out) => {
      for (const f of inForce(out.startMs, faults, lossMs)) f.maxOutageMs = Math.max(f.maxOutageMs, out.endMs - out.startMs);
    });
    for (const a of meshed) {
      for (const b of meshed) {
        if (a === b) continue;
        const pair = `${formatIpv4(a.addr)}->${formatIpv4(b.addr)}`;
        reach.add(pair, at());
        const p = new Pinger(a.ns, formatIpv4(b.addr), 0.2, () => reach.reply(pair, at()));
        p.start();
        pingers.push(p);
      }
    }
    timers.push(setInterval(() => {
      checks.reachability++;
      for (const d of reach.tick(at())) {
        if (inForce(d.startMs, faults, lossMs).length === 0) violation("reachability", `${d.pair} unanswered from ${(d.startMs / 1000).toFixed(1)} s with no fault in force`);
      }
    }, 200));
    const transient = new Set<CniPod>();
    const extraNodes = new Set<number>();
    let busy = false;
    timers.push(setInterval(() => {
      if (busy) return;
      busy = true;
      checks["unique-address"]++;
      void gatherHeld(c, [...weftNodes, ...extraNodes]).then((held) => {
        for (const d of duplicates(held)) violation("unique-address", d);
      }).finally(() => (busy = false));
    }, 1000));

    const dnsLag = (ms: number): void => {
      checks.dns++;
      dnsMaxLag = Math.max(dnsMaxLag, ms);
    };
    timers.push(setInterval(() => {
      for (const i of [...weftNodes, ...extraNodes]) {
        const pid = c.node(i).agent?.pid;
        const mib = pid === undefined ? undefined : rssMib(pid);
        if (pid === undefined || mib === undefined) continue;
        const key = `${i}:${pid}`;
        if (!rss.has(key)) rss.set(key, []);
        rss.get(key)?.push([at() / 1000, mib]);
      }
    }, 1000));
    const calm = (self: FaultRecord): number[] => weftNodes.filter((i) => !disturbed(faults, i, self, at(), at()));
    const x: FaultContext = {
      c, rng, cni, agentNodes, live, anchors, violation, transient, dnsWant, dnsLag, upstream, joiner: undefined, extraNodes, seq: 0,
      calm, disturbed: (i, self, since) => disturbed(faults, i, self, since, at()), at,
    };
    const schedule = new Schedule(kinds, rng, agentNodes);
    const inForceNow = (self: FaultRecord): FaultRecord[] => faults.filter((g) => g !== self && g.settledMs === undefined);
    /** One fault: injected, undone, settled (every pair answering), then every node's DNS as the registry says. */
    const runFault = async (f: FaultRecord): Promise<void> => {
      const beside = inForceNow(f).map((g) => g.kind);
      log(`${(f.startMs / 1000).toFixed(1)} s: ${f.kind}${f.node === undefined ? "" : ` on node ${f.node} (${c.backendOf(f.node)})`}${beside.length > 0 ? ` (beside ${beside.join(", ")})` : ""}`);
      checks["fault-action"]++;
      try {
        await FAULTS[f.kind](x, f);
      } catch (e) {
        violation("fault-action", `${f.kind}${f.node === undefined ? "" : ` on node ${f.node}`}: ${(e as Error).message.slice(0, 600)}`);
        if (f.kind === "etcd-cut" && f.node !== undefined) await clearCut(c, f.node);
      }
      f.restoredMs = at();
      // Settled: every pair answering for longer than the loss threshold, within the grace.
      let upSince: number | undefined;
      while (at() - f.restoredMs < graceMs) {
        const down = reach.down(at());
        if (down.length === 0) {
          upSince ??= at();
          if (at() - upSince > lossMs + 500) break;
        } else {
          upSince = undefined;
        }
        await sleep(100);
      }
      // Pairs still down while other faults are in force are theirs to settle (their own grace).
      const still = reach.down(at());
      const others = inForceNow(f);
      f.settledMs = at();
      if (still.length > 0 && others.length === 0) violation("reachability", `${still.map((d) => d.pair).join(", ")} still unanswered ${graceMs} ms after ${f.kind} was undone`);
      // Every node's DNS answers as the registry says (an agent started again must have caught up).
      if (dnsWant.size > 0) {
        checks.dns++;
        const d = await convergeCalm(x, f, dnsWant, 5000);
        if (d.left.length > 0) violation("dns", `after ${f.kind}: ${d.left.join("; ")}`);
      }
      log(`  ${f.kind}${f.detail ? `, ${f.detail}` : ""}: ${f.observed ? "observed" : "NOT observed"}, restored after ${((f.restoredMs - f.startMs) / 1000).toFixed(1)} s, settled after ${((f.settledMs - f.startMs) / 1000).toFixed(1)} s, max outage ${f.maxOutageMs} ms`);
    };
    // Up to `overlap` faults in force at once: each starts a seeded gap after the one before it
    // (with one at a time, after the one before it has settled), if one fits beside those in force.
    const running = new Set<Promise<void>>();
    while (at() < o.seconds * 1000) {
      while (running.size >= overlap) await Promise.race(running);
      await sleep(rng.int(1000, 3000));
      if (at() >= o.seconds * 1000) break;
      const next = schedule.next();
      if (!next) {
        if (running.size > 0) await Promise.race(running);
        continue;
      }
      const f: FaultRecord = { kind: next.kind, node: next.node, detail: "", startMs: at(), restoredMs: undefined, settledMs: undefined, maxOutageMs: 0, observed: false };
      faults.push(f);
      schedule.take(f);
      const p: Promise<void> = runFault(f).finally(() => {
        schedule.release(f);
        running.delete(p);
      });
      running.add(p);
    }
    await Promise.all(running);

    // Churn has settled: nothing left behind on any node.
    checks.leftovers++;
    // An agent that does not answer at the end is a violation, not a crash of the soak.
    const states = (await Promise.all(weftNodes.map((i) => nodePodState(c, i).catch((e: unknown) => {
      violation("leftovers", `at the end: node ${i}'s pod state cannot be read: ${(e as Error).message.slice(0, 300)}`);
      return undefined;
    })))).filter((st) => st !== undefined);
    for (const l of leftovers(live, states)) violation("leftovers", `at the end: ${l}`);
    for (const d of duplicates(await gatherHeld(c, [...weftNodes, ...extraNodes]))) violation("unique-address", d);
    for (const [key, samples] of rss) {
      const tr = memoryTrend(samples);
      if (!tr) continue;
      checks.memory++;
      const [node, pid] = key.split(":").map(Number) as [number, number];
      memory.push({ node, pid, samples: samples.length, first_mib: round1(samples[0]?.[1] ?? 0), last_mib: round1(samples.at(-1)?.[1] ?? 0), slope_mib_per_min: round1(tr.slopeMibPerMin), grows: tr.grows });
      if (tr.grows) violation("memory", `node ${node}'s agent (pid ${pid}) grows ${tr.slopeMibPerMin.toFixed(1)} MiB/min over ${tr.samples} s (+${tr.riseMib.toFixed(1)} MiB)`);
    }
    if (x.joiner) {
      const j = x.joiner;
      for (const l of leftovers(new Map([[j.node, [j.pod.id]]]), [{ ...(await nodePodState(c, j.node)), endpoints: undefined }])) violation("leftovers", `at the end: ${l}`);
    }
  } finally {
    for (const t of timers) clearInterval(t);
    await Promise.all(pingers.map((p) => p.stop()));
    await upstream?.stop();
    await c.destroy();
  }

  const count = (pred: (f: FaultRecord) => boolean): Partial<Record<FaultKind, number>> => {
    const out: Partial<Record<FaultKind, number>> = {};
    for (const f of faults) if (pred(f)) out[f.kind] = (out[f.kind] ?? 0) + 1;
    return out;
  };
  const maxOutage: Partial<Record<FaultKind, number>> = {};
  for (const f of faults) maxOutage[f.kind] = Math.max(maxOutage[f.kind] ?? 0, f.maxOutageMs);
  for (const f of faults) if (!f.observed) violations.push({ invariant: "fault-action", atMs: f.startMs, detail: `${f.kind} was injected but never observed to take effect` });
  // Faults in force when each began (itself included), by the same rule outages are attributed by (without slack).
  const atStart = (f: FaultRecord): number => inForce(f.startMs, faults, 0).length;
  return {
    seed: o.seed, overlap, overlapped: faults.filter((f) => atStart(f) > 1).length, max_in_force: Math.max(0, ...faults.map(atStart)),
    fault_list: faults.map((f) => ({ kind: f.kind, node: f.node, detail: f.detail, start_s: round1(f.startMs / 1000), restored_s: round1((f.restoredMs ?? 0) / 1000), settled_s: round1((f.settledMs ?? 0) / 1000), observed: f.observed, max_outage_ms: f.maxOutageMs })),
    duration_s: Math.round(at() / 100) / 10, faults: faults.length, fault_kinds: count(() => true), observed: count((f) => f.observed),
    violations: violations.length, violation_list: violations, max_outage_ms: maxOutage, checks, dns_max_lag_ms: dnsMaxLag, memory,
    pods: c.pods.length, pairs: pingers.length,
    nodes: [...backends, "flannel (by hand)", ...(steady === undefined ? [] : ["tun (steady)"])].map((b, index) => ({ index, backend: b })),
  };
}

const round1 = (v: number): number => Math.round(v * 10) / 10;
