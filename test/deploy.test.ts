import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import type { IDaemonSet } from "kubernetes-models/apps/v1/DaemonSet";
import type { IConfigMap } from "kubernetes-models/v1/ConfigMap";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IToleration } from "kubernetes-models/v1/Toleration";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import { AGENT_DEFAULTS, parseAgentOptions } from "../src/agent/options.js";
import { projectRoot } from "../src/common/paths.js";
import { daemonSetPod, findObject, readManifest, type KubeObject } from "../src/harness/pod-spec.js";

/**
 * The deploy files: every Kubernetes manifest validated against the
 * Kubernetes OpenAPI schema (kubernetes-models: its validators for types,
 * formats and required fields, and its TypeScript types for unknown fields, as
 * the API server's strict field validation refuses them), the DaemonSet's
 * flags checked against the agent's own option parser and against the rest of
 * the file, what a real deployment needs, and the systemd unit through
 * `systemd-analyze verify`.
 */
const YAML = "deploy/kubernetes/weft-agent.yaml";
const UNIT = "deploy/systemd/weft-agent.service";
const root = projectRoot();

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? yamlFiles(p) : /\.ya?ml$/.test(f) ? [relative(root, p)] : [];
  });
}

/** The kubernetes-models module of an object: apps/v1 DaemonSet -> kubernetes-models/apps/v1/DaemonSet. */
const modelPath = (o: KubeObject): string => `kubernetes-models/${o.apiVersion}/${o.kind}`;

/** Schema errors of each object (kubernetes-models' validators, generated from the OpenAPI schema). */
async function schemaErrors(objects: KubeObject[]): Promise<string[]> {
  const out: string[] = [];
  for (const o of objects) {
    const mod = (await import(modelPath(o))) as Record<string, new (d: unknown) => { validate(): void }>;
    const Model = mod[o.kind];
    if (!Model) throw new Error(`kubernetes-models has no ${o.apiVersion} ${o.kind}`);
    try {
      new Model(o).validate();
    } catch (e) {
      out.push(`${o.kind} ${o.metadata?.name}: ${(e as Error).message}`);
    }
  }
  return out;
}

/**
 * Fields the schema does not have: each object typed with kubernetes-models'
 * interface (generated from the same schema) and compiled by TypeScript, whose
 * excess-property check refuses a field the type lacks, at any depth.
 */
