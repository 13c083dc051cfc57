import { execFile, type ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { IDaemonSet } from "kubernetes-models/apps/v1/DaemonSet";
import type { IConfigMap } from "kubernetes-models/v1/ConfigMap";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IPodSpec } from "kubernetes-models/v1/PodSpec";
import { formatIpv4 } from "../common/ipv4.js";
import { run, start } from "../common/exec.js";
import type { AgentLauncher, Cluster } from "./cluster.js";
import { daemonSetPod, findObject, podmanRunArgs, PodSpecError, readManifest, type KubeObject, type NodeView } from "./pod-spec.js";

/** Label on every container this starts: the cluster's tag, so destroy() removes exactly its own. */
export const TEST_LABEL = "dev.weft.test";

/**
 * Flags this machine needs on every `podman run`: runc (crun refuses this
 * host's hybrid cgroups) and ulimits below the host's own (podman's defaults
 * are refused here; nproc above 32768 was refused too).
 */
export function machineArgs(): string[] {
  const limits = readFileSync("/proc/self/limits", "utf8");
  const hard = (name: string, cap: number): number => {
    const m = new RegExp(`^${name}\\s+\\S+\\s+(\\S+)`, "m").exec(limits);
    const v = m?.[1] === "unlimited" ? cap : Number(m?.[1] ?? cap);
    return Math.min(Number.isFinite(v) ? v : cap, cap);
  };
  const nofile = hard("Max open files", 1 << 20);
  const nproc = hard("Max processes", 16384);
  return ["--runtime", "runc", "--ulimit", `nofile=${nofile}:${nofile}`, "--ulimit", `nproc=${nproc}:${nproc}`];
}

export interface DaemonSetOptions {
  /** The manifest file and the DaemonSet in it. */
  readonly manifest: string;
  readonly daemonSet: string;
  /** Keys set on the manifest's ConfigMaps for node i (as an operator edits them before applying). */
  readonly config?: (c: Cluster, i: number) => Record<string, Record<string, string>>;
  /** Secrets of node i, as an operator creates them (kubectl create secret). */
  readonly secrets?: (c: Cluster, i: number) => Record<string, Record<string, string>>;
  /** A change to node i's pod spec (a copy): tests of bad deployments. */
  readonly mutate?: (pod: IPodSpec, i: number) => void;
  /** The image to run in place of the manifest's (an image ID, so that a test runs exactly what it built). */
  readonly image?: string;
  /** Where node i's host path is on this machine, where the default below does not fit. */
  readonly hostPath?: (c: Cluster, i: number, path: string) => string | undefined;
}

/**
 * Runs a manifest's DaemonSet on the nodes of a netns cluster with podman:
 * per node, the pod's init containers in order (each must exit 0), then its
 * containers, host network = the node's namespace. The node's filesystem is a
 * directory per node, laid so that the cluster finds the agent's files where
 * it looks (`cluster.files(i)`): /run/weft is the node's directory,
 * /var/lib/weft its state dir, /sys/fs/bpf its bpffs; /run/netns (pod
 * namespaces) and /dev/net/tun are this machine's; any other path is under
 * <node dir>/host.
 */
export class PodmanDaemonSet implements AgentLauncher {
  readonly objects: KubeObject[];
  constructor(readonly opts: DaemonSetOptions) {
    this.objects = readManifest(opts.manifest);
    findObject<IDaemonSet>(this.objects, "DaemonSet", opts.daemonSet);
  }

  /** Node i's pod spec (a fresh copy, with `mutate` applied). */
  pod(i: number): IPodSpec {
    const ds = structuredClone(findObject<IDaemonSet>(this.objects, "DaemonSet", this.opts.daemonSet));
    const pod = daemonSetPod(ds);
    this.opts.mutate?.(pod, i);
    return pod;
  }

  /** The container name of node i's `container` (wft<tag>-n<i>-<container>: swept with the namespaces' prefix). */
  name(c: Cluster, i: number, container = "agent"): string {
    return `wft${c.tag}-n${i}-${container}`;
  }

  /** Where node i's path `p` is on this machine. */
  hostPath(c: Cluster, i: number, p: string): string {
    const custom = this.opts.hostPath?.(c, i, p);
    if (custom !== undefined) return custom;
    const f = c.files(i);
    const fixed: Record<string, string> = {
      "/run/weft": c.node(i).dir, "/var/lib/weft": f.stateDir, "/sys/fs/bpf": f.bpffs,
      "/run/netns": "/run/netns", "/var/run/netns": "/run/netns", "/dev/net/tun": "/dev/net/tun",
    };
    return fixed[p] ?? join(c.node(i).dir, "host", p);
  }

