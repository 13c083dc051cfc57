import type { Command } from "commander";
import { ConfigError } from "../../common/errors.js";
import { createLogger, silentLogger, type Logger } from "../../common/log.js";
import { formatIssue, RegistryEntryError } from "../../registry/errors.js";
import type { EndpointHandle, RegistrySnapshot, ServiceRegistry } from "../../registry/store.js";
import { addEtcdOptions, etcdClientOptions, explainEtcdErrors, type EtcdFlagValues } from "../etcd-flags.js";
import { PROTOCOLS, SERVICE_TYPES, type Endpoint, type Protocol, type Service, type ServicePort } from "../../registry/types.js";

/**
 * `weft svc`: publish, remove, list and watch services and endpoints in the
 * registry (etcd). Flag values are checked by the registry's schema; its
 * complaints are reworded to name the flag.
 */

interface Common extends EtcdFlagValues {
  registryPrefix: string;
}

const common = (c: Command): Command => addEtcdOptions(c, { registry: true });

async function open(o: Common, log: Logger = createLogger("weft-svc")): Promise<ServiceRegistry> {
  const { ServiceRegistry } = await import("../../registry/store.js");
  return new ServiceRegistry({ ...etcdClientOptions(o), prefix: o.registryPrefix }, log);
}

const collect = (v: string, prev: string[]): string[] => [...prev, v];

/** "<a>/<b>[/<c>]" split into exactly `n` non-empty parts. */
function ref(text: string, n: number, what: string, shape: string): string[] {
  const parts = text.split("/");
  if (parts.length !== n || parts.some((p) => p === "")) {
    throw new ConfigError(`${what} "${text}" must be written ${shape}`, { hint: `e.g. ${n === 2 ? "default/web" : "default/web/web-0"}` });
  }
  return parts;
}

/** `[name:][protocol:]port`, e.g. http:TCP:80, dns:UDP:53, TCP:80, 8080. */
export function parsePortFlag(text: string): ServicePort {
  const bad = (why: string): never => {
    throw new ConfigError(`--port "${text}": ${why}`, { hint: "write [name:][protocol:]port, e.g. http:TCP:80, dns:UDP:53, TCP:443 or 8080" });
  };
  const parts = text.split(":");
  if (parts.length > 3) bad("too many ':'");
  const portText = parts[parts.length - 1] ?? "";
  if (!/^\d{1,6}$/.test(portText)) bad(`port "${portText}" is not a number`);
  let name: string | undefined;
  let proto = "TCP";
  if (parts.length === 3) [name, proto] = [parts[0] ?? "", parts[1] ?? ""];
  else if (parts.length === 2) {
    const first = parts[0] ?? "";
    if ((PROTOCOLS as readonly string[]).includes(first.toUpperCase())) proto = first;
    else name = first;
  }
  const protocol = proto.toUpperCase();
  if (!(PROTOCOLS as readonly string[]).includes(protocol)) bad(`protocol "${proto}" is not TCP, UDP or SCTP`);
  return { ...(name ? { name } : {}), protocol: protocol as Protocol, port: Number(portText) };
}

const portText = (p: ServicePort): string => `${p.name ? `${p.name}:` : ""}${p.protocol}:${p.port}`;

/** Rewords a registry complaint about JSON fields into one about the flags they came from. */
function asFlagError(e: unknown, flags: Record<string, string>, raw: Record<string, readonly string[]>): unknown {
  if (!(e instanceof RegistryEntryError)) return e;
  const parts = e.issues.map((i) => {
    const m = /^(\w+)(?:\[(\d+)\])?(?:\.(.+))?$/.exec(i.field);
    const flag = m?.[1] ? flags[m[1]] : undefined;
    if (!m || !flag) return formatIssue(i);
    const given = m[2] !== undefined && m[3] !== undefined ? raw[m[1] ?? ""]?.[Number(m[2])] : undefined;
    return `${flag}${given !== undefined ? ` "${given}"` : ""}: ${m[3] ? `${m[3]} ` : ""}${i.message}`;
  });
  return new ConfigError(`${e.subject}: ${parts.join("; ")}`);
}

