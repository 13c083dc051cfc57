import type { ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { projectRoot } from "../../common/paths.js";
import type { Netns } from "../netns.js";
import type { Cluster } from "../cluster.js";
import { convergeCalm, lookup, NODE_DNS } from "./dns.js";
import type { FaultContext } from "./faults.js";
import type { FaultRecord } from "./types.js";
import { sleep } from "./wait.js";

/** Where the upstream listens (the hub bridge) and what it answers for *.example.test. */
export const UPSTREAM_IP = "192.0.2.250";
export const UPSTREAM_ANSWER = "198.51.100.7";
// The compiled script (tests run this module from source, where there is no .js beside it).
const SCRIPT = join(projectRoot(), "dist", "src", "harness", "dns-responder.js");

/** The DNS upstream process in the hub namespace (agents get --dns-upstream UPSTREAM_IP). */
export class Upstream {
  private child: ChildProcess | undefined;
  private stderr = "";
  constructor(private readonly hub: Netns) {}

  /** Adds the address to the hub bridge (once) and starts the server; resolves once it is bound. */
  static async create(hub: Netns): Promise<Upstream> {
    await hub.ip("addr", "add", `${UPSTREAM_IP}/24`, "dev", "br0");
    const u = new Upstream(hub);
    await u.start();
    return u;
  }

  async start(): Promise<void> {
    if (!existsSync(SCRIPT)) throw new Error(`${SCRIPT} is missing: run npm run build:ts`);
    const c = this.hub.spawn([process.execPath, SCRIPT, "--ttl", "1", `${UPSTREAM_IP}=${UPSTREAM_ANSWER}`]);
    this.child = c;
    this.stderr = "";
    c.stderr?.on("data", (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-600)));
    await new Promise<void>((resolve, reject) => {
      c.stdout?.once("data", () => resolve());
      c.once("exit", (code) => reject(new Error(`the soak's DNS upstream exited (${code})`)));
    });
    c.stdout?.resume();
  }

  /** Whether the server runs (or how it ended, with the end of its error output). */
  state(): string {
    const c = this.child;
    if (!c) return "never started";
    if (c.exitCode === null && c.signalCode === null) return `running (pid ${c.pid ?? "?"})`;
    return `exited (${c.exitCode ?? c.signalCode ?? "?"}): ${this.stderr.trim() || "nothing on stderr"}`;
  }

  async stop(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once("exit", r));
    c.kill("SIGKILL");
    await exited;
  }
}

/** Node i's answer for a name under example.test nobody asked before ([] when none). */
async function external(c: Cluster, i: number, seq: number): Promise<string[]> {
  const name = `q${seq}-${i}.example.test`;
  return (await lookup(c, i, [name]).catch(() => new Map<string, string[]>())).get(name) ?? [];
}

/**
 * The DNS upstream down for a while: external names stop resolving (observed
 * on every node, on names never asked before, so no cache answers), cluster
 * names keep answering as the registry says, and once the upstream is back
 * every node resolves external names again within a few seconds.
 */
export async function upstreamDown(x: FaultContext, f: FaultRecord): Promise<void> {
  const u = x.upstream;
  if (!u) throw new Error("the soak's cluster has no DNS upstream");
  await u.stop();
  const down = await Promise.all(x.agentNodes.map((i) => external(x.c, i, x.seq++)));
  f.observed = down.every((a) => a.length === 0);
  if (x.dnsWant.size > 0) {
    const d = await convergeCalm(x, f, x.dnsWant, 3000);
    if (d.left.length > 0) x.violation("dns", `with the upstream down: ${d.left.join("; ")}`);
  }
  await sleep(x.rng.int(1000, 3000));
  await u.start();
  const since = x.at();
  const end = Date.now() + 5000;
  let left = x.calm(f);
  while (left.length > 0 && Date.now() < end) {
    const ok = await Promise.all(left.map(async (i) => (await external(x.c, i, x.seq++)).join() === UPSTREAM_ANSWER));
    left = left.filter((_, k) => !ok[k]);
    if (left.length > 0) await sleep(200);
  }
  left = left.filter((i) => !x.disturbed(i, f, since));
  if (left.length > 0) x.violation("dns", `node(s) ${left.join(", ")} still resolve no external name 5 s after the upstream came back (upstream ${u.state()}; ${await netState(x, left)}; ${(await Promise.all(left.map((i) => whyNot(x, i)))).join("; ")})`);
}

