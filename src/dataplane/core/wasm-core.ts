import * as abi from "../../../asm/abi.js";
import { CoreError } from "../../common/errors.js";
import { compile, DEFAULT_LIMITS, limitProblems, type CoreExports } from "./module.js";
import { formatCidr, formatIpv4, type Ipv4Prefix } from "../../common/ipv4.js";
import { RESULT_NAMES, type Counters } from "../results.js";
import type { CoreLimits, Descriptor, PeerEntry, TunnelConfig } from "./types.js";
import { check } from "./check.js";
import { Lpm6, words6 } from "./lpm6.js";
import { formatIpv6 } from "../../common/ipv6.js";

export { coreWasmPath, DEFAULT_LIMITS, limitProblems } from "./module.js";


function macWords(mac: Uint8Array): [number, number] {
  if (mac.length !== 6) throw new CoreError("WEFT_CORE_INVALID", `a MAC address has 6 bytes, got ${mac.length}`);
  const hi = ((mac[0] ?? 0) << 8) | (mac[1] ?? 0);
  const lo = (((mac[2] ?? 0) << 24) | ((mac[3] ?? 0) << 16) | ((mac[4] ?? 0) << 8) | (mac[5] ?? 0)) >>> 0;
  return [hi, lo];
}

function u32(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new CoreError("WEFT_CORE_INVALID", `${what} must be an unsigned 32-bit integer, got ${v}`);
  }
  return v | 0;
}

/**
 * The WASM core: one instance over one linear memory, laid out once. All
 * methods are synchronous; the hot ones (encap, decap, lookupBatch) work on
 * descriptors and packets already in the core's memory.
 */
export class WasmCore {
  readonly limits: CoreLimits;
  /** Region offsets in the core's memory (see asm/layout.ts). */
  readonly pktBase: number;
  readonly pktSize: number;
  readonly descBase: number;
  readonly addrBase: number;
  readonly nhBase: number;
  /** The IPv6 LPM table (same memory and pool as the IPv4 one). */
  readonly lpm6: Lpm6;
  /** tun path: unit table and iovec table (0 when made with units: 0). */
  readonly unitBase: number;
  readonly iovBase: number;
  private readonly x: CoreExports;
  private buf: ArrayBuffer;
  private u8: Uint8Array;
  private dv: DataView;

  private constructor(x: CoreExports, limits: CoreLimits) {
    this.x = x;
    this.limits = limits;
    this.pktBase = x.layout(abi.L_PKT_BASE);
    this.pktSize = x.layout(abi.L_PKT_SIZE);
    this.descBase = x.layout(abi.L_DESC_BASE);
    this.addrBase = x.layout(abi.L_ADDR_BASE);
    this.nhBase = x.layout(abi.L_NH_BASE);
    this.lpm6 = new Lpm6(x, limits, x.layout(abi.L_ADDR6_BASE), this.nhBase);
    this.unitBase = x.layout(abi.L_UNIT_BASE);
    this.iovBase = this.unitBase + limits.units * abi.UNIT_SIZE;
    this.buf = x.memory.buffer;
    this.u8 = new Uint8Array(this.buf);
    this.dv = new DataView(this.buf);
  }

  /** Instantiates the core (the module is compiled once per process) and lays its memory out. */
  static create(limits: Partial<CoreLimits> = {}): WasmCore {
    const l: CoreLimits = { ...DEFAULT_LIMITS, ...limits };
    const problems = limitProblems(l);
    if (problems.length > 0) throw new CoreError("WEFT_CORE_INVALID", `bad WASM core limits: ${problems.join("; ")}`);
    const inst = new WebAssembly.Instance(compile(), {});
    const x = inst.exports as unknown as CoreExports;
    if (x.abi_version() !== abi.ABI_VERSION) {
      throw new CoreError("WEFT_CORE_ABI", `build/weft-core.wasm has ABI ${x.abi_version()}, this code expects ${abi.ABI_VERSION}`, {
        hint: "rebuild it with `npm run build`",
      });
    }
    check(x.init(l.maxPeers, l.maxRules, l.maxBatch, l.slots, l.slotSize, l.headroom, l.units, l.maxRules6),
      "laying out WASM memory", "lower the limits (maxRules, maxRules6, slots, slotSize)");
    return new WasmCore(x, l);
  }

