import { FLAG, RCODE, TYPE } from "../wire/constants.js";
import { isUnder, keyToName, nameToKey } from "../wire/query.js";
import { prebuilt, type Prebuilt } from "../wire/prebuilt.js";
import { encodeMessage, type Record_ } from "../wire/writer.js";
import { podLabelAddress } from "./podname.js";
import { addressRecord, dashed, reverseName, type ZoneEndpoint, type ZoneService } from "./records.js";

export interface ZoneOptions {
  /** e.g. "cluster.local". */
  readonly domain: string;
  readonly ttl: number;
  /** Pod records a-b-c-d.<ns>.pod.<zone> (IPv6: 2001-db8--1.<ns>.pod.<zone>): none, any address, or only addresses an endpoint of that namespace has. */
  readonly pods: "disabled" | "insecure" | "verified";
  /** Encoded answers kept at most, over all names and qtypes (default 50,000). */
  readonly maxEncoded?: number;
  /** Bytes of encoded answers kept at most (default 16 MiB; ENCODED_OVERHEAD counted per answer). */
  readonly maxEncodedBytes?: number;
}

/** What a kept encoded answer costs beyond its bytes: the Prebuilt object, its typed arrays, the map slot (measured with V8 at ~70 bytes; rounded up). */
export const ENCODED_OVERHEAD = 128;

/** What a name in the cluster zone resolves to. */
export type ZoneAnswer =
  /** `invalid`: the name is a pod name whose first label spells no address (why); the answer is NXDOMAIN and not kept. */
  | { readonly kind: "wire"; readonly response: Prebuilt; readonly invalid?: string }
  /** ExternalName: answer with this CNAME, then what the upstream says for `target`. */
  | { readonly kind: "cname"; readonly cname: Record_; readonly target: string }
  /** Not ours after all (a reverse name we know nothing about): forward it. */
  | { readonly kind: "forward" };

interface Node {
  /** The service ("ns/name") whose records these are; "" for the zone's own. */
  readonly owner: string;
  readonly records: Map<number, Record_[]>;
  /** Glue for SRV answers: the targets' address records. */
  readonly glue: Record_[];
  /** ExternalName services: every type answers with this CNAME. */
  cname?: { record: Record_; target: string };
}

interface Owned {
  readonly names: string[];
  readonly touched: string[];
  readonly reverse: string[];
  readonly podIps: [string, string][];
}

/**
 * The cluster zone (Kubernetes DNS specification 1.1.0) built from the
 * registry's view: every name and its records in a table, answers encoded
 * once per (name, type) when first asked and kept until the next rebuild.
 * Responses are authoritative; names that exist without the asked type get
 * NODATA (NOERROR + SOA), others NXDOMAIN + SOA, the SOA's minimum = TTL.
 */
export class ClusterZone {
  readonly zoneKey: string;
  private readonly zone: string;
  private readonly nodes = new Map<string, Node>();
  /** Names that exist (with records or as an empty non-terminal), lower-cased dotted: how many names at or below each. */
  private readonly exists = new Map<string, number>();
  /** Reverse names we answer (others under in-addr.arpa / ip6.arpa are forwarded), with the service each PTR is for. */
  private readonly reverse = new Map<string, { owner: string; record: Record_ }[]>();
  /** Encoded answers by name and qtype, oldest name first; bounded (see remember). */
  private readonly encoded = new Map<string, Map<number, Prebuilt>>();
  private encodedCount = 0;
  private encodedSize = 0;
  private soa: Record_;
  /** Namespace → address → endpoints having it (verified pod records). */
  private readonly podIps = new Map<string, Map<string, number>>();
  /** What each service added, so that a change re-does only that service. */
  private readonly owned = new Map<string, Owned>();
  /** The service being added ("" while the zone's own records are). */
  private owner = "";
  private serialNow: number;

  constructor(readonly opts: ZoneOptions, services: Iterable<ZoneService>, endpointsOf: (ns: string, name: string) => readonly ZoneEndpoint[], serial = 1) {
    const z = opts.domain.toLowerCase().replace(/\.$/, "");
    this.zone = z;
    this.zoneKey = nameToKey(z);
    this.serialNow = serial >>> 0;
    this.soa = this.soaRecord();
    this.add(z, this.soa);
    this.add(z, { name: z, type: TYPE.NS, ttl: opts.ttl, data: { target: `ns.dns.${z}` } });
    this.add(`dns-version.${z}`, { name: `dns-version.${z}`, type: TYPE.TXT, ttl: opts.ttl, data: { txt: ["1.1.0"] } });
    this.touch(`svc.${z}`);
    if (opts.pods !== "disabled") this.touch(`pod.${z}`);
    for (const s of services) this.addService(s, endpointsOf(s.namespace, s.name));
  }