/** The hub's and the nodes' view of each other at the IP level (neighbours, a ping each way). */
async function netState(x: FaultContext, nodes: readonly number[]): Promise<string> {
  const hubNeigh = await x.c.hub.exec(["ip", "-4", "neigh", "show", "dev", "br0"]).catch((e: unknown) => (e as Error).message);
  const brMac = await x.c.hub.exec(["cat", "/sys/class/net/br0/address"]).catch(() => "?");
  const local = await x.c.hub.exec(["bridge", "fdb", "show", "br", "br0"]).then((t) => t.split("\n").filter((l) => /permanent/.test(l) && !/^33:33|^01:00/.test(l)).join(" / "), () => "?");
  const per = await Promise.all(nodes.map(async (i) => {
    const ns = x.c.node(i).ns;
    const neigh = await ns.exec(["ip", "-4", "neigh", "show", UPSTREAM_IP]).catch(() => "?");
    const ping = await ns.exec(["ping", "-n", "-c", "1", "-W", "1", UPSTREAM_IP]).then(() => "ping ok", () => "no ping reply");
    return `node ${i}: neigh ${neigh.trim() || "none"}, ${ping}`;
  }));
  return `br0 ${brMac.trim()}, its own MACs ${local}; hub neighbours ${hubNeigh.trim().split("\n").join(" / ")}; ${per.join("; ")}`;
}

/** What a node's DNS says when an external name fails: dig's status and time, the agent's view of its upstreams and its answers so far. */
async function whyNot(x: FaultContext, i: number): Promise<string> {
  const t0 = Date.now();
  const dig = await x.c.node(i).ns.exec(["dig", `@${NODE_DNS}`, "+time=3", "+tries=1", `why${x.seq++}.example.test`, "A"], { timeoutMs: 8000 })
    .then((out) => /status: (\w+)/.exec(out)?.[1] ?? "no status", (e: unknown) => `failed (${(e as Error).message.split("\n")[0]?.slice(0, 120) ?? ""})`);
  // The same question straight to the upstream from the node's namespace: the network, or the agent?
  const direct = await x.c.node(i).ns.exec(["dig", `@${UPSTREAM_IP}`, "+time=1", "+tries=1", `direct${x.seq++}.example.test`, "A"], { timeoutMs: 5000 })
    .then((out) => /status: (\w+)/.exec(out)?.[1] ?? "no status", () => "no answer");
  // What the agent's forwarder saw: replies it dropped (and why), timeouts, failed health checks.
  const metrics = await x.c.node(i).ns.exec(["curl", "-s", "-m", "2", "http://127.0.0.1:9099/metrics"], { timeoutMs: 5000 }).catch(() => "");
  const seen = metrics.split("\n").filter((l) => /^weft_dns_upstream_(rejected_replies_total|healthcheck_failures_total|request_seconds_count)\{/.test(l)).map((l) => l.replace(/^weft_dns_upstream_/, "")).join(", ");
  const logged = x.c.agentLog(i).split("\n").filter((l) => /upstream|dns/i.test(l)).slice(-4).map((l) => l.slice(0, 300)).join(" | ");
  const st = await x.c.status(i).catch(() => undefined);
  const dns = st?.dns;
  return `node ${i}: dig ${dig} after ${Date.now() - t0} ms, straight to the upstream ${direct}; ${dns ? `upstreams ${dns.upstreams.map((u) => `${u.upstream} ${u.state}`).join(", ")}, answered ${JSON.stringify(dns.answered)}, cache ${JSON.stringify(dns.cache)}` : "no status"}; ${seen || "no upstream metrics"}; log: ${logged || "nothing on DNS"}`;
}