function jsonArg(text: string, conflicting: string[]): unknown {
  if (conflicting.length > 0) throw new ConfigError(`--json gives the whole entry; do not combine it with ${conflicting.join(", ")}`);
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new ConfigError(`--json is not JSON: ${(e as Error).message}`, { hint: "quote it for the shell: --json '{\"...\": ...}'" });
  }
}

/** Resolves at the first SIGINT or SIGTERM. */
function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (s: NodeJS.Signals): void => {
      process.off("SIGINT", on);
      process.off("SIGTERM", on);
      resolve(s);
    };
    process.on("SIGINT", on);
    process.on("SIGTERM", on);
  });
}

interface PutServiceOpts extends Common { type?: string; clusterIp: string[]; port: string[]; externalName?: string; publishNotReady?: boolean; label: string[]; json?: string }
interface PutEndpointOpts extends Common { address: string[]; hostname?: string; notReady?: boolean; nodeName?: string; port: string[]; label: string[]; ttl?: string; json?: string }

/** --label k=v flags as a labels object (the registry checks the keys and values). */
function labelFlags(flags: readonly string[]): Record<string, string> | undefined {
  if (flags.length === 0) return undefined;
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const f of flags) {
    const eq = f.indexOf("=");
    if (eq <= 0) throw new ConfigError(`--label "${f}": write key=value, e.g. --label app=web`);
    out[f.slice(0, eq)] = f.slice(eq + 1);
  }
  return { ...out };
}

async function putService(refText: string, o: PutServiceOpts): Promise<void> {
  const [ns = "", name = ""] = ref(refText, 2, "service", "<namespace>/<name>");
  let input: unknown;
  if (o.json !== undefined) {
    const given = [o.type && "--type", o.clusterIp.length && "--cluster-ip", o.port.length && "--port", o.externalName && "--external-name", o.publishNotReady && "--publish-not-ready", o.label.length && "--label"];
    input = jsonArg(o.json, given.filter((g): g is string => typeof g === "string"));
  } else {
    const type = o.type === undefined ? "ClusterIP" : (SERVICE_TYPES.find((t) => t.toLowerCase() === o.type?.toLowerCase()) ?? o.type);
    input = {
      type, clusterIPs: o.clusterIp, ports: o.port.map(parsePortFlag),
      ...(o.externalName !== undefined ? { externalName: o.externalName } : {}), publishNotReadyAddresses: o.publishNotReady === true,
      ...(o.label.length > 0 ? { labels: labelFlags(o.label) } : {}),
    };
  }
  const reg = await open(o);
  try {
    const flags = { type: "--type", clusterIPs: "--cluster-ip", ports: "--port", externalName: "--external-name", publishNotReadyAddresses: "--publish-not-ready", labels: "--label" };
    const s = await reg.putService(ns, name, input as Service).catch((e: unknown) => {
      throw o.json === undefined ? asFlagError(e, flags, { ports: o.port, clusterIPs: o.clusterIp }) : e;
    });
    const { encodeService, serviceKey } = await import("../../registry/types.js");
    console.log(`${serviceKey(reg.prefix, ns, name)} = ${encodeService(s)}`);
  } finally {
    reg.close();
  }
}