  private soaRecord(): Record_ {
    const z = this.zone;
    const ttl = this.opts.ttl;
    return { name: z, type: TYPE.SOA, ttl, data: { soa: { mname: `ns.dns.${z}`, rname: `hostmaster.${z}`, serial: this.serialNow, refresh: 7200, retry: 1800, expire: 86400, minimum: ttl } } };
  }

  get serial(): number {
    return this.serialNow;
  }

  /**
   * One service changed (its entry or its endpoints; `svc` undefined: it is
   * gone): its names are taken out and put back, the SOA serial moves on,
   * and encoded answers are dropped (they are encoded again when asked).
   * Costs what the one service costs, not the whole zone.
   */
  update(namespace: string, name: string, svc: ZoneService | undefined, eps: readonly ZoneEndpoint[]): void {
    this.removeService(`${namespace}/${name}`);
    if (svc) this.addService(svc, eps);
    this.serialNow = (this.serialNow + 1) >>> 0;
    const apex = this.nodes.get(this.zone);
    const soa = this.soaRecord();
    apex?.records.set(TYPE.SOA, [soa]);
    this.soa = soa;
    this.encoded.clear();
    this.encodedCount = 0;
    this.encodedSize = 0;
  }

  private removeService(key: string): void {
    const o = this.owned.get(key);
    if (!o) return;
    for (const n of o.names) this.nodes.delete(n);
    for (const t of o.touched) this.untouch(t);
    for (const r of o.reverse) {
      const left = (this.reverse.get(r) ?? []).filter((e) => e.owner !== key);
      if (left.length) this.reverse.set(r, left);
      else this.reverse.delete(r);
    }
    for (const [ns, ip] of o.podIps) {
      const m = this.podIps.get(ns);
      const c = (m?.get(ip) ?? 0) - 1;
      if (c > 0) m?.set(ip, c);
      else m?.delete(ip);
    }
    this.owned.delete(key);
  }

  private addService(s: ZoneService, eps: readonly ZoneEndpoint[]): void {
    const z = this.zone;
    const ttl = this.opts.ttl;
    const base = `${s.name}.${s.namespace}.svc.${z}`;
    this.owner = `${s.namespace}/${s.name}`;
    const o: Owned = { names: [], touched: [], reverse: [], podIps: [] };
    this.owned.set(this.owner, o);
    try {
      this.touch(`${s.namespace}.svc.${z}`);
      for (const e of eps) {
        let m = this.podIps.get(e.namespace);
        if (!m) this.podIps.set(e.namespace, (m = new Map()));
        for (const a of e.addresses) {
          m.set(a, (m.get(a) ?? 0) + 1);
          o.podIps.push([e.namespace, a]);
        }
      }
      this.addRecords(s, eps, base, ttl);
    } finally {
      this.owner = "";
    }
  }

  private addRecords(s: ZoneService, eps: readonly ZoneEndpoint[], base: string, ttl: number): void {
    if (s.type === "ExternalName") {
      const target = (s.externalName ?? "").replace(/\.$/, "");
      this.node(base).cname = { record: { name: base, type: TYPE.CNAME, ttl, data: { target } }, target };
      return;
    }
    if (s.type === "ClusterIP") {
      for (const ip of s.clusterIPs) {
        const r = addressRecord(base, ip, ttl);
        this.add(base, r);
        this.addReverse(ip, base);
      }
      for (const p of s.ports) {
        if (!p.name) continue;
        const srvName = `_${p.name}._${p.protocol.toLowerCase()}.${base}`;
        this.add(srvName, { name: srvName, type: TYPE.SRV, ttl, data: { srv: { priority: 0, weight: 100, port: p.port, target: base } } });
        for (const ip of s.clusterIPs) this.node(srvName).glue.push(addressRecord(base, ip, ttl));
      }
      return;
    }
    // Headless: one record per ready endpoint address (all of them with publishNotReadyAddresses).
    const live = eps.filter((e) => e.ready || s.publishNotReadyAddresses);
    if (live.length === 0 || !live.some((e) => e.addresses.length > 0)) return; // NXDOMAIN: nothing to point at
    // A target per endpoint hostname (all its addresses), or per address when it has none.
    const targets: { host: string; ep: ZoneEndpoint; ips: readonly string[] }[] = [];
    for (const e of live) {
      for (const ip of e.addresses) {
        this.add(base, addressRecord(base, ip, ttl));
        const host = `${e.hostname ?? dashed(ip)}.${base}`;
        this.add(host, addressRecord(host, ip, ttl));
        if (e.hostname) this.addReverse(ip, host);
        if (!e.hostname) targets.push({ host, ep: e, ips: [ip] });
      }
      if (e.hostname && e.addresses.length) targets.push({ host: `${e.hostname}.${base}`, ep: e, ips: e.addresses });
    }
    for (const p of s.ports) {
      if (!p.name) continue;
      const srvName = `_${p.name}._${p.protocol.toLowerCase()}.${base}`;
      const weight = Math.max(1, Math.floor(100 / targets.length));
      const seen = new Set<string>();
      for (const t of targets) {
        const port = t.ep.ports.find((q) => q.name === p.name && q.protocol === p.protocol)?.port ?? p.port;
        if (seen.has(`${t.host}:${port}`)) continue;
        seen.add(`${t.host}:${port}`);
        this.add(srvName, { name: srvName, type: TYPE.SRV, ttl, data: { srv: { priority: 0, weight, port, target: t.host } } });
        for (const a of t.ips) this.node(srvName).glue.push(addressRecord(t.host, a, ttl));
      }
    }
  }

