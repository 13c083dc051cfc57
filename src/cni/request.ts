import { createHash } from "node:crypto";
import { parseIpamSpec, type IpamSpec } from "../ipam/config.js";
import { IpamError } from "../ipam/errors.js";
import { nestedDeeper, objectAt, parseCniArgs, parseDns, parseLabels, parsePrevResult, parseValidAttachments, requestedAddress, stringList, type PrevResult } from "./fields.js";
import { containerIdProblem, IFNAME_RULE, ifnameProblem, NETNS_RULE, netnsProblem, show } from "./names.js";
import { CNI_CODE, CniError, isSupportedVersion, SUPPORTED_VERSIONS, versionBefore, type CniDns, type CniVersion } from "./spec.js";

/**
 * One plugin invocation, decoded and checked in the order the spec's error
 * codes suggest: the command (4), the config's JSON (6), its version (1), the
 * config (7), then the environment the command needs (4). Parsing is kept
 * apart from doing: nothing here touches the kernel or the IPAM state. Every
 * value that later reaches a command or a batch line (names.ts) is checked
 * here; every other field comes out typed (fields.ts).
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
  /** An IPv4 address asked for (CNI_ARGS IP=, args.cni.ips, runtimeConfig.ips). */
  readonly requested: number | undefined;
  /** An IPv6 address asked for (the same places; CNI_ARGS IP= may hold one of each family, comma-separated). */
  readonly requested6: bigint | undefined;
  readonly ipam: IpamSpec;
  /** A hash of the ipam section's JSON: the key under which its plan is cached (bounded, whatever the config's size). */
  readonly ipamKey: string;
  /** weft main plugin: the bridge pods hang off (default cni0) and an MTU override. */
  readonly bridge: string;
  readonly mtu: number | undefined;
  readonly dns: CniDns | undefined;
  readonly prevResult: PrevResult | undefined;
  /** GC: "container/ifname" of every attachment the runtime still has. */
  readonly validAttachments: ReadonlySet<string> | undefined;
}

const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const MAX_NAME = 256;
/** As the plugin binary (native/weft_cni.c): a network config is a few KiB. */
export const MAX_STDIN = 4 << 20;
/** Far deeper than any real config (prevResult and args nest 4-5 levels). */
export const MAX_DEPTH = 64;

export type Decoded = { readonly kind: "version"; readonly version: string } | { readonly kind: "request"; readonly req: CniRequest };

export function isCommand(v: unknown): v is CniCommand {
  return typeof v === "string" && (COMMANDS as readonly string[]).includes(v);
}

/** The cniVersion the config asked for (for error replies), else the latest. */
export function versionOf(stdin: unknown): string {
  if (typeof stdin !== "string" || stdin.length > MAX_STDIN) return "1.1.0";
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown } | null)?.cniVersion;
    return isSupportedVersion(v) ? v : "1.1.0";
  } catch {
    return "1.1.0";
  }
}

/** The invocation's own shape (a client other than the plugin binary may speak to the socket). */
function checkInvocation(inv: Invocation): void {
  const bad = (what: string): never => {
    throw new CniError(CNI_CODE.INVALID_ENV, `the plugin's request is malformed: ${what}`, "are the plugin binary and the agent the same weft version?", "invocation");
  };
  if (typeof inv !== "object" || inv === null) bad("it is not an object");
  if (inv.role !== "weft" && inv.role !== "weft-ipam") bad(`role ${show(inv.role)} is not weft or weft-ipam`);
  if (typeof inv.env !== "object" || inv.env === null || Array.isArray(inv.env)) bad("env is not an object");
  for (const [k, v] of Object.entries(inv.env)) {
    if (typeof v !== "string") throw new CniError(CNI_CODE.INVALID_ENV, `${show(k)} must be a string, not ${show(v)}`, undefined, k === "CNI_COMMAND" ? "command" : "invocation");
  }
  if (typeof inv.stdin !== "string") bad("stdin is not a string");
}

