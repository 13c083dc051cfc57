import { formatCidr, formatIpv4 } from "../../common/ipv4.js";
import type { CniPod } from "./cni.js";
import type { FaultContext } from "./faults.js";
import type { FaultRecord } from "./types.js";
import { within } from "./wait.js";

const JOIN_BACKENDS = ["vxlan", "ebpf", "tun"] as const;

/** The node that joins and leaves, while it is in the cluster. */
export interface Joiner {
  readonly node: number;
  readonly pod: CniPod;
}

/**
 * Node churn, alternating: a new node joins (a fresh namespace and state,
 * a backend drawn by the schedule), gets a lease and a CNI pod that must
 * reach a long-lived pod on every other node and be reached from them
 * within 10 s; next time it leaves (its pod deleted, its agent stopped, its
 * lease revoked) and every other node must drop it from its peers within 5 s.
 */
export async function nodeChurn(x: FaultContext, f: FaultRecord): Promise<void> {
  const c = x.c;
  const j = x.joiner;
  if (!j) {
    const i = c.nodes.length;
    const backend = x.rng.pick(JOIN_BACKENDS);
    f.detail = `node ${i} (${backend}) joins`;
    await c.addNode(i);
    c.startAgent(i, ["--backend", backend]);
    const st = await c.waitReady(i, 30_000);
    f.observed = st.subnet !== undefined;
    const pod = await x.cni.add(c, i, `j${x.seq++}`);
    x.joiner = { node: i, pod };
    x.extraNodes.add(i);
    // Pods of the nodes no other fault takes away (a killed tun agent carries nothing); not one taken away meanwhile.
    const calm = new Set(x.calm(f));
    const since = x.at();
    await Promise.all([...x.anchors.values()].filter((a) => calm.has(a.node)).flatMap((a) => [[pod, a], [a, pod]] as const).map(async ([from, to]) => {
      const ok = await within(10_000, () => from.ns.exec(["ping", "-n", "-c", "1", "-W", "1", formatIpv4(to.addr)]).then(() => true, () => false));
      const other = from === pod ? to.node : from.node;
      if (!ok && !x.disturbed(other, f, since)) x.violation("reachability", `${formatIpv4(from.addr)} (node ${from.node}) -> ${formatIpv4(to.addr)} (node ${to.node}): no reply within 10 s of node ${i} joining`);
    }));
    return;
  }
  const i = j.node;
  const subnet = c.node(i).subnet;
  f.detail = `node ${i} (${subnet ? formatCidr(subnet) : "?"}) leaves`;
  await x.cni.del(c, j.pod).catch((e: unknown) => x.violation("leftovers", `node ${i} leaving: ${(e as Error).message}`));
  x.extraNodes.delete(i);
  x.joiner = undefined;
  await c.stopAgent(i, "SIGTERM");
  if (!subnet) throw new Error(`node ${i} has no subnet recorded`);
  const key = formatCidr(subnet).replace("/", "-");
  const reg = c.registry();
  try {
    const lease = await reg.getLease(key);
    if (lease && lease.leaseId !== "0") await reg.revoke(lease.leaseId);
    else if (lease) await reg.deleteLease(lease);
    f.observed = (await reg.getLease(key)) === undefined;
  } finally {
    reg.close();
  }
  const gone = formatCidr(subnet);
  const since = x.at();
  await Promise.all(x.calm(f).map(async (k) => {
    const ok = await within(5000, async () => !(await c.status(k).catch(() => undefined))?.peers.some((p) => p.subnet === gone));
    if (!ok && !x.disturbed(k, f, since)) x.violation("leftovers", `node ${k} still has departed node ${i}'s subnet ${gone} as a peer 5 s after its lease was revoked`);
  }));
}
