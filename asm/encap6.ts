// Outer IPv6 headers for encap over an IPv6 underlay (CFG_OUTER6), and the
// IPv6 pieces of inner-packet routing: the flow-hash inputs of an inner IPv6
// packet and its outer traffic class.
import { CFG_FLOWLABEL } from "./abi";
import { sum16 } from "./checksum";
import { H_HOP, H_LOCAL_IP6, hdrBase } from "./layout";

/** Ones'-complement sum (unfolded) of the 16-bit words of 16 bytes at p. */
@inline function addrSum(p: usize): u32 {
  let s: u32 = 0;
  for (let i: usize = 0; i < 16; i += 2) s += <u32>bswap<u16>(load<u16>(p + i));
  return s;
}

/** An IPv6 address at p folded to 32 bits (xor of its words), for the flow hash. */
@inline export function fold6(p: usize): u32 {
  return load<u32>(p) ^ load<u32>(p, 4) ^ load<u32>(p, 8) ^ load<u32>(p, 12);
}

/**
 * Writes the outer IPv6 (40 bytes) and UDP headers at `ip` for a UDP
 * datagram of `udpLen` bytes to the address at `dst` (16 bytes, wire order),
 * with the mandatory UDP checksum over the IPv6 pseudo-header (RFC 8200
 * 8.1; a computed zero is sent as 0xffff). Returns `ip`.
 */
export function writeOuter6(ip: usize, udpLen: u32, tc: u32, dst: usize, sport: u32, dport: u32, hash: u32, flags: u32): usize {
  const label = flags & CFG_FLOWLABEL ? hash & 0xfffff : 0;
  store<u32>(ip, bswap<u32>((6 << 28) | ((tc & 0xff) << 20) | label));
  store<u16>(ip, bswap<u16>(<u16>udpLen), 4);
  store<u8>(ip, 17, 6);
  store<u8>(ip, load<u8>(hdrBase + H_HOP), 7);
  memory.copy(ip + 8, hdrBase + H_LOCAL_IP6, 16);
  memory.copy(ip + 24, dst, 16);
  const udp = ip + 40;
  store<u16>(udp, bswap<u16>(<u16>sport));
  store<u16>(udp, bswap<u16>(<u16>dport), 2);
  store<u16>(udp, bswap<u16>(<u16>udpLen), 4);
  store<u16>(udp, 0, 6);
  const pseudo = addrSum(ip + 8) + addrSum(ip + 24) + (udpLen >>> 16) + (udpLen & 0xffff) + 17;
  let c = ~sum16(udp, udpLen, pseudo) & 0xffff;
  if (c == 0) c = 0xffff;
  store<u16>(udp, bswap<u16>(<u16>c), 6);
  return ip;
}
