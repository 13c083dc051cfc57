/**
 * `npm run bench:discovery [-- --json] [-- --subscribers N] [-- --changes M]`
 *
 * The discovery API under many subscribers: a one-node netns cluster (real
 * etcd, real agent); a pod opens N event streams to the node-local address
 * (dist/bench/discovery-swarm.js); then M endpoint puts go to etcd one at a
 * time, each once every stream has the previous one. Measured: etcd's own
 * count of open watchers (etcd_debugging_mvcc_watcher_total) before and with
 * the N streams; the agent's resident memory and JS heap (its /metrics)
 * before and with them; for each change, the time from just before the etcd
 * put to its arrival at each stream (CLOCK_MONOTONIC, the same clock in both
 * processes): p50/p99/max over every arrival, and the time until the last
 * stream had it. The same with one stream first, for reference.
 *
 * Last line with --json:
 * {"subscribers","etcd_watchers_before","etcd_watchers_with_subscribers","rss_mib_before","rss_mib_with","heap_mib_before","heap_mib_with",
 *  "kib_per_subscriber","latency_p50_ms","latency_p99_ms","latency_max_ms","all_delivered_p50_ms","all_delivered_p99_ms","one_subscriber_p50_ms","one_subscriber_p99_ms","etcd_put_p50_ms"}
 */
import type { ChildProcess } from "node:child_process";
import { formatIpv4 } from "../src/common/ipv4.js";
import { Cluster, type Pod } from "../src/harness/cluster.js";
import { ServiceRegistry } from "../src/registry/store.js";
import { benchArgs } from "./args.js";

const args = benchArgs("bench:discovery", {
  json: { type: "boolean", help: "print one JSON document as the last line" },
  subscribers: { type: "number", default: 1000, min: 1, max: 20_000, integer: true, help: "concurrent event streams on the node" },
  changes: { type: "number", default: 100, min: 1, integer: true, help: "endpoint puts, one at a time" },
}, {
  seconds: "it runs a fixed amount of work (--changes puts to --subscribers streams); size it with those",
});
const log = (s: string): void => (args.json ? console.error(s) : console.log(s));
const r2 = (x: number): number => Math.round(x * 100) / 100;

function pct(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
}

/** A child's stdout JSON lines, kept as they come. */
function follow(child: ChildProcess): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  let buf = "";
  child.stdout?.on("data", (d: Buffer) => {
    buf += d.toString();
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
      out.push(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
      buf = buf.slice(nl + 1);
    }
  });
  return out;
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

