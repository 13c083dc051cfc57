// The userspace (TUN) data path's packet work, with the TUN device's
// offloads: packets arrive from and leave for the device behind a 10-byte
// virtio_net_hdr, and may be 64 KiB TCP or UDP "super-packets".
//
// tun_tx_batch: each descriptor names [virtio_net_hdr][IPv4 packet] read from
// the device. A plain packet gets its checksum finished (if the kernel left
// it partial) and VXLAN + inner Ethernet in front: one datagram. A TSO/USO
// super-packet is split into MSS-sized segments; each segment's headers
// (VXLAN, Ethernet, IPv4, TCP/UDP with fresh lengths, IDs, sequence numbers
// and checksums) go to the header arena and its payload stays where it was
// read, so a unit is an iovec list [headers][payload][headers][payload]...
// that the kernel splits into equal datagrams (UDP_SEGMENT): one send per
// super-packet, no payload copy.
//
// tun_rx_batch: each descriptor names a received buffer of one or more
// equal-size VXLAN datagrams (UDP_GRO). Each datagram is decapsulated (all
// of decap's checks, anti-spoofing included); consecutive TCP segments of
// one flow are coalesced, as GRO does, into one unit [virtio_net_hdr + first
// segment][payload][payload]... that one writev hands the device as a TSO
// super-packet with a partial checksum.
import {
  ARENA_BLOCK, DESC_ADDR, DESC_GSO, DESC_LEN, DESC_OFF, DESC_SIZE, DESC_TOS, DIR_DECAP, DIR_ENCAP, E_INVALID,
  ENCAP_PAYLOAD_OVERHEAD, IOV_SIZE, R_BAD_DESC, R_BAD_L4_CSUM, R_MALFORMED, R_TOO_BIG, R_TRUNCATED, UDP_MAX_SEGS, UNIT_ADDR,
  UNIT_DPORT, UNIT_GSO, UNIT_IOV, UNIT_NIOV, UNIT_RES, UNIT_SEGS, UNIT_SIZE, UNIT_SPORT, VNET_HLEN,
} from "./abi";
import { sum16 } from "./checksum";
import { decapPacket, decTot, loadDecapConfig } from "./decap";
import { dport, loadConfig, routePacket, rtIhl, rtPeer, rtSport, rtTot, rtUnderlay, writeVxlanEth } from "./encap";
import { H_TUN_MTU, arenaBase, bump, descBase, hdrBase, inPackets, iovBase, maxBatch, maxUnits, unitBase } from "./layout";

const NEEDS_CSUM: u32 = 1;
const GSO_NONE: u32 = 0;
const GSO_TCPV4: u32 = 1;
const GSO_UDP_L4: u32 = 5;
const OVERHEAD: u32 = <u32>ENCAP_PAYLOAD_OVERHEAD;
const TCP_FIN: u32 = 0x01;
const TCP_SYN: u32 = 0x02;
const TCP_RST: u32 = 0x04;
const TCP_PSH: u32 = 0x08;
const TCP_ACK: u32 = 0x10;
const TCP_CWR: u32 = 0x80;

/** Sets the TUN device's MTU (tun_rx_batch segments packets bigger than this). */
export function tun_set_mtu(mtu: u32): i32 {
  if (hdrBase == 0 || mtu < 576 || mtu > 65535) return E_INVALID;
  store<u32>(hdrBase + H_TUN_MTU, mtu);
  return 0;
}

let nUnits: u32 = 0;
let nIovs: u32 = 0;
let nBlocks: u32 = 0;

/** Units the last batch call produced. */
export function tun_units(): u32 {
  return nUnits;
}

@inline function unitAt(u: u32): usize {
  return unitBase + <usize>u * <usize>UNIT_SIZE;
}

@inline function addIov(off: usize, len: u32): void {
  const q = iovBase + <usize>nIovs * <usize>IOV_SIZE;
  store<u32>(q, <u32>off);
  store<u32>(q, len, 4);
  nIovs++;
}

