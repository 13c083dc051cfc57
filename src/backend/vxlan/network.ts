import { formatCidr, formatIpv4, formatMac, maskOf, parseIpv4, parseMac, type Ipv4Prefix } from "../../common/ipv4.js";
import type { Logger } from "../../common/log.js";
import type { RouteDiff } from "../../routes/table.js";
import { subnetKey, type Lease, type LeaseAttrs } from "../../subnet/lease.js";
import type { NetworkConfig } from "../../subnet/network-config.js";
import type { ExternalInterface, Network, NetworkStatus } from "../types.js";
import { BatchSession, ipJson, type BatchRunner } from "../../common/iproute.js";
import { readDevice, setDeviceAddress } from "../device.js";
import { ensureDevice, peerLines, programPeers, readPeers, type DeviceSpec, type PeerLines } from "./kernel.js";

/**
 * The vxlan backend's event loop: route-table diffs in, kernel objects out.
 * Work is serialized (one batch at a time, in order). A peer whose
 * programming fails half-way is undone and retried by the next reconcile,
 * which also recreates the device if someone deleted it.
 */
export class VxlanNetwork implements Network {
  readonly backend = "vxlan" as const;
  readonly mtu: number;
  private local: Lease | undefined;
  /** Peers as programmed: subnet -> lease. */
  private readonly programmed = new Map<string, Lease>();
  private readonly failed = new Map<string, string>();
  private queue: Promise<unknown> = Promise.resolve();
  /** Bumped by every change to the kernel objects (so a reconcile can tell its reading is stale). */
  private generation = 0;
  recreated = 0;
  /** One long-lived ip and one bridge process: a change costs netlink messages, not process starts. */
  private readonly sessions = { ip: new BatchSession("ip"), bridge: new BatchSession("bridge") };
  private readonly runner: BatchRunner = (tool, lines) => this.sessions[tool].run(lines);

  constructor(
    readonly spec: DeviceSpec,
    readonly leaseAttrs: LeaseAttrs,
    private readonly config: NetworkConfig,
    private readonly iface: ExternalInterface,
    private readonly log: Logger,
  ) {
    this.mtu = spec.mtu;
  }