export function decode(inv: Invocation): Decoded {
  checkInvocation(inv);
  const env = inv.env;
  const cmd = env["CNI_COMMAND"];
  if (!cmd) throw new CniError(CNI_CODE.INVALID_ENV, "CNI_COMMAND is not set", `set it to one of ${COMMANDS.join(", ")}`, "command");
  if (!isCommand(cmd)) throw new CniError(CNI_CODE.INVALID_ENV, `CNI_COMMAND ${show(cmd)} is not a CNI command`, `use one of ${COMMANDS.join(", ")}`, "command");
  const command = cmd;
  if (command === "VERSION") return { kind: "version", version: versionOf(inv.stdin) };

  const conf = parseConfig(inv.stdin);
  const version = conf["cniVersion"];
  if (!isSupportedVersion(version)) {
    throw new CniError(CNI_CODE.INCOMPATIBLE_VERSION, `cniVersion ${show(version ?? null)} is not supported`, `weft supports ${SUPPORTED_VERSIONS.join(", ")}`, "version");
  }
  if (command === "CHECK" && versionBefore(version, "0.4.0")) throw new CniError(CNI_CODE.INCOMPATIBLE_VERSION, `CHECK needs cniVersion 0.4.0 or later, the config has ${version}`, undefined, "version");
  if ((command === "GC" || command === "STATUS") && versionBefore(version, "1.1.0")) {
    throw new CniError(CNI_CODE.INCOMPATIBLE_VERSION, `${command} needs cniVersion 1.1.0, the config has ${version}`, undefined, "version");
  }
  const network = conf["name"];
  if (typeof network !== "string" || !NAME.test(network) || network.length > MAX_NAME) {
    throw new CniError(CNI_CODE.INVALID_CONFIG, `the config's "name" ${show(network ?? null)} is not a network name`, `names are 1-${MAX_NAME} characters: a letter or digit, then letters, digits, _ . -`, "config");
  }
  if (typeof conf["type"] !== "string") throw new CniError(CNI_CODE.INVALID_CONFIG, 'the config has no "type"', undefined, "config");

  const ipamRaw = conf["ipam"];
  if (ipamRaw !== undefined && (typeof ipamRaw !== "object" || ipamRaw === null || Array.isArray(ipamRaw))) {
    throw new CniError(CNI_CODE.INVALID_CONFIG, '"ipam" must be an object', undefined, "ipam");
  }
  const ipamType = (ipamRaw as { type?: unknown } | undefined)?.type;
  if (inv.role === "weft" && ipamType !== undefined && ipamType !== "weft-ipam") {
    throw new CniError(CNI_CODE.INVALID_CONFIG, `the weft plugin allocates addresses itself; ipam.type ${show(ipamType)} cannot be used with it`, 'leave out ipam.type or set it to "weft-ipam"', "ipam");
  }
  if (inv.role === "weft-ipam" && ipamRaw === undefined) throw new CniError(CNI_CODE.INVALID_CONFIG, 'weft-ipam runs as an "ipam" plugin: the config has no "ipam" section', undefined, "ipam");
  let ipam: IpamSpec;
  try {
    ipam = parseIpamSpec(ipamRaw);
  } catch (e) {
    if (e instanceof IpamError) throw new CniError(e.cniCode, e.message, undefined, "ipam");
    throw e;
  }

  const bridge = conf["bridge"] ?? "cni0";
  if (inv.role === "weft") {
    const why = typeof bridge === "string" ? ifnameProblem(bridge) : "it is not a string";
    if (why) throw new CniError(CNI_CODE.INVALID_CONFIG, `"bridge" ${show(bridge)} is not a usable interface name: ${why}`, IFNAME_RULE, "bridge");
  }
  const mtu = conf["mtu"];
  if (mtu !== undefined && (typeof mtu !== "number" || !Number.isInteger(mtu) || mtu < 576 || mtu > 65535)) {
    throw new CniError(CNI_CODE.INVALID_CONFIG, `"mtu" ${show(mtu)} must be an integer 576-65535`, "leave it out to use the MTU from the node's subnet file", "mtu");
  }

  const args = parseCniArgs(env["CNI_ARGS"] ?? "");
  const cniArgs = objectAt(objectAt(conf["args"], '"args"', "args")?.["cni"], "args.cni", "args") ?? {};
  const runtimeConfig = objectAt(conf["runtimeConfig"], "runtimeConfig", "requested") ?? {};
  const ipArg = args.get("IP");
  const requested = requestedAddress([
    ...(ipArg ? ipArg.split(",") : []),
    ...stringList(cniArgs["ips"], "args.cni.ips", "requested"),
    ...stringList(runtimeConfig["ips"], "runtimeConfig.ips", "requested"),
  ]);

  const need = (name: string): string => {
    const v = env[name];
    if (!v) throw new CniError(CNI_CODE.INVALID_ENV, `${name} is not set; ${command} needs it`, undefined, name === "CNI_IFNAME" ? "ifname" : name === "CNI_NETNS" ? "netns" : "containerid");
    return v;
  };
  let containerId = "";
  let ifname = "";
  let netns = "";
  if (command === "ADD" || command === "DEL" || command === "CHECK") {
    containerId = need("CNI_CONTAINERID");
    const idWhy = containerIdProblem(containerId);
    if (idWhy) throw new CniError(CNI_CODE.INVALID_ENV, `CNI_CONTAINERID ${show(containerId)} ${idWhy}`, undefined, "containerid");
    ifname = need("CNI_IFNAME");
    const ifWhy = ifnameProblem(ifname);
    if (ifWhy) throw new CniError(CNI_CODE.INVALID_ENV, `CNI_IFNAME ${show(ifname)} is not a usable interface name: ${ifWhy}`, IFNAME_RULE, "ifname");
    // DEL may come without a namespace (it is gone); a namespace that is given is checked all the same.
    netns = command === "DEL" ? env["CNI_NETNS"] ?? "" : need("CNI_NETNS");
    const nsWhy = netns ? netnsProblem(netns) : undefined;
    if (nsWhy) throw new CniError(CNI_CODE.INVALID_ENV, `CNI_NETNS ${show(netns)} ${nsWhy}`, NETNS_RULE, "netns");
  }
  let validAttachments: Set<string> | undefined;
  if (command === "GC") validAttachments = parseValidAttachments(conf["cni.dev/valid-attachments"]);
  return {
    kind: "request",
    req: {
      role: inv.role, command, version, network, containerId, netns, ifname,
      podNamespace: args.get("K8S_POD_NAMESPACE") ?? "", podName: args.get("K8S_POD_NAME") ?? "",
      labels: parseLabels(cniArgs["labels"]), requested: requested.v4, requested6: requested.v6, ipam, ipamKey: createHash("sha256").update(JSON.stringify(ipamRaw ?? {})).digest("base64"),
      bridge: typeof bridge === "string" ? bridge : "cni0", mtu: mtu as number | undefined,
      dns: parseDns(conf["dns"]), prevResult: parsePrevResult(conf["prevResult"]),
      validAttachments,
    },
  };
}

/** stdin as a JSON object: bounded in size and depth. */
function parseConfig(stdin: string): Record<string, unknown> {
  const decodeError = (why: string): CniError =>
    new CniError(CNI_CODE.DECODE, `cannot decode the network config on stdin: ${why}`, "the runtime must pass the network config as a JSON object on stdin", "stdin");
  if (stdin.length > MAX_STDIN) throw decodeError(`it is ${stdin.length} characters long, weft reads at most ${MAX_STDIN}`);
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (e) {
    throw decodeError((e as Error).message);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw decodeError("the config must be a JSON object");
  if (nestedDeeper(raw, MAX_DEPTH)) throw decodeError(`it is nested deeper than ${MAX_DEPTH} levels`);
  return raw as Record<string, unknown>;
}
