/**
 * dnsperf (DNS-OARC, Debian package `dnsperf`, 2.x) as a library: throughput
 * and latency of a DNS server on loopback.
 *
 * Throughput: `dnsperf -s S -p P -d FILE -l SECONDS -c CLIENTS -T THREADS
 * -q MAX_OUTSTANDING -t TIMEOUT` (the query file is looped for the duration).
 * Its "Statistics:" block on stdout is parsed:
 *
 *     Queries sent:         135053
 *     Queries completed:    135053 (100.00%)
 *     Queries lost:         0 (0.00%)
 *     Response codes:       NOERROR 90035 (66.67%), NXDOMAIN 45018 (33.33%)
 *     Run time (s):         2.000542
 *     Queries per second:   67508.205276
 *     Average Latency (s):  0.000589 (min 0.000017, max 0.004457)
 *     Latency StdDev (s):   0.000355
 *
 * p99: dnsperf 2.x prints no percentiles. Its `-v` mode prints one line per
 * response, "> RCODE name TYPE latency-seconds" ("T" in place of the RCODE on
 * a timeout), and those are exact per-query latencies taken by the C client.
 * Printing them costs dnsperf (and the reader) CPU, so they are not taken in
 * the throughput run: p99 comes from a separate run at a fixed offered load
 * (`-Q qps`, default 5000/s, one client, `p99.seconds` long, default 3) —
 * the latency a pod sees at ordinary load, not the queueing delay at
 * saturation (which is max-outstanding / qps by Little's law and says
 * nothing of the server). Timeouts count as latencies equal to the timeout.
 */
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface DnsperfOptions {
  readonly server: string;
  readonly port: number;
  /** Query lines, "name TYPE" (e.g. "web-1.default.svc.cluster.local A"). */
  readonly queries: readonly string[];
  /** Length of the throughput run. */
  readonly seconds: number;
  /** -c (default 1). */
  readonly clients?: number;
  /** -T (default 1). */
  readonly threads?: number;
  /** -q: queries in flight at most (default 100, dnsperf's). */
  readonly maxOutstanding?: number;
  /** Directory for the query file (the caller owns it). */
  readonly dir: string;
  /** -t: a query unanswered this long is lost (default 2 s). */
  readonly timeoutS?: number;
  /** -Q: cap on the offered rate (default none: as fast as answers come). */
  readonly maxQps?: number;
  /** -e: queries carry EDNS0 (default plain DNS). */
  readonly edns?: boolean;
  /** -m tcp instead of UDP. */
  readonly tcp?: boolean;
  /** Also measure p50/p99 in a second run at a fixed offered load (see the header); false skips it. */
  readonly p99?: false | { readonly qps?: number; readonly seconds?: number };
}

export interface DnsperfStats {
  readonly qps: number;
  readonly sent: number;
  readonly completed: number;
  readonly lost: number;
  readonly runTimeS: number;
  readonly avgLatencyMs: number;
  readonly minLatencyMs: number;
  readonly maxLatencyMs: number;
  readonly stddevLatencyMs: number;
  /** By RCODE name as dnsperf prints it (NOERROR, NXDOMAIN, SERVFAIL, REFUSED, ...). */
  readonly rcodes: Record<string, number>;
}

