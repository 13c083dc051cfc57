/**
 * Reference Internet checksum (RFC 1071) and incremental update (RFC 1624),
 * written the textbook way: big-endian 16-bit words, end-around carry.
 */

/** Ones'-complement sum of bytes [off, off+len) plus `initial`, folded, not inverted. */
export function sum16(bytes: Uint8Array, off: number, len: number, initial = 0): number {
  let s = (initial & 0xffff) + (initial >>> 16);
  let i = 0;
  for (; i + 1 < len; i += 2) s += ((bytes[off + i] ?? 0) << 8) | (bytes[off + i + 1] ?? 0);
  if (i < len) s += (bytes[off + i] ?? 0) << 8;
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 65536);
  return s;
}

/** The checksum field value for the bytes (inverted sum). */
export function inetChecksum(bytes: Uint8Array, off = 0, len = bytes.length): number {
  return ~sum16(bytes, off, len) & 0xffff;
}

/** RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') for one changed 16-bit word. */
export function csumReplace16(check: number, old: number, neu: number): number {
  let s = (~check & 0xffff) + (~old & 0xffff) + (neu & 0xffff);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** RFC 1624 for a changed 32-bit field, as two 16-bit words. */
export function csumReplace32(check: number, old: number, neu: number): number {
  return csumReplace16(csumReplace16(check, old >>> 16, neu >>> 16), old & 0xffff, neu & 0xffff);
}