  private view(c: Cluster, i: number): NodeView {
    const configMaps: Record<string, Record<string, string>> = {};
    for (const o of this.objects.filter((x) => x.kind === "ConfigMap") as unknown as IConfigMap[]) {
      configMaps[o.metadata?.name ?? ""] = { ...(o.data ?? {}) };
    }
    for (const [name, data] of Object.entries(this.opts.config?.(c, i) ?? {})) configMaps[name] = { ...(configMaps[name] ?? {}), ...data };
    const n = c.node(i);
    mkdirSync(c.files(i).bpffs, { recursive: true });
    return {
      nodeName: `n${i}`, hostIP: formatIpv4(n.underlay), netnsPath: `/run/netns/${n.ns.name}`,
      hostPath: (p) => this.hostPath(c, i, p), configMaps, secrets: this.opts.secrets?.(c, i) ?? {}, volumeDir: join(n.dir, "volumes"),
    };
  }

  /** The `podman run` argv of node i's `container` (init or main). */
  runArgs(c: Cluster, i: number, container: string, extra: readonly string[] = []): string[] {
    const pod = this.pod(i);
    const spec: IContainer | undefined = [...(pod.initContainers ?? []), ...pod.containers].find((x) => x.name === container);
    if (!spec) throw new PodSpecError(`the DaemonSet ${this.opts.daemonSet} has no container ${container}`);
    return podmanRunArgs(pod, spec, this.view(c, i), {
      name: this.name(c, i, container), labels: { [TEST_LABEL]: c.tag }, podName: `${this.opts.daemonSet}-n${i}`, podNamespace: "kube-system",
      podmanArgs: machineArgs(), extraArgs: extra, ...(this.opts.image ? { image: this.opts.image } : {}),
    });
  }

  /** Runs node i's init containers in order; each must exit 0 (its output is in the error otherwise). */
  async prepare(c: Cluster, i: number): Promise<void> {
    for (const init of this.pod(i).initContainers ?? []) {
      const argv = this.runArgs(c, i, init.name);
      await run([...argv.slice(0, 2), "--rm", ...argv.slice(2)], { timeoutMs: 120_000 }).catch((e: Error) => {
        throw new PodSpecError(`node ${i}: init container ${init.name} failed: ${e.message}`);
      });
    }
  }

  /** Starts node i's main container (the first of the pod), attached: the child exits with the container. */
  start(c: Cluster, i: number, extra: readonly string[]): ChildProcess {
    const main = this.pod(i).containers[0];
    if (!main) throw new PodSpecError(`the DaemonSet ${this.opts.daemonSet} has no container`);
    return start(this.runArgs(c, i, main.name, extra));
  }

  /** Removes every container this started for the cluster. */
  async destroy(c: Cluster): Promise<void> {
    const ids = (await run(["podman", "ps", "-aq", "--filter", `label=${TEST_LABEL}=${c.tag}`])).split("\n").filter(Boolean);
    if (ids.length > 0) await run(["podman", "rm", "-f", "--time", "0", ...ids], { timeoutMs: 60_000 });
  }

  /** `podman logs` of node i's container. */
  async logs(c: Cluster, i: number, container = "agent"): Promise<string> {
    const out = await podman(["logs", this.name(c, i, container)]);
    return out.stdout + out.stderr;
  }
}

/** A podman command's status, stdout and stderr (both kept: `podman logs` gives the container's stderr on its own), without throwing. */
export function podman(args: readonly string[], timeoutMs = 60_000): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile("podman", args, { encoding: "utf8", timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = (err as { code?: unknown } | null)?.code;
      resolve({ status: err ? (typeof code === "number" ? code : -1) : 0, stdout, stderr: stderr || (err && typeof code !== "number" ? err.message : "") });
    });
  });
}

/** Removes containers left by runs that were killed (names start with wft, as the namespaces'). */
export async function sweepContainers(): Promise<string[]> {
  const out = await podman(["ps", "-a", "--filter", `label=${TEST_LABEL}`, "--format", "{{.Names}}"]);
  const names = out.stdout.split("\n").filter((n) => n.startsWith("wft"));
  if (names.length > 0) await podman(["rm", "-f", "--time", "0", ...names]);
  return names;
}
