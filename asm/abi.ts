// The binary interface between the WASM core and its TypeScript callers.
//
// This one file is compiled by both compilers: `asc` (AssemblyScript, where an
// untyped integer literal is an i32) and `tsc` (where it is a number). Keep it
// to plain integer constants so that both sides read the same values; a test
// checks the compiled module's own copy (`abi_version`, `layout`) at load time.

/** Bump whenever any layout or code below changes meaning. */
export const ABI_VERSION = 5;

// ---------------------------------------------------------------------------
// Descriptors: one per packet, DESC_SIZE bytes, in the descriptor region.
// Fields are little-endian (WASM's native order); addresses are IPv4 as
// host-order integers (a.b.c.d = a<<24 | b<<16 | c<<8 | d).
//
//   field        encap (in / out)                 decap (in / out)
//   +0  u32 off  inner IPv4 packet / frame start  VXLAN header / inner IPv4
//   +4  u32 len  inner packet length / frame len  UDP payload len / inner len
//   +8  i32 res  - / peer index, or R_* < 0       - / peer index, or R_* < 0
//   +12 u32 addr - / peer's underlay address      outer source address / -
//   +16 u16 sport - / UDP source port (flow hash) -
//   +18 u16 dport - / UDP destination port        -
//   +20 u8  tos  - / outer TOS (ECN from inner)   outer TOS (for ECN) / -
// ---------------------------------------------------------------------------
export const DESC_SIZE = 32;
export const DESC_OFF = 0;
export const DESC_LEN = 4;
export const DESC_RES = 8;
export const DESC_ADDR = 12;
export const DESC_SPORT = 16;
export const DESC_DPORT = 18;
export const DESC_TOS = 20;

// Header lengths on the wire.
export const VXLAN_HLEN = 8;
export const UDP_HLEN = 8;
/** Bytes written in front of the inner packet in payload mode (VXLAN + inner Ethernet). */
export const ENCAP_PAYLOAD_OVERHEAD = 22;
/** Bytes written in front of the inner packet in frame mode (outer IPv4 + UDP + VXLAN + inner Ethernet). */
export const ENCAP_FRAME_OVERHEAD = 50;

/** encap_batch mode: write VXLAN + inner Ethernet (for a UDP socket). */
export const ENCAP_MODE_PAYLOAD = 0;
/** encap_batch mode: also write the outer IPv4 and UDP headers (raw sockets, pcap). */
export const ENCAP_MODE_FRAME = 1;

/** Config flag: compute the outer UDP checksum in frame mode (Linux vxlan default: zero). */
export const CFG_UDP_CSUM = 1;
/** Config flag: set DF on the outer IPv4 header in frame mode. */
export const CFG_DF = 2;
/**
 * Config flag: the underlay is IPv6. Encap sends every packet (inner IPv4 or
 * IPv6) to the peer's IPv6 underlay address (peer6_set); frame mode writes
 * an outer IPv6 header and always a UDP checksum (IPv6 requires one; RFC 6935
 * zero checksums are not used). In payload mode DESC_ADDR is 0 and the
 * caller sends to peer6_underlay(res).
 */
export const CFG_OUTER6 = 4;
/**
 * Config flag: dual-stack underlay, each inner family over its own (as
 * flannel's two VXLAN devices): inner IPv4 to the peer's IPv4 underlay,
 * inner IPv6 to its IPv6 underlay (peer6_set), with outer IPv6 headers in
 * frame mode (which then needs ENCAP_FRAME6_OVERHEAD of headroom for every
 * packet). A descriptor or unit says which: DESC_ADDR 0 / UNIT_FAMILY 6.
 */
export const CFG_SPLIT6 = 16;
/** Config flag: put the flow hash in the outer IPv6 flow label (RFC 6438); else 0. */
export const CFG_FLOWLABEL = 8;
/** Bytes written in front of the inner packet in frame mode over IPv6 (outer IPv6 + UDP + VXLAN + inner Ethernet). */
export const ENCAP_FRAME6_OVERHEAD = 70;

/** Peer flag: the slot holds a peer. */
export const PEER_VALID = 1;
/** Peer flag: the peer is this node (its subnet is delivered locally, never encapsulated). */
export const PEER_LOCAL = 2;
/** Peer flag: the node has no IPv4 underlay (an IPv6-only network): underlay 0 is allowed and never looked up. */
export const PEER_V6_ONLY = 4;

// ---------------------------------------------------------------------------
// Per-packet results. >= 0: peer index. < 0: why the packet was not taken.
// Counters: per direction, R_COUNT u64 slots; slot 0 counts accepted packets,
// slot -r counts result r.
// ---------------------------------------------------------------------------
export const R_BAD_DESC = -1; // descriptor points outside the packet region, or no headroom
export const R_TRUNCATED = -2; // shorter than the headers it must hold
export const R_NOT_IPV4 = -3; // inner EtherType / IP version is neither IPv4 nor IPv6 (tun paths: not IPv4)
export const R_MALFORMED = -4; // IPv4 header length or total length, or IPv6 payload length, inconsistent
export const R_NO_ROUTE = -5; // encap: no prefix covers the destination (or CFG_OUTER6 and the peer has no IPv6 underlay)
export const R_LOCAL = -6; // encap: destination is this node's own subnet
export const R_TOO_BIG = -7; // encap: outer packet would exceed 65535 bytes
export const R_BAD_FLAGS = -8; // decap: I flag clear, or a reserved bit set (as Linux vxlan)
export const R_BAD_VNI = -9; // decap: VNI is not ours
export const R_BAD_DST_MAC = -10; // decap: inner destination MAC is not our VTEP MAC
export const R_LOOPED = -11; // decap: inner source MAC is our own VTEP MAC (as Linux vxlan)
export const R_BAD_CSUM = -12; // decap: inner IPv4 header checksum is wrong
export const R_UNKNOWN_NODE = -13; // decap: outer source is not a known node (decap6_batch: not a peer's IPv6 underlay)
export const R_SPOOFED = -14; // decap: inner source is outside the sending node's subnet (IPv6: its subnet6, or it has none)
export const R_ECN = -15; // decap: outer CE on a not-ECT inner packet (RFC 6040, as Linux)
export const R_BAD_L4_CSUM = -16; // tun receive: inner TCP/UDP checksum wrong (and not left partial by the sender)
export const R_BAD_VNET = -17; // tun transmit: virtio_net_hdr does not fit the packet (GSO type, gso_size 0, a fragment, checksum start/offset)
export const R_COUNT = 18;

