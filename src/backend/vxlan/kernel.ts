// Kernel objects of the vxlan backend, programmed exactly as flanneld does
// (pkg/backend/vxlan/device.go, vxlan_network.go):
//   device  weft.<VNI>: vxlan id <VNI> local <iface addr> dev <iface> dstport <port> nolearning
//   address <subnet network address>/32 on the device
//   per remote node:
//     neigh   <remote network address> lladdr <remote VTEP MAC> nud permanent
//     fdb     <remote VTEP MAC> dst <remote PublicIP> self permanent
//     route   <remote subnet> via <remote network address> dev weft.<VNI> onlink
//   with DirectRouting, for a node on our own L2 segment: only
//     route   <remote subnet> via <remote PublicIP> dev <iface>
// and for IPv6, as flanneld programs flannel-v6.<VNI>: a second device
// weft-v6.<VNI> over the IPv6 underlay (local <iface IPv6>, MTU underlay - 70),
// <IPv6 subnet network>/128 on it, and per remote node with IPv6 the same
// three entries from the lease's IPv6 subnet, BackendV6Data.VtepMAC and
// PublicIPv6.
import { formatCidr, formatIpv4, formatMac, parseMac } from "../../common/ipv4.js";
import { formatCidr6, formatIpv6 } from "../../common/ipv6.js";
import { run } from "../../common/exec.js";
import type { Lease } from "../../subnet/lease.js";
import { batch, outputLines, type BatchRunner } from "../../common/iproute.js";
import { readDevice, type LinkJson } from "../device.js";

export interface DeviceSpec {
  readonly name: string;
  /** The underlay family the device sends over (and the inner family it carries). */
  readonly family: 4 | 6;
  readonly vni: number;
  readonly port: number;
  /** The VXLAN source address, as text of the device's family. */
  readonly localAddr: string;
  readonly iface: string;
  readonly mtu: number;
}

/** One peer as one family's device sees it: the texts its kernel objects are written with. */
export interface PeerView {
  /** The remote subnet (the route's destination, and the peer's name). */
  readonly net: string;
  /** The remote subnet's network address: the onlink gateway and the neighbour. */
  readonly gw: string;
  readonly mac: string;
  /** The remote underlay address (FDB destination). */
  readonly pub: string;
}

/** A lease as the IPv4 device programs it. */
export function view4(l: Lease): PeerView {
  return { net: formatCidr(l.subnet), gw: formatIpv4(l.subnet.addr), mac: formatMac(l.attrs.vtepMac), pub: formatIpv4(l.attrs.publicIp) };
}

/** A lease as the IPv6 device programs it; undefined for a lease without IPv6. */
export function view6(l: Lease): PeerView | undefined {
  const s = l.subnet6;
  const v6 = l.attrs.v6;
  const pub = l.attrs.publicIpv6;
  if (!s || !v6 || pub === undefined) return undefined;
  return { net: formatCidr6(s), gw: formatIpv6(s.addr), mac: formatMac(v6.vtepMac), pub: formatIpv6(pub) };
}

/** Why an existing device cannot be reused, or undefined when it can. */
export function incompatibility(link: LinkJson, spec: DeviceSpec): string | undefined {
  const d = link.linkinfo?.info_data;
  if (link.linkinfo?.info_kind !== "vxlan") return `it is a ${link.linkinfo?.info_kind ?? "non-vxlan"} device`;
  if (d?.id !== spec.vni) return `its VNI is ${d?.id}, not ${spec.vni}`;
  if (d?.port !== spec.port) return `its port is ${d?.port}, not ${spec.port}`;
  const local = spec.family === 6 ? d?.local6 : d?.local;
  if (local !== spec.localAddr) return `its local address is ${local ?? "unset"}, not ${spec.localAddr}`;
  if (d?.link !== undefined && d.link !== spec.iface) return `it sends through ${d.link}, not ${spec.iface}`;
  if (d?.learning) return "it has learning on";
  return undefined;
}

/**
 * Creates the device (or adopts a compatible one, keeping its MAC, as
 * flannel does) and brings it up with the MTU. Returns the device's MAC.
 * A device created here is deleted again if a later step fails.
 */
export async function ensureDevice(spec: DeviceSpec, mac: Uint8Array, onRecreate: (why: string) => void): Promise<Uint8Array> {
  const existing = await readDevice(spec.name);
  let created = false;
  if (existing) {
    const why = incompatibility(existing, spec);
    if (why) {
      onRecreate(why);
      await run(["ip", "link", "del", "dev", spec.name]);
    }
  }
  if (!existing || incompatibility(existing, spec)) {
    await run(["ip", "link", "add", spec.name, "address", formatMac(mac), "mtu", String(spec.mtu), "type", "vxlan",
      "id", String(spec.vni), "local", spec.localAddr, "dev", spec.iface, "dstport", String(spec.port), "nolearning"]);
    created = true;
  }
  try {
    await run(["ip", "link", "set", "dev", spec.name, "mtu", String(spec.mtu), "up"]);
    const now = await readDevice(spec.name);
    if (!now?.address) throw new Error(`${spec.name} vanished while it was being set up`);
    return parseMac(now.address);
  } catch (e) {
    if (created) await run(["ip", "link", "del", "dev", spec.name]).catch(() => undefined);
    throw e;
  }
}

