import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatIpv4 } from "../../src/common/ipv4.js";
import { Cluster } from "../../src/harness/cluster.js";
import { PingProbe } from "../../src/harness/probe.js";
import { podman, PodmanDaemonSet } from "../../src/harness/podman.js";
import { addPod, publishPods, type CniNode } from "./cni-runtime.js";
import { addFlannelPod, FLANNEL_SUBNET, programFlannelNode } from "./flannel.js";
import { ensureImage, MANIFEST } from "./image.js";
import { probeTimes } from "./probes.js";

/**
 * The DaemonSet of deploy/kubernetes/weft-agent.yaml run from the image, one
 * node per backend, as a kubelet would run it (src/harness/podman.ts): the
 * install-cni init container first, then the agent, host network = the
 * node's namespace. A fourth node is programmed by hand as flanneld programs
 * it. Pods come from the plugin the init container installed (exec'd by
 * cni-runtime.ts, as a runtime does), and on the flannel node from Debian's
 * bridge + host-local.
 */
const BACKENDS = ["ebpf", "vxlan", "tun"] as const;
let c: Cluster;
let ds: PodmanDaemonSet;
let imageId: string;

function cniNode(i: number): CniNode {
  return { confDir: ds.hostPath(c, i, "/etc/cni/net.d"), binDir: ds.hostPath(c, i, "/opt/cni/bin"), runDir: ds.hostPath(c, i, "/run/weft"), nodeNs: c.node(i).ns.name };
}

beforeAll(async () => {
  const image = ensureImage();
  imageId = image;
  ds = new PodmanDaemonSet({
    manifest: MANIFEST, daemonSet: "weft-agent", image,
    // As an operator fills in weft-config: the etcd endpoint, per node pool a backend; the nodes' underlay is
    // eth0 (they have no default route); no DNS upstream: tests send no query out of their namespaces.
    config: (cl, i) => ({ "weft-config": { "etcd-endpoints": cl.etcd.endpoint, backend: BACKENDS[i] ?? "auto", iface: "eth0", "dns-upstream": "none" } }),
  });
  c = await Cluster.create({ nodes: 4, podsPerNode: 0, manualNodes: [3], agentLauncher: ds });
  await programFlannelNode(c, 3);
  // Every weft node programs the flannel node's lease.
  const end = Date.now() + 10_000;
  while ((await Promise.all([0, 1, 2].map(async (i) => (await c.status(i)).peers.length))).some((n) => n < 3)) {
    if (Date.now() > end) throw new Error("the weft nodes did not program the flannel node's lease within 10 s");
    await new Promise((r) => setTimeout(r, 100));
  }
}, 900_000);
afterAll(async () => {
  await c?.destroy();
  // destroy() removed the containers it started (label dev.weft.test=<tag>).
  if (c) expect((await podman(["ps", "-aq", "--filter", `label=dev.weft.test=${c.tag}`])).stdout.trim()).toBe("");
});

