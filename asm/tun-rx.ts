// The tun path's receive side: buffers read from the UDP socket become
// packets for the TUN device, each behind a 10-byte virtio_net_hdr.
//
// Each descriptor names a received buffer of one or more equal-size VXLAN
// datagrams (UDP_GRO; DESC_GSO carries the size the kernel reported). Each
// datagram is decapsulated (all of decap's checks, anti-spoofing included)
// and its inner TCP/UDP checksum checked or finished; consecutive TCP
// segments of one flow are coalesced, as GRO does, into one unit
// [virtio_net_hdr + first segment][payload][payload]... that one writev
// hands the device as a TSO super-packet with a partial checksum.
//
// Lengths and the segment size come from the network and the kernel: every
// datagram is cut inside its buffer, every inner packet is checked against
// the bytes present, and a buffer of more datagrams than one call's unit and
// iovec room is finished over several calls (the call returns its index
// again, and the next call given the same descriptor resumes at the next
// datagram).
import { DESC_ADDR, DESC_GSO, DESC_LEN, DESC_OFF, DESC_SIZE, DESC_TOS, DIR_DECAP, E_INVALID, R_BAD_DESC, R_BAD_L4_CSUM, R_MALFORMED, ENCAP_PAYLOAD_OVERHEAD, UDP_MAX_SEGS, VNET_HLEN } from "./abi";
import { sum16 } from "./checksum";
import { decapFrom, decTot, loadDecapConfig } from "./decap";
import { H_FLAGS, addr6Base, bump, descBase, hdrBase, inPackets, maxBatch, maxUnits } from "./layout";
import { CFG_OUTER6 } from "./abi";
import { peerByUnderlay } from "./peers";
import { peerByUnderlay6 } from "./peers6";
import {
  GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, NEEDS_CSUM, addIov, be16, closeUnit, foldPartial, ipCsum, openUnit, pseudo, pseudo6, resetUnits, resumeAt, room, tunMtu,
  IP_HLEN, IP_PROTO, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_CSUM, TCP_FIN, TCP_FLAGS, TCP_HLEN, TCP_PSH, UDP_CSUM, UDP_HLEN,
  VNET_CSUM_OFFSET, VNET_CSUM_START, VNET_FLAGS, VNET_GSO_SIZE, VNET_GSO_TYPE, VNET_HDR_LEN, isFragment, tcpHdrLen,
} from "./units";

/**
 * Segments one coalesced packet may hold: small segments (a peer's small
 * MSS) coalesce across received buffers up to 64 KiB as the kernel's GRO
 * would, bounded so that the device write's iovecs (the header, then one per
 * segment) stay within writev's limit of 1024.
 */
const MERGE_SEGS: u32 = 512;
/** Datagrams one buffer may claim (a UDP_GRO buffer holds at most 64 KiB). */
const MAX_DATAGRAMS: u32 = 65536;

let mtu: u32 = 1450;
/** The buffer left unfinished by the last call: descriptor index (-1: none), its offset and length, next datagram. */
let pendDesc: i32 = -1;
let pendOff: u32 = 0;
let pendLen: u32 = 0;
let pendSeg: u32 = 0;

// The unit being coalesced (valid while mergeable).
let open: i32 = -1;
let mergeable = false;
let mFirst: usize = 0; // IPv4 header of the first segment
let mHdrs: u32 = 0;
let mMss: u32 = 0;
let mTotal: u32 = 0;
let mSegs: u32 = 0;
let mNextSeq: u32 = 0;
let mEndFlags: u32 = 0;
let mV6 = false; // the unit being coalesced is IPv6 (TSO6)

/**
 * The size of the datagrams in a buffer of `len` bytes at off that the
 * kernel reported as `gso` (0: one datagram). A tunnel GSO packet handed
 * over whole (virtual underlays do that) can come with the inner MSS as its
 * "GRO size": its first inner packet then claims more than that, and the
 * buffer is one datagram.
 */
function datagramSize(off: u32, len: u32, gso: u32): u32 {
  if (gso == 0 || gso >= len) return len;
  // The first datagram's inner IPv4 total length (IPv6: 40 + payload length) tells a whole GSO packet.
  const inner = <usize>off + <usize>ENCAP_PAYLOAD_OVERHEAD;
  if (len >= <u32>ENCAP_PAYLOAD_OVERHEAD + 6 && <u32>load<u8>(inner) >> 4 == 6) {
    if (<u32>40 + <u32>bswap<u16>(load<u16>(inner, 4)) + <u32>ENCAP_PAYLOAD_OVERHEAD > gso) return len;
  } else if (len >= <u32>ENCAP_PAYLOAD_OVERHEAD + 4 && <u32>bswap<u16>(load<u16>(inner, 2)) + <u32>ENCAP_PAYLOAD_OVERHEAD > gso) return len;
  return gso;
}

