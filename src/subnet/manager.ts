import { EventEmitter } from "node:events";
import { WeftError } from "../common/errors.js";
import { formatCidr, formatIpv4, formatMac, maskOf, type Ipv4Prefix } from "../common/ipv4.js";
import type { Logger } from "../common/log.js";
import { parseSubnetKey, sameAttrs, type Lease, type LeaseAttrs } from "./lease.js";
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

  private compatible(s: Ipv4Prefix): boolean {
    return s.len === this.config.subnetLen && s.addr >= this.config.subnetMin && s.addr <= this.config.subnetMax;
  }

  /** Acquires a lease; retries lost races, throws SubnetRangeFullError when nothing is free. */
  async acquire(): Promise<Lease> {
    const attempts = this.opts.attempts ?? 10;
    for (let i = 0; i < attempts; i++) {
      const got = await this.tryAcquire(await this.registry.listLeases(), this.opts.previousSubnet);
      if (got) {
        this.current = got;
        await this.scheduleRenewal(got);
        this.log.info({ subnet: formatCidr(got.subnet), leaseId: got.leaseId }, "subnet lease acquired");
        this.emit("acquired", got);
        return got;
      }
    }
    throw new AcquireFailedError(`could not acquire a subnet after ${attempts} attempts: other nodes kept taking the chosen one`, { recoverable: true });
  }

  private async tryAcquire(snap: LeaseSnapshot, prev: Ipv4Prefix | undefined): Promise<Lease | undefined> {
    const mine = snap.leases.find((l) => l.attrs.publicIp === this.attrs.publicIp);
    if (mine) {
      if (mine.leaseId !== "0" && formatMac(mine.attrs.vtepMac) !== formatMac(this.attrs.vtepMac)) {
        throw new PublicIpConflictError(
          `the live lease ${mine.key} holds this node's PublicIP ${formatIpv4(this.attrs.publicIp)} with VtepMAC ${formatMac(mine.attrs.vtepMac)}, ` +
          `not ours (${formatMac(this.attrs.vtepMac)}): another machine has this address`,
          { hint: "give this node another --public-ip; or, if that lease is this machine's own from before its state dir was lost, delete the key (etcdctl del <prefix>/subnets/" + mine.key + ") or wait for it to expire" },
        );
      }
      if (this.compatible(mine.subnet)) {
        if (sameAttrs(mine.attrs, this.attrs)) return mine;
        this.log.info({ subnet: formatCidr(mine.subnet) }, "reusing the lease of our PublicIP with new attributes");
        return this.registry.rewrite(mine, this.attrs, this.opts.ttlSec);
      }
      if (mine.leaseId === "0") {
        this.log.error({ subnet: formatCidr(mine.subnet) }, "a reservation for our PublicIP does not fit the network config; ignoring it");
      } else {
        this.log.warn({ subnet: formatCidr(mine.subnet) }, "our old lease does not fit the network config; deleting it");
        await this.registry.deleteLease(mine);
      }
    }
    // Keys we cannot read still hold their subnet: creation would fail on them anyway.
    const taken = [...snap.leases.map((l) => l.subnet), ...snap.skipped.flatMap((s) => parseSubnetKey(s.key) ?? [])];
    if (prev && this.compatible(prev) && !taken.some((t) => overlaps(t, prev))) {
      const l = await this.registry.create(prev, this.attrs, this.opts.ttlSec);
      if (l) return l;
    }
    const free = this.freeSubnets(taken, 100);
    if (free.length === 0) {
      const reserved = snap.leases.filter((l) => l.leaseId === "0").length;
      throw new SubnetRangeFullError(
        `no free /${this.config.subnetLen} subnet in ${formatIpv4(this.config.subnetMin)}-${formatIpv4(this.config.subnetMax)}: ` +
        `${snap.leases.length - reserved} leased, ${reserved} reserved, ${snap.skipped.length} unreadable keys`,
        { hint: "widen Network/SubnetMax or shorten SubnetLen in the network config, or remove stale leases", recoverable: true },
      );
    }
    const pick = free[Math.floor(Math.random() * free.length)];
    return pick ? this.registry.create(pick, this.attrs, this.opts.ttlSec) : undefined;
  }

  private freeSubnets(taken: Ipv4Prefix[], max: number): Ipv4Prefix[] {
    const size = 2 ** (32 - this.config.subnetLen);
    const out: Ipv4Prefix[] = [];
    for (let a = this.config.subnetMin; a <= this.config.subnetMax && out.length < max; a += size) {
      const cand = { addr: a, len: this.config.subnetLen };
      if (!taken.some((t) => overlaps(t, cand))) out.push(cand);
    }
    return out;
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
        this.log.debug({ subnet: formatCidr(l.subnet), ttl }, "lease renewed");
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
    if (lease.attrs.publicIp !== this.attrs.publicIp) this.lost(l, `another node (${formatIpv4(lease.attrs.publicIp)}) wrote it`);
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
    else if (now.attrs.publicIp !== this.attrs.publicIp) this.lost(l, `another node (${formatIpv4(now.attrs.publicIp)}) wrote it`);
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
    this.log.warn({ subnet: formatCidr(l.subnet), reason }, "our subnet lease was lost; acquiring again");
    this.current = undefined;
    this.emit("lost", l, reason);
    const run = async (): Promise<Lease> => {
      for (let delay = 1; ; delay = Math.min(delay * 2, 30)) {
        if (this.closed) throw new AcquireFailedError("closed while acquiring");
        try {
          const got = await this.tryAcquire(await this.registry.listLeases(), l.subnet);
          if (got) {
            this.current = got;
            await this.scheduleRenewal(got);
            this.log.info({ subnet: formatCidr(got.subnet) }, "subnet lease acquired again");
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

function overlaps(a: Ipv4Prefix, b: Ipv4Prefix): boolean {
  const len = Math.min(a.len, b.len);
  return ((a.addr & maskOf(len)) >>> 0) === ((b.addr & maskOf(len)) >>> 0);
}
