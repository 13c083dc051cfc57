import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Registry } from "prom-client";
import type { EndpointKey, EndpointSpec } from "../backend/types.js";
import { formatIpv4, parseIpv4, type Ipv4Prefix } from "../common/ipv4.js";
import { formatIpv6, parseIpv6, type Ipv6Prefix } from "../common/ipv6.js";
import type { Logger } from "../common/log.js";
import { handleCni } from "../cni/handler.js";
import { PodLinks } from "../cni/links.js";
import { cleanupReleased } from "../cni/pod.js";
import type { Invocation } from "../cni/request.js";
import type { CniHost, CniReply } from "../cni/types.js";
import type { PodDirectory, PodRef } from "../discovery/pods.js";
import { IpamService } from "../ipam/ipam.js";
import { IpamMetrics } from "../ipam/metrics.js";
import { PoolPressure } from "../ipam/pressure.js";
import { NetnsReconciler } from "../ipam/reconciler.js";
import { IpamStore } from "../ipam/store.js";
import type { Allocation } from "../ipam/table.js";

export interface PodServiceOptions {
  readonly stateDir: string;
  readonly subnetFile: string;
  readonly registry: Registry;
  readonly reconcileIntervalSec: number;
  readonly releaseGraceSec: number;
  /** Reclaim under pressure (ipam/pressure.ts): the usage that starts it, and its shorter grace. */
  readonly reclaimThreshold: number;
  readonly pressureGraceSec: number;
  readonly log: Logger;
  /** The agent's data path, as it is at the moment of the call. */
  readonly dataPath: {
    notReady(): string | undefined;
    /** Why the node's subnet may not be handed out from now, or undefined. */
    leaseProblem(): string | undefined;
    addEndpoint(e: EndpointSpec): Promise<void>;
    removeEndpoint(e: EndpointKey): Promise<boolean>;
  };
}

/** An allocation's addresses as text, IPv4 first. */
function addressesOf(a: Allocation): string[] {
  return [...(a.ip === undefined ? [] : [formatIpv4(a.ip)]), ...(a.ip6 === undefined ? [] : [formatIpv6(a.ip6)])];
}

/**
 * The agent's pod side: IPAM (store, service, reconciler) and the CNI
 * handlers, behind the CniHost contract. Opened before etcd is reached, so
 * DEL and CHECK work while the agent waits for its lease; ADD waits for bind().
 * It is also the discovery API's directory of the node's pods (who holds an
 * address, which pod a network namespace is), and tells it when a pod's
 * address is released, whatever released it (DEL, GC, the reconciler).
 */
export class PodService implements CniHost, PodDirectory {
  readonly links = new PodLinks();
  readonly reconciler: NetnsReconciler;
  readonly pressure: PoolPressure;
  private readonly releaseHooks: ((containerId: string, ip: string) => Promise<void>)[] = [];

  private constructor(readonly ipam: IpamService, private readonly opts: PodServiceOptions) {
    this.reconciler = new NetnsReconciler(ipam, opts.log, { intervalMs: opts.reconcileIntervalSec * 1000, graceMs: opts.releaseGraceSec * 1000 });
    this.pressure = new PoolPressure(ipam, this.reconciler, opts.log, { threshold: opts.reclaimThreshold, graceMs: opts.pressureGraceSec * 1000 });
    ipam.pressure = this.pressure;
    ipam.leaseProblem = () => opts.dataPath.leaseProblem();
    ipam.onReleased = async (a, reason) => {
      if (reason === "gc" || reason === "reconcile" || reason === "replaced") await cleanupReleased(this, a);
      for (const ip of addressesOf(a)) {
        for (const f of this.releaseHooks) {
          await f(a.containerId, ip).catch((e: Error) => opts.log.warn({ err: e.message, ip }, "pods: a release hook failed"));
        }
      }
    };
  }

  /** `f` is called once per released address (twice for a dual-stack pod: IPv4, then IPv6). */
  onReleased(f: (containerId: string, ip: string) => Promise<void>): void {
    this.releaseHooks.push(f);
  }

  byAddress(ip: string): PodRef | undefined {
    let a: Allocation | undefined;
    try {
      a = ip.includes(":") ? this.ipam.store.table.holder6(parseIpv6(ip)) : this.ipam.store.table.holder(parseIpv4(ip));
    } catch {
      return undefined; // not an address: IPAM holds no such address
    }
    return a ? this.podOf(a.containerId, a) : undefined;
  }

  byNetns(inode: number): PodRef | undefined {
    if (inode === 0) return undefined;
    const a = this.ipam.store.table.all().find((x) => x.netnsInode === inode);
    return a ? this.podOf(a.containerId, a) : undefined;
  }

  byContainer(containerId: string): PodRef | undefined {
    const a = this.ipam.store.table.all().find((x) => x.containerId === containerId);
    return a ? this.podOf(containerId, a) : undefined;
  }

  /** A pod: every allocation of its container (one per network and interface). */
  private podOf(containerId: string, first: Allocation): PodRef {
    const all = this.ipam.store.table.all().filter((x) => x.containerId === containerId);
    return { containerId, namespace: first.podNamespace, name: first.podName, addresses: all.flatMap(addressesOf) };
  }

  static async open(opts: PodServiceOptions): Promise<PodService> {
    const store = await IpamStore.open(join(opts.stateDir, "ipam"), opts.log);
    const ipam = new IpamService(store, opts.log, new IpamMetrics(opts.registry));
    opts.log.info({ allocations: store.table.size }, "ipam: state loaded");
    return new PodService(ipam, opts);
  }

  get log(): Logger {
    return this.opts.log;
  }

  /**
   * The node's subnets from its lease: IPv4 (Lease.subnet), IPv6
   * (Lease.subnet6), either or both; neither while no lease is held (ADD
   * answers "try again later"). Each pod gets one address per family bound.
   * An IPv6-only lease carries 0.0.0.0/0 as its IPv4 subnet (flannel's key
   * has an empty IPv4 part): that is no IPv4 subnet, not all of IPv4.
   */
  bind(subnet: Ipv4Prefix | undefined, subnet6?: Ipv6Prefix): void {
    this.ipam.bind(subnet && subnet.len > 0 ? subnet : undefined, subnet6);
  }

  startReconciler(): void {
    this.reconciler.start();
  }

  handle(inv: Invocation): Promise<CniReply> {
    return handleCni(this, inv);
  }

  addEndpoint(e: EndpointSpec): Promise<void> {
    return this.opts.dataPath.addEndpoint(e);
  }

  removeEndpoint(e: EndpointKey): Promise<boolean> {
    return this.opts.dataPath.removeEndpoint(e);
  }

  notReady(): string | undefined {
    return this.opts.dataPath.notReady();
  }

  podMtu(): number | undefined {
    try {
      const m = /^FLANNEL_MTU=(\d+)$/m.exec(readFileSync(this.opts.subnetFile, "utf8"));
      return m?.[1] ? Number(m[1]) : undefined;
    } catch {
      return undefined;
    }
  }

  async close(): Promise<void> {
    this.reconciler.stop();
    this.pressure.stop();
    this.links.close();
    await this.ipam.close();
  }
}