export interface LatencyStats {
  readonly offeredQps: number;
  readonly samples: number;
  readonly timeouts: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

export interface DnsperfResult extends DnsperfStats {
  readonly p50LatencyMs?: number;
  readonly p99LatencyMs?: number;
  readonly latency?: LatencyStats;
  /** dnsperf's stdout of the throughput run, for logs. */
  readonly output: string;
}

/** Parses the "Statistics:" block of a dnsperf 2.x run; throws when it is missing. */
export function parseDnsperf(out: string): DnsperfStats {
  const num = (re: RegExp, what: string): number => {
    const m = re.exec(out);
    if (!m?.[1]) throw new Error(`dnsperf output has no ${what}:\n${out.slice(-2000)}`);
    return Number(m[1]);
  };
  const rcodes: Record<string, number> = {};
  const rc = /^\s*Response codes:\s*(.*)$/m.exec(out)?.[1] ?? "";
  for (const m of rc.matchAll(/([A-Z0-9]+) (\d+) \(/g)) if (m[1] && m[2]) rcodes[m[1]] = Number(m[2]);
  const lat = /^\s*Average Latency \(s\):\s*([\d.]+) \(min ([\d.]+), max ([\d.]+)\)/m.exec(out);
  return {
    sent: num(/^\s*Queries sent:\s*(\d+)/m, "Queries sent"),
    completed: num(/^\s*Queries completed:\s*(\d+)/m, "Queries completed"),
    lost: num(/^\s*Queries lost:\s*(\d+)/m, "Queries lost"),
    runTimeS: num(/^\s*Run time \(s\):\s*([\d.]+)/m, "Run time"),
    qps: num(/^\s*Queries per second:\s*([\d.]+)/m, "Queries per second"),
    // Absent when nothing completed.
    avgLatencyMs: lat ? Number(lat[1]) * 1000 : NaN,
    minLatencyMs: lat ? Number(lat[2]) * 1000 : NaN,
    maxLatencyMs: lat ? Number(lat[3]) * 1000 : NaN,
    stddevLatencyMs: Number(/^\s*Latency StdDev \(s\):\s*([\d.]+)/m.exec(out)?.[1] ?? NaN) * 1000,
    rcodes,
  };
}

function writeQueries(dir: string, queries: readonly string[]): string {
  if (queries.length === 0) throw new Error("dnsperf: no queries");
  for (const q of queries) if (!/^\S+ [A-Za-z0-9]+$/.test(q.trim())) throw new Error(`dnsperf: query line "${q}" is not "name TYPE"`);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `dnsperf-queries-${process.pid}-${Date.now()}.txt`);
  writeFileSync(file, `${queries.map((q) => q.trim()).join("\n")}\n`);
  return file;
}

function baseArgs(o: DnsperfOptions, file: string): string[] {
  if (!/^(127\.|::1$)/.test(o.server)) throw new Error(`dnsperf harness: ${o.server} is not a loopback address`);
  return [
    "-s", o.server, "-p", String(o.port), "-d", file,
    "-t", String(o.timeoutS ?? 2),
    ...(o.edns ? ["-e"] : []),
    ...(o.tcp ? ["-m", "tcp"] : []),
  ];
}

/**
 * Runs dnsperf; `onLine` (if given) sees each stdout line as it comes and the
 * returned stdout then keeps only lines that do not start with "> ".
 */
function exec(args: string[], onLine?: (line: string) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("dnsperf", args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let partial = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => {
      if (!onLine) {
        out += d.toString();
        return;
      }
      const lines = (partial + d.toString()).split("\n");
      partial = lines.pop() ?? "";
      for (const l of lines) {
        if (l.startsWith("> ")) onLine(l);
        else out += `${l}\n`;
      }
    });
    child.stderr.on("data", (d: Buffer) => (err = (err + d.toString()).slice(-8000)));
    child.on("error", (e) => reject(new Error(`cannot run dnsperf: ${e.message} (apt-get install dnsperf)`)));
    child.on("close", (code) => {
      if (partial) out += partial;
      if (code === 0) resolve(out);
      else reject(new Error(`dnsperf ${args.join(" ")} exited ${code}:\n${err.slice(-2000)}${out.slice(-2000)}`));
    });
  });
}

/** A throughput run (and, unless `p99: false`, a latency run at a fixed load after it). */
export async function runDnsperf(opts: DnsperfOptions): Promise<DnsperfResult> {
  const file = writeQueries(opts.dir, opts.queries);
  const args = [
    ...baseArgs(opts, file),
    "-l", String(opts.seconds),
    "-c", String(opts.clients ?? 1),
    "-T", String(opts.threads ?? 1),
    "-q", String(opts.maxOutstanding ?? 100),
    ...(opts.maxQps ? ["-Q", String(opts.maxQps)] : []),
  ];
  const output = await exec(args);
  const stats = parseDnsperf(output);
  if (opts.p99 === false) return { ...stats, output };
  const latency = await latencyRun(opts, file, opts.p99?.qps ?? 5000, opts.p99?.seconds ?? 3);
  return { ...stats, p50LatencyMs: latency.p50Ms, p99LatencyMs: latency.p99Ms, latency, output };
}

/** Per-query latencies from `dnsperf -v` at `qps` offered queries per second. */
export async function dnsperfLatency(opts: Omit<DnsperfOptions, "seconds" | "p99">, qps: number, seconds: number): Promise<LatencyStats> {
  return latencyRun({ ...opts, seconds }, writeQueries(opts.dir, opts.queries), qps, seconds);
}

async function latencyRun(opts: DnsperfOptions, file: string, qps: number, seconds: number): Promise<LatencyStats> {
  const timeoutMs = (opts.timeoutS ?? 2) * 1000;
  const samples: number[] = [];
  let timeouts = 0;
  const args = [...baseArgs(opts, file), "-v", "-l", String(seconds), "-c", "1", "-T", "1", "-q", "1000", "-Q", String(qps)];
  await exec(args, (line) => {
    // "> NOERROR name TYPE 0.000211" or "> T name TYPE" on a timeout.
    const parts = line.split(" ");
    if (parts[1] === "T") {
      timeouts++;
      samples.push(timeoutMs);
      return;
    }
    const s = Number(parts[parts.length - 1]);
    if (Number.isFinite(s)) samples.push(s * 1000);
  });
  if (samples.length === 0) throw new Error(`dnsperf latency run against ${opts.server}:${opts.port}: no responses`);
  samples.sort((a, b) => a - b);
  const at = (p: number): number => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))] ?? NaN;
  return { offeredQps: qps, samples: samples.length, timeouts, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: samples[samples.length - 1] ?? NaN };
}