/**
 * Processes received descriptors [from, n) (DESC_GSO: the UDP_GRO segment
 * size, 0 for one datagram) into units for the TUN device; returns the
 * index of the first descriptor not finished (a buffer cut short returns
 * its own index: call again with it to resume).
 */
export function tun_rx_batch(from: u32, n: u32): i32 {
  if (hdrBase == 0 || maxUnits < <u32>UDP_MAX_SEGS || n > maxBatch || from > n) return E_INVALID;
  loadDecapConfig();
  const over6 = (load<u32>(hdrBase + H_FLAGS) & CFG_OUTER6) != 0;
  mtu = tunMtu();
  resetUnits();
  open = -1;
  let resume = resumeAt(from, n, pendDesc, pendOff, pendLen, pendSeg);
  pendDesc = -1;
  let i = from;
  for (; i < n; i++) {
    const d = descBase + <usize>i * <usize>DESC_SIZE;
    const off = load<u32>(d, DESC_OFF);
    const len = load<u32>(d, DESC_LEN);
    if (!inPackets(off, len, 0)) {
      bump(DIR_DECAP, <u32>-R_BAD_DESC);
      closeOpen();
      continue;
    }
    const g = datagramSize(off, len, <u32>load<u16>(d, DESC_GSO));
    const count: u32 = len == 0 ? 1 : (len + g - 1) / g;
    if (count > MAX_DATAGRAMS) {
      bump(DIR_DECAP, <u32>-R_BAD_DESC);
      closeOpen();
      continue;
    }
    // The sender: over IPv6 its address is descriptor i's 16 bytes in the IPv6 scratch region.
    const src6 = addr6Base + (<usize>i << 4);
    const idx = over6 ? peerByUnderlay6(bswap<u64>(load<u64>(src6)), bswap<u64>(load<u64>(src6, 8))) : peerByUnderlay(load<u32>(d, DESC_ADDR));
    const tos = <u32>load<u8>(d, DESC_TOS);
    let j = resume;
    resume = 0;
    for (; j < count; j++) {
      if (!room(1, 1)) break; // a datagram adds at most one unit and one iovec
      const q = <usize>off + <usize>j * <usize>g;
      const dl = len - j * g < g ? len - j * g : g;
      const r = decapFrom(q, dl, idx, tos);
      if (r < 0) {
        bump(DIR_DECAP, <u32>-r);
        closeOpen();
        continue;
      }
      const ip = q + <usize>ENCAP_PAYLOAD_OVERHEAD; // decapFrom() left the inner packet here
      if (<u32>load<u8>(ip) >> 4 == 6) {
        const l6 = checkL4v6(ip, decTot);
        bump(DIR_DECAP, l6 < 0 ? <u32>-l6 : 0);
        if (l6 < 0) closeOpen();
        if (l6 >= 0 && !merge6(ip, decTot)) {
          closeOpen();
          start6(ip, decTot, r);
        }
        continue;
      }
      const l4 = checkL4(ip, decTot, decTot > mtu);
      if (l4 < 0) {
        bump(DIR_DECAP, <u32>-l4);
        closeOpen();
        continue;
      }
      bump(DIR_DECAP, 0);
      if (!merge(ip, decTot)) {
        closeOpen();
        start(ip, decTot, r);
      }
    }
    if (j < count) {
      pendDesc = <i32>i;
      pendOff = off;
      pendLen = len;
      pendSeg = j;
      break;
    }
  }
  closeOpen();
  return <i32>i;
}

/**
 * Checks the inner TCP/UDP checksum before the packet goes to the device as
 * complete (the device's kernel would verify it; coalesced ones it would
 * not). A sender whose kernel left the checksum partial (CHECKSUM_PARTIAL
 * travels unfinished between virtual devices: the field then holds the
 * pseudo-header sum) gets it finished here; anything else that does not
 * verify is R_BAD_L4_CSUM, and a TCP header that does not fit its own data
 * offset R_MALFORMED. Fragments, other protocols and UDP without a checksum
 * pass.
 */
