// VXLAN encapsulation of a batch of inner IPv4 or IPv6 packets, in place.
//
// Each descriptor (abi.ts) names an inner IPv4 packet inside the packet region
// with at least the mode's overhead of free bytes in front of it. For each
// packet: validate the IPv4 header, look the destination up in the LPM table,
// then write in front of it the inner Ethernet header (dst = the peer's VTEP
// MAC, src = ours, EtherType IPv4 or IPv6) and the VXLAN header (flags 0x08,
// VNI), and in frame mode also the UDP and outer IPv4 headers, or outer IPv6
// with CFG_OUTER6 (asm/encap6.ts). Inner IPv6 is routed by the IPv6 table. The descriptor is
// rewritten to describe the result. Nothing is allocated or copied.
import {
  CFG_DF, CFG_UDP_CSUM, DESC_ADDR, DESC_DPORT, DESC_LEN, DESC_OFF, DESC_SIZE, DESC_SPORT,
  DESC_TOS, DIR_ENCAP, E_INVALID, ENCAP_FRAME_OVERHEAD, ENCAP_MODE_FRAME, ENCAP_MODE_PAYLOAD,
  ENCAP_PAYLOAD_OVERHEAD, PEER_LOCAL, PEER_VALID, R_LOCAL, R_MALFORMED, R_NO_ROUTE, R_NOT_IPV4,
  R_TOO_BIG, R_TRUNCATED, R_BAD_DESC, LPM_MISS, CFG_OUTER6, CFG_SPLIT6, ENCAP_FRAME6_OVERHEAD,
} from "./abi";
import { fold6, writeOuter6 } from "./encap6";
import { lookup6At } from "./lpm6";
import { peer6_underlay, useMac6 } from "./peers6";
import { sum16 } from "./checksum";
import { flow_hash, flow_sport } from "./flow";
import {
  H_DPORT, H_FLAGS, H_IP_ID, H_LOCAL_IP, H_LOCAL_MAC, H_PORT_MAX, H_PORT_MIN, H_SEED, H_TTL,
  H_VNI, descBase, hdrBase, inPackets, maxBatch, settle,
} from "./layout";
import { lookup } from "./lpm";
import { P_FLAGS, P_MAC, P_UNDERLAY, peerAt } from "./peers";

/** L4 protocols whose first four header bytes are the source and destination ports. */
@inline function hasPorts(proto: u32): bool {
  return proto == 6 || proto == 17 || proto == 33 || proto == 132 || proto == 136;
}

/** Outer ECN from the inner TOS (INET_ECN_encapsulate with outer TOS 0): CE becomes ECT(0). */
@inline function ecnEncap(innerTos: u32): u32 {
  const ecn = innerTos & 3;
  return ecn == 3 ? 2 : ecn;
}

// The tunnel parameters of the batch being processed (loadConfig()).
let vniWord: u32 = 0;
let macHi: u16 = 0;
let macLo: u32 = 0;
let cfgDport: u32 = 0;
let pmin: u32 = 0;
let pmax: u32 = 0;
let seed: u32 = 0;
let cfgFlags: u32 = 0;

/** Reads the tunnel parameters from the header once per batch. */
export function loadConfig(): void {
  vniWord = bswap<u32>(load<u32>(hdrBase + H_VNI) << 8);
  macHi = load<u16>(hdrBase + H_LOCAL_MAC);
  macLo = load<u32>(hdrBase + H_LOCAL_MAC, 2);
  cfgDport = <u32>load<u16>(hdrBase + H_DPORT);
  pmin = <u32>load<u16>(hdrBase + H_PORT_MIN);
  pmax = <u32>load<u16>(hdrBase + H_PORT_MAX);
  seed = load<u32>(hdrBase + H_SEED);
  cfgFlags = load<u32>(hdrBase + H_FLAGS);
}

// What routePacket() found for the packet it accepted.
export let rtPeer: usize = 0;
export let rtUnderlay: u32 = 0;
export let rtSport: u32 = 0;
export let rtTos: u32 = 0;
export let rtTot: u32 = 0;
export let rtIhl: u32 = 0;
export let rtHash: u32 = 0;
/** Inner packet is IPv6 (routePacket6). */
export let rtV6: bool = false;

/**
 * Validates the inner IPv4 packet at p (len bytes available) and routes it:
 * returns the peer index (and sets rt*: peer slot, underlay, source port,
 * outer TOS, total and header length), or an R_* code. `front` is the
 * encapsulation overhead the caller will add (for the 64 KiB limit).
 */
