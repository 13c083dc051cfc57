/**
 * `npm run bench:wasm [-- --json] [-- --seconds S]`
 *
 * The WASM core against plain TypeScript, in the same process and the same
 * run: LPM lookups/s at 1k, 10k and 100k random /16-/32 prefixes against two
 * baselines — a typed-array DIR-16-8-8 table (bench/lpm-dir.ts, the good
 * plain-JS design) and the one-Map-per-length reference (the oracle) — and
 * the IPv6 LPM's lookups/s at 10k random /16-/128 prefixes against its
 * one-Map-per-length reference (RefLpm6), and
 * encap/decap packets/s for 1400-byte packets in batches of 64 against the
 * reference tunnel. Every table is checked against the reference before it is
 * timed, and every encap/decap window's last batch is compared byte for byte
 * with the reference's output; a mismatch fails the run. Ratios are the
 * result; absolute figures depend on the machine.
 */
import * as abi from "../asm/abi.js";
import { WasmCore } from "../src/dataplane/core/wasm-core.js";
import { DEFAULT_TUNNEL, type PeerEntry } from "../src/dataplane/core/types.js";
import { RefLpm } from "../src/dataplane/reference/lpm.js";
import { RefLpm6 } from "../src/dataplane/reference/lpm.js";
import { ipv6Bytes, maskOf6 } from "../src/common/ipv6.js";
import { RefTunnel } from "../src/dataplane/reference/tunnel.js";
import { inetChecksum } from "../src/dataplane/reference/checksum.js";
import { maskOf, parseCidr, parseIpv4, parseMac } from "../src/common/ipv4.js";
import { benchArgs } from "./args.js";
import type { Figure } from "./report/schema.js";
import { DirLpm, checkDirLpm, xorshift32 } from "./lpm-dir.js";

const args = benchArgs("bench:wasm", {
  json: { type: "boolean", help: "print one JSON document as the last line" },
  seconds: { type: "number", default: 2, min: 0.1, help: "measuring time per figure (split over alternating windows)" },
});
const json = args.json;
const seconds = args.seconds;
const log = (s: string): void => {
  if (!json) console.log(s);
  else console.error(s);
};

const rng = xorshift32;

/**
 * Measures functions that each handle `perCall` items, alternating short
 * windows of each so that all see the same machine (these hosts are noisy),
 * and returns the best items/s of each. `verify(k)` runs after every window of
 * function k, outside the timing, to check what its last call produced.
 */
function compare(fns: (() => void)[], perCall: number, verify: (k: number) => void = () => undefined): Rates {
  for (let i = 0; i < 50; i++) {
    for (const fn of fns) fn(); // warm up the JIT and the WASM tier-up
  }
  const windows = 9;
  const windowNs = BigInt(Math.round(((seconds / 2) / windows) * 1e9));
  const rounds: number[][] = fns.map(() => []);
  for (let w = 0; w < windows; w++) {
    fns.forEach((fn, k) => {
      let calls = 0;
      const t0 = process.hrtime.bigint();
      const limit = t0 + windowNs;
      let t = t0;
      while (t < limit) {
        for (let i = 0; i < 8; i++) fn();
        calls += 8;
        t = process.hrtime.bigint();
      }
      rounds[k]?.push((calls * perCall) / (Number(t - t0) / 1e9));
      verify(k);
    });
  }
  return { best: rounds.map((r) => Math.max(...r)), rounds };
}

/** Per function: the best window's items/s, and every window's. */
interface Rates {
  readonly best: number[];
  readonly rounds: number[][];
}

interface LpmRow {
  prefixes: number; wasm_mlps: number; dir_mlps: number; ts_mlps: number; groups: number; memory_bytes: number; dir_memory_bytes: number;
  /** M lookups/s of every window: wasm, dir, map. */
  rounds: number[][];
}