function checkL4(ip: usize, tot: u32, keepPartial: bool): i32 {
  const ihl = (<u32>load<u8>(ip) & 15) << 2;
  const proto = <u32>load<u8>(ip, IP_PROTO);
  if (isFragment(ip) || (proto != IPPROTO_TCP && proto != IPPROTO_UDP)) return 0;
  const l4 = ip + <usize>ihl;
  const len = tot - ihl;
  const at = proto == IPPROTO_TCP ? TCP_CSUM : UDP_CSUM;
  if (len < (proto == IPPROTO_TCP ? TCP_HLEN : UDP_HLEN)) return R_MALFORMED;
  if (proto == IPPROTO_TCP) {
    const thl = tcpHdrLen(l4);
    if (thl < TCP_HLEN || thl > len) return R_MALFORMED;
  }
  const field = <u32>bswap<u16>(load<u16>(l4 + at));
  if (proto == IPPROTO_UDP && field == 0) return 0;
  const ps = pseudo(ip, proto) + len;
  if (sum16(l4, len, ps) == 0xffff) return 0;
  if (field != foldPartial(ps)) return R_BAD_L4_CSUM;
  if (keepPartial) return 0; // goes to the device as CHECKSUM_PARTIAL anyway
  store<u16>(l4 + at, 0);
  let c = ~sum16(l4, len, ps) & 0xffff;
  if (c == 0 && proto == IPPROTO_UDP) c = 0xffff;
  be16(l4 + at, c);
  return 0;
}

/**
 * checkL4() for an inner IPv6 packet whose next header is TCP or UDP (no
 * extension headers: others pass as they are). The checksum covers the
 * IPv6 pseudo-header (RFC 8200 8.1); a partial one is finished.
 */
function checkL4v6(ip: usize, tot: u32): i32 {
  const proto = <u32>load<u8>(ip, 6);
  if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) return 0;
  const l4 = ip + 40;
  const len = tot - 40;
  if (len < (proto == IPPROTO_TCP ? TCP_HLEN : UDP_HLEN)) return R_MALFORMED;
  if (proto == IPPROTO_TCP) {
    const thl = tcpHdrLen(l4);
    if (thl < TCP_HLEN || thl > len) return R_MALFORMED;
  }
  const at = proto == IPPROTO_TCP ? TCP_CSUM : UDP_CSUM;
  const ps = pseudo6(ip, proto) + len;
  if (sum16(l4, len, ps) == 0xffff) return 0;
  if (<u32>bswap<u16>(load<u16>(l4 + at)) != foldPartial(ps)) return R_BAD_L4_CSUM;
  store<u16>(l4 + at, 0);
  let c = ~sum16(l4, len, ps) & 0xffff;
  if (c == 0 && proto == IPPROTO_UDP) c = 0xffff;
  be16(l4 + at, c);
  return 0;
}

/** start() for inner IPv6: only TCP right after the fixed header coalesces (into TSO6). */
function start6(ip: usize, tot: u32, res: i32): void {
  open = <i32>openUnit(res, 0, 0, 0);
  memory.fill(ip - <usize>VNET_HLEN, 0, <usize>VNET_HLEN); // no offload: a complete packet
  addIov(ip - <usize>VNET_HLEN, tot + <u32>VNET_HLEN);
  mergeable = false;
  mV6 = true;
  if (tot > mtu) {
    oversized6(ip, tot);
    return;
  }
  if (<u32>load<u8>(ip, 6) != IPPROTO_TCP || tot < 40 + TCP_HLEN) return;
  startTcp(ip, 40, tot);
}

/** merge() for inner IPv6: same version/traffic class/flow label, hop limit, addresses, ports, ack, window, options; next sequence number. */
function merge6(ip: usize, tot: u32): bool {
  if (open < 0 || !mergeable || !mV6) return false;
  const f = mFirst;
  if (tot <= mHdrs || tot - mHdrs > mMss || mTotal + tot - mHdrs > 65535 || mSegs >= MERGE_SEGS) return false;
  if (load<u32>(ip) != load<u32>(f) || load<u8>(ip, 6) != 6 || load<u8>(ip, 7) != load<u8>(f, 7) || memory.compare(ip + 8, f + 8, 32) != 0) return false;
  return mergeTcp(ip, f, 40, tot);
}

/**
 * The TCP half of merge() and merge6(), the IP header (`ipLen` bytes) being
 * checked: same ports, ack, window and options; the next sequence number;
 * only ACK, PSH and FIN. Appends the payload to the open unit.
 */
