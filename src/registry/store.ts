import type { Etcd3, IKeyValue, Lease, Watcher } from "etcd3";
import { ConfigError, WeftError } from "../common/errors.js";
import { clientFrom, listPrefix, watchPrefix, type EtcdClientOptions, type SharedEtcdClient } from "../common/etcd-client.js";
import { silentLogger, type Logger } from "../common/log.js";
import { RegistryEntryError, RegistryUnavailableError, type EntryIssue } from "./errors.js";
import {
  classifyRegistryKey, DEFAULT_REGISTRY_PREFIX, encodeEndpoint, encodeService, endpointKey, endpointsPrefix, idProblem,
  labelProblem, normalizePrefix, parseEndpointJson, parseServiceJson, serviceKey, validateEndpoint, validateService,
  type Endpoint, type EndpointInput, type EndpointSpec, type RegistryKey, type Service, type ServiceInput, type ServiceSpec,
} from "./types.js";


/**
 * Where the registry's client comes from: endpoints (and TLS files) to make
 * its own, closed by close(); or `client`, shared with others (the agent's
 * one client) and left open by close().
 */
export type ServiceRegistryOptions = (EtcdClientOptions | SharedEtcdClient) & {
  /** Key prefix; default /weft/registry. */
  readonly prefix?: string | undefined;
};

/** A key under the prefix whose value (or name) weft cannot use: reported and skipped, never fatal. */
export interface SkippedEntry {
  readonly key: string;
  readonly reason: string;
}

export interface RegistrySnapshot {
  /** The store revision it was read at: watch from revision + 1. */
  readonly revision: string;
  readonly services: Service[];
  readonly endpoints: Endpoint[];
  readonly skipped: SkippedEntry[];
}

export type RegistryEntry = { readonly kind: "service"; readonly value: Service } | { readonly kind: "endpoint"; readonly value: Endpoint };

/** One change seen by a watch. A skip carries the key it names when the key itself is well-formed. */
export type RegistryWatchEvent =
  | { readonly type: "put"; readonly entry: RegistryEntry }
  | { readonly type: "delete"; readonly key: RegistryKey }
  | { readonly type: "skip"; readonly skipped: SkippedEntry; readonly key: RegistryKey | undefined };

/** A published endpoint. With a TTL, its etcd lease is kept alive until revoke() or close(). */
export interface EndpointHandle {
  readonly key: string;
  readonly endpoint: Endpoint;
  /** The etcd lease the key is attached to ("0": none). It changes when a lost lease is replaced. */
  readonly leaseId: string;
  /** Removes the endpoint now (revokes its lease, or deletes the key when it has none). */
  revoke(): Promise<void>;
  /** Stops the keepalive: a leased key disappears when its TTL runs out; a plain key stays. */
  close(): void;
}

export interface PutEndpointOptions {
  /** Attach the key to an etcd lease of this many seconds, kept alive by the returned handle. */
  readonly ttlSec?: number | undefined;
  /**
   * Write the key on this lease, which the caller grants and keeps alive (one
   * lease for many endpoints: the agent's publications). Not with `ttlSec`.
   * The returned handle's close() does nothing; revoke() deletes the key.
   */
  readonly lease?: Lease | undefined;
  /**
   * With `lease`: write only when the key is absent or already on that lease;
   * an endpoint someone else wrote is never taken over (RegistryConflictError).
   */
  readonly exclusive?: boolean | undefined;
}

/** An exclusive write found the key written by someone else (another lease, or none). */
export class RegistryConflictError extends WeftError {
  readonly code = "WEFT_REGISTRY_CONFLICT";
}

/**
 * The service registry in etcd: services and their endpoints under one
 * prefix. Writes validate strictly and throw RegistryEntryError; reads skip
 * (and log once) whatever does not validate. RegistryWatcher keeps a live view.
 */
export class ServiceRegistry {
  readonly client: Etcd3;
  readonly prefix: string;
  private readonly reported = new Set<string>();
  private readonly handles = new Set<LeasedEndpoint>();
  /** The client was made here (and is closed here), not shared. */
  private readonly ownsClient: boolean;

