/**
 * `npm run bench:dns [-- --json] [-- --seconds 10] [-- --rounds 1] [-- --targets weft,unbound,dns2]
 *   [-- --services 100] [-- --clients 4] [-- --outstanding 100] [-- --p99-qps 5000]`
 *
 * Node-local DNS throughput and latency, the same query file against each
 * target on 127.0.0.1, measured with dnsperf (src/harness/dnsperf.ts):
 *   weft:    weft's DNS server holding the cluster records, forwarding the
 *            external names to an upstream unbound (auth zone) and caching them
 *   unbound: unbound, num-threads 1, every record as local-data (the C baseline)
 *   dns2:    a bare dns2 server (bench/dns2-server.mjs), every record in a Map
 *            (the Node baseline)
 * Queries: one A query per service name web-N.default.svc.cluster.local, some
 * "external" names host-N.example.test, and a few names that do not exist
 * (NXDOMAIN), shuffled; plain DNS over UDP, no EDNS (what glibc stub resolvers
 * in pods send). Each target first answers a check (right address, NXDOMAIN)
 * and gets a 1 s warm-up; then `rounds` rounds of `seconds` each, targets
 * interleaved (alternating order), best round reported. p99 comes from a
 * separate run at a fixed offered load (--p99-qps) per round, lowest reported.
 *
 * Every round is checked (./dns-check.ts): while dnsperf runs, a checker asks
 * the names of the query file in turn and compares each answer (address,
 * rcode) with the right one; after the round every name is asked once more;
 * and dnsperf's rcodes must be NOERROR and NXDOMAIN only, NXDOMAIN in the
 * query file's proportion. A round that fails any of these is excluded from
 * the figures and reported; a target with no good round fails the run.
 * weft's UDP path (the recvmmsg/sendmmsg batch path or the dgram fallback,
 * from its "DNS server listening" log line) is printed and in the JSON.
 *
 * Last line with --json: {"weft_qps","unbound_qps","dns2_qps","weft_p99_ms","weft_udp_path"}
 * (null for a target not run); the line before it on stderr: the p50/p99 of
 * the others, the settings, and the rounds excluded per target.
 */
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { runDnsperf, type DnsperfResult } from "../src/harness/dnsperf.js";
import type { Figure } from "./report/schema.js";
import { benchArgs } from "./args.js";
import { checkWhileRunning, judgeRound, sweep, type Expected } from "./dns-check.js";
import { start } from "../src/common/exec.js";
import { UnboundServer } from "../src/harness/unbound.js";
import { EtcdServer } from "../src/harness/etcd.js";
import { ServiceRegistry } from "../src/registry/store.js";

const ALL = ["weft", "unbound", "dns2"];
const args = benchArgs("bench:dns", {
  json: { type: "boolean", help: "print one JSON document as the last line" },
  seconds: { type: "number", default: 10, min: 1, integer: true, help: "dnsperf seconds per target per round" },
  rounds: { type: "number", default: 1, min: 1, integer: true, help: "rounds, alternating the targets" },
  targets: { type: "string", default: ALL.join(","), choices: ALL, list: true, help: "comma-separated targets" },
  services: { type: "number", default: 100, min: 1, max: 65_000, integer: true, help: "cluster services in the query file" },
  clients: { type: "number", default: 4, min: 1, integer: true, help: "dnsperf -c" },
  outstanding: { type: "number", default: 100, min: 1, integer: true, help: "dnsperf -q" },
  "p99-qps": { type: "number", default: 5000, min: 1, integer: true, help: "offered q/s of the latency run" },
});
const json = args.json;
const SECONDS = args.seconds;
const ROUNDS = args.rounds;
const SERVICES = args.services;
const CLIENTS = args.clients;
const OUTSTANDING = args.outstanding;
const P99_QPS = args["p99-qps"];
const EXTERNAL = 20;
const TTL = 30;
const targets = args.targets.split(",").map((s) => s.trim()).filter(Boolean);
const log = (s: string): void => (json ? console.error(s) : console.log(s));
const r2 = (x: number): number => Math.round(x * 100) / 100;

