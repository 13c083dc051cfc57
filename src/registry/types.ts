import { isIP, SocketAddress } from "node:net";
import { z } from "zod";
import { RegistryEntryError, type EntryIssue } from "./errors.js";

/**
 * The service registry's entries, as stored in etcd:
 *
 *   <prefix>/services/<namespace>/<name>            → ServiceSpec JSON
 *   <prefix>/endpoints/<namespace>/<service>/<id>   → EndpointSpec JSON (often on an etcd lease)
 *
 * The same schemas check what is written (strict: unknown fields are refused,
 * a typo would be lost otherwise) and what is read (unknown fields are
 * ignored, so newer writers do not break older readers).
 */

export const SERVICE_TYPES = ["ClusterIP", "Headless", "ExternalName"] as const;
export type ServiceType = (typeof SERVICE_TYPES)[number];
export const PROTOCOLS = ["TCP", "UDP", "SCTP"] as const;
export type Protocol = (typeof PROTOCOLS)[number];

export const DEFAULT_REGISTRY_PREFIX = "/weft/registry";

export interface ServicePort {
  /** DNS-1123 label of at most 15 characters; unique within its list. */
  readonly name?: string | undefined;
  readonly protocol: Protocol;
  readonly port: number;
}

/** The JSON value of a service key. */
export interface ServiceSpec {
  readonly type: ServiceType;
  /** Canonical text (IPv6 lowercase, compressed); ≥1 for ClusterIP, none for Headless and ExternalName. */
  readonly clusterIPs: readonly string[];
  /** Lowercase, without a trailing dot; ExternalName only. */
  readonly externalName?: string | undefined;
  readonly ports: readonly ServicePort[];
  readonly publishNotReadyAddresses: boolean;
  /** Kubernetes-style labels (subscribers of the discovery API select by them). */
  readonly labels?: Readonly<Record<string, string>> | undefined;
}

/** The JSON value of an endpoint key. */
export interface EndpointSpec {
  /** ≥1, canonical text. */
  readonly addresses: readonly string[];
  readonly hostname?: string | undefined;
  readonly ready: boolean;
  readonly nodeName?: string | undefined;
  readonly ports: readonly ServicePort[];
  readonly labels?: Readonly<Record<string, string>> | undefined;
}

export interface Service extends ServiceSpec {
  readonly namespace: string;
  readonly name: string;
}

export interface Endpoint extends EndpointSpec {
  readonly namespace: string;
  /** The name of the service this endpoint backs. */
  readonly service: string;
  readonly id: string;
}

export type RegistryKey =
  | { readonly kind: "service"; readonly namespace: string; readonly name: string }
  | { readonly kind: "endpoint"; readonly namespace: string; readonly service: string; readonly id: string };

// ------------------------------------------------------------------ names and addresses

const LABEL_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const ID_RE = /^[A-Za-z0-9._-]{1,253}$/;
const LABEL_HELP = "lowercase letters, digits and '-', starting and ending with a letter or digit";

/** Why `s` is not a DNS-1123 label of at most `max` characters, or undefined when it is one. */
export function labelProblem(s: string, max = 63): string | undefined {
  if (s.length === 0) return "is empty; give a DNS-1123 label (" + LABEL_HELP + ")";
  if (s.length > max) return `"${s}" is ${s.length} characters long; at most ${max}`;
  if (!LABEL_RE.test(s)) return `"${s}" is not a DNS-1123 label (${LABEL_HELP})`;
  return undefined;
}

/** Kubernetes label keys: an optional DNS-subdomain prefix and "/", then a name of 1-63 characters; values up to 63. */
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;
const LABEL_PREFIX = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** Labels one entry may carry. */
export const MAX_ENTRY_LABELS = 32;

/** Why `k` is not a label key (app, example.com/tier), or undefined. */
export function labelKeyProblem(k: string): string | undefined {
  const slash = k.lastIndexOf("/");
  const prefix = slash < 0 ? undefined : k.slice(0, slash);
  const name = slash < 0 ? k : k.slice(slash + 1);
  if (LABEL_NAME.test(name) && (prefix === undefined || (prefix.length <= 253 && LABEL_PREFIX.test(prefix)))) return undefined;
  return "is not a label key like app or example.com/tier (a name of 1-63 letters, digits, - _ ., optionally after a DNS prefix and /)";
}

/** Why `v` is not a label value, or undefined. */
export function labelValueProblem(v: string): string | undefined {
  return LABEL_VALUE.test(v) ? undefined : "is not a label value (at most 63 letters, digits, - _ ., starting and ending alphanumeric)";
}

