// Linear-memory layout, fixed once by init().
//
//   [static data][header][descriptors][lookup scratch][peers][peer hash]
//   [rule hash][L1 table][LPM work arrays][IPv6 L1 table][IPv6 rule hash]
//   [IPv6 lookup scratch][IPv6 LPM work arrays][tun units, iovecs, header arena]
//   [packet slots][LPM group pool (IPv4 and IPv6 groups) ... grows]
//
// Every region except the group pool is sized at init from its arguments and
// never moves, so callers may keep views on it (re-created only when the pool
// grows memory). State lives in the header, not in WASM globals, so that a
// second instance on the same memory can attach to it; the globals below are
// a cache of the header for the hot loops.
import {
  ABI_VERSION, DESC_RES, DESC_SIZE, L_ADDR_BASE, L_COUNT, L_DESC_BASE, L_HEADROOM, L_MAX_BATCH,
  L_MAX_PEERS, L_MAX_RULES, L_NH_BASE, L_ADDR6_BASE, L_MAX_RULES6, L_PKT_BASE, L_PKT_SIZE, L_SLOTS, L_SLOT_SIZE, L_UNIT_BASE, L_MAX_UNITS,
  E_INVALID, E_NO_MEMORY, E_OK, R_COUNT, ENCAP_FRAME_OVERHEAD, UNIT_SIZE, IOV_SIZE, ARENA_BLOCK,
} from "./abi";

const MAGIC: u32 = 0x54464557; // "WEFT"
const PAGE: usize = 65536;

// Header fields (byte offsets from hdrBase).
export const H_MAGIC: usize = 0;
export const H_ABI: usize = 4;
export const H_RULES6: usize = 8; // u32, IPv6 prefixes stored
export const H_GROUPS6: usize = 12; // u32, IPv6 LPM groups alive (of H_GROUPS)
export const H_POOL_USED6: usize = 16; // u32, pool units the IPv6 groups use (of H_POOL_USED)
export const H_LOCAL_IP6: usize = 20; // 16 bytes, wire order: this node's IPv6 underlay (outer source, CFG_OUTER6)
export const H_HOP: usize = 36; // u8, outer IPv6 hop limit
export const H_VNI: usize = 64; // u32
export const H_LOCAL_IP: usize = 68; // u32
export const H_LOCAL_MAC: usize = 72; // 6 bytes, wire order
export const H_DPORT: usize = 80; // u16
export const H_PORT_MIN: usize = 82; // u16
export const H_PORT_MAX: usize = 84; // u16
export const H_TTL: usize = 86; // u8
export const H_FLAGS: usize = 88; // u32
export const H_SEED: usize = 92; // u32
export const H_IP_ID: usize = 96; // u32, outer IPv4 identification counter
export const H_POOL_TOP: usize = 100; // u32, 64-byte units ever carved from the pool
export const H_GROUPS: usize = 104; // u32, LPM groups alive
export const H_POOL_USED: usize = 108; // u32, pool units in use
export const H_RULES: usize = 112; // u32, prefixes stored
export const H_PEERS: usize = 116; // u32, peers stored
export const H_TUN_MTU: usize = 120; // u32, the TUN device's MTU (tun receive: the segment size of oversized packets)
export const H_UDP_SEGS: usize = 124; // u32, datagrams per UDP_SEGMENT send (0: UDP_MAX_SEGS)
export const H_COUNTERS: usize = 128; // 2 x R_COUNT u64 (room for R_COUNT <= 19)
export const H_POOL_FREE: usize = 432; // POOL_CLASSES (17) u32 free-list heads (unit index + 1; 0 = empty)
export const H_LAYOUT: usize = 512; // L_COUNT u32 fields (room for 32)
const HDR_SIZE: usize = 640;