function unknownFields(objects: KubeObject[]): string[] {
  const file = join(root, "test", "__deploy_objects__.ts");
  const text = objects.map((o, i) => `import type { I${o.kind} as T${i} } from "${modelPath(o)}";\nexport const o${i}: T${i} = ${JSON.stringify(o)};`).join("\n");
  const options: ts.CompilerOptions = {
    strict: true, noEmit: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, skipLibCheck: true, types: [],
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (f, lang, ...rest) => (f === file ? ts.createSourceFile(f, text, lang) : getSourceFile.call(host, f, lang, ...rest));
  host.fileExists = (f) => f === file || fileExists.call(host, f);
  host.readFile = (f) => (f === file ? text : readFile.call(host, f));
  return ts.getPreEmitDiagnostics(ts.createProgram([file], options, host)).map((d) => {
    const line = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line : -1;
    const o = objects[Math.floor(line / 2)];
    return `${o ? `${o.kind} ${o.metadata?.name}` : "?"}: ${ts.flattenDiagnosticMessageText(d.messageText, " ")}`;
  });
}

const objects = readManifest(YAML);
const daemonSet = (objs = objects): IDaemonSet => findObject<IDaemonSet>(objs, "DaemonSet", "weft-agent");
const container = (name: string, objs = objects): IContainer => {
  const pod = daemonSetPod(daemonSet(objs));
  const c = [...(pod.initContainers ?? []), ...pod.containers].find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name}`);
  return c;
};

/** `--name=value` / `--flag` args as option names (camelCase) and values. */
function argFlags(args: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const a of args) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`arg ${a} is not --name[=value]`);
    out[m[1]!.replace(/-([a-z])/g, (_x, ch: string) => ch.toUpperCase())] = m[2] ?? true;
  }
  return out;
}

/** The agent's options from the DaemonSet: its args, and its WEFT_* env with the ConfigMap's values (or the defaults). */
function agentOptions(objs = objects): { flags: Record<string, unknown>; env: Record<string, unknown> } {
  const agent = container("agent", objs);
  const cm = findObject<IConfigMap>(objs, "ConfigMap", "weft-config").data ?? {};
  const env: Record<string, unknown> = {};
  for (const e of agent.env ?? []) {
    const name = e.name.replace(/^WEFT_/, "").toLowerCase().replace(/_([a-z])/g, (_x, ch: string) => ch.toUpperCase());
    const ref = e.valueFrom?.configMapKeyRef;
    const v = e.value ?? (ref ? cm[ref.key] : e.valueFrom?.fieldRef?.fieldPath === "status.hostIP" ? "192.0.2.1" : undefined);
    env[name] = v ?? (AGENT_DEFAULTS as Record<string, unknown>)[name] ?? "x";
  }
  return { flags: argFlags(agent.args ?? []), env };
}

/** What the agent's options must agree with elsewhere in the file: probe ports, install-cni's socket, mounts. Empty: all agree. */
function daemonSetMismatches(objs: KubeObject[]): string[] {
  const agent = container("agent", objs);
  const opts = parseAgentOptions({ ...AGENT_DEFAULTS, ...agentOptions(objs).flags });
  const out: string[] = [];
  const port = opts.healthListen === "off" ? undefined : Number(opts.healthListen.split(":")[1]);
  for (const [probe, path] of [["startupProbe", "/healthz"], ["livenessProbe", "/healthz"], ["readinessProbe", "/readyz"]] as const) {
    const p = agent[probe]?.httpGet;
    if (p?.port !== port || p?.path !== path) out.push(`${probe} ${p?.path}:${p?.port} but --health-listen ${opts.healthListen} (${path})`);
  }
  const cniSocket = argFlags(container("install-cni", objs).args ?? [])["controlSocket"];
  if (cniSocket !== opts.controlSocket) out.push(`install-cni --control-socket ${String(cniSocket)} but the agent's is ${opts.controlSocket}`);
  const mount = (v: string): string | undefined => agent.volumeMounts?.find((m) => m.name === v)?.mountPath;
  const inside = (file: string, dir: string | undefined): boolean => dir !== undefined && file.startsWith(`${dir.replace(/\/$/, "")}/`);
  if (!inside(opts.controlSocket, mount("run"))) out.push(`--control-socket ${opts.controlSocket} is outside the run mount ${mount("run")}`);
  if (!inside(opts.subnetFile, mount("run"))) out.push(`--subnet-file ${opts.subnetFile} is outside the run mount ${mount("run")}`);
  if (mount("state") !== opts.stateDir) out.push(`--state-dir ${opts.stateDir} but the state mount is ${mount("state")}`);
  if (mount("bpffs") !== opts.bpffs) out.push(`--bpffs ${opts.bpffs} but the bpffs mount is ${mount("bpffs")}`);
  return out;
}

/** Does a toleration list tolerate a taint (the scheduler's and the taint manager's rule)? */
function tolerates(tols: readonly IToleration[], taint: { key: string; value?: string; effect: string }): boolean {
  return tols.some((t) => (!t.effect || t.effect === taint.effect)
    && ((t.operator === "Exists" && !t.key) || (t.key === taint.key && (t.operator === "Exists" || (t.value ?? "") === (taint.value ?? "")))));
}

describe("Kubernetes manifests against the OpenAPI schema", () => {
  it("every object of every manifest in deploy/ is valid, with no field the schema lacks", async () => {
    const files = yamlFiles(join(root, "deploy"));
    expect(files).toContain(YAML);
    for (const f of files) {
      const objs = readManifest(f);
      expect(objs.length, f).toBeGreaterThan(0);
      expect(await schemaErrors(objs), f).toEqual([]);
      expect(unknownFields(objs), f).toEqual([]);
    }
  }, 60_000);

  it("catches a misspelled field, a wrong type and a bad quantity (so the checks above can fail)", async () => {
    const misspelled = structuredClone(objects);
    (daemonSetPod(daemonSet(misspelled)) as unknown as Record<string, unknown>)["tolerationz"] = [];
    expect(unknownFields(misspelled)).toEqual([expect.stringMatching(/^DaemonSet weft-agent: .*'"?tolerationz"?' does not exist in type/)]);
    const bad = structuredClone(objects);
    const agent = daemonSetPod(daemonSet(bad)).containers[0]!;
    (agent.livenessProbe as unknown as Record<string, unknown>)["periodSeconds"] = "ten";
    agent.resources!.limits!["memory"] = "lots";
    const errs = (await schemaErrors(bad)).join("\n");
    expect(errs).toMatch(/livenessProbe\/periodSeconds must be integer/);
    expect(errs).toMatch(/limits\/memory must match format "quantity"/);
  }, 60_000);
});