  private addReverse(ip: string, target: string): void {
    const name = reverseName(ip);
    const list = this.reverse.get(name) ?? [];
    if (list.some((e) => "target" in e.record.data && e.record.data.target === target)) return;
    list.push({ owner: this.owner, record: { name, type: TYPE.PTR, ttl: this.opts.ttl, data: { target } } });
    this.reverse.set(name, list);
    this.owned.get(this.owner)?.reverse.push(name);
  }

  private node(name: string): Node {
    let n = this.nodes.get(name);
    if (!n) {
      n = { owner: this.owner, records: new Map(), glue: [] };
      this.nodes.set(name, n);
      this.owned.get(this.owner)?.names.push(name);
      this.touch(name);
    }
    return n;
  }

  private add(name: string, r: Record_): void {
    const n = this.node(name);
    const list = n.records.get(r.type) ?? [];
    list.push(r);
    n.records.set(r.type, list);
  }

  /** Counts a name and its ancestors (up to the zone apex) as existing. */
  private touch(name: string): void {
    this.owned.get(this.owner)?.touched.push(name);
    for (const n of this.chain(name)) this.exists.set(n, (this.exists.get(n) ?? 0) + 1);
  }

  private untouch(name: string): void {
    for (const n of this.chain(name)) {
      const c = (this.exists.get(n) ?? 0) - 1;
      if (c > 0) this.exists.set(n, c);
      else this.exists.delete(n);
    }
  }

  /** The name and its ancestors down to the zone apex. */
  private chain(name: string): string[] {
    const out: string[] = [];
    for (let n = name; ; n = n.slice(n.indexOf(".") + 1)) {
      out.push(n);
      if (n === this.zone || n.indexOf(".") < 0) break;
    }
    return out;
  }

  /** Whether the wire-form key lies in the cluster zone (label-aligned suffix). */
  inZone(key: string): boolean {
    return isUnder(key, this.zoneKey);
  }


  /** Whether we answer this reverse name. */
  hasReverse(key: string): boolean {
    return this.reverse.has(keyToName(key));
  }

  /** The already-encoded answer for (key, qtype), if any: the hot path. */
  cached(key: string, qtype: number): Prebuilt | undefined {
    return this.encoded.get(key)?.get(qtype);
  }