/** Why `s` is not an endpoint id, or undefined when it is one. */
export function idProblem(s: string): string | undefined {
  return ID_RE.test(s) ? undefined : `"${s}" is not an endpoint id (1-253 of A-Z a-z 0-9 . _ -)`;
}

/** The canonical text of an IPv4 or IPv6 address (IPv6 lowercase and compressed), or undefined. */
export function canonicalIp(s: string): string | undefined {
  if (s.includes("%")) return undefined; // zone indexes mean nothing off this host
  const v = isIP(s);
  if (v === 0) return undefined;
  return new SocketAddress({ address: s, family: v === 6 ? "ipv6" : "ipv4" }).address;
}

/** A DNS name, lowercased and without a trailing dot, or undefined when it is not one. */
export function canonicalDnsName(s: string): string | undefined {
  const t = s.toLowerCase().replace(/\.$/, "");
  if (t.length === 0 || t.length > 253) return undefined;
  return t.split(".").every((l) => l.length <= 63 && LABEL_RE.test(l)) ? t : undefined;
}

// ------------------------------------------------------------------ schemas

/** A value in a message, whatever it is: JSON text, or its tag when even that fails (an object without a toString). */
function shown(v: unknown): string {
  try {
    return typeof v === "string" ? v : JSON.stringify(v) ?? String(v);
  } catch {
    return Object.prototype.toString.call(v);
  }
}

type ErrorFn = (iss: { input?: unknown }) => string;
const want = (what: string): ErrorFn => (iss) => (iss.input === undefined ? `is required: ${what}` : `must be ${what}`);

const label = (max: number) => z.string({ error: want(`a DNS-1123 label (${LABEL_HELP})`) }).check((ctx) => {
  const p = labelProblem(ctx.value, max);
  if (p) ctx.issues.push({ code: "custom", message: p, input: ctx.value });
});

const ip = z.string({ error: want('an IPv4 or IPv6 address in quotes, e.g. "198.18.1.5"') }).transform((s, ctx) => {
  const c = canonicalIp(s);
  if (c === undefined) {
    ctx.issues.push({ code: "custom", message: `"${s}" is not an IPv4 or IPv6 address (e.g. 198.18.1.5 or fd00::5)`, input: s });
    return z.NEVER;
  }
  return c;
});

const ipList = (what: string) => z.array(ip, { error: want(`a list of ${what}`) }).check((ctx) => {
  ctx.value.forEach((a, i) => {
    if (ctx.value.indexOf(a) !== i) ctx.issues.push({ code: "custom", path: [i], message: `"${a}" is listed twice`, input: a });
  });
});

const dnsName = z.string({ error: want("a DNS name, e.g. db.example.com") }).transform((s, ctx) => {
  const c = canonicalDnsName(s);
  if (c === undefined) {
    ctx.issues.push({ code: "custom", message: `"${s}" is not a DNS name (dot-separated DNS-1123 labels, at most 253 characters, e.g. db.example.com)`, input: s });
    return z.NEVER;
  }
  return c;
});

const labels = z.record(z.string(), z.string({ error: want("a string label value") })).check((ctx) => {
  const entries = Object.entries(ctx.value);
  if (entries.length > MAX_ENTRY_LABELS) ctx.issues.push({ code: "custom", message: `has ${entries.length} labels; at most ${MAX_ENTRY_LABELS}`, input: ctx.value });
  for (const [k, v] of entries) {
    const p = labelKeyProblem(k) ?? labelValueProblem(v);
    if (p) ctx.issues.push({ code: "custom", path: [k], message: `${JSON.stringify(k)}: ${JSON.stringify(v)} ${p}`, input: v });
  }
}).optional();

const PORT_FIELDS = ["name", "protocol", "port"];
const SERVICE_FIELDS = ["type", "clusterIPs", "externalName", "ports", "publishNotReadyAddresses", "labels"];
const ENDPOINT_FIELDS = ["addresses", "hostname", "ready", "nodeName", "ports", "labels"];

