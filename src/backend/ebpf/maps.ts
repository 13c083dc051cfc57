import { BPF_REASONS } from "../../dataplane/reasons.js";
import { bpf } from "./libbpf.js";

/**
 * The maps of bpf/lib/maps.h, from user space: byte layouts (mirrored from
 * the C structs: a test checks them against the kernel's map info) and
 * typed access. Addresses are host-order integers here and network order in
 * the maps.
 */
export const LAYOUT_VERSION = 1;

/** Counter slots, index = enum weft_reason (bpf/lib/common.h), named from the one vocabulary. */
export const REASONS = BPF_REASONS;
export type Reason = (typeof REASONS)[number];

/** name -> (key size, value size) as the C structs lay them out. */
export const MAP_LAYOUT = {
  weft_routes: { key: 8, value: 20 },
  weft_nodes: { key: 4, value: 20 },
  weft_endpoints: { key: 4, value: 16 },
  weft_config: { key: 4, value: 20 },
  weft_counters: { key: 4, value: 16 },
} as const;
export type MapName = keyof typeof MAP_LAYOUT;
export const MAP_NAMES = Object.keys(MAP_LAYOUT) as MapName[];

export interface NodeInfo {
  readonly underlay: number;
  readonly vtepMac: Uint8Array;
  readonly subnet: number;
  readonly prefixLen: number;
}

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

export function encodeNode(n: NodeInfo): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt32BE(n.underlay >>> 0, 0);
  b.set(n.vtepMac, 4);
  b.writeUInt32BE((n.subnet & mask(n.prefixLen)) >>> 0, 12);
  b.writeUInt32BE(mask(n.prefixLen), 16);
  return b;
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

  setNode(n: NodeInfo): void {
    bpf.update(this.fds.weft_nodes, addrKey(n.underlay), encodeNode(n), "writing weft_nodes");
  }

  deleteNode(underlay: number): boolean {
    return bpf.delete(this.fds.weft_nodes, addrKey(underlay));
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
