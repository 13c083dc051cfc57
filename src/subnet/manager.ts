import { EventEmitter } from "node:events";
import { WeftError } from "../common/errors.js";
import { formatIpv4, formatMac, overlaps, type Ipv4Prefix } from "../common/ipv4.js";
import type { Logger } from "../common/log.js";
import { formatIpv6, overlaps6, type Ipv6Prefix } from "../common/ipv6.js";
import { isNoIpv4, NO_IPV4, parseLeaseKey, sameAttrs, type Lease, type LeaseAttrs } from "./lease.js";
import type { NetworkConfig } from "./network-config.js";
import { RegistryUnavailableError } from "./errors.js";
import type { LeaseSnapshot, SubnetRegistry } from "./registry.js";

/** Every subnet of the range is leased or reserved. */
export class SubnetRangeFullError extends WeftError {
  readonly code = "WEFT_SUBNET_RANGE_FULL";
}

/**
 * Our PublicIP is in a live lease with another VTEP MAC: another machine has
 * our address (or this machine lost its state dir). Taking the lease over
 * would steal that machine's traffic, so the agent stops instead.
 */
export class PublicIpConflictError extends WeftError {
  readonly code = "WEFT_PUBLIC_IP_CONFLICT";
}

/** Acquisition lost the creation race `attempts` times in a row. */
export class AcquireFailedError extends WeftError {
  readonly code = "WEFT_SUBNET_ACQUIRE_FAILED";
}

export interface ManagerOptions {
  /** TTL of the etcd lease under our key (flannel: 24 h). */
  readonly ttlSec: number;
  /** Renew this long before expiry (flannel: 60 min). */
  readonly renewMarginSec: number;
  /** Wait between renewal attempts while etcd is unreachable. */
  readonly retrySec: number;
  /** The subnet we held before (from the subnet file), tried first when free. */
  readonly previousSubnet?: Ipv4Prefix | undefined;
  /** The IPv6 subnet we held before (FLANNEL_IPV6_SUBNET), tried with it. */
  readonly previousSubnet6?: Ipv6Prefix | undefined;
  readonly attempts?: number;
}

/**
 * Our own subnet lease: acquire (reuse the key with our PublicIP, else the
 * previous subnet, else a random free one; create only if absent), renew
 * before expiry, and acquire again if the key disappears (flannel exits
 * there). Emits "acquired" (Lease) and "lost" (Lease, reason).
 */
export class SubnetManager extends EventEmitter<{ acquired: [Lease]; lost: [Lease, string] }> {
  private current: Lease | undefined;
  private expiresAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private reacquiring: Promise<Lease> | undefined;

  constructor(
    private readonly registry: SubnetRegistry,
    private readonly config: NetworkConfig,
    private readonly attrs: LeaseAttrs,
    private readonly opts: ManagerOptions,
    private readonly log: Logger,
  ) {
    super();
  }

  get lease(): Lease | undefined {
    return this.current;
  }

  /** Seconds until our etcd lease expires (Infinity for a reservation). */
  get secondsLeft(): number {
    return this.current?.leaseId === "0" ? Infinity : Math.max(0, (this.expiresAt - Date.now()) / 1000);
  }

  /** flannel's isSubnetConfigCompat and isIPv6SubnetConfigCompat: both halves fit the config (an absent half where the config has none). */
  private compatible(s: Ipv4Prefix, s6: Ipv6Prefix | undefined): boolean {
    const c = this.config;
    const v4 = c.enableIpv4 ? s.len === c.subnetLen && s.addr >= c.subnetMin && s.addr <= c.subnetMax : isNoIpv4(s);
    const v6 = c.ipv6 === undefined ? s6 === undefined : s6 !== undefined && s6.len === c.ipv6.subnetLen && s6.addr >= c.ipv6.subnetMin && s6.addr <= c.ipv6.subnetMax;
    return v4 && v6;
  }

  /** The same node: the same PublicIP, or on an IPv6-only network (PublicIP 0.0.0.0) the same PublicIPv6. */
  private isOurs(a: LeaseAttrs): boolean {
    return this.config.enableIpv4 ? a.publicIp === this.attrs.publicIp : a.publicIpv6 !== undefined && a.publicIpv6 === this.attrs.publicIpv6;
  }

  private ourAddress(): string {
    return this.config.enableIpv4 ? `PublicIP ${formatIpv4(this.attrs.publicIp)}` : `PublicIPv6 ${formatIpv6(this.attrs.publicIpv6 ?? 0n)}`;
  }