  constructor(readonly opts: ServiceRegistryOptions, readonly log: Logger = silentLogger) {
    this.prefix = normalizePrefix(opts.prefix ?? DEFAULT_REGISTRY_PREFIX);
    if (!this.prefix.startsWith("/")) throw new ConfigError(`registry prefix "${opts.prefix ?? ""}" must start with / (e.g. ${DEFAULT_REGISTRY_PREFIX})`, { hint: "fix --registry-prefix (WEFT_REGISTRY_PREFIX)" });
    const c = clientFrom(opts);
    this.client = c.client;
    this.ownsClient = c.owned;
  }

  /**
   * Releases every endpoint handle still open (their leased keys expire with
   * their TTL), and the client if it was made here (a shared one stays open
   * for its owner to close).
   */
  close(): void {
    for (const h of [...this.handles]) h.close();
    if (this.ownsClient) this.client.close();
  }

  unavailable(what: string, cause: unknown): RegistryUnavailableError {
    return new RegistryUnavailableError(what, this.opts.endpoints, cause);
  }

  // ------------------------------------------------------------------ writes

  /** Validates and writes a service; returns it as stored. */
  async putService(namespace: string, name: string, svc: ServiceInput | ServiceSpec): Promise<Service> {
    const subject = `service ${namespace}/${name}`;
    checkNames(subject, [["namespace", namespace, labelProblem(namespace)], ["name", name, labelProblem(name)]]);
    const spec = validateService(svc, subject, { strict: true });
    const key = serviceKey(this.prefix, namespace, name);
    try {
      await this.client.put(key).value(encodeService(spec));
    } catch (e) {
      throw this.unavailable(`writing ${key}`, e);
    }
    return { namespace, name, ...spec };
  }

  /** Validates and writes an endpoint, with `ttlSec` on a lease kept alive by the returned handle. */
  async putEndpoint(namespace: string, service: string, id: string, ep: EndpointInput | EndpointSpec, opts: PutEndpointOptions = {}): Promise<EndpointHandle> {
    const subject = `endpoint ${namespace}/${service}/${id}`;
    checkNames(subject, [["namespace", namespace, labelProblem(namespace)], ["service", service, labelProblem(service)], ["id", id, idProblem(id)]]);
    const ttl = opts.ttlSec;
    if (ttl !== undefined && (!Number.isInteger(ttl) || ttl < 1 || ttl > 86400 * 30)) {
      throw new RegistryEntryError(subject, [{ field: "ttlSec", message: `must be a whole number of seconds 1-2592000 (got ${ttl})` }]);
    }
    const spec = validateEndpoint(ep, subject, { strict: true });
    const endpoint: Endpoint = { namespace, service, id, ...spec };
    const key = endpointKey(this.prefix, namespace, service, id);
    const value = encodeEndpoint(spec);
    if (opts.lease) {
      if (ttl !== undefined) throw new RegistryEntryError(subject, [{ field: "ttlSec", message: "give either a TTL or a lease, not both" }]);
      const leaseId = await this.putOnLease(key, value, opts.lease, opts.exclusive === true);
      return {
        key, endpoint, leaseId, close: () => undefined,
        revoke: async () => void (await this.removeEndpoint(namespace, service, id)),
      };
    }
    if (ttl === undefined) {
      try {
        await this.client.put(key).value(value);
      } catch (e) {
        throw this.unavailable(`writing ${key}`, e);
      }
      return {
        key, endpoint, leaseId: "0", close: () => undefined,
        revoke: async () => void (await this.removeEndpoint(namespace, service, id)),
      };
    }
    const h = new LeasedEndpoint(this, key, endpoint, value, ttl, (x) => this.handles.delete(x));
    await h.publish();
    this.handles.add(h);
    return h;
  }