/** Counter directions, for `counters_base(dir)`. */
export const DIR_ENCAP = 0;
export const DIR_DECAP = 1;

// ---------------------------------------------------------------------------
// Return codes of the control functions (init, lpm_*, peer_*).
// ---------------------------------------------------------------------------
export const E_OK = 0;
export const E_INVALID = -1; // an argument is out of range
export const E_NOT_FOUND = -2; // no such prefix / peer
export const E_FULL = -3; // the table is at its configured capacity
export const E_NO_MEMORY = -4; // memory.grow failed

/** Sentinel returned by a lookup that matches no prefix. */
export const LPM_MISS = -1;
/** Largest next-hop index a prefix can map to. */
export const LPM_MAX_NH = 0xffffff;
/** Largest next-hop index an IPv6 prefix can map to (its entries keep 8 bits for the depth 0..128). */
export const LPM6_MAX_NH = 0x7fffff;

// Indexes for `layout(field)`: byte offsets and sizes of the regions.
export const L_PKT_BASE = 0; // packet region start
export const L_PKT_SIZE = 1; // packet region length
export const L_SLOT_SIZE = 2; // bytes per packet slot
export const L_SLOTS = 3; // number of packet slots
export const L_DESC_BASE = 4; // descriptor region start
export const L_MAX_BATCH = 5; // descriptors in the region
export const L_ADDR_BASE = 6; // lookup scratch: MAX_BATCH u32 addresses in
export const L_NH_BASE = 7; // lookup scratch: MAX_BATCH i32 results out
export const L_MAX_PEERS = 8;
export const L_MAX_RULES = 9;
export const L_HEADROOM = 10; // bytes reserved in front of each slot's packet
export const L_UNIT_BASE = 11; // tun path: unit table, then MAX_UNITS x 2 iovecs, then the header arena
export const L_MAX_UNITS = 12; // 0 when the core was made without tun regions
/** Units one tun batch call makes at most (native/abi.h WEFT_MAX_UNITS: the shim's send and write tables). */
export const MAX_UNITS = 2048;
export const L_ADDR6_BASE = 13; // IPv6 lookup scratch: MAX_BATCH x 16-byte addresses in wire order (results: L_NH_BASE)
export const L_MAX_RULES6 = 14; // IPv6 prefixes the table can hold
export const L_COUNT = 15;

// ---------------------------------------------------------------------------
// Units (tun path). tun_tx_batch / tun_rx_batch turn descriptors into units:
// what one sendmsg (UDP_SEGMENT) or one writev (to the TUN device) sends.
//   +0  u32 iov   first entry in the iovec table (IOV_SIZE bytes each: u32 offset, u32 length)
//   +4  u32 niov  iovec entries
//   +8  u32 addr  tx: the peer's underlay address
//   +12 u16 sport tx: UDP source port (flow hash)
//   +14 u16 dport tx: UDP destination port
//   +16 u16 gso   tx: datagram size for UDP_SEGMENT (0: one datagram)
//   +18 u16 segs  tx: datagrams; rx: TCP segments coalesced
//   +20 i32 res   peer index, or R_* < 0 (nothing to send)
// The iovec table holds 2 x MAX_UNITS entries; the header arena ARENA_BLOCK
// bytes per unit (segment headers written by TSO, or a whole small segment:
// asm/tun-tx.ts packs datagrams of up to ARENA_BLOCK bytes).
// ---------------------------------------------------------------------------
export const UNIT_SIZE = 32;
export const UNIT_IOV = 0;
export const UNIT_NIOV = 4;
export const UNIT_ADDR = 8;
export const UNIT_SPORT = 12;
export const UNIT_DPORT = 14;
export const UNIT_GSO = 16;
export const UNIT_SEGS = 18;
export const UNIT_RES = 20;
/** u8: 6 when UNIT_ADDR is the offset of the peer's 16-byte IPv6 address (send over IPv6), else 4 (UNIT_ADDR is IPv4). */
export const UNIT_FAMILY = 24;
export const IOV_SIZE = 8;
export const ARENA_BLOCK = 288;
/** struct virtio_net_hdr in front of every packet read from / written to the TUN device. */
export const VNET_HLEN = 10;
/** Datagrams in one UDP_SEGMENT send: the kernel's UDP_MAX_SEGMENTS floor (older kernels), the default. */
export const UDP_MAX_SEGS = 64;
/** ...and its ceiling (kernels that take 128; the agent probes which: native/weft_shim.c, weft_udp_gso_max_segs). */
export const UDP_SEGS_LIMIT = 128;
/** tun_rx: the receive descriptor's DESC_SPORT field carries the UDP_GRO segment size (0: one datagram). */
export const DESC_GSO = 16;
