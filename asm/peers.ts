// The peer table: one 32-byte slot per node we exchange tunnel traffic with,
// indexed by the next-hop index the LPM table returns, plus a hash from the
// peer's underlay address back to its slot (decap's anti-spoofing check).
//
// Slot: +0 u32 underlay address | +4 6 bytes VTEP MAC (wire order) |
//       +10 u8 prefix length | +11 u8 flags (PEER_*) | +12 u32 subnet | +16 u32 mask
import { E_INVALID, E_NOT_FOUND, E_OK, PEER_V6_ONLY, PEER_VALID } from "./abi";
import { hashDel, hashGet, hashPut } from "./hash";
import { peer6Forget } from "./peers6";
import { H_PEERS, hdrBase, maxPeers, peerHashBase, peerHashMask, peersBase } from "./layout";

export const P_UNDERLAY: usize = 0;
export const P_MAC: usize = 4;
export const P_PLEN: usize = 10;
export const P_FLAGS: usize = 11;
export const P_SUBNET: usize = 12;
export const P_MASK: usize = 16;
const SLOT: usize = 32;
const NONE: u32 = 0xffffffff;

@inline export function peerAt(idx: u32): usize {
  return peersBase + <usize>idx * SLOT;
}

@inline function underlayKey(ip: u32): u64 {
  return (<u64>1 << 32) | <u64>ip;
}

/** Slot index of the peer whose underlay address is `ip`, or -1. */
@inline export function peerByUnderlay(ip: u32): i32 {
  return <i32>hashGet(peerHashBase, peerHashMask, underlayKey(ip), NONE);
}

/**
 * Stores peer `idx`. `subnet`/`plen` is the pod subnet it owns (host bits are
 * cleared). E_INVALID when idx or plen is out of range, the underlay address is
 * 0.0.0.0, or another slot already holds that underlay address.
 */
export function peer_set(
  idx: u32, underlay: u32, macHi: u32, macLo: u32, subnet: u32, plen: u32, flags: u32,
): i32 {
  const v6only = (flags & PEER_V6_ONLY) != 0;
  if (hdrBase == 0 || idx >= maxPeers || plen > 32 || (underlay == 0) != v6only || macHi > 0xffff) return E_INVALID;
  if (flags > 0xff) return E_INVALID;
  const other = v6only ? -1 : peerByUnderlay(underlay);
  if (other >= 0 && <u32>other != idx) return E_INVALID;
  const p = peerAt(idx);
  const wasValid = (load<u8>(p + P_FLAGS) & PEER_VALID) != 0;
  if (wasValid) {
    const oldIp = load<u32>(p + P_UNDERLAY);
    if (oldIp != underlay && oldIp != 0) hashDel(peerHashBase, peerHashMask, underlayKey(oldIp));
  } else {
    store<u32>(hdrBase + H_PEERS, load<u32>(hdrBase + H_PEERS) + 1);
  }
  const mask: u32 = plen == 0 ? 0 : <u32>0xffffffff << (32 - plen);
  store<u32>(p + P_UNDERLAY, underlay);
  store<u16>(p + P_MAC, bswap<u16>(<u16>macHi));
  store<u32>(p + P_MAC + 2, bswap<u32>(macLo));
  store<u8>(p + P_PLEN, <u8>plen);
  store<u8>(p + P_FLAGS, <u8>(flags | PEER_VALID));
  store<u32>(p + P_SUBNET, subnet & mask);
  store<u32>(p + P_MASK, mask);
  if (!v6only) hashPut(peerHashBase, peerHashMask, underlayKey(underlay), idx);
  return E_OK;
}

/** Empties slot `idx`. E_NOT_FOUND when it was empty. */
export function peer_clear(idx: u32): i32 {
  if (hdrBase == 0 || idx >= maxPeers) return E_INVALID;
  const p = peerAt(idx);
  if ((load<u8>(p + P_FLAGS) & PEER_VALID) == 0) return E_NOT_FOUND;
  if (load<u32>(p + P_UNDERLAY) != 0) hashDel(peerHashBase, peerHashMask, underlayKey(load<u32>(p + P_UNDERLAY)));
  memory.fill(p, 0, SLOT);
  peer6Forget(idx);
  store<u32>(hdrBase + H_PEERS, load<u32>(hdrBase + H_PEERS) - 1);
  return E_OK;
}

/** Slot index for an underlay address, or -1. */
export function peer_find(underlay: u32): i32 {
  if (hdrBase == 0) return -1;
  return peerByUnderlay(underlay);
}

/** Peers stored. */
export function peer_count(): u32 {
  return hdrBase == 0 ? 0 : load<u32>(hdrBase + H_PEERS);
}
