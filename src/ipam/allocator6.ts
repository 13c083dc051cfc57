import { formatCidr6, formatIpv6 } from "../common/ipv6.js";
import { DEFAULT_POOL, within, type PodIdentity, type PoolUsage } from "./allocator.js";
import { AddressTakenError, AddressUnavailableError, PoolExhaustedError } from "./errors.js";
import type { IpamPlan6, Pool6, Span6 } from "./plan6.js";
import { spanSize6 } from "./plan6.js";
import type { AllocationTable } from "./table.js";

/**
 * Address choice in the node's IPv6 subnet, pure over the table and a plan,
 * as allocator.ts does for IPv4 (same pools, same round-robin cursor per
 * network and pool, same rules for requests and reservations). A /64 holds
 * 2^64 addresses, so nothing walks a range: the next free address is found
 * by stepping from the cursor over spans that may not be picked (a whole
 * exclusion in one step) and over held addresses, one by one. That costs at
 * most (held addresses + spans + 2) steps per pick, whatever the pool's size,
 * and usage is counted by span arithmetic over the held addresses.
 */

/** Why `ip` may never be handed out on this node, or undefined when it may. */
export function unusableReason6(plan: IpamPlan6, ip: bigint): string | undefined {
  const s = plan.subnet;
  if (ip < s.addr || ip > plan.last) return `it is outside this node's IPv6 subnet ${formatCidr6(s)}`;
  if (ip === s.addr) return "it is the subnet's first address (the subnet-router anycast address)";
  if (ip === plan.gateway) return "it is the node's IPv6 gateway address";
  if (within(plan.exclude, ip)) return "it is excluded by ipam.exclude";
  return undefined;
}

/** Checks a requested IPv6 address for `key`; throws saying why it cannot be had. */
export function checkRequested6(plan: IpamPlan6, table: AllocationTable, ip: bigint, key: string): void {
  if (ip >> 32n === 0xffffn) {
    throw new AddressUnavailableError(`the requested address ${formatIpv6(ip)} is an IPv4-mapped IPv6 address; request the IPv4 address itself (${formatIpv4Mapped(ip)})`);
  }
  const why = unusableReason6(plan, ip);
  if (why) throw new AddressUnavailableError(`the requested address ${formatIpv6(ip)} cannot be handed out: ${why}`);
  const holder = table.holder6(ip);
  if (holder && `${holder.network}/${holder.containerId}/${holder.ifname}` !== key) {
    throw new AddressTakenError(`the requested address ${formatIpv6(ip)} is held by container ${holder.containerId} (${holder.ifname}, network ${holder.network})`, {
      recoverable: true, hint: "request another address, or DEL that attachment first",
    });
  }
}

function formatIpv4Mapped(ip: bigint): string {
  const v = Number(ip & 0xffffffffn);
  return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join(".");
}

/** Sorted, merged copy of `spans` (for skipping). */
function merge(spans: readonly Span6[]): Span6[] {
  const s = [...spans].sort((a, b) => (a.first < b.first ? -1 : a.first > b.first ? 1 : 0));
  const out: Span6[] = [];
  for (const x of s) {
    const top = out[out.length - 1];
    if (top && x.first <= top.last + 1n) out[out.length - 1] = { first: top.first, last: x.last > top.last ? x.last : top.last };
    else out.push(x);
  }
  return out;
}

/**
 * The first address in [from, to] outside `blocked` (sorted, merged) and not
 * held; undefined when there is none. Steps: one per held address met plus
 * one per span met.
 */
function firstFree(from: bigint, to: bigint, skip: readonly Span6[], table: AllocationTable): bigint | undefined {
  let c = from;
  let i = 0;
  while (c <= to) {
    while (i < skip.length && (skip[i] as Span6).last < c) i++;
    const b = skip[i];
    if (b && b.first <= c) {
      c = b.last + 1n;
      continue;
    }
    if (!table.holder6(c)) return c;
    c++;
  }
  return undefined;
}

/** What may not be picked: the subnet-router address, the gateway, exclusions, and optionally reservations and named pools' spans. */
function blocked(plan: IpamPlan6, o: { reserved: boolean; pools: boolean }): Span6[] {
  const one = (ip: bigint): Span6 => ({ first: ip, last: ip });
  return merge([one(plan.subnet.addr), one(plan.gateway), ...plan.exclude, ...(o.reserved ? plan.reserved : []), ...(o.pools ? plan.pools : [])]);
}

