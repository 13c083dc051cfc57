import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { IDaemonSet } from "kubernetes-models/apps/v1/DaemonSet";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IEnvVar } from "kubernetes-models/v1/EnvVar";
import type { IPodSpec } from "kubernetes-models/v1/PodSpec";
import type { IVolume } from "kubernetes-models/v1/Volume";
import { parseAllDocuments } from "yaml";

/**
 * Kubernetes pod specs run as `podman run` argv, for tests: the container
 * specs of a manifest (image, command and args, env with its ConfigMap,
 * Secret and field references, security context, resource limits, host
 * network and hostPath, Secret and ConfigMap volumes) turned into the podman
 * flags that give a container what the kubelet and a CRI runtime would give it.
 * A field this does not implement is refused with its name, never ignored,
 * unless it only matters to the scheduler or the kubelet's prober.
 */
export class PodSpecError extends Error {
  readonly code = "WEFT_POD_SPEC";
}

/** One object of a manifest file, as parsed. */
export interface KubeObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly namespace?: string };
  readonly [field: string]: unknown;
}

/** Every document of a YAML manifest file (empty documents skipped). */
export function readManifest(file: string): KubeObject[] {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  return docs.flatMap((d) => {
    if (d.errors.length > 0) throw new PodSpecError(`${file}: ${d.errors.map((e) => e.message).join("; ")}`);
    const o = d.toJS() as KubeObject | null;
    return o ? [o] : [];
  });
}

/** The object of `kind` named `name` in a manifest. */
export function findObject<T>(objects: readonly KubeObject[], kind: string, name: string): T {
  const o = objects.find((x) => x.kind === kind && x.metadata?.name === name);
  if (!o) throw new PodSpecError(`the manifest has no ${kind} ${name} (it has: ${objects.map((x) => `${x.kind} ${x.metadata?.name}`).join(", ")})`);
  return o as unknown as T;
}

/** The pod template of a DaemonSet. */
export function daemonSetPod(ds: IDaemonSet): IPodSpec {
  const pod = ds.spec?.template.spec;
  if (!pod) throw new PodSpecError(`DaemonSet ${ds.metadata?.name} has no spec.template.spec`);
  return pod;
}

/** What a node gives a pod. */
export interface NodeView {
  readonly nodeName: string;
  readonly hostIP: string;
  /** The node's network namespace (hostNetwork pods join it). */
  readonly netnsPath: string;
  /** Where a path of the node's filesystem is on this machine. */
  hostPath(path: string): string;
  /** ConfigMaps and Secrets by name, as an operator created them (string data). */
  readonly configMaps: Readonly<Record<string, Readonly<Record<string, string>>>>;
  readonly secrets: Readonly<Record<string, Readonly<Record<string, string>>>>;
  /** A directory for the files of Secret and ConfigMap volumes. */
  readonly volumeDir: string;
}

export interface RunSpec {
  /** Container name and labels (so that tests can find and remove what they started). */
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  /** Pod name and namespace (metadata.name / metadata.namespace field references). */
  readonly podName: string;
  readonly podNamespace: string;
  /** Flags for this machine (runtime, ulimits), before the image. */
  readonly podmanArgs: readonly string[];
  /** Flags appended to the container's args (tests only; empty for the manifest as written). */
  readonly extraArgs?: readonly string[];
  /** The image to run in place of the container's (an image ID: exactly what a test built). */
  readonly image?: string;
}

/**
 * containerd's default capabilities for a container that is not privileged
 * (CRI-O's set is smaller; a manifest that drops ALL, as weft's does, gets the
 * same set on both).
 */
export const RUNTIME_DEFAULT_CAPS = ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
  "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"] as const;

/** Pod fields that only the scheduler, the API server or the kubelet's prober read. */
const POD_IGNORED = new Set(["priorityClassName", "tolerations", "nodeSelector", "affinity", "serviceAccountName", "dnsPolicy",
  "automountServiceAccountToken", "terminationGracePeriodSeconds", "initContainers", "containers", "volumes", "hostNetwork", "securityContext"]);
