import { formatCidr, formatIpv4, type Ipv4Prefix } from "../common/ipv4.js";
import { contains6, formatCidr6, formatIpv6, type Ipv6Prefix } from "../common/ipv6.js";
import type { Logger } from "../common/log.js";
import { checkRequested, DEFAULT_POOL, pickNext, poolOf, reservedFor, selectPool, usage, usageRatio, type PodIdentity, type PoolUsage } from "./allocator.js";
import { checkRequested6, pickNext6, reservedFor6, usage6 } from "./allocator6.js";
import { planFor, type IpamPlan, type IpamSpec } from "./config.js";
import { planFor6, type IpamPlan6 } from "./plan6.js";
import { AddressUnavailableError, NoLeaseError, PoolExhaustedError } from "./errors.js";
import type { IpamMetrics } from "./metrics.js";
import type { PoolPressure } from "./pressure.js";
import type { IpamStore } from "./store.js";
import { addressText, allocationKey, keyOf, type Allocation } from "./table.js";
import { KeyedSerial } from "../common/keyed-serial.js";
import { fits, FullPool, inodeOf, inSubnet, onBound } from "./attachment.js";

export { inodeOf };

export interface AllocateRequest {
  readonly network: string;
  readonly containerId: string;
  readonly ifname: string;
  readonly netns: string;
  readonly pod: PodIdentity;
  /** An IPv4 address asked for by the runtime, if any. */
  readonly requested: number | undefined;
  /** An IPv6 address asked for by the runtime, if any. */
  readonly requested6?: bigint | undefined;
  readonly spec: IpamSpec;
  /** Host side of the veth the main plugin makes ("" for weft-ipam). */
  readonly hostIf: string;
}

/** The spec placed on each subnet the node holds (at least one is set). */
export interface NodePlan {
  readonly v4: IpamPlan | undefined;
  readonly v6: IpamPlan6 | undefined;
}

export interface Grant {
  readonly allocation: Allocation;
  /** The plan of the IPv4 subnet (undefined on an IPv6-only node). */
  readonly plan: IpamPlan | undefined;
  /** The plan of the IPv6 subnet (undefined on a node without one). */
  readonly plan6: IpamPlan6 | undefined;
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
  private subnet6: Ipv6Prefix | undefined;
  /** One operation at a time per key. */
  private readonly serial = new KeyedSerial();
  private readonly plans = new Map<string, NodePlan>();
  /** The plan last used per network, for metrics and STATUS. */
  readonly lastPlan = new Map<string, NodePlan>();
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

  /**
   * The subnets the node holds now: IPv4, IPv6, both (dual-stack), or none
   * (the lease is lost: nothing is handed out). Each pod gets one address of
   * each family bound.
   */
  bind(subnet: Ipv4Prefix | undefined, subnet6?: Ipv6Prefix): void {
    const was = this.subnet;
    const was6 = this.subnet6;
    this.subnet = subnet;
    this.subnet6 = subnet6;
    if (subnet && was && (was.addr !== subnet.addr || was.len !== subnet.len)) {
      const stale = this.store.table.all().filter((a) => a.ip !== undefined && !inSubnet(subnet, a.ip)).length;
      this.log.warn({ from: formatCidr(was), to: formatCidr(subnet), stale }, "ipam: the node subnet changed; pods with addresses from the old one need restarting");
    }
    if (subnet6 && was6 && (was6.addr !== subnet6.addr || was6.len !== subnet6.len)) {
      const stale = this.store.table.all().filter((a) => a.ip6 !== undefined && !contains6(subnet6, a.ip6)).length;
      this.log.warn({ from: formatCidr6(was6), to: formatCidr6(subnet6), stale }, "ipam: the node IPv6 subnet changed; pods with addresses from the old one need restarting");
    }
    if (subnet || subnet6) this.plans.clear();
  }

  get boundSubnet(): Ipv4Prefix | undefined {
    return this.subnet;
  }

  get boundSubnet6(): Ipv6Prefix | undefined {
    return this.subnet6;
  }

