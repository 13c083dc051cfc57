import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Cluster } from "../../src/harness/cluster.js";
import { podman, PodmanDaemonSet } from "../../src/harness/podman.js";
import { ensureImage, MANIFEST } from "./image.js";

/**
 * Deployments that cannot work, run from the image as the DaemonSet runs:
 * each must say in the container log what is wrong (what `kubectl logs`
 * shows an operator). Node 0: the ebpf backend without a bpffs at
 * /sys/fs/bpf; node 1: /run/weft mounted read-only; node 2: etcd unreachable.
 */
let c: Cluster;
let ds: PodmanDaemonSet;

beforeAll(async () => {
  const image = ensureImage();
  ds = new PodmanDaemonSet({
    manifest: MANIFEST, daemonSet: "weft-agent", image,
    config: (cl, i) => ({
      "weft-config": {
        // Node 2: a port on the hub where nothing listens.
        "etcd-endpoints": i === 2 ? "http://192.0.2.254:2399" : cl.etcd.endpoint,
        backend: i === 0 ? "ebpf" : "vxlan", iface: "eth0", "dns-upstream": "none",
      },
    }),
    // Node 0: a plain directory where the host's bpffs should be.
    hostPath: (cl, i, p) => {
      if (i !== 0 || p !== "/sys/fs/bpf") return undefined;
      const d = join(cl.node(0).dir, "not-bpffs");
      mkdirSync(d, { recursive: true });
      return d;
    },
    // Node 1: the run directory read-only.
    mutate: (pod, i) => {
      if (i !== 1) return;
      const m = pod.containers[0]?.volumeMounts?.find((v) => v.name === "run");
      if (m) m.readOnly = true;
    },
  });
  c = await Cluster.create({ nodes: 3, podsPerNode: 0, manualNodes: [0, 1, 2], agentLauncher: ds });
}, 900_000);
afterAll(async () => {
  await c?.destroy();
});

/**
 * Starts node i's pod; resolves when the agent exits, its log matches `until`, or after `ms`, with the
 * agent's exit code (undefined while it runs) and its log.
 */
async function run(i: number, ms: number, until?: RegExp): Promise<{ exit: number | undefined; log: string }> {
  await ds.prepare(c, i);
  const child = c.startAgent(i);
  let exited = false;
  child.once("exit", () => (exited = true));
  const end = Date.now() + ms;
  while (!exited && Date.now() < end && !(until && until.test(await ds.logs(c, i)))) await new Promise((r) => setTimeout(r, 200));
  const state = JSON.parse((await podman(["inspect", "--format", "{{json .State}}", ds.name(c, i)])).stdout) as { ExitCode: number; Running: boolean };
  return { exit: state.Running ? undefined : state.ExitCode, log: await ds.logs(c, i) };
}

/** GET from inside node i's namespace (where the kubelet's probes run for a host-network pod). */
async function get(i: number, path: string): Promise<string> {
  return c.node(i).ns.exec([process.execPath, "-e", `fetch("http://127.0.0.1:9099${path}").then(async (r) => console.log(r.status, await r.text()))`]);
}

describe("bad deployments say what is wrong in the container log", () => {
  it("ebpf without a bpffs at /sys/fs/bpf: the agent exits 1, naming the path and that it is not a bpffs", async () => {
    const r = await run(0, 30_000);
    expect(r.exit, r.log).toBe(1);
    expect(r.log).toContain("weft: --backend ebpf cannot run here: /sys/fs/bpf is not a bpffs (mount one, or pass --bpffs)");
  });

  it("/run/weft read-only: the log names the socket it could not create and why", async () => {
    const r = await run(1, 10_000, /EROFS/);
    // Today: "unexpected error: Error: listen EROFS: read-only file system /run/weft/agent.sock" and a stack.
    expect(r.log).toMatch(/\/run\/weft\/agent\.sock.*EROFS|EROFS.*\/run\/weft\/agent\.sock/);
  });

  // Fails today: the agent prints the error but keeps running (its health server holds the event loop),
  // so /healthz stays 200 and the kubelet never restarts it. Needs the change in src/cli/commands/agent.ts
  // described in the image work's report; then turn this into it().
  it("/run/weft read-only: the agent exits non-zero", async () => {
    await new Promise((r) => setTimeout(r, 2000)); // time to exit
    const state = JSON.parse((await podman(["inspect", "--format", "{{json .State}}", ds.name(c, 1)])).stdout) as { ExitCode: number; Running: boolean };
    expect(state.Running).toBe(false);
    expect(state.ExitCode).not.toBe(0);
  });

  it("etcd unreachable: the agent keeps running, not ready, saying which endpoint fails and why", async () => {
    const r = await run(2, 10_000, /"attempts":4/); // ~3 s of waiting
    expect(r.exit, r.log).toBeUndefined();
    expect(r.log).toMatch(/"waitingFor":"etcd".*http:\/\/192\.0\.2\.254:2399: connection refused \(nothing listens on that port\).*"msg":"waiting for etcd"/);
    expect(await get(2, "/healthz")).toMatch(/^200 ok/);
    const ready = await get(2, "/readyz");
    expect(ready).toMatch(/^503 /);
    expect(JSON.parse(ready.slice(4))).toMatchObject({ ready: false, etcd: false });
  });
});