  /** Acquires a lease; retries lost races, throws SubnetRangeFullError when nothing is free. */
  async acquire(): Promise<Lease> {
    const attempts = this.opts.attempts ?? 10;
    for (let i = 0; i < attempts; i++) {
      const got = await this.tryAcquire(await this.registry.listLeases(), this.opts.previousSubnet, this.opts.previousSubnet6);
      if (got) {
        this.current = got;
        await this.scheduleRenewal(got);
        this.log.info({ subnet: got.key, leaseId: got.leaseId }, "subnet lease acquired");
        this.emit("acquired", got);
        return got;
      }
    }
    throw new AcquireFailedError(`could not acquire a subnet after ${attempts} attempts: other nodes kept taking the chosen one`, { recoverable: true });
  }

  private async tryAcquire(snap: LeaseSnapshot, prev: Ipv4Prefix | undefined, prev6: Ipv6Prefix | undefined): Promise<Lease | undefined> {
    const mine = snap.leases.find((l) => this.isOurs(l.attrs));
    if (mine) {
      if (mine.leaseId !== "0" && formatMac(mine.attrs.vtepMac) !== formatMac(this.attrs.vtepMac)) {
        throw new PublicIpConflictError(
          `the live lease ${mine.key} holds this node's ${this.ourAddress()} with VtepMAC ${formatMac(mine.attrs.vtepMac)}, ` +
          `not ours (${formatMac(this.attrs.vtepMac)}): another machine has this address`,
          { hint: "give this node another --public-ip / --public-ipv6; or, if that lease is this machine's own from before its state dir was lost, delete the key (etcdctl del <prefix>/subnets/" + mine.key + ") or wait for it to expire" },
        );
      }
      if (this.compatible(mine.subnet, mine.subnet6)) {
        if (sameAttrs(mine.attrs, this.attrs)) return mine;
        this.log.info({ subnet: mine.key }, "reusing the lease of our public address with new attributes");
        return this.registry.rewrite(mine, this.attrs, this.opts.ttlSec);
      }
      if (mine.leaseId === "0") {
        this.log.error({ subnet: mine.key }, "a reservation for our public address does not fit the network config; ignoring it");
      } else {
        this.log.warn({ subnet: mine.key }, "our old lease does not fit the network config (a family added or removed, or the ranges changed); deleting it");
        await this.registry.deleteLease(mine);
      }
    }
    // Keys we cannot read still hold their subnets: creation would fail on them anyway.
    const keys = [...snap.leases, ...snap.skipped.flatMap((s) => parseLeaseKey(s.key) ?? [])];
    const taken = this.config.enableIpv4 ? keys.map((k) => k.subnet).filter((t) => !isNoIpv4(t)) : [];
    const taken6 = keys.flatMap((k) => k.subnet6 ?? []);
    const v4 = this.config.enableIpv4 ? prev : NO_IPV4;
    const v6 = this.config.ipv6 ? prev6 : undefined;
    const havePrev = this.config.ipv6 ? v6 !== undefined : v4 !== undefined;
    if (v4 && havePrev && this.compatible(v4, v6) &&
      !taken.some((t) => overlaps(t, v4)) && !(v6 && taken6.some((t) => overlaps6(t, v6)))) {
      const l = await this.registry.create(v4, v6, this.attrs, this.opts.ttlSec);
      if (l) return l;
    }
    const free = this.config.enableIpv4 ? this.freeSubnets(taken, 100) : [NO_IPV4];
    const free6 = this.config.ipv6 ? this.freeSubnets6(taken6, 100) : [undefined];
    if (free.length === 0 || free6.length === 0) {
      const reserved = snap.leases.filter((l) => l.leaseId === "0").length;
      const c6 = this.config.ipv6;
      const range = free.length === 0
        ? `/${this.config.subnetLen} subnet in ${formatIpv4(this.config.subnetMin)}-${formatIpv4(this.config.subnetMax)}`
        : `/${c6?.subnetLen ?? 0} IPv6 subnet in ${formatIpv6(c6?.subnetMin ?? 0n)}-${formatIpv6(c6?.subnetMax ?? 0n)}`;
      throw new SubnetRangeFullError(
        `no free ${range}: ${snap.leases.length - reserved} leased, ${reserved} reserved, ${snap.skipped.length} unreadable keys`,
        { hint: "widen the network (or its SubnetMax) or shorten the subnet length in the network config, or remove stale leases", recoverable: true },
      );
    }
    const pick = free[Math.floor(Math.random() * free.length)];
    const pick6 = free6[Math.floor(Math.random() * free6.length)];
    return pick ? this.registry.create(pick, pick6, this.attrs, this.opts.ttlSec) : undefined;
  }