  /** Writes `key` on `lease` (exclusive: only when absent or already on it); the lease's id. */
  private async putOnLease(key: string, value: string, lease: Lease, exclusive: boolean): Promise<string> {
    let id: string;
    try {
      id = await lease.grant();
      if (!exclusive) {
        await lease.put(key).value(value);
        return id;
      }
      const k = Buffer.from(key);
      const put = [{ request_put: { key: k, value: Buffer.from(value), lease: id } }];
      // Absent: create it. Present: overwrite only what is on our lease.
      const created = await this.client.kv.txn({ compare: [{ key: k, target: "Version", result: "Equal", version: 0 }], success: put, failure: [] });
      if (created.succeeded) return id;
      const ours = await this.client.kv.txn({ compare: [{ key: k, target: "Lease", result: "Equal", lease: id }], success: put, failure: [{ request_range: { key: k } }] });
      if (ours.succeeded) return id;
      const held = ours.responses[0]?.response_range?.kvs?.[0];
      const by = held && held.lease !== "0" ? `on etcd lease ${held.lease}` : "without a lease";
      throw new RegistryConflictError(`${key} already exists, written by another publisher (${by}); it is not taken over`, {
        hint: "publish under another id, or have its publisher remove it",
      });
    } catch (e) {
      if (e instanceof RegistryConflictError) throw e;
      throw this.unavailable(`writing ${key} on a lease`, e);
    }
  }

  /** Deletes a service and every endpoint under it, atomically. */
  async removeService(namespace: string, name: string): Promise<{ service: boolean; endpoints: number }> {
    checkNames(`service ${namespace}/${name}`, [["namespace", namespace, labelProblem(namespace)], ["name", name, labelProblem(name)]]);
    const key = serviceKey(this.prefix, namespace, name);
    const eps = Buffer.from(endpointsPrefix(this.prefix, namespace, name));
    try {
      const r = await this.client.kv.txn({
        success: [
          { request_delete_range: { key: eps, range_end: rangeEnd(eps) } },
          { request_delete_range: { key: Buffer.from(key) } },
        ],
      });
      const n = (i: number): number => Number(r.responses[i]?.response_delete_range?.deleted ?? 0);
      return { service: n(1) > 0, endpoints: n(0) };
    } catch (e) {
      throw this.unavailable(`deleting ${key} and its endpoints`, e);
    }
  }

  /** Deletes one endpoint; false when it did not exist. */
  async removeEndpoint(namespace: string, service: string, id: string): Promise<boolean> {
    checkNames(`endpoint ${namespace}/${service}/${id}`, [["namespace", namespace, labelProblem(namespace)], ["service", service, labelProblem(service)], ["id", id, idProblem(id)]]);
    const key = endpointKey(this.prefix, namespace, service, id);
    try {
      return (await this.client.delete().key(key)).deleted !== "0";
    } catch (e) {
      throw this.unavailable(`deleting ${key}`, e);
    }
  }

  // ------------------------------------------------------------------ reads

  /** Every entry at one revision; entries that do not validate are skipped (and logged once). */
  async snapshot(): Promise<RegistrySnapshot> {
    let res;
    try {
      res = await listPrefix(this.client, `${this.prefix}/`);
    } catch (e) {
      throw this.unavailable(`listing ${this.prefix}/`, e);
    }
    const services: Service[] = [];
    const endpoints: Endpoint[] = [];
    const skipped: SkippedEntry[] = [];
    for (const kv of res.kvs) {
      const d = this.decode(kv);
      if ("reason" in d) {
        skipped.push({ key: d.key, reason: d.reason });
        this.reportSkipped(d);
      } else if (d.kind === "service") services.push(d.value);
      else endpoints.push(d.value);
    }
    return { revision: res.revision, services, endpoints, skipped };
  }

  /** An entry from a key-value, or why it is skipped (with the key it names, when well-formed). */
  decode(kv: IKeyValue): RegistryEntry | (SkippedEntry & { readonly ref: RegistryKey | undefined }) {
    const key = kv.key.toString();
    const k = classifyRegistryKey(this.prefix, key);
    if ("reason" in k) return { key, reason: k.reason, ref: undefined };
    try {
      if (k.kind === "service") {
        return { kind: "service", value: { namespace: k.namespace, name: k.name, ...parseServiceJson(kv.value.toString(), "value") } };
      }
      return { kind: "endpoint", value: { namespace: k.namespace, service: k.service, id: k.id, ...parseEndpointJson(kv.value.toString(), "value") } };
    } catch (e) {
      if (e instanceof RegistryEntryError) return { key, reason: e.message, ref: k };
      throw e;
    }
  }