const CONTAINER_HANDLED = new Set(["name", "image", "imagePullPolicy", "command", "args", "env", "envFrom", "securityContext", "resources",
  "volumeMounts", "workingDir", "ports", "livenessProbe", "readinessProbe", "startupProbe", "terminationMessagePath", "terminationMessagePolicy"]);

function refuse(what: string): never {
  throw new PodSpecError(`${what}: the test runner (src/harness/pod-spec.ts) does not implement it; implement it there, or leave it out of the manifest`);
}

/** The `podman run` argv for one container of a pod on a node (the container in the foreground; add -d to detach). */
export function podmanRunArgs(pod: IPodSpec, c: IContainer, node: NodeView, run: RunSpec): string[] {
  for (const k of Object.keys(pod)) if (!POD_IGNORED.has(k)) refuse(`pod field ${k}`);
  for (const k of Object.keys(c)) if (!CONTAINER_HANDLED.has(k)) refuse(`container ${c.name} field ${k}`);
  if (pod.hostNetwork !== true) refuse(`container ${c.name}: a pod without hostNetwork`);
  if (!c.image) throw new PodSpecError(`container ${c.name} has no image`);
  const argv = ["podman", "run", "--name", run.name, "--pull=never", "--network", `ns:${node.netnsPath}`, ...run.podmanArgs];
  for (const [k, v] of Object.entries(run.labels)) argv.push("--label", `${k}=${v}`);
  if (pod.terminationGracePeriodSeconds !== undefined) argv.push("--stop-timeout", String(pod.terminationGracePeriodSeconds));
  argv.push(...securityArgs(pod, c));
  argv.push(...resourceArgs(c));
  for (const [k, v] of Object.entries(envOf(c, node, run))) argv.push("--env", `${k}=${v}`);
  argv.push(...volumeArgs(pod, c, node));
  if (c.workingDir) argv.push("--workdir", c.workingDir);
  // command replaces the image's ENTRYPOINT, args its CMD (as the kubelet does).
  if (c.command) argv.push("--entrypoint", JSON.stringify(c.command));
  argv.push(run.image ?? c.image);
  if (c.args) argv.push(...c.args);
  argv.push(...(run.extraArgs ?? []));
  return argv;
}

function securityArgs(pod: IPodSpec, c: IContainer): string[] {
  const sc = c.securityContext ?? {};
  const out: string[] = [];
  for (const k of Object.keys(sc)) {
    if (!["privileged", "capabilities", "allowPrivilegeEscalation", "readOnlyRootFilesystem", "runAsUser", "runAsGroup", "seccompProfile"].includes(k)) {
      refuse(`container ${c.name} securityContext.${k}`);
    }
  }
  for (const k of Object.keys(pod.securityContext ?? {})) if (k !== "seccompProfile") refuse(`pod securityContext.${k}`);
  if (sc.privileged) {
    out.push("--privileged");
  } else {
    const drop = sc.capabilities?.drop ?? [];
    const caps = new Set<string>(drop.includes("ALL") ? [] : RUNTIME_DEFAULT_CAPS.filter((x) => !drop.includes(x)));
    for (const x of sc.capabilities?.add ?? []) caps.add(x.replace(/^CAP_/, ""));
    out.push("--cap-drop=all", ...[...caps].sort().map((x) => `--cap-add=${x}`));
  }
  if (sc.allowPrivilegeEscalation === false) out.push("--security-opt", "no-new-privileges");
  // Kubernetes mounts no tmpfs of its own over a read-only root.
  if (sc.readOnlyRootFilesystem) out.push("--read-only", "--read-only-tmpfs=false");
  if (sc.runAsUser !== undefined) out.push("--user", sc.runAsGroup !== undefined ? `${sc.runAsUser}:${sc.runAsGroup}` : String(sc.runAsUser));
  // The kubelet's default is Unconfined unless the pod asks for RuntimeDefault.
  const seccomp = sc.seccompProfile?.type ?? pod.securityContext?.seccompProfile?.type ?? "Unconfined";
  if (seccomp === "Unconfined") out.push("--security-opt", "seccomp=unconfined");
  else if (seccomp !== "RuntimeDefault") refuse(`container ${c.name} seccompProfile ${seccomp}`);
  return out;
}

