import { networkInterfaces } from "node:os";
import type { Registry } from "prom-client";
import type { Logger } from "../common/log.js";
import { CACHE_DEFAULTS, DnsCache, type CacheOptions } from "./cache/cache.js";
import { ClusterZone, type ZoneOptions } from "./cluster/zone.js";
import type { ZoneEndpoint, ZoneService } from "./cluster/records.js";
import { Forwarder } from "./forward/forwarder.js";
import { UpstreamSet, withoutSelf, type Policy, type Upstream } from "./forward/upstreams.js";
import { registerDnsMetrics } from "./metrics.js";
import { ClientAcl } from "./server/acl.js";
import { DnsCounters } from "./server/counters.js";
import { DnsHandler } from "./server/handler.js";
import { DnsListener, type ListenAddr, type UdpPath } from "./server/server.js";
import { TCP_DEFAULTS, type TcpLimits } from "./server/tcp.js";
import { formatHostPort } from "./hostport.js";
import { nameToKey } from "./wire/query.js";

export interface DnsSummary {
  readonly listen: string[];
  /** The UDP path of each listen address: "batch" (recvmmsg/sendmmsg) or "dgram" with the reason. */
  readonly udp: UdpPath[];
  readonly synced: boolean;
  readonly zoneSerial: number;
  readonly zoneNames: number;
  readonly queries: number;
  readonly answered: { noerror: number; nxdomain: number; servfail: number; refused: number };
  readonly cache: { entries: number; hits: number; misses: number; stale: number };
  readonly upstreams: { upstream: string; state: "up" | "down" | "loop" }[];
}

/** What the zone is built from: the registry watcher (src/registry/watch.ts) fits. */
export interface ServiceView {
  readonly isSynced: boolean;
  services(): ReadonlyMap<string, ZoneService>;
  endpointsOf(namespace: string, name: string): readonly ZoneEndpoint[];
  on(event: "synced", f: () => void): unknown;
  /** A service or one of its endpoints changed (`name`: the service's name). */
  on(event: "change", f: (c: { readonly namespace: string; readonly name: string }) => void): unknown;
}

export interface DnsOptions {
  readonly listen: readonly ListenAddr[];
  readonly zone: ZoneOptions;
  readonly upstreams: Upstream[];
  readonly policy: Policy;
  /** Allowed client prefixes besides loopback and the node's addresses (the cluster network, ...). */
  readonly allow: readonly string[];
  readonly cache?: Partial<Omit<CacheOptions, "now">>;
  readonly now?: () => number;
  readonly maxConcurrent?: number;
  readonly deadlineMs?: number;
  readonly attemptMs?: number;
  readonly healthCheckMs?: number;
  /** Requests that may wait for upstream answers at once (default 10,000); beyond it SERVFAIL (or stale) at once. */
  readonly maxWaiting?: number;
  /** DNS over TCP limits (defaults: TCP_DEFAULTS). */
  readonly tcp?: Partial<TcpLimits>;
  /** Clock of the TCP timeouts (ms; default performance.now): not `now`, which the cache's TTLs follow. */
  readonly tcpNow?: () => number;
  /** false: Node's dgram for UDP even where the native batch path is available (it is the fallback when the shim is not built). */
  readonly udpBatch?: boolean;
}

/** Every address of this node's interfaces. */
export function localAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(a.address);
  return out;
}

/**
 * The node-local DNS server: the cluster zone rebuilt from the registry view
 * on every change (so answers follow the registry at once), a cache, the
 * forwarder, and the UDP/TCP listeners.
 */
export class DnsService {
  readonly counters = new DnsCounters();
  readonly cache: DnsCache;
  readonly forwarder: Forwarder;
  private readonly listener: DnsListener;
  private zone: ClusterZone | undefined;
  private rebuildQueued = false;
  /** Services ("ns/name") changed since the last update of the zone. */
  private readonly dirty = new Set<string>();
  private serial = 0;
  readonly droppedUpstreams: string[];
  private local = localAddresses();
  private localRefresh: NodeJS.Timeout | undefined;

