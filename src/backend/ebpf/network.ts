import { existsSync, readFileSync } from "node:fs";
import { formatCidr, formatIpv4, formatMac, parseIpv4, parseMac } from "../../common/ipv4.js";
import type { Logger } from "../../common/log.js";
import type { RouteDiff } from "../../routes/table.js";
import type { Lease, LeaseAttrs } from "../../subnet/lease.js";
import type { NetworkConfig } from "../../subnet/network-config.js";
import { writeFileAtomic } from "../../common/fs-atomic.js";
import { ipJson } from "../../common/iproute.js";
import { setDeviceAddress } from "../device.js";
import type { EndpointKey, EndpointSpec, Network, NetworkStatus } from "../types.js";
import { ensureExternalDevice, setClusterRoute, type ExternalDeviceSpec } from "./device.js";
import type { Datapath } from "./loader.js";
import { REASONS, type NodeInfo } from "./maps.js";

interface StoredEndpoint {
  readonly ip: string;
  readonly ifname: string;
  readonly mac: string;
}

/**
 * The ebpf backend's event loop: route-table diffs become map updates
 * (weft_routes: pod subnet -> node; weft_nodes: underlay -> node), local
 * pods become endpoint entries plus a from-pod program on their veth. The
 * endpoint list is kept in the state dir too, so maps can be rebuilt
 * (migration, a deleted map) without asking the CNI side again.
 */
export class EbpfNetwork implements Network {
  readonly backend = "ebpf" as const;
  readonly mtu: number;
  private local: Lease | undefined;
  private readonly programmed = new Map<string, Lease>();
  private readonly endpoints = new Map<string, StoredEndpoint>();
  recreated = 0;

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
      for (const e of JSON.parse(readFileSync(endpointsFile, "utf8")) as StoredEndpoint[]) this.endpoints.set(e.ip, e);
    }
  }

  /** Config map, overlay programs on the device. */
  async start(): Promise<void> {
    this.dp.maps.setConfig({ vxlanIfindex: this.ifindex, vni: this.config.backend.vni, vtepMac: this.leaseAttrs.vtepMac });
    this.dp.attach("weft_from_overlay", this.ifindex, "ingress");
    this.dp.attach("weft_to_overlay", this.ifindex, "egress");
    if (this.dp.migrated.includes("weft_endpoints")) for (const e of this.endpoints.values()) await this.installEndpoint(e);
    this.dp.finishMigration();
  }

  async configureLocal(lease: Lease): Promise<void> {
    this.local = lease;
    await setDeviceAddress(this.spec.name, lease.subnet, this.config.network);
    await setClusterRoute(this.spec.name, this.config.network, lease.subnet.addr);
  }

  private node(l: Lease): NodeInfo {
    return { underlay: l.attrs.publicIp, vtepMac: l.attrs.vtepMac, subnet: l.subnet.addr, prefixLen: l.subnet.len };
  }

  async apply(diff: RouteDiff): Promise<void> {
    const m = this.dp.maps;
    for (const l of [...diff.removed, ...diff.changed.map((c) => c.before)]) {
      m.deleteRoute(l.subnet.addr, l.subnet.len);
      this.programmed.delete(formatCidr(l.subnet));
      // Another lease may share the underlay address (it then keeps the node entry).
      const other = [...this.programmed.values()].find((p) => p.attrs.publicIp === l.attrs.publicIp);
      if (other) m.setNode(this.node(other));
      else m.deleteNode(l.attrs.publicIp);
    }
    for (const l of [...diff.added, ...diff.changed.map((c) => c.after)]) {
      m.setRoute(l.subnet.addr, l.subnet.len, this.node(l));
      m.setNode(this.node(l));
      this.programmed.set(formatCidr(l.subnet), l);
    }
  }

  /** A local pod: its address, host-side veth and MAC. */
  async addEndpoint(e: EndpointSpec): Promise<void> {
    if (e.ip === undefined) return; // IPv4 only here so far
    const stored = { ip: formatIpv4(e.ip), ifname: e.ifname, mac: formatMac(e.mac) };
    await this.installEndpoint(stored);
    this.endpoints.set(stored.ip, stored);
    this.saveEndpoints();
  }

  private async installEndpoint(e: StoredEndpoint): Promise<void> {
    const [link] = await ipJson<{ ifindex: number; address: string }>(["link", "show", "dev", e.ifname]);
    if (!link) throw new Error(`no interface ${e.ifname} for endpoint ${e.ip}`);
    this.dp.maps.setEndpoint(parseIpv4(e.ip), { ifindex: link.ifindex, mac: parseMac(e.mac), hostMac: parseMac(link.address) });
    this.dp.attach("weft_from_pod", link.ifindex, "ingress");
  }

  async removeEndpoint(k: EndpointKey): Promise<boolean> {
    const ip = k.ip;
    if (ip === undefined) return false;
    const key = formatIpv4(ip);
    const e = this.endpoints.get(key);
    const cur = this.dp.maps.endpoint(ip);
    this.dp.maps.deleteEndpoint(ip);
    if (cur) this.dp.detach("weft_from_pod", cur.ifindex);
    this.endpoints.delete(key);
    this.saveEndpoints();
    return e !== undefined || cur !== undefined;
  }

  private saveEndpoints(): void {
    writeFileAtomic(this.endpointsFile, `${JSON.stringify([...this.endpoints.values()], null, 1)}\n`, 0o600);
  }

  /**
   * Recreates a deleted device (and re-attaches the overlay programs), then
   * makes the maps match `routes` and the endpoint list; endpoints whose veth
   * is gone are dropped. Returns how many entries it fixed.
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
    const m = this.dp.maps;
    const want = new Map(routes.map((l) => [formatCidr(l.subnet), l]));
    const have = new Set(m.routes().map(([a, len]) => formatCidr({ addr: a, len })));
    const missing = routes.filter((l) => !have.has(formatCidr(l.subnet)));
    const stale = m.routes().filter(([a, len]) => !want.has(formatCidr({ addr: a, len })));
    for (const [a, len] of stale) m.deleteRoute(a, len);
    const underlays = new Set(routes.map((l) => l.attrs.publicIp));
    for (const u of m.nodeAddrs()) if (!underlays.has(u)) m.deleteNode(u);
    if (missing.length > 0) await this.apply({ added: missing, removed: [], changed: [] });
    fixed += missing.length + stale.length;
    // Endpoints: the list is the truth; a pod whose veth vanished is forgotten.
    const links = new Set((await ipJson<{ ifname: string }>(["link", "show"])).map((l) => l.ifname));
    for (const e of [...this.endpoints.values()]) {
      if (!links.has(e.ifname)) {
        this.log.info({ ip: e.ip, ifname: e.ifname }, "endpoint's interface is gone; removing it");
        await this.removeEndpoint({ ip: parseIpv4(e.ip) });
        fixed++;
      } else if (!m.endpoint(parseIpv4(e.ip))) {
        await this.installEndpoint(e);
        fixed++;
      }
    }
    for (const a of m.endpointAddrs()) {
      if (!this.endpoints.has(formatIpv4(a))) {
        await this.removeEndpoint({ ip: a });
        fixed++;
      }
    }
    if (fixed > 0) this.log.info({ fixed }, "reconciled the BPF maps with the route table");
    return fixed;
  }

  status(): NetworkStatus {
    const c = this.dp.maps.counters();
    const counters: Record<string, number> = { device_recreated: this.recreated, endpoints: this.endpoints.size };
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
