// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//
// Sums run over little-endian loads (v128 lanes of u16 widened pairwise, then
// u64 loads split into u32 halves), which adds the 16-bit words in swapped byte order; one byte swap at the end turns the folded
// sum into the big-endian value (the ones'-complement sum is byte-order
// independent up to that swap, RFC 1071 section 2B).

/** Folds a wide ones'-complement accumulator to 16 bits. */
@inline function fold(s: u64): u32 {
  s = (s & 0xffffffff) + (s >> 32);
  s = (s & 0xffffffff) + (s >> 32);
  let x = <u32>s;
  x = (x & 0xffff) + (x >>> 16);
  x = (x & 0xffff) + (x >>> 16);
  return x;
}

/**
 * Ones'-complement sum of [p, p+len) read as big-endian 16-bit words, plus
 * `initial` (a 16-bit sum from elsewhere, e.g. a pseudo-header), folded to 16
 * bits and not inverted. A buffer holding a correct checksum sums to 0xffff.
 */
export function sum16(p: usize, len: u32, initial: u32): u32 {
  let a: u64 = 0;
  let b: u64 = 0;
  let i: usize = 0;
  const n = <usize>len;
  // 32 bytes a step with SIMD: each 16-bit word widened and added pairwise
  // into four u32 lanes per accumulator. A lane takes at most 2 x 0xffff a
  // step, so the lanes are emptied into the u64 sums every 8192 steps
  // (256 KiB), long before they could wrap.
  while (i + 32 <= n) {
    let va = i32x4.splat(0);
    let vb = i32x4.splat(0);
    const stop = min(n - 31, i + 262144);
    for (; i < stop; i += 32) {
      va = i32x4.add(va, i32x4.extadd_pairwise_i16x8_u(v128.load(p + i)));
      vb = i32x4.add(vb, i32x4.extadd_pairwise_i16x8_u(v128.load(p + i, 16)));
    }
    a += <u64><u32>i32x4.extract_lane(va, 0) + <u64><u32>i32x4.extract_lane(va, 1) + <u64><u32>i32x4.extract_lane(va, 2) + <u64><u32>i32x4.extract_lane(va, 3);
    b += <u64><u32>i32x4.extract_lane(vb, 0) + <u64><u32>i32x4.extract_lane(vb, 1) + <u64><u32>i32x4.extract_lane(vb, 2) + <u64><u32>i32x4.extract_lane(vb, 3);
  }
  for (; i + 16 <= n; i += 16) {
    const x = load<u64>(p + i);
    const y = load<u64>(p + i, 8);
    a += (x & 0xffffffff) + (x >> 32);
    b += (y & 0xffffffff) + (y >> 32);
  }
  for (; i + 4 <= n; i += 4) a += <u64>load<u32>(p + i);
  if (i + 2 <= n) {
    a += <u64>load<u16>(p + i);
    i += 2;
  }
  if (i < n) a += <u64>load<u8>(p + i); // a last odd byte is the high byte of its word
  const le = fold(a + b);
  const be = ((le & 0xff) << 8) | (le >>> 8);
  let s = be + (initial & 0xffff) + (initial >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return (s & 0xffff) + (s >>> 16);
}

/** The checksum field value for [p, p+len): the inverted 16-bit sum. */
export function inet_csum(p: usize, len: u32): u32 {
  return ~sum16(p, len, 0) & 0xffff;
}

/** Ones'-complement sum of [p, p+len) (see sum16). */
export function inet_sum(p: usize, len: u32, initial: u32): u32 {
  return sum16(p, len, initial);
}

/**
 * RFC 1624 eqn. 3: the new checksum field after one 16-bit word of the
 * covered data changes from `old` to `neu`: HC' = ~(~HC + ~m + m').
 */
export function csum_replace16(check: u32, old: u32, neu: u32): u32 {
  let s = (~check & 0xffff) + (~old & 0xffff) + (neu & 0xffff);
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** As csum_replace16 for a 32-bit field (an IPv4 address): both halves at once. */
export function csum_replace32(check: u32, old: u32, neu: u32): u32 {
  let s = (~check & 0xffff) + (~old & 0xffff) + (~old >>> 16) + (neu & 0xffff) + (neu >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}
