// The tun path's transmit side: packets read from the TUN device, each
// behind a 10-byte virtio_net_hdr, become VXLAN datagrams for a UDP socket.
//
// A plain packet gets its checksum finished (if the kernel left it partial)
// and VXLAN + inner Ethernet in front: one datagram. A TSO/USO super-packet
// is split into gso_size-byte segments; each segment's headers (VXLAN,
// Ethernet, IPv4, TCP/UDP with fresh lengths, IDs, sequence numbers and
// checksums) go to the header arena and its payload stays where it was read,
// so a unit is an iovec list [headers][payload][headers][payload]... that
// the kernel splits into equal datagrams (UDP_SEGMENT): one send per unit of
// up to udpSegs() datagrams (64, or 128 where the kernel takes it), no payload copy. Small segments (a datagram
// no bigger than an arena block) are packed instead: headers and payload
// copied back to back, one iovec per unit.
//
// The virtio_net_hdr comes from the kernel but describes what a local pod
// sent, whose TCP stack a remote peer steers (its MSS option sets the
// segment size, down to a few bytes): every field is checked against the
// packet, and a super-packet of any segment size is carried. One whose
// segments do not fit one call's unit, iovec and arena room is finished over
// several calls: the call returns that packet's descriptor index again and
// the next call, given the same descriptor, resumes at the next segment.
import {
  ARENA_BLOCK, DESC_LEN, DESC_OFF, DESC_SIZE, DIR_ENCAP, E_INVALID, ENCAP_PAYLOAD_OVERHEAD, R_BAD_DESC, R_BAD_VNET,
  R_TOO_BIG, R_TRUNCATED, VNET_HLEN,
} from "./abi";
import { sum16 } from "./checksum";
import { dport, loadConfig, routePacket, routePacket6, rtIhl, rtPeer, rtSport, rtTot, rtUnderlay, rtV6, writeVxlanEth } from "./encap";
import { CFG_OUTER6, CFG_SPLIT6, R_NO_ROUTE } from "./abi";
import { H_FLAGS } from "./layout";
import { peer6_underlay, useMac6 } from "./peers6";
import { arenaBase, bump, descBase, hdrBase, inPackets, maxBatch, maxUnits } from "./layout";
import {
  GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, NEEDS_CSUM, addIov, be16, closeUnit, ipCsum, nIovs, nUnits, openUnit, pseudo, pseudo6, resetUnits, resumeAt, room, tunMtu, udpSegs,
  IP_HLEN, IP_PROTO, IPPROTO_TCP, IPPROTO_UDP, TCP_HLEN, UDP_HLEN, VNET_CSUM_OFFSET, VNET_CSUM_START, VNET_FLAGS, VNET_GSO_SIZE, VNET_GSO_TYPE,
  TCP_CSUM, TCP_CWR, TCP_FIN, TCP_FLAGS, TCP_PSH, UDP_CSUM, UDP_LEN, isFragment, tcpHdrLen,
} from "./units";

const OVERHEAD: u32 = <u32>ENCAP_PAYLOAD_OVERHEAD;
/** One UDP_SEGMENT send carries at most 65507 bytes (a UDP payload's limit). */
const UDP_MAX_PAYLOAD: u32 = 65507;

/** Header-arena blocks used by this call (one per segment; the arena holds maxUnits). */
let nBlocks: u32 = 0;
let mtu: u32 = 0;
/** The super-packet left unfinished by the last call: descriptor index (-1: none), its offset and length, next segment. */
let pendDesc: i32 = -1;
let pendOff: u32 = 0;
let pendLen: u32 = 0;
let pendSeg: u32 = 0;
/** segment(): the first segment it did not write (== segment count when it finished). */
let segNext: u32 = 0;
let segTotal: u32 = 0;
/** The underlay is IPv6 (CFG_OUTER6): a unit's UNIT_ADDR is then the offset of the peer's 16-byte IPv6 address. */
let outer6 = false;
/** CFG_SPLIT6: inner IPv6 over IPv6, inner IPv4 over IPv4. */
let split6 = false;
/** UNIT_FAMILY of the packet being sent. */
let txFam: u32 = 4;
/** UNIT_ADDR of the packet being sent. */
let txAddr: u32 = 0;
/** The super-packet being segmented is IPv6 (TSO6 / USO6). */
let segV6 = false;

/**
 * Processes descriptors [from, n) into units until the unit, iovec or arena
 * room runs out; returns the index of the first descriptor not finished (n
 * when all were). A super-packet cut short returns its own index: call again
 * with that `from` and the call resumes inside it. Every call that starts
 * with room makes progress. tun_units() says how many units were made.
 */
