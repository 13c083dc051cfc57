import { parseIpv4 } from "../common/ipv4.js";
import { parseIpamSpec, type IpamSpec } from "../ipam/config.js";
import { IpamError } from "../ipam/errors.js";
import { CNI_CODE, CniError, isSupportedVersion, SUPPORTED_VERSIONS, versionBefore, type CniVersion } from "./spec.js";

/**
 * One plugin invocation, decoded and checked in the order the spec's error
 * codes suggest: the command (4), the config's JSON (6), its version (1), the
 * config (7), then the environment the command needs (4). Parsing is kept
 * apart from doing: nothing here touches the kernel or the IPAM state.
 */

export type CniCommand = "ADD" | "DEL" | "CHECK" | "GC" | "STATUS" | "VERSION";
const COMMANDS: readonly CniCommand[] = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"];
export type PluginRole = "weft" | "weft-ipam";

/** What the plugin binary forwards: its name, the CNI_* environment, stdin. */
export interface Invocation {
  readonly role: PluginRole;
  readonly env: Readonly<Record<string, string>>;
  readonly stdin: string;
}

export interface CniRequest {
  readonly role: PluginRole;
  readonly command: Exclude<CniCommand, "VERSION">;
  readonly version: CniVersion;
  readonly network: string;
  readonly containerId: string;
  readonly netns: string;
  readonly ifname: string;
  readonly podNamespace: string;
  readonly podName: string;
  readonly labels: Readonly<Record<string, string>>;
  /** An address asked for (CNI_ARGS IP=, args.cni.ips, runtimeConfig.ips). */
  readonly requested: number | undefined;
  readonly ipam: IpamSpec;
  /** The ipam section's JSON: the key under which its plan is cached. */
  readonly ipamKey: string;
  /** weft main plugin: the bridge pods hang off (default cni0) and an MTU override. */
  readonly bridge: string;
  readonly mtu: number | undefined;
  readonly dns: Record<string, unknown> | undefined;
  readonly prevResult: Record<string, unknown> | undefined;
  /** GC: "container/ifname" of every attachment the runtime still has. */
  readonly validAttachments: ReadonlySet<string> | undefined;
}

/** CNI_ARGS keys weft knows; others need IgnoreUnknown=1. */
const KNOWN_ARGS = new Set(["IgnoreUnknown", "IP", "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"]);
const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export type Decoded = { readonly kind: "version"; readonly version: string } | { readonly kind: "request"; readonly req: CniRequest };

/** The cniVersion the config asked for (for error replies), else the latest. */
export function versionOf(stdin: string): string {
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion;
    return isSupportedVersion(v) ? v : "1.1.0";
  } catch {
    return "1.1.0";
  }
}

