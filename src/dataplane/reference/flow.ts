/**
 * Reference flow hash for the outer UDP source port (see asm/flow.ts): the
 * kernel's __flow_hash_consistentify ordering, jhash_3words, and
 * udp_flow_src_port's scaling.
 */
const rol = (x: number, k: number): number => ((x << k) | (x >>> (32 - k))) >>> 0;

export function jhash3(a: number, b: number, c: number, initval: number): number {
  const iv = (initval + 0xdeadbeef + 12) >>> 0;
  a = (a + iv) >>> 0;
  b = (b + iv) >>> 0;
  c = (c + iv) >>> 0;
  c = ((c ^ b) - rol(b, 14)) >>> 0;
  a = ((a ^ c) - rol(c, 11)) >>> 0;
  b = ((b ^ a) - rol(a, 25)) >>> 0;
  c = ((c ^ b) - rol(b, 16)) >>> 0;
  a = ((a ^ c) - rol(c, 4)) >>> 0;
  b = ((b ^ a) - rol(a, 14)) >>> 0;
  c = ((c ^ b) - rol(b, 24)) >>> 0;
  return c;
}

/** Direction-independent hash of an IPv4 flow; `ports` = sport << 16 | dport. Never 0. */
export function flowHash(src: number, dst: number, ports: number, proto: number, seed: number): number {
  let sp = ports >>> 16;
  let dp = ports & 0xffff;
  if (dst >>> 0 < src >>> 0) [src, dst] = [dst, src];
  if (dp < sp) [sp, dp] = [dp, sp];
  const h = jhash3(dst >>> 0, src >>> 0, ((sp << 16) | dp) >>> 0, (seed ^ proto) >>> 0);
  return h === 0 ? 1 : h;
}

/** Spreads a hash over [min, maxInclusive] as udp_flow_src_port does. */
export function flowSport(hash: number, min: number, maxInclusive: number): number {
  const h = (hash ^ (hash << 16)) >>> 0;
  // h * range < 2^48: exact in a double, and so is the division by 2^32.
  return Math.floor((h * (maxInclusive + 1 - min)) / 4294967296) + min;
}
