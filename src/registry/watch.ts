import { EventEmitter } from "node:events";
import { ListWatch } from "../common/list-watch.js";
import type { Logger } from "../common/log.js";
import type { RegistryEntry, RegistrySnapshot, RegistryWatchEvent, ServiceRegistry } from "./store.js";
import type { Endpoint, RegistryKey, Service } from "./types.js";

/** One change to the view. `name` is the service's name (for an endpoint too); `value` is set on puts. */
export type RegistryChange =
  | { readonly kind: "service"; readonly op: "put"; readonly namespace: string; readonly name: string; readonly value: Service }
  | { readonly kind: "service"; readonly op: "delete"; readonly namespace: string; readonly name: string }
  | { readonly kind: "endpoint"; readonly op: "put"; readonly namespace: string; readonly name: string; readonly id: string; readonly value: Endpoint }
  | { readonly kind: "endpoint"; readonly op: "delete"; readonly namespace: string; readonly name: string; readonly id: string };

export interface RegistryWatcherEvents {
  /** Once, after the first list has been applied (its entries came as "change" puts just before). */
  synced: [];
  /** A change and the etcd revision it happened at (a re-list's difference: the list's revision). */
  change: [RegistryChange, string];
}

export interface RegistryWatcherOptions {
  /** First retry delay while etcd cannot be listed (doubles up to 10 s). Default 1000. */
  readonly retryMs?: number;
}

/**
 * An always-current view of the registry, kept by the shared list-then-watch
 * loop (common/list-watch.ts): a list, then a watch from the list's revision + 1. Every applied change is emitted as "change" and bumps
 * `version`. When the watch cannot go on (its revision was compacted, etcd
 * lost its history) it lists again and emits the difference, so a consumer
 * that follows the events is never left with a stale view. Entries that do
 * not validate are skipped and logged once; an invalid value written over a
 * valid one removes the entry (a "delete" change).
 */
export class RegistryWatcher extends EventEmitter<RegistryWatcherEvents> {
  private readonly svcs = new Map<string, Service>();
  /** ns/name → id → endpoint */
  private readonly eps = new Map<string, Map<string, Endpoint>>();
  private readonly loop: ListWatch<RegistrySnapshot, RegistryWatchEvent>;
  private closed = false;
  private synced = false;
  /** Incremented on every applied change. */
  version = 0;
  /** The etcd revision the view is current through: the last list's, or the last watch event's. */
  private rev = "0";

  constructor(
    private readonly registry: ServiceRegistry,
    log: Logger = registry.log,
    opts: RegistryWatcherOptions = {},
  ) {
    super();
    this.loop = new ListWatch("registry", {
      list: async () => {
        const snap = await registry.snapshot();
        return { snapshot: snap, revision: snap.revision };
      },
      watch: (from, onEvent, onError, onConnection) => registry.watch(from, (e, rev) => onEvent(e, rev), onError, onConnection),
    }, { snapshot: (s, rev) => this.applySnapshot(s, rev), event: (e, rev) => this.onEvent(e, rev) }, log, opts.retryMs ?? 1000);
  }

  /** Lists taken (1 after start; more after compaction or watch failures). */
  get resyncs(): number {
    return this.loop.resyncs;
  }

  /** Watches abandoned after staying disconnected (stuck on a silent etcd member), then started anew. */
  get stalls(): number {
    return this.loop.stalls;
  }

  /** True once the first list has been applied (it stays true: the view is kept, and repaired after outages). */
  get isSynced(): boolean {
    return this.synced;
  }

  /**
   * The etcd revision the view is current through ("0" before the first
   * list): every change at or below it has been emitted. Read during a
   * "change" event, it is that change's revision.
   */
  get revision(): string {
    return this.rev;
  }

  /** True while the watch stream is connected (false during an etcd outage or a re-list). */
  get connected(): boolean {
    return this.loop.connected;
  }