  constructor(private readonly opts: DnsOptions, private readonly view: ServiceView, private readonly log: Logger, metrics?: Registry) {
    const now = opts.now ?? Date.now;
    this.cache = new DnsCache({ ...CACHE_DEFAULTS, ...opts.cache, now });
    const { kept, dropped } = withoutSelf(opts.upstreams, opts.listen, this.local);
    this.droppedUpstreams = dropped;
    if (dropped.length) log.warn({ dropped }, "DNS upstreams that are this server itself were left out (a forwarding loop)");
    const fm = metrics ? registerDnsMetrics(metrics, this.counters, this.cache, () => this.listener.tcpConnections, () => this.listener.udpPaths()) : undefined;
    this.forwarder = new Forwarder({
      upstreams: new UpstreamSet(kept, opts.policy), maxConcurrent: opts.maxConcurrent ?? 1000, deadlineMs: opts.deadlineMs ?? 2000,
      attemptMs: opts.attemptMs ?? 700, healthCheckMs: opts.healthCheckMs ?? 1000, log, metrics: fm,
    });
    const handler = new DnsHandler({
      zone: () => this.zone, zoneKey: nameToKey(opts.zone.domain), cache: this.cache, forwarder: this.forwarder,
      acl: new ClientAcl(opts.allow, () => this.local), counters: this.counters, log, maxWaiting: opts.maxWaiting ?? 10_000,
    });
    this.listener = new DnsListener(handler, this.counters, log, { tcp: { ...TCP_DEFAULTS, ...opts.tcp }, batch: opts.udpBatch ?? true, ...(opts.tcpNow ? { now: opts.tcpNow } : {}) });
    view.on("synced", () => this.rebuild());
    view.on("change", (c) => this.queueUpdate(`${c.namespace}/${c.name}`));
    if (view.isSynced) this.rebuild();
  }

  async start(): Promise<void> {
    await this.forwarder.start();
    try {
      await this.listener.listen(this.opts.listen);
    } catch (e) {
      // Partial work undone: what was bound is closed again.
      this.listener.close();
      this.forwarder.close();
      throw e;
    }
    this.forwarder.probeLoops();
    this.localRefresh = setInterval(() => (this.local = localAddresses()), 30_000);
    this.localRefresh.unref();
    this.log.info({ listen: this.listener.addresses(), udp: Object.fromEntries(this.udpPaths().map((p) => [p.listen, p.path])), upstreams: this.forwarder.upstreamStates().map((u) => u.upstream) }, "DNS server listening");
  }

  /** True once the registry has synced and the zone exists. */
  get ready(): boolean {
    return this.zone !== undefined;
  }

  addresses(): ListenAddr[] {
    return this.listener.addresses();
  }

  /** Which UDP path each listen address is served by. */
  udpPaths(): UdpPath[] {
    return this.listener.udpPaths();
  }

  /** Open DNS-over-TCP connections. */
  get tcpConnections(): number {
    return this.listener.tcpConnections;
  }

  /** A summary for `weft status`. */
  summary(): DnsSummary {
    const r = this.counters.responses;
    return {
      listen: this.listener.addresses().map((a) => formatHostPort(a.host, a.port)),
      udp: this.listener.udpPaths(),
      synced: this.ready,
      zoneSerial: this.zone?.serial ?? 0,
      zoneNames: this.zone?.size ?? 0,
      queries: this.counters.requests.reduce((n, a) => n + a.reduce((x, y) => x + y, 0), 0),
      answered: { noerror: r[0] ?? 0, nxdomain: r[3] ?? 0, servfail: r[2] ?? 0, refused: r[5] ?? 0 },
      cache: { entries: this.cache.size, hits: this.cache.hits, misses: this.cache.misses, stale: this.cache.staleServed },
      upstreams: this.forwarder.upstreamStates(),
    };
  }

  /** Changes of one turn of the event loop are applied together, each service once. */
  private queueUpdate(key: string): void {
    if (!this.view.isSynced) return; // the first list ends with "synced": a whole build
    this.dirty.add(key);
    if (this.rebuildQueued) return;
    this.rebuildQueued = true;
    setImmediate(() => {
      this.rebuildQueued = false;
      const zone = this.zone;
      if (!zone) return this.rebuild();
      for (const k of this.dirty) {
        const slash = k.indexOf("/");
        const ns = k.slice(0, slash);
        const name = k.slice(slash + 1);
        zone.update(ns, name, this.view.services().get(k), this.view.endpointsOf(ns, name));
      }
      this.dirty.clear();
    });
  }

  /** The whole zone from the view (after the first list). */
  private rebuild(): void {
    const t0 = performance.now();
    this.dirty.clear();
    this.zone = new ClusterZone(this.opts.zone, this.view.services().values(), (ns, n) => this.view.endpointsOf(ns, n), ++this.serial);
    this.log.debug({ names: this.zone.size, ms: Math.round((performance.now() - t0) * 100) / 100 }, "cluster zone built");
  }

  async close(): Promise<void> {
    clearInterval(this.localRefresh);
    this.listener.close();
    this.forwarder.close();
  }
}
