import { execFile, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatIpv4, parseIpv4 } from "../../src/common/ipv4.js";
import { Cluster, type Pod } from "../../src/harness/cluster.js";
import { Netns } from "../../src/harness/netns.js";
import { ServiceRegistry } from "../../src/registry/store.js";
import { execPlugin, installPlugins, resultIp } from "../helpers/cni.js";
import { readLines } from "../discovery/lines.js";

/**
 * The discovery API of real agents in a 2-node netns cluster, used by pods
 * made with the real `weft` CNI plugin: curl -N and weft's client (the
 * package's "weft/client") subscribe from pods, over the node-local address
 * and the Unix socket; `weft svc` changes arrive in order; a client resumes
 * with Last-Event-ID (and gets a snapshot after etcd compacted); a pod
 * publishes its endpoint (curl, and the client) and every node's DNS answers it until CNI DEL; a pod
 * cannot publish another's address; the underlay is outside the ACL; a slow
 * consumer is dropped while the others go on; 1,000 streams on one node add
 * no etcd watch; a dead node's publications expire with its lease and come
 * back with its agent.
 */
let c: Cluster;
let plugins: ReturnType<typeof installPlugins>;
let dir: string;
let side: ServiceRegistry;
const extra: Netns[] = [];
const running: ChildProcess[] = [];
const sock = (i: number): string => join(dir, `n${i}.sock`);
const API = "http://169.254.20.10:8053";

const weft = async (...args: string[]): Promise<string> =>
  (await promisify(execFile)(process.execPath, ["bin/weft.js", ...args], { encoding: "utf8" })).stdout;
const svc = (...args: string[]): Promise<string> => weft("svc", ...args, "--etcd-endpoints", c.etcd.localEndpoint);

/** A pod made by CNI ADD on node `node`, named `name` in namespace "shop". */
async function addPod(node: number, name: string): Promise<Pod & { id: string }> {
  const ns = await Netns.create(`d${name}`, c.tag);
  extra.push(ns);
  const out = await cni(node, "ADD", name, `/run/netns/${ns.name}`);
  expect(out.exit, out.stdout + out.stderr).toBe(0);
  return { ns, node, addr: parseIpv4(resultIp(out).split("/")[0]!), id: name };
}

function cni(node: number, command: string, id: string, netns: string) {
  return execPlugin(join(plugins.binDir, "weft"), {
    command, containerId: id, netns, ifname: "eth0", args: `K8S_POD_NAMESPACE=shop;K8S_POD_NAME=${id}`,
    conf: { cniVersion: "1.1.0", name: "weft", type: "weft", bridge: "cni0" },
  }, { cniPath: plugins.cniPath, socket: c.files(node).socket, nodeNs: c.node(node).ns.name });
}

/** curl in a pod: status and JSON body. */
async function curl(pod: Pod, args: string[], body?: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const out = await pod.ns.exec(["curl", "-s", "-m", "5", "-w", "\n%{http_code}", ...(body === undefined ? [] : ["-H", "content-type: application/json", "--data-binary", "@-"]), ...args],
    body === undefined ? {} : { input: body });
  const nl = out.lastIndexOf("\n");
  return { status: Number(out.slice(nl + 1)), json: out.slice(0, nl) ? JSON.parse(out.slice(0, nl)) as Record<string, unknown> : {} };
}

/** Runs a long-lived command in a pod; its stdout lines, as they come. */
function spawnIn(pod: Pod | Netns, argv: string[]): { child: ChildProcess; lines: string[] } {
  const child = ("ns" in pod ? pod.ns : pod).spawn(argv);
  running.push(child);
  return { child, lines: readLines(child) };
}

async function dig(pod: Pod, name: string): Promise<string> {
  return (await pod.ns.exec(["dig", "@169.254.20.10", "+time=2", "+tries=1", "+short", name], { timeoutMs: 10_000 })).trim();
}

