/**
 * `npm run bench:ipam [-- --json] [-- --rounds N] [-- --allocs K]`
 *
 * Pod-start cost of address management, as a runtime pays it: the IPAM
 * plugin exec'd with CNI_* in the environment and the config on stdin, ADD
 * then DEL, for weft-ipam (the C client forwarding to a real agent on a
 * netns node) and Debian's host-local (/usr/lib/cni, its own files) in the
 * same run, interleaved so both see the same noise. Then the agent's own
 * rate: K ADDs (and DELs) over its control socket from 64 concurrent
 * clients, every one durable (fdatasync'd, group commit) before its reply;
 * first on kept-open connections (the agent's own capacity), then with a new
 * connection per request (what the plugin binary pays on top).
 *
 * Then the allocator alone, in process: K picks from an IPv6 /64 against K
 * from an IPv4 /16 in the same run (the IPv6 allocator steps over held
 * addresses and spans; it never walks the 2^64 range). --allocator-only runs
 * just that part (no cluster).
 *
 * Last line with --json:
 * {"weft_add_p50_ms","weft_add_p99_ms","hostlocal_add_p50_ms","hostlocal_add_p99_ms","agent_allocs_per_s"}
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { createConnection, type Socket } from "node:net";
import { join } from "node:path";
import { requestCni, takeCniReply } from "../src/agent/control.js";
import type { Invocation } from "../src/cni/request.js";
import type { CniReply } from "../src/cni/types.js";
import { formatCidr, parseCidr } from "../src/common/ipv4.js";
import { parseCidr6 } from "../src/common/ipv6.js";
import { pickNext } from "../src/ipam/allocator.js";
import { pickNext6, usage6 } from "../src/ipam/allocator6.js";
import { parseIpamSpec, planFor } from "../src/ipam/config.js";
import { planFor6 } from "../src/ipam/plan6.js";
import { AllocationTable } from "../src/ipam/table.js";
import { installCni } from "../src/cni/install.js";
import { Cluster } from "../src/harness/cluster.js";
import { benchArgs } from "./args.js";
import type { Figure } from "./report/schema.js";

const args = benchArgs("bench:ipam", {
  json: { type: "boolean", help: "print one JSON document as the last line" },
  rounds: { type: "number", default: 300, min: 1, integer: true, help: "exec rounds (ADD+DEL) per plugin" },
  allocs: { type: "number", default: 20_000, min: 1, integer: true, help: "allocations (then releases) for the agent's rate" },
  "allocator-only": { type: "boolean", help: "only the in-process allocator comparison, IPv6 /64 against IPv4 /16 (no cluster)" },
}, {
  seconds: "it runs a fixed amount of work (--rounds exec rounds per plugin, then --allocs allocations); size it with those",
});
const json = args.json;
const ROUNDS = args.rounds;
const ALLOCS = args.allocs;
const log = (s: string): void => (json ? console.error(s) : console.log(s));

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
}
const r2 = (x: number): number => Math.round(x * 100) / 100;

/** One exec as a runtime does it; resolves with the wall time in ms. Throws on a non-zero exit. */
function exec(bin: string, env: Record<string, string>, conf: string): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const p = spawn(bin, [], { env, stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    p.stdout.on("data", (d: Buffer) => (out += d.toString()));
    p.stderr.on("data", (d: Buffer) => (out += d.toString()));
    p.on("error", reject);
    p.stdin.on("error", () => undefined); // a plugin may exit without reading stdin (VERSION)
    p.on("close", (code) => (code === 0 ? resolve(performance.now() - t0) : reject(new Error(`${bin} ${env["CNI_COMMAND"]} exited ${code}: ${out}`))));
    p.stdin.end(conf);
  });
}

/**
 * Picks per second of the pure allocators (pickNext on an IPv4 /16,
 * pickNext6 on an IPv6 /64, each pick applied to its table), `n` each, the
 * two interleaved in rounds of 1000 so both see the same noise. Also the
 * time to count a /64's usage with n addresses held.
 */
