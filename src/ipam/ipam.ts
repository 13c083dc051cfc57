import { statfsSync, statSync } from "node:fs";
import { formatCidr, formatIpv4, type Ipv4Prefix } from "../common/ipv4.js";
import type { Logger } from "../common/log.js";
import { checkRequested, DEFAULT_POOL, pickNext, poolOf, reservedFor, selectPool, usage, type PodIdentity, type PoolUsage } from "./allocator.js";
import { planFor, type IpamPlan, type IpamSpec } from "./config.js";
import { AddressUnavailableError, NoLeaseError, PoolExhaustedError } from "./errors.js";
import type { IpamMetrics } from "./metrics.js";
import type { PoolPressure } from "./pressure.js";
import type { IpamStore } from "./store.js";
import { allocationKey, keyOf, type Allocation } from "./table.js";
import { KeyedSerial } from "../common/keyed-serial.js";

export interface AllocateRequest {
  readonly network: string;
  readonly containerId: string;
  readonly ifname: string;
  readonly netns: string;
  readonly pod: PodIdentity;
  /** An address asked for by the runtime, if any. */
  readonly requested: number | undefined;
  readonly spec: IpamSpec;
  /** Host side of the veth the main plugin makes ("" for weft-ipam). */
  readonly hostIf: string;
}

export interface Grant {
  readonly allocation: Allocation;
  readonly plan: IpamPlan;
  /** The attachment already held this address (a repeated ADD). */
  readonly existed: boolean;
}

/** Networks whose plans are kept for metrics and STATUS. */
const MAX_NETWORKS = 64;

export type ReleaseReason = "del" | "gc" | "reconcile" | "rollback" | "replaced";

/**
 * The node's IPAM: allocations from the subnet the node leases, kept in a
 * crash-safe store. Operations on one attachment run one at a time;
 * different attachments run concurrently and share disk syncs.
 */
/** The longest an ADD that found its pool full waits for the early reclaim before it fails. */
const RECLAIM_WAIT_MS = 5000;

export class IpamService {
  private subnet: Ipv4Prefix | undefined;
  /** One operation at a time per key. */
  private readonly serial = new KeyedSerial();
  private readonly plans = new Map<string, IpamPlan>();
  /** The plan last used per network, for metrics and STATUS. */
  readonly lastPlan = new Map<string, IpamPlan>();
  /** Why the bound subnet may not be used right now (e.g. its lease expired while etcd was unreachable), or undefined. */
  leaseProblem: (() => string | undefined) | undefined;
  /** Reclaim under pressure (pressure.ts): told of every allocation, asked before an ADD fails for a full pool. */
  pressure: PoolPressure | undefined;
  /** Called after an allocation is released (the main plugin removes the pod's host-side objects). */
  onReleased: ((a: Allocation, reason: ReleaseReason) => Promise<void>) | undefined;

  constructor(readonly store: IpamStore, private readonly log: Logger, readonly metrics?: IpamMetrics) {
    metrics?.attach(this);
  }

  /** Throws the store's problem (state that cannot be trusted), counting the refused operation. */
  private refuseIfUntrusted(op: "add" | "gc"): void {
    const p = this.store.problem;
    if (!p) return;
    this.metrics?.stateRefused.inc({ op });
    throw p;
  }

  /** The subnet the node holds now, or undefined while it holds none (then nothing is handed out). */
  bind(subnet: Ipv4Prefix | undefined): void {
    const was = this.subnet;
    this.subnet = subnet;
    if (subnet && was && (was.addr !== subnet.addr || was.len !== subnet.len)) {
      const stale = this.store.table.all().filter((a) => !inSubnet(subnet, a.ip)).length;
      this.log.warn({ from: formatCidr(was), to: formatCidr(subnet), stale }, "ipam: the node subnet changed; pods with addresses from the old one need restarting");
    }
    if (subnet) this.plans.clear();
  }

  get boundSubnet(): Ipv4Prefix | undefined {
    return this.subnet;
  }

  /** The spec placed on the current subnet (cached); NoLeaseError without one. */
  plan(spec: IpamSpec, cacheKey: string): IpamPlan {
    const subnet = this.subnet;
    if (!subnet) throw new NoLeaseError("this node holds no subnet lease right now, so it has no addresses to hand out");
    const problem = this.leaseProblem?.();
    if (problem) throw new NoLeaseError(`this node holds no subnet lease right now (${problem}), so it has no addresses to hand out`);
    const k = `${formatCidr(subnet)}|${cacheKey}`;
    let p = this.plans.get(k);
    if (!p) {
      p = planFor(spec, subnet);
      if (this.plans.size > 64) this.plans.clear();
      this.plans.set(k, p);
    }
    return p;
  }

