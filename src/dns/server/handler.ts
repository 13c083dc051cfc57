import type { Logger } from "../../common/log.js";
import { cacheKey, STALE_TTL, type CacheEntry, type DnsCache } from "../cache/cache.js";
import { ip6ArpaProblem } from "../cluster/reverse.js";
import type { ClusterZone } from "../cluster/zone.js";
import type { Answer, Forwarder } from "../forward/forwarder.js";
import { CLASS_IN, FLAG, RCODE, TYPE } from "../wire/constants.js";
import { errorResponse, prebuilt, serve, type Prebuilt } from "../wire/prebuilt.js";
import { isUnder, keyToName, nameToKey, newQuery, parseQuery, QueryProblem, type Query } from "../wire/query.js";
import { decodeAnswers, withoutOpt } from "../wire/response.js";
import { encodeMessage, type Record_ } from "../wire/writer.js";
import type { ClientAcl } from "./acl.js";
import type { DnsCounters } from "./counters.js";

export interface HandlerDeps {
  /** The cluster zone; undefined until the registry has synced (SERVFAIL for its names meanwhile). */
  readonly zone: () => ClusterZone | undefined;
  /** The zone's wire-form key, to know our names before the zone exists. */
  readonly zoneKey: string;
  readonly cache: DnsCache;
  readonly forwarder: Forwarder;
  readonly acl: ClientAcl;
  readonly counters: DnsCounters;
  readonly log: Logger;
  /** Requests that may wait for an upstream answer at once; beyond it SERVFAIL (or a stale answer) at once. */
  readonly maxWaiting: number;
}

/** TCP answers may be this long; UDP ones are capped by the query's EDNS size. */
const TCP_MAX = 65535;

/**
 * One query in, one response out. Cluster names and cache hits are answered
 * synchronously from encoded bytes (a number: bytes written into `out`);
 * what needs an upstream returns a promise of a fresh buffer. 0 / undefined:
 * send nothing.
 */
export class DnsHandler {
  private readonly q: Query = newQuery();

  constructor(private readonly d: HandlerDeps) {}

  /** Whether the ACL lets this client address in (TCP asks at accept). */
  allows(addr: string): boolean {
    return this.d.acl.allows(addr);
  }