  private serial<T>(f: () => Promise<T>): Promise<T> {
    const p = this.queue.then(f, f);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** The interface for a DirectRouting peer (same L2 segment as us), else undefined. */
  private direct(l: Lease): string | undefined {
    if (!this.config.backend.directRouting) return undefined;
    const m = maskOf(this.iface.prefixLen);
    return ((l.attrs.publicIp & m) >>> 0) === ((this.iface.addr & m) >>> 0) ? this.iface.name : undefined;
  }

  configureLocal(lease: Lease): Promise<void> {
    return this.serial(async () => {
      this.local = lease;
      await setDeviceAddress(this.spec.name, lease.subnet, this.config.network);
    });
  }

  apply(diff: RouteDiff): Promise<void> {
    return this.serial(() => this.applyNow(diff.removed.concat(diff.changed.map((c) => c.before)), diff.added.concat(diff.changed.map((c) => c.after))));
  }

  private async applyNow(remove: readonly Lease[], add: readonly Lease[]): Promise<void> {
    this.generation++;
    if (remove.length > 0) {
      await programPeers(remove.map((l) => this.lines(l, "del")), "del", this.runner);
      for (const l of remove) {
        this.programmed.delete(formatCidr(l.subnet));
        this.failed.delete(formatCidr(l.subnet));
      }
    }
    if (add.length === 0) return;
    const failed = await programPeers(add.map((l) => this.lines(l, "add")), "add", this.runner);
    const undo: Lease[] = [];
    add.forEach((l, i) => {
      const k = formatCidr(l.subnet);
      const err = failed.get(i);
      if (err === undefined) {
        this.programmed.set(k, l);
        this.failed.delete(k);
      } else {
        this.failed.set(k, err);
        this.programmed.delete(k);
        undo.push(l);
      }
    });
    if (undo.length > 0) {
      this.log.error({ peers: undo.map((l) => formatCidr(l.subnet)), first: failed.values().next().value }, "programming peers failed; undone, will retry");
      await programPeers(undo.map((l) => this.lines(l, "del")), "del", this.runner);
    }
  }

  private lines(l: Lease, op: "add" | "del"): PeerLines {
    return peerLines(l, this.spec.name, this.direct(l), op);
  }

  /**
   * Recreates a missing device (in the queue), then compares the kernel with
   * `routes` outside the queue (reading 3 x N objects takes a while at 5,000
   * peers, and route changes must not wait behind it) and applies the
   * differences in the queue, unless a change was applied meanwhile: then the
   * reading is stale and it tries again.
   */
  async reconcile(routes: readonly Lease[]): Promise<number> {
    const dev = await readDevice(this.spec.name);
    if (!dev || !dev.flags?.includes("UP")) {
      await this.serial(async () => {
        this.log.warn({ device: this.spec.name }, dev ? "vxlan device is down; bringing it up" : "vxlan device disappeared; recreating it");
        await ensureDevice(this.spec, this.leaseAttrs.vtepMac, () => undefined);
        if (this.local) await setDeviceAddress(this.spec.name, this.local.subnet, this.config.network);
        // iproute2 caches interface indexes: a long-lived process would still use the old device's.
        this.sessions.ip.close();
        this.sessions.bridge.close();
        this.recreated++;
        this.programmed.clear();
        this.generation++;
      });
    }
    for (let attempt = 0; attempt < 3; attempt++) {
      const gen = this.generation;
      const { missing, stale } = await this.compare(routes);
      if (missing.length === 0 && stale.length === 0) return 0;
      const done = await this.serial(async () => {
        if (gen !== this.generation) return false;
        this.log.info({ missing: missing.length, stale: stale.length }, "reconciling vxlan peers with the kernel");
        await this.applyNow(stale, missing);
        return true;
      });
      if (done) return missing.length + stale.length;
    }
    return 0; // changes keep coming; the next reconcile looks again
  }

  /** What the kernel lacks and what it should not have, given `routes`. */
  private async compare(routes: readonly Lease[]): Promise<{ missing: Lease[]; stale: Lease[] }> {
    const k = await readPeers(this.spec.name);
    const viaIface = await this.directRoutes();
    const want = new Map(routes.map((l) => [formatCidr(l.subnet), l]));
    const missing: Lease[] = [];
    for (const l of routes) {
      if (this.direct(l)) {
        if (viaIface.get(formatCidr(l.subnet)) !== formatIpv4(l.attrs.publicIp)) missing.push(l);
        continue;
      }
      const gw = formatIpv4(l.subnet.addr);
      const mac = formatMac(l.attrs.vtepMac);
      const ok = k.neigh.get(gw) === mac && k.fdb.get(mac) === formatIpv4(l.attrs.publicIp) && k.routes.get(formatCidr(l.subnet)) === gw;
      if (!ok) missing.push(l);
    }
    // Stale: routes on the device (or DirectRouting routes) for subnets no lease names any more.
    const stale: Lease[] = [];
    for (const [dst, gw] of k.routes) {
      if (want.has(dst)) continue;
      const mac = k.neigh.get(gw) ?? "00:00:00:00:00:00";
      stale.push(this.programmed.get(dst) ?? synthetic(parsePrefix(dst), mac, k.fdb.get(mac) ?? "0.0.0.0"));
    }
    for (const [dst, gw] of viaIface) {
      if (!want.has(dst)) stale.push(this.programmed.get(dst) ?? synthetic(parsePrefix(dst), "00:00:00:00:00:00", gw));
    }
    return { missing, stale };
  }

  /** DirectRouting routes on the underlay interface: cluster-network subnet -> gateway. */
  private async directRoutes(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    if (!this.config.backend.directRouting) return out;
    const net = this.config.network;
    for (const r of await ipJson<{ dst: string; gateway?: string }>(["route", "show", "dev", this.iface.name])) {
      if (!r.gateway || r.dst === "default") continue;
      const p = parsePrefix(r.dst);
      if (p.len >= net.len && ((p.addr & maskOf(net.len)) >>> 0) === net.addr) out.set(formatCidr(p), r.gateway);
    }
    return out;
  }

  status(): NetworkStatus {
    return {
      backend: "vxlan",
      device: this.spec.name,
      mtu: this.mtu,
      peers: { programmed: this.programmed.size, failed: this.failed.size },
      counters: { device_recreated: this.recreated },
    };
  }

  /** Stops nothing in the kernel: the device, neighbours, FDB and routes stay for traffic to keep flowing. */
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

/** A lease rebuilt from kernel state alone, so that a stale entry can be removed. */
function synthetic(subnet: Ipv4Prefix, mac: string, dst: string): Lease {
  return {
    key: subnetKey(subnet),
    subnet,
    attrs: { publicIp: parseIpv4(dst), backendType: "vxlan", vni: 0, vtepMac: parseMac(mac) },
    leaseId: "0",
    modRevision: "0",
    createRevision: "0",
  };
}
