import type { Prebuilt } from "../wire/prebuilt.js";
import { withoutOpt, type ParsedResponse } from "../wire/response.js";
import { FLAG, RCODE } from "../wire/constants.js";

export interface CacheOptions {
  /** Entries kept at most; the least recently used goes first when full. */
  readonly capacity: number;
  /** Bytes kept at most (answers, keys and ENTRY_OVERHEAD per entry); the least recently used goes first. */
  readonly maxBytes: number;
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
  capacity: 10_000, maxBytes: 32 * 2 ** 20, maxTtl: 3600, maxNegativeTtl: 1800, minTtl: 0, staleSeconds: 3600, prefetchPercent: 10, prefetchHits: 3,
};

/**
 * What an entry costs beyond its answer bytes and its key: the entry and
 * Prebuilt objects, the TTL arrays, the key's string header and the map's
 * slot (measured with V8: ~450 bytes for a one-record answer; rounded up).
 */
export const ENTRY_OVERHEAD = 464;

export interface CacheEntry {
  readonly response: Prebuilt;
  /** What the entry counts against maxBytes. */
  readonly size: number;
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
 * serve (TTLs counted down in place on each hit). Bounded in entries and in
 * bytes; a hit makes an entry the most recently used (the map's order), and
 * the least recently used go first when either bound is reached.
 */
export class DnsCache {
  private readonly map = new Map<string, CacheEntry>();
  private bytesNow = 0;
  hits = 0;
  misses = 0;
  staleServed = 0;
  evictions = 0;

  constructor(readonly opts: CacheOptions) {}

  get size(): number {
    return this.map.size;
  }

  /** Bytes held, as counted against maxBytes. */
  get bytes(): number {
    return this.bytesNow;
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
    if (age < e.ttl + this.opts.staleSeconds) {
      // Most recently used now (fresh or stale: both are served).
      this.map.delete(k);
      this.map.set(k, e);
    }
    if (age < e.ttl) {
      this.hits++;
      e.hits++;
      const prefetch = !e.prefetching && e.hits >= this.opts.prefetchHits && (e.ttl - age) * 100 < e.ttl * this.opts.prefetchPercent;
      if (prefetch) e.prefetching = true;
      return { state: "fresh", entry: e, age, prefetch };
    }
    this.misses++;
    if (age < e.ttl + this.opts.staleSeconds) return { state: "stale", entry: e };
    this.remove(k, e);
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
    const size = body.length + k.length + 6 * ttls.length + ENTRY_OVERHEAD;
    if (size > this.opts.maxBytes) return undefined;
    const entry: CacheEntry = { response, size, storedAt: this.nowSec(), ttl, negative, hits: 0, prefetching: false };
    const old = this.map.get(k);
    if (old) this.remove(k, old);
    // Least recently used first, until both bounds hold with the new entry.
    for (const [ok, oe] of this.map) {
      if (this.map.size < this.opts.capacity && this.bytesNow + size <= this.opts.maxBytes) break;
      this.remove(ok, oe);
      this.evictions++;
    }
    if (this.map.size >= this.opts.capacity) return undefined; // capacity 0
    this.map.set(k, entry);
    this.bytesNow += size;
    return entry;
  }

  private remove(k: string, e: CacheEntry): void {
    this.map.delete(k);
    this.bytesNow -= e.size;
  }

  clear(): void {
    this.map.clear();
    this.bytesNow = 0;
  }
}

/** TTL that RFC 8767 recommends for a stale answer. */
export const STALE_TTL = 30;
