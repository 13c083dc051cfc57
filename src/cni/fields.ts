import { formatIpv4, parseIpv4 } from "../common/ipv4.js";
import { formatIpv6, parseIpv6 } from "../common/ipv6.js";
import { show } from "./names.js";
import { CNI_CODE, CniError, type CniDns } from "./spec.js";

/**
 * The parts of an invocation besides names and paths: CNI_ARGS, the
 * requested addresses, args.cni.labels, dns, prevResult and GC's valid
 * attachments. Each is checked for the shape the spec gives it and comes
 * out typed, so nothing further in needs to trust the runtime's JSON.
 */

const KNOWN_ARGS = new Set(["IgnoreUnknown", "IP", "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"]);
const ARG_KEY = /^[A-Za-z0-9_]+$/;
const CONTROL = /[\x00-\x1f\x7f]/;
/** Generous (Kubernetes names are at most 253 characters), and far below what an environment variable may hold. */
const MAX_ARGS = 16 * 1024;

const envError = (msg: string, details?: string): CniError => new CniError(CNI_CODE.INVALID_ENV, msg, details, "args");
const confError = (input: "dns" | "prevResult" | "attachments" | "args" | "requested", msg: string, details?: string): CniError =>
  new CniError(CNI_CODE.INVALID_CONFIG, msg, details, input);

/** CNI_ARGS: "K=V;K2=V2". Unknown keys are errors unless IgnoreUnknown is 1 or true; a key given twice with different values is an error. */
export function parseCniArgs(text: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!text.trim()) return out;
  if (text.length > MAX_ARGS) throw envError(`CNI_ARGS is ${text.length} characters long; weft reads at most ${MAX_ARGS}`);
  const how = 'write CNI_ARGS as "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod"';
  for (const part of text.split(";")) {
    if (!part) continue;
    const eq = part.indexOf("=");
    if (eq <= 0) throw envError(`CNI_ARGS: ${show(part)} is not KEY=VALUE`, how);
    const key = part.slice(0, eq);
    const value = part.slice(eq + 1);
    if (!ARG_KEY.test(key)) throw envError(`CNI_ARGS: the key ${show(key)} is not alphanumeric`, how);
    if (CONTROL.test(value)) throw envError(`CNI_ARGS: the value of ${key} holds a control character`, how);
    const was = out.get(key);
    if (was !== undefined && was !== value) throw envError(`CNI_ARGS: ${key} is given twice (${show(was)} and ${show(value)})`, "give each key once");
    out.set(key, value);
  }
  const ignore = /^(1|true)$/i.test(out.get("IgnoreUnknown") ?? "");
  const unknown = [...out.keys()].filter((k) => !KNOWN_ARGS.has(k));
  if (unknown.length > 0 && !ignore) {
    throw envError(`CNI_ARGS: unknown key(s) ${unknown.join(", ")}`, `weft knows ${[...KNOWN_ARGS].join(", ")}; add IgnoreUnknown=1 to pass others`);
  }
  return out;
}

/** A JSON object, or undefined for a missing/null one; anything else is a config error naming `where`. */
export function objectAt(v: unknown, where: string, input: "args" | "dns" | "prevResult" | "requested"): Record<string, unknown> | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "object" || Array.isArray(v)) throw confError(input, `${where} must be a JSON object, not ${show(v)}`);
  return v as Record<string, unknown>;
}

export function stringList(v: unknown, where: string, input: "args" | "dns" | "requested"): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) throw confError(input, `${where} must be a list of strings, not ${show(v)}`);
  return v as string[];
}

/** The addresses asked for: at most one per family (a dual-stack pod gets one of each). */
export interface RequestedAddresses {
  readonly v4: number | undefined;
  readonly v6: bigint | undefined;
}

/**
 * At most one IPv4 and one IPv6 address from all the places a runtime may
 * ask for one ("198.18.0.5", "2001:db8::5", with or without "/len"); the
 * same address given twice counts once.
 */
export function requestedAddress(list: readonly string[]): RequestedAddresses {
  const v4 = new Set<number>();
  const v6 = new Set<bigint>();
  for (const s of list) {
    const ip = s.split("/")[0] ?? "";
    try {
      if (ip.includes(":")) v6.add(parseIpv6(ip));
      else v4.add(parseIpv4(ip));
    } catch (e) {
      throw confError("requested", `requested address ${show(s)}: ${(e as Error).message}`, "write an IPv4 address (198.18.0.5) or an IPv6 address (2001:db8::5); at most one of each");
    }
  }
  if (v4.size > 1) throw confError("requested", `${v4.size} different IPv4 addresses were requested (${show([...v4].map(formatIpv4).join(", "), 120)}); an interface gets one of each family`);
  if (v6.size > 1) throw confError("requested", `${v6.size} different IPv6 addresses were requested (${show([...v6].map(formatIpv6).join(", "), 120)}); an interface gets one of each family`);
  return { v4: [...v4][0], v6: [...v6][0] };
}