// Cached region bases (set by init).
export let hdrBase: usize = 0;
export let descBase: usize = 0;
export let maxBatch: u32 = 0;
export let addrBase: usize = 0;
export let nhBase: usize = 0;
export let peersBase: usize = 0;
export let maxPeers: u32 = 0;
export let peerHashBase: usize = 0;
export let peerHashMask: u32 = 0;
export let ruleHashBase: usize = 0;
export let ruleHashMask: u32 = 0;
export let maxRules: u32 = 0;
export let l1Base: usize = 0;
/** Four 256 x u32 work arrays for LPM updates, then a 64-byte all-zero dummy group. */
export let lpmWork: usize = 0;
export let dummyGroup: usize = 0;
/** IPv6 LPM: L1 (2^16 u32), rule hash (32-byte slots), batch x 16-byte address scratch, 14 x 256 u32 work arrays. */
export let l1Base6: usize = 0;
export let ruleHash6Base: usize = 0;
export let ruleHash6Mask: u32 = 0;
export let maxRules6: u32 = 0;
export let addr6Base: usize = 0;
export let lpm6Work: usize = 0;
/** IPv6 side of the peer table: maxPeers x 64-byte slots, and a hash underlay6 -> index (32-byte slots). */
export let peers6Base: usize = 0;
export let peerHash6Base: usize = 0;
export let peerHash6Mask: u32 = 0;
/** tun path regions (maxUnits = 0: none). */
export let unitBase: usize = 0;
export let maxUnits: u32 = 0;
export let iovBase: usize = 0;
export let arenaBase: usize = 0;
export let pktBase: usize = 0;
export let pktEnd: usize = 0;
export let poolBase: usize = 0;

@inline function alignUp(x: usize, a: usize): usize {
  return (x + a - 1) & ~(a - 1);
}

function nextPow2(x: u32): u32 {
  if (x <= 1) return 1;
  return (<u32>1) << (32 - clz<u32>(x - 1));
}

/** Grows memory so that [0, end) is addressable. Returns false if the engine refuses. */
export function ensureMemory(end: usize): bool {
  const have = (<usize>memory.size()) * PAGE;
  if (end <= have) return true;
  const pages = <i32>((end - have + PAGE - 1) / PAGE);
  return memory.grow(pages) >= 0;
}

/**
 * Lays memory out. Call once per memory, before anything else.
 * Limits keep every region well inside 4 GiB; E_INVALID says an argument is
 * out of range, E_NO_MEMORY that the engine refused to grow.
 */
