/**
 * `npm run bench:control [-- --json] [-- --nodes N] [-- --subnet-len L] [-- --family 4|6] [-- --changes K] [-- --verbose]`
 *
 * The control plane at scale: N simulated node leases (default 5,000) in a
 * real etcd; one real agent in a network namespace. Measures the time from
 * agent start to the full route table programmed into the kernel, the time
 * from one lease change in etcd to the change applied (p50/p99), and the
 * agent's RSS. Also times iproute2 batch programming against one `ip`
 * process per object, the choice the vxlan backend rests on.
 *
 * `--family 6`: an IPv6-only network (2001:db8:1::/48, /64 per node: 65,535
 * subnets) whose simulated nodes have unique IPv6 PublicIPs, so that 20,000
 * and more nodes fit the test addresses (IPv4 leaves room for 16,332).
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import * as abi from "../asm/abi.js";
import { WasmCore } from "../src/dataplane/core/wasm-core.js";
import { queryCounters, queryStatus } from "../src/agent/control.js";
import { formatIpv4 } from "../src/common/ipv4.js";
import { Cluster } from "../src/harness/cluster.js";
import { run } from "../src/common/exec.js";
import { Netns } from "../src/harness/netns.js";
import { encodeLeaseAttrs, NO_IPV4, subnetKey } from "../src/subnet/lease.js";
import { formatCidr6, parseCidr6 } from "../src/common/ipv6.js";
import { benchArgs } from "./args.js";
import type { Figure } from "./report/schema.js";

const args = benchArgs("bench:control", {
  json: { type: "boolean", help: "print one JSON document as the last line" },
  nodes: { type: "number", default: 5000, min: 1, integer: true, help: "simulated node leases (at most the subnets of --subnet-len less the agent's own and 50 for changes)" },
  backend: { type: "string", default: "vxlan", choices: ["vxlan", "ebpf", "tun"], help: "the agent's backend (vxlan: the kernel objects are checked one by one; ebpf: map sizes; tun: WASM table sizes)" },
  "subnet-len": { type: "number", default: 29, min: 24, max: 30, integer: true, help: "the cluster network 198.18.0.0/16's subnet length (/29: 8,192 subnets, /30: 16,384)" },
  changes: { type: "number", default: 100, min: 0, integer: true, help: "lease changes timed after the full sync" },
  "reconcile-interval": { type: "number", default: 10, min: 0.2, max: 3600, help: "the agents' --reconcile-interval, s (default: the agent's own default; the test harness runs 2 s)" },
  agents: { type: "number", default: 1, min: 1, max: 8, integer: true, help: "real agents, one per node namespace: the join of 100 nodes is timed until every one has programmed them (the changes and RSS are the first agent's)" },
  family: { type: "string", default: "4", choices: ["4", "6"], help: "6: an IPv6-only network (2001:db8:1::/48 in /64s, IPv6 PublicIPs), room for 65,383 nodes" },
  verbose: { type: "boolean", help: "print every change latency and the agent's last log lines" },
}, {
  seconds: "it runs a fixed amount of work (a full sync of --nodes leases, then --changes changes); size it with those",
});
const json = args.json;
const NODES = args.nodes;
const V6 = args.family === "6";
const LEN = V6 ? 64 : args["subnet-len"];
/** Subnets of the cluster network 198.18.0.0/16 at --subnet-len (IPv6: 2001:db8:1::/48 in /64s, less the first, which flannel skips). */
const SUBNETS = V6 ? 2 ** 16 - 1 : 2 ** (LEN - 16);
/** The agent's own subnet, the 50 subnets the changes use and the 100 that join at once come out of the same range. */
if (V6 && NODES > SUBNETS - 152) {
  console.error(`bench:control: --nodes ${NODES} does not fit 2001:db8:1::/48 in /64s: at most ${SUBNETS - 152} nodes`);
  process.exit(2);
}
if (!V6 && NODES > SUBNETS - 152) {
  console.error(`bench:control: --nodes ${NODES} does not fit the cluster network 198.18.0.0/16 at /${LEN}: it has ${SUBNETS} subnets, ` +
    `of which the agent takes one, the changes 50 and the joins 100 (at most ${SUBNETS - 152} nodes)${LEN < 30 ? `; use --subnet-len ${Math.min(30, LEN + Math.ceil(Math.log2((NODES + 152) / SUBNETS)))}` : ""}. ` +
    "The simulated PublicIPs (198.19.0.0/16, outside the cluster network and unique, as the agent requires) allow 65,534.");
  process.exit(2);
}
const CHANGES = args.changes;
const AGENTS = args.agents;
const log = (s: string): void => (json ? console.error(s) : console.log(s));

