import { readFileSync } from "node:fs";
import { formatCidr, formatIpv4, formatMac, parseCidr, parseIpv4, parseMac } from "../common/ipv4.js";
import type { Logger } from "../common/log.js";
import { subnetKey, type Lease } from "../subnet/lease.js";
import { formatCidr6, formatIpv6, parseCidr6, parseIpv6 } from "../common/ipv6.js";
import { writeFileAtomic, writeFileAtomicAsync } from "../common/fs-atomic.js";

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
 *
 * At 20,000 leases the file is 4 MB and writing it costs about 100 ms of
 * CPU: done in one go on every debounced change, it stalled the agent's
 * event loop every 200 ms while leases churned, and each lease change
 * waiting behind it (bench:control's change p99). So the background write
 * renders `chunk` leases at a time and writes each piece to the file
 * asynchronously before the next, then fsyncs and renames; one write runs
 * at a time, and saves made while it runs are written after it. flush() (at stop) writes the latest table at
 * once, and a background write of an older one then no longer replaces it.
 */
export class RouteCache {
  private timer: NodeJS.Timeout | undefined;
  /** The table as last saved, and how many saves there were; `written`: the save the file holds. */
  private latest: readonly Lease[] | undefined;
  private saved = 0;
  private written = 0;
  private writing: Promise<void> | undefined;

  /** When the last background write ended (performance.now()). */
  private lastEnd = -Infinity;
  private readonly delayMs: number;
  private readonly chunk: number;
  private readonly minGapMs: number;

  /**
   * `delayMs`: the debounce after a save; `minGapMs`: at least this long
   * between the end of one background write and the start of the next (while
   * leases churn, a write a second, not one per debounce); `chunk`: leases
   * rendered per turn of the event loop.
   */
  constructor(private readonly path: string, private readonly log: Logger, opts: { delayMs?: number; minGapMs?: number; chunk?: number } = {}) {
    this.delayMs = opts.delayMs ?? 200;
    this.minGapMs = opts.minGapMs ?? 1000;
    this.chunk = opts.chunk ?? 250;
  }

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
    this.latest = leases;
    this.saved++;
    this.schedule();
  }

  /** Resolves when no background write is pending or running (tests). */
  async settled(): Promise<void> {
    while (this.timer || this.writing) {
      if (this.writing) await this.writing;
      else await new Promise((r) => setTimeout(r, 10));
    }
  }

  private schedule(): void {
    if (this.timer || this.writing) return; // a running write schedules the next when it ends
    const wait = Math.max(this.delayMs, this.lastEnd + this.minGapMs - performance.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.writing = this.writeInBackground().finally(() => {
        this.writing = undefined;
        this.lastEnd = performance.now();
        if (this.written < this.saved) this.schedule();
      });
    }, wait).unref();
  }

  private async writeInBackground(): Promise<void> {
    const gen = this.saved;
    const leases = this.latest;
    if (!leases || this.written >= gen) return;
    const all: readonly Lease[] = leases;
    const chunk = this.chunk;
    const superseded = (): boolean => this.written >= gen; // flush() wrote this or a newer table meanwhile
    // Rendered and written `chunk` leases at a time: each piece is short-lived (no 4 MB string or
    // buffer), and each write of a piece lets the event loop run.
    async function* pieces(): AsyncGenerator<string> {
      yield "[";
      for (let i = 0; i < all.length && !superseded(); i += chunk) yield (i > 0 ? "," : "") + renderPart(all, i, i + chunk);
      yield "]\n";
    }
    const before = this.written;
    try {
      await writeFileAtomicAsync(this.path, pieces(), 0o600, () => {
        if (superseded()) return false;
        this.written = gen;
        return true;
      });
    } catch (e) {
      if (this.written === gen) this.written = before;
      this.log.warn({ path: this.path, err: (e as Error).message }, "could not write the route cache");
    }
  }

  /** Writes the latest saved table now, if the file does not hold it yet (at stop). */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const leases = this.latest;
    const gen = this.saved;
    if (!leases || this.written >= gen) return;
    try {
      writeFileAtomic(this.path, `${renderCache(leases)}\n`, 0o600);
      this.written = gen;
    } catch (e) {
      this.log.warn({ path: this.path, err: (e as Error).message }, "could not write the route cache");
    }
  }
}

/**
 * Leases [from, to) as the JSON array's elements, without the brackets:
 * what JSON.stringify writes for each lease's Stored, byte for byte, built
 * as text (no object per lease: at 20,000 leases a write otherwise made
 * some 60 MB of garbage).
 */
function renderPart(leases: readonly Lease[], from: number, to: number): string {
  let out = "";
  const end = Math.min(to, leases.length);
  for (let i = from; i < end; i++) {
    const l = leases[i];
    if (!l) continue;
    const a = l.attrs;
    let t = `{"subnet":"${formatCidr(l.subnet)}","publicIp":"${formatIpv4(a.publicIp)}","vni":${JSON.stringify(a.vni)},"vtepMac":"${formatMac(a.vtepMac)}",` +
      `"key":${JSON.stringify(l.key)},"createRevision":${JSON.stringify(l.createRevision)}`;
    if (l.subnet6) t += `,"subnet6":"${formatCidr6(l.subnet6)}"`;
    if (a.publicIpv6 !== undefined && a.v6) t += `,"publicIpv6":"${formatIpv6(a.publicIpv6)}","vni6":${JSON.stringify(a.v6.vni)},"vtepMac6":"${formatMac(a.v6.vtepMac)}"`;
    out += i === from ? `${t}}` : `,${t}}`;
  }
  return out;
}

/** The cache file's text for `leases`, without the final newline. */
export function renderCache(leases: readonly Lease[]): string {
  return `[${renderPart(leases, 0, leases.length)}]`;
}