function benchLpm(count: number): LpmRow {
  const r = rng(count);
  const core = WasmCore.create({ maxRules: Math.max(count * 2, 1024), maxBatch: 4096, slots: 1, maxPeers: 1 });
  const ref = new RefLpm();
  const dir = new DirLpm();
  const prefixes: [number, number][] = [];
  while (prefixes.length < count) {
    const len = 16 + (r() % 17);
    const a = (r() & maskOf(len)) >>> 0;
    const nh = r() % 65536;
    core.lpmInsert({ addr: a, len }, nh);
    ref.insert(a, len, nh);
    dir.insert(a, len, nh);
    prefixes.push([a, len]);
  }
  // 1M probe addresses: 90% inside an inserted prefix, 10% anywhere.
  const addrs = new Uint32Array(1 << 20);
  for (let i = 0; i < addrs.length; i++) {
    const p = prefixes[r() % prefixes.length]!;
    addrs[i] = r() % 10 === 0 ? r() : (p[0] | (r() & ~maskOf(p[1]))) >>> 0;
  }
  // Check first that all three agree, so the benchmark never measures a broken table:
  // WASM and DIR on every probe, both against the reference on the first 10,000.
  const out = new Int32Array(addrs.length);
  const outDir = new Int32Array(addrs.length);
  core.lookupBatch(addrs, out);
  dir.lookupBatch(addrs, outDir);
  for (let i = 0; i < addrs.length; i++) {
    if (out[i] !== outDir[i]) throw new Error(`wasm (${out[i]}) and DIR (${outDir[i]}) disagree on ${addrs[i]}`);
    if (i < 10000 && out[i] !== ref.lookup(addrs[i]!)) throw new Error(`wasm and reference disagree on ${addrs[i]}`);
  }
  const chunk = 16384;
  let off = 0;
  let sink = 0;
  const rates = compare([() => {
    core.lookupBatch(addrs.subarray(off, off + chunk), out);
    off = (off + chunk) & (addrs.length - 1);
  }, () => {
    dir.lookupBatch(addrs, outDir, off, chunk);
    off = (off + chunk) & (addrs.length - 1);
  }, () => {
    for (let i = off; i < off + chunk; i++) sink ^= ref.lookup(addrs[i]!);
    off = (off + chunk) & (addrs.length - 1);
  }], chunk);
  if (sink === 0.5) log("");
  const [wasm, dirRate, ts] = rates.best;
  return {
    rounds: rates.rounds.map((r) => r.map((x) => x / 1e6)),
    prefixes: count, wasm_mlps: (wasm ?? 0) / 1e6, dir_mlps: (dirRate ?? 0) / 1e6, ts_mlps: (ts ?? 0) / 1e6,
    groups: core.lpmGroups(), memory_bytes: core.lpmMemoryBytes(), dir_memory_bytes: dir.memoryBytes(),
  };
}

interface Lpm6Row {
  prefixes: number; wasm_mlps: number; ts_mlps: number; groups: number; memory_bytes: number;
  /** M lookups/s of every window: wasm, map. */
  rounds: number[][];
}

/** IPv6: `count` random prefixes (half /48-/64, a fifth /16-/47, the rest /65-/128) against RefLpm6. */
function benchLpm6(count: number): Lpm6Row {
  const r = rng(count + 6);
  const u128 = (): bigint => (BigInt(r()) << 96n) | (BigInt(r()) << 64n) | (BigInt(r()) << 32n) | BigInt(r());
  const core = WasmCore.create({ maxRules: 1024, maxRules6: Math.max(count * 2, 1024), maxBatch: 4096, slots: 1, maxPeers: 1 });
  const ref = new RefLpm6();
  const prefixes: [bigint, number][] = [];
  while (prefixes.length < count) {
    const k = r() % 10;
    const len = k < 5 ? 48 + (r() % 17) : k < 7 ? 16 + (r() % 32) : 65 + (r() % 64);
    const a = u128() & maskOf6(len);
    const nh = r() % 65536;
    core.lpm6.insert({ addr: a, len }, nh);
    ref.insert(a, len, nh);
    prefixes.push([a, len]);
  }
  const all = (1n << 128n) - 1n;
  const probes: bigint[] = [];
  const n = 1 << 16;
  const bytes = new Uint8Array(n * 16);
  for (let i = 0; i < n; i++) {
    const p = prefixes[r() % prefixes.length]!;
    const a = r() % 10 === 0 ? u128() : p[0] | (u128() & (all ^ maskOf6(p[1])));
    probes.push(a);
    bytes.set(ipv6Bytes(a), i * 16);
  }
  // Every probe checked against the reference before anything is timed.
  const out = new Int32Array(n);
  core.lpm6.lookupBatch(bytes, out);
  for (let i = 0; i < n; i++) {
    if (out[i] !== ref.lookup(probes[i]!)) throw new Error(`IPv6: wasm (${out[i]}) and reference (${ref.lookup(probes[i]!)}) disagree on ${probes[i]!.toString(16)}`);
  }
  const chunk = 1024;
  let off = 0;
  let sink = 0;
  const rates = compare([() => {
    core.lpm6.lookupBatch(bytes.subarray(off * 16, (off + chunk) * 16), out);
    off = (off + chunk) & (n - 1);
  }, () => {
    for (let i = off; i < off + chunk; i++) sink ^= ref.lookup(probes[i]!);
    off = (off + chunk) & (n - 1);
  }], chunk);
  if (sink === 0.5) log("");
  const [wasm, ts] = rates.best;
  return {
    rounds: rates.rounds.map((x) => x.map((y) => y / 1e6)),
    prefixes: count, wasm_mlps: (wasm ?? 0) / 1e6, ts_mlps: (ts ?? 0) / 1e6, groups: core.lpm6.groups(), memory_bytes: core.lpm6.memoryBytes(),
  };
}

