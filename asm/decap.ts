// VXLAN decapsulation of a batch of received UDP payloads, in place.
//
// Checks follow the Linux vxlan driver's receive path (vxlan_rcv): the I flag
// must be set, the VNI must be ours, every other flag and reserved bit must be
// zero (Linux is stricter than RFC 7348 here, and so are we), a frame whose
// source MAC is our own is dropped. The inner frame must then be addressed to
// our VTEP MAC and carry a well-formed IPv4 or IPv6 packet (as the IP layer
// would require), and, beyond the kernel, come from a known node and carry a
// source address inside that node's subnet (IPv6: its IPv6 subnet).
// decap6_batch takes VXLAN that arrived over IPv6: the outer source address
// of descriptor i is the 16 bytes at L_ADDR6_BASE + 16 i. Its UDP checksum is
// not checked here: these are payloads of a UDP socket, and the kernel has
// verified the checksum (and dropped zero-checksum IPv6 datagrams) before
// delivering them. Outer CE marks are propagated as RFC 6040
// and Linux's INET_ECN_decapsulate do.
import {
  DESC_ADDR, DESC_LEN, DESC_OFF, DESC_SIZE, DESC_TOS, DIR_DECAP, E_INVALID, R_BAD_CSUM,
  R_BAD_DESC, R_BAD_DST_MAC, R_BAD_FLAGS, R_BAD_VNI, R_ECN, R_LOOPED, R_MALFORMED, R_NOT_IPV4,
  R_SPOOFED, R_TRUNCATED, R_UNKNOWN_NODE,
} from "./abi";
import { csum_replace16, sum16 } from "./checksum";
import { H_LOCAL_MAC, H_VNI, descBase, hdrBase, inPackets, maxBatch, settle } from "./layout";
import { P_MASK, P_SUBNET, peerAt, peerByUnderlay } from "./peers";
import { P6_HAS_SUBNET, P6_MASK_HI, P6_MASK_LO, P6_SUB_HI, P6_SUB_LO, peer6At, peerByUnderlay6 } from "./peers6";
import { addr6Base } from "./layout";

let vni: u32 = 0;
let macHi: u16 = 0;
let macLo: u32 = 0;

/** Reads our VNI and VTEP MAC once per batch. */
export function loadDecapConfig(): void {
  vni = load<u32>(hdrBase + H_VNI);
  macHi = load<u16>(hdrBase + H_LOCAL_MAC);
  macLo = load<u32>(hdrBase + H_LOCAL_MAC, 2);
}

/** Total length of the inner packet decapCore() accepted (it starts at p + 22). */
export let decTot: u32 = 0;

/**
 * Decapsulates descriptors [0, n): each names a UDP payload (off, len) and the
 * outer source address and TOS it arrived with. On success the descriptor
 * names the inner IPv4 packet (trimmed to its total length) and its result is
 * the sending peer's index. Returns how many were accepted, or E_INVALID.
 */
export function decap_batch(n: u32): i32 {
  return decapBatch(n, false);
}

/** decap_batch() for VXLAN that arrived over IPv6 (outer sources in the IPv6 scratch region). */
export function decap6_batch(n: u32): i32 {
  return decapBatch(n, true);
}

/** Both batch entries: the sender of descriptor i is its DESC_ADDR (IPv4) or its 16 bytes in the IPv6 scratch region. */
function decapBatch(n: u32, v6: bool): i32 {
  if (hdrBase == 0 || n > maxBatch) return E_INVALID;
  loadDecapConfig();
  let ok: i32 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const d = descBase + <usize>i * <usize>DESC_SIZE;
    const off = load<u32>(d, DESC_OFF);
    const len = load<u32>(d, DESC_LEN);
    let res: i32 = R_BAD_DESC;
    if (inPackets(off, len, 0)) {
      const src = addr6Base + (<usize>i << 4);
      const idx = v6 ? peerByUnderlay6(bswap<u64>(load<u64>(src)), bswap<u64>(load<u64>(src, 8))) : peerByUnderlay(load<u32>(d, DESC_ADDR));
      res = decapCore(<usize>off, len, idx, <u32>load<u8>(d, DESC_TOS), true);
    }
    if (res >= 0) {
      store<u32>(d, off + 22, DESC_OFF);
      store<u32>(d, decTot, DESC_LEN);
    }
    ok += settle(d, DIR_DECAP, res);
  }
  return ok;
}

/**
 * One VXLAN payload for the tun receive path, its sender already resolved
 * (-1: unknown): the peer index (decTot set, inner IPv4 or IPv6 packet at
 * p + 22; its version nibble says which), or an R_* code.
 */
export function decapFrom(p: usize, len: u32, idx: i32, outerTos: u32): i32 {
  return decapCore(p, len, idx, outerTos, true);
}

