import type { Prebuilt } from "../wire/prebuilt.js";
import { withoutOpt, type ParsedResponse } from "../wire/response.js";
import { FLAG, RCODE } from "../wire/constants.js";

export interface CacheOptions {
  /** Entries kept; the oldest inserted goes first when full. */
  readonly capacity: number;
  /** Caps on the TTL of positive answers and of negative ones (NXDOMAIN/NODATA, RFC 2308). */
  readonly maxTtl: number;
  readonly maxNegativeTtl: number;
  /** TTLs below this are raised to it (seconds). */
  readonly minTtl: number;
  /** How long an expired entry may still be served while upstreams fail (RFC 8767; 0 disables). */
  readonly staleSeconds: number;
  /** A hit on an entry with less than this share of its TTL left, and at least `prefetchHits` hits, refreshes it. */
  readonly prefetchPercent: number;
  readonly prefetchHits: number;
  /** Injectable clock (ms). */
  readonly now: () => number;
}

export const CACHE_DEFAULTS: Omit<CacheOptions, "now"> = {
  capacity: 10_000, maxTtl: 3600, maxNegativeTtl: 1800, minTtl: 0, staleSeconds: 3600, prefetchPercent: 10, prefetchHits: 3,
};

export interface CacheEntry {
  readonly response: Prebuilt;
  /** Seconds (clock) when stored. */
  readonly storedAt: number;
  /** The TTL the entry lives for. */
  readonly ttl: number;
  readonly negative: boolean;
  hits: number;
  prefetching: boolean;
}

export type CacheLookup =
  | { readonly state: "fresh"; readonly entry: CacheEntry; readonly age: number; readonly prefetch: boolean }
  | { readonly state: "stale"; readonly entry: CacheEntry }
  | undefined;

/** Cache key: lower-cased wire name, type, and the DO and CD bits. */
export function cacheKey(key: string, qtype: number, dnssecOk: boolean, cd: boolean): string {
  return `${key}\u0000${qtype}${dnssecOk ? "D" : ""}${cd ? "C" : ""}`;
}

/**
 * Positive and negative answers from upstreams, stored as wire bytes ready to
 * serve (TTLs counted down in place on each hit).
 */
export class DnsCache {
  private readonly map = new Map<string, CacheEntry>();
  hits = 0;
  misses = 0;
  staleServed = 0;
  evictions = 0;

  constructor(readonly opts: CacheOptions) {}

  get size(): number {
    return this.map.size;
  }

  private nowSec(): number {
    return Math.floor(this.opts.now() / 1000);
  }

  lookup(k: string): CacheLookup {
    const e = this.map.get(k);
    if (!e) {
      this.misses++;
      return undefined;
    }
    const age = this.nowSec() - e.storedAt;
    if (age < e.ttl) {
      this.hits++;
      e.hits++;
      const prefetch = !e.prefetching && e.hits >= this.opts.prefetchHits && (e.ttl - age) * 100 < e.ttl * this.opts.prefetchPercent;
      if (prefetch) e.prefetching = true;
      return { state: "fresh", entry: e, age, prefetch };
    }
    this.misses++;
    if (age < e.ttl + this.opts.staleSeconds) return { state: "stale", entry: e };
    this.map.delete(k);
    return undefined;
  }

  /**
   * Stores an upstream response (bytes without its OPT record). Returns the
   * entry, or undefined when it may not be cached (SERVFAIL, truncated, no
   * TTL to go by, an OPT record that is not last).
   */
  store(k: string, bytes: Buffer, r: ParsedResponse): CacheEntry | undefined {
    if (r.truncated) return undefined;
    const negative = r.rcode === RCODE.NXDOMAIN || (r.rcode === RCODE.NOERROR && r.ancount === 0);
    if (!negative && r.rcode !== RCODE.NOERROR) return undefined;
    let ttl = negative ? r.negativeTtl : r.minAnswerTtl;
    if (ttl === undefined) return undefined; // RFC 2308: no SOA, no negative caching
    ttl = Math.max(this.opts.minTtl, Math.min(ttl, negative ? this.opts.maxNegativeTtl : this.opts.maxTtl));
    if (ttl <= 0) return undefined;
    const body = withoutOpt(bytes, r);
    if (!body) return undefined;
    body[2] = body[2]! & ~(FLAG.AA >> 8); // we are not the authority
    body[3] = body[3]! | FLAG.RA;
    const ttls = Uint32Array.from(r.ttls, (t) => Math.min(t, ttl));
    for (let i = 0; i < ttls.length; i++) body.writeUInt32BE(ttls[i]!, r.ttlOffsets[i]!);
    const response: Prebuilt = { bytes: body, ttlOffsets: r.ttlOffsets, ttls, arcount: r.arcountWithoutOpt };
    const entry: CacheEntry = { response, storedAt: this.nowSec(), ttl, negative, hits: 0, prefetching: false };
    if (!this.map.has(k) && this.map.size >= this.opts.capacity) {
      const oldest = this.map.keys().next();
      if (!oldest.done) {
        this.map.delete(oldest.value);
        this.evictions++;
      }
    }
    this.map.delete(k);
    this.map.set(k, entry);
    return entry;
  }

  clear(): void {
    this.map.clear();
  }
}

/** TTL that RFC 8767 recommends for a stale answer. */
export const STALE_TTL = 30;
