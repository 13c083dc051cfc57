import { formatCidr6, formatIpv6, type Ipv6Prefix } from "../common/ipv6.js";
import type { IpamSpec, Pool, RangeRef, ReservationSpec, Route, Span } from "./config.js";
import { IpamConfigError } from "./errors.js";

/**
 * The ipam spec placed on the node's IPv6 subnet (config.ts places it on the
 * IPv4 one). Addresses are 128-bit bigints. Nothing here is per address: a
 * /64 holds 2^64 of them, so pools, exclusions and reservations stay spans,
 * and the allocator (allocator6.ts) steps over spans and held addresses
 * instead of walking the range.
 *
 * Not handed out: the subnet's first address (the subnet-router anycast
 * address, RFC 4291 2.6.1) and the gateway (first + 1, the bridge's), as in
 * IPv4 the network address and the gateway. IPv6 has no broadcast address.
 */

/** An inclusive IPv6 address range. */
export type Span6 = Span<bigint>;

export type Pool6 = Pool<bigint>;

export interface IpamPlan6 {
  readonly subnet: Ipv6Prefix;
  readonly gateway: bigint;
  /** The subnet's last address. */
  readonly last: bigint;
  readonly pools: readonly Pool6[];
  readonly exclude: readonly Span6[];
  readonly reserved: readonly (Span6 & { readonly pod: ReservationSpec["pod"] })[];
  readonly routes: readonly Route[];
  readonly gcMinAgeSeconds: number;
}

/** Number of addresses in a span. */
export const spanSize6 = (s: Span6): bigint => s.last - s.first + 1n;

/** Places `spec` on the node's IPv6 subnet. Throws IpamConfigError for a pool that does not fit or overlaps another. */
export function planFor6(spec: IpamSpec, subnet: Ipv6Prefix): IpamPlan6 {
  if (subnet.len > 126) {
    throw new IpamConfigError(`the node IPv6 subnet ${formatCidr6(subnet)} leaves no address for pods (the subnet-router address and the gateway take a /127's)`, {
      hint: "use an IPv6 SubnetLen of 126 or less (64 is usual) in the network config",
    });
  }
  const base = subnet.addr;
  const last = base | ((1n << BigInt(128 - subnet.len)) - 1n);
  const abs = (r: RangeRef): Span6 => (r.relative ? { first: base + BigInt(r.first), last: base + BigInt(r.last) } : r.v6 ?? { first: 0n, last: -1n });
  const inside = (s: Span6): boolean => s.first >= base && s.last <= last;
  const mine = (r: RangeRef): boolean => r.family !== 4;
  const pools: Pool6[] = spec.pools.filter((p) => mine(p.range)).map((p) => {
    const s = abs(p.range);
    if (!inside(s)) {
      throw new IpamConfigError(`pool "${p.name}" (${p.range.text}) does not lie inside this node's IPv6 subnet ${formatCidr6(subnet)}`, {
        hint: 'every node leases a different subnet: write pools relative to it, e.g. "+64/27", or as IPv6 inside it',
      });
    }
    return { ...s, name: p.name, namespaces: p.namespaces, podLabels: p.podLabels };
  });
  const sorted = [...pools].sort((a, b) => (a.first < b.first ? -1 : a.first > b.first ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1] as Pool6;
    const b = sorted[i] as Pool6;
    if (b.first <= a.last) throw new IpamConfigError(`pools "${a.name}" and "${b.name}" overlap (${formatIpv6(b.first)} is in both); an address belongs to one pool`);
  }
  const clip = (s: Span6): Span6 | undefined => {
    const first = s.first > base ? s.first : base;
    const end = s.last < last ? s.last : last;
    return first <= end ? { first, last: end } : undefined;
  };
  const exclude = spec.exclude.filter(mine).map(abs).map(clip).filter((s): s is Span6 => s !== undefined);
  const reserved = spec.reservations.filter((r) => mine(r.range)).flatMap((r) => {
    const s = clip(abs(r.range));
    return s ? [{ ...s, pod: r.pod }] : [];
  });
  const routes = spec.routes.filter((r) => r.family === 6);
  return { subnet, gateway: base + 1n, last, pools, exclude, reserved, routes, gcMinAgeSeconds: spec.gcMinAgeSeconds };
}