describe("the DaemonSet from the image, one node per backend, and a flannel node", () => {
  it("install-cni put the plugins and the conflist into each node's directories; each agent runs the image with the manifest's capabilities", async () => {
    for (const [i, backend] of BACKENDS.entries()) {
      const n = cniNode(i);
      for (const bin of ["weft", "weft-ipam"]) expect(existsSync(join(n.binDir, bin)), `${n.binDir}/${bin}`).toBe(true);
      const list = JSON.parse(readFileSync(join(n.confDir, "10-weft.conflist"), "utf8")) as { plugins: { type: string; controlSocket: string }[] };
      expect(list.plugins[0]).toMatchObject({ type: "weft", controlSocket: "/run/weft/agent.sock" });
      expect((await c.status(i)).backend).toBe(backend);
      const info = JSON.parse((await podman(["inspect", ds.name(c, i)])).stdout) as { Image: string; EffectiveCaps: string[]; HostConfig: { ReadonlyRootfs: boolean } }[];
      expect(info[0]?.Image).toBe(imageId);
      expect(info[0]?.EffectiveCaps.sort()).toEqual(["CAP_BPF", "CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_PERFMON", "CAP_SYS_ADMIN"]);
      expect(info[0]?.HostConfig.ReadonlyRootfs).toBe(true);
    }
  });

  it("pods attached through the installed plugin ping every other pod, the flannel node's included", async () => {
    for (const i of [0, 1, 2]) {
      for (const j of [0, 1]) await addPod(c, cniNode(i), i, `p${j}`);
    }
    for (const j of [0, 1]) await addFlannelPod(c, 3, `p${j}`);
    expect(c.pods.filter((p) => p.node === 3).every((p) => formatIpv4(p.addr).startsWith(FLANNEL_SUBNET.slice(0, 11)))).toBe(true);
    expect(c.pods).toHaveLength(8);
    expect(await c.pingAll()).toEqual([]);
    // The ebpf node's plugin registered its pods in the endpoint map.
    expect((await c.status(0)).counters["endpoints"]).toBe(2);
    // The agent is PID 1 with no init: every process it started (ip, bridge, nft, nsenter) was reaped.
    for (const i of [0, 1, 2]) {
      const top = (await podman(["top", ds.name(c, i), "pid", "state", "comm"])).stdout;
      expect(top).toMatch(/^\s*1\s+\S+\s+node/m);
      expect(top.split("\n").slice(1).filter((l) => /^\s*\d+\s+Z/.test(l)), top).toEqual([]);
    }
  });

  it("pods on every weft node resolve every pod by name through their node's DNS", async () => {
    expect(c.pods, "the pods of the test above").toHaveLength(8);
    await publishPods(c);
    for (const from of c.pods.filter((p) => p.node < 3)) {
      for (const [k, p] of c.pods.entries()) {
        const dig = (): Promise<string> => from.ns.exec(["dig", "@169.254.20.10", "+short", "+time=2", "+tries=1", `pod-${k}.pods.default.svc.cluster.local`], { timeoutMs: 10_000 });
        await expect.poll(async () => (await dig()).trim(), { timeout: 5000 }).toBe(formatIpv4(p.addr));
      }
    }
  });

  it.each([[0, "ebpf"], [1, "vxlan"]])("podman restart of node %i's agent (%s) loses no ping between its pods and another node's", async (i, _b) => {
    const from = c.node(i).pods[0]!;
    const to = c.node((i + 1) % 3).pods[1]!;
    const probe = await PingProbe.start(from.ns, to.addr, { intervalSec: 0.01, deadlineSec: 60 });
    try {
      const w = await probe.across(async () => {
        c.node(i).agent = undefined; // the attached `podman run` ends with the first run; readiness is read from the socket
        const r = await podman(["restart", ds.name(c, i)]);
        expect(r.status, r.stderr).toBe(0);
      }, async () => {
        await c.waitReady(i);
      });
      // The window runs from before `podman restart` (old agent stopping) to the new agent's ready: ~0.8 s here.
      expect(w.sent, JSON.stringify(w)).toBeGreaterThan(20);
      expect(w.lost, `${JSON.stringify(w)}\n${probe.output.slice(-400)}`).toEqual([]);
    } finally {
      await probe.stop();
    }
    expect(await ds.logs(c, i)).toMatch(/"signal":"SIGTERM".*stopping; the data path stays in place[\s\S]*agent ready/);
  });

  it("podman restart of the tun node's agent: its pods' traffic resumes within 3 s of the new agent's start", async () => {
    const from = c.node(2).pods[0]!;
    const to = c.node(0).pods[0]!;
    const probe = await PingProbe.start(from.ns, to.addr, { intervalSec: 0.01, deadlineSec: 60 });
    try {
      const w = await probe.across(async () => {
        c.node(2).agent = undefined;
        expect((await podman(["restart", ds.name(c, 2)])).status).toBe(0);
      }, async () => {
        await c.waitReady(2);
      }, { resumeMs: 3000 });
      expect(w.sent, JSON.stringify(w)).toBeGreaterThan(20);
      console.log(`tun node restart: ${w.lost.length} of ${w.sent} pings lost in the window (${w.seconds.toFixed(2)} s)`);
    } finally {
      await probe.stop();
    }
    expect(await c.pingAll()).toEqual([]);
  });

  it("podman stop sends SIGTERM: the agent exits 0 within the grace period, leaves device, lease and traffic in place, and a start adopts them", async () => {
    const i = 1;
    const name = ds.name(c, i);
    c.node(i).agent = undefined;
    const t0 = Date.now();
    const r = await podman(["stop", name]);
    expect(r.status, r.stderr).toBe(0);
    const took = Date.now() - t0;
    const state = JSON.parse((await podman(["inspect", "--format", "{{json .State}}", name])).stdout) as { ExitCode: number; Status: string };
    expect(state).toMatchObject({ Status: "exited", ExitCode: 0 });
    expect(took, "stopped before the grace period (10 s), not killed").toBeLessThan(5000);
    expect(await ds.logs(c, i)).toMatch(/"signal":"SIGTERM".*stopping; the data path stays in place/);
    // The data path stays: device and lease, and traffic across the stopped node.
    await c.node(i).ns.ip("link", "show", "dev", "weft.1");
    const subnet = (await c.status(0)).peers.find((p) => p.publicIp === formatIpv4(c.node(i).underlay))?.subnet;
    expect(subnet).toBeDefined();
    expect(await c.ping(c.node(i).pods[0]!, c.node(0).pods[0]!.addr)).toBe(true);
    // Started again: ready, same subnet; and the probes' timings hold (startup and readiness).
    const times = await probeTimes(c, i, async () => {
      expect((await podman(["start", name])).status).toBe(0);
    });
    const st = await c.waitReady(i);
    expect(st.subnet).toBe(subnet);
    console.log(`node ${i} (vxlan) from podman start: /healthz ${times.healthzMs} ms, /readyz ${times.readyzMs} ms`);
    const pod = ds.pod(i);
    const agent = pod.containers[0]!;
    const startup = agent.startupProbe!;
    expect(times.healthzMs).toBeLessThan(((startup.periodSeconds ?? 10) * (startup.failureThreshold ?? 3) * 1000) / 4);
    expect(await c.pingAll()).toEqual([]);
  });
});
