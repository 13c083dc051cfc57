import type { Command } from "commander";
import { ConfigError } from "../../common/errors.js";
import { formatIpv4 } from "../../common/ipv4.js";
import { sweepMounts, sweepNamespaces } from "../../harness/netns.js";
import { accessSync, constants, statSync } from "node:fs";
import { delimiter, join } from "node:path";

/**
 * `weft demo` (`npm start`): the main job on the embedded default. A local
 * etcd, a netns cluster (3 nodes x 2 pods by default) with a weft agent per
 * node (backend auto: ebpf where the host allows it), and a live table of
 * nodes and pod-to-pod reachability until Ctrl-C; then everything it
 * created is removed.
 */
export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description("run the main job on the embedded default: a local etcd and a small netns cluster")
    .option("--nodes <n>", "nodes", "3")
    .option("--pods <n>", "pods per node", "2")
    .option("--duration <seconds>", "stop by itself after this long (default: run until Ctrl-C)")
    .option("--interval <seconds>", "refresh period of the table", "2")
    .action(async (o: { nodes: string; pods: string; duration?: string; interval: string }) => {
      const nodes = Number(o.nodes);
      const pods = Number(o.pods);
      if (!Number.isInteger(nodes) || nodes < 1 || nodes > 50) throw new ConfigError(`--nodes ${o.nodes}: give 1..50`);
      if (!Number.isInteger(pods) || pods < 1 || pods > 20) throw new ConfigError(`--pods ${o.pods}: give 1..20`);
      await preflight();
      console.log(`weft demo: starting etcd and ${nodes} nodes x ${pods} pods in network namespaces...`);
      const { Cluster } = await import("../../harness/cluster.js");
      const cluster = await Cluster.create({ nodes, podsPerNode: pods, backend: "auto" });
      await publishDemoService(cluster);
      let stopping = false;
      const stop = async (): Promise<void> => {
        if (stopping) return;
        stopping = true;
        console.log("\nweft demo: removing the cluster (agents, etcd, namespaces)...");
        await cluster.destroy();
        console.log("weft demo: done; nothing left behind");
      };
      const onSignal = (): void => void stop().then(() => process.exit(0));
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
      const until = o.duration ? Date.now() + Number(o.duration) * 1000 : Infinity;
      try {
        while (!stopping && Date.now() < until) {
          const text = await render(cluster);
          if (process.stdout.isTTY) process.stdout.write("\x1b[2J\x1b[H");
          console.log(text);
          if (process.stdout.isTTY) console.log("Ctrl-C stops the demo and removes everything it created.");
          await new Promise((r) => setTimeout(r, Number(o.interval) * 1000));
        }
      } finally {
        await stop();
      }
    });
}

async function preflight(): Promise<void> {
  if (process.getuid?.() !== 0) throw new ConfigError("the demo creates network namespaces and needs root", { hint: "run it as root (sudo npm start)" });
  for (const [cmd, pkg] of [["etcd", "etcd-server"], ["ip", "iproute2"], ["ping", "iputils-ping"], ["nft", "nftables"], ["dig", "dnsutils"]] as const) {
    if (!onPath(cmd)) throw new ConfigError(`${cmd} is not installed`, { hint: `run \`npm run setup\` (it installs ${pkg})` });
  }
  const stale = [...(await sweepNamespaces()), ...(await sweepMounts())];
  if (stale.length > 0) console.log(`weft demo: removed ${stale.length} namespaces and mounts an earlier run left behind`);
}

/** True when an executable `cmd` is in $PATH (what `command -v` says, without a shell). */
function onPath(cmd: string): boolean {
  for (const dir of (process.env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, cmd);
    try {
      accessSync(p, constants.X_OK);
      if (statSync(p).isFile()) return true;
    } catch {
      // not here
    }
  }
  return false;
}

/** A headless service "pods" in the registry: one endpoint per pod, hostname pod-<i>. */
async function publishDemoService(c: import("../../harness/cluster.js").Cluster): Promise<void> {
  const { ServiceRegistry } = await import("../../registry/store.js");
  const reg = new ServiceRegistry({ endpoints: [c.etcd.localEndpoint] });
  try {
    await reg.putService("default", "pods", { type: "Headless", clusterIPs: [], ports: [], publishNotReadyAddresses: false });
    for (const [i, p] of c.pods.entries()) {
      await reg.putEndpoint("default", "pods", `pod-${i}`, { addresses: [formatIpv4(p.addr)], hostname: `pod-${i}`, ready: true, nodeName: `n${p.node}`, ports: [] });
    }
  } finally {
    reg.close();
  }
}

/** Each pod asks its node's DNS (169.254.20.10) for the next pod by name. */
async function renderDns(c: import("../../harness/cluster.js").Cluster): Promise<string[]> {
  const pods = c.pods;
  const lines = ["", "service discovery: each pod asks its node-local DNS 169.254.20.10 for the next pod"];
  const rows = await Promise.all(pods.map(async (a, i) => {
    const j = (i + 1) % pods.length;
    const name = `pod-${j}.pods.default.svc.cluster.local`;
    const want = formatIpv4(pods[j]!.addr);
    const got = (await a.ns.exec(["dig", "+short", "+time=1", "+tries=1", "@169.254.20.10", name]).catch(() => "")).trim();
    return `${i} ${formatIpv4(a.addr)}`.padEnd(16) + `${name} -> ${got || "(no answer)"}${got === want ? "  ok" : "  X"}`;
  }));
  return [...lines, ...rows];
}

/** The nodes table and the pod reachability matrix. */
async function render(c: import("../../harness/cluster.js").Cluster): Promise<string> {
  const lines: string[] = [`weft demo  ${new Date().toISOString()}  network ${formatIpv4(c.network.addr)}/${c.network.len}  etcd ${c.etcd.endpoint}`, ""];
  lines.push("node   underlay      subnet            backend  ready  peers  vtep mac");
  for (const n of c.nodes) {
    try {
      const st = await c.status(n.index);
      lines.push(`n${n.index}`.padEnd(7) + formatIpv4(n.underlay).padEnd(14) + (st.subnet ?? "-").padEnd(18) +
        (st.backend ?? "-").padEnd(9) + (st.ready ? "yes" : "no").padEnd(7) + String(st.peers.length).padEnd(7) + (st.vtepMac ?? "-"));
    } catch (e) {
      lines.push(`n${n.index}`.padEnd(7) + formatIpv4(n.underlay).padEnd(14) + `agent not answering: ${(e as Error).message}`);
    }
  }
  const pods = c.pods;
  const ok = await Promise.all(pods.map((a) => Promise.all(pods.map((b) => (a === b ? Promise.resolve(true) : c.ping(a, b.addr, { waitSec: 1 }))))));
  lines.push("", "pod-to-pod reachability (row pings column; . = self)");
  lines.push("".padEnd(16) + pods.map((_, j) => String(j).padStart(3)).join(""));
  pods.forEach((a, i) => {
    lines.push(`${i} ${formatIpv4(a.addr)}`.padEnd(16) + pods.map((_, j) => (i === j ? "  ." : ok[i]?.[j] ? " ok" : "  X")).join(""));
  });
  const failed = ok.flat().filter((x) => !x).length;
  lines.push("", failed === 0 ? `all ${pods.length * (pods.length - 1)} pod pairs reach each other` : `${failed} pod pairs cannot reach each other`);
  lines.push(...(await renderDns(c)));
  return lines.join("\n");
}
