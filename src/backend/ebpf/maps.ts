import { ipv6Bytes, ipv6FromBytes, maskOf6, type Ipv6Prefix } from "../../common/ipv6.js";
import { BPF_REASONS } from "../../dataplane/reasons.js";
import { bpf } from "./libbpf.js";

/**
 * The maps of bpf/lib/maps.h, from user space: byte layouts (mirrored from
 * the C structs: a test checks them against the kernel's map info) and
 * typed access. Addresses are host-order integers here and network order in
 * the maps.
 */
export const LAYOUT_VERSION = 2;

/** Counter slots, index = enum weft_reason (bpf/lib/common.h), named from the one vocabulary. */
export const REASONS = BPF_REASONS;
export type Reason = (typeof REASONS)[number];

/** name -> (key size, value size) as the C structs lay them out. */
export const MAP_LAYOUT = {
  weft_routes: { key: 8, value: 76 },
  weft_routes6: { key: 20, value: 76 },
  weft_nodes: { key: 4, value: 76 },
  weft_nodes6: { key: 16, value: 76 },
  weft_endpoints: { key: 4, value: 16 },
  weft_endpoints6: { key: 16, value: 16 },
  weft_config: { key: 4, value: 20 },
  weft_counters: { key: 4, value: 16 },
} as const;
export type MapName = keyof typeof MAP_LAYOUT;
export const MAP_NAMES = Object.keys(MAP_LAYOUT) as MapName[];

/**
 * A remote node (struct node_info): its underlay addresses with the VTEP MAC
 * of each, and the pod subnets it owns. The programs send a packet over the
 * underlay of its own family when the node has one, else over the other; an
 * underlay this node cannot reach must be left out (0 / undefined).
 */
export interface NodeInfo {
  /** IPv4 underlay address; 0 when none. */
  readonly underlay: number;
  /** VTEP MAC behind the IPv4 underlay. */
  readonly vtepMac: Uint8Array;
  /** IPv4 pod subnet; undefined (both) when the node has none (an IPv6-only node). */
  readonly subnet?: number | undefined;
  readonly prefixLen?: number | undefined;
  /** IPv6 underlay address, when the node has one (and it is reachable). */
  readonly underlay6?: bigint | undefined;
  /** VTEP MAC behind the IPv6 underlay (flannel's IPv6 device has its own); vtepMac when unset. */
  readonly vtepMac6?: Uint8Array | undefined;
  /** IPv6 pod subnet. */
  readonly subnet6?: Ipv6Prefix | undefined;
}

const NODE_SUBNET4 = 1;
const NODE_SUBNET6 = 2;

export interface EndpointInfo {
  readonly ifindex: number;
  readonly mac: Uint8Array;
  readonly hostMac: Uint8Array;
}

export interface ConfigInfo {
  readonly vxlanIfindex: number;
  readonly vni: number;
  readonly vtepMac: Uint8Array;
}

const mask = (len: number): number => (len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0);

export function routeKey(addr: number, len: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(len, 0);
  b.writeUInt32BE(addr >>> 0, 4);
  return b;
}

export function addrKey(addr: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(addr >>> 0, 0);
  return b;
}

export function routeKey6(p: Ipv6Prefix): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt32LE(p.len, 0);
  b.set(ipv6Bytes(p.addr & maskOf6(p.len)), 4);
  return b;
}

export function addrKey6(addr: bigint): Buffer {
  return Buffer.from(ipv6Bytes(addr));
}

/** struct node_info: underlay 0, vtep_mac 4, flags 10, subnet 12, mask 16, underlay6 20, vtep_mac6 36, subnet6 44, mask6 60. */
export function encodeNode(n: NodeInfo): Buffer {
  const b = Buffer.alloc(76);
  b.writeUInt32BE(n.underlay >>> 0, 0);
  b.set(n.vtepMac, 4);
  let flags = 0;
  if (n.subnet !== undefined && n.prefixLen !== undefined) {
    flags |= NODE_SUBNET4;
    b.writeUInt32BE((n.subnet & mask(n.prefixLen)) >>> 0, 12);
    b.writeUInt32BE(mask(n.prefixLen), 16);
  }
  if (n.underlay6 !== undefined) b.set(ipv6Bytes(n.underlay6), 20);
  b.set(n.vtepMac6 ?? n.vtepMac, 36);
  if (n.subnet6 !== undefined) {
    flags |= NODE_SUBNET6;
    b.set(ipv6Bytes(n.subnet6.addr & maskOf6(n.subnet6.len)), 44);
    b.set(ipv6Bytes(maskOf6(n.subnet6.len)), 60);
  }
  b.writeUInt8(flags, 10);
  return b;
}