/** The commands that program (or remove) one peer. */
export interface PeerLines {
  readonly neigh: string | undefined;
  readonly fdb: string | undefined;
  readonly route: string;
}

export function peerLines(v: PeerView, dev: string, direct: string | undefined, op: "add" | "del"): PeerLines {
  const { gw, mac, pub, net } = v;
  if (direct) {
    return { neigh: undefined, fdb: undefined, route: op === "add" ? `route replace ${net} via ${pub} dev ${direct}` : `route del ${net} via ${pub} dev ${direct}` };
  }
  return op === "add"
    ? { neigh: `neigh replace ${gw} lladdr ${mac} dev ${dev} nud permanent`, fdb: `fdb replace ${mac} dev ${dev} dst ${pub} self permanent`, route: `route replace ${net} via ${gw} dev ${dev} onlink` }
    : { neigh: `neigh del ${gw} dev ${dev}`, fdb: `fdb del ${mac} dev ${dev} dst ${pub} self`, route: `route del ${net} dev ${dev}` };
}

/** Applies per-peer lines in flannel's order (neigh, fdb, route; removal in reverse); returns the indexes of peers that failed. */
export async function programPeers(lines: readonly PeerLines[], op: "add" | "del", runner: BatchRunner = batch): Promise<Map<number, string>> {
  const failed = new Map<number, string>();
  const stage = async (tool: "ip" | "bridge", pick: (p: PeerLines) => string | undefined): Promise<void> => {
    const idx: number[] = [];
    const cmds: string[] = [];
    lines.forEach((p, i) => {
      const c = pick(p);
      if (c && !failed.has(i)) {
        idx.push(i);
        cmds.push(c);
      }
    });
    const r = await runner(tool, cmds);
    for (const f of r.failed) {
      const peer = idx[f.line];
      if (peer !== undefined) failed.set(peer, f.error);
      else if (op === "add") idx.forEach((p) => failed.set(p, f.error)); // a failure we cannot place
    }
  };
  if (op === "add") {
    await stage("ip", (p) => p.neigh);
    await stage("bridge", (p) => p.fdb);
    await stage("ip", (p) => p.route);
  } else {
    // Removal is best effort: a missing object is already what we want.
    await stage("ip", (p) => p.route);
    await stage("ip", (p) => p.neigh);
    await stage("bridge", (p) => p.fdb);
  }
  return op === "add" ? failed : new Map();
}

/** What the kernel holds for the device: permanent neighbours, FDB destinations, routes. */
export interface KernelPeers {
  readonly neigh: Map<string, string>; // gateway IP -> MAC
  readonly fdb: Map<string, string>; // MAC -> dst
  readonly routes: Map<string, string>; // subnet -> gateway
}

/**
 * Reads the device's permanent neighbours, FDB destinations and routes from
 * iproute2's text output, line by line as it comes (the periodic reconcile
 * reads 3 x 20,000 of them at scale: as `-json` that was three multi-MB
 * strings and 60,000 objects on the agent's main thread each time). A line
 * that does not parse is skipped, as the JSON reading skipped entries
 * without the field it needed.
 */
export async function readPeers(dev: string, family: 4 | 6 = 4): Promise<KernelPeers> {
  const f = family === 6 ? "-6" : "-4";
  const peers: KernelPeers = { neigh: new Map(), fdb: new Map(), routes: new Map() };
  await Promise.all([
    outputLines(["ip", f, "neigh", "show", "dev", dev], (l) => neighLine(l, peers.neigh)),
    outputLines(["bridge", "fdb", "show", "dev", dev], (l) => fdbLine(l, peers.fdb)),
    outputLines(["ip", f, "route", "show", "dev", dev], (l) => routeLine(l, peers.routes)),
  ]);
  return peers;
}

/** `<dst> lladdr <mac> [router] ... PERMANENT`: a permanent neighbour, gateway -> MAC. */
export function neighLine(line: string, out: Map<string, string>): void {
  const t = line.trim().split(/\s+/);
  const at = t.indexOf("lladdr");
  const dst = t[0];
  const mac = at > 0 ? t[at + 1] : undefined;
  if (dst && mac && t.includes("PERMANENT")) out.set(dst, mac);
}

/** `<mac> dst <addr> [self] [permanent] ...`: an FDB entry with a destination, MAC -> dst. */
export function fdbLine(line: string, out: Map<string, string>): void {
  const t = line.trim().split(/\s+/);
  const at = t.indexOf("dst");
  const mac = t[0];
  const dst = at > 0 ? t[at + 1] : undefined;
  if (mac && dst) out.set(mac, dst);
}

/** `<dst> via [inet|inet6] <gateway> ...`: a route with a gateway, destination -> gateway. */
export function routeLine(line: string, out: Map<string, string>): void {
  if (/^\s/.test(line)) return; // a multipath route's nexthop lines: the JSON reading had no gateway for those either
  const t = line.trim().split(/\s+/);
  const at = t.indexOf("via");
  const dst = t[0];
  let gw = at > 0 ? t[at + 1] : undefined;
  if (gw === "inet" || gw === "inet6") gw = t[at + 2];
  if (dst && gw) out.set(dst, gw);
}