/** A Kubernetes quantity in bytes (Ki, Mi, Gi, k, M, G, or plain). */
export function quantityBytes(q: string | number): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(q));
  if (!m) throw new PodSpecError(`memory quantity ${q} is not one the runner reads (e.g. 256Mi)`);
  const mult: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Math.round(Number(m[1]) * (m[2] ? (mult[m[2]] ?? 1) : 1));
}

/** A Kubernetes CPU quantity in cores (500m, 0.5, 1). */
export function quantityCores(q: string | number): number {
  const m = /^(\d+(?:\.\d+)?)(m)?$/.exec(String(q));
  if (!m) throw new PodSpecError(`cpu quantity ${q} is not one the runner reads (e.g. 500m)`);
  return Number(m[1]) / (m[2] ? 1000 : 1);
}

function resourceArgs(c: IContainer): string[] {
  const lim = c.resources?.limits ?? {};
  const out: string[] = [];
  for (const k of Object.keys(lim)) if (k !== "memory" && k !== "cpu") refuse(`container ${c.name} resources.limits.${k}`);
  if (lim["memory"] !== undefined) out.push("--memory", `${quantityBytes(lim["memory"])}b`, "--memory-swap", `${quantityBytes(lim["memory"])}b`);
  if (lim["cpu"] !== undefined) out.push("--cpus", String(quantityCores(lim["cpu"])));
  return out;
}

/** The container's environment as the kubelet resolves it: envFrom first, then env in order. */
export function envOf(c: IContainer, node: NodeView, run: Pick<RunSpec, "podName" | "podNamespace">): Record<string, string> {
  const env: Record<string, string> = {};
  const source = (kind: "ConfigMap" | "Secret", name: string): Readonly<Record<string, string>> | undefined =>
    (kind === "ConfigMap" ? node.configMaps : node.secrets)[name];
  for (const f of c.envFrom ?? []) {
    const ref = f.configMapRef ? { kind: "ConfigMap" as const, r: f.configMapRef } : f.secretRef ? { kind: "Secret" as const, r: f.secretRef } : undefined;
    if (!ref) refuse(`container ${c.name} envFrom without configMapRef or secretRef`);
    const data = source(ref.kind, ref.r.name ?? "");
    if (!data) {
      if (ref.r.optional) continue;
      throw new PodSpecError(`container ${c.name}: ${ref.kind} ${ref.r.name} not found (the kubelet would refuse to start it: CreateContainerConfigError)`);
    }
    for (const [k, v] of Object.entries(data)) env[`${f.prefix ?? ""}${k}`] = v;
  }
  for (const e of c.env ?? []) {
    const v = envValue(c, e, node, run, source);
    if (v !== undefined) env[e.name] = v;
  }
  return env;
}

function envValue(c: IContainer, e: IEnvVar, node: NodeView, run: Pick<RunSpec, "podName" | "podNamespace">,
  source: (kind: "ConfigMap" | "Secret", name: string) => Readonly<Record<string, string>> | undefined): string | undefined {
  if (e.value !== undefined) return e.value;
  const from = e.valueFrom;
  if (!from) return "";
  if (from.fieldRef) {
    const fields: Record<string, string> = {
      "status.hostIP": node.hostIP, "status.podIP": node.hostIP, "spec.nodeName": node.nodeName,
      "metadata.name": run.podName, "metadata.namespace": run.podNamespace,
    };
    const v = fields[from.fieldRef.fieldPath];
    if (v === undefined) refuse(`container ${c.name} env ${e.name}: fieldRef ${from.fieldRef.fieldPath}`);
    return v;
  }
  const ref = from.configMapKeyRef ? { kind: "ConfigMap" as const, r: from.configMapKeyRef } : from.secretKeyRef ? { kind: "Secret" as const, r: from.secretKeyRef } : undefined;
  if (!ref) refuse(`container ${c.name} env ${e.name}: valueFrom ${Object.keys(from).join(", ")}`);
  const v = source(ref.kind, ref.r.name ?? "")?.[ref.r.key];
  if (v === undefined && !ref.r.optional) {
    throw new PodSpecError(`container ${c.name} env ${e.name}: ${ref.kind} ${ref.r.name} has no key ${ref.r.key} (the kubelet would refuse to start it: CreateContainerConfigError)`);
  }
  return v;
}