/** The address reserved for this pod by name, if any and free. */
export function reservedFor6(plan: IpamPlan6, table: AllocationTable, pod: PodIdentity): bigint | undefined {
  const skip = blocked(plan, { reserved: false, pools: false });
  for (const r of plan.reserved) {
    if (!r.pod || r.pod.name !== pod.name || (r.pod.namespace !== undefined && r.pod.namespace !== pod.namespace)) continue;
    const ip = firstFree(r.first, r.last, skip, table);
    if (ip !== undefined) return ip;
  }
  return undefined;
}

function spanOf(plan: IpamPlan6, pool: Pool6 | undefined): Span6 {
  return pool ?? { first: plan.subnet.addr, last: plan.last };
}

/** The next free address of the pool after the pool's cursor, wrapping once; PoolExhaustedError when there is none. */
export function pickNext6(plan: IpamPlan6, table: AllocationTable, network: string, pool: Pool6 | undefined): bigint {
  const span = spanOf(plan, pool);
  // The default pool is every address no named pool claims.
  const skip = blocked(plan, { reserved: true, pools: pool === undefined });
  const cursor = table.cursors6.get(`${network}/${pool?.name ?? DEFAULT_POOL}`);
  const start = cursor !== undefined && cursor >= span.first && cursor < span.last ? cursor + 1n : span.first;
  const ip = firstFree(start, span.last, skip, table) ?? (start > span.first ? firstFree(span.first, start - 1n, skip, table) : undefined);
  if (ip !== undefined) return ip;
  const u = usage6(plan, table, pool);
  throw new PoolExhaustedError(
    `no free address in IPv6 pool "${pool?.name ?? DEFAULT_POOL}" of ${formatCidr6(plan.subnet)}: ${u.used} of ${u.capacity} in use`,
    { recoverable: true, hint: "delete pods (their addresses come back), run `weft ipam gc`, or widen the pool" },
  );
}

/** Addresses of `spans` (sorted, merged) inside `s`. */
function overlap(spans: readonly Span6[], s: Span6): bigint {
  let n = 0n;
  for (const x of spans) {
    const first = x.first > s.first ? x.first : s.first;
    const last = x.last < s.last ? x.last : s.last;
    if (first <= last) n += last - first + 1n;
  }
  return n;
}

/** `a` less `b` (both sorted, merged). */
function subtract(a: readonly Span6[], b: readonly Span6[]): Span6[] {
  const out: Span6[] = [];
  for (const x of a) {
    let pieces: Span6[] = [x];
    for (const y of b) {
      pieces = pieces.flatMap((p) => {
        if (y.last < p.first || y.first > p.last) return [p];
        const r: Span6[] = [];
        if (y.first > p.first) r.push({ first: p.first, last: y.first - 1n });
        if (y.last < p.last) r.push({ first: y.last + 1n, last: p.last });
        return r;
      });
    }
    out.push(...pieces);
  }
  return out;
}

/**
 * Usage of one IPv6 pool (undefined: the default pool), as usage() gives it
 * for IPv4, by span arithmetic: O(spans² + held addresses), never O(pool
 * size). Counts above 2^53 lose precision as numbers (a /64's capacity
 * prints as 18446744073709552000); the ratio stays right.
 */
export function usage6(plan: IpamPlan6, table: AllocationTable, pool: Pool6 | undefined): PoolUsage {
  const span = spanOf(plan, pool);
  const unusable = blocked(plan, { reserved: false, pools: pool === undefined });
  const capacity = spanSize6(span) - overlap(unusable, span);
  const reservedSpans = subtract(merge(plan.reserved), unusable);
  let used = 0n;
  let heldReserved = 0n;
  for (const ip of table.held6()) {
    if (ip < span.first || ip > span.last || within(unusable, ip)) continue;
    used++;
    if (within(reservedSpans, ip)) heldReserved++;
  }
  const reserved = overlap(reservedSpans, span) - heldReserved;
  return { pool: pool?.name ?? DEFAULT_POOL, capacity: Number(capacity), used: Number(used), reserved: Number(reserved), family: 6 };
}