function openUnit(res: i32, addr: u32, sport: u32, dp: u32, gso: u32): u32 {
  const u = nUnits++;
  const p = unitAt(u);
  store<u32>(p, nIovs, UNIT_IOV);
  store<u32>(p, 0, UNIT_NIOV);
  store<u32>(p, addr, UNIT_ADDR);
  store<u16>(p, <u16>sport, UNIT_SPORT);
  store<u16>(p, <u16>dp, UNIT_DPORT);
  store<u16>(p, <u16>gso, UNIT_GSO);
  store<u16>(p, 1, UNIT_SEGS);
  store<i32>(p, res, UNIT_RES);
  return u;
}

@inline function closeUnit(u: u32, segs: u32): void {
  const p = unitAt(u);
  store<u32>(p, nIovs - load<u32>(p, UNIT_IOV), UNIT_NIOV);
  store<u16>(p, <u16>segs, UNIT_SEGS);
}

@inline function be16(p: usize, v: u32): void {
  store<u16>(p, bswap<u16>(<u16>v));
}

/** Sum of the IPv4 pseudo-header (addresses and protocol) of the packet at ip, without the length. */
@inline function pseudo(ip: usize, proto: u32): u32 {
  const s = bswap<u32>(load<u32>(ip, 12));
  const d = bswap<u32>(load<u32>(ip, 16));
  return (s >>> 16) + (s & 0xffff) + (d >>> 16) + (d & 0xffff) + proto;
}

/** Recomputes the IPv4 header checksum. */
@inline function ipCsum(ip: usize, ihl: u32): void {
  store<u16>(ip, 0, 10);
  be16(ip + 10, ~sum16(ip, ihl, 0) & 0xffff);
}

// ------------------------------------------------------------------- transmit

/**
 * Processes descriptors [from, n) into units until the unit, iovec or arena
 * space could run out; returns the index of the first descriptor not
 * processed (n when all were). tun_units() says how many units were made.
 */
export function tun_tx_batch(from: u32, n: u32): i32 {
  if (hdrBase == 0 || maxUnits == 0 || n > maxBatch || from > n) return E_INVALID;
  loadConfig();
  nUnits = 0;
  nIovs = 0;
  nBlocks = 0;
  let i = from;
  for (; i < n; i++) {
    const d = descBase + <usize>i * <usize>DESC_SIZE;
    const off = load<u32>(d, DESC_OFF);
    const len = load<u32>(d, DESC_LEN);
    // Worst case for one packet: 64 KiB at the smallest MSS the kernel allows (88 bytes).
    const worst: u32 = 65536 / 88 + 1;
    if (nUnits + worst / <u32>UDP_MAX_SEGS + 2 > maxUnits || nIovs + 2 * worst > 2 * maxUnits || nBlocks + worst > maxUnits) {
      if (i == from) return E_INVALID; // the core was made too small for even one packet
      break;
    }
    let res: i32;
    if (!inPackets(off, len, OVERHEAD - <u32>VNET_HLEN)) res = R_BAD_DESC;
    else if (len < <u32>VNET_HLEN + 20) res = R_TRUNCATED;
    else res = txOne(<usize>off, len);
    if (res < 0) openUnit(res, 0, 0, 0, 0);
    bump(DIR_ENCAP, res >= 0 ? 0 : <u32>-res);
  }
  return <i32>i;
}

/** One [virtio_net_hdr][IPv4] from the device: units appended, or an R_* code. */
function txOne(v: usize, len: u32): i32 {
  const flags = <u32>load<u8>(v);
  const gsoType = <u32>load<u8>(v, 1) & 0x7f;
  const gsoSize = <u32>load<u16>(v, 4);
  const cstart = <u32>load<u16>(v, 6);
  const coff = <u32>load<u16>(v, 8);
  const p = v + <usize>VNET_HLEN;
  // A super-packet is split before encapsulation: only a plain packet must fit 64 KiB with the headers.
  const res = routePacket(p, len - <u32>VNET_HLEN, gsoType == GSO_NONE ? OVERHEAD : 0);
  if (res < 0) return res;
  const tot = rtTot;
  const proto = <u32>load<u8>(p, 9);
  if (gsoType == GSO_NONE) {
    if (flags & NEEDS_CSUM) {
      // The kernel left the pseudo-header sum in the field: sum the rest over it.
      if (cstart + coff + 2 > tot || cstart < rtIhl) return R_MALFORMED;
      let c = ~sum16(p + <usize>cstart, tot - cstart, 0) & 0xffff;
      if (c == 0 && proto == 17) c = 0xffff;
      be16(p + <usize>(cstart + coff), c);
    }
    writeVxlanEth(p - <usize>OVERHEAD, rtPeer);
    openUnit(res, rtUnderlay, rtSport, dport(), 0);
    addIov(p - <usize>OVERHEAD, tot + OVERHEAD);
    closeUnit(nUnits - 1, 1);
    return res;
  }
  if (gsoType == GSO_TCPV4 && proto == 6) return segment(p, tot, gsoSize, true, res);
  if (gsoType == GSO_UDP_L4 && proto == 17) return segment(p, tot, gsoSize, false, res);
  return R_MALFORMED; // a GSO type this path did not ask the device for
}