/** One A record: absolute lower-case name, IPv4 address, TTL. */
interface ARecord {
  readonly name: string;
  readonly address: string;
  readonly ttl: number;
}

/** A DNS server under test, listening on host:port (UDP). */
interface Target {
  readonly host: string;
  readonly port: number;
  /** The server's log lines on stderr from its start (child processes only). */
  readonly logLines?: () => string[];
  close(): Promise<void>;
}

const cluster: ARecord[] = Array.from({ length: SERVICES }, (_, i) => ({
  name: `web-${i + 1}.default.svc.cluster.local.`,
  address: `198.19.${(i + 1) >> 8}.${(i + 1) & 255}`,
  ttl: TTL,
}));
const external: ARecord[] = Array.from({ length: EXTERNAL }, (_, i) => ({ name: `host-${i + 1}.example.test.`, address: `192.0.2.${i + 1}`, ttl: TTL }));
const missing = [...Array.from({ length: 5 }, (_, i) => `missing-${i + 1}.default.svc.cluster.local.`), "nope-1.example.test.", "nope-2.example.test."];

/** The query file: every name once, shuffled with a fixed seed. */
function queryLines(): string[] {
  const lines = [...cluster.map((r) => r.name), ...external.map((r) => r.name), ...missing].map((n) => `${n.replace(/\.$/, "")} A`);
  let seed = 12345;
  for (let i = lines.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const j = seed % (i + 1);
    const a = lines[i];
    const b = lines[j];
    if (a === undefined || b === undefined) continue;
    lines[i] = b;
    lines[j] = a;
  }
  return lines;
}

/**
 * (c) weft's DNS server (bench/weft-dns-server.ts, a child process): the
 * cluster records as services in a real etcd registry, and `upstream`, an
 * unbound serving example.test. authoritatively, for the external names it
 * forwards and caches.
 */
async function startWeftDns(records: readonly ARecord[], upstream: { host: string; port: number }, dir: string): Promise<Target> {
  // The real path: services published in a real etcd, the server's zone built from the registry watch.
  const etcd = await EtcdServer.start({ dir: join(dir, "etcd") });
  const reg = new ServiceRegistry({ endpoints: [etcd.localEndpoint] });
  try {
    for (const r of records) {
      const [name = "", ns = ""] = r.name.split(".");
      await reg.putService(ns, name, { type: "ClusterIP", clusterIPs: [r.address], ports: [{ name: "http", protocol: "TCP", port: 80 }], publishNotReadyAddresses: false });
    }
  } finally {
    reg.close();
  }
  const script = fileURLToPath(new URL("./weft-dns-server.js", import.meta.url));
  try {
    return await spawnReady("weft DNS server", [process.execPath, script, etcd.localEndpoint, "/weft/registry", `${upstream.host}:${upstream.port}`, "0"], () => etcd.close());
  } catch (e) {
    await etcd.close();
    throw e;
  }
}

/** (a) unbound, one thread, every record as local-data in static zones. */
async function startUnbound(dir: string): Promise<Target> {
  const u = await UnboundServer.start({
    dir,
    threads: 1,
    localZones: [{ name: "cluster.local.", type: "static" }, { name: "example.test.", type: "static" }],
    localData: [...cluster, ...external].map((r) => `${r.name} ${r.ttl} IN A ${r.address}`),
    // A benchmark, not a debug session: no per-query work beyond answering.
    extraConfig: "verbosity: 0\nstatistics-interval: 0",
  });
  return { ...u.address, close: () => u.close() };
}