  /** Lists (retrying while etcd is unreachable) and starts watching. Resolves when synced. */
  async start(): Promise<void> {
    await this.loop.start();
    if (this.closed || this.synced) return;
    this.synced = true;
    this.emit("synced");
  }

  services(): ReadonlyMap<string, Service> {
    return this.svcs;
  }

  service(namespace: string, name: string): Service | undefined {
    return this.svcs.get(`${namespace}/${name}`);
  }

  endpointsOf(namespace: string, name: string): Endpoint[] {
    return [...(this.eps.get(`${namespace}/${name}`)?.values() ?? [])];
  }

  /** Every endpoint, including those whose service does not exist (yet). */
  allEndpoints(): Endpoint[] {
    return [...this.eps.values()].flatMap((m) => [...m.values()]);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.loop.close();
  }

  /** Replaces the view by the snapshot, emitting the difference (services first on puts, last on deletes). */
  private applySnapshot(snap: RegistrySnapshot, revision: string): void {
    this.rev = revision;
    const svcs = new Map(snap.services.map((s) => [`${s.namespace}/${s.name}`, s] as const));
    const eps = new Map<string, Endpoint>(snap.endpoints.map((e) => [`${e.namespace}/${e.service}/${e.id}`, e] as const));
    for (const s of snap.services) this.put({ kind: "service", value: s });
    for (const e of snap.endpoints) this.put({ kind: "endpoint", value: e });
    for (const e of this.allEndpoints()) {
      if (!eps.has(`${e.namespace}/${e.service}/${e.id}`)) this.delete({ kind: "endpoint", namespace: e.namespace, service: e.service, id: e.id });
    }
    for (const s of [...this.svcs.values()]) {
      if (!svcs.has(`${s.namespace}/${s.name}`)) this.delete({ kind: "service", namespace: s.namespace, name: s.name });
    }
  }

  private onEvent(e: RegistryWatchEvent, revision: string | undefined): void {
    if (revision !== undefined && BigInt(revision) > BigInt(this.rev)) this.rev = revision;
    if (e.type === "put") this.put(e.entry);
    else if (e.type === "delete") this.delete(e.key);
    else {
      this.registry.reportSkipped(e.skipped);
      if (e.key) this.delete(e.key); // an invalid value over a valid one: the entry is gone
    }
  }

  private put(entry: RegistryEntry): void {
    if (entry.kind === "service") {
      const s = entry.value;
      const k = `${s.namespace}/${s.name}`;
      if (same(this.svcs.get(k), s)) return;
      this.svcs.set(k, s);
      this.changed({ kind: "service", op: "put", namespace: s.namespace, name: s.name, value: s });
      return;
    }
    const e = entry.value;
    const k = `${e.namespace}/${e.service}`;
    let m = this.eps.get(k);
    if (same(m?.get(e.id), e)) return;
    if (!m) this.eps.set(k, (m = new Map()));
    m.set(e.id, e);
    this.changed({ kind: "endpoint", op: "put", namespace: e.namespace, name: e.service, id: e.id, value: e });
  }

  private delete(key: RegistryKey): void {
    if (key.kind === "service") {
      if (!this.svcs.delete(`${key.namespace}/${key.name}`)) return;
      this.changed({ kind: "service", op: "delete", namespace: key.namespace, name: key.name });
      return;
    }
    const k = `${key.namespace}/${key.service}`;
    const m = this.eps.get(k);
    if (!m?.delete(key.id)) return;
    if (m.size === 0) this.eps.delete(k);
    this.changed({ kind: "endpoint", op: "delete", namespace: key.namespace, name: key.service, id: key.id });
  }

  private changed(c: RegistryChange): void {
    this.version++;
    this.emit("change", c, this.rev);
  }
}

function same(a: Service | Endpoint | undefined, b: Service | Endpoint): boolean {
  return a !== undefined && JSON.stringify(a) === JSON.stringify(b);
}
