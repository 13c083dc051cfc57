import { formatCidr, formatIpv4, maskOf, parseIpv4, parseMac, type Ipv4Prefix } from "../../common/ipv4.js";
import type { Logger } from "../../common/log.js";
import type { RouteDiff } from "../../routes/table.js";
import { NO_IPV4, subnetKey, type Lease, type LeaseAttrs } from "../../subnet/lease.js";
import { parseCidr6, parseIpv6 } from "../../common/ipv6.js";
import type { NetworkConfig } from "../../subnet/network-config.js";
import type { ExternalInterface, Network, NetworkStatus } from "../types.js";
import { BatchSession, ipJson, type BatchRunner } from "../../common/iproute.js";
import { readDevice, setDeviceAddress, setDeviceAddress6 } from "../device.js";
import { ensureDevice, peerLines, programPeers, readPeers, view4, view6, type DeviceSpec, type KernelPeers, type PeerLines, type PeerView } from "./kernel.js";

/**
 * The vxlan backend's event loop: route-table diffs in, kernel objects out.
 * Work is serialized (one batch at a time, in order). A peer whose
 * programming fails half-way is undone and retried by the next reconcile,
 * which also recreates the device if someone deleted it.
 */
/** Peers programmed per iproute2 batch (each batch: their neighbours, then FDB entries, then routes). */
const PEER_CHUNK = 1000;

/** A lease with its view on one family's device. */
interface Viewed {
  readonly l: Lease;
  readonly v: PeerView;
}

/** One family's device and the peers programmed on it (IPv4: weft.<VNI>; IPv6: weft-v6.<VNI>). */
interface Family {
  readonly spec: DeviceSpec;
  readonly mac: Uint8Array;
  /** A lease as this device programs it; undefined when the lease lacks this family. */
  readonly view: (l: Lease) => PeerView | undefined;
  /** Peers as programmed: subnet -> lease. */
  readonly programmed: Map<string, Lease>;
  readonly failed: Map<string, string>;
  /** While a reading for the reconcile is taken or waits for its turn: the peers (subnets) applied since it began. */
  touched: Set<string> | undefined;
}

/** One family's device as read and compared ahead of a reconcile (readForReconcile). */
interface FamilyReading {
  /** The fixes the table of the read's start called for. */
  readonly missing: readonly Lease[];
  readonly stale: readonly Lease[];
  /** Peers applied since the read began: no fix for them (the apply was done after the read; the next reconcile checks them). */
  readonly touched: ReadonlySet<string>;
}

/** Leases compared per turn of the event loop when a reconcile compares ahead. */
const COMPARE_CHUNK = 200;

/** The kernel as read ahead of a reconcile, per family whose device was up. */
class VxlanReading {
  constructor(readonly families: ReadonlyMap<Family, FamilyReading>) {}
}

/**
 * The vxlan backend's event loop: route-table diffs in, kernel objects out,
 * on one device per family the network runs (IPv4 over the IPv4 underlay,
 * IPv6 over the IPv6 underlay, as flannel's dual stack does). Work is
 * serialized (one batch at a time, in order). A peer whose programming
 * fails half-way is undone and retried by the next reconcile, which also
 * recreates a device if someone deleted it.
 */
export class VxlanNetwork implements Network {
  readonly backend = "vxlan" as const;
  readonly mtu: number;
  private local: Lease | undefined;
  private readonly families: Family[];
  private queue: Promise<unknown> = Promise.resolve();
  /** Bumped by every change to the kernel objects (so a reconcile can tell its reading is stale). */
  private generation = 0;
  recreated = 0;
  /** One long-lived ip and one bridge process: a change costs netlink messages, not process starts. */
  private readonly sessions = { ip: new BatchSession("ip"), bridge: new BatchSession("bridge") };
  private readonly runner: BatchRunner = (tool, lines) => this.sessions[tool].run(lines);

  constructor(
    devices: { readonly v4?: { spec: DeviceSpec; mac: Uint8Array } | undefined; readonly v6?: { spec: DeviceSpec; mac: Uint8Array } | undefined },
    readonly leaseAttrs: LeaseAttrs,
    private readonly config: NetworkConfig,
    private readonly iface: ExternalInterface,
    private readonly log: Logger,
  ) {
    const fam = (d: { spec: DeviceSpec; mac: Uint8Array }, view: (l: Lease) => PeerView | undefined): Family =>
      ({ spec: d.spec, mac: d.mac, view, programmed: new Map(), failed: new Map(), touched: undefined });
    this.families = [...(devices.v4 ? [fam(devices.v4, view4)] : []), ...(devices.v6 ? [fam(devices.v6, view6)] : [])];
    this.mtu = Math.min(...this.families.map((f) => f.spec.mtu));
  }