export function tun_tx_batch(from: u32, n: u32): i32 {
  if (hdrBase == 0 || maxUnits == 0 || n > maxBatch || from > n) return E_INVALID;
  loadConfig();
  outer6 = (load<u32>(hdrBase + H_FLAGS) & CFG_OUTER6) != 0;
  split6 = (load<u32>(hdrBase + H_FLAGS) & CFG_SPLIT6) != 0;
  mtu = tunMtu();
  resetUnits();
  nBlocks = 0;
  let resume = resumeAt(from, n, pendDesc, pendOff, pendLen, pendSeg);
  pendDesc = -1;
  let i = from;
  for (; i < n; i++) {
    if (!room(1, 1)) break; // a refusal or a plain packet takes one unit and at most one iovec
    const d = descBase + <usize>i * <usize>DESC_SIZE;
    const off = load<u32>(d, DESC_OFF);
    const len = load<u32>(d, DESC_LEN);
    let res: i32;
    segTotal = 0;
    if (!inPackets(off, len, OVERHEAD - <u32>VNET_HLEN)) res = R_BAD_DESC;
    else if (len < <u32>VNET_HLEN + IP_HLEN) res = R_TRUNCATED;
    else res = txOne(<usize>off, len, resume);
    resume = 0;
    if (res >= 0 && segNext < segTotal) {
      pendDesc = <i32>i;
      pendOff = off;
      pendLen = len;
      pendSeg = segNext;
      break;
    }
    if (res < 0) openUnit(res, 0, 0, 0);
    bump(DIR_ENCAP, res >= 0 ? 0 : <u32>-res);
  }
  return <i32>i;
}

/**
 * One [virtio_net_hdr][IPv4 or IPv6] from the device: units appended, or an
 * R_* code. An IPv6 super-packet (TSO6, USO6) is segmented as an IPv4 one
 * when TCP or UDP follows the fixed header directly (the kernel's GSO does
 * not take extension headers from a TUN device either); each segment gets
 * its payload length and a TCP/UDP checksum over the IPv6 pseudo-header.
 */
function txOne(v: usize, len: u32, resume: u32): i32 {
  const flags = <u32>load<u8>(v, VNET_FLAGS);
  const gsoType = <u32>load<u8>(v, VNET_GSO_TYPE) & 0x7f; // 0x80: ECN, which CWR on the first segment only already honours
  const gsoSize = <u32>load<u16>(v, VNET_GSO_SIZE);
  const cstart = <u32>load<u16>(v, VNET_CSUM_START);
  const coff = <u32>load<u16>(v, VNET_CSUM_OFFSET);
  const p = v + <usize>VNET_HLEN;
  // A super-packet is split before encapsulation: only a plain packet must fit 64 KiB with the headers.
  const v6 = <u32>load<u8>(p) >> 4 == 6;
  const front: u32 = gsoType == GSO_NONE ? OVERHEAD : 0;
  const res = v6 ? routePacket6(p, len - <u32>VNET_HLEN, front) : routePacket(p, len - <u32>VNET_HLEN, front);
  if (res < 0) return res;
  const o6 = outer6 || (split6 && v6);
  txFam = o6 ? 6 : 4;
  txAddr = o6 ? peer6_underlay(<u32>res) : rtUnderlay;
  if (txAddr == 0) return R_NO_ROUTE; // over IPv6, a peer without an IPv6 underlay address
  const tot = rtTot;
  const proto = v6 ? <u32>load<u8>(p, 6) : <u32>load<u8>(p, IP_PROTO);
  if (gsoType == GSO_NONE) {
    if (flags & NEEDS_CSUM) {
      // The kernel left the pseudo-header sum in the field at csum_start + csum_offset: sum the rest over it.
      if (cstart < rtIhl || cstart + coff + 2 > tot) return R_BAD_VNET;
      let c = ~sum16(p + <usize>cstart, tot - cstart, 0) & 0xffff;
      if (c == 0 && proto == IPPROTO_UDP) c = 0xffff;
      be16(p + <usize>(cstart + coff), c);
    }
    writeVxlanEth(p - <usize>OVERHEAD, rtPeer);
    if (rtV6) {
      store<u16>(p - 2, 0xdd86); // inner EtherType IPv6
      useMac6(p - 14, <u32>res);
    }
    const u = openUnit(res, txAddr, rtSport, dport(), txFam);
    addIov(p - <usize>OVERHEAD, tot + OVERHEAD);
    closeUnit(u, 1, 0);
    return res;
  }
  // GSO: hdr_len, csum_start and csum_offset are hints the headers themselves settle; they are not used.
  const tcp = gsoType == (v6 ? GSO_TCPV6 : GSO_TCPV4);
  if (!(tcp && proto == IPPROTO_TCP) && !(gsoType == GSO_UDP_L4 && proto == IPPROTO_UDP)) return R_BAD_VNET;
  if (gsoSize == 0 || (!v6 && isFragment(p))) return R_BAD_VNET; // a fragment is not segmented (IPv6: a fragment header is no TCP/UDP)
  segV6 = v6;
  const ihl = rtIhl;
  const minL4: u32 = tcp ? TCP_HLEN : UDP_HLEN;
  if (tot < ihl + minL4) return R_BAD_VNET;
  const l4len: u32 = tcp ? tcpHdrLen(p + <usize>ihl) : UDP_HLEN;
  const hdrs = ihl + l4len;
  if (l4len < minL4 || hdrs > tot) return R_BAD_VNET;
  const payload = tot - hdrs;
  const segs: u32 = payload == 0 ? 1 : (payload + gsoSize - 1) / gsoSize;
  // The kernel hands out no segment bigger than the device MTU; the datagram would not fit the underlay.
  if (segs > 1 && hdrs + gsoSize > mtu) return R_TOO_BIG;
  segTotal = segs;
  segment(p, payload, hdrs, gsoSize, segs, tcp, res, resume);
  return res;
}

