// VXLAN decapsulation of a batch of received UDP payloads, in place.
//
// Checks follow the Linux vxlan driver's receive path (vxlan_rcv): the I flag
// must be set, the VNI must be ours, every other flag and reserved bit must be
// zero (Linux is stricter than RFC 7348 here, and so are we), a frame whose
// source MAC is our own is dropped. The inner frame must then be addressed to
// our VTEP MAC and carry a well-formed IPv4 packet (as the IP layer would
// require), and, beyond the kernel, come from a known node and carry a source
// address inside that node's subnet. Outer CE marks are propagated as RFC 6040
// and Linux's INET_ECN_decapsulate do.
import {
  DESC_ADDR, DESC_LEN, DESC_OFF, DESC_SIZE, DESC_TOS, DIR_DECAP, E_INVALID, R_BAD_CSUM,
  R_BAD_DESC, R_BAD_DST_MAC, R_BAD_FLAGS, R_BAD_VNI, R_ECN, R_LOOPED, R_MALFORMED, R_NOT_IPV4,
  R_SPOOFED, R_TRUNCATED, R_UNKNOWN_NODE,
} from "./abi";
import { csum_replace16, sum16 } from "./checksum";
import { H_LOCAL_MAC, H_VNI, descBase, hdrBase, inPackets, maxBatch, settle } from "./layout";
import { P_MASK, P_SUBNET, peerAt, peerByUnderlay } from "./peers";

let vni: u32 = 0;
let macHi: u16 = 0;
let macLo: u32 = 0;

/** Reads our VNI and VTEP MAC once per batch. */
export function loadDecapConfig(): void {
  vni = load<u32>(hdrBase + H_VNI);
  macHi = load<u16>(hdrBase + H_LOCAL_MAC);
  macLo = load<u32>(hdrBase + H_LOCAL_MAC, 2);
}

/** Total length of the inner IPv4 packet decapPacket() accepted (it starts at p + 22). */
export let decTot: u32 = 0;

/**
 * Decapsulates descriptors [0, n): each names a UDP payload (off, len) and the
 * outer source address and TOS it arrived with. On success the descriptor
 * names the inner IPv4 packet (trimmed to its total length) and its result is
 * the sending peer's index. Returns how many were accepted, or E_INVALID.
 */
export function decap_batch(n: u32): i32 {
  if (hdrBase == 0 || n > maxBatch) return E_INVALID;
  loadDecapConfig();
  let ok: i32 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const d = descBase + <usize>i * <usize>DESC_SIZE;
    const off = load<u32>(d, DESC_OFF);
    const len = load<u32>(d, DESC_LEN);
    const res = inPackets(off, len, 0)
      ? decapPacket(<usize>off, len, load<u32>(d, DESC_ADDR), <u32>load<u8>(d, DESC_TOS))
      : R_BAD_DESC;
    if (res >= 0) {
      store<u32>(d, off + 22, DESC_OFF);
      store<u32>(d, decTot, DESC_LEN);
    }
    ok += settle(d, DIR_DECAP, res);
  }
  return ok;
}

/**
 * One VXLAN payload at p (len bytes) from underlay address `outer` with outer
 * TOS `outerTos`: the sending peer's index (decTot set, inner IPv4 at p + 22,
 * ECN applied), or an R_* code.
 */
export function decapPacket(p: usize, len: u32, outer: u32, outerTos: u32): i32 {
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
  if (load<u16>(eth, 12) != 0x0008) return R_NOT_IPV4;
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
  const idx = peerByUnderlay(outer);
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