/** An inner IPv6 packet at ip (avail bytes) from peer idx (-1: unknown). */
function decapInner6(ip: usize, avail: u32, idx: i32, outerTos: u32): i32 {
  if (avail < 40) return R_TRUNCATED;
  const b0 = <u32>load<u8>(ip);
  if (b0 >> 4 != 6) return R_NOT_IPV4;
  const tot = <u32>40 + <u32>bswap<u16>(load<u16>(ip, 4));
  if (tot > avail) return R_MALFORMED;
  if (idx < 0) return R_UNKNOWN_NODE;
  const peer = peer6At(<u32>idx);
  if (load<u8>(peer + P6_HAS_SUBNET) == 0) return R_SPOOFED;
  const hi = bswap<u64>(load<u64>(ip, 8));
  const lo = bswap<u64>(load<u64>(ip, 16));
  if ((hi & load<u64>(peer + P6_MASK_HI)) != load<u64>(peer + P6_SUB_HI) || (lo & load<u64>(peer + P6_MASK_LO)) != load<u64>(peer + P6_SUB_LO)) {
    return R_SPOOFED;
  }
  // ECN (RFC 6040): the traffic class's low bits are bits 5..4 of byte 1; no header checksum to mend.
  if ((outerTos & 3) == 3) {
    const b1 = <u32>load<u8>(ip, 1);
    if (((b1 >> 4) & 3) == 0) return R_ECN;
    store<u8>(ip, <u8>(b1 | 0x30), 1);
  }
  decTot = tot;
  return idx;
}

/**
 * One VXLAN payload at p (len bytes) from peer `idx` (-1: not a known node)
 * with outer TOS `outerTos`: the sending peer's index (decTot set, inner
 * packet at p + 22, ECN applied), or an R_* code. Inner IPv6 only when `allow6`.
 */
function decapCore(p: usize, len: u32, idx: i32, outerTos: u32, allow6: bool): i32 {
  // ---- VXLAN header (vxlan_rcv: header present, I flag, VNI, then leftovers)
  if (len < 8) return R_TRUNCATED;
  const flags = bswap<u32>(load<u32>(p));
  const vniWord = bswap<u32>(load<u32>(p, 4));
  if ((flags & 0x08000000) == 0) return R_BAD_FLAGS;
  if (vniWord >>> 8 != vni) return R_BAD_VNI;
  if ((flags & ~0x08000000) != 0 || (vniWord & 0xff) != 0) return R_BAD_FLAGS;
  // ---- inner Ethernet
  if (len < 8 + 14) return R_TRUNCATED;
  const eth = p + 8;
  if (load<u16>(eth) != macHi || load<u32>(eth, 2) != macLo) return R_BAD_DST_MAC;
  if (load<u16>(eth, 6) == macHi && load<u32>(eth, 8) == macLo) return R_LOOPED;
  const etype = load<u16>(eth, 12);
  if (allow6 && etype == 0xdd86) return decapInner6(eth + 14, len - 22, idx, outerTos);
  if (etype != 0x0008) return R_NOT_IPV4;
  // ---- inner IPv4, as ip_rcv checks it
  const ip = eth + 14;
  const avail = len - 22;
  if (avail < 20) return R_TRUNCATED;
  const vihl = <u32>load<u8>(ip);
  if (vihl >> 4 != 4) return R_NOT_IPV4;
  const ihl = (vihl & 15) << 2;
  const tot = <u32>bswap<u16>(load<u16>(ip, 2));
  if (ihl < 20 || tot < ihl || tot > avail) return R_MALFORMED;
  if (sum16(ip, ihl, 0) != 0xffff) return R_BAD_CSUM;
  // ---- anti-spoofing: a known node, sending from inside its own subnet
  if (idx < 0) return R_UNKNOWN_NODE;
  const peer = peerAt(<u32>idx);
  const src = bswap<u32>(load<u32>(ip, 12));
  if ((src & load<u32>(peer + P_MASK)) != load<u32>(peer + P_SUBNET)) return R_SPOOFED;
  // ---- ECN (RFC 6040): outer CE on not-ECT inner drops; on ECT marks the inner CE
  if ((outerTos & 3) == 3) {
    const tos = <u32>load<u8>(ip, 1);
    if ((tos & 3) == 0) return R_ECN;
    if ((tos & 3) != 3) {
      const oldWord = (vihl << 8) | tos;
      const newWord = (vihl << 8) | tos | 3;
      const check = <u32>bswap<u16>(load<u16>(ip, 10));
      store<u8>(ip, <u8>(tos | 3), 1);
      store<u16>(ip, bswap<u16>(<u16>csum_replace16(check, oldWord, newWord)), 10);
    }
  }
  decTot = tot;
  return idx;
}