  /**
   * An address for the attachment, durable before this resolves. A repeated
   * ADD for the same network, container and interface returns the address it
   * already holds. Order: requested address, else the address reserved for
   * this pod, else the next free one of the pod's pool.
   */
  allocate(req: AllocateRequest, cacheKey: string): Promise<Grant> {
    const key = allocationKey(req.network, req.containerId, req.ifname);
    return this.serial.run(key, async () => {
      this.refuseIfUntrusted("add");
      const plan = this.plan(req.spec, cacheKey);
      this.remember(req.network, plan);
      const held = this.store.table.get(key);
      if (held && inSubnet(plan.subnet, held.ip)) {
        if (req.requested === undefined || req.requested === held.ip) return { allocation: held, plan, existed: true };
        throw new AddressUnavailableError(`this attachment already holds ${formatIpv4(held.ip)}; DEL it before asking for ${formatIpv4(req.requested)}`);
      }
      if (held) await this.releaseNow(held, "replaced"); // an address from a subnet the node no longer holds
      let ip: number;
      let requested = false;
      if (req.requested !== undefined) {
        checkRequested(plan, this.store.table, req.requested, key);
        ip = req.requested;
        requested = true;
      } else {
        const pool = selectPool(plan, req.pod);
        ip = (pool ? undefined : reservedFor(plan, this.store.table, req.pod)) ?? await this.pick(plan, req.network, pool);
        requested = ip !== undefined && plan.reserved.some((r) => ip >= r.first && ip <= r.last);
      }
      const a: Allocation = {
        ip, network: req.network, containerId: req.containerId, ifname: req.ifname, pool: poolOf(plan, ip),
        netns: req.netns, netnsInode: inodeOf(req.netns), podNamespace: req.pod.namespace, podName: req.pod.name,
        hostIf: req.hostIf, created: Date.now(), requested,
      };
      await this.store.commit({ op: "add", a });
      this.metrics?.allocated.inc({ pool: a.pool });
      this.pressure?.allocated(a.network, a.pool);
      return { allocation: a, plan, existed: false };
    });
  }

  /**
   * Keeps the plan of `network` for metrics and STATUS. A runtime can name
   * any number of networks, so at most MAX_NETWORKS are kept: those holding
   * addresses first, then the most recently used.
   */
  private remember(network: string, plan: IpamPlan): void {
    this.lastPlan.delete(network);
    this.lastPlan.set(network, plan);
    if (this.lastPlan.size <= MAX_NETWORKS) return;
    const holding = new Set(this.store.table.all().map((a) => a.network));
    for (const k of [...this.lastPlan.keys()]) if (this.lastPlan.size > MAX_NETWORKS && !holding.has(k) && k !== network) this.lastPlan.delete(k);
    for (const k of [...this.lastPlan.keys()]) if (this.lastPlan.size > MAX_NETWORKS && k !== network) this.lastPlan.delete(k);
  }

  /** The next free address; a full pool first reclaims under pressure and tries again, then fails saying what waits. */
  private async pick(plan: IpamPlan, network: string, pool: ReturnType<typeof selectPool>): Promise<number> {
    const name = pool?.name ?? DEFAULT_POOL;
    try {
      return pickNext(plan, this.store.table, network, pool);
    } catch (e) {
      if (!(e instanceof PoolExhaustedError)) throw e;
      const p = this.pressure;
      // Bounded: this ADD holds its attachment's lock while it waits (the reconciler skips busy attachments, so it cannot wait on us).
      if (p && (await Promise.race([p.exhausted(network, name), new Promise<boolean>((r) => setTimeout(() => r(false), RECLAIM_WAIT_MS).unref())]))) {
        try {
          return pickNext(plan, this.store.table, network, pool);
        } catch {
          // full again: fall through to the error
        }
      }
      this.metrics?.exhausted.inc({ pool: name });
      if (!p) throw e;
      const u = usage(plan, this.store.table, pool);
      throw new PoolExhaustedError(
        `no free address in pool "${name}" of ${formatCidr(plan.subnet)}: ${u.used} of ${u.capacity} in use; ${p.waiting} of them held by pods whose ` +
          `network namespace is gone, freed once gone for ${p.opts.graceMs / 1000} s (--ipam-pressure-grace)`,
        { recoverable: true, hint: "the runtime retries the ADD; delete pods, run `weft ipam gc`, or widen the pool" },
      );
    }
  }

  /** Whether an operation on the attachment `key` (keyOf) is queued or running. */
  busy(key: string): boolean {
    return this.serial.busy(key);
  }

  find(network: string, containerId: string, ifname: string): Allocation | undefined {
    return this.store.table.get(allocationKey(network, containerId, ifname));
  }

