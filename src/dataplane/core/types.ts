import type { Ipv4Prefix } from "../../common/ipv4.js";
import type { Ipv6Prefix } from "../../common/ipv6.js";

/** Sizes of the WASM core's fixed regions, chosen once at creation. */
export interface CoreLimits {
  /** Peer slots (next-hop indexes 0..maxPeers-1). */
  readonly maxPeers: number;
  /** Prefixes the LPM table can hold. */
  readonly maxRules: number;
  /** IPv6 prefixes the IPv6 LPM table can hold. */
  readonly maxRules6: number;
  /** Descriptors per encap/decap/lookup batch. */
  readonly maxBatch: number;
  /** Packet slots in the packet region. */
  readonly slots: number;
  /** Bytes per slot (multiple of 64). */
  readonly slotSize: number;
  /** Free bytes kept in front of each slot's packet for the headers encap writes. */
  readonly headroom: number;
  /** tun path: units per batch (0: the core has no unit, iovec and arena regions). */
  readonly units: number;
}

/** This node's tunnel end: what encap writes and decap expects. */
export interface TunnelConfig {
  /** VXLAN network identifier, 0..2^24-1 (flannel default 1). */
  readonly vni: number;
  /** This node's underlay IPv4 (host-order integer): outer source in frame mode. */
  readonly localIp: number;
  /** This node's VTEP MAC: inner source on encap, required inner destination on decap. */
  readonly localMac: Uint8Array;
  /** UDP destination port (flannel and Linux default 8472; IANA 4789). */
  readonly dstPort: number;
  /** Source ports are spread over [srcPortMin, srcPortMax). */
  readonly srcPortMin: number;
  readonly srcPortMax: number;
  /** Outer IPv4 TTL in frame mode. */
  readonly ttl: number;
  /** Compute the outer UDP checksum in frame mode (Linux vxlan sends zero by default). */
  readonly udpChecksum: boolean;
  /** Set DF on the outer IPv4 header in frame mode. */
  readonly dontFragment: boolean;
  /** Seed of the flow hash that picks source ports. */
  readonly hashSeed: number;
  /** The underlay is IPv6: encap sends to peers' `underlay6` (frame mode: outer IPv6 + UDP with a checksum). */
  readonly outer6?: boolean;
  /** Dual-stack underlay: inner IPv4 over IPv4, inner IPv6 over the peers' `underlay6` (flannel's two devices). */
  readonly split6?: boolean;
  /** This node's IPv6 underlay address: outer source in frame mode over IPv6. */
  readonly localIp6?: bigint;
  /** Outer IPv6 hop limit in frame mode (default 64). */
  readonly hopLimit?: number;
  /** Carry the flow hash in the outer IPv6 flow label (RFC 6438); else 0. */
  readonly flowLabel?: boolean;
}

/** A node we tunnel to, stored at a next-hop index. */
export interface PeerEntry {
  /** The node's underlay IPv4 (where its VXLAN traffic comes from and goes to). */
  readonly underlay: number;
  /** The node's VTEP MAC (inner destination MAC for frames we send it). */
  readonly vtepMac: Uint8Array;
  /** The pod subnet the node owns: inner sources it may send from. */
  readonly subnet: Ipv4Prefix;
  /** This node itself: its subnet is delivered locally, never encapsulated. */
  readonly local?: boolean;
  /** The node's IPv6 underlay address (where its VXLAN comes from and goes to over IPv6). */
  readonly underlay6?: bigint;
  /** The node's IPv6 VTEP MAC (BackendV6Data), the inner destination of IPv6 frames to it; else `vtepMac`. */
  readonly vtepMac6?: Uint8Array;
  /** The node's IPv6 pod subnet: inner IPv6 sources it may send from (none: every inner IPv6 packet from it is refused). */
  readonly subnet6?: Ipv6Prefix;
}

/** One packet descriptor, as read back after a batch. */
export interface Descriptor {
  off: number;
  len: number;
  /** Peer index (>= 0) or a negative result code (see results.ts). */
  res: number;
  addr: number;
  sport: number;
  dport: number;
  tos: number;
}

export const DEFAULT_TUNNEL: Omit<TunnelConfig, "localIp" | "localMac"> = {
  vni: 1,
  dstPort: 8472,
  srcPortMin: 32768,
  srcPortMax: 61000,
  ttl: 64,
  udpChecksum: false,
  dontFragment: false,
  hashSeed: 0,
};