  /** `from` is the client's address as text, or an IPv4 address as a host-order number (the batch path). */
  handle(msg: Buffer, len: number, from: string | number, tcp: boolean, out: Buffer): number | Promise<Buffer | undefined> {
    const q = this.q;
    const c = this.d.counters;
    const problem = parseQuery(msg, len, q);
    if (problem === QueryProblem.Drop) {
      c.dropped++;
      return 0;
    }
    c.request(tcp, problem === 0 ? q.qtype : -1);
    if (!(typeof from === "number" ? this.d.acl.allowsV4(from) : this.d.acl.allows(from))) {
      c.refusedClients++;
      return this.fail(q, msg, out, RCODE.REFUSED);
    }
    if (problem === QueryProblem.FormErr) return this.fail(q, msg, out, RCODE.FORMERR);
    if (q.opcode !== 0) return this.fail(q, msg, out, RCODE.NOTIMP);
    if (q.ednsVersion > 0) return this.fail(q, msg, out, RCODE.BADVERS);
    if (q.qclass !== CLASS_IN || q.qtype === TYPE.AXFR || q.qtype === TYPE.IXFR || q.qtype === TYPE.OPT) {
      return this.fail(q, msg, out, RCODE.REFUSED);
    }
    const maxLen = tcp ? TCP_MAX : 0;
    const zone = this.d.zone();
    if (zone) {
      const hit = zone.cached(q.key, q.qtype);
      if (hit) {
        c.zoneAnswers++;
        return this.done(serve(hit, q, msg, out, 0, maxLen), out);
      }
      if (zone.inZone(q.key) || zone.hasReverse(q.key)) {
        const a = zone.answer(q.key, q.qtype);
        if (a.kind === "wire") {
          c.zoneAnswers++;
          if (a.invalid !== undefined) {
            c.invalidNames.pod++;
            this.d.log.debug({ name: keyToName(q.key), why: a.invalid }, "NXDOMAIN for a pod name that spells no address");
          }
          return this.done(serve(a.response, q, msg, out, 0, maxLen), out);
        }
        if (a.kind === "cname") {
          if (c.waiting >= this.d.maxWaiting) return this.shed(q, msg, out, undefined, maxLen);
          return this.waitFor(this.externalName({ ...q }, Buffer.from(msg.subarray(0, len)), a.cname, a.target, maxLen));
        }
      }
    } else if (isUnder(q.key, this.d.zoneKey)) {
      c.notSynced++;
      return this.fail(q, msg, out, RCODE.SERVFAIL);
    }
    const bad6 = ip6ArpaProblem(q.key);
    if (bad6 !== undefined) {
      // No such name can exist (RFC 3596): NXDOMAIN here rather than junk sent upstream.
      c.invalidNames.ip6_arpa++;
      this.d.log.debug({ name: keyToName(q.key), why: bad6 }, "NXDOMAIN for a malformed ip6.arpa name");
      return this.fail(q, msg, out, RCODE.NXDOMAIN);
    }
    if (this.d.forwarder.loopProbes.has(q.key)) {
      this.d.forwarder.loopDetected(q.key);
      return this.fail(q, msg, out, RCODE.SERVFAIL);
    }
    const cd = (q.flags & FLAG.CD) !== 0;
    const k = cacheKey(q.key, q.qtype, q.dnssecOk, cd);
    const look = this.d.cache.lookup(k);
    if (look?.state === "fresh") {
      if (look.prefetch) void this.refresh(look.entry, k, q.key, q.qtype, q.dnssecOk, cd);
      return this.done(serve(look.entry.response, q, msg, out, look.age, maxLen), out);
    }
    const staleEntry = look?.state === "stale" ? look.entry : undefined;
    const stale = staleEntry?.response;
    if (staleEntry && stale && !this.d.forwarder.anyUpstreamUp()) {
      // Every upstream is down: the stale answer now (RFC 8767's client timeout at its
      // shortest), and a refresh behind it that stores the answer once one is back —
      // one per entry at a time, however many clients ask meanwhile.
      this.d.cache.staleServed++;
      if (!staleEntry.prefetching) {
        staleEntry.prefetching = true;
        void this.refresh(staleEntry, k, q.key, q.qtype, q.dnssecOk, cd);
      }
      return this.done(serve(stale, q, msg, out, 0, maxLen, STALE_TTL), out);
    }
    if (c.waiting >= this.d.maxWaiting) return this.shed(q, msg, out, stale, maxLen);
    return this.waitFor(this.forward({ ...q }, Buffer.from(msg.subarray(0, len)), k, cd, stale, maxLen));
  }

  /** Counts a request waiting for an upstream until it has its answer. */
  private async waitFor(p: Promise<Buffer | undefined>): Promise<Buffer | undefined> {
    this.d.counters.waiting++;
    try {
      return await p;
    } finally {
      this.d.counters.waiting--;
    }
  }

  /** Too many requests wait for upstreams already: the stale answer if there is one, else SERVFAIL, at once. */
  private shed(q: Query, msg: Buffer, out: Buffer, stale: Prebuilt | undefined, maxLen: number): number {
    this.d.counters.shed++;
    if (!stale) return this.fail(q, msg, out, RCODE.SERVFAIL);
    this.d.cache.staleServed++;
    return this.done(serve(stale, q, msg, out, 0, maxLen, STALE_TTL), out);
  }


  private done(n: number, out: Buffer): number {
    this.d.counters.response(out[3]! & 0xf);
    return n;
  }

  /** An answer without records; counted by its full rcode (BADVERS is 16, beyond the header's four bits). */
  private fail(q: Query, msg: Buffer, out: Buffer, rcode: number): number {
    this.d.counters.response(rcode);
    return errorResponse(q, msg, out, rcode);
  }