export function decode(inv: Invocation): Decoded {
  const env = inv.env;
  const cmd = env["CNI_COMMAND"];
  if (!cmd) throw new CniError(CNI_CODE.INVALID_ENV, "CNI_COMMAND is not set", `set it to one of ${COMMANDS.join(", ")}`);
  if (!(COMMANDS as readonly string[]).includes(cmd)) throw new CniError(CNI_CODE.INVALID_ENV, `CNI_COMMAND "${cmd}" is not a CNI command`, `use one of ${COMMANDS.join(", ")}`);
  const command = cmd as CniCommand;
  if (command === "VERSION") return { kind: "version", version: versionOf(inv.stdin) };

  let conf: Record<string, unknown>;
  try {
    const raw: unknown = JSON.parse(inv.stdin);
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new Error("the config must be a JSON object");
    conf = raw as Record<string, unknown>;
  } catch (e) {
    throw new CniError(CNI_CODE.DECODE, `cannot decode the network config on stdin: ${(e as Error).message}`, "the runtime must pass the network config as a JSON object on stdin");
  }
  const version = conf["cniVersion"];
  if (!isSupportedVersion(version)) {
    throw new CniError(CNI_CODE.INCOMPATIBLE_VERSION, `cniVersion ${JSON.stringify(version ?? null)} is not supported`, `weft supports ${SUPPORTED_VERSIONS.join(", ")}`);
  }
  if (command === "CHECK" && versionBefore(version, "0.4.0")) throw new CniError(CNI_CODE.INCOMPATIBLE_VERSION, `CHECK needs cniVersion 0.4.0 or later, the config has ${version}`);
  if ((command === "GC" || command === "STATUS") && versionBefore(version, "1.1.0")) {
    throw new CniError(CNI_CODE.INCOMPATIBLE_VERSION, `${command} needs cniVersion 1.1.0, the config has ${version}`);
  }
  const network = conf["name"];
  if (typeof network !== "string" || !NAME.test(network)) {
    throw new CniError(CNI_CODE.INVALID_CONFIG, `the config's "name" ${JSON.stringify(network ?? null)} is not a network name`, "names start with a letter or digit, then letters, digits, _ . -");
  }
  if (typeof conf["type"] !== "string") throw new CniError(CNI_CODE.INVALID_CONFIG, 'the config has no "type"');

  const ipamRaw = conf["ipam"];
  if (ipamRaw !== undefined && (typeof ipamRaw !== "object" || ipamRaw === null || Array.isArray(ipamRaw))) {
    throw new CniError(CNI_CODE.INVALID_CONFIG, '"ipam" must be an object');
  }
  const ipamType = (ipamRaw as { type?: unknown } | undefined)?.type;
  if (inv.role === "weft" && ipamType !== undefined && ipamType !== "weft-ipam") {
    throw new CniError(CNI_CODE.INVALID_CONFIG, `the weft plugin allocates addresses itself; ipam.type ${JSON.stringify(ipamType)} cannot be used with it`, 'leave out ipam.type or set it to "weft-ipam"');
  }
  if (inv.role === "weft-ipam" && ipamRaw === undefined) throw new CniError(CNI_CODE.INVALID_CONFIG, 'weft-ipam runs as an "ipam" plugin: the config has no "ipam" section');
  let ipam: IpamSpec;
  try {
    ipam = parseIpamSpec(ipamRaw);
  } catch (e) {
    if (e instanceof IpamError) throw new CniError(e.cniCode, e.message);
    throw e;
  }

  const bridge = conf["bridge"] ?? "cni0";
  if (inv.role === "weft" && (typeof bridge !== "string" || !validIfname(bridge))) throw new CniError(CNI_CODE.INVALID_CONFIG, `"bridge" ${JSON.stringify(bridge)} is not an interface name`);
  const mtu = conf["mtu"];
  if (mtu !== undefined && (typeof mtu !== "number" || !Number.isInteger(mtu) || mtu < 576 || mtu > 65535)) {
    throw new CniError(CNI_CODE.INVALID_CONFIG, `"mtu" ${JSON.stringify(mtu)} must be an integer 576-65535`, "leave it out to use the MTU from the node's subnet file");
  }

  const args = parseCniArgs(env["CNI_ARGS"] ?? "");
  const cniArgs = ((conf["args"] as Record<string, unknown> | undefined)?.["cni"] ?? {}) as Record<string, unknown>;
  const runtimeConfig = (conf["runtimeConfig"] ?? {}) as Record<string, unknown>;
  const requested = requestedAddress([
    ...(args.get("IP") ? [args.get("IP") as string] : []),
    ...stringList(cniArgs["ips"], "args.cni.ips"),
    ...stringList(runtimeConfig["ips"], "runtimeConfig.ips"),
  ]);

  const need = (name: string): string => {
    const v = env[name];
    if (!v) throw new CniError(CNI_CODE.INVALID_ENV, `${name} is not set; ${command} needs it`);
    return v;
  };
  let containerId = "";
  let ifname = "";
  let netns = env["CNI_NETNS"] ?? "";
  if (command === "ADD" || command === "DEL" || command === "CHECK") {
    containerId = need("CNI_CONTAINERID");
    if (!NAME.test(containerId)) throw new CniError(CNI_CODE.INVALID_ENV, `CNI_CONTAINERID "${containerId}" is not a container ID (letters, digits, _ . -, starting with a letter or digit)`);
    ifname = need("CNI_IFNAME");
    if (!validIfname(ifname)) throw new CniError(CNI_CODE.INVALID_ENV, `CNI_IFNAME "${ifname}" is not an interface name (1-15 characters, no "/" or spaces, not "." or "..")`);
    if (command !== "DEL") netns = need("CNI_NETNS");
  }
  let validAttachments: Set<string> | undefined;
  if (command === "GC") validAttachments = parseValidAttachments(conf["cni.dev/valid-attachments"]);
  const prev = conf["prevResult"];
  return {
    kind: "request",
    req: {
      role: inv.role, command, version, network, containerId, netns, ifname,
      podNamespace: args.get("K8S_POD_NAMESPACE") ?? "", podName: args.get("K8S_POD_NAME") ?? "",
      labels: parseLabels(cniArgs["labels"]), requested, ipam, ipamKey: JSON.stringify(ipamRaw ?? {}),
      bridge: String(bridge), mtu: mtu as number | undefined,
      dns: typeof conf["dns"] === "object" && conf["dns"] !== null ? (conf["dns"] as Record<string, unknown>) : undefined,
      prevResult: typeof prev === "object" && prev !== null ? (prev as Record<string, unknown>) : undefined,
      validAttachments,
    },
  };
}

