import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatIpv4 } from "../../src/common/ipv4.js";
import { start } from "../../src/common/exec.js";
import { Cluster } from "../../src/harness/cluster.js";
import { podman, PodmanDaemonSet } from "../../src/harness/podman.js";
import { quantityBytes, quantityCores } from "../../src/harness/pod-spec.js";
import { addPod, publishPods, type CniNode } from "./cni-runtime.js";
import { ensureImage, MANIFEST } from "./image.js";
import { probeTimes } from "./probes.js";

/**
 * What the agents use, measured from the image as the DaemonSet runs them
 * (one per backend): resident memory and CPU idle and under load (DNS
 * queries at 5,000/s from a pod, then iperf3 across nodes), and the time from
 * `podman start` to /healthz and /readyz. The DaemonSet's requests, limits and
 * probe timings are taken from these figures (bench/RESULTS.md, "Image"); the
 * test fails when the manifest no longer covers what was measured.
 */
const BACKENDS = ["ebpf", "vxlan", "tun"] as const;
let c: Cluster;
let ds: PodmanDaemonSet;
const table: string[] = [];

beforeAll(async () => {
  const image = ensureImage();
  ds = new PodmanDaemonSet({
    manifest: MANIFEST, daemonSet: "weft-agent", image,
    config: (cl, i) => ({ "weft-config": { "etcd-endpoints": cl.etcd.endpoint, backend: BACKENDS[i] ?? "auto", iface: "eth0", "dns-upstream": "none" } }),
  });
  c = await Cluster.create({ nodes: 3, podsPerNode: 0, agentLauncher: ds });
  for (const i of [0, 1, 2]) {
    const n: CniNode = { confDir: ds.hostPath(c, i, "/etc/cni/net.d"), binDir: ds.hostPath(c, i, "/opt/cni/bin"), runDir: ds.hostPath(c, i, "/run/weft"), nodeNs: c.node(i).ns.name };
    for (const j of [0, 1]) await addPod(c, n, i, `p${j}`);
  }
  await publishPods(c);
}, 900_000);
afterAll(async () => {
  if (table.length > 0) console.log(["resources of the agent containers (measured):", ...table].join("\n"));
  await c?.destroy();
});

/** The agent's host pid (the container's PID 1). */
async function pid(i: number): Promise<number> {
  return Number((await podman(["inspect", "--format", "{{.State.Pid}}", ds.name(c, i)])).stdout.trim());
}