function schemas(strict: boolean) {
  const object = strict ? z.strictObject : z.object;
  const port = object({
    name: label(15).optional(),
    protocol: z.enum(PROTOCOLS, { error: (iss) => `${iss.input === undefined ? "is required" : `"${shown(iss.input)}" is not a protocol`}: TCP, UDP or SCTP` }).default("TCP"),
    port: z.number({ error: want("a port number 1-65535") }).int("must be a whole number 1-65535").min(1, "must be 1-65535").max(65535, "must be 1-65535"),
  }, { error: 'must be an object like {"name":"http","protocol":"TCP","port":80}' });
  const ports = z.array(port, { error: want("a list of ports") }).default([]).check((ctx) => {
    const names = ctx.value.map((p) => p.name);
    names.forEach((n, i) => {
      if (n !== undefined && names.indexOf(n) !== i) ctx.issues.push({ code: "custom", path: [i, "name"], message: `"${n}" is used by two ports; port names must be unique`, input: n });
    });
  });
  const service = object({
    type: z.enum(SERVICE_TYPES, { error: (iss) => `${iss.input === undefined ? "is required" : `"${shown(iss.input)}" is not a service type`}: ClusterIP, Headless or ExternalName` }),
    clusterIPs: ipList("IPv4 or IPv6 addresses").default([]),
    externalName: dnsName.optional(),
    ports,
    publishNotReadyAddresses: z.boolean({ error: want("true or false") }).default(false),
    labels,
  }, { error: "must be a JSON object" }).check((ctx) => {
    const s = ctx.value;
    const add = (field: string, message: string): void => void ctx.issues.push({ code: "custom", path: [field], message, input: s });
    if (s.type === "ClusterIP" && s.clusterIPs.length === 0) add("clusterIPs", "is required for type ClusterIP: give at least one IPv4 or IPv6 address (or use type Headless for a service without one)");
    if (s.type !== "ClusterIP" && s.clusterIPs.length > 0) add("clusterIPs", `must be empty for type ${s.type} (only ClusterIP services have cluster IPs)`);
    if (s.type === "ExternalName" && s.externalName === undefined) add("externalName", "is required for type ExternalName: give the DNS name the service is an alias of, e.g. db.example.com");
    if (s.type !== "ExternalName" && s.externalName !== undefined) add("externalName", `is only for type ExternalName; remove it or set type ExternalName (the type is ${s.type})`);
  });
  const endpoint = object({
    addresses: ipList("IPv4 or IPv6 addresses").min(1, "must list at least one IPv4 or IPv6 address"),
    hostname: label(63).optional(),
    ready: z.boolean({ error: want("true or false") }).default(true),
    nodeName: z.string({ error: want("a string") }).min(1, "must not be empty").max(253, "is longer than 253 characters").optional(),
    ports,
    labels,
  }, { error: "must be a JSON object" });
  return { service, endpoint };
}

const STRICT = schemas(true);
const LOOSE = schemas(false);

export type ServiceInput = z.input<typeof STRICT.service>;
export type EndpointInput = z.input<typeof STRICT.endpoint>;

// The schemas' outputs are the declared types.
const _svc: (v: z.output<typeof STRICT.service>) => ServiceSpec = (v) => v;
const _ep: (v: z.output<typeof STRICT.endpoint>) => EndpointSpec = (v) => v;
void _svc;
void _ep;

export interface ParseOptions {
  /** Refuse unknown fields (writes). Reads ignore them. Default false. */
  readonly strict?: boolean;
}

function pathText(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === "number" ? `[${p}]` : `${i === 0 ? "" : "."}${String(p)}`)).join("");
}

function toIssues(err: z.ZodError, topFields: readonly string[], what: string): EntryIssue[] {
  const out: EntryIssue[] = [];
  for (const i of err.issues) {
    const base = pathText(i.path);
    if (i.code === "unrecognized_keys") {
      const inPort = i.path.length > 0;
      const fields = inPort ? PORT_FIELDS : topFields;
      for (const k of i.keys) {
        out.push({ field: base ? `${base}.${k}` : k, message: `is not a field of ${inPort ? "a port" : what} (the fields are ${fields.join(", ")}; names are case-sensitive)` });
      }
      continue;
    }
    const input = (i as { input?: unknown }).input;
    let message = i.message;
    if ((typeof input === "number" || typeof input === "boolean" || typeof input === "string") && !message.includes(JSON.stringify(input))) {
      message += ` (got ${JSON.stringify(input)})`;
    }
    out.push({ field: base, message });
  }
  return out;
}

function validate<T>(schema: z.ZodType<T>, input: unknown, subject: string, fields: readonly string[], what: string): T {
  const r = schema.safeParse(input, { reportInput: true });
  if (!r.success) throw new RegistryEntryError(subject, toIssues(r.error, fields, what));
  return r.data;
}

