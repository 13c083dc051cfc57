// The IPv6 side of the peer table: per peer index (the same indexes as
// asm/peers.ts) its IPv6 underlay address and its IPv6 pod subnet, plus a
// hash from the IPv6 underlay address back to the index (decap6_batch's
// anti-spoofing check). A slot is set after peer_set() and cleared with it.
//
// Slot (64 bytes): +0 underlay, 16 bytes wire order | +16 subnet high u64 |
// +24 subnet low u64 | +32 mask high u64 | +40 mask low u64 |
// +48 u8 has underlay | +49 u8 has subnet | +50 u8 prefix length |
// +51 u8 has IPv6 VTEP MAC | +52 6 bytes IPv6 VTEP MAC (wire order: BackendV6Data's, the inner
// destination MAC of IPv6 frames to this peer when set)
import { E_INVALID, E_NOT_FOUND, E_OK, PEER_VALID } from "./abi";
import { hash6Del, hash6Get, hash6Put } from "./hash6";
import { hdrBase, maxPeers, peerHash6Base, peerHash6Mask, peers6Base, peersBase } from "./layout";

export const P6_UNDERLAY: usize = 0;
export const P6_SUB_HI: usize = 16;
export const P6_SUB_LO: usize = 24;
export const P6_MASK_HI: usize = 32;
export const P6_MASK_LO: usize = 40;
export const P6_HAS_UNDERLAY: usize = 48;
export const P6_HAS_SUBNET: usize = 49;
export const P6_HAS_MAC: usize = 51;
export const P6_MAC: usize = 52;
const SLOT: usize = 64;
const NONE: u32 = 0xffffffff;
/** asm/peers.ts: slot size and flags offset of the IPv4 side (not imported: peers.ts imports this file). */
const V4_SLOT: usize = 32;
const V4_FLAGS: usize = 11;

@inline export function peer6At(idx: u32): usize {
  return peers6Base + <usize>idx * SLOT;
}

/** Peer index whose IPv6 underlay address is (hi, lo) (host-order halves), or -1. */
@inline export function peerByUnderlay6(hi: u64, lo: u64): i32 {
  return <i32>hash6Get(peerHash6Base, peerHash6Mask, hi, lo, 128, NONE);
}

@inline function maskHi(len: u32): u64 {
  return len == 0 ? 0 : len >= 64 ? <u64>-1 : (<u64>-1) << (64 - <u64>len);
}
@inline function maskLo(len: u32): u64 {
  return len <= 64 ? 0 : (<u64>-1) << (128 - <u64>len);
}

/** Forgets the IPv6 side of slot idx (peer_clear calls it). */
export function peer6Forget(idx: u32): void {
  const p = peer6At(idx);
  if (load<u8>(p + P6_HAS_UNDERLAY)) {
    hash6Del(peerHash6Base, peerHash6Mask, bswap<u64>(load<u64>(p)), bswap<u64>(load<u64>(p, 8)), 128);
  }
  memory.fill(p, 0, SLOT);
}

/**
 * Sets the IPv6 side of peer `idx` (which peer_set must have stored):
 * underlay (u0..u3; all zero: none) and pod subnet (s0..s3 / plen; plen 255:
 * none, so decap refuses every IPv6 packet from it). E_NOT_FOUND for an
 * empty slot, E_INVALID for a bad index or length, or an underlay address
 * another peer holds.
 */
export function peer6_set(
  idx: u32, u0: u32, u1: u32, u2: u32, u3: u32, s0: u32, s1: u32, s2: u32, s3: u32, plen: u32, hasMac: u32, macHi: u32, macLo: u32,
): i32 {
  if (hdrBase == 0 || idx >= maxPeers || (plen > 128 && plen != 255) || hasMac > 1 || macHi > 0xffff) return E_INVALID;
  if ((load<u8>(peersBase + <usize>idx * V4_SLOT + V4_FLAGS) & <u8>PEER_VALID) == 0) return E_NOT_FOUND;
  const hi = ((<u64>u0) << 32) | <u64>u1;
  const lo = ((<u64>u2) << 32) | <u64>u3;
  const has = (hi | lo) != 0;
  if (has) {
    const other = peerByUnderlay6(hi, lo);
    if (other >= 0 && <u32>other != idx) return E_INVALID;
  }
  peer6Forget(idx);
  const p = peer6At(idx);
  if (has) {
    store<u64>(p, bswap<u64>(hi));
    store<u64>(p, bswap<u64>(lo), 8);
    store<u8>(p + P6_HAS_UNDERLAY, 1);
    hash6Put(peerHash6Base, peerHash6Mask, hi, lo, 128, idx);
  }
  if (plen != 255) {
    const mh = maskHi(plen), ml = maskLo(plen);
    store<u64>(p + P6_SUB_HI, (((<u64>s0) << 32) | <u64>s1) & mh);
    store<u64>(p + P6_SUB_LO, (((<u64>s2) << 32) | <u64>s3) & ml);
    store<u64>(p + P6_MASK_HI, mh);
    store<u64>(p + P6_MASK_LO, ml);
    store<u8>(p + P6_HAS_SUBNET, 1);
    store<u8>(p, <u8>plen, 50);
  }
  if (hasMac) {
    store<u8>(p + P6_HAS_MAC, 1);
    store<u16>(p + P6_MAC, bswap<u16>(<u16>macHi));
    store<u32>(p + P6_MAC + 2, bswap<u32>(macLo));
  }
  return E_OK;
}

/** Puts peer idx's IPv6 VTEP MAC, when it has one, as the destination of the inner Ethernet header at eth. */
@inline export function useMac6(eth: usize, idx: u32): void {
  const p = peer6At(idx);
  if (load<u8>(p + P6_HAS_MAC)) {
    store<u16>(eth, load<u16>(p + P6_MAC));
    store<u32>(eth, load<u32>(p + P6_MAC + 2), 2);
  }
}

/** Offset of peer idx's 16-byte IPv6 underlay address (wire order), or 0 when it has none. */
export function peer6_underlay(idx: u32): u32 {
  if (hdrBase == 0 || idx >= maxPeers) return 0;
  const p = peer6At(idx);
  return load<u8>(p + P6_HAS_UNDERLAY) ? <u32>p : 0;
}

/** Peer index holding this IPv6 underlay address, or -1. */
export function peer6_find(u0: u32, u1: u32, u2: u32, u3: u32): i32 {
  if (hdrBase == 0) return -1;
  return peerByUnderlay6(((<u64>u0) << 32) | <u64>u1, ((<u64>u2) << 32) | <u64>u3);
}