const BATCH = 64;
const PKT = 1400;
const nodes: PeerEntry[] = Array.from({ length: 16 }, (_, i) => ({
  underlay: parseIpv4(`192.0.2.${i + 1}`),
  vtepMac: parseMac(`02:00:c0:00:02:${(i + 1).toString(16).padStart(2, "0")}`),
  subnet: parseCidr(`198.18.${i + 1}.0/24`),
  local: i === 0,
}));

function tunnelOf(i: number) {
  const n = nodes[i]!;
  return { ...DEFAULT_TUNNEL, localIp: n.underlay, localMac: n.vtepMac };
}

function setupCore(self: number): WasmCore {
  const core = WasmCore.create({ maxPeers: 64, maxRules: 1024, slots: BATCH, slotSize: 2048, maxBatch: BATCH });
  core.configure(tunnelOf(self));
  nodes.forEach((n, i) => {
    core.setPeer(i, { ...n, local: i === self });
    core.lpmInsert(n.subnet, i);
  });
  return core;
}

function setupRef(core: WasmCore, self: number): RefTunnel {
  const ref = new RefTunnel(core.bytes(), { pktBase: core.pktBase, pktSize: core.pktSize, descBase: core.descBase }, tunnelOf(self));
  nodes.forEach((n, i) => {
    ref.setPeer(i, { ...n, local: i === self });
    ref.lpm.insert(n.subnet.addr, n.subnet.len, i);
  });
  return ref;
}

/** 64 TCP-like 1400-byte packets from node 0's pods to the other nodes' pods. */
function fillPackets(core: WasmCore): void {
  const r = rng(42);
  for (let i = 0; i < BATCH; i++) {
    const b = new Uint8Array(PKT);
    const v = new DataView(b.buffer);
    v.setUint8(0, 0x45);
    v.setUint16(2, PKT);
    v.setUint8(8, 64);
    v.setUint8(9, 6);
    v.setUint32(12, (parseIpv4("198.18.1.0") | (1 + (r() % 250))) >>> 0);
    v.setUint32(16, (parseIpv4(`198.18.${2 + (i % 15)}.0`) | (1 + (r() % 250))) >>> 0);
    v.setUint32(20, r());
    v.setUint16(10, inetChecksum(b, 0, 20));
    core.setDesc(i, core.writeSlot(i, b), PKT);
  }
}

/** Descriptors [0, n) and the bytes of every packet they name: all a batch produced. */
function output(core: WasmCore, n: number): Uint8Array {
  const mem = core.bytes();
  const parts: Uint8Array[] = [mem.slice(core.descBase, core.descBase + n * abi.DESC_SIZE)];
  for (let i = 0; i < n; i++) {
    const d = core.desc(i);
    if (d.res >= 0) parts.push(mem.slice(d.off, d.off + d.len));
  }
  const all = new Uint8Array(parts.reduce((k, p) => k + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return all;
}

let batchesChecked = 0;
/** Throws unless `got` is byte for byte the reference's output. */
function sameOutput(what: string, got: Uint8Array, want: Uint8Array): void {
  batchesChecked++;
  if (got.length !== want.length) throw new Error(`${what}: ${got.length} bytes of descriptors and packets, the reference made ${want.length}`);
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== want[i]) {
      const desc = i < BATCH * abi.DESC_SIZE ? `descriptor ${Math.floor(i / abi.DESC_SIZE)}, byte ${i % abi.DESC_SIZE}` : `packet bytes, offset ${i - BATCH * abi.DESC_SIZE}`;
      throw new Error(`${what}: output differs from the reference's at ${desc}: ${got[i]} != ${want[i]}`);
    }
  }
}