export function routePacket(p: usize, len: u32, front: u32): i32 {
  if (len < 20) return R_TRUNCATED;
  const vihl = <u32>load<u8>(p);
  const ihl = (vihl & 15) << 2;
  const tot = <u32>bswap<u16>(load<u16>(p, 2));
  if (vihl >> 4 != 4) return R_NOT_IPV4;
  if (ihl < 20 || tot < ihl || tot > len) return R_MALFORMED;
  if (tot + front > 0xffff) return R_TOO_BIG;
  const dst = bswap<u32>(load<u32>(p, 16));
  const nh = lookup(dst);
  if (nh == LPM_MISS) return R_NO_ROUTE;
  const peer = peerAt(<u32>nh);
  const pf = <u32>load<u8>(peer + P_FLAGS);
  if ((pf & PEER_VALID) == 0) return R_NO_ROUTE;
  if (pf & PEER_LOCAL) return R_LOCAL;
  // Flow hash -> source port (fragments hash without ports, so they stay together).
  const src = bswap<u32>(load<u32>(p, 12));
  const proto = <u32>load<u8>(p, 9);
  const fragBits = <u32>bswap<u16>(load<u16>(p, 6)) & 0x3fff;
  let ports: u32 = 0;
  if (fragBits == 0 && hasPorts(proto) && ihl + 4 <= tot) ports = bswap<u32>(load<u32>(p + <usize>ihl));
  rtHash = flow_hash(src, dst, ports, proto, seed);
  rtSport = flow_sport(rtHash, pmin, pmax);
  rtV6 = false;
  rtTos = ecnEncap(<u32>load<u8>(p, 1));
  rtUnderlay = load<u32>(peer + P_UNDERLAY);
  rtPeer = peer;
  rtTot = tot;
  rtIhl = ihl;
  return nh;
}

/**
 * routePacket() for an inner IPv6 packet at p: 40-byte header, payload
 * length inside `len`, destination looked up in the IPv6 table. Ports for
 * the flow hash are read when the next header is TCP/UDP-like (extension
 * headers are not walked: such packets hash on addresses alone).
 */
export function routePacket6(p: usize, len: u32, front: u32): i32 {
  if (len < 40) return R_TRUNCATED;
  if (<u32>load<u8>(p) >> 4 != 6) return R_NOT_IPV4;
  const tot: u32 = <u32>40 + <u32>bswap<u16>(load<u16>(p, 4));
  if (tot > len) return R_MALFORMED;
  if (tot + front > 0xffff) return R_TOO_BIG;
  const nh = lookup6At(p + 24);
  if (nh == LPM_MISS) return R_NO_ROUTE;
  const peer = peerAt(<u32>nh);
  const pf = <u32>load<u8>(peer + P_FLAGS);
  if ((pf & PEER_VALID) == 0) return R_NO_ROUTE;
  if (pf & PEER_LOCAL) return R_LOCAL;
  const proto = <u32>load<u8>(p, 6);
  const ports = hasPorts(proto) && tot >= <u32>44 ? bswap<u32>(load<u32>(p + 40)) : <u32>0;
  rtHash = flow_hash(bswap<u32>(fold6(p + 8)), bswap<u32>(fold6(p + 24)), ports, proto, seed);
  rtSport = flow_sport(rtHash, pmin, pmax);
  rtTos = ecnEncap(((<u32>load<u8>(p) & 15) << 4) | (<u32>load<u8>(p, 1) >> 4));
  rtUnderlay = load<u32>(peer + P_UNDERLAY);
  rtPeer = peer;
  rtTot = tot;
  rtIhl = 40;
  rtV6 = true;
  return nh;
}

/** Writes the VXLAN header and the inner Ethernet header (22 bytes) at vx, for the peer at `peer`. */
@inline export function writeVxlanEth(vx: usize, peer: usize): void {
  store<u32>(vx, 0x00000008); // flags word 0x08000000: I
  store<u32>(vx, vniWord, 4); // VNI << 8
  const eth = vx + 8; // dst = the peer's VTEP MAC, src = ours, type IPv4
  store<u16>(eth, load<u16>(peer + P_MAC));
  store<u32>(eth, load<u32>(peer + P_MAC, 2), 2);
  store<u16>(eth, macHi, 6);
  store<u32>(eth, macLo, 8);
  store<u16>(eth, 0x0008, 12);
}

/** The configured UDP destination port. */
@inline export function dport(): u32 {
  return cfgDport;
}

/**
 * Encapsulates descriptors [0, n) of the descriptor region. `mode` is
 * ENCAP_MODE_PAYLOAD or ENCAP_MODE_FRAME. Returns how many packets were
 * encapsulated (the others carry a negative result), or E_INVALID.
 */