@inline
function mergeTcp(ip: usize, f: usize, ipLen: u32, tot: u32): bool {
  const t = ip + <usize>ipLen;
  const ft = f + <usize>ipLen;
  if (load<u32>(t) != load<u32>(ft) || load<u32>(t, 8) != load<u32>(ft, 8) || load<u16>(t, 14) != load<u16>(ft, 14)) return false;
  if (load<u8>(t, 12) != load<u8>(ft, 12) || memory.compare(t + 20, ft + 20, mHdrs - ipLen - 20) != 0) return false;
  const flags = <u32>load<u8>(t, TCP_FLAGS);
  if ((flags & ~(TCP_ACK | TCP_PSH | TCP_FIN)) != 0 || bswap<u32>(load<u32>(t, 4)) != mNextSeq) return false;
  const size = tot - mHdrs;
  addIov(ip + <usize>mHdrs, size);
  mTotal += size;
  mSegs++;
  mNextSeq += size;
  if (size < mMss || (flags & (TCP_PSH | TCP_FIN)) != 0) {
    mEndFlags = flags & (TCP_PSH | TCP_FIN);
    mergeable = false; // GRO ends a super-packet here
  }
  return true;
}

/** oversized() for inner IPv6: a TCP/UDP packet bigger than the MTU goes to the device as TSO6/USO cut at the MTU. */
function oversized6(ip: usize, tot: u32): void {
  const proto = <u32>load<u8>(ip, 6);
  if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) return; // the kernel sends ICMPv6 "too big" for it
  const tcp = proto == IPPROTO_TCP;
  const l4 = ip + 40;
  const hdrs: u32 = 40 + (tcp ? tcpHdrLen(l4) : UDP_HLEN);
  if (hdrs + 8 > mtu || hdrs >= tot) return;
  const csum = tcp ? TCP_CSUM : UDP_CSUM;
  be16(l4 + csum, foldPartial(pseudo6(ip, proto) + (tot - 40)));
  const v = ip - <usize>VNET_HLEN;
  store<u8>(v, <u8>NEEDS_CSUM, VNET_FLAGS);
  store<u8>(v, <u8>(tcp ? GSO_TCPV6 : GSO_UDP_L4), VNET_GSO_TYPE);
  store<u16>(v, <u16>hdrs, VNET_HDR_LEN);
  store<u16>(v, <u16>(mtu - hdrs), VNET_GSO_SIZE);
  store<u16>(v, 40, VNET_CSUM_START);
  store<u16>(v, <u16>csum, VNET_CSUM_OFFSET);
}

/** Opens a unit with the packet at ip, and notes whether later segments may join it. */
function start(ip: usize, tot: u32, res: i32): void {
  open = <i32>openUnit(res, 0, 0, 0);
  mV6 = false;
  memory.fill(ip - <usize>VNET_HLEN, 0, <usize>VNET_HLEN); // no offload: a complete packet
  addIov(ip - <usize>VNET_HLEN, tot + <u32>VNET_HLEN);
  mergeable = false;
  if (tot > mtu) {
    oversized(ip, tot);
    return;
  }
  // Only TCP without IP options coalesces (then the TCP header starts at IP_HLEN).
  if (<u32>load<u8>(ip) != 0x45 || isFragment(ip) || <u32>load<u8>(ip, IP_PROTO) != IPPROTO_TCP || tot < IP_HLEN + TCP_HLEN) return;
  startTcp(ip, IP_HLEN, tot);
}

/**
 * The TCP half of start() and start6(), the IP header (`ipLen` bytes) being
 * checked: a segment with only ACK and a payload opens a flow later
 * segments may join (merge(), merge6()).
 */
@inline
function startTcp(ip: usize, ipLen: u32, tot: u32): void {
  const t = ip + <usize>ipLen;
  const hdrs: u32 = ipLen + tcpHdrLen(t);
  const flags = <u32>load<u8>(t, TCP_FLAGS);
  if (hdrs < ipLen + TCP_HLEN || hdrs >= tot || (flags & ~(TCP_ACK | TCP_PSH)) != 0 || (flags & TCP_PSH) != 0) return;
  mergeable = true;
  mFirst = ip;
  mHdrs = hdrs;
  mMss = tot - hdrs;
  mTotal = tot;
  mSegs = 1;
  mNextSeq = bswap<u32>(load<u32>(t, 4)) + mMss;
  mEndFlags = 0;
}