/**
 * The entries of a pinned map of an older layout, rewritten in this build's
 * layout, or undefined when there is no rewrite (the agent refills the map).
 * Layout 1's node_info (20 bytes) is layout 2's first 20 bytes with no
 * IPv6 part: carried over, routes and nodes stay in place across the
 * upgrade instead of waiting for the agent's first apply.
 */
export function carryOver(name: MapName, fd: number, keySize: number, valueSize: number): [Buffer, Buffer][] | undefined {
  if ((name !== "weft_routes" && name !== "weft_nodes") || keySize !== MAP_LAYOUT[name].key || valueSize !== 20) return undefined;
  const out: [Buffer, Buffer][] = [];
  for (const k of bpf.keys(fd, keySize)) {
    const old = Buffer.alloc(20);
    if (!bpf.lookup(fd, k, old)) continue;
    const v = Buffer.alloc(MAP_LAYOUT[name].value);
    old.copy(v, 0, 0, 20);
    v.writeUInt8(NODE_SUBNET4, 10); // every layout-1 node had an IPv4 subnet
    old.copy(v, 36, 4, 10); // no IPv6 VTEP of its own
    out.push([k, v]);
  }
  return out;
}

export function decodeNode(b: Buffer): NodeInfo {
  const flags = b.readUInt8(10);
  const m = b.readUInt32BE(16);
  const u6 = ipv6FromBytes(b, 20);
  const m6 = ipv6FromBytes(b, 60);
  const len6 = m6 === 0n ? 0 : m6.toString(2).replace(/0+$/, "").length;
  return {
    underlay: b.readUInt32BE(0), vtepMac: new Uint8Array(b.subarray(4, 10)),
    ...(flags & NODE_SUBNET4 ? { subnet: b.readUInt32BE(12), prefixLen: m === 0 ? 0 : 32 - Math.log2((~m >>> 0) + 1) } : {}),
    ...(u6 !== 0n ? { underlay6: u6 } : {}),
    vtepMac6: new Uint8Array(b.subarray(36, 42)),
    ...(flags & NODE_SUBNET6 ? { subnet6: { addr: ipv6FromBytes(b, 44), len: len6 } } : {}),
  };
}

export function encodeEndpoint(e: EndpointInfo): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(e.ifindex, 0);
  b.set(e.mac, 4);
  b.set(e.hostMac, 10);
  return b;
}

export function decodeEndpoint(b: Buffer): EndpointInfo {
  return { ifindex: b.readUInt32LE(0), mac: new Uint8Array(b.subarray(4, 10)), hostMac: new Uint8Array(b.subarray(10, 16)) };
}

export function encodeConfig(c: ConfigInfo): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt32LE(LAYOUT_VERSION, 0);
  b.writeUInt32LE(c.vxlanIfindex, 4);
  b.writeUInt32LE(c.vni, 8);
  b.set(c.vtepMac, 12);
  return b;
}

/** Map fds by name, with typed operations. */
export class WeftMaps {
  constructor(readonly fds: Readonly<Record<MapName, number>>, private readonly cpus: number) {}

  setConfig(c: ConfigInfo): void {
    bpf.update(this.fds.weft_config, Buffer.alloc(4), encodeConfig(c), "writing weft_config");
  }

  /** The layout version a previous loader wrote (0 when never configured). */
  configLayout(): number {
    const v = Buffer.alloc(20);
    return bpf.lookup(this.fds.weft_config, Buffer.alloc(4), v) ? v.readUInt32LE(0) : 0;
  }

  setRoute(subnet: number, len: number, n: NodeInfo): void {
    bpf.update(this.fds.weft_routes, routeKey(subnet, len), encodeNode(n), "writing weft_routes");
  }

  deleteRoute(subnet: number, len: number): boolean {
    return bpf.delete(this.fds.weft_routes, routeKey(subnet, len));
  }

  /** The node of an IPv4 route (exact prefix), if programmed. */
  route(subnet: number, len: number): NodeInfo | undefined {
    const v = Buffer.alloc(MAP_LAYOUT.weft_routes.value);
    return bpf.lookup(this.fds.weft_routes, routeKey(subnet, len), v) ? decodeNode(v) : undefined;
  }

  setRoute6(p: Ipv6Prefix, n: NodeInfo): void {
    bpf.update(this.fds.weft_routes6, routeKey6(p), encodeNode(n), "writing weft_routes6");
  }

  deleteRoute6(p: Ipv6Prefix): boolean {
    return bpf.delete(this.fds.weft_routes6, routeKey6(p));
  }

  /** The node of an IPv6 route (exact prefix), if programmed. */
  route6(p: Ipv6Prefix): NodeInfo | undefined {
    const v = Buffer.alloc(MAP_LAYOUT.weft_routes6.value);
    return bpf.lookup(this.fds.weft_routes6, routeKey6(p), v) ? decodeNode(v) : undefined;
  }