  /** Answers a name in the zone (or a known reverse name); encodes it once. */
  answer(key: string, qtype: number): ZoneAnswer {
    const hit = this.cached(key, qtype);
    if (hit) return { kind: "wire", response: hit };
    const name = keyToName(key);
    if (nameToKey(name) !== key) {
      // A label with a "." in it: no such name here; the question is echoed byte for byte.
      return { kind: "wire", response: prebuilt(encodeMessage({ flags: FLAG.QR | FLAG.AA | FLAG.RA, rcode: RCODE.NXDOMAIN, question: { name, type: qtype, key }, authority: [this.soa] })) };
    }
    const ptr = this.reverse.get(name)?.map((e) => e.record);
    if (!this.inZone(key)) {
      if (!ptr) return { kind: "forward" };
      return { kind: "wire", response: this.remember(key, qtype, qtype === TYPE.PTR || qtype === TYPE.ANY ? this.msg(name, qtype, RCODE.NOERROR, ptr) : this.msg(name, qtype, RCODE.NOERROR, [], [this.soa])) };
    }
    const node = this.nodes.get(name);
    if (node?.cname && qtype !== TYPE.CNAME) return { kind: "cname", cname: node.cname.record, target: node.cname.target };
    let rrs: Record_[] | undefined;
    let glue: Record_[] = [];
    if (node?.cname) rrs = [node.cname.record];
    else if (node) {
      rrs = qtype === TYPE.ANY ? [...node.records.values()].flat() : node.records.get(qtype);
      if (qtype === TYPE.SRV) glue = node.glue;
    }
    let exists = (this.exists.get(name) ?? 0) > 0;
    if (!exists) {
      const pod = this.podRecord(name);
      if (typeof pod === "string") {
        // Not kept: random bad pod names would push real answers out of the bounded store.
        return { kind: "wire", response: this.msg(name, qtype, RCODE.NXDOMAIN, [], [this.soa]), invalid: pod };
      }
      if (pod) {
        exists = true;
        if (qtype === pod.type || qtype === TYPE.ANY) rrs = [pod];
      }
    }
    const msg = rrs?.length
      ? this.msg(name, qtype, RCODE.NOERROR, rrs, [], glue)
      : this.msg(name, qtype, exists ? RCODE.NOERROR : RCODE.NXDOMAIN, [], [this.soa]);
    return { kind: "wire", response: this.remember(key, qtype, msg) };
  }

  /**
   * <address>.<ns>.pod.<zone> by the pods mode (the address rules are
   * CoreDNS's: ./podname.ts): its A or AAAA record, undefined when there is
   * none (disabled, not a pod name, or verified and no endpoint of the
   * namespace has the address), or why the label spells no address.
   * Verified compares the address as the name spells it with the
   * registry's canonical text, as CoreDNS compares it with the pod's IP: a
   * non-canonical spelling (2001-db8-0-0-0-0-0-1) is not verified.
   */
  private podRecord(name: string): Record_ | string | undefined {
    if (this.opts.pods === "disabled") return undefined;
    const m = /^([0-9a-z-]+)\.([a-z0-9-]+)\.pod\./.exec(name);
    if (!m || name !== `${m[1]}.${m[2]}.pod.${this.soa.name}`) return undefined;
    const a = podLabelAddress(m[1]!);
    if (!a.ok) return a.why;
    if (this.opts.pods === "verified" && !(this.podIps.get(m[2]!)?.get(a.text) ?? 0)) return undefined;
    return addressRecord(name, a.address, this.opts.ttl);
  }

  private msg(name: string, qtype: number, rcode: number, answer: Record_[], authority: Record_[] = [], additional: Record_[] = []): Prebuilt {
    return prebuilt(encodeMessage({ flags: FLAG.QR | FLAG.AA | FLAG.RA, rcode, question: { name, type: qtype }, answer, authority, additional }));
  }

  /**
   * Keeps an encoded answer for the hot path, within the bounds on answers
   * and bytes over every name and qtype (a client asking all 65,536 qtypes
   * of every name, or random names, cannot grow it): past them the names
   * encoded longest ago are dropped, all their qtypes at once. A dropped
   * answer is encoded again when asked.
   */
  private remember(key: string, qtype: number, p: Prebuilt): Prebuilt {
    const maxCount = this.opts.maxEncoded ?? 50_000;
    const maxBytes = this.opts.maxEncodedBytes ?? 16 * 2 ** 20;
    const size = p.bytes.length + ENCODED_OVERHEAD;
    if (size > maxBytes || maxCount < 1) return p;
    for (const [k, m] of this.encoded) {
      if (this.encodedCount < maxCount && this.encodedSize + size + key.length <= maxBytes) break;
      this.forgetEncoded(k, m);
    }
    let m = this.encoded.get(key);
    if (!m) {
      this.encoded.set(key, (m = new Map()));
      this.encodedSize += key.length;
    }
    const old = m.get(qtype);
    if (old) {
      this.encodedCount--;
      this.encodedSize -= old.bytes.length + ENCODED_OVERHEAD;
    }
    m.set(qtype, p);
    this.encodedCount++;
    this.encodedSize += size;
    return p;
  }

  private forgetEncoded(key: string, m: Map<number, Prebuilt>): void {
    this.encoded.delete(key);
    this.encodedSize -= key.length;
    for (const p of m.values()) {
      this.encodedCount--;
      this.encodedSize -= p.bytes.length + ENCODED_OVERHEAD;
    }
  }

  /** Encoded answers kept, and the bytes they count for (see remember). */
  get encodedEntries(): number {
    return this.encodedCount;
  }

  get encodedBytes(): number {
    return this.encodedSize;
  }

  /** Number of names with records (for metrics and tests). */
  get size(): number {
    return this.nodes.size;
  }
}
