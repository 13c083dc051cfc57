import { formatCidr, formatIpv4, type Ipv4Prefix } from "../common/ipv4.js";
import { formatCidr6, formatIpv6 } from "../common/ipv6.js";
import { sameAttrs, type Lease } from "../subnet/lease.js";
import type { SkippedKey } from "../subnet/registry.js";
import { checkLease, isOwnLease, type LeasePolicy, type Rejection, type SelfLease } from "./accept.js";

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

const cidr = (p: Ipv4Prefix): string => formatCidr(p);

/**
 * What a used lease holds alone, as strings: its subnets and its public
 * addresses, each family's only when the cluster runs that family. Two
 * leases sharing any of them conflict (subnets of one length on their
 * boundaries overlap only when equal).
 */
function claims(l: Lease, p: LeasePolicy | undefined): string[] {
  // Joined, not templated: these are kept as map keys, and join makes flat strings (see formatIpv4).
  const out: string[] = [];
  if (p?.enableIpv4 !== false) out.push(["s4", cidr(l.subnet)].join(" "));
  if (p?.ipv6 && l.subnet6) out.push(["s6", formatCidr6(l.subnet6)].join(" "));
  if (l.attrs.publicIp !== 0) out.push(["a4", formatIpv4(l.attrs.publicIp)].join(" "));
  if (p?.ipv6 && l.attrs.publicIpv6 !== undefined) out.push(["a6", formatIpv6(l.attrs.publicIpv6)].join(" "));
  return out;
}

/** The route's name in the backends' view: its IPv4 subnet, or on an IPv6-only network its IPv6 subnet. */
function routeKey(l: Lease, p: LeasePolicy | undefined): string {
  return p?.enableIpv4 === false && l.subnet6 ? formatCidr6(l.subnet6) : cidr(l.subnet);
}

export interface RouteTableHooks {
  /** A key was rejected, or rejected for another reason than before (log it once, count it). */
  readonly onReject?: (r: Rejection) => void;
}

/**
 * The desired state of the overlay's routes: one entry per other node's
 * lease that passes validation, built from snapshots and watch events by
 * etcd key; every change returns the diff backends apply. This is the one
 * place a lease is judged, so no backend (kernel vxlan, eBPF maps, WASM
 * tables) ever sees a rejected one.
 *
 * A lease is used when it passes checkLease (its key, subnet, VNI, MAC and
 * PublicIP fit the network config and do not collide with ours) and neither
 * its subnet nor its PublicIP is held by an older lease: among leases that
 * share either, the oldest by etcd create revision wins, whatever the order
 * the events came in. When a winner goes, the next one in line takes its
 * place. Unlike flannel, a removal keeps the attributes last seen, so
 * backends can delete the exact neighbour and FDB entries they added.
 */
export class RouteTable {
  private policy: LeasePolicy | undefined;
  private self: SelfLease | undefined;
  /** Every lease key that decoded, by key (accepted or not). */
  private readonly leases = new Map<string, Lease>();
  /** Used leases by subnet (the backends' view: at most one per subnet). */
  private readonly routes = new Map<string, Lease>();
  /** Keys not used, with the reason. Bounded by the keys that exist: a deleted key leaves. */
  private readonly rejected = new Map<string, Rejection>();
  /**
   * Decoded leases that pass checkLease, indexed by what two leases may not
   * share (claims()): the one key holding a claim, or the set of them when
   * several do (rare: a conflict), so 20,000 leases do not cost 40,000 sets.
   */
  private readonly byClaim = new Map<string, string | Set<string>>();
  /** The lease each indexed key was indexed as (its claims are where it sits in byClaim). */
  private readonly indexed = new Map<string, Lease>();
  /** Lease key -> the subnet it is used for in `routes` (so a change need not scan every route). */
  private readonly routedAt = new Map<string, string>();

  constructor(private readonly hooks: RouteTableHooks = {}) {}

  get size(): number {
    return this.routes.size;
  }

  all(): Lease[] {
    return [...this.routes.values()];
  }

  /** The route for a subnet, by its text (198.18.5.0/24, or 2001:db8:1::/64 on an IPv6-only network). */
  get(subnet: string): Lease | undefined {
    return this.routes.get(subnet);
  }