/** (b) the dns2 baseline, a child process. */
async function startDns2(): Promise<Target> {
  const script = fileURLToPath(new URL("../../bench/dns2-server.mjs", import.meta.url));
  const table = Object.fromEntries([...cluster, ...external].map((r) => [r.name, r.address]));
  return spawnReady("dns2 server", [process.execPath, script, JSON.stringify(table), "0", String(TTL)]);
}

/** Spawns a server that prints "ready <port>" once it listens on 127.0.0.1. */
async function spawnReady(label: string, argv: string[], also: () => Promise<void> = async () => undefined): Promise<Target> {
  const child: ChildProcess = start(argv, { stdio: ["ignore", "pipe", "pipe"] });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  let err = "";
  // Its start-up log (what it runs on) is kept whole; later lines only up to a bound.
  const lines: string[] = [];
  let partial = "";
  child.stderr?.on("data", (d: Buffer) => {
    err = (err + d.toString()).slice(-2000);
    const parts = (partial + d.toString()).split("\n");
    partial = parts.pop() ?? "";
    if (lines.length < 1000) lines.push(...parts.slice(0, 1000 - lines.length));
  });
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`${label} did not start in 10 s: ${err}`)), 10_000);
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /^ready (\d+)$/m.exec(out);
      if (m?.[1]) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${label} exited ${code}: ${err}`));
    });
  });
  return {
    host: "127.0.0.1",
    port,
    logLines: () => [...lines],
    close: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
      await also();
    },
  };
}

/** What every name of the query file must answer. */
function expectations(): Expected[] {
  return [
    ...[...cluster, ...external].map((r) => ({ name: r.name, rcode: "NOERROR" as const, address: r.address })),
    ...missing.map((name) => ({ name, rcode: "NXDOMAIN" as const })),
  ];
}

/** Refuses to benchmark a server that answers any name of the query file wrongly. */
async function check(name: string, t: Target): Promise<void> {
  const r = await sweep(t.host, t.port, expectations());
  if (r.wrong.length > 0 || r.unanswered > 0) throw new Error(`${name}: ${r.wrong.join("; ")}${r.unanswered ? ` (${r.unanswered} names unanswered)` : ""}`);
}

/**
 * weft's UDP path per listen address, from its "DNS server listening" log
 * line, and the reason of a dgram fallback from its warning.
 */
function weftUdpPath(t: Target): { path: string; why?: string } {
  let path = "unknown (no \"DNS server listening\" line in its log)";
  let why: string | undefined;
  for (const line of t.logLines?.() ?? []) {
    if (!line.startsWith("{")) continue;
    const o = JSON.parse(line) as { msg?: string; udp?: Record<string, string>; why?: string };
    if (o.msg === "DNS server listening" && o.udp) path = Object.values(o.udp).join(",");
    if (o.msg?.includes("dgram") && o.why) why = o.why;
  }
  return { path, ...(why ? { why } : {}) };
}

interface Row {
  /** Rounds that passed every check. */
  runs: DnsperfResult[];
  /** Rounds left out, with why. */
  excluded: string[];
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "weft-bench-dns-"));
  const running = new Map<string, Target>();
  let weftUdp: { path: string; why?: string } | undefined;
  const closers: (() => Promise<void>)[] = [];
  try {
    for (const name of targets) {
      try {
        let t: Target;
        if (name === "unbound") t = await startUnbound(join(dir, "unbound"));
        else if (name === "dns2") t = await startDns2();
        else {
          const z = external.map((r) => `${r.name} ${r.ttl} IN A ${r.address}`);
          const upstream = await UnboundServer.start({
            dir: join(dir, "upstream"),
            authZones: [{ name: "example.test.", zonefile: ["$TTL 30", "example.test. 3600 IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 30", "example.test. 3600 IN NS ns.example.test.", "ns.example.test. 30 IN A 127.0.0.1", ...z, ""].join("\n") }],
          });
          closers.push(() => upstream.close());
          t = await startWeftDns(cluster, upstream.address, join(dir, "weft"));
        }
        closers.push(() => t.close());
        await check(name, t);
        running.set(name, t);
        log(`${name.padEnd(8)} on ${t.host}:${t.port}`);
        if (name === "weft") {
          weftUdp = weftUdpPath(t);
          log(`weft     UDP path: ${weftUdp.path}${weftUdp.path === "batch" ? " (recvmmsg/sendmmsg)" : `: NOTE, not the batch path${weftUdp.why ? ` (${weftUdp.why})` : ""}`}`);
        }
      } catch (e) {
        log(`${name.padEnd(8)} skipped: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    if (running.size === 0) throw new Error("no target could be started");

    const queries = queryLines();
    const nx = missing.length / queries.length;
    log(`${queries.length} query lines (${SERVICES} services, ${EXTERNAL} external, ${missing.length} NXDOMAIN), dnsperf -c ${CLIENTS} -q ${OUTSTANDING}, ${SECONDS} s x ${ROUNDS} rounds; p99 at ${P99_QPS} q/s offered`);
    const base = { queries, dir: join(dir, "dnsperf"), clients: CLIENTS, threads: 1, maxOutstanding: OUTSTANDING };
    for (const [, t] of running) await runDnsperf({ ...base, server: t.host, port: t.port, seconds: 1, p99: false });

    const rows = new Map<string, Row>([...running.keys()].map((n) => [n, { runs: [], excluded: [] }]));
    const names = [...running.keys()];
    const expected = expectations();
    for (let round = 0; round < ROUNDS; round++) {
      for (const name of round % 2 === 0 ? names : [...names].reverse()) {
        const t = running.get(name);
        if (!t) continue;
        const checker = checkWhileRunning(t.host, t.port, expected);
        const r = await runDnsperf({ ...base, server: t.host, port: t.port, seconds: SECONDS, p99: { qps: P99_QPS, seconds: Math.min(3, SECONDS) } })
          .catch(async (e: unknown) => {
            await checker.stop();
            throw e;
          });
        const during = await checker.stop();
        const after = await sweep(t.host, t.port, expected);
        const why = judgeRound(r, during, after, nx);
        log(`round ${round + 1} ${name.padEnd(8)} ${Math.round(r.qps)} q/s, lost ${r.lost}/${r.sent}, avg ${r2(r.avgLatencyMs)} ms; p50 ${r2(r.p50LatencyMs ?? NaN)} ms p99 ${r2(r.p99LatencyMs ?? NaN)} ms at ${P99_QPS} q/s; ` +
          `answers checked ${during.checked} under load (${during.unanswered} timed out) + ${after.checked} after`);
        if (why.length > 0) {
          rows.get(name)?.excluded.push(`round ${round + 1}: ${why.join("; ")}`);
          log(`  EXCLUDED: ${why.join("; ")}`);
        } else {
          rows.get(name)?.runs.push(r);
        }
        if (r.latency && r.latency.timeouts > r.latency.samples / 100) log(`  warning: ${name} left ${r.latency.timeouts} of ${r.latency.samples} queries unanswered at ${P99_QPS} q/s offered (above its capacity?): its p99 is the 2000 ms timeout`);
      }
    }
    const failed = [...rows].filter(([, row]) => row.runs.length === 0).map(([n]) => n);
    if (failed.length > 0) throw new Error(`bench:dns: no round of ${failed.join(", ")} answered right; figures would be of wrong answers:\n${failed.flatMap((n) => rows.get(n)?.excluded ?? []).join("\n")}`);

    const best = (name: string): { qps: number; p50: number; p99: number; lostPct: number } | undefined => {
      const runs = rows.get(name)?.runs ?? [];
      if (runs.length === 0) return undefined;
      const top = runs.reduce((a, b) => (b.qps > a.qps ? b : a));
      return {
        qps: top.qps,
        p50: Math.min(...runs.map((r) => r.p50LatencyMs ?? Infinity)),
        p99: Math.min(...runs.map((r) => r.p99LatencyMs ?? Infinity)),
        lostPct: (100 * top.lost) / Math.max(1, top.sent),
      };
    };
    log("");
    log(`| target | q/s (best of ${ROUNDS}) | lost | p50 ms @${P99_QPS} q/s (lowest) | p99 ms @${P99_QPS} q/s (lowest of ${ROUNDS}) |`);
    log("| --- | ---: | ---: | ---: | ---: |");
    for (const name of ALL) {
      const b = best(name);
      log(b ? `| ${name} | ${Math.round(b.qps)} | ${r2(b.lostPct)}% | ${r2(b.p50)} | ${r2(b.p99)} |` : `| ${name} | not run | | | |`);
    }
    const w = best("weft");
    const u = best("unbound");
    const d = best("dns2");
    if (w && u) log(`weft/unbound q/s: ${r2(w.qps / u.qps)}x`);
    if (weftUdp) log(`weft UDP path: ${weftUdp.path}`);
    const excluded = Object.fromEntries([...rows].map(([n, row]) => [n, row.excluded.length]));
    log(Object.values(excluded).some((n) => n > 0) ? `rounds excluded for wrong answers: ${JSON.stringify(excluded)}` : "every round of every target answered right (checked during and after each round)");
    if (json) {
      const qps = (b: ReturnType<typeof best>): number | null => (b ? Math.round(b.qps) : null);
      console.error(JSON.stringify({ unbound_p99_ms: u ? r2(u.p99) : null, dns2_p99_ms: d ? r2(d.p99) : null, weft_p50_ms: w ? r2(w.p50) : null, p99_offered_qps: P99_QPS, seconds: SECONDS, rounds: ROUNDS, excluded_rounds: excluded }));
      const roundsOf = (name: string, get: (r: NonNullable<ReturnType<typeof best>>) => number, from: (run: (typeof rows extends Map<string, infer R> ? R : never)["runs"][number]) => number): { value: number; rounds: number[] } | undefined => {
        const b = best(name);
        return b ? { value: get(b), rounds: (rows.get(name)?.runs ?? []).map(from) } : undefined;
      };
      const figures: Figure[] = [];
      const wq = roundsOf("weft", (b) => Math.round(b.qps), (r) => Math.round(r.qps));
      for (const [base, label] of [["unbound", "unbound (num-threads 1)"], ["dns2", "dns2 (Node DNS server library)"]] as const) {
        const bq = roundsOf(base, (b) => Math.round(b.qps), (r) => Math.round(r.qps));
        if (wq && bq) {
          figures.push({
            id: `qps_vs_${base}`, name: `cluster and cached answers, queries per second, against ${label}`, unit: "q/s", value: wq.value, higherIsBetter: true,
            rounds: wq.rounds, summary: "best", baseline: { name: label, value: bq.value, rounds: bq.rounds },
            ...(base === "dns2" ? { target: { of: "ratio", op: ">=", value: 10 } as const } : {}),
          });
        }
      }
      const wp = roundsOf("weft", (b) => r2(b.p99), (r) => r2(r.p99LatencyMs ?? NaN));
      const up = roundsOf("unbound", (b) => r2(b.p99), (r) => r2(r.p99LatencyMs ?? NaN));
      if (wp) figures.push({ id: "p99_ms", name: `p99 latency at ${P99_QPS} q/s offered`, unit: "ms", value: wp.value, higherIsBetter: false, rounds: wp.rounds, summary: "best", ...(up ? { baseline: { name: "unbound", value: up.value, rounds: up.rounds } } : {}) });
      console.log(JSON.stringify({ weft_qps: qps(w), unbound_qps: qps(u), dns2_qps: qps(d), weft_p99_ms: w ? r2(w.p99) : null, weft_udp_path: weftUdp?.path ?? null, figures }));
    }
  } finally {
    for (const c of closers.reverse()) await c().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
