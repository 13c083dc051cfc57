import { readFileSync } from "node:fs";
import { formatCidr, formatIpv4, formatMac, parseCidr, parseIpv4, parseMac } from "../common/ipv4.js";
import type { Logger } from "../common/log.js";
import { subnetKey, type Lease } from "../subnet/lease.js";
import { formatCidr6, formatIpv6, parseCidr6, parseIpv6 } from "../common/ipv6.js";
import { writeFileAtomic } from "../common/fs-atomic.js";

interface Stored {
  subnet: string;
  publicIp: string;
  vni: number;
  vtepMac: string;
  /** The etcd key and its create revision (absent in caches written before weft judged conflicts by age). */
  key?: string;
  createRevision?: string;
  /** The IPv6 half of a dual-stack or IPv6-only lease. */
  subnet6?: string;
  publicIpv6?: string;
  vni6?: number;
  vtepMac6?: string;
}

/**
 * The route table as last applied, kept in the state dir. A restarted agent
 * applies it as soon as its data path exists, before etcd answers, so a data
 * path that lives in the agent (tun) forwards again within a second; the
 * first etcd snapshot then corrects whatever changed meanwhile (it is diffed
 * against this). Writes are debounced and atomic.
 */
export class RouteCache {
  private timer: NodeJS.Timeout | undefined;
  private pending: readonly Lease[] | undefined;

  constructor(private readonly path: string, private readonly log: Logger, private readonly delayMs = 200) {}

  load(): Lease[] {
    let text: string;
    try {
      text = readFileSync(this.path, "utf8");
    } catch {
      return [];
    }
    try {
      // The route table judges these like any lease (the network config may have changed since).
      return (JSON.parse(text) as Stored[]).map((s) => {
        const subnet = parseCidr(s.subnet);
        const subnet6 = typeof s.subnet6 === "string" ? parseCidr6(s.subnet6) : undefined;
        const v6 = subnet6 && typeof s.publicIpv6 === "string" && typeof s.vtepMac6 === "string"
          ? { publicIpv6: parseIpv6(s.publicIpv6), v6: { vni: Number(s.vni6 ?? s.vni), vtepMac: parseMac(s.vtepMac6) } }
          : {};
        return {
          key: typeof s.key === "string" ? s.key : subnetKey(subnet, subnet6),
          subnet,
          ...(subnet6 ? { subnet6 } : {}),
          attrs: { publicIp: parseIpv4(s.publicIp), backendType: "vxlan", vni: s.vni, vtepMac: parseMac(s.vtepMac), ...v6 },
          leaseId: "0",
          modRevision: "0",
          createRevision: typeof s.createRevision === "string" && /^\d{1,20}$/.test(s.createRevision) ? s.createRevision : "0",
        };
      });
    } catch (e) {
      this.log.warn({ path: this.path, err: (e as Error).message }, "ignoring an unreadable route cache");
      return [];
    }
  }

  save(leases: readonly Lease[]): void {
    this.pending = leases;
    this.timer ??= setTimeout(() => this.flush(), this.delayMs).unref();
  }

  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const leases = this.pending;
    if (!leases) return;
    this.pending = undefined;
    const doc: Stored[] = leases.map((l) => ({
      subnet: formatCidr(l.subnet), publicIp: formatIpv4(l.attrs.publicIp), vni: l.attrs.vni, vtepMac: formatMac(l.attrs.vtepMac),
      key: l.key, createRevision: l.createRevision,
      ...(l.subnet6 ? { subnet6: formatCidr6(l.subnet6) } : {}),
      ...(l.attrs.publicIpv6 !== undefined && l.attrs.v6
        ? { publicIpv6: formatIpv6(l.attrs.publicIpv6), vni6: l.attrs.v6.vni, vtepMac6: formatMac(l.attrs.v6.vtepMac) }
        : {}),
    }));
    try {
      writeFileAtomic(this.path, `${JSON.stringify(doc)}\n`, 0o600);
    } catch (e) {
      this.log.warn({ path: this.path, err: (e as Error).message }, "could not write the route cache");
    }
  }
}
