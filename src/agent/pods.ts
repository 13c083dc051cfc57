import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Registry } from "prom-client";
import type { EndpointSpec } from "../backend/types.js";
import type { Ipv4Prefix } from "../common/ipv4.js";
import type { Logger } from "../common/log.js";
import { handleCni } from "../cni/handler.js";
import { PodLinks } from "../cni/links.js";
import { cleanupReleased } from "../cni/pod.js";
import type { Invocation } from "../cni/request.js";
import type { CniHost, CniReply } from "../cni/types.js";
import { IpamService } from "../ipam/ipam.js";
import { IpamMetrics } from "../ipam/metrics.js";
import { NetnsReconciler } from "../ipam/reconciler.js";
import { IpamStore } from "../ipam/store.js";

export interface PodServiceOptions {
  readonly stateDir: string;
  readonly subnetFile: string;
  readonly registry: Registry;
  readonly reconcileIntervalSec: number;
  readonly releaseGraceSec: number;
  readonly log: Logger;
  /** The agent's data path, as it is at the moment of the call. */
  readonly dataPath: {
    notReady(): string | undefined;
    /** Why the node's subnet may not be handed out from now, or undefined. */
    leaseProblem(): string | undefined;
    addEndpoint(e: EndpointSpec): Promise<void>;
    removeEndpoint(ip: number): Promise<boolean>;
  };
}

/**
 * The agent's pod side: IPAM (store, service, reconciler) and the CNI
 * handlers, behind the CniHost contract. Opened before etcd is reached, so
 * DEL and CHECK work while the agent waits for its lease; ADD waits for bind().
 */
export class PodService implements CniHost {
  readonly links = new PodLinks();
  readonly reconciler: NetnsReconciler;

  private constructor(readonly ipam: IpamService, private readonly opts: PodServiceOptions) {
    this.reconciler = new NetnsReconciler(ipam, opts.log, { intervalMs: opts.reconcileIntervalSec * 1000, graceMs: opts.releaseGraceSec * 1000 });
    ipam.leaseProblem = () => opts.dataPath.leaseProblem();
    ipam.onReleased = async (a, reason) => {
      if (reason === "gc" || reason === "reconcile" || reason === "replaced") await cleanupReleased(this, a);
    };
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

  /** The node's subnet (lease held) or undefined (lost: ADD answers "try again later"). */
  bind(subnet: Ipv4Prefix | undefined): void {
    this.ipam.bind(subnet);
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

  removeEndpoint(ip: number): Promise<boolean> {
    return this.opts.dataPath.removeEndpoint(ip);
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
    this.links.close();
    await this.ipam.close();
  }
}
