// Flow hashing for the outer UDP source port, after the Linux kernel:
// __flow_hash_consistentify() orders addresses and ports so that both
// directions of a flow hash alike, jhash_3words() mixes them, and
// udp_flow_src_port() folds the hash into the source-port range.

const JHASH_INITVAL: u32 = 0xdeadbeef;

/** Bob Jenkins' lookup3 final mix, as the kernel's __jhash_final. */
export function jhash_3words(a: u32, b: u32, c: u32, initval: u32): u32 {
  const iv = initval + JHASH_INITVAL + (3 << 2);
  a += iv;
  b += iv;
  c += iv;
  c ^= b; c -= rotl<u32>(b, 14);
  a ^= c; a -= rotl<u32>(c, 11);
  b ^= a; b -= rotl<u32>(a, 25);
  c ^= b; c -= rotl<u32>(b, 16);
  a ^= c; a -= rotl<u32>(c, 4);
  b ^= a; b -= rotl<u32>(a, 14);
  c ^= b; c -= rotl<u32>(b, 24);
  return c;
}

/**
 * Hash of an IPv4 flow. `ports` is sport << 16 | dport (0 for protocols
 * without ports, and for fragments). The same for both directions; never 0.
 */
export function flow_hash(src: u32, dst: u32, ports: u32, proto: u32, seed: u32): u32 {
  let sp = ports >>> 16;
  let dp = ports & 0xffff;
  if (dst < src) {
    const t = src;
    src = dst;
    dst = t;
  }
  if (dp < sp) {
    const t = sp;
    sp = dp;
    dp = t;
  }
  const h = jhash_3words(dst, src, (sp << 16) | dp, seed ^ proto);
  return h == 0 ? 1 : h;
}

/** udp_flow_src_port(): spreads a flow hash over [min, max] (max inclusive). */
export function flow_sport(hash: u32, min: u32, max: u32): u32 {
  const h = hash ^ (hash << 16);
  return <u32>(((<u64>h * <u64>(max + 1 - min)) >> 32) + <u64>min);
}