async function putEndpoint(refText: string, o: PutEndpointOpts): Promise<void> {
  const [ns = "", svc = "", id = ""] = ref(refText, 3, "endpoint", "<namespace>/<service>/<id>");
  let ttlSec: number | undefined;
  if (o.ttl !== undefined) {
    if (!/^\d+$/.test(o.ttl) || Number(o.ttl) < 1) throw new ConfigError(`--ttl must be a whole number of seconds ≥ 1, got "${o.ttl}"`);
    ttlSec = Number(o.ttl);
  }
  let input: unknown;
  if (o.json !== undefined) {
    const given = [o.address.length && "--address", o.hostname && "--hostname", o.notReady && "--not-ready", o.nodeName && "--node-name", o.port.length && "--port", o.label.length && "--label"];
    input = jsonArg(o.json, given.filter((g): g is string => typeof g === "string"));
  } else {
    input = {
      addresses: o.address, ports: o.port.map(parsePortFlag), ready: o.notReady !== true,
      ...(o.hostname !== undefined ? { hostname: o.hostname } : {}), ...(o.nodeName !== undefined ? { nodeName: o.nodeName } : {}),
      ...(o.label.length > 0 ? { labels: labelFlags(o.label) } : {}),
    };
  }
  const reg = await open(o);
  try {
    const flags = { addresses: "--address", hostname: "--hostname", ready: "--not-ready", nodeName: "--node-name", ports: "--port", ttlSec: "--ttl", labels: "--label" };
    const h: EndpointHandle = await reg.putEndpoint(ns, svc, id, input as Endpoint, { ttlSec }).catch((e: unknown) => {
      throw o.json === undefined ? asFlagError(e, flags, { ports: o.port, addresses: o.address }) : e;
    });
    const { encodeEndpoint } = await import("../../registry/types.js");
    if (ttlSec === undefined) {
      console.log(`${h.key} = ${encodeEndpoint(h.endpoint)}`);
      return;
    }
    console.log(`${h.key} = ${encodeEndpoint(h.endpoint)} on lease ${h.leaseId} (ttl ${ttlSec} s)`);
    console.log("keeping the lease alive in the foreground; SIGINT (Ctrl-C) or SIGTERM revokes it and removes the endpoint");
    const sig = await untilSignal();
    await h.revoke();
    console.log(`${sig}: revoked lease ${h.leaseId}; ${h.key} removed`);
  } finally {
    reg.close();
  }
}

function printSnapshot(snap: RegistrySnapshot, prefix: string): void {
  const eps = (e: Endpoint): string => [
    e.ready ? "ready" : "not-ready", e.addresses.join(","), e.ports.map(portText).join(",") || "-",
    e.hostname ? `hostname=${e.hostname}` : "", e.nodeName ? `node=${e.nodeName}` : "",
  ].filter(Boolean).join("  ");
  if (snap.services.length === 0 && snap.endpoints.length === 0) console.log(`no services under ${prefix}/`);
  const w = Math.max(24, ...snap.services.map((s) => s.namespace.length + s.name.length + 2));
  if (snap.services.length > 0) console.log(`${"SERVICE".padEnd(w)} ${"TYPE".padEnd(12)} ${"ADDRESS".padEnd(24)} PORTS`);
  const shown = new Set<Endpoint>();
  for (const s of snap.services) {
    const addr = s.type === "ExternalName" ? (s.externalName ?? "") : s.clusterIPs.join(",") || "-";
    const extra = s.publishNotReadyAddresses ? "  publish-not-ready" : "";
    console.log(`${`${s.namespace}/${s.name}`.padEnd(w)} ${s.type.padEnd(12)} ${addr.padEnd(24)} ${s.ports.map(portText).join(",") || "-"}${extra}`);
    const mine = snap.endpoints.filter((e) => e.namespace === s.namespace && e.service === s.name);
    if (mine.length === 0 && s.type !== "ExternalName") console.log("  (no endpoints)");
    for (const e of mine) {
      shown.add(e);
      console.log(`  ${e.id.padEnd(w - 2)} ${eps(e)}`);
    }
  }
  const orphans = snap.endpoints.filter((e) => !shown.has(e));
  if (orphans.length > 0) {
    console.log("endpoints of services that do not exist:");
    for (const e of orphans) console.log(`  ${`${e.namespace}/${e.service}/${e.id}`.padEnd(w - 2)} ${eps(e)}`);
  }
  if (snap.skipped.length > 0) {
    console.log(`skipped ${snap.skipped.length} ${snap.skipped.length === 1 ? "entry" : "entries"} weft cannot use:`);
    for (const s of snap.skipped) console.log(`  ${s.key}: ${s.reason}`);
  }
}