/**
 * Simulated node i: the (i+1)th subnet (--subnet-len) of the cluster network
 * 198.18.0.0/16, PublicIP 198.19.0.0 + i + 1 — unique (the agent refuses a
 * PublicIP used twice), outside the cluster network, and on no interface:
 * these addresses only appear as neighbour and FDB entries in the node's
 * namespace.
 */
function simLease(i: number): { key: string; value: string } {
  const pub = (0xc6130000 + i + 1) >>> 0;
  const mac = Uint8Array.of(0x02, 0x5e, (i >> 16) & 255, (i >> 8) & 255, i & 255, 0x01);
  if (V6) {
    // IPv6 only: key 0.0.0.0-0&<v6>-64, PublicIP 0.0.0.0, PublicIPv6 2001:db8:fe::<i+1> (unique, outside the network and the underlay).
    const subnet6 = parseCidr6(subnetOf(i));
    return {
      key: `/coreos.com/network/subnets/${subnetKey(NO_IPV4, subnet6)}`,
      value: encodeLeaseAttrs({ publicIp: 0, backendType: "vxlan", vni: 1, vtepMac: mac, publicIpv6: (0x20010db800fen << 80n) + BigInt(i + 1), v6: { vni: 1, vtepMac: mac } }),
    };
  }
  return {
    key: `/coreos.com/network/subnets/${subnetOf(i).replace("/", "-")}`,
    value: encodeLeaseAttrs({ publicIp: pub, backendType: "vxlan", vni: 1, vtepMac: mac }),
  };
}

/** Simulated node i's subnet, as `ip route` prints it. */
function subnetOf(i: number): string {
  if (V6) return formatCidr6({ addr: (0x20010db80001n << 80n) + (BigInt(i + 1) << 64n), len: 64 });
  return `${formatIpv4((0xc6120000 + (i + 1) * 2 ** (32 - LEN)) >>> 0)}/${LEN}`;
}

/** The vxlan backend's device for the family benched. */
const DEVICE = V6 ? "weft-v6.1" : "weft.1";

/** Runs `f` n times one after another; each run's milliseconds. */
async function times(n: number, f: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let k = 0; k < n; k++) {
    const t = performance.now();
    await f();
    out.push(performance.now() - t);
  }
  return out;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
}

/** The ebpf backend's pinned maps: entries and the kernel's memory for each (bpftool's bytes_memlock). */
async function bpfMapSizes(c: Cluster): Promise<{ text: string; bytes: Record<string, number> }> {
  const dir = join(c.files(0).bpffs, "weft", "maps");
  const bytes: Record<string, number> = {};
  const parts: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const info = JSON.parse(await run(["bpftool", "-j", "map", "show", "pinned", join(dir, name)])) as { type: string; max_entries: number; bytes_memlock?: number };
    bytes[name] = info.bytes_memlock ?? 0;
    parts.push(`${name} (${info.type}, ${info.max_entries} max) ${((info.bytes_memlock ?? 0) / 2 ** 20).toFixed(1)} MiB`);
  }
  return { text: parts.join(", "), bytes };
}

/** A tun worker's WASM core, made as the worker makes it (tables sized for 65,536 peers and prefixes up front). */
function wasmTableSizes(): { text: string; bytes: Record<string, number> } {
  const core = WasmCore.create({ maxPeers: 65536, maxRules: 65536, maxBatch: 16, slots: 16, slotSize: 65664, headroom: 64, units: abi.MAX_UNITS });
  const mem = core.bytes().byteLength;
  return { text: `each of the agent's two workers holds a WASM memory of ${(mem / 2 ** 20).toFixed(1)} MiB, allocated at start (peers and prefixes up to 65,536; 16 packet slots of 64 KiB)`, bytes: { wasm_memory_per_worker: mem } };
}