function allocatorRates(n: number): { v4PerS: number; v6PerS: number; usage6Ms: number } {
  const spec = parseIpamSpec({});
  const plan4 = planFor(spec, parseCidr("198.18.0.0/16"));
  const plan6 = planFor6(spec, parseCidr6("2001:db8:1::/64"));
  const t4 = new AllocationTable();
  const t6 = new AllocationTable();
  const base = { network: "b", ifname: "eth0", pool: "default", netns: "", netnsInode: 0, podNamespace: "", podName: "", hostIf: "", created: 0, requested: false };
  let ms4 = 0;
  let ms6 = 0;
  const count = Math.min(n, 65_000);
  for (let done = 0; done < count;) {
    const k = Math.min(1000, count - done);
    let t0 = performance.now();
    for (let i = 0; i < k; i++) t4.apply({ op: "add", a: { ...base, containerId: `c${done + i}`, ip: pickNext(plan4, t4, "b", undefined) } });
    ms4 += performance.now() - t0;
    t0 = performance.now();
    for (let i = 0; i < k; i++) t6.apply({ op: "add", a: { ...base, containerId: `c${done + i}`, ip: undefined, ip6: pickNext6(plan6, t6, "b", undefined) } });
    ms6 += performance.now() - t0;
    done += k;
  }
  const t0 = performance.now();
  const u = usage6(plan6, t6, undefined);
  const usage6Ms = performance.now() - t0;
  if (u.used !== count) throw new Error(`usage6 counted ${u.used} of ${count}`);
  return { v4PerS: count / (ms4 / 1000), v6PerS: count / (ms6 / 1000), usage6Ms };
}