export function init(
  peers: u32, rules: u32, batch: u32, slots: u32, slotSize: u32, headroom: u32, units: u32, rules6: u32,
): i32 {
  if (hdrBase != 0) return E_INVALID; // already laid out
  if (peers < 1 || peers > 1 << 20) return E_INVALID;
  if (rules < 1 || rules > 1 << 22) return E_INVALID;
  if (batch < 1 || batch > 1 << 16) return E_INVALID;
  if (slots < 1 || slots > 1 << 16) return E_INVALID;
  if (slotSize < 64 || slotSize > 1 << 20 || (slotSize & 63) != 0) return E_INVALID;
  if (headroom < <u32>ENCAP_FRAME_OVERHEAD || headroom >= slotSize) return E_INVALID;
  if (<u64>slots * <u64>slotSize > 1 << 30) return E_INVALID;
  if (units > 1 << 16) return E_INVALID;
  if (rules6 < 1 || rules6 > 1 << 22) return E_INVALID;

  const hdr = alignUp(__heap_base, 64);
  const desc = alignUp(hdr + HDR_SIZE, 64);
  const addr = desc + <usize>batch * <usize>DESC_SIZE;
  const nh = addr + <usize>batch * 4;
  const peer = alignUp(nh + <usize>batch * 4, 64);
  const phCap = nextPow2(peers * 2);
  const ph = peer + <usize>peers * 32;
  const rhCap = nextPow2(rules * 2);
  const rh = alignUp(ph + <usize>phCap * 16, 64);
  const l1 = alignUp(rh + <usize>rhCap * 16, 64);
  const work = alignUp(l1 + 65536 * 4, 64);
  const l1v6 = alignUp(work + 4 * 1024 + 64, 64);
  const rh6Cap = nextPow2(rules6 * 2);
  const rh6 = l1v6 + 65536 * 4;
  const addr6 = rh6 + <usize>rh6Cap * 32;
  const work6 = alignUp(addr6 + <usize>batch * 16, 64);
  const peers6 = alignUp(work6 + 14 * 1024, 64);
  const ph6 = peers6 + <usize>peers * 64;
  const units0 = alignUp(ph6 + <usize>phCap * 32, 64);
  const iovs0 = units0 + <usize>units * <usize>UNIT_SIZE;
  const arena0 = iovs0 + <usize>units * 2 * <usize>IOV_SIZE;
  const pkt = alignUp(arena0 + <usize>units * <usize>ARENA_BLOCK, 64);
  const pktSize = <usize>slots * <usize>slotSize;
  const pool = alignUp(pkt + pktSize, 64);
  if (!ensureMemory(pool)) return E_NO_MEMORY;
  // Memory from grow() is zeroed; the static-data tail below hdr may not be.
  memory.fill(hdr, 0, pool - hdr);

  store<u32>(hdr + H_MAGIC, MAGIC);
  store<u32>(hdr + H_ABI, <u32>ABI_VERSION);
  const lay = hdr + H_LAYOUT;
  store<u32>(lay + (<usize>L_PKT_BASE << 2), <u32>pkt);
  store<u32>(lay + (<usize>L_PKT_SIZE << 2), <u32>pktSize);
  store<u32>(lay + (<usize>L_SLOT_SIZE << 2), slotSize);
  store<u32>(lay + (<usize>L_SLOTS << 2), slots);
  store<u32>(lay + (<usize>L_DESC_BASE << 2), <u32>desc);
  store<u32>(lay + (<usize>L_MAX_BATCH << 2), batch);
  store<u32>(lay + (<usize>L_ADDR_BASE << 2), <u32>addr);
  store<u32>(lay + (<usize>L_NH_BASE << 2), <u32>nh);
  store<u32>(lay + (<usize>L_MAX_PEERS << 2), peers);
  store<u32>(lay + (<usize>L_MAX_RULES << 2), rules);
  store<u32>(lay + (<usize>L_HEADROOM << 2), headroom);
  store<u32>(lay + (<usize>L_UNIT_BASE << 2), <u32>units0);
  store<u32>(lay + (<usize>L_MAX_UNITS << 2), units);
  store<u32>(lay + (<usize>L_ADDR6_BASE << 2), <u32>addr6);
  store<u32>(lay + (<usize>L_MAX_RULES6 << 2), rules6);
  // Defaults until configure(): VNI 1, port 8472, kernel's local port range, TTL 64.
  store<u32>(hdr + H_VNI, 1);
  store<u16>(hdr + H_DPORT, 8472);
  store<u16>(hdr + H_PORT_MIN, 32768);
  store<u16>(hdr + H_PORT_MAX, 60999); // stored inclusive
  store<u8>(hdr + H_TTL, 64);
  store<u8>(hdr + H_HOP, 64);

  hdrBase = hdr;
  descBase = desc;
  maxBatch = batch;
  addrBase = addr;
  nhBase = nh;
  peersBase = peer;
  maxPeers = peers;
  peerHashBase = ph;
  peerHashMask = phCap - 1;
  ruleHashBase = rh;
  ruleHashMask = rhCap - 1;
  maxRules = rules;
  l1Base = l1;
  lpmWork = work;
  l1Base6 = l1v6;
  ruleHash6Base = rh6;
  ruleHash6Mask = rh6Cap - 1;
  maxRules6 = rules6;
  addr6Base = addr6;
  lpm6Work = work6;
  peers6Base = peers6;
  peerHash6Base = ph6;
  peerHash6Mask = phCap - 1;
  unitBase = units0;
  maxUnits = units;
  iovBase = iovs0;
  arenaBase = arena0;
  dummyGroup = work + 4 * 1024;
  pktBase = pkt;
  pktEnd = pkt + pktSize;
  poolBase = pool;
  return E_OK;
}