  /** Logs a skipped entry once per key and reason. */
  reportSkipped(s: SkippedEntry): void {
    const id = `${s.key}\u0000${s.reason}`;
    if (this.reported.has(id)) return;
    if (this.reported.size > 10_000) this.reported.clear();
    this.reported.add(id);
    this.log.warn({ key: s.key, reason: s.reason }, "skipping a service registry entry weft cannot use");
  }

  /**
   * Watches every key under the prefix from `fromRevision`, in order.
   * `onError` is called once when the watch cannot go on (the revision was
   * compacted, the watch was cancelled): the caller lists again and watches
   * anew. Stream reconnects are handled by the client, reported through `onConnection`.
   */
  async watch(
    fromRevision: string,
    onEvent: (e: RegistryWatchEvent, revision: string) => void,
    onError: (e: Error) => void,
    onConnection: (connected: boolean) => void = () => undefined,
  ): Promise<Watcher> {
    try {
      return await watchPrefix(this.client, `${this.prefix}/`, fromRevision, (kind, kv) => {
        if (kind === "delete") {
          const k = classifyRegistryKey(this.prefix, kv.key.toString());
          if (!("reason" in k)) onEvent({ type: "delete", key: k }, kv.mod_revision);
          return;
        }
        const d = this.decode(kv);
        onEvent("reason" in d ? { type: "skip", skipped: { key: d.key, reason: d.reason }, key: d.ref } : { type: "put", entry: d }, kv.mod_revision);
      }, onError, onConnection);
    } catch (e) {
      throw this.unavailable(`watching ${this.prefix}/`, e);
    }
  }
}

/** An endpoint on an etcd lease. When the lease is lost (etcd away past the TTL) it is granted again and the key rewritten. */
class LeasedEndpoint implements EndpointHandle {
  private lease: Lease | undefined;
  private id = "0";
  private closed = false;

  constructor(
    private readonly reg: ServiceRegistry,
    readonly key: string,
    readonly endpoint: Endpoint,
    private readonly value: string,
    private readonly ttlSec: number,
    private readonly onDone: (h: LeasedEndpoint) => void,
  ) {}

  get leaseId(): string {
    return this.id;
  }

  /** Grants a lease and writes the key on it. */
  async publish(): Promise<void> {
    const lease = this.reg.client.lease(this.ttlSec);
    lease.on("lost", (err) => {
      if (this.closed || this.lease !== lease) return;
      this.reg.log.warn({ key: this.key, leaseId: this.id, err: err.message }, "endpoint lease lost; granting a new one and writing the key again");
      void this.republish();
    });
    try {
      this.id = await lease.grant();
      await lease.put(this.key).value(this.value);
      this.lease = lease;
    } catch (e) {
      lease.release();
      await lease.revoke().catch(() => undefined);
      throw this.reg.unavailable(`writing ${this.key} on a lease of ${this.ttlSec} s`, e);
    }
  }

  private async republish(): Promise<void> {
    for (let delay = 500; !this.closed; delay = Math.min(delay * 2, 5000)) {
      try {
        await this.publish();
        if (this.closed) await this.lease?.revoke().catch(() => undefined);
        else this.reg.log.info({ key: this.key, leaseId: this.id }, "endpoint published again on a new lease");
        return;
      } catch (e) {
        this.reg.log.warn({ key: this.key, err: (e as Error).message, retryInMs: delay }, "publishing the endpoint again failed; retrying");
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
  }

  async revoke(): Promise<void> {
    const lease = this.lease;
    this.finish();
    if (!lease) return;
    try {
      await lease.revoke();
    } catch (e) {
      throw this.reg.unavailable(`revoking lease ${this.id} of ${this.key}`, e);
    }
  }

  close(): void {
    this.lease?.release();
    this.finish();
  }

  private finish(): void {
    this.closed = true;
    this.onDone(this);
  }
}

function checkNames(subject: string, parts: [field: string, value: string, problem: string | undefined][]): void {
  const issues: EntryIssue[] = parts.filter(([, , p]) => p !== undefined).map(([field, , p]) => ({ field, message: p ?? "" }));
  if (issues.length > 0) throw new RegistryEntryError(subject, issues);
}

/** The first key after every key that starts with `prefix`. */
function rangeEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

