// Units: what the tun path hands the native shim per batch (asm/abi.ts).
// A unit is one sendmsg (UDP_SEGMENT) or one writev (to the TUN device): a
// run of entries in the iovec table. The tables have fixed room (maxUnits
// units, 2 x maxUnits iovecs); the batch functions ask `room()` before every
// addition, and stop (to be called again) when it runs out, so nothing is
// ever written past them.
import { DESC_LEN, DESC_OFF, DESC_SIZE, E_INVALID, IOV_SIZE, UNIT_ADDR, UNIT_DPORT, UNIT_GSO, UNIT_IOV, UNIT_NIOV, UNIT_RES, UNIT_SEGS, UNIT_SIZE, UNIT_SPORT, UNIT_FAMILY, UDP_MAX_SEGS, UDP_SEGS_LIMIT } from "./abi";
import { sum16 } from "./checksum";
import { H_TUN_MTU, H_UDP_SEGS, descBase, hdrBase, iovBase, maxUnits, unitBase } from "./layout";

/** virtio_net_hdr flags and GSO types (include/uapi/linux/virtio_net.h). */
export const NEEDS_CSUM: u32 = 1;
export const GSO_NONE: u32 = 0;
export const GSO_TCPV4: u32 = 1;
export const GSO_TCPV6: u32 = 4;
export const GSO_UDP_L4: u32 = 5;
/** virtio_net_hdr fields: flags u8, gso_type u8, hdr_len u16, gso_size u16, csum_start u16, csum_offset u16 (host order). */
export const VNET_FLAGS: usize = 0;
export const VNET_GSO_TYPE: usize = 1;
export const VNET_HDR_LEN: usize = 2;
export const VNET_GSO_SIZE: usize = 4;
export const VNET_CSUM_START: usize = 6;
export const VNET_CSUM_OFFSET: usize = 8;
/** IPv4, TCP and UDP header fields the tun path reads. */
export const IPPROTO_TCP: u32 = 6;
export const IPPROTO_UDP: u32 = 17;
export const IP_HLEN: u32 = 20; // without options
export const IP_FRAG: usize = 6; // flags + fragment offset, big-endian; & IP_FRAG_MASK != 0: a fragment
export const IP_FRAG_MASK: u32 = 0x3fff;
export const IP_PROTO: usize = 9;
export const TCP_HLEN: u32 = 20; // without options
export const TCP_DOFF: usize = 12; // data offset in the high nibble, in 32-bit words
export const TCP_CSUM: usize = 16;
export const TCP_FLAGS: usize = 13;
export const TCP_FIN: u32 = 0x01;
export const TCP_PSH: u32 = 0x08;
export const TCP_ACK: u32 = 0x10;
export const TCP_CWR: u32 = 0x80;
export const UDP_HLEN: u32 = 8;
export const UDP_LEN: usize = 4;
export const UDP_CSUM: usize = 6;

/** A TCP header's length from its data offset. */
@inline export function tcpHdrLen(tcp: usize): u32 {
  return (<u32>load<u8>(tcp, TCP_DOFF) >> 4) << 2;
}

/** True when the IPv4 packet at `ip` is a fragment (MF set or a non-zero offset). */
@inline export function isFragment(ip: usize): bool {
  return (<u32>bswap<u16>(load<u16>(ip, IP_FRAG)) & IP_FRAG_MASK) != 0;
}
/** The TUN MTU when tun_set_mtu() was never called (a 1500-byte underlay minus VXLAN's 50). */
const DEFAULT_MTU: u32 = 1450;

export let nUnits: u32 = 0;
export let nIovs: u32 = 0;

/** Units the last batch call produced. */
export function tun_units(): u32 {
  return nUnits;
}

/** Sets the TUN device's MTU: transmit refuses segments bigger than it, receive cuts bigger packets at it. */
export function tun_set_mtu(mtu: u32): i32 {
  if (hdrBase == 0 || mtu < 576 || mtu > 65535) return E_INVALID;
  store<u32>(hdrBase + H_TUN_MTU, mtu);
  return 0;
}

/** Sets how many datagrams one UDP_SEGMENT send may carry (the kernel's UDP_MAX_SEGMENTS: 64, or 128 on newer kernels). */
export function tun_set_udp_segs(n: u32): i32 {
  if (hdrBase == 0 || n < 1 || n > <u32>UDP_SEGS_LIMIT) return E_INVALID;
  store<u32>(hdrBase + H_UDP_SEGS, n);
  return 0;
}