interface PacketRates {
  wasm_mpps: number; ts_mpps: number;
  /** M packets/s of every window: wasm, reference. */
  rounds: number[][];
}

function benchEncapDecap(): { encap: PacketRates; decap: PacketRates } {
  const a = setupCore(0);
  fillPackets(a);
  const descs = a.bytes().slice(a.descBase, a.descBase + BATCH * abi.DESC_SIZE);
  const restore = (c: WasmCore): void => c.bytes().set(descs, c.descBase);
  const refA = setupRef(a, 0);
  // What encap must produce: the reference's output; every packet taken.
  restore(a);
  if (refA.encapBatch(BATCH, abi.ENCAP_MODE_PAYLOAD) !== BATCH) throw new Error("encap benchmark input is not all valid");
  const wantEncap = output(a, BATCH);
  const encap = compare([() => {
    restore(a);
    a.encap(BATCH);
  }, () => {
    restore(a);
    refA.encapBatch(BATCH, abi.ENCAP_MODE_PAYLOAD);
  }], BATCH, (k) => sameOutput(k === 0 ? "wasm encap" : "reference encap (rerun)", output(a, BATCH), wantEncap));

  // Decap: node 1 receives node 0's payloads for its own subnet.
  const b = setupCore(1);
  restore(a);
  a.encap(BATCH);
  for (let i = 0; i < BATCH; i++) {
    const d = a.desc(i);
    const p = a.bytes().slice(d.off, d.off + d.len);
    p.set(nodes[1]!.vtepMac, 8); // as if every packet were for node 1
    b.setDesc(i, b.writeSlot(i, p), p.length, nodes[0]!.underlay);
  }
  const bdescs = b.bytes().slice(b.descBase, b.descBase + BATCH * abi.DESC_SIZE);
  const restoreB = (): void => b.bytes().set(bdescs, b.descBase);
  const refB = setupRef(b, 1);
  if (refB.decapBatch(BATCH) !== BATCH) throw new Error("decap benchmark input is not all valid");
  const wantDecap = output(b, BATCH);
  const decap = compare([() => {
    restoreB();
    b.decap(BATCH);
  }, () => {
    restoreB();
    refB.decapBatch(BATCH);
  }], BATCH, (k) => sameOutput(k === 0 ? "wasm decap" : "reference decap (rerun)", output(b, BATCH), wantDecap));
  const mpps = (r: Rates): PacketRates => ({
    wasm_mpps: (r.best[0] ?? 0) / 1e6, ts_mpps: (r.best[1] ?? 0) / 1e6, rounds: r.rounds.map((w) => w.map((x) => x / 1e6)),
  });
  return { encap: mpps(encap), decap: mpps(decap) };
}

const f = (x: number): string => x.toFixed(2);
const dirChecked = checkDirLpm(1);
log(`DIR-16-8-8 baseline checked against the reference: ${dirChecked} lookups over /0-/32 prefixes, inserts and deletes`);
const lpm = [1000, 10000, 100000].map(benchLpm);
log("\nLPM lookups (random /16-/32 prefixes; 90% of probes inside a prefix)");
log("baselines: dir = plain TS DIR-16-8-8 in typed arrays (bench/lpm-dir.ts); map = RefLpm, one Map per prefix length (the oracle)");
log("prefixes   wasm M/s  dir M/s  map M/s  wasm/dir  wasm/map   groups  wasm table bytes  dir table bytes");
for (const row of lpm) {
  log(`${String(row.prefixes).padEnd(10)} ${f(row.wasm_mlps).padStart(8)} ${f(row.dir_mlps).padStart(8)} ${f(row.ts_mlps).padStart(8)} ` +
    `${f(row.wasm_mlps / row.dir_mlps).padStart(8)}x ${f(row.wasm_mlps / row.ts_mlps).padStart(8)}x ${String(row.groups).padStart(8)} ` +
    `${String(row.memory_bytes).padStart(17)} ${String(row.dir_memory_bytes).padStart(16)}`);
}
const lpm6 = benchLpm6(10000);
log("\nIPv6 LPM lookups (random /16-/128 prefixes, half /48-/64; 90% of probes inside a prefix; every probe checked against the reference)");
log("prefixes   wasm M/s  map M/s  wasm/map   groups  wasm table bytes");
log(`${String(lpm6.prefixes).padEnd(10)} ${f(lpm6.wasm_mlps).padStart(8)} ${f(lpm6.ts_mlps).padStart(8)} ${f(lpm6.wasm_mlps / lpm6.ts_mlps).padStart(8)}x ` +
  `${String(lpm6.groups).padStart(8)} ${String(lpm6.memory_bytes).padStart(17)}`);
