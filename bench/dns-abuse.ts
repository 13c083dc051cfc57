/**
 * `npm run bench:dns-abuse [-- --json] [-- --seconds 6] [-- --tricklers 200,1100] [-- --addresses 50,110]
 *   [-- --pipeliners 4] [-- --byte-every 1000]`
 *
 * DNS over TCP under abuse, three processes on 127.0.0.0/8:
 *   server:    weft's DNS server (DnsService with its default limits, a
 *              ClusterIP service in its zone, forwarding to a real unbound)
 *              in a child process whose RSS is sampled every 250 ms;
 *   attackers: a child process running `tricklers` TCP connections from
 *              `addresses` loopback source addresses, each sending a query a
 *              byte every `byte-every` ms and reconnecting at once when cut,
 *              plus `pipeliners` connections that write queries as fast as
 *              the socket takes them and never read an answer;
 *   normal:    this process: one TCP client (a new connection per query, as
 *              a stub falling back to TCP) and one UDP client, each asking
 *              the service's name in a loop for `seconds`, 2 s timeout.
 * Phases: no abuse, then each trickler count in turn (with the pipeliners).
 * Per phase: the normal clients' success rate and latency p50/p99, the
 * server's peak RSS and its live heap + buffers after a full GC at the end
 * of the phase (attack still on), and the TCP connections the server closed
 * by reason.
 * Last line with --json: one object per phase.
 *
 * `--serve` and `--attack` are the child modes (used by the bench itself).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EventEmitter } from "node:events";
import { fileURLToPath } from "node:url";
import { silentLogger } from "../src/common/log.js";
import { parseUpstream } from "../src/dns/forward/upstreams.js";
import { DnsService, type ServiceView } from "../src/dns/service.js";
import type { ZoneService } from "../src/dns/cluster/records.js";
import { encodeQuery, query } from "../src/harness/dnswire.js";
import { UnboundServer } from "../src/harness/unbound.js";

const args = process.argv.slice(2);
const arg = (name: string, def: string): string => {
  const i = args.indexOf(name);
  return i >= 0 ? (args[i + 1] ?? def) : def;
};
const WEB = "web.default.svc.cluster.local";
const WEB_IP = "198.18.255.10";

// ---------------------------------------------------------------- child: the server

async function serve(upstream: string): Promise<void> {
  const web: ZoneService = { namespace: "default", name: "web", type: "ClusterIP", clusterIPs: [WEB_IP], ports: [], publishNotReadyAddresses: false };
  const view = Object.assign(new EventEmitter(), {
    isSynced: true, services: () => new Map([["default/web", web]]), endpointsOf: () => [],
  }) as unknown as ServiceView;
  const dns = new DnsService({
    listen: [{ host: "127.0.0.1", port: 0 }], zone: { domain: "cluster.local", ttl: 30, pods: "disabled" },
    upstreams: [parseUpstream(upstream)], policy: "random", allow: [],
  }, view, silentLogger);
  await dns.start();
  console.log(`ready ${dns.addresses()[0]?.port ?? 0}`);
  process.stdin.on("data", (d: Buffer) => {
    if (d.toString().startsWith("gc")) (globalThis as { gc?: () => void }).gc?.();
    const m = process.memoryUsage();
    const c = dns.counters as { tcpClosed?: Record<string, number> };
    console.log(JSON.stringify({ rss: m.rss, heap: m.heapUsed, buffers: m.arrayBuffers, closed: c.tcpClosed ?? {}, open: (dns as { tcpConnections?: number }).tcpConnections ?? -1 }));
  });
}

// ---------------------------------------------------------------- child: the attackers

function attack(port: number, tricklers: number, addresses: number, pipeliners: number, byteEvery: number): void {
  const q = encodeQuery(WEB, "A", { id: 7 });
  const framed = Buffer.concat([Buffer.from([0, q.length]), q]);
  const open = (from: string): Promise<Socket | undefined> => new Promise((resolve) => {
    const s = connect({ host: "127.0.0.1", port, localAddress: from });
    s.setNoDelay(true);
    s.once("connect", () => resolve(s));
    s.once("error", () => resolve(undefined));
    s.once("close", () => resolve(undefined));
  });
  const closed = (s: Socket): Promise<void> => new Promise((r) => (s.destroyed ? r() : s.once("close", () => r())));
  for (let k = 0; k < tricklers; k++) {
    const from = `127.0.${20 + Math.floor((k % addresses) / 250)}.${((k % addresses) % 250) + 1}`;
    void (async () => {
      for (;;) {
        const s = await open(from);
        if (!s) {
          await new Promise((r) => setTimeout(r, 50));
          continue;
        }
        s.on("error", () => undefined);
        let i = 0;
        const t = setInterval(() => !s.destroyed && s.write(framed.subarray(i % framed.length, (i++ % framed.length) + 1)), byteEvery);
        await closed(s);
        clearInterval(t);
      }
    })();
  }
  const batch = Buffer.concat(Array.from({ length: 256 }, () => framed));
  for (let k = 0; k < pipeliners; k++) {
    void (async () => {
      for (;;) {
        const s = await open(`127.0.19.${k + 1}`);
        if (!s) continue;
        s.on("error", () => undefined);
        s.pause();
        const pump = (): void => {
          while (!s.destroyed) if (!s.write(batch)) return void s.once("drain", pump);
        };
        pump();
        await closed(s);
      }
    })();
  }
}

// ---------------------------------------------------------------- the bench

interface Stats { rss: number; heap: number; buffers: number; closed: Record<string, number>; open: number }
interface ClientResult { ok: number; failed: number; p50: number; p99: number }
interface Phase { phase: string; tcp: ClientResult; udp: ClientResult; rssMiB: number; liveMiB: number; closed: Record<string, number> }

function child(argv: string[]): { proc: ChildProcess; lines: string[] } {
  const proc = spawn(process.execPath, ["--expose-gc", fileURLToPath(import.meta.url), ...argv], { stdio: ["pipe", "pipe", "inherit"] });
  const lines: string[] = [];
  let part = "";
  proc.stdout?.on("data", (d: Buffer) => {
    const all = (part + d.toString()).split("\n");
    part = all.pop() ?? "";
    lines.push(...all);
  });
  return { proc, lines };
}

async function normalClient(port: number, tcp: boolean, until: number): Promise<ClientResult> {
  const ms: number[] = [];
  let failed = 0;
  while (Date.now() < until) {
    const t0 = performance.now();
    const ok = await query("127.0.0.1", port, WEB, "A", { tcp, timeoutMs: 2000 }).then((r) => r.answers[0]?.data === WEB_IP, () => false);
    if (ok) ms.push(performance.now() - t0);
    else failed++;
    await new Promise((r) => setTimeout(r, 20));
  }
  ms.sort((a, b) => a - b);
  const at = (p: number): number => Math.round((ms[Math.min(ms.length - 1, Math.floor(p * ms.length))] ?? NaN) * 100) / 100;
  return { ok: ms.length, failed, p50: at(0.5), p99: at(0.99) };
}

async function main(): Promise<void> {
  const json = args.includes("--json");
  const log = (s: string): void => (json ? console.error(s) : console.log(s));
  const seconds = Number(arg("--seconds", "6"));
  const tricklerCounts = arg("--tricklers", "200,1100").split(",").map(Number);
  const addressCounts = arg("--addresses", "50,110").split(",").map(Number);
  const pipeliners = Number(arg("--pipeliners", "4"));
  const byteEvery = Number(arg("--byte-every", "1000"));
  const dir = mkdtempSync(join(tmpdir(), "weft-bench-dns-abuse-"));
  const uz = UnboundServer.testZone();
  const unbound = await UnboundServer.start({ dir, authZones: [{ name: uz.name, zonefile: uz.text }] });
  const server = child(["--serve", `127.0.0.1:${unbound.port}`]);
  const phases: Phase[] = [];
  try {
    for (let i = 0; i < 200 && !server.lines.some((l) => l.startsWith("ready")); i++) await new Promise((r) => setTimeout(r, 50));
    const port = Number(server.lines.find((l) => l.startsWith("ready"))?.split(" ")[1]);
    if (!port) throw new Error("the DNS server child did not start");
    const stats = async (gc = false): Promise<Stats> => {
      const n = server.lines.length;
      server.proc.stdin?.write(gc ? "gc\n" : "stats\n");
      for (let i = 0; i < 400 && server.lines.length === n; i++) await new Promise((r) => setTimeout(r, 5));
      return JSON.parse(server.lines[server.lines.length - 1] ?? "{}") as Stats;
    };
    const runs: { name: string; tricklers: number; addresses: number }[] = [
      { name: "no abuse", tricklers: 0, addresses: 1 },
      ...tricklerCounts.map((t, i) => ({ name: `${t} tricklers / ${addressCounts[i] ?? 50} addresses + ${pipeliners} pipeliners`, tricklers: t, addresses: addressCounts[i] ?? 50 })),
    ];
    for (const r of runs) {
      const attacker = r.tricklers > 0 ? child(["--attack", String(port), String(r.tricklers), String(r.addresses), String(pipeliners), String(byteEvery)]) : undefined;
      try {
        if (attacker) await new Promise((res) => setTimeout(res, 3000)); // the attack settles in (connections up, pipelines stuck)
        const before = await stats();
        let rss = before.rss;
        const sampler = setInterval(() => void stats().then((s) => (rss = Math.max(rss, s.rss))), 250);
        const until = Date.now() + seconds * 1000;
        const [tcp, udp] = await Promise.all([normalClient(port, true, until), normalClient(port, false, until)]);
        clearInterval(sampler);
        const after = await stats();
        rss = Math.max(rss, after.rss);
        const live = await stats(true); // heap + buffers after a full GC, the attack still on: what is held, not garbage
        const closed = Object.fromEntries(Object.entries(after.closed).map(([k, v]) => [k, v - (before.closed[k] ?? 0)]).filter(([, v]) => Number(v) > 0));
        const p: Phase = { phase: r.name, tcp, udp, rssMiB: Math.round(rss / 2 ** 20), liveMiB: Math.round(((live.heap + live.buffers) / 2 ** 20) * 10) / 10, closed };
        phases.push(p);
        const pct = (c: ClientResult): string => `${((100 * c.ok) / Math.max(1, c.ok + c.failed)).toFixed(1)}% of ${c.ok + c.failed}`;
        log(`${r.name}: TCP ${pct(tcp)} p50 ${tcp.p50} ms p99 ${tcp.p99} ms; UDP ${pct(udp)} p50 ${udp.p50} ms p99 ${udp.p99} ms; server RSS peak ${p.rssMiB} MiB, live heap + buffers ${p.liveMiB} MiB, ${after.open} TCP connections open; closed ${JSON.stringify(closed)}`);
      } finally {
        attacker?.proc.kill("SIGKILL");
        await new Promise((res) => setTimeout(res, 1000));
      }
    }
    log("");
    log("| phase | TCP answered | TCP p50 / p99 ms | UDP answered | UDP p50 / p99 ms | server RSS peak MiB | live heap + buffers MiB | closed by the server (reason: count) |");
    log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for (const p of phases) {
      const pct = (c: ClientResult): string => `${((100 * c.ok) / Math.max(1, c.ok + c.failed)).toFixed(1)}%`;
      log(`| ${p.phase} | ${pct(p.tcp)} | ${p.tcp.p50} / ${p.tcp.p99} | ${pct(p.udp)} | ${p.udp.p50} / ${p.udp.p99} | ${p.rssMiB} | ${p.liveMiB} | ${Object.entries(p.closed).map(([k, v]) => `${k}: ${v}`).join(", ")} |`);
    }
    if (json) console.log(JSON.stringify(phases));
  } finally {
    server.proc.kill("SIGTERM");
    await unbound.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (args[0] === "--serve") await serve(args[1] ?? "");
else if (args[0] === "--attack") attack(Number(args[1]), Number(args[2]), Number(args[3]), Number(args[4]), Number(args[5]));
else {
  main().then(() => process.exit(0), (e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