export function registerSvc(program: Command): void {
  const svc = program.command("svc").description("publish and watch services in the registry (put, rm, ls, watch)");
  const put = svc.command("put").description("publish a service or an endpoint");
  common(put.command("service").description("write a service: <namespace>/<name>").argument("<ref>", "<namespace>/<name>"))
    .option("--type <type>", "ClusterIP | Headless | ExternalName (default ClusterIP)")
    .option("--cluster-ip <ip>", "a cluster IP (IPv4 or IPv6; repeat for dual stack)", collect, [])
    .option("--port <[name:][protocol:]port>", "a port, e.g. http:TCP:80 (repeat for more)", collect, [])
    .option("--external-name <dns-name>", "the DNS name an ExternalName service aliases")
    .option("--publish-not-ready", "publish endpoints that are not ready too")
    .option("--label <key=value>", "a label (discovery API subscribers select by labels; repeat for more)", collect, [])
    .option("--json <json>", "the whole service as JSON instead of the flags above")
    .action((r: string, o: PutServiceOpts) => explainEtcdErrors(o, () => putService(r, o)));
  common(put.command("endpoint").description("write an endpoint: <namespace>/<service>/<id>").argument("<ref>", "<namespace>/<service>/<id>"))
    .option("--address <ip>", "an address of the endpoint (repeat for more)", collect, [])
    .option("--hostname <label>", "the endpoint's hostname (DNS-1123 label)")
    .option("--not-ready", "mark it not ready")
    .option("--node-name <name>", "the node it runs on")
    .option("--port <[name:][protocol:]port>", "a port, e.g. http:TCP:8080 (repeat for more)", collect, [])
    .option("--label <key=value>", "a label (repeat for more)", collect, [])
    .option("--ttl <seconds>", "attach it to an etcd lease and stay in the foreground keeping it alive; revoked on SIGINT/SIGTERM")
    .option("--json <json>", "the whole endpoint as JSON instead of the flags above")
    .action((r: string, o: PutEndpointOpts) => explainEtcdErrors(o, () => putEndpoint(r, o)));

  const rm = svc.command("rm").description("remove a service (with its endpoints) or an endpoint");
  common(rm.command("service").description("remove a service and every endpoint under it").argument("<ref>", "<namespace>/<name>"))
    .action(async (r: string, o: Common) => {
      const [ns = "", name = ""] = ref(r, 2, "service", "<namespace>/<name>");
      const reg = await open(o);
      try {
        const res = await explainEtcdErrors(o, () => reg.removeService(ns, name));
        if (!res.service && res.endpoints === 0) {
          console.error(`weft: service ${ns}/${name} does not exist under ${reg.prefix}/`);
          process.exitCode = 1;
          return;
        }
        console.log(`removed ${res.service ? `service ${ns}/${name}` : `no service ${ns}/${name} (there was none)`} and ${res.endpoints} endpoint${res.endpoints === 1 ? "" : "s"}`);
      } finally {
        reg.close();
      }
    });
  common(rm.command("endpoint").description("remove one endpoint").argument("<ref>", "<namespace>/<service>/<id>"))
    .action(async (r: string, o: Common) => {
      const [ns = "", s = "", id = ""] = ref(r, 3, "endpoint", "<namespace>/<service>/<id>");
      const reg = await open(o);
      try {
        if (!(await explainEtcdErrors(o, () => reg.removeEndpoint(ns, s, id)))) {
          console.error(`weft: endpoint ${ns}/${s}/${id} does not exist under ${reg.prefix}/`);
          process.exitCode = 1;
          return;
        }
        console.log(`removed endpoint ${ns}/${s}/${id}`);
      } finally {
        reg.close();
      }
    });

  common(svc.command("ls").description("list services with their endpoints, and entries that cannot be used"))
    .option("--json", "print the snapshot as JSON")
    .action(async (o: Common & { json?: boolean }) => {
      const reg = await open(o, silentLogger); // skipped entries are printed, not logged
      try {
        const snap = await explainEtcdErrors(o, () => reg.snapshot());
        if (o.json) console.log(JSON.stringify(snap, null, 2));
        else printSnapshot(snap, reg.prefix);
      } finally {
        reg.close();
      }
    });

  common(svc.command("watch").description('stream changes as JSON lines: existing entries (op "put"), {"synced":true}, then live changes; Ctrl-C stops'))
    .action(async (o: Common) => {
      const reg = await open(o);
      const { RegistryWatcher } = await import("../../registry/watch.js");
      const w = new RegistryWatcher(reg);
      const out = (v: unknown): void => void process.stdout.write(`${JSON.stringify(v)}\n`);
      w.on("change", (c) => out(c));
      w.on("synced", () => out({ synced: true }));
      const stop = untilSignal();
      try {
        void w.start();
        await stop;
      } finally {
        await w.close();
        reg.close();
      }
    });
}
