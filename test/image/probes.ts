import { once } from "node:events";
import type { Cluster } from "../../src/harness/cluster.js";

/** Polls /healthz and /readyz from inside the node every 50 ms; prints the epoch ms of each one's first 200. */
const POLLER = `
const want = new Map([["/healthz", 0], ["/readyz", 0]]);
const end = Date.now() + Number(process.argv[1]);
const tick = async () => {
  for (const [p, t] of want) {
    if (t) continue;
    try { if ((await fetch("http://127.0.0.1:9099" + p, { signal: AbortSignal.timeout(1000) })).status === 200) want.set(p, Date.now()); } catch {}
  }
  if ([...want.values()].every(Boolean) || Date.now() > end) { console.log(JSON.stringify(Object.fromEntries(want))); return; }
  setTimeout(tick, 50);
};
tick();`;

/**
 * How long after `start` (e.g. podman start) node i's /healthz and /readyz
 * first answer 200, as the kubelet's probes would see them (its HTTP probes
 * run in the node's network namespace, where the agent listens).
 */
export async function probeTimes(c: Cluster, i: number, start: () => Promise<void>, timeoutMs = 60_000): Promise<{ healthzMs: number; readyzMs: number }> {
  // The agent is stopped: nothing answers until the new one does.
  const p = c.node(i).ns.spawn([process.execPath, "-e", POLLER, String(timeoutMs)]);
  let out = "";
  p.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  const t0 = Date.now();
  await start();
  await once(p, "exit");
  const r = JSON.parse(out) as Record<string, number>;
  const healthz = r["/healthz"] ?? 0;
  const readyz = r["/readyz"] ?? 0;
  if (!healthz || !readyz) throw new Error(`node ${i}: /healthz ${healthz ? "answered" : "never answered"}, /readyz ${readyz ? "answered" : "never answered"} within ${timeoutMs} ms`);
  return { healthzMs: healthz - t0, readyzMs: readyz - t0 };
}