describe("the DaemonSet", () => {
  it("passes the agent's option parser: every flag and WEFT_* variable names an option, with a value it takes", () => {
    const { flags, env } = agentOptions();
    expect(Object.keys(flags).length).toBeGreaterThan(3);
    const opts = parseAgentOptions({ ...AGENT_DEFAULTS, ...env, ...flags }) as Record<string, unknown>;
    for (const [k, v] of Object.entries(flags)) expect(v === true ? opts[k] : String(opts[k]), `--${k}`).toBe(v);
    // and a misspelled variable would be refused
    expect(() => parseAgentOptions({ ...AGENT_DEFAULTS, etcdEndpoint: "http://x:1" })).toThrow(/unknown option\(s\) --etcd-endpoint/);
  });

  it("reads every weft-config key it sets, and needs only etcd-endpoints", () => {
    const cm = findObject<IConfigMap>(objects, "ConfigMap", "weft-config").data ?? {};
    const refs = (container("agent").env ?? []).flatMap((e) => (e.valueFrom?.configMapKeyRef ? [e.valueFrom.configMapKeyRef] : []));
    expect(refs.every((r) => r.name === "weft-config")).toBe(true);
    expect(Object.keys(cm).filter((k) => !refs.some((r) => r.key === k))).toEqual([]);
    expect(refs.filter((r) => !r.optional).map((r) => r.key)).toEqual(["etcd-endpoints"]);
  });

  it("agrees with itself: probes on the health port, install-cni's socket, mounts where the flags point", () => {
    expect(daemonSetMismatches(objects)).toEqual([]);
    const broken = structuredClone(objects);
    const agent = container("agent", broken);
    agent.args = agent.args!.map((a) => a.replace("--health-listen=127.0.0.1:9099", "--health-listen=127.0.0.1:9098").replace("--state-dir=/var/lib/weft", "--state-dir=/var/lib/weft2"));
    agent.readinessProbe!.httpGet!.path = "/healthz";
    const init = container("install-cni", broken);
    init.args = init.args!.map((a) => a.replace("agent.sock", "other.sock"));
    agent.volumeMounts!.find((m) => m.name === "bpffs")!.mountPath = "/sys/fs/bpf2";
    expect(daemonSetMismatches(broken)).toEqual([
      "startupProbe /healthz:9099 but --health-listen 127.0.0.1:9098 (/healthz)",
      "livenessProbe /healthz:9099 but --health-listen 127.0.0.1:9098 (/healthz)",
      "readinessProbe /healthz:9099 but --health-listen 127.0.0.1:9098 (/readyz)",
      "install-cni --control-socket /run/weft/other.sock but the agent's is /run/weft/agent.sock",
      "--state-dir /var/lib/weft2 but the state mount is /var/lib/weft",
      "--bpffs /sys/fs/bpf but the bpffs mount is /sys/fs/bpf2",
    ]);
  });

  it("has what a node-critical network DaemonSet needs: priority, every taint tolerated, one node at a time, resources, no API token", () => {
    const ds = daemonSet();
    const pod = daemonSetPod(ds);
    expect(pod.priorityClassName).toBe("system-node-critical");
    expect(ds.metadata?.namespace).toBe("kube-system"); // where system-node-critical is allowed by default
    const taints = [
      { key: "node.kubernetes.io/not-ready", effect: "NoExecute" }, { key: "node.kubernetes.io/unreachable", effect: "NoExecute" },
      { key: "node.kubernetes.io/network-unavailable", effect: "NoSchedule" }, { key: "node.kubernetes.io/unschedulable", effect: "NoSchedule" },
      { key: "node.kubernetes.io/disk-pressure", effect: "NoSchedule" }, { key: "node-role.kubernetes.io/control-plane", effect: "NoSchedule" },
      { key: "example.com/dedicated", value: "gpu", effect: "NoSchedule" }, { key: "example.com/soft", effect: "PreferNoSchedule" },
    ];
    expect(taints.filter((t) => !tolerates(pod.tolerations ?? [], t))).toEqual([]);
    // and a list that leaves one out is caught
    expect(tolerates([{ operator: "Exists", effect: "NoSchedule" }], taints[0]!)).toBe(false);
    expect(ds.spec?.updateStrategy).toEqual({ type: "RollingUpdate", rollingUpdate: { maxUnavailable: 1, maxSurge: 0 } });
    expect(pod.hostNetwork).toBe(true);
    expect(pod.dnsPolicy).toBe("Default");
    expect(pod.automountServiceAccountToken).toBe(false);
    for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
      expect(c.resources?.requests?.["memory"], c.name).toBeDefined();
      expect(c.resources?.requests?.["cpu"], c.name).toBeDefined();
      expect(c.resources?.limits?.["memory"], c.name).toBeDefined();
      expect(c.securityContext?.readOnlyRootFilesystem, c.name).toBe(true);
      expect(c.securityContext?.capabilities?.drop, c.name).toEqual(["ALL"]);
    }
  });

  it("names the image `npm run image` builds, weft:<package version>, in every container", () => {
    const version = (JSON.parse(readFileSync("package.json", "utf8")) as { version: string }).version;
    const pod = daemonSetPod(daemonSet());
    expect([...(pod.initContainers ?? []), ...pod.containers].map((c) => c.image)).toEqual([`weft:${version}`, `weft:${version}`]);
  });

  it("its install-cni init container runs with its own arguments", () => {
    const args = container("install-cni").args ?? [];
    expect(args).toContain("--bin-dir=/host/opt/cni/bin");
    const r = spawnSync("node", ["bin/weft.js", "install-cni", ...args, "--print"], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    // Chained with Debian's portmap (hostPort), which speaks CNI up to 1.0.0.
    expect(JSON.parse(r.stdout)).toMatchObject({ cniVersion: "1.0.0", plugins: [{ type: "weft", controlSocket: "/run/weft/agent.sock" }, { type: "portmap" }] });
    // and a flag it does not have is refused, so the check above can fail
    expect(spawnSync("node", ["bin/weft.js", "install-cni", "--bin-dri=/x", "--print"], { encoding: "utf8" }).status).not.toBe(0);
  });
});