export function validIfname(s: string): boolean {
  return s.length > 0 && s.length <= 15 && s !== "." && s !== ".." && !/[/\s:]/.test(s);
}

/** CNI_ARGS: "K=V;K2=V2". Unknown keys are errors unless IgnoreUnknown is 1 or true. */
export function parseCniArgs(text: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!text.trim()) return out;
  for (const part of text.split(";")) {
    if (!part) continue;
    const eq = part.indexOf("=");
    if (eq <= 0) throw new CniError(CNI_CODE.INVALID_ENV, `CNI_ARGS: "${part}" is not KEY=VALUE`, 'write CNI_ARGS as "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod"');
    out.set(part.slice(0, eq), part.slice(eq + 1));
  }
  const ignore = /^(1|true)$/i.test(out.get("IgnoreUnknown") ?? "");
  const unknown = [...out.keys()].filter((k) => !KNOWN_ARGS.has(k));
  if (unknown.length > 0 && !ignore) {
    throw new CniError(CNI_CODE.INVALID_ENV, `CNI_ARGS: unknown key(s) ${unknown.join(", ")}`, `weft knows ${[...KNOWN_ARGS].join(", ")}; add IgnoreUnknown=1 to pass others`);
  }
  return out;
}

function stringList(v: unknown, where: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) throw new CniError(CNI_CODE.INVALID_CONFIG, `${where} must be a list of address strings`);
  return v as string[];
}

/** One IPv4 address from all the places a runtime may ask for one. */
function requestedAddress(list: readonly string[]): number | undefined {
  const addrs = new Set<number>();
  for (const s of list) {
    const ip = s.split("/")[0] ?? "";
    if (ip.includes(":")) throw new CniError(CNI_CODE.INVALID_CONFIG, `requested address "${s}" is IPv6; weft's pod network is IPv4`);
    try {
      addrs.add(parseIpv4(ip));
    } catch (e) {
      throw new CniError(CNI_CODE.INVALID_CONFIG, `requested address "${s}": ${(e as Error).message}`);
    }
  }
  if (addrs.size > 1) throw new CniError(CNI_CODE.INVALID_CONFIG, `${addrs.size} different IPv4 addresses were requested (${list.join(", ")}); an interface gets one`);
  return addrs.size === 1 ? [...addrs][0] : undefined;
}

/** args.cni.labels: [{"key": "tier", "value": "db"}] (CNI CONVENTIONS.md). */
function parseLabels(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(v)) return out;
  for (const l of v as { key?: unknown; value?: unknown }[]) {
    if (typeof l?.key === "string" && typeof l.value === "string") out[l.key] = l.value;
  }
  return out;
}

function parseValidAttachments(v: unknown): Set<string> {
  if (v === undefined) {
    throw new CniError(CNI_CODE.INVALID_CONFIG, 'GC needs "cni.dev/valid-attachments" (the attachments to keep)', "pass an empty list to release everything of this network");
  }
  if (!Array.isArray(v)) throw new CniError(CNI_CODE.INVALID_CONFIG, '"cni.dev/valid-attachments" must be a list of {"containerID", "ifname"}');
  const out = new Set<string>();
  for (const a of v as { containerID?: unknown; ifname?: unknown }[]) {
    if (typeof a?.containerID !== "string" || typeof a.ifname !== "string") {
      throw new CniError(CNI_CODE.INVALID_CONFIG, `"cni.dev/valid-attachments" entry ${JSON.stringify(a)} needs string containerID and ifname`);
    }
    out.add(`${a.containerID}/${a.ifname}`);
  }
  return out;
}
