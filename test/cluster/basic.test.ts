import { spawn } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatCidr } from "../../src/common/ipv4.js";
import { projectRoot } from "../../src/common/paths.js";
import { Cluster } from "../../src/harness/cluster.js";

let c: Cluster;
beforeAll(async () => {
  c = await Cluster.create({ nodes: 3, podsPerNode: 2 });
}, 120_000);
afterAll(async () => {
  await c?.destroy();
});

/** An HTTP GET from inside node i's namespace (the health server listens on its loopback). */
async function get(i: number, path: string): Promise<{ status: number; body: string }> {
  const out = await c.node(i).ns.exec([process.execPath, "-e",
    `fetch("http://127.0.0.1:9099${path}").then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.text() })))`]);
  return JSON.parse(out) as { status: number; body: string };
}

describe("3-node cluster, kernel vxlan backend", () => {
  it("every pod pings every other pod", async () => {
    expect(await c.pingAll()).toEqual([]);
  });

  it("serves /healthz, /readyz and /metrics", async () => {
    expect(await get(0, "/healthz")).toEqual({ status: 200, body: "ok\n" });
    const ready = await get(0, "/readyz");
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body)).toEqual({ ready: true, lease: true, dataPath: true, subnetFile: true, etcd: true, routesSynced: true, registrySynced: true });
    const m = (await get(0, "/metrics")).body;
    expect(m).toMatch(/^weft_ready 1$/m);
    expect(m).toMatch(/^weft_peers\{state="programmed"\} 2$/m);
    expect(m).toMatch(/^weft_routes 2$/m);
    expect(m).toMatch(/^weft_process_resident_memory_bytes \d+/m);
    expect((await get(0, "/nope")).status).toBe(404);
  });

  it("`weft status` prints subnet, backend, peers and counters from the running agent", async () => {
    const out = await new Promise<string>((resolve) => {
      const p = spawn(process.execPath, ["bin/weft.js", "status", "--control-socket", c.files(1).socket], { cwd: projectRoot() });
      let s = "";
      p.stdout.on("data", (d: Buffer) => (s += d.toString()));
      p.stderr.on("data", (d: Buffer) => (s += d.toString()));
      p.on("close", () => resolve(s));
    });
    expect(out).toMatch(/^ready: +yes$/m);
    expect(out).toContain(`subnet: ${c.nodes[1]!.subnet!.addr >>> 24}.`);
    expect(out).toMatch(/backend: +vxlan \(asked for\) +device: weft\.1 +mtu: 1450/);
    expect(out).toMatch(/^peers: +2$/m);
    expect(out).toMatch(/counters: .*peersProgrammed=2/);
  });

  it("`weft status` lists a window of the peers when asked (a node with thousands of peers answers in one screen), sorted by subnet", async () => {
    const run = (...args: string[]) => new Promise<{ code: number | null; out: string }>((resolve) => {
      const p = spawn(process.execPath, ["bin/weft.js", "status", "--control-socket", c.files(1).socket, ...args], { cwd: projectRoot() });
      let s = "";
      p.stdout.on("data", (d: Buffer) => (s += d.toString()));
      p.stderr.on("data", (d: Buffer) => (s += d.toString()));
      p.on("close", (code) => resolve({ code, out: s }));
    });
    const others = [0, 2].map((i) => c.nodes[i]!.subnet!).sort((a, b) => a.addr - b.addr).map((s) => formatCidr(s));
    const first = await run("--peers", "1");
    expect(first.out).toMatch(/^peers: +2 \(1-1 shown; weft status --peers all, or --peers N --peers-from K\)$/m);
    expect(first.out.split("\n").filter((l) => / via /.test(l)).map((l) => l.trim().split(" ")[0])).toEqual([others[0]]);
    const second = await run("--peers", "1", "--peers-from", "1");
    expect(second.out.split("\n").filter((l) => / via /.test(l)).map((l) => l.trim().split(" ")[0])).toEqual([others[1]]);
    const json = JSON.parse((await run("--json", "--peers", "0")).out) as { peers: unknown[]; peerCount: number };
    expect([json.peers, json.peerCount]).toEqual([[], 2]);
    const bad = await run("--peers", "-3");
    expect(bad.code).not.toBe(0);
    expect(bad.out).toMatch(/--peers -3: a whole number or all/);
  });
});