/** Byte offset or size of a region (L_* index), 0 for an unknown index or before init. */
export function layout(field: u32): u32 {
  if (hdrBase == 0 || field >= <u32>L_COUNT) return 0;
  return load<u32>(hdrBase + H_LAYOUT + (<usize>field << 2));
}

/** Start of the R_COUNT u64 counters of a direction (DIR_ENCAP, DIR_DECAP). */
export function counters_base(dir: u32): u32 {
  if (hdrBase == 0 || dir > 1) return 0;
  return <u32>(hdrBase + H_COUNTERS + <usize>dir * <usize>R_COUNT * 8);
}

/** The ABI version this module was built with (compare with abi.ts on load). */
export function abi_version(): u32 {
  return <u32>ABI_VERSION;
}

/** Adds one to counter `slot` of a direction (slot 0: accepted, slot -r: result r). */
@inline export function bump(dir: u32, slot: u32): void {
  const p = hdrBase + H_COUNTERS + ((<usize>dir * <usize>R_COUNT + <usize>slot) << 3);
  store<u64>(p, load<u64>(p) + 1);
}

/** Stores a descriptor's result and counts it (slot 0: taken; else the drop reason). Returns 1 when taken. */
@inline export function settle(d: usize, dir: u32, res: i32): i32 {
  store<i32>(d, res, DESC_RES);
  bump(dir, res >= 0 ? 0 : <u32>-res);
  return res >= 0 ? 1 : 0;
}

/**
 * Sets the node's own tunnel parameters. `macHi` holds the first two MAC
 * bytes, `macLo` the last four. The source-port range is [portMin, portMax).
 */
export function configure(
  vni: u32, localIp: u32, macHi: u32, macLo: u32, dport: u32,
  portMin: u32, portMax: u32, ttl: u32, flags: u32, seed: u32,
): i32 {
  if (hdrBase == 0) return E_INVALID;
  if (vni > 0xffffff || dport == 0 || dport > 0xffff || macHi > 0xffff) return E_INVALID;
  if (portMin == 0 || portMax > 0x10000 || portMin >= portMax) return E_INVALID;
  if (ttl == 0 || ttl > 255) return E_INVALID;
  store<u32>(hdrBase + H_VNI, vni);
  store<u32>(hdrBase + H_LOCAL_IP, localIp);
  store<u16>(hdrBase + H_LOCAL_MAC, bswap<u16>(<u16>macHi));
  store<u32>(hdrBase + H_LOCAL_MAC + 2, bswap<u32>(macLo));
  store<u16>(hdrBase + H_DPORT, <u16>dport);
  store<u16>(hdrBase + H_PORT_MIN, <u16>portMin);
  store<u16>(hdrBase + H_PORT_MAX, <u16>(portMax - 1));
  store<u8>(hdrBase + H_TTL, <u8>ttl);
  store<u32>(hdrBase + H_FLAGS, flags);
  store<u32>(hdrBase + H_SEED, seed);
  return E_OK;
}

/**
 * Sets this node's IPv6 underlay address (outer source when the flags of
 * configure() hold CFG_OUTER6; four words, w0 first on the wire) and the
 * outer hop limit. E_INVALID for hop limit 0 or above 255.
 */
export function configure6(w0: u32, w1: u32, w2: u32, w3: u32, hop: u32): i32 {
  if (hdrBase == 0 || hop == 0 || hop > 255) return E_INVALID;
  store<u32>(hdrBase + H_LOCAL_IP6, bswap<u32>(w0));
  store<u32>(hdrBase + H_LOCAL_IP6 + 4, bswap<u32>(w1));
  store<u32>(hdrBase + H_LOCAL_IP6 + 8, bswap<u32>(w2));
  store<u32>(hdrBase + H_LOCAL_IP6 + 12, bswap<u32>(w3));
  store<u8>(hdrBase + H_HOP, <u8>hop);
  return E_OK;
}

/** True when [off, off+len) lies inside the packet region with `front` bytes before it. */
@inline export function inPackets(off: u32, len: u32, front: u32): bool {
  return <u64>off >= <u64>pktBase + <u64>front && <u64>off + <u64>len <= <u64>pktEnd;
}