  setNode(n: NodeInfo): void {
    bpf.update(this.fds.weft_nodes, addrKey(n.underlay), encodeNode(n), "writing weft_nodes");
  }

  deleteNode(underlay: number): boolean {
    return bpf.delete(this.fds.weft_nodes, addrKey(underlay));
  }

  /** The node entry under its IPv6 underlay address (n.underlay6 must be set). */
  setNode6(n: NodeInfo): void {
    if (n.underlay6 === undefined) throw new RangeError("setNode6: the node has no IPv6 underlay address");
    bpf.update(this.fds.weft_nodes6, addrKey6(n.underlay6), encodeNode(n), "writing weft_nodes6");
  }

  deleteNode6(underlay6: bigint): boolean {
    return bpf.delete(this.fds.weft_nodes6, addrKey6(underlay6));
  }

  node6(underlay6: bigint): NodeInfo | undefined {
    const v = Buffer.alloc(MAP_LAYOUT.weft_nodes6.value);
    return bpf.lookup(this.fds.weft_nodes6, addrKey6(underlay6), v) ? decodeNode(v) : undefined;
  }

  setEndpoint(addr: number, e: EndpointInfo): void {
    bpf.update(this.fds.weft_endpoints, addrKey(addr), encodeEndpoint(e), "writing weft_endpoints");
  }

  deleteEndpoint(addr: number): boolean {
    return bpf.delete(this.fds.weft_endpoints, addrKey(addr));
  }

  endpoint(addr: number): EndpointInfo | undefined {
    const v = Buffer.alloc(16);
    return bpf.lookup(this.fds.weft_endpoints, addrKey(addr), v) ? decodeEndpoint(v) : undefined;
  }

  setEndpoint6(addr: bigint, e: EndpointInfo): void {
    bpf.update(this.fds.weft_endpoints6, addrKey6(addr), encodeEndpoint(e), "writing weft_endpoints6");
  }

  deleteEndpoint6(addr: bigint): boolean {
    return bpf.delete(this.fds.weft_endpoints6, addrKey6(addr));
  }

  endpoint6(addr: bigint): EndpointInfo | undefined {
    const v = Buffer.alloc(16);
    return bpf.lookup(this.fds.weft_endpoints6, addrKey6(addr), v) ? decodeEndpoint(v) : undefined;
  }

  endpointAddrs6(): bigint[] {
    return bpf.keys(this.fds.weft_endpoints6, 16).map((k) => ipv6FromBytes(k));
  }

  nodeAddrs6(): bigint[] {
    return bpf.keys(this.fds.weft_nodes6, 16).map((k) => ipv6FromBytes(k));
  }

  routes6(): Ipv6Prefix[] {
    return bpf.keys(this.fds.weft_routes6, 20).map((k) => ({ addr: ipv6FromBytes(k, 4), len: k.readUInt32LE(0) }));
  }

  node(underlay: number): NodeInfo | undefined {
    const v = Buffer.alloc(MAP_LAYOUT.weft_nodes.value);
    return bpf.lookup(this.fds.weft_nodes, addrKey(underlay), v) ? decodeNode(v) : undefined;
  }

  /** Every key of a map, as host-order addresses (nodes, endpoints) or [addr, len] (routes). */
  endpointAddrs(): number[] {
    return bpf.keys(this.fds.weft_endpoints, 4).map((k) => k.readUInt32BE(0));
  }

  nodeAddrs(): number[] {
    return bpf.keys(this.fds.weft_nodes, 4).map((k) => k.readUInt32BE(0));
  }

  routes(): [number, number][] {
    return bpf.keys(this.fds.weft_routes, 8).map((k) => [k.readUInt32BE(4), k.readUInt32LE(0)]);
  }

  /** Packets and bytes per reason, summed over CPUs. */
  counters(): Record<Reason, { packets: bigint; bytes: bigint }> {
    const out = {} as Record<Reason, { packets: bigint; bytes: bigint }>;
    const v = Buffer.alloc(16 * this.cpus);
    REASONS.forEach((name, i) => {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(i);
      let packets = 0n;
      let bytes = 0n;
      if (bpf.lookup(this.fds.weft_counters, k, v)) {
        for (let c = 0; c < this.cpus; c++) {
          packets += v.readBigUInt64LE(c * 16);
          bytes += v.readBigUInt64LE(c * 16 + 8);
        }
      }
      out[name] = { packets, bytes };
    });
    return out;
  }
}

/** Possible CPUs (per-CPU map values have one slot each), from /sys. */
export function possibleCpus(text: string): number {
  let n = 0;
  for (const part of text.trim().split(",")) {
    const [a, b] = part.split("-").map(Number);
    n += b === undefined ? 1 : b - (a ?? 0) + 1;
  }
  return n;
}