async function netlinkComparison(): Promise<{ batchPerPeerUs: number; execPerPeerUs: number }> {
  const ns = await Netns.create("nl");
  try {
    await ns.ip("link", "add", "u0", "type", "veth", "peer", "name", "u1");
    await ns.ip("link", "set", "u0", "up");
    await ns.ip("link", "add", "weft.1", "type", "vxlan", "id", "1", "local", "192.0.2.1", "dev", "u0", "dstport", "8472", "nolearning");
    await ns.ip("link", "set", "weft.1", "up");
    const n = 2000;
    const lines = (k: number, op: string) => Array.from({ length: k }, (_, i) => {
      const gw = formatIpv4((0xc6120000 + (i + 1) * 16) >>> 0);
      return `route ${op} ${gw}/28 via ${gw} dev weft.1 onlink`;
    });
    let t = performance.now();
    await run(["ip", "netns", "exec", ns.name, "ip", "-batch", "-"], { input: `${lines(n, "replace").join("\n")}\n` });
    const batchPerPeerUs = ((performance.now() - t) * 1000) / n;
    await run(["ip", "netns", "exec", ns.name, "ip", "-batch", "-"], { input: `${lines(n, "del").join("\n")}\n` });
    const m = 200;
    t = performance.now();
    for (const l of lines(m, "replace")) await ns.ip(...l.split(" "));
    const execPerPeerUs = ((performance.now() - t) * 1000) / m;
    return { batchPerPeerUs, execPerPeerUs };
  } finally {
    await ns.destroy();
  }
}

/**
 * The agent's kernel objects on weft.1 against the leases it must have
 * programmed: one onlink route per lease subnet (exactly those, no others),
 * one permanent neighbour and one FDB entry per lease. Throws on a mismatch,
 * so a run whose sync left the kernel short (or over) fails instead of
 * reporting a time.
 */
async function checkKernel(c: Cluster, expected: ReadonlySet<string>, when: string): Promise<{ routes: number; neigh: number; fdb: number }> {
  const ns = c.node(0).ns;
  const f = V6 ? "-6" : "-4";
  // Peer routes are the onlink ones via a gateway (an IPv6 device also has its own address's and fe80::/64).
  const routes = (await ns.exec(["ip", f, "route", "show", "dev", DEVICE])).split("\n").filter((l) => l.includes(" via ")).map((l) => l.trim().split(" ")[0] ?? "").filter(Boolean);
  const neigh = (await ns.exec(["ip", f, "neigh", "show", "dev", DEVICE])).split("\n").filter((l) => l.includes("PERMANENT")).length;
  const fdb = (await ns.exec(["bridge", "fdb", "show", "dev", DEVICE])).split("\n").filter((l) => / dst [\da-f]/.test(l)).length;
  const got = new Set(routes);
  const missing = [...expected].filter((s) => !got.has(s));
  const extra = routes.filter((s) => !expected.has(s));
  if (missing.length > 0 || extra.length > 0 || routes.length !== expected.size || neigh !== expected.size || fdb !== expected.size) {
    throw new Error(`${when}: the kernel does not match the ${expected.size} leases: ${routes.length} routes on ${DEVICE} ` +
      `(${missing.length} missing, e.g. ${missing.slice(0, 3).join(" ")}; ${extra.length} not from a lease, e.g. ${extra.slice(0, 3).join(" ")}), ` +
      `${neigh} permanent neighbours, ${fdb} FDB entries`);
  }
  return { routes: routes.length, neigh, fdb };
}