  /** The spec placed on the current subnets (cached); NoLeaseError without any. */
  plan(spec: IpamSpec, cacheKey: string): NodePlan {
    const subnet = this.subnet;
    const subnet6 = this.subnet6;
    if (!subnet && !subnet6) throw new NoLeaseError("this node holds no subnet lease right now, so it has no addresses to hand out");
    const problem = this.leaseProblem?.();
    if (problem) throw new NoLeaseError(`this node holds no subnet lease right now (${problem}), so it has no addresses to hand out`);
    const k = `${subnet ? formatCidr(subnet) : "-"}|${subnet6 ? formatCidr6(subnet6) : "-"}|${cacheKey}`;
    let p = this.plans.get(k);
    if (!p) {
      p = { v4: subnet ? planFor(spec, subnet) : undefined, v6: subnet6 ? planFor6(spec, subnet6) : undefined };
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
      const nodePlan = this.plan(req.spec, cacheKey);
      const { v4: plan, v6: plan6 } = nodePlan;
      this.remember(req.network, nodePlan);
      if (req.requested !== undefined && !plan) {
        throw new AddressUnavailableError(`the requested address ${formatIpv4(req.requested)} is IPv4, and this node has no IPv4 subnet (it is IPv6-only)`, { hint: "request an IPv6 address of the node's IPv6 subnet, or none" });
      }
      if (req.requested6 !== undefined && !plan6) {
        throw new AddressUnavailableError(`the requested address ${formatIpv6(req.requested6)} is IPv6, and this node has no IPv6 subnet`, { hint: "request an IPv4 address of the node's subnet, or none" });
      }
      const held = this.store.table.get(key);
      // Held addresses all on bound subnets, but a bound family missing (the node became dual-stack): kept, and the missing one added.
      const grow = held && !fits(held, plan, plan6) && onBound(held, plan, plan6) ? held : undefined;
      if (held && (grow || fits(held, plan, plan6))) {
        // A family bound is held (fits) or about to be added (grow): a request can only differ from what is held.
        const differs4 = req.requested !== undefined && held.ip !== undefined && req.requested !== held.ip;
        const differs6 = req.requested6 !== undefined && held.ip6 !== undefined && req.requested6 !== held.ip6;
        if (differs4 || differs6) {
          const asked = [req.requested === undefined ? "" : formatIpv4(req.requested), req.requested6 === undefined ? "" : formatIpv6(req.requested6)].filter(Boolean).join(" and ");
          throw new AddressUnavailableError(`this attachment already holds ${addressText(held)}; DEL it before asking for ${asked}`);
        }
        if (!grow) return { allocation: held, plan, plan6, existed: true };
      }
      if (held && !grow) await this.releaseNow(held, "replaced"); // an address from a subnet the node no longer holds
      // Choosing is synchronous and the commit applies at once, so no other ADD can take the chosen
      // addresses in between. Only a full pool waits (for the early reclaim), then chooses anew.
      let reclaimed = false;
      for (;;) {
        let a: Allocation;
        try {
          a = grow ? this.widen(grow, req, key, plan, plan6) : this.choose(req, key, plan, plan6);
        } catch (e) {
          if (!(e instanceof FullPool)) throw e;
          await this.relieve(e, reclaimed);
          reclaimed = true;
          continue;
        }
        await this.store.commit({ op: "add", a });
        this.metrics?.allocated.inc({ pool: a.pool });
        this.pressure?.allocated(a.network, a.pool);
        if (a.pool6 !== undefined) this.pressure?.allocated(a.network, a.pool6);
        // A widened attachment existed: a failure after this must not release the addresses its pod already uses.
        return { allocation: a, plan, plan6, existed: grow !== undefined };
      }
    });
  }

  /**
   * The addresses for a new allocation of `key`, per family: requested, else
   * reserved for the pod, else the next free one of its pool. Synchronous;
   * throws FullPool when a pool has no free address.
   */
  private choose(req: AllocateRequest, key: string, plan: IpamPlan | undefined, plan6: IpamPlan6 | undefined): Allocation {
    const full = <T>(next: () => T, name: string, subnet: string, u: () => PoolUsage): T => {
      try {
        return next();
      } catch (e) {
        if (e instanceof PoolExhaustedError) throw new FullPool(e, req.network, name, subnet, u);
        throw e;
      }
    };
    let ip: number | undefined;
    let pool4: string | undefined;
    let requested = false;
    if (plan) {
      if (req.requested !== undefined) {
        checkRequested(plan, this.store.table, req.requested, key);
        ip = req.requested;
        requested = true;
      } else {
        const pool = selectPool(plan, req.pod);
        const got = (pool ? undefined : reservedFor(plan, this.store.table, req.pod)) ??
          full(() => pickNext(plan, this.store.table, req.network, pool), pool?.name ?? DEFAULT_POOL, formatCidr(plan.subnet), () => usage(plan, this.store.table, pool));
        ip = got;
        requested = plan.reserved.some((r) => got >= r.first && got <= r.last);
      }
      pool4 = poolOf(plan, ip);
    }
    let ip6: bigint | undefined;
    let pool6: string | undefined;
    if (plan6) {
      if (req.requested6 !== undefined) {
        checkRequested6(plan6, this.store.table, req.requested6, key);
        ip6 = req.requested6;
        requested = true;
      } else {
        const pool = selectPool(plan6, req.pod);
        const got = (pool ? undefined : reservedFor6(plan6, this.store.table, req.pod)) ??
          full(() => pickNext6(plan6, this.store.table, req.network, pool), pool?.name ?? DEFAULT_POOL, formatCidr6(plan6.subnet), () => usage6(plan6, this.store.table, pool));
        ip6 = got;
        requested ||= plan6.reserved.some((r) => got >= r.first && got <= r.last);
      }
      pool6 = poolOf(plan6, ip6);
    }
    return {
      ip, ...(ip6 === undefined ? {} : { ip6 }), network: req.network, containerId: req.containerId, ifname: req.ifname,
      pool: pool4 ?? pool6 ?? DEFAULT_POOL, ...(pool4 !== undefined && pool6 !== undefined && pool6 !== pool4 ? { pool6 } : {}),
      netns: req.netns, netnsInode: inodeOf(req.netns), podNamespace: req.pod.namespace, podName: req.pod.name,
      hostIf: req.hostIf, created: Date.now(), requested,
    };
  }

  /** `held` with an address added for each bound family it lacks; what it held stays as it was. */
  private widen(held: Allocation, req: AllocateRequest, key: string, plan: IpamPlan | undefined, plan6: IpamPlan6 | undefined): Allocation {
    const a = this.choose({ ...req, requested: held.ip ?? req.requested, requested6: held.ip6 ?? req.requested6 }, key, plan, plan6);
    const pool4 = plan && a.ip !== undefined ? poolOf(plan, a.ip) : undefined;
    const pool6 = plan6 && a.ip6 !== undefined ? poolOf(plan6, a.ip6) : undefined;
    return {
      ...held, ip: a.ip, ...(a.ip6 === undefined ? {} : { ip6: a.ip6 }), netns: a.netns, netnsInode: a.netnsInode,
      pool: pool4 ?? pool6 ?? DEFAULT_POOL, pool6: pool4 !== undefined && pool6 !== undefined && pool6 !== pool4 ? pool6 : undefined,
    };
  }

  /**
   * A pool was full: the first time, reclaims under pressure and returns
   * when that freed something (the caller chooses again); otherwise fails
   * saying what is held and what waits.
   */
  private async relieve(f: FullPool, reclaimed: boolean): Promise<void> {
    const p = this.pressure;
    // Bounded: this ADD holds its attachment's lock while it waits (the reconciler skips busy attachments, so it cannot wait on us).
    if (!reclaimed && p && (await Promise.race([p.exhausted(f.network, f.pool), new Promise<boolean>((r) => setTimeout(() => r(false), RECLAIM_WAIT_MS).unref())]))) return;
    this.metrics?.exhausted.inc({ pool: f.pool });
    if (!p) throw f.error;
    const u = f.usage();
    throw new PoolExhaustedError(
      `no free address in pool "${f.pool}" of ${f.subnet}: ${u.used} of ${u.capacity} in use; ${p.waiting} of them held by pods whose ` +
        `network namespace is gone, freed once gone for ${p.opts.graceMs / 1000} s (--ipam-pressure-grace)`,
      { recoverable: true, hint: "the runtime retries the ADD; delete pods, run `weft ipam gc`, or widen the pool" },
    );
  }

  /**
   * Keeps the plan of `network` for metrics and STATUS. A runtime can name
   * any number of networks, so at most MAX_NETWORKS are kept: those holding
   * addresses first, then the most recently used.
   */
  private remember(network: string, plan: NodePlan): void {
    this.lastPlan.delete(network);
    this.lastPlan.set(network, plan);
    if (this.lastPlan.size <= MAX_NETWORKS) return;
    const holding = new Set(this.store.table.all().map((a) => a.network));
    for (const k of [...this.lastPlan.keys()]) if (this.lastPlan.size > MAX_NETWORKS && !holding.has(k) && k !== network) this.lastPlan.delete(k);
    for (const k of [...this.lastPlan.keys()]) if (this.lastPlan.size > MAX_NETWORKS && k !== network) this.lastPlan.delete(k);
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
        this.log.warn({ key, ip: a ? addressText(a) : undefined, reason, err: this.store.problem.message }, "ipam: not releasing (the IPAM state cannot be trusted); the address stays held");
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
    const fields = { ip: addressText(a), container: a.containerId, ifname: a.ifname, reason };
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
    if (!this.subnet && !this.subnet6) return "this node holds no subnet lease right now";
    const problem = this.leaseProblem?.();
    if (problem) return `this node holds no subnet lease right now (${problem})`;
    const { v4, v6 } = this.plan(spec, cacheKey);
    const full = (u: PoolUsage, subnet: string): string | undefined =>
      u.used >= u.capacity - u.reserved ? `the default pool of ${subnet} is exhausted (${u.used} of ${u.capacity} in use)` : undefined;
    return (v4 ? full(usage(v4, this.store.table, undefined), formatCidr(v4.subnet)) : undefined) ??
      (v6 ? full(usage6(v6, this.store.table, undefined), formatCidr6(v6.subnet)) : undefined);
  }

  /** The plan last used for `network`, when it is still on the subnets bound now. */
  private currentPlan(network: string): NodePlan | undefined {
    const plan = this.lastPlan.get(network);
    if (!plan) return undefined;
    const same4 = plan.v4?.subnet.addr === this.subnet?.addr && plan.v4?.subnet.len === this.subnet?.len;
    const same6 = plan.v6?.subnet.addr === this.subnet6?.addr && plan.v6?.subnet.len === this.subnet6?.len;
    return same4 && same6 && (plan.v4 || plan.v6) ? plan : undefined;
  }

  /**
   * Usage of one pool of `network` (DEFAULT_POOL: the default pool), as
   * usage() gives it; on a dual-stack node that of the family where the pool
   * is fuller (what reclaiming under pressure watches). Undefined when unknown here.
   */
  poolUsage(network: string, pool: string): PoolUsage | undefined {
    const plan = this.currentPlan(network);
    if (!plan) return undefined;
    const all: PoolUsage[] = [];
    if (plan.v4) {
      const p = plan.v4.pools.find((x) => x.name === pool);
      if (p || pool === DEFAULT_POOL) all.push(usage(plan.v4, this.store.table, p));
    }
    if (plan.v6) {
      const p = plan.v6.pools.find((x) => x.name === pool);
      if (p || pool === DEFAULT_POOL) all.push(usage6(plan.v6, this.store.table, p));
    }
    return all.reduce<PoolUsage | undefined>((m, u) => (!m || usageRatio(u) > usageRatio(m) ? u : m), undefined);
  }

  /** Usage of every pool of every network seen since start (IPv6 pools carry family 6). */
  usage(): (PoolUsage & { network: string })[] {
    const out: (PoolUsage & { network: string })[] = [];
    for (const network of this.lastPlan.keys()) {
      const plan = this.currentPlan(network);
      if (!plan) continue;
      if (plan.v4) {
        out.push({ ...usage(plan.v4, this.store.table, undefined), network });
        for (const p of plan.v4.pools) out.push({ ...usage(plan.v4, this.store.table, p), network });
      }
      if (plan.v6) {
        out.push({ ...usage6(plan.v6, this.store.table, undefined), network });
        for (const p of plan.v6.pools) out.push({ ...usage6(plan.v6, this.store.table, p), network });
      }
    }
    return out;
  }

  /** Every allocation, IPv4 addresses ascending, then IPv6-only ones by address. */
  list(): Allocation[] {
    return this.store.table.all().sort((x, y) => {
      if (x.ip !== undefined || y.ip !== undefined) return (x.ip ?? Infinity) - (y.ip ?? Infinity);
      const a = x.ip6 ?? 0n;
      const b = y.ip6 ?? 0n;
      return a < b ? -1 : a > b ? 1 : 0;
    });
  }

  async close(): Promise<void> {
    await this.store.close();
  }
}