async function main(): Promise<void> {
  const n = args.subscribers;
  const c = await Cluster.create({ nodes: 1, podsPerNode: 1, agentArgs: ["--discovery-max-per-client", String(n + 16), "--discovery-max-subscribers", String(n + 64)] });
  const reg = new ServiceRegistry({ endpoints: [c.etcd.localEndpoint] });
  const children: ChildProcess[] = [];
  try {
    const pod = c.pods[0] as Pod;
    const agentMetrics = async (): Promise<{ rss: number; heap: number }> => {
      const text = await c.node(0).ns.exec([process.execPath, "-e", 'fetch("http://127.0.0.1:9099/metrics").then(async (r) => process.stdout.write(await r.text()))']);
      const num = (name: string): number => Number(new RegExp(`^${name} (\\S+)`, "m").exec(text)?.[1] ?? NaN);
      return { rss: num("weft_process_resident_memory_bytes") / 2 ** 20, heap: num("weft_nodejs_heap_size_used_bytes") / 2 ** 20 };
    };
    const etcdWatchers = async (): Promise<number> => {
      const text = await (await fetch(`${c.etcd.localEndpoint}/metrics`)).text();
      return Number(/^etcd_debugging_mvcc_watcher_total (\d+)/m.exec(text)?.[1] ?? NaN);
    };
    let seq = 0;
    /** M puts, each after every stream had the last; arrival latencies (ms) per stream and the etcd put times. */
    const run = async (streams: number, changes: number): Promise<{ all: number[]; last: number[]; put: number[] }> => {
      const child = pod.ns.spawn([process.execPath, "dist/bench/discovery-swarm.js", "--target", "http://169.254.20.10:8053", "--count", String(streams)]);
      children.push(child);
      const lines = follow(child);
      await until(() => lines.some((l) => l["type"] === "ready"), 60_000, `${streams} snapshots`);
      const all: number[] = [];
      const last: number[] = [];
      const put: number[] = [];
      for (let i = 0; i < changes; i++) {
        const id = `b${++seq}`;
        const t0 = process.hrtime.bigint();
        await reg.putEndpoint("bench", "fan", id, { addresses: [formatIpv4(pod.addr)], ports: [{ name: "http", port: 8080 }] });
        put.push(Number(process.hrtime.bigint() - t0) / 1e6);
        await until(() => lines.some((l) => l["id"] === id), 30_000, `change ${id} at every stream`);
        const times = (lines.find((l) => l["id"] === id)?.["times"] as string[]).map((t) => Number(BigInt(t) - t0) / 1e6);
        all.push(...times);
        last.push(Math.max(...times));
      }
      const bad = lines.filter((l) => l["type"] !== "ready" && l["type"] !== "change");
      if (bad.length > 0) throw new Error(`streams failed: ${JSON.stringify(bad.slice(0, 3))}`);
      return { all, last, put };
    };

    const before = await etcdWatchers();
    // warm-up, and the one-stream reference
    await run(1, 20);
    const one = await run(1, args.changes);
    children.forEach((ch) => ch.kill("SIGKILL"));
    await new Promise((r) => setTimeout(r, 500));
    const m0 = await agentMetrics();
    log(`agent before: RSS ${r2(m0.rss)} MiB, heap ${r2(m0.heap)} MiB; etcd watchers: ${before} (one lease watch, one registry watch)`);
    const many = await run(n, args.changes);
    const m1 = await agentMetrics();
    const withSubs = await etcdWatchers();
    log(`with ${n} streams: RSS ${r2(m1.rss)} MiB, heap ${r2(m1.heap)} MiB (${r2(((m1.rss - m0.rss) * 1024) / n)} KiB RSS per stream); etcd watchers: ${withSubs}`);
    log(`1 stream:  change arrival after the etcd put p50 ${r2(pct(one.all, 50))} ms, p99 ${r2(pct(one.all, 99))} ms (${args.changes} changes)`);
    log(`${n} streams: every arrival p50 ${r2(pct(many.all, 50))} ms, p99 ${r2(pct(many.all, 99))} ms, max ${r2(Math.max(...many.all))} ms; ` +
      `the last stream had it after p50 ${r2(pct(many.last, 50))} ms, p99 ${r2(pct(many.last, 99))} ms (${args.changes} changes)`);
    log(`the etcd put itself (from this process, through the harness's unix-socket forwarder): p50 ${r2(pct(many.put, 50))} ms`);
    const result = {
      subscribers: n, etcd_watchers_before: before, etcd_watchers_with_subscribers: withSubs,
      rss_mib_before: r2(m0.rss), rss_mib_with: r2(m1.rss), heap_mib_before: r2(m0.heap), heap_mib_with: r2(m1.heap),
      kib_per_subscriber: r2(((m1.rss - m0.rss) * 1024) / n),
      latency_p50_ms: r2(pct(many.all, 50)), latency_p99_ms: r2(pct(many.all, 99)), latency_max_ms: r2(Math.max(...many.all)),
      all_delivered_p50_ms: r2(pct(many.last, 50)), all_delivered_p99_ms: r2(pct(many.last, 99)),
      one_subscriber_p50_ms: r2(pct(one.all, 50)), one_subscriber_p99_ms: r2(pct(one.all, 99)), etcd_put_p50_ms: r2(pct(many.put, 50)),
    };
    if (args.json) console.log(JSON.stringify(result));
  } finally {
    children.forEach((ch) => ch.kill("SIGKILL"));
    reg.close();
    await c.destroy();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