/** Resident memory (VmRSS, and the peak VmHWM) in MiB, and CPU time in seconds, of node i's agent. */
async function usage(i: number): Promise<{ rss: number; hwm: number; cpu: number }> {
  const p = await pid(i);
  const status = readFileSync(`/proc/${p}/status`, "utf8");
  const kib = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN) / 1024;
  const stat = readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1]!.split(" ");
  return { rss: kib("VmRSS"), hwm: kib("VmHWM"), cpu: (Number(stat[11]) + Number(stat[12])) / 100 };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("the agent's resources, per backend", () => {
  const idle: Record<number, { rss: number; mcores: number }> = {};
  const peak: Record<number, number> = {};

  it("idle: resident memory and CPU over 10 s", async () => {
    await sleep(2000);
    const a = await Promise.all([0, 1, 2].map(usage));
    await sleep(10_000);
    const b = await Promise.all([0, 1, 2].map(usage));
    for (const i of [0, 1, 2]) {
      idle[i] = { rss: b[i]!.rss, mcores: ((b[i]!.cpu - a[i]!.cpu) / 10) * 1000 };
      table.push(`  ${BACKENDS[i]}: idle RSS ${b[i]!.rss.toFixed(1)} MiB, CPU ${idle[i]!.mcores.toFixed(1)} mcores`);
    }
  }, 60_000);

  it("under load: 5,000 DNS queries/s for 5 s from a pod, then iperf3 across nodes for 3 s", async () => {
    const names = c.pods.map((_p, k) => `pod-${k}.pods.default.svc.cluster.local A`).concat(["nothere.default.svc.cluster.local A", "pods.default.svc.cluster.local SRV"]);
    const file = join(c.dir, "queries.txt");
    writeFileSync(file, `${names.join("\n")}\n`);
    for (const i of [0, 1, 2]) {
      const pod = c.node(i).pods[0]!;
      const before = await usage(i);
      const out = await pod.ns.exec(["dnsperf", "-s", "169.254.20.10", "-d", file, "-l", "5", "-Q", "5000", "-c", "4"], { timeoutMs: 30_000 });
      const after = await usage(i);
      const qps = /Queries per second:\s+([\d.]+)/.exec(out)?.[1];
      expect(Number(qps), out).toBeGreaterThan(4000);
      table.push(`  ${BACKENDS[i]}: DNS ${Number(qps).toFixed(0)} q/s: CPU ${(((after.cpu - before.cpu) / 5) * 1000).toFixed(0)} mcores, RSS ${after.rss.toFixed(1)} MiB`);
      // iperf3 from this node's pod to the next node's pod (the tun node moves these packets in userspace).
      const dst = c.node((i + 1) % 3).pods[1]!;
      const srv = start(["ip", "netns", "exec", dst.ns.name, "iperf3", "-s", "-1"]);
      try {
        await sleep(300);
        const b0 = await usage(i);
        await pod.ns.exec(["iperf3", "-c", formatIpv4(dst.addr), "-t", "3", "-J"], { timeoutMs: 30_000 });
        const b1 = await usage(i);
        table.push(`  ${BACKENDS[i]}: iperf3 to node ${(i + 1) % 3}: CPU ${(((b1.cpu - b0.cpu) / 3) * 1000).toFixed(0)} mcores, RSS ${b1.rss.toFixed(1)} MiB, peak ${b1.hwm.toFixed(1)} MiB`);
        peak[i] = b1.hwm;
      } finally {
        srv.kill();
      }
    }
  }, 120_000);

  it("the DaemonSet's requests and limits cover what was measured", () => {
    const agent = ds.pod(0).containers[0]!;
    const limit = quantityBytes(agent.resources!.limits!["memory"]!) / 2 ** 20;
    const request = quantityBytes(agent.resources!.requests!["memory"]!) / 2 ** 20;
    const cpu = quantityCores(agent.resources!.requests!["cpu"]!) * 1000;
    for (const i of [0, 1, 2]) {
      // Headroom for the DNS cache and answers (bounded at 32 + 16 MiB by default) on top of the peak seen here.
      expect(peak[i]! + 48, `${BACKENDS[i]} peak ${peak[i]} MiB + caches`).toBeLessThan(limit);
      expect(idle[i]!.rss, `${BACKENDS[i]} idle RSS`).toBeLessThan(request);
      expect(idle[i]!.mcores, `${BACKENDS[i]} idle CPU`).toBeLessThan(cpu);
    }
  });

  it("the probes' timings cover the measured start: /healthz and /readyz after podman start", async () => {
    const agent = ds.pod(0).containers[0]!;
    const startup = agent.startupProbe!;
    const budget = (startup.periodSeconds ?? 10) * (startup.failureThreshold ?? 3) * 1000;
    for (const i of [0, 1, 2]) {
      c.node(i).agent = undefined;
      expect((await podman(["stop", ds.name(c, i)])).status).toBe(0);
      const t = await probeTimes(c, i, async () => {
        expect((await podman(["start", ds.name(c, i)])).status).toBe(0);
      });
      table.push(`  ${BACKENDS[i]}: from podman start: /healthz ${t.healthzMs} ms, /readyz ${t.readyzMs} ms`);
      // Ten times the measured start still passes the startup probe before liveness applies.
      expect(t.healthzMs * 10, `${BACKENDS[i]} /healthz after ${t.healthzMs} ms`).toBeLessThan(budget);
      expect(t.readyzMs, `${BACKENDS[i]} /readyz`).toBeLessThan(budget);
    }
  }, 120_000);
});