/** The flags in the systemd unit's ExecStart. */
function unitFlags(text: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const code = text.split("\n").filter((l) => !l.trim().startsWith("#")).join("\n");
  for (const m of code.matchAll(/--([a-z-]+)(?:[ =]([^\s\\"]+))?/g)) {
    const name = (m[1] ?? "").replace(/-([a-z])/g, (_x, c: string) => c.toUpperCase());
    out[name] = m[2] === undefined || m[2].startsWith("--") ? true : m[2];
  }
  return out;
}

/** `systemd-analyze verify` of a unit file's text: its exit status and what it said. */
function verifyUnit(text: string): { status: number | null; said: string } {
  const dir = mkdtempSync(join(tmpdir(), "weft-unit-"));
  try {
    writeFileSync(join(dir, "weft-agent.service"), text);
    const r = spawnSync("systemd-analyze", ["verify", join(dir, "weft-agent.service")], { encoding: "utf8" });
    if (r.error) throw new Error(`systemd-analyze: ${r.error.message} (npm run setup installs the systemd package)`);
    return { status: r.status, said: (r.stdout + r.stderr).trim() };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("the systemd unit", () => {
  it("passes systemd-analyze verify without a warning (and a misspelled key or a missing binary would not)", () => {
    const text = readFileSync(UNIT, "utf8");
    expect(verifyUnit(text)).toEqual({ status: 0, said: "" });
    expect(verifyUnit(text.replace("Restart=always", "Restrt=always")).said).toMatch(/Unknown key 'Restrt'/);
    expect(verifyUnit(text.replace("/usr/bin/node", "/usr/bin/nodez")).status).not.toBe(0);
  });

  it("passes the agent's option parser, and its directories are the ones systemd creates for it", () => {
    const unit = readFileSync(UNIT, "utf8");
    const f = unitFlags(unit);
    expect(Object.keys(f).length).toBeGreaterThan(3);
    const opts = parseAgentOptions({ ...AGENT_DEFAULTS, ...f }) as Record<string, unknown> & ReturnType<typeof parseAgentOptions>;
    for (const [k, v] of Object.entries(f)) expect(v === true ? opts[k] : String(opts[k]), `--${k}`).toBe(v);
    expect(opts.controlSocket.startsWith(`/run/${/^RuntimeDirectory=(\S+)$/m.exec(unit)?.[1]}/`), opts.controlSocket).toBe(true);
    expect(opts.subnetFile.startsWith(`/run/${/^RuntimeDirectory=(\S+)$/m.exec(unit)?.[1]}/`), opts.subnetFile).toBe(true);
    expect(opts.stateDir).toBe(`/var/lib/${/^StateDirectory=(\S+)$/m.exec(unit)?.[1]}`);
  });
});