async function main(): Promise<void> {
  log(`bench:control: ${NODES} simulated leases, ${CHANGES} changes`);
  const c = await Cluster.create({
    nodes: AGENTS, podsPerNode: 0, manualNodes: Array.from({ length: AGENTS }, (_, i) => i), backend: args.backend,
    ...(V6 ? { ipv6Only: true, ipv6Network: "2001:db8:1::/48", ipv6SubnetLen: 64 } : { network: "198.18.0.0/16", subnetLen: LEN }),
  });
  const reg = c.registry();
  try {
    const lease = await reg.grant(86400);
    for (let i = 0; i < NODES; i += 100) {
      const ops = [];
      for (let j = i; j < Math.min(NODES, i + 100); j++) {
        const l = simLease(j);
        ops.push(reg.client.put(l.key).value(l.value).lease(lease));
      }
      await reg.client.if("/bench/never", "Version", "==", 0).then(...ops).commit();
    }
    const sock = c.files(0).socket;
    const t0 = performance.now();
    const extra = ["--reconcile-interval", String(args["reconcile-interval"])];
    const agent = c.startAgent(0, extra);
    // The other agents are peers of each other and of agent 0: each programs NODES + AGENTS - 1.
    const PEERS = NODES + AGENTS - 1;
    let fullSync = 0;
    for (let i = 1; i < AGENTS; i++) c.startAgent(i, extra);
    for (;;) {
      const k = await queryCounters(sock, 1000).catch(() => undefined);
      if (k?.ready && k.counters["peersProgrammed"] === PEERS) {
        fullSync = performance.now() - t0;
        break;
      }
      if (agent.exitCode !== null) throw new Error(`agent exited: ${c.agentLog(0).slice(-2000)}`);
      if ((k?.counters["leasesRejected"] ?? 0) > 0) throw new Error(`the agent refused ${k?.counters["leasesRejected"]} simulated leases: ${JSON.stringify((await c.status(0)).rejectedLeases.slice(0, 3))}`);
      if (performance.now() - t0 > 120_000) throw new Error(`no full sync in 120 s: ${JSON.stringify(k)}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    log(`full sync: ${fullSync.toFixed(0)} ms (agent start to ${PEERS} peers programmed${AGENTS > 1 ? `, ${AGENTS} agents starting together` : ""})`);
    for (let i = 1; i < AGENTS; i++) {
      for (;;) {
        const k = await queryCounters(c.files(i).socket, 1000).catch(() => undefined);
        if (k?.ready && k.counters["peersProgrammed"] === PEERS) break;
        if (performance.now() - t0 > 240_000) throw new Error(`agent ${i} did not sync in 240 s: ${JSON.stringify(k)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const expected = new Set(Array.from({ length: NODES }, (_, i) => subnetOf(i)));
    for (let i = 1; i < AGENTS; i++) {
      const st = await c.status(i);
      const other = V6 ? st.subnet6 : st.subnet;
      if (other) expected.add(other);
    }
    const vxlan = args.backend === "vxlan";
    if (vxlan) {
      const synced = await checkKernel(c, expected, "after the full sync");
      log(`kernel after the full sync: ${synced.routes} routes, ${synced.neigh} neighbours, ${synced.fdb} FDB entries on ${DEVICE} (= ${expected.size} leases)`);
    }
    const tables = args.backend === "ebpf" ? await bpfMapSizes(c) : args.backend === "tun" ? wasmTableSizes() : undefined;
    if (tables) log(`${args.backend} tables with ${NODES} peers: ${tables.text}`);

    // Changes: 50 simulated leases from the top of the range (above the first NODES), leaving out the agent's own.
    const owns = new Set<string>();
    for (let i = 0; i < AGENTS; i++) {
      const st = await c.status(i);
      const o = V6 ? st.subnet6 : st.subnet;
      if (o) owns.add(o);
    }
    const spare: number[] = [];
    for (let i = SUBNETS - 2; spare.length < 150 && i >= NODES; i--) if (!owns.has(subnetOf(i))) spare.push(i);
    const pool = spare.slice(0, 50);
    const joins = spare.slice(50, 150);
    if (CHANGES > 0 && pool.length === 0) throw new Error(`no free subnets left for changes above ${NODES} leases`);
    const lat: number[] = [];
    for (let i = 0; i < CHANGES; i++) {
      const idx = pool[Math.floor(i / 2) % pool.length]!; // put at even i, delete the same at odd i
      const l = simLease(idx);
      const before = (await queryCounters(sock)).counters["diffs"] ?? 0;
      const t = performance.now();
      if (i % 2 === 0) {
        await reg.client.put(l.key).value(l.value).lease(lease);
        expected.add(subnetOf(idx));
      } else {
        await reg.client.delete().key(l.key);
        expected.delete(subnetOf(idx));
      }
      for (;;) {
        const k = await queryCounters(sock);
        if ((k.counters["diffs"] ?? 0) > before) break;
        if (performance.now() - t > 10_000) throw new Error("a change was not applied in 10 s");
        await new Promise((r) => setImmediate(r));
      }
      lat.push(performance.now() - t);
    }
    // 100 nodes join at once (one etcd transaction): the time until the agent has programmed all of them.
    let joinMs = NaN;
    const joinEach: number[] = [];
    if (joins.length === 100) {
      const sockets = Array.from({ length: AGENTS }, (_, i) => c.files(i).socket);
      // The other agents apply the last change a little after agent 0: wait until every agent holds as many peers as it.
      const settled = (await queryCounters(sock)).counters["peersProgrammed"] ?? 0;
      for (const s of sockets) {
        const end = performance.now() + 10_000;
        while (((await queryCounters(s)).counters["peersProgrammed"] ?? 0) !== settled) {
          if (performance.now() > end) throw new Error(`an agent does not settle at ${settled} peers before the join`);
          await new Promise((r) => setTimeout(r, 10));
        }
      }
      const before = sockets.map(() => settled);
      const t = performance.now();
      await reg.client.if("/bench/never", "Version", "==", 0).then(...joins.map((idx) => {
        const l = simLease(idx);
        return reg.client.put(l.key).value(l.value).lease(lease);
      })).commit();
      // Every agent polled in turn: the join is done for an agent when it has programmed all 100.
      const done = new Array<number | undefined>(AGENTS).fill(undefined);
      while (done.some((d) => d === undefined)) {
        for (let i = 0; i < AGENTS; i++) {
          if (done[i] !== undefined) continue;
          const k = await queryCounters(sockets[i]!);
          if ((k.counters["peersProgrammed"] ?? 0) >= (before[i] ?? 0) + 100) done[i] = performance.now() - t;
        }
        if (performance.now() - t > 30_000) {
          const ks = await Promise.all(sockets.map(async (s) => (await queryCounters(s)).counters));
          throw new Error(`100 joining nodes not programmed by every agent in 30 s: ${JSON.stringify(done)}; before ${JSON.stringify(before)}; now ${JSON.stringify(ks)}`);
        }
        await new Promise((r) => setImmediate(r));
      }
      joinEach.push(...done.map((d) => Math.round(d ?? NaN)));
      joinMs = Math.max(...joinEach);
      for (const idx of joins) expected.add(subnetOf(idx));
      log(`100 nodes joining at once (one etcd transaction): ${AGENTS > 1 ? `every one of ${AGENTS} agents` : "all"} programmed ${joinMs.toFixed(0)} ms after the write` +
        (AGENTS > 1 ? ` (each agent: ${joinEach.join(", ")} ms)` : ""));
    }
    const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${agent.pid}/status`, "utf8"))?.[1] ?? 0) / 1024;
    // `weft status`: the control socket's status answer with every peer, and as `weft status` asks by default
    // (the first 20 peers and the counts); five times each, the median.
    const statusMs = await times(5, () => queryStatus(sock, 30_000));
    const statusBytes = JSON.stringify(await queryStatus(sock, 30_000)).length;
    const statusP50 = pct(statusMs, 50);
    const shortMs = await times(5, () => queryStatus(sock, 30_000, { offset: 0, limit: 20 }));
    log(`weft status (first 20 peers, the default): ${pct(shortMs, 50).toFixed(1)} ms (median of 5)`);
    // Where the RSS is: the agent's own heap gauges from /metrics.
    const metrics = await c.node(0).ns.exec(["curl", "-s", "http://127.0.0.1:9099/metrics"]).catch(() => "");
    const gauge = (name: string): number => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(metrics)?.[1] ?? NaN) / 2 ** 20;
    log(`agent memory: heap used ${gauge("weft_nodejs_heap_size_used_bytes").toFixed(0)} MB of ${gauge("weft_nodejs_heap_size_total_bytes").toFixed(0)} MB, ` +
      `external ${gauge("weft_nodejs_external_memory_bytes").toFixed(0)} MB`);
    log(`weft status: ${statusP50.toFixed(1)} ms for ${(statusBytes / 1024).toFixed(0)} KiB (${NODES} peers, median of 5)`);
    const after = vxlan ? await checkKernel(c, expected, `after ${CHANGES} changes`) : { routes: NaN, neigh: NaN, fdb: NaN };
    if (args.verbose) log(`latencies (ms): ${lat.map((x) => x.toFixed(0)).join(" ")}`);
    log(`change applied: p50 ${pct(lat, 50).toFixed(1)} ms, p99 ${pct(lat, 99).toFixed(1)} ms (${CHANGES} changes: add/delete one lease)`);
    log(`agent RSS: ${rss.toFixed(0)} MB${vxlan ? `; kernel after the changes: ${after.routes} routes, ${after.neigh} neighbours, ${after.fdb} FDB entries on ${DEVICE} (= ${expected.size} leases)` : ""}`);
    const nl = await netlinkComparison();
    log(`iproute2: batch ${nl.batchPerPeerUs.toFixed(1)} us/object vs one process per object ${nl.execPerPeerUs.toFixed(0)} us/object (${(nl.execPerPeerUs / nl.batchPerPeerUs).toFixed(0)}x)`);
    if (json) {
      const r1 = (x: number): number => Math.round(x * 10) / 10;
      const figures: Figure[] = [
        { id: "full_sync_ms", name: `full sync of ${NODES} peers (agent start to ready, kernel programmed)`, unit: "ms", value: Math.round(fullSync), higherIsBetter: false,
          rounds: [Math.round(fullSync)], summary: "only", ...(NODES === 5000 ? { target: { of: "value", op: "<=", value: 3000 } as const } : {}) },
        { id: "change_p50_ms", name: "one lease change applied to the kernel, p50", unit: "ms", value: r1(pct(lat, 50)), higherIsBetter: false,
          rounds: [r1(pct(lat, 50))], summary: "only", samples: lat.map(r1) },
        { id: "change_p99_ms", name: "one lease change applied to the kernel, p99", unit: "ms", value: r1(pct(lat, 99)), higherIsBetter: false,
          rounds: [r1(pct(lat, 99))], summary: "only", target: { of: "value", op: "<=", value: 100 } },
        { id: "agent_rss_mb", name: `agent RSS with ${NODES} peers`, unit: "MB", value: Math.round(rss), higherIsBetter: false,
          rounds: [Math.round(rss)], summary: "only", ...(NODES === 5000 ? { target: { of: "value", op: "<=", value: 150 } as const } : {}) },
        ...(Number.isFinite(joinMs) ? [{ id: "join100_ms", name: `100 nodes joining at once, all programmed${AGENTS > 1 ? ` by all ${AGENTS} agents` : ""}`, unit: "ms", value: Math.round(joinMs), higherIsBetter: false,
          rounds: [Math.round(joinMs)], summary: "only" } satisfies Figure] : []),
        { id: "status_ms", name: `\`weft status\` answer with ${NODES} peers (median of 5)`, unit: "ms", value: r1(statusP50), higherIsBetter: false,
          rounds: statusMs.map(r1), summary: "median" },
        { id: "status_first20_ms", name: `\`weft status\` as it asks by default (first 20 of ${NODES} peers, median of 5)`, unit: "ms", value: r1(pct(shortMs, 50)),
          higherIsBetter: false, rounds: shortMs.map(r1), summary: "median" },
        { id: "iproute_batch_us", name: "iproute2 object programmed in a batch, against one process per object", unit: "µs/object", value: r1(nl.batchPerPeerUs),
          higherIsBetter: false, rounds: [r1(nl.batchPerPeerUs)], summary: "only", baseline: { name: "one ip process per object", value: Math.round(nl.execPerPeerUs), rounds: [Math.round(nl.execPerPeerUs)] } },
      ];
      console.log(JSON.stringify({
        nodes: NODES, family: V6 ? 6 : 4, full_sync_ms: Math.round(fullSync), change_p50_ms: +pct(lat, 50).toFixed(1),
        backend: args.backend, agents: AGENTS, ...(tables ? { table_bytes: tables.bytes } : {}),
        ...(Number.isFinite(joinMs) ? { join100_ms: Math.round(joinMs), join100_each_ms: joinEach } : {}),
        change_p99_ms: +pct(lat, 99).toFixed(1), rss_mb: Math.round(rss), status_ms: r1(statusP50), status_kib: Math.round(statusBytes / 1024), kernel_routes: after.routes, figures,
      }));
    }
  } finally {
    if (args.verbose) log(c.agentLog(0).split("\n").filter((l) => !l.includes('"level":30,') || l.includes("reconcil")).slice(-20).join("\n"));
    reg.close();
    await c.destroy();
  }
}

await main();