/**
 * Splits a TSO (tcp) or USO (udp) super-packet into gsoSize-byte payload
 * segments, as the kernel's GSO would, into units of up to UDP_MAX_SEGS
 * equal datagrams.
 */
function segment(p: usize, tot: u32, gsoSize: u32, tcp: bool, res: i32): i32 {
  const ihl = rtIhl;
  const l4 = p + <usize>ihl;
  const l4len: u32 = tcp ? (<u32>load<u8>(l4, 12) >> 4) << 2 : 8;
  const hdrs = ihl + l4len;
  if (gsoSize == 0 || l4len < 8 || hdrs > tot || (tcp && l4len < 20)) return R_MALFORMED;
  const payload = tot - hdrs;
  const segs: u32 = payload == 0 ? 1 : (payload + gsoSize - 1) / gsoSize;
  if (hdrs + OVERHEAD > <u32>ARENA_BLOCK) return R_TOO_BIG;
  const seq0 = tcp ? bswap<u32>(load<u32>(l4, 4)) : 0;
  const flags0 = tcp ? <u32>load<u8>(l4, 13) : 0;
  const id0 = <u32>bswap<u16>(load<u16>(p, 4));
  const ps = pseudo(p, tcp ? 6 : 17);
  const dgram = OVERHEAD + hdrs + gsoSize;
  // One UDP_SEGMENT send carries at most UDP_MAX_SEGS datagrams and 65507 bytes (a UDP payload's limit).
  const fit: u32 = 65507 / dgram;
  const perUnit: u32 = fit < <u32>UDP_MAX_SEGS ? (fit > 0 ? fit : 1) : <u32>UDP_MAX_SEGS;
  for (let k: u32 = 0; k < segs; ) {
    const cnt: u32 = segs - k < perUnit ? segs - k : perUnit;
    const u = openUnit(res, rtUnderlay, rtSport, dport(), cnt > 1 ? dgram : 0);
    for (let j: u32 = 0; j < cnt; j++) {
      const s = k + j;
      const size = payload - s * gsoSize < gsoSize ? payload - s * gsoSize : gsoSize;
      const h = arenaBase + <usize>nBlocks * <usize>ARENA_BLOCK;
      nBlocks++;
      writeVxlanEth(h, rtPeer);
      const ip = h + <usize>OVERHEAD;
      memory.copy(ip, p, hdrs);
      be16(ip + 2, hdrs + size);
      be16(ip + 4, (id0 + s) & 0xffff);
      ipCsum(ip, ihl);
      const t = ip + <usize>ihl;
      const chunk = p + <usize>hdrs + <usize>s * <usize>gsoSize;
      if (tcp) {
        store<u32>(t, bswap<u32>(seq0 + s * gsoSize), 4);
        let f = flags0;
        if (s > 0) f &= ~TCP_CWR;
        if (s < segs - 1) f &= ~(TCP_FIN | TCP_PSH);
        store<u8>(t, <u8>f, 13);
        store<u16>(t, 0, 16);
        be16(t + 16, ~sum16(chunk, size, sum16(t, l4len, ps + l4len + size)) & 0xffff);
      } else {
        be16(t + 4, 8 + size);
        store<u16>(t, 0, 6);
        let c = ~sum16(chunk, size, sum16(t, 8, ps + 8 + size)) & 0xffff;
        be16(t + 6, c == 0 ? 0xffff : c);
      }
      addIov(h, OVERHEAD + hdrs);
      if (size > 0) addIov(chunk, size);
    }
    closeUnit(u, cnt);
    k += cnt;
  }
  return res;
}

// -------------------------------------------------------------------- receive