export function encap_batch(n: u32, mode: u32): i32 {
  if (hdrBase == 0 || n > maxBatch || mode > <u32>ENCAP_MODE_FRAME) return E_INVALID;
  const frame = mode == <u32>ENCAP_MODE_FRAME;
  loadConfig();
  const all6 = (cfgFlags & CFG_OUTER6) != 0;
  const split6 = (cfgFlags & CFG_SPLIT6) != 0;
  const front: u32 = frame ? (all6 || split6 ? <u32>ENCAP_FRAME6_OVERHEAD : <u32>ENCAP_FRAME_OVERHEAD) : <u32>ENCAP_PAYLOAD_OVERHEAD;
  let ok: i32 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const d = descBase + <usize>i * <usize>DESC_SIZE;
    const off = load<u32>(d, DESC_OFF);
    const len = load<u32>(d, DESC_LEN);
    let res = !inPackets(off, len, front) ? R_BAD_DESC
      : len > 0 && <u32>load<u8>(<usize>off) >> 4 == 6 ? routePacket6(<usize>off, len, front) : routePacket(<usize>off, len, front);
    // Over IPv6 (all packets, or with CFG_SPLIT6 the IPv6 ones) the peer must have an IPv6 underlay address.
    const outer6 = res >= 0 && (all6 || (split6 && rtV6));
    const dst6 = outer6 ? <usize>peer6_underlay(<u32>res) : 0;
    if (outer6 && res >= 0 && dst6 == 0) res = R_NO_ROUTE;
    if (res >= 0) {
      const p = <usize>off;
      writeVxlanEth(p - <usize>ENCAP_PAYLOAD_OVERHEAD, rtPeer);
      if (rtV6) {
        store<u16>(p - 2, 0xdd86); // inner EtherType IPv6
        useMac6(p - 14, <u32>res);
      }
      let start = p - <usize>ENCAP_PAYLOAD_OVERHEAD;
      let outLen = rtTot + <u32>ENCAP_PAYLOAD_OVERHEAD;
      if (frame && outer6) {
        outLen = rtTot + <u32>ENCAP_FRAME6_OVERHEAD;
        start = writeOuter6(p - <usize>ENCAP_FRAME6_OVERHEAD, outLen - 40, rtTos, dst6, rtSport, cfgDport, rtHash, cfgFlags);
      } else if (frame) {
        outLen = rtTot + <u32>ENCAP_FRAME_OVERHEAD;
        start = writeOuter(p - <usize>ENCAP_FRAME_OVERHEAD, outLen, rtTos, rtUnderlay, rtSport, cfgDport, cfgFlags);
      }
      store<u32>(d, <u32>start, DESC_OFF);
      store<u32>(d, outLen, DESC_LEN);
      store<u32>(d, outer6 ? 0 : rtUnderlay, DESC_ADDR);
      store<u16>(d, <u16>rtSport, DESC_SPORT);
      store<u16>(d, <u16>cfgDport, DESC_DPORT);
      store<u8>(d, <u8>rtTos, DESC_TOS);
    }
    ok += settle(d, DIR_ENCAP, res);
  }
  return ok;
}

/** Writes outer IPv4 (20 bytes, no options) and UDP headers at `ip`; returns `ip`. */
function writeOuter(
  ip: usize, totLen: u32, tos: u32, dstIp: u32, sport: u32, dport: u32, flags: u32,
): usize {
  const srcIp = load<u32>(hdrBase + H_LOCAL_IP);
  const id = load<u32>(hdrBase + H_IP_ID);
  store<u32>(hdrBase + H_IP_ID, id + 1);
  store<u8>(ip, 0x45);
  store<u8>(ip, <u8>tos, 1);
  store<u16>(ip, bswap<u16>(<u16>totLen), 2);
  store<u16>(ip, bswap<u16>(<u16>id), 4);
  store<u16>(ip, (flags & CFG_DF) ? 0x0040 : 0, 6); // DF is 0x4000 big-endian
  store<u8>(ip, load<u8>(hdrBase + H_TTL), 8);
  store<u8>(ip, 17, 9);
  store<u16>(ip, 0, 10);
  store<u32>(ip, bswap<u32>(srcIp), 12);
  store<u32>(ip, bswap<u32>(dstIp), 16);
  store<u16>(ip, bswap<u16>(<u16>(~sum16(ip, 20, 0) & 0xffff)), 10);

  const udp = ip + 20;
  const udpLen = totLen - 20;
  store<u16>(udp, bswap<u16>(<u16>sport));
  store<u16>(udp, bswap<u16>(<u16>dport), 2);
  store<u16>(udp, bswap<u16>(<u16>udpLen), 4);
  store<u16>(udp, 0, 6);
  if (flags & CFG_UDP_CSUM) {
    // Pseudo-header: addresses, protocol, UDP length.
    const pseudo = (srcIp >>> 16) + (srcIp & 0xffff) + (dstIp >>> 16) + (dstIp & 0xffff) + 17 + udpLen;
    let c = ~sum16(udp, udpLen, pseudo) & 0xffff;
    if (c == 0) c = 0xffff; // RFC 768: a computed zero is sent as all ones
    store<u16>(udp, bswap<u16>(<u16>c), 6);
  }
  return ip;
}