/**
 * Writes segments [first, segs) of a TSO (tcp) or USO (udp) super-packet
 * with `payload` bytes after `hdrs` bytes of headers, as the kernel's GSO
 * would cut them, into units of up to udpSegs() equal datagrams, until
 * the unit, iovec or arena room runs out. segNext says where it stopped.
 */
function segment(p: usize, payload: u32, hdrs: u32, gsoSize: u32, segs: u32, tcp: bool, res: i32, first: u32): void {
  const ihl = rtIhl;
  const l4 = p + <usize>ihl;
  const l4len = hdrs - ihl;
  const seq0 = tcp ? bswap<u32>(load<u32>(l4, 4)) : 0;
  const flags0 = tcp ? <u32>load<u8>(l4, TCP_FLAGS) : 0;
  const id0 = <u32>bswap<u16>(load<u16>(p, 4)); // IPv4 identification (IPv6: unused)
  const ps = segV6 ? pseudo6(p, tcp ? IPPROTO_TCP : IPPROTO_UDP) : pseudo(p, tcp ? IPPROTO_TCP : IPPROTO_UDP);
  // hdrs <= 60 + 60, so OVERHEAD + hdrs <= 170 fits an arena block (ARENA_BLOCK 288).
  const dgram = OVERHEAD + hdrs + gsoSize;
  // Small segments are packed: headers and a copy of the payload back to back
  // in the arena, so that a unit is one iovec (the kernel's copy of many tiny
  // iovecs costs far more than this copy). Each segment still takes one block
  // of the budget, and is no bigger than one, so the arena never overflows.
  const packed = dgram <= <u32>ARENA_BLOCK;
  let cursor = arenaBase + <usize>nBlocks * <usize>ARENA_BLOCK;
  const fit: u32 = UDP_MAX_PAYLOAD / dgram;
  const maxSegs = udpSegs();
  const perUnit: u32 = fit < maxSegs ? (fit > 0 ? fit : 1) : maxSegs;
  let k = first;
  while (k < segs && room(1, 2) && nBlocks < maxUnits) {
    const u = openUnit(res, txAddr, rtSport, dport(), txFam);
    const want: u32 = segs - k < perUnit ? segs - k : perUnit;
    let cnt: u32 = 0;
    const start = cursor;
    while (cnt < want && nIovs + 2 <= 2 * maxUnits && nBlocks < maxUnits) {
      const s = k + cnt;
      const at = s * gsoSize;
      const size = payload - at < gsoSize ? payload - at : gsoSize;
      const h = packed ? cursor : arenaBase + <usize>nBlocks * <usize>ARENA_BLOCK;
      nBlocks++;
      writeVxlanEth(h, rtPeer);
      if (segV6) {
        store<u16>(h + 20, 0xdd86); // inner EtherType IPv6
        useMac6(h + 8, <u32>res);
      }
      const ip = h + <usize>OVERHEAD;
      memory.copy(ip, p, hdrs);
      if (segV6) {
        be16(ip + 4, hdrs - ihl + size); // payload length; no header checksum
      } else {
        be16(ip + 2, hdrs + size);
        be16(ip + 4, (id0 + s) & 0xffff);
        ipCsum(ip, ihl);
      }
      const t = ip + <usize>ihl;
      let chunk = p + <usize>hdrs + <usize>at;
      if (packed) {
        memory.copy(ip + <usize>hdrs, chunk, size);
        chunk = ip + <usize>hdrs;
        cursor = chunk + <usize>size;
      }
      if (tcp) {
        store<u32>(t, bswap<u32>(seq0 + at), 4);
        let f = flags0;
        if (s > 0) f &= ~TCP_CWR;
        if (s < segs - 1) f &= ~(TCP_FIN | TCP_PSH);
        store<u8>(t, <u8>f, TCP_FLAGS);
        store<u16>(t, 0, TCP_CSUM);
        be16(t + TCP_CSUM, ~sum16(chunk, size, sum16(t, l4len, ps + l4len + size)) & 0xffff);
      } else {
        be16(t + UDP_LEN, UDP_HLEN + size);
        store<u16>(t, 0, UDP_CSUM);
        const c = ~sum16(chunk, size, sum16(t, UDP_HLEN, ps + UDP_HLEN + size)) & 0xffff;
        be16(t + UDP_CSUM, c == 0 ? 0xffff : c);
      }
      if (!packed) {
        addIov(h, OVERHEAD + hdrs);
        if (size > 0) addIov(chunk, size);
      }
      cnt++;
    }
    if (packed) addIov(start, <u32>(cursor - start));
    closeUnit(u, cnt, cnt > 1 ? dgram : 0);
    k += cnt;
  }
  segNext = k;
}