  get rejectedCount(): number {
    return this.rejected.size;
  }

  /** Keys not used, with why. */
  rejections(): Rejection[] {
    return [...this.rejected.values()];
  }

  /** The cluster's rules. Until they are known nothing is used. */
  setPolicy(p: LeasePolicy): RouteDiff {
    this.policy = p;
    return this.rebuild();
  }

  /** Our own lease: leases that overlap its subnet or name its PublicIP are rejected. */
  setSelf(s: SelfLease | undefined): RouteDiff {
    this.self = s;
    return this.rebuild();
  }

  /** Replaces everything with a snapshot (keys that did not decode come as `skipped`). */
  replaceAll(leases: readonly Lease[], skipped: readonly SkippedKey[] = []): RouteDiff {
    this.leases.clear();
    for (const l of leases) this.leases.set(l.key, l);
    const before = new Map(this.rejected);
    this.rejected.clear();
    for (const s of skipped) this.reject({ key: s.key, reason: s.reason, detail: s.detail }, before);
    return this.rebuild(before);
  }

  put(l: Lease): RouteDiff {
    const old = this.leases.get(l.key);
    this.leases.set(l.key, l);
    return this.recompute([l, ...(old ? [old] : [])]);
  }

  /** A put whose key or value did not decode: the key is not used, whatever it held before. */
  skip(s: SkippedKey): RouteDiff {
    const old = this.leases.get(s.key);
    this.leases.delete(s.key);
    const diff = old ? this.recompute([old]) : EMPTY_DIFF;
    this.reject({ key: s.key, reason: s.reason, detail: s.detail });
    return diff;
  }

  delete(key: string): RouteDiff {
    const old = this.leases.get(key);
    this.rejected.delete(key);
    if (!old) return EMPTY_DIFF;
    this.leases.delete(key);
    return this.recompute([old]);
  }

  private reject(r: Rejection, before: ReadonlyMap<string, Rejection> = this.rejected): void {
    const prev = before.get(r.key);
    this.rejected.set(r.key, r);
    if (prev?.reason !== r.reason) this.hooks.onReject?.(r);
  }

  /** Every lease judged again (a new snapshot, policy or own lease). */
  private rebuild(before: ReadonlyMap<string, Rejection> = new Map(this.rejected)): RouteDiff {
    for (const k of [...this.rejected.keys()]) if (this.leases.has(k)) this.rejected.delete(k);
    this.byClaim.clear();
    this.indexed.clear();
    const ok: Lease[] = [];
    for (const l of this.leases.values()) if (this.judgeAlone(l, before)) ok.push(l);
    const routes = this.resolve(ok, before);
    return this.swap(new Set([...this.routes.keys(), ...routes.keys()]), routes);
  }

  /**
   * After a put or delete touching `seeds`: judges again only the leases that
   * share a subnet or PublicIP with them, directly or through others (in
   * practice the lease alone), so a change costs what one lease costs.
   */
  private recompute(seeds: readonly Lease[]): RouteDiff {
    const group = new Set<string>();
    const queue: string[] = [];
    const touch = (keys: Iterable<string> | undefined): void => {
      for (const k of keys ?? []) if (!group.has(k)) (group.add(k), queue.push(k));
    };
    const p = this.policy;
    for (const s of seeds) {
      for (const c of claims(s, p)) touch(holders(this.byClaim.get(c)));
      touch([s.key]);
    }
    // Drop the group from the indexes, then judge its current members again.
    const subnets = new Set<string>(seeds.map((s) => routeKey(s, p)));
    for (let k = queue.shift(); k !== undefined; k = queue.shift()) {
      const l = this.leases.get(k);
      if (!l) continue;
      subnets.add(routeKey(l, p));
      for (const c of claims(l, p)) touch(holders(this.byClaim.get(c)));
    }
    for (const k of group) {
      this.unindex(k);
      const at = this.routedAt.get(k);
      if (at !== undefined) subnets.add(at);
    }
    const ok: Lease[] = [];
    const before = new Map(this.rejected);
    for (const k of group) {
      if (this.leases.has(k)) this.rejected.delete(k);
      const l = this.leases.get(k);
      if (l && this.judgeAlone(l, before)) ok.push(l);
    }
    return this.swap(subnets, this.resolve(ok, before));
  }