export function udpSegs(): u32 {
  const n = load<u32>(hdrBase + H_UDP_SEGS);
  return n == 0 ? <u32>UDP_MAX_SEGS : n;
}

export function tunMtu(): u32 {
  const m = load<u32>(hdrBase + H_TUN_MTU);
  return m == 0 ? DEFAULT_MTU : m;
}

/** Empties the unit and iovec tables for a new batch call. */
export function resetUnits(): void {
  nUnits = 0;
  nIovs = 0;
}

/** True when `units` more units and `iovs` more iovecs fit the tables. */
@inline export function room(units: u32, iovs: u32): bool {
  return nUnits + units <= maxUnits && nIovs + iovs <= 2 * maxUnits;
}

@inline export function unitAt(u: u32): usize {
  return unitBase + <usize>u * <usize>UNIT_SIZE;
}

/** Appends an iovec to the open unit (the caller checked room()). */
@inline export function addIov(off: usize, len: u32): void {
  const q = iovBase + <usize>nIovs * <usize>IOV_SIZE;
  store<u32>(q, <u32>off);
  store<u32>(q, len, 4);
  nIovs++;
}

/** Opens a unit (the caller checked room()); its iovecs are the ones added until closeUnit(). */
export function openUnit(res: i32, addr: u32, sport: u32, dp: u32, family: u32 = 4): u32 {
  const u = nUnits++;
  const p = unitAt(u);
  store<u32>(p, nIovs, UNIT_IOV);
  store<u32>(p, 0, UNIT_NIOV);
  store<u32>(p, addr, UNIT_ADDR);
  store<u16>(p, <u16>sport, UNIT_SPORT);
  store<u16>(p, <u16>dp, UNIT_DPORT);
  store<u16>(p, 0, UNIT_GSO);
  store<u16>(p, 1, UNIT_SEGS);
  store<i32>(p, res, UNIT_RES);
  store<u8>(p, <u8>family, UNIT_FAMILY);
  return u;
}

/** Closes unit u: `segs` datagrams (or coalesced segments) of `gso` bytes each but the last (0: one datagram). */
@inline export function closeUnit(u: u32, segs: u32, gso: u32): void {
  const p = unitAt(u);
  store<u32>(p, nIovs - load<u32>(p, UNIT_IOV), UNIT_NIOV);
  store<u16>(p, <u16>segs, UNIT_SEGS);
  store<u16>(p, <u16>gso, UNIT_GSO);
}

@inline export function be16(p: usize, v: u32): void {
  store<u16>(p, bswap<u16>(<u16>v));
}

/** Sum of the IPv4 pseudo-header (addresses and protocol) of the packet at ip, without the length. */
@inline export function pseudo(ip: usize, proto: u32): u32 {
  const s = bswap<u32>(load<u32>(ip, 12));
  const d = bswap<u32>(load<u32>(ip, 16));
  return (s >>> 16) + (s & 0xffff) + (d >>> 16) + (d & 0xffff) + proto;
}

/** Sum of the IPv6 pseudo-header (addresses and next header) of the packet at ip, without the length. */
@inline export function pseudo6(ip: usize, proto: u32): u32 {
  let s = proto;
  for (let i: usize = 8; i < 40; i += 2) s += <u32>bswap<u16>(load<u16>(ip + i));
  return s;
}

/** Folds a pseudo-header sum to the 16-bit value CHECKSUM_PARTIAL leaves in the field. */
@inline export function foldPartial(s: u32): u32 {
  s = (s & 0xffff) + (s >>> 16);
  return (s & 0xffff) + (s >>> 16);
}

/** Recomputes the IPv4 header checksum. */
@inline export function ipCsum(ip: usize, ihl: u32): void {
  store<u16>(ip, 0, 10);
  be16(ip + 10, ~sum16(ip, ihl, 0) & 0xffff);
}

/**
 * Where descriptor `from` of a batch of `n` starts: `at` when it is the one a
 * call left unfinished (`desc`, still naming the payload off/len it named
 * then), else 0. A super-packet or GRO buffer that ran out of unit, iovec or
 * arena room resumes there; any other call starts afresh.
 */
export function resumeAt(from: u32, n: u32, desc: i32, off: u32, len: u32, at: u32): u32 {
  if (desc != <i32>from || from >= n) return 0;
  const d = descBase + <usize>from * <usize>DESC_SIZE;
  return load<u32>(d, DESC_OFF) == off && load<u32>(d, DESC_LEN) == len ? at : 0;
}
