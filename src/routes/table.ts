import { formatCidr, type Ipv4Prefix } from "../common/ipv4.js";
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
  /** Decoded leases that pass checkLease, indexed by what two leases may not share. */
  private readonly bySubnet = new Map<string, Set<string>>();
  private readonly byIp = new Map<number, Set<string>>();
  /** Where each indexed key sits in bySubnet / byIp. */
  private readonly indexed = new Map<string, { readonly sub: string; readonly ip: number }>();

  constructor(private readonly hooks: RouteTableHooks = {}) {}

  get size(): number {
    return this.routes.size;
  }

  all(): Lease[] {
    return [...this.routes.values()];
  }

  get(p: Ipv4Prefix): Lease | undefined {
    return this.routes.get(cidr(p));
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
    this.bySubnet.clear();
    this.byIp.clear();
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
    for (const s of seeds) {
      touch(this.bySubnet.get(cidr(s.subnet)));
      touch(this.byIp.get(s.attrs.publicIp));
      touch([s.key]);
    }
    // Drop the group from the indexes, then judge its current members again.
    const subnets = new Set<string>(seeds.map((s) => cidr(s.subnet)));
    for (let k = queue.shift(); k !== undefined; k = queue.shift()) {
      const l = this.leases.get(k);
      if (!l) continue;
      subnets.add(cidr(l.subnet));
      touch(this.bySubnet.get(cidr(l.subnet)));
      touch(this.byIp.get(l.attrs.publicIp));
    }
    for (const k of group) this.unindex(k);
    for (const [sub, l] of this.routes) if (group.has(l.key)) subnets.add(sub);
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
    const sub = cidr(l.subnet);
    index(this.bySubnet, sub, l.key);
    index(this.byIp, l.attrs.publicIp, l.key);
    this.indexed.set(l.key, { sub, ip: l.attrs.publicIp });
    return true;
  }

  private unindex(key: string): void {
    const at = this.indexed.get(key);
    if (!at) return;
    this.indexed.delete(key);
    drop(this.bySubnet, at.sub, key);
    drop(this.byIp, at.ip, key);
  }

  /** Oldest first: a lease is used when no older one took its subnet or its PublicIP. */
  private resolve(candidates: Lease[], before: ReadonlyMap<string, Rejection>): Map<string, Lease> {
    candidates.sort(older);
    const out = new Map<string, Lease>();
    const ips = new Map<number, Lease>();
    for (const l of candidates) {
      const sub = cidr(l.subnet);
      const bySub = out.get(sub);
      const byIp = ips.get(l.attrs.publicIp);
      if (bySub) {
        this.reject({ key: l.key, reason: "overlaps_lease", detail: `subnet ${sub} is already held by the older key ${bySub.key}` }, before);
      } else if (byIp) {
        this.reject({ key: l.key, reason: "public_ip_taken", detail: `its PublicIP is already used by the older key ${byIp.key} (two nodes cannot share an address)` }, before);
      } else {
        out.set(sub, l);
        ips.set(l.attrs.publicIp, l);
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
      if (now) this.routes.set(sub, now);
      else this.routes.delete(sub);
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

function index<K>(m: Map<K, Set<string>>, k: K, key: string): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = new Set()));
  s.add(key);
}

function drop<K>(m: Map<K, Set<string>>, k: K, key: string): void {
  const s = m.get(k);
  if (s?.delete(key) && s.size === 0) m.delete(k);
}