  private serial<T>(f: () => Promise<T>): Promise<T> {
    const p = this.queue.then(f, f);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** The interface for a DirectRouting peer (same L2 segment as us, IPv4), else undefined. */
  private direct(f: Family, l: Lease): string | undefined {
    if (f.spec.family !== 4 || !this.config.backend.directRouting) return undefined;
    const m = maskOf(this.iface.prefixLen);
    return ((l.attrs.publicIp & m) >>> 0) === ((this.iface.addr & m) >>> 0) ? this.iface.name : undefined;
  }

  private async address(f: Family, lease: Lease): Promise<void> {
    if (f.spec.family === 4) await setDeviceAddress(f.spec.name, lease.subnet, this.config.network);
    else if (lease.subnet6 && this.config.ipv6) await setDeviceAddress6(f.spec.name, lease.subnet6, this.config.ipv6.network);
  }

  configureLocal(lease: Lease): Promise<void> {
    return this.serial(async () => {
      this.local = lease;
      for (const f of this.families) await this.address(f, lease);
    });
  }

  apply(diff: RouteDiff): Promise<void> {
    return this.serial(async () => {
      for (const f of this.families) {
        await this.applyNow(f, diff.removed.concat(diff.changed.map((c) => c.before)), diff.added.concat(diff.changed.map((c) => c.after)));
      }
    });
  }

  /**
   * Programs a diff on one family's device, PEER_CHUNK peers at a time: a
   * full sync of 20,000 peers otherwise holds 60,000 command lines at once
   * (about 22 MB of heap at the agent's peak), for no gain in speed.
   */
  private async applyNow(f: Family, removeAll: readonly Lease[], addAll: readonly Lease[]): Promise<void> {
    this.generation++;
    // Each lease's view (its texts) is made once per chunk, when the chunk is programmed: at 20,000
    // peers, views made up front (or once per use) were a large part of a full sync's garbage.
    for (let i = 0; i < removeAll.length; i += PEER_CHUNK) await this.removeChunk(f, this.viewed(f, removeAll.slice(i, i + PEER_CHUNK)));
    for (let i = 0; i < addAll.length; i += PEER_CHUNK) await this.addChunk(f, this.viewed(f, addAll.slice(i, i + PEER_CHUNK)));
  }

  /** The leases this family's device programs, each with its view. */
  private viewed(f: Family, leases: readonly Lease[]): Viewed[] {
    const out: Viewed[] = [];
    for (const l of leases) {
      const v = f.view(l);
      if (v) {
        out.push({ l, v });
        f.touched?.add(v.net);
      }
    }
    return out;
  }

  private async removeChunk(f: Family, remove: readonly Viewed[]): Promise<void> {
    if (remove.length === 0) return;
    await programPeers(remove.map((p) => this.lines(f, p, "del")), "del", this.runner);
    for (const { v } of remove) {
      f.programmed.delete(v.net);
      f.failed.delete(v.net);
    }
  }

  private async addChunk(f: Family, add: readonly Viewed[]): Promise<void> {
    if (add.length === 0) return;
    const failed = await programPeers(add.map((p) => this.lines(f, p, "add")), "add", this.runner);
    const undo: Viewed[] = [];
    add.forEach((p, i) => {
      const k = p.v.net;
      const err = failed.get(i);
      if (err === undefined) {
        f.programmed.set(k, p.l);
        f.failed.delete(k);
      } else {
        f.failed.set(k, err);
        f.programmed.delete(k);
        undo.push(p);
      }
    });
    if (undo.length > 0) {
      this.log.error({ device: f.spec.name, peers: undo.map((p) => p.v.net), first: failed.values().next().value }, "programming peers failed; undone, will retry");
      await programPeers(undo.map((p) => this.lines(f, p, "del")), "del", this.runner);
    }
  }

  private lines(f: Family, p: Viewed, op: "add" | "del"): PeerLines {
    return peerLines(p.v, f.spec.name, this.direct(f, p.l), op);
  }

  /**
   * Reads each family's device, neighbours, FDB entries and routes for the
   * next reconcile and compares them with `routes`, outside the agent's
   * apply queue and COMPARE_CHUNK leases per turn of the event loop: at
   * 20,000 peers the read and the comparison take some 500 ms, and a change
   * queued behind them waited as long. From the read's start until that
   * reconcile, applied peers are recorded; the reconcile keeps only the
   * fixes for other peers that its own routes still call for. A family whose
   * device was missing or down is left out: the reconcile recreates the
   * device and reads it in turn.
   */
  async readForReconcile(routes: readonly Lease[]): Promise<VxlanReading> {
    const out = new Map<Family, FamilyReading>();
    for (const f of this.families) {
      const touched = new Set<string>();
      f.touched = touched;
      const dev = await readDevice(f.spec.name);
      if (!dev || !dev.flags?.includes("UP")) continue;
      const [k, viaIface] = await Promise.all([readPeers(f.spec.name, f.spec.family), this.directRoutes(f)]);
      const missing: Lease[] = [];
      const want = new Set<string>();
      for (let i = 0; i < routes.length; i += COMPARE_CHUNK) {
        if (i > 0) await new Promise((r) => setImmediate(r));
        missing.push(...this.missingOf(f, routes.slice(i, i + COMPARE_CHUNK), k, viaIface, want));
      }
      out.set(f, { missing, stale: this.staleOf(f, k, viaIface, want), touched });
    }
    return new VxlanReading(out);
  }

  /**
   * Recreates a missing device (in the queue), then compares the kernel with
   * `routes` and applies the differences in the queue. With a reading taken
   * ahead (readForReconcile) it applies the fixes found there that `routes`
   * still call for, except for peers applied since; without one it reads
   * the kernel here, outside the queue (reading 3 x N objects takes a while,
   * and route changes must not wait behind it), and tries again when a
   * change was applied meanwhile (the reading is then stale).
   */
  async reconcile(routes: readonly Lease[], reading?: unknown): Promise<number> {
    let fixed = 0;
    try {
      for (const f of this.families) fixed += await this.reconcileFamily(f, routes, reading instanceof VxlanReading ? reading.families.get(f) : undefined);
    } finally {
      for (const f of this.families) f.touched = undefined;
    }
    return fixed;
  }

  private async reconcileFamily(f: Family, routes: readonly Lease[], ahead: FamilyReading | undefined): Promise<number> {
    const dev = await readDevice(f.spec.name);
    if (!dev || !dev.flags?.includes("UP")) {
      ahead = undefined; // a reading of the device before it went
      await this.serial(async () => {
        this.log.warn({ device: f.spec.name }, dev ? "vxlan device is down; bringing it up" : "vxlan device disappeared; recreating it");
        await ensureDevice(f.spec, f.mac, () => undefined);
        if (this.local) await this.address(f, this.local);
        // iproute2 caches interface indexes: a long-lived process would still use the old device's.
        this.sessions.ip.close();
        this.sessions.bridge.close();
        this.recreated++;
        f.programmed.clear();
        this.generation++;
      });
    }
    if (ahead) {
      const { missing, stale } = this.stillCalledFor(f, routes, ahead);
      if (missing.length === 0 && stale.length === 0) return 0;
      return this.serial(async () => {
        this.log.info({ device: f.spec.name, missing: missing.length, stale: stale.length }, "reconciling vxlan peers with the kernel");
        await this.applyNow(f, stale, missing);
        return missing.length + stale.length;
      });
    }
    for (let attempt = 0; attempt < 3; attempt++) {
      const gen = this.generation;
      const [k, viaIface] = await Promise.all([readPeers(f.spec.name, f.spec.family), this.directRoutes(f)]);
      const { missing, stale } = this.compareWith(f, routes, k, viaIface);
      if (missing.length === 0 && stale.length === 0) return 0;
      const done = await this.serial(async () => {
        if (gen !== this.generation) return false;
        this.log.info({ device: f.spec.name, missing: missing.length, stale: stale.length }, "reconciling vxlan peers with the kernel");
        await this.applyNow(f, stale, missing);
        return true;
      });
      if (done) return missing.length + stale.length;
    }
    return 0; // changes keep coming; the next reconcile looks again
  }

  /**
   * The fixes of a reading taken ahead that `routes` (the table now) still
   * call for: a missing lease still in the table, a stale route for a subnet
   * the table still does not name; none for a peer applied since the read.
   */
  private stillCalledFor(f: Family, routes: readonly Lease[], ahead: FamilyReading): { missing: Lease[]; stale: Lease[] } {
    const net = (l: Lease): string | undefined => f.view(l)?.net;
    const fresh = (l: Lease): boolean => {
      const n = net(l);
      return n !== undefined && !ahead.touched.has(n);
    };
    const now = new Set(routes);
    const missing = ahead.missing.filter((l) => now.has(l) && fresh(l));
    let stale = ahead.stale.filter(fresh);
    if (stale.length > 0) {
      const named = new Set<string>();
      for (const l of routes) {
        const n = net(l);
        if (n !== undefined) named.add(n);
      }
      stale = stale.filter((l) => !named.has(net(l) ?? ""));
    }
    return { missing, stale };
  }

  /** What the kernel (as read: `k`, `viaIface`) lacks and what it should not have, given `routes`. */
  private compareWith(f: Family, routes: readonly Lease[], k: KernelPeers, viaIface: ReadonlyMap<string, string>): { missing: Lease[]; stale: Lease[] } {
    const want = new Set<string>();
    const missing = this.missingOf(f, routes, k, viaIface, want);
    return { missing, stale: this.staleOf(f, k, viaIface, want) };
  }

  /** The leases of `routes` the kernel lacks (or holds otherwise); adds the subnets `routes` name to `want`. */
  private missingOf(f: Family, routes: readonly Lease[], k: KernelPeers, viaIface: ReadonlyMap<string, string>, want: Set<string>): Lease[] {
    const missing: Lease[] = [];
    for (const l of routes) {
      const v = f.view(l);
      if (!v) continue;
      want.add(v.net);
      if (this.direct(f, l)) {
        if (viaIface.get(v.net) !== v.pub) missing.push(l);
        continue;
      }
      const ok = k.neigh.get(v.gw) === v.mac && k.fdb.get(v.mac) === v.pub && k.routes.get(v.net) === v.gw;
      if (!ok) missing.push(l);
    }
    return missing;
  }

  /** Stale: routes on the device (or DirectRouting routes) for subnets not in `want`, as leases to remove. */
  private staleOf(f: Family, k: KernelPeers, viaIface: ReadonlyMap<string, string>, want: ReadonlySet<string>): Lease[] {
    const stale: Lease[] = [];
    for (const [dst, gw] of k.routes) {
      if (want.has(dst)) continue;
      const mac = k.neigh.get(gw) ?? "00:00:00:00:00:00";
      stale.push(f.programmed.get(dst) ?? synthetic(f.spec.family, dst, gw, mac, k.fdb.get(mac)));
    }
    for (const [dst, gw] of viaIface) {
      if (!want.has(dst)) stale.push(f.programmed.get(dst) ?? synthetic(4, dst, formatIpv4(parsePrefix(dst).addr), "00:00:00:00:00:00", gw));
    }
    return stale;
  }

  /** DirectRouting routes on the underlay interface: cluster-network subnet -> gateway. */
  private async directRoutes(f: Family): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    if (f.spec.family !== 4 || !this.config.backend.directRouting) return out;
    const net = this.config.network;
    for (const r of await ipJson<{ dst: string; gateway?: string }>(["route", "show", "dev", this.iface.name])) {
      if (!r.gateway || r.dst === "default") continue;
      const p = parsePrefix(r.dst);
      if (p.len >= net.len && ((p.addr & maskOf(net.len)) >>> 0) === net.addr) out.set(formatCidr(p), r.gateway);
    }
    return out;
  }

