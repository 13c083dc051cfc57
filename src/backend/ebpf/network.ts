import { existsSync, readFileSync } from "node:fs";
import { formatCidr, formatIpv4, formatMac, parseIpv4, parseMac } from "../../common/ipv4.js";
import { formatCidr6, formatIpv6, isUnicastIpv6, parseCidr6, parseIpv6, type Ipv6Prefix } from "../../common/ipv6.js";
import { AddressError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import type { RouteDiff } from "../../routes/table.js";
import type { Lease, LeaseAttrs } from "../../subnet/lease.js";
import type { NetworkConfig } from "../../subnet/network-config.js";
import { writeFileAtomic } from "../../common/fs-atomic.js";
import { ipJson } from "../../common/iproute.js";
import { setDeviceAddress } from "../device.js";
import type { EndpointKey, EndpointSpec, Network, NetworkStatus } from "../types.js";
import { ensureExternalDevice, hostRoutes6, setClusterRoute, setDeviceAddress6, setHostRoutes6, type ExternalDeviceSpec } from "./device.js";
import type { Datapath } from "./loader.js";
import { REASONS, type NodeInfo } from "./maps.js";

/** A local pod as kept in the state dir: one address per family it has (files written before IPv6 have `ip` only). */
interface StoredEndpoint {
  readonly ip?: string | undefined;
  readonly ip6?: string | undefined;
  readonly ifname: string;
  readonly mac: string;
}

interface Link {
  readonly ifname: string;
  readonly ifindex: number;
  readonly address: string;
}

/** A lease's IPv4 subnet, unless it has none (an IPv6-only lease carries 0.0.0.0/0). */
function hasIpv4(l: Lease): boolean {
  return !(l.subnet.addr === 0 && l.subnet.len === 0);
}

const idOf = (e: StoredEndpoint): string => e.ip ?? e.ip6 ?? e.ifname;

/**
 * The ebpf backend's event loop: route-table diffs become map updates
 * (weft_routes / weft_routes6: pod subnet -> node; weft_nodes / weft_nodes6:
 * underlay -> node), local pods become endpoint entries (one per address
 * family) plus a from-pod program on their veth. The endpoint list is kept
 * in the state dir too, so maps can be rebuilt (migration, a deleted map)
 * without asking the CNI side again.
 */
export class EbpfNetwork implements Network {
  readonly backend = "ebpf" as const;
  readonly mtu: number;
  private local: Lease | undefined;
  /** Programmed leases by etcd key (an IPv6-only lease's IPv4 subnet, 0.0.0.0/0, names nothing). */
  private readonly programmed = new Map<string, Lease>();
  /**
   * Keys of the programmed leases by underlay address (IPv6 as text: V8
   * hashes a BigInt by its low 64 bits only): a removal finds another lease
   * behind the same address without a pass over every lease.
   */
  private readonly byUnderlay = new Map<number, Set<string>>();
  private readonly byUnderlay6 = new Map<string, Set<string>>();
  private readonly endpoints = new Map<string, StoredEndpoint>();
  recreated = 0;
  /** Endpoint additions refused (an address a pod cannot have). */
  rejectedEndpoints = 0;

  constructor(
    private readonly dp: Datapath,
    private readonly spec: ExternalDeviceSpec,
    private ifindex: number,
    readonly leaseAttrs: LeaseAttrs,
    private readonly config: NetworkConfig,
    private readonly endpointsFile: string,
    private readonly log: Logger,
  ) {
    this.mtu = spec.mtu;
    if (existsSync(endpointsFile)) {
      for (const e of JSON.parse(readFileSync(endpointsFile, "utf8")) as StoredEndpoint[]) {
        if (e.ip === undefined && e.ip6 === undefined) continue;
        this.endpoints.set(idOf(e), e);
      }
    }
  }

  /**
   * Config map, overlay programs on the device, and every known pod's
   * entries and program again: after an upgrade the pods' veths get this
   * build's program, which uses this build's (possibly migrated) maps.
   */
  async start(): Promise<void> {
    this.dp.maps.setConfig({ vxlanIfindex: this.ifindex, vni: this.config.backend.vni, vtepMac: this.leaseAttrs.vtepMac });
    this.dp.attach("weft_from_overlay", this.ifindex, "ingress");
    this.dp.attach("weft_to_overlay", this.ifindex, "egress");
    const links = await this.links();
    for (const e of this.endpoints.values()) {
      const link = links.get(e.ifname);
      if (link) this.installEndpoint(e, link);
      else this.log.info({ ip: e.ip, ip6: e.ip6, ifname: e.ifname }, "endpoint's interface is gone; reconcile will forget it");
    }
    this.dp.finishMigration();
  }

  async configureLocal(lease: Lease): Promise<void> {
    this.local = lease;
    if (hasIpv4(lease)) {
      await setDeviceAddress(this.spec.name, lease.subnet, this.config.network);
      await setClusterRoute(this.spec.name, this.config.network, lease.subnet.addr);
    }
    if (lease.subnet6) await setDeviceAddress6(this.spec.name, lease.subnet6);
  }

  /**
   * A peer as the programs see it. An underlay family this node has no
   * address of is left out, so the programs carry both inner families over
   * the one both ends have.
   */
  private node(l: Lease): NodeInfo {
    const a = l.attrs;
    const v4 = hasIpv4(l);
    return {
      underlay: this.leaseAttrs.publicIp !== 0 ? a.publicIp : 0,
      vtepMac: a.vtepMac,
      subnet: v4 ? l.subnet.addr : undefined,
      prefixLen: v4 ? l.subnet.len : undefined,
      underlay6: this.leaseAttrs.publicIpv6 !== undefined ? a.publicIpv6 : undefined,
      vtepMac6: a.v6?.vtepMac ?? a.vtepMac,
      subnet6: l.subnet6,
    };
  }

  async apply(diff: RouteDiff): Promise<void> {
    const m = this.dp.maps;
    const add6: Ipv6Prefix[] = [];
    const del6: Ipv6Prefix[] = [];
    for (const l of [...diff.removed, ...diff.changed.map((c) => c.before)]) {
      if (hasIpv4(l)) m.deleteRoute(l.subnet.addr, l.subnet.len);
      if (l.subnet6) {
        m.deleteRoute6(l.subnet6);
        del6.push(l.subnet6);
      }
      this.programmed.delete(l.key);
      // Another lease may share an underlay address (it then keeps the node entry).
      const n = this.node(l);
      if (n.underlay !== 0) {
        const other = this.otherAt(this.byUnderlay, n.underlay, l.key);
        if (other) m.setNode(this.node(other));
        else m.deleteNode(n.underlay);
      }
      if (n.underlay6 !== undefined) {
        const other = this.otherAt(this.byUnderlay6, formatIpv6(n.underlay6), l.key);
        if (other) m.setNode6(this.node(other));
        else m.deleteNode6(n.underlay6);
      }
    }
    for (const l of [...diff.added, ...diff.changed.map((c) => c.after)]) {
      const n = this.node(l);
      if (hasIpv4(l)) m.setRoute(l.subnet.addr, l.subnet.len, n);
      if (l.subnet6) {
        m.setRoute6(l.subnet6, n);
        add6.push(l.subnet6);
      }
      if (n.underlay !== 0) m.setNode(n);
      if (n.underlay6 !== undefined) m.setNode6(n);
      this.programmed.set(l.key, l);
      if (n.underlay !== 0) addTo(this.byUnderlay, n.underlay, l.key);
      if (n.underlay6 !== undefined) addTo(this.byUnderlay6, formatIpv6(n.underlay6), l.key);
    }
    const kept = new Set(add6.map(formatCidr6));
    await setHostRoutes6(this.spec.name, add6, del6.filter((p) => !kept.has(formatCidr6(p))));
  }

  /** Drops `key` from the leases behind `addr`; returns another programmed lease still behind it, if any. */
  private otherAt<K>(index: Map<K, Set<string>>, addr: K, key: string): Lease | undefined {
    const keys = index.get(addr);
    keys?.delete(key);
    if (!keys || keys.size === 0) {
      index.delete(addr);
      return undefined;
    }
    for (const k of keys) {
      const l = this.programmed.get(k);
      if (l) return l;
    }
    return undefined;
  }

  /** A local pod: its addresses (either family or both), host-side veth and MAC. */
  async addEndpoint(e: EndpointSpec): Promise<void> {
    if (e.ip6 !== undefined && !isUnicastIpv6(e.ip6)) {
      this.rejectedEndpoints++;
      throw new AddressError(`endpoint ${e.ifname}: ${formatIpv6(e.ip6)} is not an address a pod can have (multicast, link-local, loopback, unspecified or IPv4-mapped)`, {
        hint: "give the pod a global or unique-local IPv6 address from the node's IPv6 subnet",
      });
    }
    if (e.ip === undefined && e.ip6 === undefined) {
      this.rejectedEndpoints++;
      throw new AddressError(`endpoint ${e.ifname} has no address`, { hint: "pass the pod's IPv4 address, its IPv6 address, or both" });
    }
    const stored: StoredEndpoint = {
      ...(e.ip !== undefined ? { ip: formatIpv4(e.ip) } : {}), ...(e.ip6 !== undefined ? { ip6: formatIpv6(e.ip6) } : {}),
      ifname: e.ifname, mac: formatMac(e.mac),
    };
    const link = (await this.links()).get(e.ifname);
    if (!link) throw new Error(`no interface ${e.ifname} for endpoint ${stored.ip ?? stored.ip6}`);
    // An address that moved to this pod leaves its former entry (the map entry is overwritten below).
    for (const [id, old] of this.endpoints) {
      if ((old.ip !== undefined && old.ip === stored.ip) || (old.ip6 !== undefined && old.ip6 === stored.ip6)) this.endpoints.delete(id);
    }
    this.installEndpoint(stored, link);
    this.endpoints.set(idOf(stored), stored);
    this.saveEndpoints();
  }

  private installEndpoint(e: StoredEndpoint, link: Link): void {
    const info = { ifindex: link.ifindex, mac: parseMac(e.mac), hostMac: parseMac(link.address) };
    if (e.ip !== undefined) this.dp.maps.setEndpoint(parseIpv4(e.ip), info);
    if (e.ip6 !== undefined) this.dp.maps.setEndpoint6(parseIpv6(e.ip6), info);
    this.dp.attach("weft_from_pod", link.ifindex, "ingress");
  }

  private async links(): Promise<Map<string, Link>> {
    return new Map((await ipJson<Link>(["link", "show"])).map((l) => [l.ifname, l]));
  }

  /** A pod went away: every address of it (the key names it by any of them) leaves the maps, its veth loses the program. */
  async removeEndpoint(k: EndpointKey): Promise<boolean> {
    const ip4s = new Set<number>(k.ip !== undefined ? [k.ip] : []);
    const ip6s = new Set<bigint>(k.ip6 !== undefined ? [k.ip6] : []);
    const key4 = k.ip !== undefined ? formatIpv4(k.ip) : undefined;
    const key6 = k.ip6 !== undefined ? formatIpv6(k.ip6) : undefined;
    let found = false;
    for (const [id, e] of this.endpoints) {
      if ((key4 === undefined || e.ip !== key4) && (key6 === undefined || e.ip6 !== key6)) continue;
      if (e.ip !== undefined) ip4s.add(parseIpv4(e.ip));
      if (e.ip6 !== undefined) ip6s.add(parseIpv6(e.ip6));
      this.endpoints.delete(id);
      found = true;
    }
    const m = this.dp.maps;
    const ifindexes = new Set<number>();
    for (const a of ip4s) {
      const cur = m.endpoint(a);
      if (cur) ifindexes.add(cur.ifindex);
      if (m.deleteEndpoint(a)) found = true;
    }
    for (const a of ip6s) {
      const cur = m.endpoint6(a);
      if (cur) ifindexes.add(cur.ifindex);
      if (m.deleteEndpoint6(a)) found = true;
    }
    for (const i of ifindexes) this.dp.detach("weft_from_pod", i);
    this.saveEndpoints();
    return found;
  }

  private saveEndpoints(): void {
    writeFileAtomic(this.endpointsFile, `${JSON.stringify([...this.endpoints.values()], null, 1)}\n`, 0o600);
  }

  /**
   * Recreates a deleted device (and re-attaches the overlay programs), then
   * makes the maps and the IPv6 host routes match `routes` and the endpoint
   * list; endpoints whose veth is gone are dropped. Returns how many entries
   * it fixed.
   */
  async reconcile(routes: readonly Lease[]): Promise<number> {
    let fixed = 0;
    const [dev] = await ipJson<{ ifindex: number; flags?: string[] }>(["link", "show", "dev", this.spec.name]).catch(() => []);
    if (!dev || !dev.flags?.includes("UP") || dev.ifindex !== this.ifindex || !this.dp.isAttached("weft_from_overlay", this.ifindex)) {
      this.log.warn({ device: this.spec.name }, "overlay device or its programs are missing; recreating");
      const r = await ensureExternalDevice(this.spec, this.leaseAttrs.vtepMac, () => undefined);
      this.dp.detach("weft_from_overlay", this.ifindex);
      this.dp.detach("weft_to_overlay", this.ifindex);
      this.ifindex = r.ifindex;
      await this.start();
      if (this.local) await this.configureLocal(this.local);
      this.recreated++;
      fixed++;
    }
    fixed += await this.reconcileRoutes(routes);
    fixed += await this.reconcileEndpoints();
    if (fixed > 0) this.log.info({ fixed }, "reconciled the BPF maps with the route table");
    return fixed;
  }

  private async reconcileRoutes(routes: readonly Lease[]): Promise<number> {
    const m = this.dp.maps;
    const with4 = routes.filter(hasIpv4);
    const want4 = new Set(with4.map((l) => formatCidr(l.subnet)));
    const have4 = new Set(m.routes().map(([a, len]) => formatCidr({ addr: a, len })));
    const stale4 = m.routes().filter(([a, len]) => !want4.has(formatCidr({ addr: a, len })));
    for (const [a, len] of stale4) m.deleteRoute(a, len);
    const with6 = routes.filter((l): l is Lease & { subnet6: Ipv6Prefix } => l.subnet6 !== undefined);
    const want6 = new Set(with6.map((l) => formatCidr6(l.subnet6)));
    const have6 = new Set(m.routes6().map(formatCidr6));
    const stale6 = m.routes6().filter((p) => !want6.has(formatCidr6(p)));
    for (const p of stale6) m.deleteRoute6(p);
    const nodes = routes.map((l) => this.node(l));
    const underlays = new Set(nodes.map((n) => n.underlay));
    for (const u of m.nodeAddrs()) if (!underlays.has(u)) m.deleteNode(u);
    const underlays6 = new Set(nodes.map((n) => n.underlay6));
    for (const u of m.nodeAddrs6()) if (!underlays6.has(u)) m.deleteNode6(u);
    const missing = routes.filter((l) => (hasIpv4(l) && !have4.has(formatCidr(l.subnet))) || (l.subnet6 && !have6.has(formatCidr6(l.subnet6))));
    if (missing.length > 0) await this.apply({ added: missing, removed: [], changed: [] });
    // Host routes into the device (a recreated device lost them; someone may have deleted one).
    const hostHave = new Set((await hostRoutes6(this.spec.name)).map(formatCidr6));
    const hostMissing = with6.map((l) => l.subnet6).filter((p) => !hostHave.has(formatCidr6(p)) && !missing.some((l) => l.subnet6 === p));
    const hostStale = [...hostHave].filter((c) => !want6.has(c));
    if (hostMissing.length + hostStale.length > 0) await setHostRoutes6(this.spec.name, hostMissing, hostStale.map((c) => parseCidr6(c)));
    return missing.length + stale4.length + stale6.length + hostMissing.length + hostStale.length;
  }

  /** Endpoints: the list is the truth; a pod whose veth vanished is forgotten. */
  private async reconcileEndpoints(): Promise<number> {
    const m = this.dp.maps;
    let fixed = 0;
    const links = await this.links();
    for (const e of [...this.endpoints.values()]) {
      const link = links.get(e.ifname);
      if (!link) {
        this.log.info({ ip: e.ip, ip6: e.ip6, ifname: e.ifname }, "endpoint's interface is gone; removing it");
        await this.removeEndpoint({ ip: e.ip !== undefined ? parseIpv4(e.ip) : undefined, ip6: e.ip6 !== undefined ? parseIpv6(e.ip6) : undefined });
        fixed++;
      } else if ((e.ip !== undefined && !m.endpoint(parseIpv4(e.ip))) || (e.ip6 !== undefined && !m.endpoint6(parseIpv6(e.ip6)))) {
        this.installEndpoint(e, link);
        fixed++;
      }
    }
    const known4 = new Set([...this.endpoints.values()].map((e) => e.ip));
    const known6 = new Set([...this.endpoints.values()].map((e) => e.ip6));
    for (const a of m.endpointAddrs()) {
      if (!known4.has(formatIpv4(a))) {
        await this.removeEndpoint({ ip: a });
        fixed++;
      }
    }
    for (const a of m.endpointAddrs6()) {
      if (!known6.has(formatIpv6(a))) {
        await this.removeEndpoint({ ip6: a });
        fixed++;
      }
    }
    return fixed;
  }

  status(): NetworkStatus {
    const c = this.dp.maps.counters();
    const counters: Record<string, number> = {
      device_recreated: this.recreated, endpoints: this.endpoints.size, endpoints_rejected: this.rejectedEndpoints,
    };
    for (const r of REASONS) counters[`bpf_${r}`] = Number(c[r].packets);
    return {
      backend: "ebpf", device: this.spec.name, mtu: this.mtu, peers: { programmed: this.programmed.size, failed: 0 }, counters,
      paths: { attach: this.dp.attachment().mode },
    };
  }

  /** Leaves programs attached and maps pinned: traffic flows while the agent is away. */
  async close(): Promise<void> {
    this.dp.close();
  }
}

function addTo<K>(index: Map<K, Set<string>>, addr: K, key: string): void {
  const keys = index.get(addr);
  if (keys) keys.add(key);
  else index.set(addr, new Set([key]));
}