  /** checkLease; indexes the lease when it passes. */
  private judgeAlone(l: Lease, before: ReadonlyMap<string, Rejection>): boolean {
    if (!this.policy) return false;
    if (isOwnLease(l, this.self)) return false;
    const why = checkLease(l, this.policy, this.self);
    if (why) {
      this.reject(why, before);
      return false;
    }
    for (const c of claims(l, this.policy)) index(this.byClaim, c, l.key);
    this.indexed.set(l.key, l);
    return true;
  }

  private unindex(key: string): void {
    const at = this.indexed.get(key);
    if (!at) return;
    this.indexed.delete(key);
    // The policy is the one it was indexed under: a new policy rebuilds both indexes from scratch.
    for (const c of claims(at, this.policy)) drop(this.byClaim, c, key);
  }

  /** Oldest first: a lease is used when no older one took one of its subnets or public addresses. */
  private resolve(candidates: Lease[], before: ReadonlyMap<string, Rejection>): Map<string, Lease> {
    candidates.sort(older);
    const out = new Map<string, Lease>();
    const held = new Map<string, Lease>();
    for (const l of candidates) {
      const cs = claims(l, this.policy);
      const clash = cs.find((c) => held.has(c));
      const holder = clash === undefined ? undefined : held.get(clash);
      if (clash !== undefined && holder) {
        const what = clash.slice(3);
        if (clash.startsWith("s")) {
          this.reject({ key: l.key, reason: "overlaps_lease", detail: `subnet ${what} is already held by the older key ${holder.key}` }, before);
        } else {
          this.reject({ key: l.key, reason: "public_ip_taken", detail: `its public address ${what} is already used by the older key ${holder.key} (two nodes cannot share an address)` }, before);
        }
      } else {
        out.set(routeKey(l, this.policy), l);
        for (const c of cs) held.set(c, l);
      }
    }
    return out;
  }

  /** Installs `next` for the subnets in `scope` and returns what changed there. */
  private swap(scope: Iterable<string>, next: ReadonlyMap<string, Lease>): RouteDiff {
    const added: Lease[] = [];
    const removed: Lease[] = [];
    const changed: { before: Lease; after: Lease }[] = [];
    for (const sub of scope) {
      const was = this.routes.get(sub);
      const now = next.get(sub);
      if (was && this.routedAt.get(was.key) === sub) this.routedAt.delete(was.key);
      if (now) {
        this.routes.set(sub, now);
        this.routedAt.set(now.key, sub);
      } else this.routes.delete(sub);
      if (was && !now) removed.push(was);
      else if (!was && now) added.push(now);
      else if (was && now && !sameAttrs(was.attrs, now.attrs)) changed.push({ before: was, after: now });
    }
    return added.length + removed.length + changed.length === 0 ? EMPTY_DIFF : { added, removed, changed };
  }
}

function older(a: Lease, b: Lease): number {
  const ra = BigInt(a.createRevision || "0");
  const rb = BigInt(b.createRevision || "0");
  if (ra !== rb) return ra < rb ? -1 : 1;
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

function index<K>(m: Map<K, string | Set<string>>, k: K, key: string): void {
  const s = m.get(k);
  if (s === undefined) m.set(k, key);
  else if (typeof s === "string") {
    if (s !== key) m.set(k, new Set([s, key]));
  } else s.add(key);
}

function drop<K>(m: Map<K, string | Set<string>>, k: K, key: string): void {
  const s = m.get(k);
  if (s === key) m.delete(k);
  else if (typeof s === "object" && s.delete(key)) {
    if (s.size === 1) m.set(k, s.values().next().value ?? key);
    else if (s.size === 0) m.delete(k);
  }
}

/** The keys holding a claim, as an iterable. */
function holders(s: string | Set<string> | undefined): Iterable<string> | undefined {
  return typeof s === "string" ? [s] : s;
}