  private freeSubnets(taken: Ipv4Prefix[], max: number): Ipv4Prefix[] {
    const c = this.config;
    return freeSubnets(BigInt(c.subnetMin), BigInt(c.subnetMax), c.subnetLen, 32, taken.map((t) => ({ addr: BigInt(t.addr), len: t.len })), max)
      .map((a) => ({ addr: Number(a), len: c.subnetLen }));
  }

  private freeSubnets6(taken: Ipv6Prefix[], max: number): Ipv6Prefix[] {
    const c = this.config.ipv6;
    if (!c) return [];
    return freeSubnets(c.subnetMin, c.subnetMax, c.subnetLen, 128, taken, max).map((addr) => ({ addr, len: c.subnetLen }));
  }

  private async scheduleRenewal(l: Lease): Promise<void> {
    clearTimeout(this.timer);
    if (l.leaseId === "0") return; // a reservation does not expire
    let ttl = this.opts.ttlSec;
    try {
      let left = await this.registry.timeToLive(l.leaseId);
      // A reused key (agent restart) may be close to expiry: renew it now
      // rather than hand out addresses from a subnet about to be free.
      if (left <= this.opts.renewMarginSec) left = await this.registry.keepAlive(l.leaseId);
      if (left <= 0) {
        // It expired in between: renew() finds that out and acquires again.
        this.expiresAt = Date.now();
        this.setTimer(0);
        return;
      }
      ttl = left;
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, "could not read the lease TTL; assuming a full TTL");
    }
    this.armRenewal(ttl);
  }

  private armRenewal(ttlSec: number): void {
    this.expiresAt = Date.now() + ttlSec * 1000;
    const inSec = Math.max(1, ttlSec - this.opts.renewMarginSec);
    this.setTimer(inSec);
  }

  /**
   * Renews in `sec` seconds. setTimeout cannot wait more than 2^31-1 ms
   * (~24.8 days; longer fires at once), so a long wait is taken in steps.
   */
  private setTimer(sec: number): void {
    clearTimeout(this.timer);
    if (this.closed) return;
    const due = Date.now() + sec * 1000;
    const step = (): void => {
      const left = due - Date.now();
      this.timer = left > MAX_TIMER_MS ? setTimeout(step, MAX_TIMER_MS) : setTimeout(() => void this.renew(), Math.max(0, left));
      this.timer.unref();
    };
    step();
  }

  /** Renews now; on failure retries every retrySec; if the lease is gone, acquires again. Never rejects. */
  async renew(): Promise<void> {
    const l = this.current;
    if (!l || this.closed) return;
    try {
      const ttl = await this.registry.keepAlive(l.leaseId);
      if (ttl > 0) {
        this.log.debug({ subnet: l.key, ttl }, "lease renewed");
        this.armRenewal(ttl);
        return;
      }
      this.lost(l, "its etcd lease expired");
    } catch (e) {
      const expected = e instanceof RegistryUnavailableError;
      this.log[expected ? "warn" : "error"]({ err: (e as Error).message, retryInSec: this.opts.retrySec }, "lease renewal failed; retrying");
      this.setTimer(this.opts.retrySec);
    }
  }

  /**
   * Called with every lease event: if our key was deleted or taken over, we
   * acquire again (preferring the same subnet).
   */
  onKeyDeleted(key: string): void {
    const l = this.current;
    if (l && l.key === key) this.lost(l, "its key was deleted");
  }

  onKeyPut(lease: Lease): void {
    const l = this.current;
    if (!l || l.key !== lease.key) return;
    if (!this.isOurs(lease.attrs)) this.lost(l, `another node (${nodeName(lease)}) wrote it`);
    else this.current = lease; // our own write or renewal
  }

  /** A key under our key's name that did not decode: someone overwrote our lease with something unusable. */
  onKeySkipped(key: string): void {
    const l = this.current;
    if (l && l.key === key) this.lost(l, "its value was overwritten with one that cannot be read");
  }

  /**
   * A full listing (after a compaction or a lost watch): events between the
   * old watch and this list were never seen, so our key's deletion or
   * takeover shows only here.
   */
  onSnapshot(snap: LeaseSnapshot): void {
    const l = this.current;
    if (!l || this.reacquiring) return;
    const now = snap.leases.find((x) => x.key === l.key);
    if (!now) this.lost(l, "its key was gone when the leases were listed again");
    else this.onKeyPut(now);
  }

  /**
   * Reads our key: true when it is still ours. A watch can miss a deletion
   * (etcd compacted exactly at the deleting revision, which the resumed
   * watch then starts from), so the agent calls this on every reconcile.
   */
  async check(): Promise<boolean> {
    const l = this.current;
    if (!l || this.reacquiring || this.closed) return true;
    const now = await this.registry.getLease(l.key);
    if (this.current !== l) return true;
    if (!now) this.lost(l, "its key was gone when checked");
    else if (!this.isOurs(now.attrs)) this.lost(l, `another node (${nodeName(now)}) wrote it`);
    else return true;
    return false;
  }

  /** Acquires again in the background (one run at a time); the outcome is logged, never thrown. */
  private lost(l: Lease, reason: string): void {
    this.reacquire(l, reason).catch((e: Error) => {
      if (!this.closed) this.log.error({ err: e.message }, "acquiring the subnet again stopped");
    });
  }

  private reacquire(l: Lease, reason: string): Promise<Lease> {
    if (this.reacquiring) return this.reacquiring;
    this.log.warn({ subnet: l.key, reason }, "our subnet lease was lost; acquiring again");
    this.current = undefined;
    this.emit("lost", l, reason);
    const run = async (): Promise<Lease> => {
      for (let delay = 1; ; delay = Math.min(delay * 2, 30)) {
        if (this.closed) throw new AcquireFailedError("closed while acquiring");
        try {
          const got = await this.tryAcquire(await this.registry.listLeases(), l.subnet, l.subnet6);
          if (got) {
            this.current = got;
            await this.scheduleRenewal(got);
            this.log.info({ subnet: got.key }, "subnet lease acquired again");
            this.emit("acquired", got);
            return got;
          }
        } catch (e) {
          this.log.error({ err: (e as Error).message, retryInSec: delay }, "acquiring again failed");
        }
        await new Promise((r) => setTimeout(r, delay * 1000).unref());
      }
    };
    this.reacquiring = run().finally(() => (this.reacquiring = undefined));
    return this.reacquiring;
  }

  /** Stops renewing. The lease stays in etcd (so a restart reuses it). */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
  }
}