  /**
   * Releases the attachment's address; undefined when it held none (DEL is
   * idempotent). While the state cannot be trusted nothing is written: the
   * address stays held (never handed out twice; GC or the reconciler frees
   * it once the state is repaired), and DEL still succeeds, so that the
   * runtime can finish removing the pod.
   */
  release(network: string, containerId: string, ifname: string, reason: ReleaseReason = "del"): Promise<Allocation | undefined> {
    const key = allocationKey(network, containerId, ifname);
    return this.serial.run(key, async () => {
      const a = this.store.table.get(key);
      if (this.store.problem) {
        this.metrics?.stateRefused.inc({ op: reason === "reconcile" ? "reconcile" : reason === "gc" ? "gc" : "del" });
        this.log.warn({ key, ip: a ? formatIpv4(a.ip) : undefined, reason, err: this.store.problem.message }, "ipam: not releasing (the IPAM state cannot be trusted); the address stays held");
        return undefined;
      }
      if (a) await this.releaseNow(a, reason);
      return a;
    });
  }

  private async releaseNow(a: Allocation, reason: ReleaseReason): Promise<void> {
    await this.store.commit({ op: "del", key: keyOf(a) });
    this.metrics?.released.inc({ reason });
    // A DEL is routine (debug); a release nobody asked for by DEL is worth a line.
    const fields = { ip: formatIpv4(a.ip), container: a.containerId, ifname: a.ifname, reason };
    if (reason === "del") this.log.debug(fields, "ipam: released");
    else this.log.info(fields, "ipam: released");
    await this.onReleased?.(a, reason).catch((e: Error) => this.log.warn({ err: e.message }, "ipam: cleaning up after a release failed"));
  }

  /**
   * CNI GC: releases the network's allocations that are not among `valid`
   * (keys "container/ifname"), except those younger than `minAgeMs` (an ADD
   * that finished after the runtime listed its attachments must survive).
   */
  async gc(network: string, valid: ReadonlySet<string>, minAgeMs: number, now = Date.now()): Promise<Allocation[]> {
    this.refuseIfUntrusted("gc");
    const doomed = this.store.table.all().filter((a) => a.network === network && !valid.has(`${a.containerId}/${a.ifname}`) && now - a.created >= minAgeMs);
    const out: Allocation[] = [];
    for (const a of doomed) {
      const r = await this.release(a.network, a.containerId, a.ifname, "gc");
      if (r) out.push(r);
    }
    return out;
  }

  /** Why ADD cannot be served for this spec now, or undefined when it can (CNI STATUS). */
  unavailable(spec: IpamSpec, cacheKey: string): string | undefined {
    if (this.store.problem) return this.store.problem.message;
    if (!this.subnet) return "this node holds no subnet lease right now";
    const problem = this.leaseProblem?.();
    if (problem) return `this node holds no subnet lease right now (${problem})`;
    const plan = this.plan(spec, cacheKey);
    const u = usage(plan, this.store.table, undefined);
    if (u.used >= u.capacity - u.reserved) return `the default pool of ${formatCidr(plan.subnet)} is exhausted (${u.used} of ${u.capacity} in use)`;
    return undefined;
  }

  /** Usage of every pool of every network seen since start. */
  /** Usage of one pool of `network` (DEFAULT_POOL: the default pool), as usage() gives it; undefined when unknown here. */
  poolUsage(network: string, pool: string): PoolUsage | undefined {
    const plan = this.lastPlan.get(network);
    if (!plan || !this.subnet || plan.subnet.addr !== this.subnet.addr) return undefined;
    const p = plan.pools.find((x) => x.name === pool);
    if (!p && pool !== DEFAULT_POOL) return undefined;
    return usage(plan, this.store.table, p);
  }

  usage(): (PoolUsage & { network: string })[] {
    const out: (PoolUsage & { network: string })[] = [];
    for (const [network, plan] of this.lastPlan) {
      if (!this.subnet || plan.subnet.addr !== this.subnet.addr) continue;
      out.push({ ...usage(plan, this.store.table, undefined), network });
      for (const p of plan.pools) out.push({ ...usage(plan, this.store.table, p), network });
    }
    return out;
  }

  list(): Allocation[] {
    return this.store.table.all().sort((x, y) => x.ip - y.ip);
  }

  async close(): Promise<void> {
    await this.store.close();
  }
}

function inSubnet(s: Ipv4Prefix, ip: number): boolean {
  const size = 2 ** (32 - s.len);
  return ip >= s.addr && ip < s.addr + size;
}

/** statfs(2) f_type of the namespace filesystem (linux/magic.h NSFS_MAGIC). */
const NSFS_MAGIC = 0x6e736673;

/**
 * The identity of the network namespace at `path` as this process sees it:
 * the inode of a file of the namespace filesystem. 0 (identity unknown)
 * when the path is empty, cannot be read from here (e.g. the plugin ran in
 * another mount namespace) or is not a namespace file: the reconciler never
 * frees such an allocation (reconciler.ts).
 */
export function inodeOf(path: string): number {
  if (!path) return 0;
  try {
    if (statfsSync(path).type !== NSFS_MAGIC) return 0;
    return statSync(path).ino;
  } catch {
    return 0;
  }
}