  // ------------------------------------------------------------------ memory

  /** The whole linear memory as bytes (re-created after the LPM pool grows memory). */
  bytes(): Uint8Array {
    this.refresh();
    return this.u8;
  }

  /** The whole linear memory as a DataView. */
  view(): DataView {
    this.refresh();
    return this.dv;
  }

  /** Total linear memory in bytes. */
  memoryBytes(): number {
    return this.x.memory.buffer.byteLength;
  }

  private refresh(): void {
    if (this.x.memory.buffer !== this.buf) {
      this.buf = this.x.memory.buffer;
      this.u8 = new Uint8Array(this.buf);
      this.dv = new DataView(this.buf);
    }
  }

  /** Offset of slot i's packet start (after the headroom). */
  slot(i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= this.limits.slots) {
      throw new CoreError("WEFT_CORE_INVALID", `slot ${i} is outside 0..${this.limits.slots - 1}`);
    }
    return this.pktBase + i * this.limits.slotSize + this.limits.headroom;
  }

  /** Copies `data` into slot i (after its headroom) and returns its offset. */
  writeSlot(i: number, data: Uint8Array): number {
    const off = this.slot(i);
    if (data.length > this.limits.slotSize - this.limits.headroom) {
      throw new CoreError("WEFT_CORE_INVALID", `${data.length} bytes do not fit a slot (${this.limits.slotSize - this.limits.headroom} after headroom)`);
    }
    this.bytes().set(data, off);
    return off;
  }

  /** Fills descriptor i for a batch. `addr`/`tos` are decap inputs (outer source, outer TOS). */
  setDesc(i: number, off: number, len: number, addr = 0, tos = 0): void {
    const d = this.descAt(i);
    const v = this.view();
    v.setUint32(d + abi.DESC_OFF, off, true);
    v.setUint32(d + abi.DESC_LEN, len, true);
    v.setInt32(d + abi.DESC_RES, 0, true);
    v.setUint32(d + abi.DESC_ADDR, addr >>> 0, true);
    v.setUint16(d + abi.DESC_SPORT, 0, true);
    v.setUint16(d + abi.DESC_DPORT, 0, true);
    v.setUint8(d + abi.DESC_TOS, tos);
  }

  /** Reads descriptor i back. */
  desc(i: number): Descriptor {
    const d = this.descAt(i);
    const v = this.view();
    return {
      off: v.getUint32(d + abi.DESC_OFF, true),
      len: v.getUint32(d + abi.DESC_LEN, true),
      res: v.getInt32(d + abi.DESC_RES, true),
      addr: v.getUint32(d + abi.DESC_ADDR, true),
      sport: v.getUint16(d + abi.DESC_SPORT, true),
      dport: v.getUint16(d + abi.DESC_DPORT, true),
      tos: v.getUint8(d + abi.DESC_TOS),
    };
  }

  private descAt(i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= this.limits.maxBatch) {
      throw new CoreError("WEFT_CORE_INVALID", `descriptor ${i} is outside 0..${this.limits.maxBatch - 1}`);
    }
    return this.descBase + i * abi.DESC_SIZE;
  }

  // ------------------------------------------------------------- tunnel/peers

  configure(cfg: TunnelConfig): void {
    const [hi, lo] = macWords(cfg.localMac);
    const flags = (cfg.udpChecksum ? abi.CFG_UDP_CSUM : 0) | (cfg.dontFragment ? abi.CFG_DF : 0) |
      (cfg.outer6 ? abi.CFG_OUTER6 : 0) | (cfg.split6 ? abi.CFG_SPLIT6 : 0) | (cfg.flowLabel ? abi.CFG_FLOWLABEL : 0);
    if ((cfg.outer6 || cfg.split6) && cfg.localIp6 === undefined) {
      throw new CoreError("WEFT_CORE_INVALID", "an IPv6 underlay (outer6, split6) needs this node's IPv6 underlay address", { hint: "set localIp6" });
    }
    if (cfg.outer6 && cfg.split6) {
      throw new CoreError("WEFT_CORE_INVALID", "outer6 (everything over IPv6) and split6 (each family over its own underlay) exclude each other", { hint: "set one" });
    }
    const [a0, a1, a2, a3] = words6(cfg.localIp6 ?? 0n);
    check(this.x.configure6(a0, a1, a2, a3, cfg.hopLimit ?? 64), "configuring the IPv6 tunnel", "hop limit 1..255");
    check(this.x.configure(cfg.vni, u32(cfg.localIp, "localIp"), hi, lo, cfg.dstPort, cfg.srcPortMin,
      cfg.srcPortMax, cfg.ttl, flags, u32(cfg.hashSeed, "hashSeed")),
      "configuring the tunnel", "VNI 0..16777215, ports 1..65535 with srcPortMin < srcPortMax, TTL 1..255");
  }

  setPeer(idx: number, peer: PeerEntry): void {
    const [hi, lo] = macWords(peer.vtepMac);
    const rc = this.x.peer_set(u32(idx, "peer index"), u32(peer.underlay, "underlay address"), hi, lo,
      peer.subnet.addr | 0, peer.subnet.len, (peer.local ? abi.PEER_LOCAL : 0) | (peer.underlay === 0 && peer.underlay6 !== undefined ? abi.PEER_V6_ONLY : 0));
    check(rc, `storing peer ${idx} (${formatIpv4(peer.underlay)}, ${formatCidr(peer.subnet)})`,
      `index below ${this.limits.maxPeers}, a non-zero underlay address not used by another peer`);
    const [u0, u1, u2, u3] = words6(peer.underlay6 ?? 0n);
    const s6 = peer.subnet6;
    if (s6 && (!Number.isInteger(s6.len) || s6.len < 0 || s6.len > 128)) {
      throw new CoreError("WEFT_CORE_INVALID", `peer ${idx}: IPv6 subnet length ${s6.len} is outside 0..128`);
    }
    const [s0, s1, s2, s3] = words6(s6?.addr ?? 0n);
    const [mh, ml] = peer.vtepMac6 ? macWords(peer.vtepMac6) : [0, 0];
    check(this.x.peer6_set(idx, u0, u1, u2, u3, s0, s1, s2, s3, s6 ? s6.len : 255, peer.vtepMac6 ? 1 : 0, mh, ml),
      `storing the IPv6 side of peer ${idx} (${peer.underlay6 === undefined ? "no IPv6 underlay" : formatIpv6(peer.underlay6)})`,
      "an IPv6 underlay address not used by another peer");
  }

  clearPeer(idx: number): void {
    check(this.x.peer_clear(u32(idx, "peer index")), `removing peer ${idx}`);
  }

  /** Peer index holding this underlay address, or -1. */
  findPeer(underlay: number): number {
    return this.x.peer_find(u32(underlay, "underlay address"));
  }

  /** Peer index holding this IPv6 underlay address, or -1. */
  findPeer6(underlay6: bigint): number {
    const [u0, u1, u2, u3] = words6(underlay6);
    return this.x.peer6_find(u0, u1, u2, u3);
  }

  /** Peer idx's IPv6 underlay address (where encap over IPv6 sends it), or undefined. */
  peerUnderlay6(idx: number): bigint | undefined {
    const off = this.x.peer6_underlay(u32(idx, "peer index"));
    if (off === 0) return undefined;
    const b = this.bytes();
    let a = 0n;
    for (let i = 0; i < 16; i++) a = (a << 8n) | BigInt(b[off + i] ?? 0);
    return a;
  }

  peerCount(): number {
    return this.x.peer_count();
  }

  // -------------------------------------------------------------------- LPM

  lpmInsert(p: Ipv4Prefix, nh: number): void {
    if (!Number.isInteger(p.len) || p.len < 0 || p.len > 32) {
      throw new CoreError("WEFT_CORE_INVALID", `prefix length ${p.len} is outside 0..32`);
    }
    if (!Number.isInteger(nh) || nh < 0 || nh > abi.LPM_MAX_NH) {
      throw new CoreError("WEFT_CORE_INVALID", `next hop ${nh} is outside 0..${abi.LPM_MAX_NH}`);
    }
    check(this.x.lpm_insert(u32(p.addr, "prefix"), p.len, nh), `inserting ${formatCidr(p)}`,
      `the table holds at most ${this.limits.maxRules} prefixes; raise maxRules`);
  }

  /** Removes a prefix; false when it was not stored. */
  lpmDelete(p: Ipv4Prefix): boolean {
    const rc = this.x.lpm_delete(u32(p.addr, "prefix"), p.len);
    if (rc === abi.E_NOT_FOUND) return false;
    check(rc, `deleting ${formatIpv4(p.addr)}/${p.len}`);
    return true;
  }

  /** Next hop stored for exactly this prefix, or -1. */
  lpmGet(p: Ipv4Prefix): number {
    return this.x.lpm_get(u32(p.addr, "prefix"), p.len);
  }

  /** Longest-prefix match of one address: next hop, or -1. */
  lookup(addr: number): number {
    return this.x.lpm_lookup(addr | 0);
  }

  /** Looks up every address of `addrs` into `out` (same length), maxBatch at a time. */
  lookupBatch(addrs: Uint32Array, out: Int32Array): void {
    if (out.length < addrs.length) throw new CoreError("WEFT_CORE_INVALID", "out must be as long as addrs");
    const max = this.limits.maxBatch;
    const mem = this.x.memory.buffer;
    const inView = new Uint32Array(mem, this.addrBase, max);
    const outView = new Int32Array(mem, this.nhBase, max);
    for (let i = 0; i < addrs.length; i += max) {
      const n = Math.min(max, addrs.length - i);
      inView.set(addrs.subarray(i, i + n));
      this.x.lpm_lookup_batch(n);
      out.set(outView.subarray(0, n), i);
    }
  }

  lpmClear(): void {
    this.x.lpm_clear();
  }

  lpmSize(): number {
    return this.x.lpm_size();
  }

  lpmGroups(): number {
    return this.x.lpm_groups();
  }

  /** Bytes the lookup structure uses now (L1 + groups in use). */
  lpmMemoryBytes(): number {
    return this.x.lpm_memory_bytes() >>> 0;
  }

  // ----------------------------------------------------------------- packets

  /** Encapsulates descriptors [0, n) in place; returns how many were taken. */
  encap(n: number, mode: number = abi.ENCAP_MODE_PAYLOAD): number {
    const rc = this.x.encap_batch(n, mode);
    check(rc, `encapsulating a batch of ${n}`, `at most ${this.limits.maxBatch} descriptors, mode 0 or 1`);
    return rc;
  }

  /**
   * Decapsulates descriptors [0, n) that arrived over IPv6: descriptor i's
   * outer source address is the 16 bytes at `lpm6.addrBase + 16 i` (setSource6).
   */
  decap6(n: number): number {
    const rc = this.x.decap6_batch(n);
    check(rc, `decapsulating a batch of ${n} (IPv6 underlay)`, `at most ${this.limits.maxBatch} descriptors`);
    return rc;
  }

  /** Sets descriptor i's outer IPv6 source address for decap6(). */
  setSource6(i: number, addr: bigint): void {
    this.descAt(i);
    const [w0, w1, w2, w3] = words6(addr);
    const v = this.view();
    [w0, w1, w2, w3].forEach((w, k) => v.setUint32(this.lpm6.addrBase + i * 16 + k * 4, w >>> 0));
  }

  /** Decapsulates descriptors [0, n) in place; returns how many were accepted. */
  decap(n: number): number {
    const rc = this.x.decap_batch(n);
    check(rc, `decapsulating a batch of ${n}`, `at most ${this.limits.maxBatch} descriptors`);
    return rc;
  }

  /**
   * tun path, transmit: descriptors [from, n) name [virtio_net_hdr][IPv4]
   * packets read from the device; they become units (see asm/abi.ts).
   * Returns the first descriptor not finished; tunUnits() the units made.
   * A super-packet with more segments than one call's units, iovecs and
   * header arena hold returns its own index: send the units, then call
   * again with that index (and the descriptors unchanged) to resume it.
   * Every call makes progress; loop until it returns n.
   */
  tunTx(from: number, n: number): number {
    const rc = this.x.tun_tx_batch(from, n);
    check(rc, `tun transmit batch [${from}, ${n})`, "a core made with units > 0, n <= maxBatch, from <= n");
    return rc;
  }

  /**
   * tun path, receive: descriptors [from, n) name (UDP_GRO) buffers of
   * VXLAN datagrams. Returns the first descriptor not finished; a buffer of
   * more datagrams than one call's units hold returns its own index, to be
   * resumed as tunTx does.
   */
  tunRx(from: number, n: number): number {
    const rc = this.x.tun_rx_batch(from, n);
    check(rc, `tun receive batch [${from}, ${n})`, `make the core with at least ${abi.UDP_MAX_SEGS} units`);
    return rc;
  }

  tunUnits(): number {
    return this.x.tun_units();
  }

  /** The TUN device's MTU: tun receive cuts bigger TCP/UDP packets into TSO/USO packets of this size. */
  setTunMtu(mtu: number): void {
    check(this.x.tun_set_mtu(mtu), `setting the TUN MTU to ${mtu}`, "576..65535");
  }

  /** Datagrams one UDP_SEGMENT send may carry: the kernel's UDP_MAX_SEGMENTS (64, or 128 on newer kernels). */
  setUdpSegs(n: number): void {
    check(this.x.tun_set_udp_segs(n), `setting datagrams per UDP_SEGMENT send to ${n}`, `1..${abi.UDP_SEGS_LIMIT}`);
  }

  /** Unit i of the last tun batch, with its iovecs (tests and tools; the shim reads memory directly). */
  unit(i: number): { res: number; addr: number; sport: number; dport: number; gso: number; segs: number; iovs: [number, number][] } {
    const v = this.view();
    const u = this.unitBase + i * abi.UNIT_SIZE;
    const first = v.getUint32(u + abi.UNIT_IOV, true);
    const n = v.getUint32(u + abi.UNIT_NIOV, true);
    const iovs: [number, number][] = [];
    for (let k = 0; k < n; k++) {
      const q = this.iovBase + (first + k) * abi.IOV_SIZE;
      iovs.push([v.getUint32(q, true), v.getUint32(q + 4, true)]);
    }
    return {
      res: v.getInt32(u + abi.UNIT_RES, true), addr: v.getUint32(u + abi.UNIT_ADDR, true), sport: v.getUint16(u + abi.UNIT_SPORT, true),
      dport: v.getUint16(u + abi.UNIT_DPORT, true), gso: v.getUint16(u + abi.UNIT_GSO, true), segs: v.getUint16(u + abi.UNIT_SEGS, true), iovs,
    };
  }

  /** Offset of a direction's R_COUNT u64 counters (DIR_ENCAP's are followed by DIR_DECAP's). */
  countersBase(dir: number): number {
    return this.x.counters_base(dir);
  }

  /** Per-result counters of a direction (abi.DIR_ENCAP or abi.DIR_DECAP). */
  counters(dir: number): Counters {
    const base = this.x.counters_base(dir);
    const v = this.view();
    const out = {} as Counters;
    RESULT_NAMES.forEach((name, i) => {
      out[name] = v.getBigUint64(base + i * 8, true);
    });
    return out;
  }

  // ------------------------------------------------------- checksums, hashes

  /** Ones'-complement 16-bit sum of `data` (+ initial), not inverted. Uses slot 0 as scratch. */
  sum16(data: Uint8Array, initial = 0): number {
    const off = this.writeSlot(0, data);
    return this.x.inet_sum(off, data.length, initial);
  }

  csumReplace16(check: number, old: number, neu: number): number {
    return this.x.csum_replace16(check, old, neu);
  }

  csumReplace32(check: number, old: number, neu: number): number {
    return this.x.csum_replace32(check, old | 0, neu | 0);
  }

  jhash3(a: number, b: number, c: number, initval: number): number {
    return this.x.jhash_3words(a | 0, b | 0, c | 0, initval | 0) >>> 0;
  }

  flowHash(src: number, dst: number, ports: number, proto: number, seed: number): number {
    return this.x.flow_hash(src | 0, dst | 0, ports | 0, proto, seed | 0) >>> 0;
  }

  /** Source port for a flow hash over [min, maxInclusive]. */
  flowSport(hash: number, min: number, maxInclusive: number): number {
    return this.x.flow_sport(hash | 0, min, maxInclusive);
  }
}