async function metrics(i: number): Promise<string> {
  return c.node(i).ns.exec([process.execPath, "-e", 'fetch("http://127.0.0.1:9099/metrics").then(async (r) => process.stdout.write(await r.text()))']);
}

/** etcd's own count of open watchers (every agent's lease watch and registry watch). */
async function etcdWatchers(): Promise<number> {
  const text = await (await fetch(`${c.etcd.localEndpoint}/metrics`)).text();
  const m = /^etcd_debugging_mvcc_watcher_total (\d+)/m.exec(text);
  if (!m?.[1]) throw new Error("etcd reports no etcd_debugging_mvcc_watcher_total");
  return Number(m[1]);
}

async function until(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const json = (lines: string[]): Record<string, unknown>[] => lines.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Record<string, unknown>);

let p0: Pod & { id: string };
let p0b: Pod & { id: string };
let p1: Pod & { id: string };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "weft-disc-cluster-"));
  c = await Cluster.create({
    nodes: 2, podsPerNode: 0,
    agentArgs: ["--discovery-lease-ttl", "3", "--discovery-max-pending", "65536"],
    nodeAgentArgs: [["--discovery-socket", sock(0)], ["--discovery-socket", sock(1)]],
  });
  plugins = installPlugins();
  side = new ServiceRegistry({ endpoints: [c.etcd.localEndpoint] });
  p0 = await addPod(0, "web-0");
  p0b = await addPod(0, "web-1");
  p1 = await addPod(1, "web-2");
}, 120_000);
afterAll(async () => {
  for (const ch of running) ch.kill("SIGKILL");
  side?.close();
  for (const n of extra) await n.destroy();
  await c?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("the discovery API in a cluster", () => {
  let client: ReturnType<typeof spawnIn>;
  let curlN: ReturnType<typeof spawnIn>;

  it("pods subscribe with curl -N (node-local address) and the client (Unix socket); weft svc put/rm arrive in order", async () => {
    curlN = spawnIn(p0, ["curl", "-sN", `${API}/v1/services?watch=1&namespace=shop`]);
    client = spawnIn(p1, [process.execPath, "test/discovery/fixtures/subscriber.mjs", "--target", `unix:${sock(1)}`, "--namespace", "shop"]);
    await until(() => curlN.lines.includes("event: snapshot") && json(client.lines).some((e) => e["type"] === "snapshot"), 10_000, "both snapshots");
    const steps: [string[], string][] = [
      [["put", "service", "shop/web", "--type", "Headless", "--port", "http:TCP:80"], "put service web"],
      [["put", "endpoint", "shop/web/ext-1", "--address", "198.51.100.9"], "put endpoint web/ext-1"],
      [["put", "service", "other/skip", "--type", "Headless"], ""], // another namespace: filtered out
      [["rm", "service", "shop/web"], "delete endpoint web/ext-1|delete service web"],
    ];
    const late: number[] = [];
    const changes = () => json(client.lines).filter((e) => e["type"] === "change");
    for (const [args, want] of steps) {
      const before = changes().length;
      await svc(...args);
      const done = process.hrtime.bigint();
      if (!want) continue;
      const n = want.split("|").length;
      await until(() => changes().length >= before + n || json(client.lines).length > 100, 1000, `"${want}" at the client within 1 s of weft svc`);
      const got = changes().slice(-n);
      expect(got.map((e) => { const ch = e["change"] as Record<string, string>; return `${ch["op"]} ${ch["kind"]} ${ch["name"]}${ch["id"] ? `/${ch["id"]}` : ""}`; }).join("|")).toBe(want);
      // arrival relative to weft svc's exit (negative: it arrived before the command had finished)
      late.push(Number(BigInt(String(got[got.length - 1]!["t"])) - done) / 1e6);
    }
    console.log(`discovery in a pod: change arrival vs weft svc exit, ms: ${late.map((l) => l.toFixed(1)).join(" ")}`);
    await until(() => curlN.lines.filter((l) => l.startsWith("event: ")).length >= 5, 2000, "curl to see the same four changes");
    expect(curlN.lines.filter((l) => l.startsWith("event: "))).toEqual(["event: snapshot", "event: put", "event: put", "event: delete", "event: delete"]);
  });

  it("the client resumes with Last-Event-ID and gets only what it missed; after etcd compacts, a snapshot", async () => {
    const lastId = String(json(client.lines).at(-1)?.["lastEventId"]);
    expect(lastId).toMatch(/^\d+$/);
    client.child.kill("SIGTERM");
    await svc("put", "endpoint", "shop/db/m-1", "--address", "198.51.100.10");
    await svc("put", "endpoint", "shop/db/m-2", "--address", "198.51.100.11");
    const resumed = spawnIn(p1, [process.execPath, "test/discovery/fixtures/subscriber.mjs", "--target", `unix:${sock(1)}`, "--namespace", "shop", "--last-event-id", lastId]);
    await until(() => json(resumed.lines).filter((e) => e["type"] === "change").length >= 2, 5000, "the missed changes");
    const events = json(resumed.lines).filter((e) => e["type"] !== "connected");
    expect(events.map((e) => `${e["type"]} ${String((e["change"] as Record<string, string> | undefined)?.["id"])}`)).toEqual(["change m-1", "change m-2"]);
    const id2 = String(events.at(-1)?.["lastEventId"]);
    resumed.child.kill("SIGTERM");
    await svc("rm", "endpoint", "shop/db/m-1");
    const rev = (await side.snapshot()).revision;
    await side.client.kv.compact({ revision: rev, physical: true });
    const again = spawnIn(p1, [process.execPath, "test/discovery/fixtures/subscriber.mjs", "--target", `unix:${sock(1)}`, "--namespace", "shop", "--last-event-id", id2]);
    await until(() => json(again.lines).some((e) => e["type"] === "snapshot"), 5000, "a snapshot");
    const snap = json(again.lines).find((e) => e["type"] === "snapshot")?.["snapshot"] as { reason: string; endpoints: { id: string }[] };
    expect(snap.reason).toBe("compacted");
    expect(snap.endpoints.map((e) => e.id)).toEqual(["m-2"]);
    again.child.kill("SIGTERM");
  });

  it("a pod publishes its endpoint and every node's DNS answers it; CNI DEL removes it everywhere", async () => {
    await svc("put", "service", "shop/api", "--type", "Headless", "--port", "http:TCP:8080");
    const pub = await addPod(0, "api-0");
    const r = await curl(pub, ["-X", "POST", `${API}/v1/endpoints`], JSON.stringify({ service: "api", hostname: "api-0", ports: [{ name: "http", port: 8080 }] }));
    expect(r.status).toBe(201);
    expect(r.json).toMatchObject({ pod: { namespace: "shop", name: "api-0" }, endpoint: { id: "api-0", addresses: [formatIpv4(pub.addr)] } });
    for (const from of [p0b, p1]) {
      await until(async () => (await dig(from, "api-0.api.shop.svc.cluster.local")) === formatIpv4(pub.addr), 5000, `node ${from.node} answering the published endpoint`);
    }
    const del = await cni(0, "DEL", "api-0", `/run/netns/${pub.ns.name}`);
    expect(del.exit, del.stdout).toBe(0);
    for (const from of [p0b, p1]) {
      await until(async () => (await dig(from, "api-0.api.shop.svc.cluster.local")) === "", 5000, `node ${from.node} forgetting the endpoint`);
    }
    expect(await side.client.getAll().prefix("/weft/registry/endpoints/shop/api/").keys()).toEqual([]);
  });

  it("a pod cannot publish another pod's address (403 with the reason)", async () => {
    for (const other of [p0, p1]) {
      const r = await curl(p0b, ["-X", "POST", `${API}/v1/endpoints`], JSON.stringify({ service: "web", addresses: [formatIpv4(other.addr)] }));
      expect([r.status, r.json["reason"]]).toEqual([403, "not_own_address"]);
      expect(String(r.json["error"])).toContain(`${formatIpv4(other.addr)} is not an address of this pod`);
    }
    const viaSock = await curl(p0b, ["--unix-socket", sock(0), "-X", "POST", "http://agent/v1/endpoints"], JSON.stringify({ service: "web", addresses: [formatIpv4(p0.addr)] }));
    expect([viaSock.status, viaSock.json["reason"]]).toEqual([403, "not_own_address"]);
    // a node namespace is no pod
    const node = await c.node(0).ns.exec(["curl", "-s", "-H", "content-type: application/json", "-d", '{"service":"web"}', `${API}/v1/endpoints`]);
    expect(JSON.parse(node)).toMatchObject({ reason: "not_a_pod" });
  });

  it("a client outside the ACL (a host on the underlay) gets 403", async () => {
    await c.hub.ip("route", "add", "169.254.20.10/32", "via", "192.0.2.1");
    const out = await c.hub.exec(["curl", "-s", "-m", "5", "-w", "\n%{http_code}", `${API}/v1/services?watch=1`]);
    expect(out.split("\n").at(-1)).toBe("403");
    expect(JSON.parse(out.split("\n")[0]!)).toMatchObject({ reason: "acl" });
    expect(JSON.parse(out.split("\n")[0]!).error).toMatch(/192\.0\.2\.254 may not use this API/);
  });

  it("a slow consumer is dropped with a reason; the others get every change", async () => {
    // a reader in a pod over the Unix socket that reads nothing until SIGUSR1 (a timer keeps it alive meanwhile)
    const slow = spawnIn(p0b, [process.execPath, "-e", `const s = require("net").connect(${JSON.stringify(sock(0))});
      s.write("GET /v1/services?watch=1 HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n"); s.pause(); setInterval(() => undefined, 60_000);
      process.on("SIGUSR1", () => { s.on("data", (d) => process.stdout.write(d)); s.resume(); });`]);
    const before = curlN.lines.filter((l) => l === "event: put").length;
    await until(async () => /weft_discovery_subscribers\{transport="unix"\} 1/.test(await metrics(0)), 5000, "the slow reader's stream");
    const big = (i: number) => ({ addresses: Array.from({ length: 200 }, (_, k) => `198.51.${100 + (i % 3)}.${k + 1}`) });
    const N = 300;
    for (let i = 0; i < N; i += 20) await Promise.all(Array.from({ length: 20 }, (_, k) => side.putEndpoint("shop", "bulk", `b${i + k}`, big(i + k))));
    await until(() => curlN.lines.filter((l) => l === "event: put").length >= before + N, 10_000, "curl -N to get every change");
    await until(async () => /weft_discovery_streams_ended_total\{why="slow"\} 1/.test(await metrics(0)), 5000, "the slow consumer to be dropped");
    slow.child.kill("SIGUSR1");
    await until(() => slow.lines.some((l) => l.startsWith("event: dropped")), 5000, "the slow reader to read its last event");
    const reason = slow.lines[slow.lines.findIndex((l) => l.startsWith("event: dropped")) + 1] ?? "";
    expect(reason).toMatch(/too far behind: \d+ bytes unread, the limit is 65536( \(\+\d+ of the first snapshot\))?; reconnect with Last-Event-ID \d+/);
    await side.removeService("shop", "bulk");
  });

  it("1,000 streams on one node: every one gets a change, and etcd's watch count does not move", async () => {
    const watchers = await etcdWatchers();
    expect(watchers).toBe(2 * c.nodes.length); // per agent: one watch of the subnet leases, one of the registry
    const many = spawnIn(p0b, [process.execPath, "dist/bench/discovery-swarm.js", "--target", API, "--count", "1000"]);
    await until(() => json(many.lines).some((e) => e["type"] === "ready"), 30_000, "1,000 snapshots");
    const t0 = process.hrtime.bigint();
    await side.putEndpoint("shop", "fan", "fan-1", { addresses: ["198.51.100.20"] });
    await until(() => json(many.lines).some((e) => e["type"] === "change" && e["id"] === "fan-1"), 10_000, "the change at all 1,000");
    const times = (json(many.lines).find((e) => e["id"] === "fan-1")?.["times"] as string[]).map((t) => Number(BigInt(t) - t0) / 1e6).sort((a, b) => a - b);
    console.log(`1,000 streams: change after the etcd write, ms: first ${times[0]?.toFixed(1)}, p50 ${times[499]?.toFixed(1)}, last ${times[999]?.toFixed(1)}`);
    expect(json(many.lines).filter((e) => e["type"] !== "ready" && e["type"] !== "change")).toEqual([]);
    expect(await etcdWatchers()).toBe(watchers);
    const m = await metrics(0);
    expect(Number(/weft_discovery_subscribers\{transport="tcp"\} (\d+)/.exec(m)?.[1])).toBeGreaterThanOrEqual(1000);
    many.child.kill("SIGKILL");
  }, 60_000);

  it("weft status and /metrics show the API: subscribers, events, drops, publications per pod", async () => {
    // published with the client this time (the package's "weft/client")
    const out = JSON.parse(await p0.ns.exec([process.execPath, "test/discovery/fixtures/publish.mjs", API, JSON.stringify({ service: "web" })])) as Record<string, unknown>;
    expect(out).toMatchObject({ published: { endpoint: { id: "web-0", addresses: [formatIpv4(p0.addr)] } }, mine: ["/weft/registry/endpoints/shop/web/web-0"] });
    const refused = JSON.parse(await p0.ns.exec([process.execPath, "test/discovery/fixtures/publish.mjs", API, JSON.stringify({ service: "web", namespace: "prod" })])) as Record<string, unknown>;
    expect(refused).toMatchObject({ status: 403, reason: "other_namespace" });
    const m = await metrics(0);
    expect(m).toMatch(/weft_discovery_events_sent_total [1-9]/);
    expect(m).toMatch(/weft_discovery_publications\{pod="shop\/web-0"\} 1/);
    expect(m).toMatch(/weft_discovery_requests_refused_total\{reason="not_own_address"\} 3/);
    const st = await weft("status", "--control-socket", c.files(0).socket);
    expect(st).toMatch(/^discovery: 169\.254\.20\.10:8053, \S+n0\.sock +revision \d+/m);
    expect(st).toMatch(/subscribers \d+ \(tcp \d+, unix \d+\) +events sent [1-9]\d* +snapshots initial \d+.* dropped slow 1/);
    expect(st).toMatch(/publications 1: shop\/web-0 1/);
  });

  it("a dead node's publications expire with its lease; its restarted agent publishes them again", async () => {
    const r = await curl(p1, ["--unix-socket", sock(1), "-X", "POST", "http://agent/v1/endpoints"], JSON.stringify({ service: "web" }));
    expect([r.status, r.json["endpoint"]]).toEqual([201, expect.objectContaining({ id: "web-2", addresses: [formatIpv4(p1.addr)] })]);
    const seen = async (): Promise<boolean> => ((await curl(p0, [`${API}/v1/services?namespace=shop&name=web`])).json["endpoints"] as { id: string }[]).some((e) => e.id === "web-2");
    await until(seen, 5000, "node 0 to see node 1's publication");
    await c.stopAgent(1, "SIGKILL");
    await until(async () => !(await seen()), 10_000, "the publication to expire with node 1's lease (TTL 3 s)");
    c.startAgent(1);
    await c.waitReady(1);
    await until(seen, 10_000, "the restarted agent to publish it again");
  }, 40_000);
});
