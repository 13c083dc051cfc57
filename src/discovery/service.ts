import type { Registry } from "prom-client";
import type { Logger } from "../common/log.js";
import type { ServiceRegistry } from "../registry/store.js";
import type { RegistryWatcher } from "../registry/watch.js";
import { DiscoveryCounters, type SnapshotReason } from "./counters.js";
import { DiscoveryHub, type HubLimits } from "./hub.js";
import { registerDiscoveryMetrics } from "./metrics.js";
import type { PodDirectory } from "./pods.js";
import { Publications, type PublicationOptions } from "./publications.js";
import { checkRevision } from "./revision.js";
import { DiscoveryServer, type ListenAddr } from "./server.js";
import type { StreamEnd } from "./subscriber.js";

export interface DiscoveryOptions {
  readonly listen: readonly ListenAddr[];
  readonly socket: string | undefined;
  /** The client ACL of the node's DNS server. */
  readonly allows: (addr: string) => boolean;
  readonly limits: HubLimits;
  readonly publication: PublicationOptions;
}

/** What `weft status` shows of the discovery API. */
export interface DiscoverySummary {
  readonly listen: string[];
  /** The revision every stream has been given everything through. */
  readonly revision: string;
  readonly subscribers: { readonly tcp: number; readonly unix: number };
  readonly eventsSent: number;
  readonly snapshots: Readonly<Record<SnapshotReason, number>>;
  readonly resumed: number;
  readonly replayed: number;
  /** Streams ended by why; `slow`: consumers dropped as too far behind. */
  readonly ended: Readonly<Record<StreamEnd, number>>;
  readonly refused: Readonly<Record<string, number>>;
  readonly replay: { readonly entries: number; readonly bytes: number; readonly floor: string; readonly evicted: number };
  /** Publications per pod ("ns/name"), and whether publication is on. */
  readonly publication: boolean;
  readonly publications: readonly { readonly pod: string; readonly count: number }[];
}

/**
 * The agent's discovery API: the hub (streams from the registry view), the
 * publications (pods' own endpoints, on the agent's lease), and the HTTP
 * server on the node-local address and the Unix socket.
 */
export class NodeDiscovery {
  private constructor(
    readonly hub: DiscoveryHub,
    readonly publications: Publications | undefined,
    private readonly server: DiscoveryServer,
    readonly counters: DiscoveryCounters,
  ) {}

  /** `pods`: the node's pods (the agent's IPAM); without it the API is read-only. */
  static async start(registry: ServiceRegistry, watcher: RegistryWatcher, pods: PodDirectory | undefined, opts: DiscoveryOptions, metrics: Registry | undefined, log: Logger): Promise<NodeDiscovery> {
    const counters = new DiscoveryCounters();
    const hub = new DiscoveryHub(watcher, (rev) => checkRevision(registry, rev), counters, log, opts.limits);
    const publications = pods ? new Publications(registry, watcher, pods, opts.publication, counters, log) : undefined;
    const server = new DiscoveryServer(hub, {
      listen: opts.listen, socket: opts.socket, allows: opts.allows, publications, pods,
      maxConnections: opts.limits.maxSubscribers + 256,
    }, counters, log);
    try {
      await server.start();
    } catch (e) {
      hub.close();
      publications?.close();
      throw e;
    }
    publications?.start();
    const d = new NodeDiscovery(hub, publications, server, counters);
    if (metrics) {
      registerDiscoveryMetrics(metrics, {
        counters, subscribers: () => hub.subscriberCounts(), publicationsPerPod: () => publications?.perPod() ?? new Map(), replay: () => hub.replayWindow(),
      });
    }
    return d;
  }

  summary(): DiscoverySummary {
    const c = this.counters;
    return {
      listen: this.server.addresses(),
      revision: this.hub.revision,
      subscribers: this.hub.subscriberCounts(),
      eventsSent: c.eventsSent,
      snapshots: { ...c.snapshots },
      resumed: c.resumed,
      replayed: c.replayed,
      ended: { ...c.ended },
      refused: Object.fromEntries(c.refused),
      replay: this.hub.replayWindow(),
      publication: this.publications !== undefined,
      publications: [...(this.publications?.perPod() ?? new Map<string, number>())].map(([pod, count]) => ({ pod, count })).sort((a, b) => (a.pod < b.pod ? -1 : 1)),
    };
  }

  /** Ends every stream, closes the listeners; publications stay in etcd until the lease's TTL (a restarted agent takes them over). */
  close(): void {
    this.hub.close();
    this.server.close();
    this.publications?.close();
  }
}