/** Checks and normalises a service value. Throws RegistryEntryError naming each wrong field. */
export function validateService(input: unknown, subject = "service", opts: ParseOptions = {}): ServiceSpec {
  return validate<ServiceSpec>(opts.strict ? STRICT.service : LOOSE.service, input, subject, SERVICE_FIELDS, "a service");
}

/** Checks and normalises an endpoint value. Throws RegistryEntryError naming each wrong field. */
export function validateEndpoint(input: unknown, subject = "endpoint", opts: ParseOptions = {}): EndpointSpec {
  return validate<EndpointSpec>(opts.strict ? STRICT.endpoint : LOOSE.endpoint, input, subject, ENDPOINT_FIELDS, "an endpoint");
}

function parseJson(text: string, subject: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new RegistryEntryError(subject, [{ field: "", message: `is not JSON: ${(e as Error).message}` }]);
  }
}

export function parseServiceJson(text: string, subject = "service", opts: ParseOptions = {}): ServiceSpec {
  return validateService(parseJson(text, subject), subject, opts);
}

export function parseEndpointJson(text: string, subject = "endpoint", opts: ParseOptions = {}): EndpointSpec {
  return validateEndpoint(parseJson(text, subject), subject, opts);
}

const portJson = (p: ServicePort): ServicePort => ({ name: p.name, protocol: p.protocol, port: p.port });

/** The stored JSON of a service (the spec's fields only, in a fixed order). */
export function encodeService(s: ServiceSpec): string {
  return JSON.stringify({
    type: s.type, clusterIPs: s.clusterIPs, externalName: s.externalName, ports: s.ports.map(portJson), publishNotReadyAddresses: s.publishNotReadyAddresses,
    ...(s.labels && Object.keys(s.labels).length > 0 ? { labels: s.labels } : {}),
  });
}

/** The stored JSON of an endpoint (the spec's fields only, in a fixed order). */
export function encodeEndpoint(e: EndpointSpec): string {
  return JSON.stringify({
    addresses: e.addresses, hostname: e.hostname, ready: e.ready, nodeName: e.nodeName, ports: e.ports.map(portJson),
    ...(e.labels && Object.keys(e.labels).length > 0 ? { labels: e.labels } : {}),
  });
}

// ------------------------------------------------------------------ keys

/** The prefix without trailing slashes; it must start with "/". */
export function normalizePrefix(prefix: string): string {
  return prefix.replace(/\/+$/, "");
}

export function serviceKey(prefix: string, namespace: string, name: string): string {
  return `${normalizePrefix(prefix)}/services/${namespace}/${name}`;
}

export function endpointKey(prefix: string, namespace: string, service: string, id: string): string {
  return `${normalizePrefix(prefix)}/endpoints/${namespace}/${service}/${id}`;
}

/** The prefix under which every endpoint of one service lives (ends with "/"). */
export function endpointsPrefix(prefix: string, namespace: string, service: string): string {
  return `${normalizePrefix(prefix)}/endpoints/${namespace}/${service}/`;
}

/** What a key names, or why it is not a registry key. */
export function classifyRegistryKey(prefix: string, key: string): RegistryKey | { readonly reason: string } {
  const p = `${normalizePrefix(prefix)}/`;
  const shape = `not a registry key (expected ${p}services/<namespace>/<name> or ${p}endpoints/<namespace>/<service>/<id>)`;
  if (!key.startsWith(p)) return { reason: shape };
  const parts = key.slice(p.length).split("/");
  const check = (what: string, v: string, problem: string | undefined): string | undefined => (problem ? `${what} ${problem}` : undefined);
  if (parts[0] === "services" && parts.length === 3) {
    const [, namespace = "", name = ""] = parts;
    const bad = check("namespace", namespace, labelProblem(namespace)) ?? check("name", name, labelProblem(name));
    return bad ? { reason: `key: ${bad}` } : { kind: "service", namespace, name };
  }
  if (parts[0] === "endpoints" && parts.length === 4) {
    const [, namespace = "", service = "", id = ""] = parts;
    const bad = check("namespace", namespace, labelProblem(namespace)) ?? check("service", service, labelProblem(service)) ?? check("id", id, idProblem(id));
    return bad ? { reason: `key: ${bad}` } : { kind: "endpoint", namespace, service, id };
  }
  return { reason: shape };
}

export function parseRegistryKey(prefix: string, key: string): RegistryKey | undefined {
  const r = classifyRegistryKey(prefix, key);
  return "reason" in r ? undefined : r;
}