/** args.cni.labels: [{"key": "tier", "value": "db"}] (CNI CONVENTIONS.md). */
export function parseLabels(v: unknown): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  if (v === undefined || v === null) return out;
  const bad = (): never => {
    throw confError("args", `args.cni.labels must be a list of {"key": string, "value": string}, not ${show(v)}`);
  };
  if (!Array.isArray(v)) bad();
  for (const l of v as unknown[]) {
    const o = l as { key?: unknown; value?: unknown } | null;
    if (typeof o !== "object" || o === null || typeof o.key !== "string" || typeof o.value !== "string") bad();
    else out[o.key] = o.value;
  }
  return out;
}

/** The config's dns (the spec's four fields), for the result. */
export function parseDns(v: unknown): CniDns | undefined {
  const o = objectAt(v, '"dns"', "dns");
  if (!o) return undefined;
  const domain = o["domain"];
  if (domain !== undefined && typeof domain !== "string") throw confError("dns", `dns.domain must be a string, not ${show(domain)}`);
  const list = (k: string): string[] | undefined => (o[k] === undefined ? undefined : stringList(o[k], `dns.${k}`, "dns"));
  const nameservers = list("nameservers");
  const search = list("search");
  const options = list("options");
  return {
    ...(nameservers ? { nameservers } : {}), ...(domain !== undefined ? { domain } : {}),
    ...(search ? { search } : {}), ...(options ? { options } : {}),
  };
}

/** What weft reads of a prevResult: the addresses of its ips (without the prefix length). */
export interface PrevResult {
  readonly ips: readonly string[];
}

export function parsePrevResult(v: unknown): PrevResult | undefined {
  const o = objectAt(v, "prevResult", "prevResult");
  if (!o) return undefined;
  const how = 'the runtime passes the result of ADD: {"ips": [{"address": "198.18.0.5/24", ...}], "interfaces": [...], ...}';
  const ifs = o["interfaces"];
  if (ifs !== undefined && !Array.isArray(ifs)) throw confError("prevResult", `prevResult.interfaces must be a list, not ${show(ifs)}`, how);
  const ips = o["ips"];
  if (ips === undefined) return { ips: [] };
  if (!Array.isArray(ips)) throw confError("prevResult", `prevResult.ips must be a list, not ${show(ips)}`, how);
  return {
    ips: ips.map((ip: unknown, i) => {
      const a = (ip as { address?: unknown } | null)?.address;
      if (typeof ip !== "object" || ip === null || typeof a !== "string") throw confError("prevResult", `prevResult.ips[${i}] needs an "address" string, got ${show(ip)}`, how);
      const text = a.split("/")[0] ?? "";
      // IPv6 compared in weft's own form, so that "2001:DB8:0::5" matches 2001:db8::5.
      try {
        return text.includes(":") ? formatIpv6(parseIpv6(text)) : text;
      } catch {
        return text;
      }
    }),
  };
}

/** GC's "cni.dev/valid-attachments": the keys "container/ifname" to keep. */
export function parseValidAttachments(v: unknown): Set<string> {
  if (v === undefined) {
    throw confError("attachments", 'GC needs "cni.dev/valid-attachments" (the attachments to keep)', "pass an empty list to release everything of this network");
  }
  if (!Array.isArray(v)) throw confError("attachments", '"cni.dev/valid-attachments" must be a list of {"containerID", "ifname"}');
  const out = new Set<string>();
  for (const a of v as { containerID?: unknown; ifname?: unknown }[]) {
    if (typeof a !== "object" || a === null || typeof a.containerID !== "string" || typeof a.ifname !== "string") {
      throw confError("attachments", `"cni.dev/valid-attachments" entry ${show(a)} needs string containerID and ifname`);
    }
    out.add(`${a.containerID}/${a.ifname}`);
  }
  return out;
}

/** True when `v` nests deeper than `max` arrays/objects. Iterative: a hostile depth cannot overflow the stack. */
export function nestedDeeper(v: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[v, 0]];
  while (stack.length > 0) {
    const [x, d] = stack.pop() as [unknown, number];
    if (typeof x !== "object" || x === null) continue;
    if (d >= max) return true;
    for (const y of Array.isArray(x) ? x : Object.values(x)) if (typeof y === "object" && y !== null) stack.push([y, d + 1]);
  }
  return false;
}
