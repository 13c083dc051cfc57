/**
 * `npm run bench:control [-- --json] [-- --nodes N] [-- --changes K]`
 *
 * The control plane at scale: N simulated node leases (default 5,000) in a
 * real etcd; one real agent in a network namespace. Measures the time from
 * agent start to the full route table programmed into the kernel, the time
 * from one lease change in etcd to the change applied (p50/p99), and the
 * agent's RSS. Also times iproute2 batch programming against one `ip`
 * process per object, the choice the vxlan backend rests on.
 */
import { readFileSync } from "node:fs";
import { queryCounters } from "../src/agent/control.js";
import { formatIpv4 } from "../src/common/ipv4.js";
import { Cluster } from "../src/harness/cluster.js";
import { run } from "../src/common/exec.js";
import { Netns } from "../src/harness/netns.js";
import { encodeLeaseAttrs } from "../src/subnet/lease.js";

const args = process.argv.slice(2);
const json = args.includes("--json");
const opt = (name: string, def: number): number => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const NODES = opt("--nodes", 5000);
const CHANGES = opt("--changes", 100);
const log = (s: string): void => (json ? console.error(s) : console.log(s));

/** Simulated node i: subnet 198.18.0.0/15 split in /28s (8,192 of them), skipping the first. */
function simLease(i: number): { key: string; value: string } {
  const subnet = (0xc6120000 + (i + 1) * 16) >>> 0;
  const pub = i % 2 === 0 ? (0xc6336400 | (1 + ((i >> 1) % 250))) >>> 0 : (0xc0000200 | (10 + ((i >> 1) % 240))) >>> 0;
  const mac = Uint8Array.of(0x02, 0x5e, (i >> 16) & 255, (i >> 8) & 255, i & 255, 0x01);
  return {
    key: `/coreos.com/network/subnets/${formatIpv4(subnet)}-28`,
    value: encodeLeaseAttrs({ publicIp: pub, backendType: "vxlan", vni: 1, vtepMac: mac }),
  };
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
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

async function main(): Promise<void> {
  log(`bench:control: ${NODES} simulated leases, ${CHANGES} changes`);
  const c = await Cluster.create({ nodes: 1, podsPerNode: 0, manualNodes: [0], network: "198.18.0.0/15", subnetLen: 28 });
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
    const agent = c.startAgent(0);
    let fullSync = 0;
    for (;;) {
      const k = await queryCounters(sock, 1000).catch(() => undefined);
      if (k?.ready && k.counters["peersProgrammed"] === NODES) {
        fullSync = performance.now() - t0;
        break;
      }
      if (agent.exitCode !== null) throw new Error(`agent exited: ${c.agentLog(0).slice(-2000)}`);
      if (performance.now() - t0 > 120_000) throw new Error(`no full sync in 120 s: ${JSON.stringify(k)}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    log(`full sync: ${fullSync.toFixed(0)} ms (agent start to ${NODES} peers programmed)`);

    const lat: number[] = [];
    for (let i = 0; i < CHANGES; i++) {
      // From the top of the range: the agent took one of the first free subnets after the simulated ones.
      const l = simLease(8190 - (i % 50));
      const before = (await queryCounters(sock)).counters["diffs"] ?? 0;
      const t = performance.now();
      if (i % 2 === 0) await reg.client.put(l.key).value(l.value).lease(lease);
      else await reg.client.delete().key(simLease(8190 - ((i - 1) % 50)).key);
      for (;;) {
        const k = await queryCounters(sock);
        if ((k.counters["diffs"] ?? 0) > before) break;
        if (performance.now() - t > 10_000) throw new Error("a change was not applied in 10 s");
        await new Promise((r) => setImmediate(r));
      }
      lat.push(performance.now() - t);
    }
    const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${agent.pid}/status`, "utf8"))?.[1] ?? 0) / 1024;
    const kernelRoutes = (await c.node(0).ns.exec(["ip", "route", "show", "dev", "weft.1"])).trim().split("\n").length;
    if (args.includes("--verbose")) log(`latencies (ms): ${lat.map((x) => x.toFixed(0)).join(" ")}`);
    log(`change applied: p50 ${pct(lat, 50).toFixed(1)} ms, p99 ${pct(lat, 99).toFixed(1)} ms (${CHANGES} changes: add/delete one lease)`);
    log(`agent RSS: ${rss.toFixed(0)} MB; kernel routes on weft.1: ${kernelRoutes}`);
    const nl = await netlinkComparison();
    log(`iproute2: batch ${nl.batchPerPeerUs.toFixed(1)} us/object vs one process per object ${nl.execPerPeerUs.toFixed(0)} us/object (${(nl.execPerPeerUs / nl.batchPerPeerUs).toFixed(0)}x)`);
    if (json) {
      console.log(JSON.stringify({
        nodes: NODES, full_sync_ms: Math.round(fullSync), change_p50_ms: +pct(lat, 50).toFixed(1),
        change_p99_ms: +pct(lat, 99).toFixed(1), rss_mb: Math.round(rss),
      }));
    }
  } finally {
    if (args.includes("--verbose")) log(c.agentLog(0).split("\n").filter((l) => !l.includes('"level":30,') || l.includes("reconcil")).slice(-20).join("\n"));
    reg.close();
    await c.destroy();
  }
}

await main();
