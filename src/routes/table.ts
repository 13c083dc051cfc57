import { formatCidr, maskOf, type Ipv4Prefix } from "../common/ipv4.js";
import { sameAttrs, type Lease } from "../subnet/lease.js";

/** What changed in the set of remote leases. `removed` carries the last attributes seen. */
export interface RouteDiff {
  readonly added: readonly Lease[];
  readonly removed: readonly Lease[];
  /** Same subnet, new attributes (a node restarted with another VTEP MAC or address). */
  readonly changed: readonly { readonly before: Lease; readonly after: Lease }[];
}

export const EMPTY_DIFF: RouteDiff = { added: [], removed: [], changed: [] };

export function isEmpty(d: RouteDiff): boolean {
  return d.added.length === 0 && d.removed.length === 0 && d.changed.length === 0;
}

const keyOf = (p: Ipv4Prefix): string => formatCidr(p);

/**
 * The desired state of the overlay's routes: one entry per other node's
 * lease. Built from snapshots and watch events; every change returns the
 * diff backends apply. Our own subnet is never a route. Unlike flannel, a
 * removal keeps the attributes last seen, so backends can delete the exact
 * neighbour and FDB entries they added.
 */
export class RouteTable {
  private readonly routes = new Map<string, Lease>();
  private self: Ipv4Prefix | undefined;

  get size(): number {
    return this.routes.size;
  }

  all(): Lease[] {
    return [...this.routes.values()];
  }

  get(p: Ipv4Prefix): Lease | undefined {
    return this.routes.get(keyOf(p));
  }

  private isSelf(p: Ipv4Prefix): boolean {
    if (!this.self) return false;
    const len = Math.min(p.len, this.self.len);
    return ((p.addr & maskOf(len)) >>> 0) === ((this.self.addr & maskOf(len)) >>> 0);
  }

  /** Sets our own subnet: a route that overlaps it is dropped. */
  setSelf(p: Ipv4Prefix | undefined): RouteDiff {
    this.self = p;
    const removed = this.all().filter((l) => this.isSelf(l.subnet));
    removed.forEach((l) => this.routes.delete(keyOf(l.subnet)));
    return { added: [], removed, changed: [] };
  }

  /** Replaces everything with a snapshot. */
  replaceAll(leases: readonly Lease[]): RouteDiff {
    const next = new Map<string, Lease>();
    for (const l of leases) if (!this.isSelf(l.subnet)) next.set(keyOf(l.subnet), l);
    const added: Lease[] = [];
    const removed: Lease[] = [];
    const changed: { before: Lease; after: Lease }[] = [];
    for (const [k, l] of next) {
      const old = this.routes.get(k);
      if (!old) added.push(l);
      else if (!sameAttrs(old.attrs, l.attrs)) changed.push({ before: old, after: l });
    }
    for (const [k, l] of this.routes) if (!next.has(k)) removed.push(l);
    this.routes.clear();
    for (const [k, l] of next) this.routes.set(k, l);
    return { added, removed, changed };
  }

  put(l: Lease): RouteDiff {
    if (this.isSelf(l.subnet)) return EMPTY_DIFF;
    const k = keyOf(l.subnet);
    const old = this.routes.get(k);
    this.routes.set(k, l);
    if (!old) return { added: [l], removed: [], changed: [] };
    if (sameAttrs(old.attrs, l.attrs)) return EMPTY_DIFF; // a renewal
    return { added: [], removed: [], changed: [{ before: old, after: l }] };
  }

  delete(p: Ipv4Prefix): RouteDiff {
    const k = keyOf(p);
    const old = this.routes.get(k);
    if (!old) return EMPTY_DIFF;
    this.routes.delete(k);
    return { added: [], removed: [old], changed: [] };
  }
}
