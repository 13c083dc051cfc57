import { formatCidr, formatIpv4 } from "../common/ipv4.js";
import type { IpamPlan, Pool, Span } from "./config.js";
import { AddressTakenError, AddressUnavailableError, PoolExhaustedError } from "./errors.js";
import type { AllocationTable } from "./table.js";

/**
 * Address choice, pure over the table and a plan: which pool a pod belongs
 * to, whether a requested address may be used, and the next free address
 * round-robin from the last one picked (so a released address rests while
 * the rest of the pool is used first, as host-local and Calico do).
 */

export interface PodIdentity {
  readonly namespace: string;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
}

export const DEFAULT_POOL = "default";

/** The first pool whose selectors all match the pod; else the default pool (undefined). Either family's plan. */
export function selectPool<P extends Pool<number> | Pool<bigint>>(plan: { readonly pools: readonly P[] }, pod: PodIdentity): P | undefined {
  return plan.pools.find((p) => {
    if (p.namespaces?.length && !p.namespaces.includes(pod.namespace)) return false;
    if (p.podLabels && !Object.entries(p.podLabels).every(([k, v]) => pod.labels[k] === v)) return false;
    return true;
  });
}

/** Whether `ip` lies in one of the spans (either family). */
export const within = <A extends number | bigint>(spans: readonly Span<A>[], ip: A): boolean => spans.some((s) => ip >= s.first && ip <= s.last);

/** Why `ip` may never be handed out on this node, or undefined when it may. Reservations are not a reason: a request may take them. */
export function unusableReason(plan: IpamPlan, ip: number): string | undefined {
  const s = plan.subnet;
  if (ip < s.addr || ip > plan.broadcast) return `it is outside this node's subnet ${formatCidr(s)}`;
  if (ip === s.addr) return "it is the subnet's network address";
  if (ip === plan.broadcast) return "it is the subnet's broadcast address";
  if (ip === plan.gateway) return "it is the node's gateway address";
  if (within(plan.exclude, ip)) return "it is excluded by ipam.exclude";
  return undefined;
}

/** The pool an address belongs to by position. Either family's plan. */
export function poolOf<A extends number | bigint>(plan: { readonly pools: readonly Pool<A>[] }, ip: A): string {
  return plan.pools.find((p) => ip >= p.first && ip <= p.last)?.name ?? "default";
}

/** Checks a requested address for `key`; throws saying why it cannot be had. */
export function checkRequested(plan: IpamPlan, table: AllocationTable, ip: number, key: string): void {
  const why = unusableReason(plan, ip);
  if (why) throw new AddressUnavailableError(`the requested address ${formatIpv4(ip)} cannot be handed out: ${why}`);
  const holder = table.holder(ip);
  if (holder && `${holder.network}/${holder.containerId}/${holder.ifname}` !== key) {
    throw new AddressTakenError(`the requested address ${formatIpv4(ip)} is held by container ${holder.containerId} (${holder.ifname}, network ${holder.network})`, {
      recoverable: true, hint: "request another address, or DEL that attachment first",
    });
  }
}

/** The address reserved for this pod by name, if any and free. */
export function reservedFor(plan: IpamPlan, table: AllocationTable, pod: PodIdentity): number | undefined {
  for (const r of plan.reserved) {
    if (!r.pod || r.pod.name !== pod.name || (r.pod.namespace !== undefined && r.pod.namespace !== pod.namespace)) continue;
    for (let ip = r.first; ip <= r.last; ip++) {
      if (!table.holder(ip) && !unusableReason(plan, ip)) return ip;
    }
  }
  return undefined;
}

/** The span the pool covers: a named pool's range, or the whole subnet for the default pool. */
function spanOf(plan: IpamPlan, pool: Pool | undefined): Span {
  return pool ?? { first: plan.subnet.addr, last: plan.broadcast };
}

/** True when `ip` may be picked (not asked for) in `pool`. */
function pickable(plan: IpamPlan, table: AllocationTable, pool: Pool | undefined, ip: number): boolean {
  if (table.holder(ip) || unusableReason(plan, ip) || within(plan.reserved, ip)) return false;
  // The default pool is every address no named pool claims.
  return pool !== undefined || !within(plan.pools, ip);
}

/**
 * The next free address of the pool after the pool's cursor, wrapping once.
 * Throws PoolExhaustedError with the pool's usage when there is none.
 */
export function pickNext(plan: IpamPlan, table: AllocationTable, network: string, pool: Pool | undefined): number {
  const span = spanOf(plan, pool);
  const cursor = table.cursors.get(`${network}/${pool?.name ?? DEFAULT_POOL}`);
  const size = span.last - span.first + 1;
  const start = cursor !== undefined && cursor >= span.first && cursor <= span.last ? cursor - span.first + 1 : 0;
  for (let i = 0; i < size; i++) {
    const ip = span.first + ((start + i) % size);
    if (pickable(plan, table, pool, ip)) return ip;
  }
  const u = usage(plan, table, pool);
  throw new PoolExhaustedError(
    `no free address in pool "${pool?.name ?? DEFAULT_POOL}" of ${formatCidr(plan.subnet)}: ${u.used} of ${u.capacity} in use`,
    { recoverable: true, hint: "delete pods (their addresses come back), run `weft ipam gc`, or widen the pool" },
  );
}

export interface PoolUsage {
  readonly pool: string;
  /** Addresses that can be picked or requested (network, broadcast, gateway and exclusions left out). */
  readonly capacity: number;
  readonly used: number;
  /** Set aside by reservations (and not in use). */
  readonly reserved: number;
  /** 6 for a pool of the IPv6 subnet (allocator6.ts); absent for IPv4. */
  readonly family?: 4 | 6;
}

/** In-use addresses over those that can be handed out (capacity less unused reservations); a pool with no room is full (1). */
export function usageRatio(u: PoolUsage): number {
  const room = u.capacity - u.reserved;
  return room > 0 ? u.used / room : 1;
}

/** Usage of one pool (undefined: the default pool). O(pool size). */
export function usage(plan: IpamPlan, table: AllocationTable, pool: Pool | undefined): PoolUsage {
  const span = spanOf(plan, pool);
  let capacity = 0;
  let used = 0;
  let reserved = 0;
  for (let ip = span.first; ip <= span.last; ip++) {
    if (unusableReason(plan, ip)) continue;
    if (!pool && within(plan.pools, ip)) continue;
    capacity++;
    if (table.holder(ip)) used++;
    else if (within(plan.reserved, ip)) reserved++;
  }
  return { pool: pool?.name ?? DEFAULT_POOL, capacity, used, reserved };
}