let mtu: u32 = 1450;

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

/**
 * Processes received descriptors [from, n) (DESC_GSO: the UDP_GRO segment
 * size, 0 for one datagram) into units for the TUN device; returns the
 * index of the first descriptor not processed.
 */
export function tun_rx_batch(from: u32, n: u32): i32 {
  if (hdrBase == 0 || maxUnits < <u32>UDP_MAX_SEGS || n > maxBatch || from > n) return E_INVALID;
  loadDecapConfig();
  mtu = load<u32>(hdrBase + H_TUN_MTU);
  if (mtu == 0) mtu = 1450;
  nUnits = 0;
  nIovs = 0;
  open = -1;
  let i = from;
  for (; i < n; i++) {
    const d = descBase + <usize>i * <usize>DESC_SIZE;
    const off = load<u32>(d, DESC_OFF);
    const len = load<u32>(d, DESC_LEN);
    const gso = <u32>load<u16>(d, DESC_GSO);
    let g: u32 = gso == 0 || gso > len ? len : gso;
    // A tunnel GSO packet handed over whole (virtual underlays do that) can come with the
    // inner MSS as its "GRO size": its first inner packet then claims more than g bytes.
    if (g < len && len >= 26 && inPackets(off, len, 0) && <u32>bswap<u16>(load<u16>(<usize>off + 24)) + 22 > g) g = len;
    const count: u32 = len == 0 ? 1 : (len + g - 1) / g;
    if (nUnits + count > maxUnits || nIovs + count > 2 * maxUnits) break;
    if (!inPackets(off, len, 0) || count > 65536) {
      bump(DIR_DECAP, <u32>-R_BAD_DESC);
      closeOpen();
      continue;
    }
    const outer = load<u32>(d, DESC_ADDR);
    const tos = <u32>load<u8>(d, DESC_TOS);
    for (let j: u32 = 0; j < count; j++) {
      const q = <usize>off + <usize>j * <usize>g;
      const dl = len - j * g < g ? len - j * g : g;
      const r = decapPacket(q, dl, outer, tos);
      if (r < 0) {
        bump(DIR_DECAP, <u32>-r);
        closeOpen();
        continue;
      }
      const ip = q + 22;
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
 * verify is R_BAD_L4_CSUM. Fragments and UDP without a checksum pass.
 */
function checkL4(ip: usize, tot: u32, keepPartial: bool): i32 {
  const ihl = (<u32>load<u8>(ip) & 15) << 2;
  const proto = <u32>load<u8>(ip, 9);
  if ((<u32>bswap<u16>(load<u16>(ip, 6)) & 0x3fff) != 0 || (proto != 6 && proto != 17)) return 0;
  const l4 = ip + <usize>ihl;
  const len = tot - ihl;
  const at: u32 = proto == 6 ? 16 : 6;
  if (len < (proto == 6 ? <u32>20 : <u32>8)) return R_MALFORMED;
  const field = <u32>bswap<u16>(load<u16>(l4 + <usize>at));
  if (proto == 17 && field == 0) return 0;
  const ps = pseudo(ip, proto) + len;
  if (sum16(l4, len, ps) == 0xffff) return 0;
  let partial = (ps & 0xffff) + (ps >>> 16);
  partial = (partial & 0xffff) + (partial >>> 16);
  if (field != partial) return R_BAD_L4_CSUM;
  if (keepPartial) return 0; // goes to the device as CHECKSUM_PARTIAL anyway
  store<u16>(l4 + <usize>at, 0);
  let c = ~sum16(l4, len, ps) & 0xffff;
  if (c == 0 && proto == 17) c = 0xffff;
  be16(l4 + <usize>at, c);
  return 0;
}

/** Opens a unit with the packet at ip, and notes whether later segments may join it. */
function start(ip: usize, tot: u32, res: i32): void {
  open = <i32>openUnit(res, 0, 0, 0, 0);
  memory.fill(ip - <usize>VNET_HLEN, 0, <usize>VNET_HLEN); // no offload: a complete packet
  addIov(ip - <usize>VNET_HLEN, tot + <u32>VNET_HLEN);
  mergeable = false;
  if (tot > mtu) {
    oversized(ip, tot);
    return;
  }
  const vihl = <u32>load<u8>(ip);
  const frag = <u32>bswap<u16>(load<u16>(ip, 6)) & 0x3fff;
  if (vihl != 0x45 || frag != 0 || <u32>load<u8>(ip, 9) != 6 || tot < 40) return;
  const t = ip + 20;
  const hdrs: u32 = 20 + ((<u32>load<u8>(t, 12) >> 4) << 2);
  const flags = <u32>load<u8>(t, 13);
  if (hdrs < 40 || hdrs >= tot || (flags & ~(TCP_ACK | TCP_PSH)) != 0 || (flags & TCP_PSH) != 0) return;
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
  const proto = <u32>load<u8>(ip, 9);
  if ((<u32>bswap<u16>(load<u16>(ip, 6)) & 0x3fff) != 0 || (proto != 6 && proto != 17)) return; // the kernel fragments or refuses it
  const l4 = ip + <usize>ihl;
  const hdrs: u32 = ihl + (proto == 6 ? (<u32>load<u8>(l4, 12) >> 4) << 2 : 8);
  if (hdrs + 8 > mtu || hdrs >= tot) return;
  let s = pseudo(ip, proto) + (tot - ihl);
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  be16(l4 + (proto == 6 ? 16 : 6), s);
  const v = ip - <usize>VNET_HLEN;
  store<u8>(v, <u8>NEEDS_CSUM);
  store<u8>(v, <u8>(proto == 6 ? GSO_TCPV4 : GSO_UDP_L4), 1);
  store<u16>(v, <u16>hdrs, 2);
  store<u16>(v, <u16>(mtu - hdrs), 4);
  store<u16>(v, <u16>ihl, 6);
  store<u16>(v, proto == 6 ? 16 : 6, 8);
}

/** Appends the TCP segment at ip to the open unit if it continues the same flow exactly. */
function merge(ip: usize, tot: u32): bool {
  if (open < 0 || !mergeable) return false;
  const f = mFirst;
  if (tot <= mHdrs || tot - mHdrs > mMss || mTotal + tot - mHdrs > 65535 || mSegs >= <u32>UDP_MAX_SEGS) return false;
  // Same addresses, protocol, TOS, TTL, DF; same ports, ack, window and options; next sequence number.
  if (load<u8>(ip) != 0x45 || load<u64>(ip, 12) != load<u64>(f, 12) || load<u8>(ip, 9) != 6) return false;
  if (load<u16>(ip) != load<u16>(f) || load<u8>(ip, 8) != load<u8>(f, 8)) return false;
  if ((load<u16>(ip, 6) & 0xffbf) != 0 || load<u16>(ip, 6) != load<u16>(f, 6)) return false;
  const t = ip + 20;
  const ft = f + 20;
  if (load<u32>(t) != load<u32>(ft) || load<u32>(t, 8) != load<u32>(ft, 8) || load<u16>(t, 14) != load<u16>(ft, 14)) return false;
  if (load<u8>(t, 12) != load<u8>(ft, 12) || memory.compare(t + 20, ft + 20, mHdrs - 40) != 0) return false;
  const flags = <u32>load<u8>(t, 13);
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

/** Closes the open unit; several segments become one TSO packet with a partial checksum. */
function closeOpen(): void {
  if (open < 0) return;
  const u = <u32>open;
  open = -1;
  if (mSegs > 1) {
    const ip = mFirst;
    const t = ip + 20;
    be16(ip + 2, mTotal);
    ipCsum(ip, 20);
    store<u8>(t, load<u8>(t, 13) | <u8>mEndFlags, 13);
    // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, not inverted.
    const l4 = mTotal - 20;
    let s = pseudo(ip, 6) + l4;
    s = (s & 0xffff) + (s >>> 16);
    s = (s & 0xffff) + (s >>> 16);
    be16(t + 16, s);
    const v = ip - <usize>VNET_HLEN;
    store<u8>(v, <u8>NEEDS_CSUM);
    store<u8>(v, <u8>GSO_TCPV4, 1);
    store<u16>(v, <u16>mHdrs, 2);
    store<u16>(v, <u16>mMss, 4);
    store<u16>(v, 20, 6);
    store<u16>(v, 16, 8);
  }
  closeUnit(u, mSegs > 1 ? mSegs : 1);
  mergeable = false;
  mSegs = 0;
}