/** The longest wait setTimeout honours. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Up to `max` free subnets of length `len` from `min` to `max` (inclusive,
 * aligned), in order, for either family (`bits` 32 or 128). Taken prefixes
 * of the subnet length are looked up in a set, so a cluster of 20,000 leases
 * costs 20,000 set lookups and not 20,000 x 20,000 overlap tests (which froze
 * an agent's start for minutes); prefixes of another length (a stray key,
 * a reservation of another size) are few and checked one by one.
 */
export function freeSubnets(min: bigint, last: bigint, len: number, bits: 32 | 128, taken: readonly { addr: bigint; len: number }[], max: number): bigint[] {
  const size = 1n << BigInt(bits - len);
  // Keyed by text, not by the bigint: V8 hashes a BigInt by its lowest 64-bit digit only, so IPv6 /64s
  // (all zero there) would share one hash bucket and make the set quadratic again (3 s at 20,000).
  const exact = new Set<string>();
  const odd: { addr: bigint; len: number }[] = [];
  for (const t of taken) (t.len === len ? exact.add(t.addr.toString(16)) : odd.push(t));
  const mask = (l: number): bigint => (l === 0 ? 0n : ((1n << BigInt(bits)) - 1n) ^ ((1n << BigInt(bits - l)) - 1n));
  const out: bigint[] = [];
  for (let a = min; a <= last && out.length < max; a += size) {
    if (exact.has(a.toString(16))) continue;
    if (odd.some((t) => (t.addr & mask(Math.min(t.len, len))) === (a & mask(Math.min(t.len, len))))) continue;
    out.push(a);
  }
  return out;
}

/** A lease's node, by its public address(es), for log lines. */
function nodeName(l: Lease): string {
  const v6 = l.attrs.publicIpv6 === undefined ? "" : formatIpv6(l.attrs.publicIpv6);
  return l.attrs.publicIp === 0 ? v6 : v6 === "" ? formatIpv4(l.attrs.publicIp) : `${formatIpv4(l.attrs.publicIp)}, ${v6}`;
}