async function main(): Promise<void> {
  const ar = allocatorRates(ALLOCS);
  log(`allocator in process: IPv6 /64 ${Math.round(ar.v6PerS)} picks/s, IPv4 /16 ${Math.round(ar.v4PerS)} picks/s (${Math.min(ALLOCS, 65_000)} each); usage of the /64 counted in ${r2(ar.usage6Ms)} ms`);
  const allocatorFigure: Figure = {
    id: "allocator_v6_picks_per_s", name: "IPv6 /64 allocator picks per second (in process), against IPv4 /16 in the same run", unit: "picks/s",
    value: Math.round(ar.v6PerS), higherIsBetter: true, rounds: [Math.round(ar.v6PerS)], summary: "only",
    baseline: { name: "IPv4 /16", value: Math.round(ar.v4PerS), rounds: [Math.round(ar.v4PerS)] },
  };
  if (args["allocator-only"]) {
    if (json) console.log(JSON.stringify({ allocator_v6_picks_per_s: allocatorFigure.value, allocator_v4_picks_per_s: allocatorFigure.baseline?.value, usage6_ms: r2(ar.usage6Ms), figures: [allocatorFigure] }));
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "weft-bench-ipam-"));
  const c = await Cluster.create({ nodes: 1, podsPerNode: 0, network: "198.18.0.0/15", subnetLen: 17 });
  try {
    const bin = join(dir, "bin");
    installCni({ binDir: bin, confDir: join(dir, "net.d"), networkName: "weft", confName: "10-weft.conflist", bridge: "cni0", controlSocket: undefined, ipam: undefined, force: false });
    const socket = c.files(0).socket;
    const subnet = c.node(0).subnet;
    if (!subnet) throw new Error("the node has no subnet");
    log(`node subnet ${formatCidr(subnet)}; ${ROUNDS} rounds of exec ADD+DEL per plugin, interleaved`);

    const weftConf = JSON.stringify({ cniVersion: "1.0.0", name: "bench", type: "bridge", ipam: { type: "weft-ipam", controlSocket: socket } });
    const hlConf = JSON.stringify({ cniVersion: "1.0.0", name: "bench", type: "bridge", ipam: { type: "host-local", subnet: "198.19.0.0/16", dataDir: join(dir, "host-local") } });
    const base = { PATH: process.env["PATH"] ?? "/usr/bin:/bin", CNI_PATH: `${bin}:/usr/lib/cni`, CNI_NETNS: "/proc/self/ns/net", CNI_IFNAME: "eth0" };
    const plugins = [
      { name: "weft", path: join(bin, "weft-ipam"), conf: weftConf, add: [] as number[], del: [] as number[] },
      { name: "hostlocal", path: "/usr/lib/cni/host-local", conf: hlConf, add: [] as number[], del: [] as number[] },
    ];
    // Warm-up: page cache, the agent's JIT.
    for (const p of plugins) {
      for (let i = 0; i < 20; i++) {
        await exec(p.path, { ...base, CNI_COMMAND: "ADD", CNI_CONTAINERID: `warm${i}` }, p.conf);
        await exec(p.path, { ...base, CNI_COMMAND: "DEL", CNI_CONTAINERID: `warm${i}` }, p.conf);
      }
    }
    for (let i = 0; i < ROUNDS; i++) {
      for (const p of i % 2 === 0 ? plugins : [...plugins].reverse()) {
        p.add.push(await exec(p.path, { ...base, CNI_COMMAND: "ADD", CNI_CONTAINERID: `c${i}` }, p.conf));
        p.del.push(await exec(p.path, { ...base, CNI_COMMAND: "DEL", CNI_CONTAINERID: `c${i}` }, p.conf));
      }
    }
    const version: Record<string, number[]> = { weft: [], hostlocal: [] };
    for (let i = 0; i < 100; i++) {
      for (const p of plugins) version[p.name]?.push(await exec(p.path, { ...base, CNI_COMMAND: "VERSION" }, "{}"));
    }
    for (const p of plugins) {
      log(`${p.name.padEnd(9)} ADD p50 ${r2(pct(p.add, 50))} ms  p99 ${r2(pct(p.add, 99))} ms   DEL p50 ${r2(pct(p.del, 50))} ms  p99 ${r2(pct(p.del, 99))} ms   exec alone (VERSION) p50 ${r2(pct(version[p.name] ?? [], 50))} ms`);
    }

    // The agent's rate, without exec: 64 clients over the control socket,
    // each a kept-open connection (requests in sequence on it), and then the
    // same with a new connection per request as the plugin binary does.
    const env = (cmd: string, id: string): Record<string, string> => ({ CNI_COMMAND: cmd, CNI_CONTAINERID: id, CNI_NETNS: "/proc/self/ns/net", CNI_IFNAME: "eth0" });
    const ipamConf = JSON.stringify({ cniVersion: "1.1.0", name: "rate", type: "none", ipam: { type: "weft-ipam" } });
    const run = async (cmd: string, prefix: string, perRequest: boolean): Promise<number> => {
      let next = 0;
      const t0 = performance.now();
      await Promise.all(Array.from({ length: 64 }, async () => {
        const conn = perRequest ? undefined : await KeptConnection.open(socket);
        try {
          while (next < ALLOCS) {
            const inv = { role: "weft-ipam" as const, env: env(cmd, `${prefix}${next++}`), stdin: ipamConf };
            const r = conn ? await conn.request(inv) : await requestCni(socket, inv);
            if (r.exit !== 0) throw new Error(`${cmd}: ${r.stdout}`);
          }
        } finally {
          conn?.close();
        }
      }));
      return ALLOCS / ((performance.now() - t0) / 1000);
    };
    const allocsPerS = await run("ADD", "k", false);
    const releasesPerS = await run("DEL", "k", false);
    const allocsPerConnS = await run("ADD", "c", true);
    const releasesPerConnS = await run("DEL", "c", true);
    log(`agent: ${Math.round(allocsPerS)} allocations/s, ${Math.round(releasesPerS)} releases/s (${ALLOCS} each, 64 clients on kept-open connections, each durable before its reply)`);
    log(`agent: ${Math.round(allocsPerConnS)} allocations/s, ${Math.round(releasesPerConnS)} releases/s with a new connection per request (as the plugin binary connects)`);

    const w = plugins[0];
    const h = plugins[1];
    if (!w || !h) throw new Error("unreachable");
    const result = {
      weft_add_p50_ms: r2(pct(w.add, 50)), weft_add_p99_ms: r2(pct(w.add, 99)),
      hostlocal_add_p50_ms: r2(pct(h.add, 50)), hostlocal_add_p99_ms: r2(pct(h.add, 99)),
      agent_allocs_per_s: Math.round(allocsPerS),
      weft_del_p50_ms: r2(pct(w.del, 50)), hostlocal_del_p50_ms: r2(pct(h.del, 50)),
      weft_vs_hostlocal_add_p50: r2(pct(h.add, 50) / pct(w.add, 50)),
      agent_releases_per_s: Math.round(releasesPerS),
      agent_allocs_per_s_connection_per_request: Math.round(allocsPerConnS),
      agent_releases_per_s_connection_per_request: Math.round(releasesPerConnS),
    };
    log(`weft-ipam ADD p50 is ${result.weft_vs_hostlocal_add_p50}x faster than host-local's`);
    if (json) {
      const { weft_add_p50_ms, weft_add_p99_ms, hostlocal_add_p50_ms, hostlocal_add_p99_ms, agent_allocs_per_s, ...more } = result;
      console.error(JSON.stringify(more));
      const figures: Figure[] = [
        { id: "add_p50_ms", name: "ADD as a runtime execs the plugin (start-up included), p50, against host-local", unit: "ms", value: weft_add_p50_ms, higherIsBetter: false,
          rounds: [weft_add_p50_ms], summary: "only", baseline: { name: "host-local", value: hostlocal_add_p50_ms, rounds: [hostlocal_add_p50_ms] },
          samples: w.add.map(r2), baselineSamples: h.add.map(r2) },
        { id: "add_p99_ms", name: "ADD as a runtime execs the plugin, p99, against host-local", unit: "ms", value: weft_add_p99_ms, higherIsBetter: false,
          rounds: [weft_add_p99_ms], summary: "only", baseline: { name: "host-local", value: hostlocal_add_p99_ms, rounds: [hostlocal_add_p99_ms] } },
        { id: "agent_allocs_per_s", name: "the agent's allocations per second (64 clients, kept-open connections, durable before each reply)", unit: "allocations/s",
          value: agent_allocs_per_s, higherIsBetter: true, rounds: [agent_allocs_per_s], summary: "only", target: { of: "value", op: ">=", value: 5000 } },
        allocatorFigure,
      ];
      console.log(JSON.stringify({ weft_add_p50_ms, weft_add_p99_ms, hostlocal_add_p50_ms, hostlocal_add_p99_ms, agent_allocs_per_s, figures }));
    }
  } finally {
    await c.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A control-socket connection kept open, one framed CNI request at a time. */
class KeptConnection {
  private buf: Buffer = Buffer.alloc(0);
  private waiting: ((r: CniReply) => void) | undefined;

  private constructor(private readonly sock: Socket) {
    sock.on("data", (d: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      const r = takeCniReply(this.buf);
      if (r === "malformed") throw new Error(`malformed reply: ${this.buf.toString()}`);
      if (!r) return;
      this.buf = this.buf.subarray(r.used);
      const w = this.waiting;
      this.waiting = undefined;
      w?.(r.reply);
    });
  }

  static open(path: string): Promise<KeptConnection> {
    return new Promise((resolve, reject) => {
      const sock = createConnection(path, () => resolve(new KeptConnection(sock)));
      sock.once("error", reject);
    });
  }

  request(inv: Invocation): Promise<CniReply> {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.sock.write(`cni ${JSON.stringify(inv)}\n`);
    });
  }

  close(): void {
    this.sock.end();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