function volumeArgs(pod: IPodSpec, c: IContainer, node: NodeView): string[] {
  const out: string[] = [];
  for (const m of c.volumeMounts ?? []) {
    for (const k of Object.keys(m)) if (!["name", "mountPath", "readOnly", "mountPropagation"].includes(k)) refuse(`container ${c.name} volumeMount ${m.name} ${k}`);
    const v = pod.volumes?.find((x) => x.name === m.name);
    if (!v) throw new PodSpecError(`container ${c.name} mounts volume ${m.name}, which the pod does not define`);
    const src = volumeSource(v, node);
    if (src.device) {
      out.push("--device", `${src.path}:${m.mountPath}`);
      continue;
    }
    // Kubernetes' default propagation is None (private); HostToContainer is rslave, Bidirectional rshared.
    const prop = { HostToContainer: "rslave", Bidirectional: "rshared", None: "rprivate" }[m.mountPropagation ?? "None"];
    if (!prop) refuse(`container ${c.name} volumeMount ${m.name} mountPropagation ${m.mountPropagation}`);
    out.push("--volume", `${src.path}:${m.mountPath}:${m.readOnly || src.readOnly ? "ro" : "rw"},${prop}`);
  }
  return out;
}

/** Where a volume is on this machine, checked as the kubelet checks a hostPath's type. */
function volumeSource(v: IVolume, node: NodeView): { path: string; device?: boolean; readOnly?: boolean } {
  if (v.hostPath) {
    const path = node.hostPath(v.hostPath.path);
    const type = v.hostPath.type ?? "";
    const st = existsSync(path) ? statSync(path) : undefined;
    const bad = (want: string): never => {
      throw new PodSpecError(`volume ${v.name}: hostPath ${v.hostPath?.path} (${path} here) is not a ${want} (type ${type}): the kubelet would not start the pod`);
    };
    if (type === "DirectoryOrCreate") {
      if (!st) mkdirSync(path, { recursive: true, mode: 0o755 });
      else if (!st.isDirectory()) bad("directory");
    } else if (type === "Directory") {
      if (!st?.isDirectory()) bad("directory");
    } else if (type === "File" || type === "FileOrCreate") {
      if (!st && type === "FileOrCreate") writeFileSync(path, "", { mode: 0o644 });
      else if (!st?.isFile()) bad("file");
    } else if (type === "Socket") {
      if (!st?.isSocket()) bad("socket");
    } else if (type === "CharDevice") {
      if (!st?.isCharacterDevice()) bad("character device");
      return { path, device: true };
    } else if (type !== "") {
      refuse(`volume ${v.name} hostPath type ${type}`);
    }
    return { path };
  }
  const ref = v.secret ? { kind: "Secret" as const, name: v.secret.secretName ?? "", items: v.secret.items, optional: v.secret.optional, mode: v.secret.defaultMode }
    : v.configMap ? { kind: "ConfigMap" as const, name: v.configMap.name ?? "", items: v.configMap.items, optional: v.configMap.optional, mode: v.configMap.defaultMode }
      : undefined;
  if (!ref) refuse(`volume ${v.name}: ${Object.keys(v).filter((k) => k !== "name").join(", ")}`);
  if (ref.items) refuse(`volume ${v.name}: items`);
  const data = (ref.kind === "Secret" ? node.secrets : node.configMaps)[ref.name];
  if (!data && !ref.optional) throw new PodSpecError(`volume ${v.name}: ${ref.kind} ${ref.name} not found (the kubelet would not start the pod)`);
  const dir = join(node.volumeDir, v.name);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  for (const [k, text] of Object.entries(data ?? {})) {
    writeFileSync(join(dir, k), text);
    chmodSync(join(dir, k), ref.mode ?? 0o644);
  }
  return { path: dir, readOnly: true };
}