/**
 * A TCP or UDP packet bigger than the device's MTU in one datagram (a peer
 * on a virtual underlay sent its GSO packet whole): it goes to the device
 * as a TSO/USO packet cut at the MTU, with a partial checksum.
 */
function oversized(ip: usize, tot: u32): void {
  const ihl = (<u32>load<u8>(ip) & 15) << 2;
  const proto = <u32>load<u8>(ip, IP_PROTO);
  if (isFragment(ip) || (proto != IPPROTO_TCP && proto != IPPROTO_UDP)) return; // the kernel fragments or refuses it
  const tcp = proto == IPPROTO_TCP;
  const l4 = ip + <usize>ihl;
  const hdrs: u32 = ihl + (tcp ? tcpHdrLen(l4) : UDP_HLEN);
  if (hdrs + 8 > mtu || hdrs >= tot) return;
  const csum = tcp ? TCP_CSUM : UDP_CSUM;
  be16(l4 + csum, foldPartial(pseudo(ip, proto) + (tot - ihl)));
  const v = ip - <usize>VNET_HLEN;
  store<u8>(v, <u8>NEEDS_CSUM, VNET_FLAGS);
  store<u8>(v, <u8>(tcp ? GSO_TCPV4 : GSO_UDP_L4), VNET_GSO_TYPE);
  store<u16>(v, <u16>hdrs, VNET_HDR_LEN);
  store<u16>(v, <u16>(mtu - hdrs), VNET_GSO_SIZE);
  store<u16>(v, <u16>ihl, VNET_CSUM_START);
  store<u16>(v, <u16>csum, VNET_CSUM_OFFSET);
}

/** Appends the TCP segment at ip to the open unit if it continues the same flow exactly. */
function merge(ip: usize, tot: u32): bool {
  if (open < 0 || !mergeable || mV6) return false;
  const f = mFirst;
  if (tot <= mHdrs || tot - mHdrs > mMss || mTotal + tot - mHdrs > 65535 || mSegs >= MERGE_SEGS) return false;
  // Same addresses, protocol, TOS, TTL, DF; same ports, ack, window and options; next sequence number.
  if (load<u8>(ip) != 0x45 || load<u64>(ip, 12) != load<u64>(f, 12) || load<u8>(ip, 9) != 6) return false;
  if (load<u16>(ip) != load<u16>(f) || load<u8>(ip, 8) != load<u8>(f, 8)) return false;
  if ((load<u16>(ip, 6) & 0xffbf) != 0 || load<u16>(ip, 6) != load<u16>(f, 6)) return false;
  return mergeTcp(ip, f, 20, tot);
}

/** Closes the open unit; several segments become one TSO packet with a partial checksum. */
function closeOpen(): void {
  if (open < 0) return;
  const u = <u32>open;
  open = -1;
  if (mSegs > 1 && mV6) {
    // TSO6: payload length, the flags of the last segment, CHECKSUM_PARTIAL over the IPv6 pseudo-header.
    const ip = mFirst;
    const t = ip + 40;
    be16(ip + 4, mTotal - 40);
    store<u8>(t, load<u8>(t, TCP_FLAGS) | <u8>mEndFlags, TCP_FLAGS);
    be16(t + 16, foldPartial(pseudo6(ip, 6) + mTotal - 40));
    const v = ip - <usize>VNET_HLEN;
    store<u8>(v, <u8>NEEDS_CSUM);
    store<u8>(v, <u8>GSO_TCPV6, 1);
    store<u16>(v, <u16>mHdrs, 2);
    store<u16>(v, <u16>mMss, 4);
    store<u16>(v, 40, 6);
    store<u16>(v, 16, 8);
  } else if (mSegs > 1) {
    const ip = mFirst;
    const t = ip + 20;
    be16(ip + 2, mTotal);
    ipCsum(ip, 20);
    store<u8>(t, load<u8>(t, TCP_FLAGS) | <u8>mEndFlags, TCP_FLAGS);
    // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, not inverted.
    be16(t + 16, foldPartial(pseudo(ip, 6) + mTotal - 20));
    const v = ip - <usize>VNET_HLEN;
    store<u8>(v, <u8>NEEDS_CSUM);
    store<u8>(v, <u8>GSO_TCPV4, 1);
    store<u16>(v, <u16>mHdrs, 2);
    store<u16>(v, <u16>mMss, 4);
    store<u16>(v, 20, 6);
    store<u16>(v, 16, 8);
  }
  closeUnit(u, mSegs > 1 ? mSegs : 1, 0);
  mergeable = false;
  mSegs = 0;
}