  private async forward(q: Query, msg: Buffer, k: string, cd: boolean, stale: Prebuilt | undefined, maxLen: number): Promise<Buffer | undefined> {
    let a: Answer | undefined;
    try {
      a = await this.d.forwarder.resolve(q.key, q.qtype, q.dnssecOk, cd, k);
    } catch (e) {
      this.d.log.debug({ name: keyToName(q.key), err: (e as Error).message }, "upstream failed");
    }
    // RFC 8767: an upstream that fails to answer (SERVFAIL, REFUSED) is like one that does not answer.
    if (stale && (!a || a.parsed.rcode === RCODE.SERVFAIL || a.parsed.rcode === RCODE.REFUSED)) {
      this.d.cache.staleServed++;
      return this.reply((out) => serve(stale, q, msg, out, 0, maxLen, STALE_TTL), stale.bytes.length);
    }
    const p = a && (this.d.cache.store(k, a.bytes, a.parsed)?.response ?? uncachable(a));
    if (!p) return this.reply((out) => errorResponse(q, msg, out, RCODE.SERVFAIL), 0);
    return this.reply((out) => serve(p, q, msg, out, 0, maxLen), p.bytes.length);
  }

  /**
   * Refreshes entry `e` in the background (prefetch of a popular entry close
   * to expiry, or behind a stale answer); `e.prefetching` is set by the
   * caller and cleared here, so an entry has one refresh at a time, and one
   * that failed may be tried again.
   */
  private async refresh(e: CacheEntry, k: string, key: string, qtype: number, dnssecOk: boolean, cd: boolean): Promise<void> {
    this.d.counters.refreshing++;
    try {
      const a = await this.d.forwarder.resolve(key, qtype, dnssecOk, cd, k);
      this.d.cache.store(k, a.bytes, a.parsed);
      this.d.counters.prefetches++;
    } catch {
      // the entry stays; it expires or is served stale
    } finally {
      e.prefetching = false;
      this.d.counters.refreshing--;
    }
  }

  /**
   * ExternalName: our CNAME (always current: it comes from the zone), then
   * the answer for the target — from the cache, or the upstream (and cached).
   */
  private async externalName(q: Query, msg: Buffer, cname: Record_, target: string, maxLen: number): Promise<Buffer | undefined> {
    const tkey = nameToKey(target);
    const k = cacheKey(tkey, q.qtype, q.dnssecOk, false);
    const look = this.d.cache.lookup(k);
    let bytes: Buffer | undefined;
    let age = 0;
    if (look?.state === "fresh") {
      bytes = look.entry.response.bytes;
      age = look.age;
    } else {
      try {
        const a = await this.d.forwarder.resolve(tkey, q.qtype, q.dnssecOk, false, k);
        bytes = this.d.cache.store(k, a.bytes, a.parsed)?.response.bytes ?? a.bytes;
      } catch {
        if (look?.state === "stale") bytes = look.entry.response.bytes;
        // else the CNAME alone: the client may chase it itself
      }
    }
    const answers = bytes ? decodeAnswers(bytes, bytes.length).map((r) => ({ ...r, ttl: Math.max(0, r.ttl - age) })) : [];
    const rcode = bytes ? bytes[3]! & 0xf : RCODE.NOERROR;
    const p = prebuilt(encodeMessage({ flags: FLAG.QR | FLAG.AA | FLAG.RA, rcode, question: { name: keyToName(q.key), type: q.qtype }, answer: [cname, ...answers] }));
    return this.reply((out) => serve(p, q, msg, out, 0, maxLen), p.bytes.length);
  }

  private reply(write: (out: Buffer) => number, size: number): Buffer {
    const out = Buffer.allocUnsafe(Math.max(size, 512) + 64);
    const n = write(out);
    this.d.counters.response(out[3]! & 0xf);
    return out.subarray(0, n);
  }
}

/** An upstream answer that may not be cached is still served once. */
function uncachable(a: Answer): Prebuilt | undefined {
  const body = withoutOpt(a.bytes, a.parsed);
  return body && { bytes: body, ttlOffsets: a.parsed.ttlOffsets, ttls: a.parsed.ttls, arcount: a.parsed.arcountWithoutOpt };
}