  status(): NetworkStatus {
    const sum = (g: (f: Family) => number): number => this.families.reduce((n, f) => n + g(f), 0);
    return {
      backend: "vxlan",
      device: this.families.map((f) => f.spec.name).join(","),
      mtu: this.mtu,
      peers: { programmed: sum((f) => f.programmed.size), failed: sum((f) => f.failed.size) },
      counters: { device_recreated: this.recreated, ...Object.fromEntries(this.families.filter((f) => f.spec.family === 6).map((f) => ["peers_v6", f.programmed.size])) },
    };
  }

  /** Stops nothing in the kernel: the devices, neighbours, FDB and routes stay for traffic to keep flowing. */
  async close(): Promise<void> {
    await this.queue;
    this.sessions.ip.close();
    this.sessions.bridge.close();
  }
}

/** `ip route` writes a host route without its length. */
function parsePrefix(dst: string): Ipv4Prefix {
  const [a, len] = dst.split("/");
  return { addr: parseIpv4(a ?? ""), len: len === undefined ? 32 : Number(len) };
}

/** A lease rebuilt from kernel state alone, so that a stale entry of one family's device can be removed. */
function synthetic(family: 4 | 6, dst: string, gw: string, mac: string, pub: string | undefined): Lease {
  const vtepMac = parseMac(mac);
  if (family === 6) {
    const subnet6 = parseCidr6(dst.includes("/") ? dst : `${dst}/128`, { strict: false });
    return {
      key: subnetKey(NO_IPV4, subnet6), subnet: NO_IPV4, subnet6,
      attrs: { publicIp: 0, backendType: "vxlan", vni: 0, vtepMac, publicIpv6: parseIpv6(pub ?? "::"), v6: { vni: 0, vtepMac } },
      leaseId: "0", modRevision: "0", createRevision: "0",
    };
  }
  const subnet = parsePrefix(dst);
  return {
    key: subnetKey(subnet),
    subnet,
    attrs: { publicIp: parseIpv4(pub ?? "0.0.0.0"), backendType: "vxlan", vni: 0, vtepMac },
    leaseId: "0",
    modRevision: "0",
    createRevision: "0",
  };
}