const pk = benchEncapDecap();
log(`\n${PKT}-byte packets, batches of ${BATCH}; the last batch of every window compared byte for byte with the reference's output (${batchesChecked} batches)`);
log(`encap  wasm ${f(pk.encap.wasm_mpps)} Mpps   ts ${f(pk.encap.ts_mpps)} Mpps   ratio ${f(pk.encap.wasm_mpps / pk.encap.ts_mpps)}x`);
log(`decap  wasm ${f(pk.decap.wasm_mpps)} Mpps   ts ${f(pk.decap.ts_mpps)} Mpps   ratio ${f(pk.decap.wasm_mpps / pk.decap.ts_mpps)}x`);

const round = (x: number): number => Math.round(x * 100) / 100;
if (json) {
  const doc = {
    lpm: lpm.map((r) => ({
      prefixes: r.prefixes, wasm_mlps: round(r.wasm_mlps), dir_mlps: round(r.dir_mlps), ts_mlps: round(r.ts_mlps),
      wasm_vs_dir: round(r.wasm_mlps / r.dir_mlps), wasm_vs_ts: round(r.wasm_mlps / r.ts_mlps), dir_memory_bytes: r.dir_memory_bytes,
    })),
    lpm6: {
      prefixes: lpm6.prefixes, wasm_mlps: round(lpm6.wasm_mlps), ts_mlps: round(lpm6.ts_mlps), wasm_vs_ts: round(lpm6.wasm_mlps / lpm6.ts_mlps),
      groups: lpm6.groups, memory_bytes: lpm6.memory_bytes,
    },
    encap: { wasm_mpps: round(pk.encap.wasm_mpps), ts_mpps: round(pk.encap.ts_mpps) },
    decap: { wasm_mpps: round(pk.decap.wasm_mpps), ts_mpps: round(pk.decap.ts_mpps) },
    lpm_memory_bytes: lpm[lpm.length - 1]?.memory_bytes ?? 0,
    batches_checked: batchesChecked,
    figures: [
      ...lpm.flatMap((r): Figure[] => {
        const k = r.prefixes >= 1000 ? `${r.prefixes / 1000}k` : String(r.prefixes);
        const [w = [], d = [], m = []] = r.rounds;
        return [
          { id: `lpm_${k}_vs_dir`, name: `LPM lookups, ${k} prefixes, against a typed-array DIR-16-8-8`, unit: "M lookups/s", value: round(r.wasm_mlps), higherIsBetter: true,
            rounds: w.map(round), summary: "best", baseline: { name: "DIR-16-8-8 (JS)", value: round(r.dir_mlps), rounds: d.map(round) } },
          { id: `lpm_${k}_vs_map`, name: `LPM lookups, ${k} prefixes, against the Map oracle`, unit: "M lookups/s", value: round(r.wasm_mlps), higherIsBetter: true,
            rounds: w.map(round), summary: "best", baseline: { name: "Map per length (JS)", value: round(r.ts_mlps), rounds: m.map(round) },
            ...(r.prefixes === 10000 ? { target: { of: "value", op: ">=", value: 50 } as const } : {}) },
        ];
      }),
      {
        id: "lpm6_10k_vs_map", name: "IPv6 LPM lookups, 10k prefixes, against the Map oracle", unit: "M lookups/s", value: round(lpm6.wasm_mlps),
        higherIsBetter: true, rounds: (lpm6.rounds[0] ?? []).map(round), summary: "best",
        baseline: { name: "Map per length (JS)", value: round(lpm6.ts_mlps), rounds: (lpm6.rounds[1] ?? []).map(round) },
      } satisfies Figure,
      ...(["encap", "decap"] as const).map((what): Figure => {
        const x = pk[what];
        const [w = [], t = []] = x.rounds;
        return {
          id: `${what}_mpps`, name: `${what}, 1400-byte packets, batches of ${BATCH}`, unit: "M packets/s", value: round(x.wasm_mpps), higherIsBetter: true,
          rounds: w.map(round), summary: "best", baseline: { name: "TypeScript reference", value: round(x.ts_mpps), rounds: t.map(round) },
          ...(what === "encap" ? { target: { of: "value", op: ">=", value: 10 } as const } : {}),
        };
      }),
    ],
  };
  console.log(JSON.stringify(doc));
}
