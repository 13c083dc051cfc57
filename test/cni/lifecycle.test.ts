import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { queryIpam } from "../../src/agent/control.js";
import { Cluster } from "../../src/harness/cluster.js";
import { execPlugin, installPlugins, resultIp, type CniOut } from "../helpers/cni.js";

/**
 * The agent dies or loses its lease while pods are being added: a SIGKILL in
 * the middle of a burst of ADDs must not lose an acknowledged address nor
 * hand one out twice; without a lease ADD answers "try again later"; a
 * damaged journal keeps the agent from handing out addresses, not from
 * running.
 */
let c: Cluster;
let plugins: ReturnType<typeof installPlugins>;

beforeAll(async () => {
  c = await Cluster.create({ nodes: 1, podsPerNode: 0, subnetLen: 22, agentArgs: ["--subnet-lease-ttl", "6", "--subnet-lease-renew-margin", "3"] });
  plugins = installPlugins();
}, 120_000);
afterAll(async () => {
  await c?.destroy();
});

const conf = { cniVersion: "1.1.0", name: "crash", type: "none", ipam: { type: "weft-ipam" } };
const add = (id: string): Promise<CniOut> =>
  execPlugin(join(plugins.binDir, "weft-ipam"), { command: "ADD", containerId: id, netns: "/proc/self/ns/net", ifname: "eth0", conf }, { cniPath: plugins.cniPath, socket: c.files(0).socket });

async function allocations(): Promise<Map<string, string>> {
  const r = await queryIpam<{ allocations: { containerId: string; ip: string }[] }>(c.files(0).socket, "ipam-ls");
  const ips = r.allocations.map((a) => a.ip);
  expect(new Set(ips).size, "an address is held twice").toBe(ips.length);
  return new Map(r.allocations.map((a) => [a.containerId, a.ip]));
}

describe("agent crash and lease loss during ADDs", () => {
  it.each([1, 2, 3])("SIGKILL in the middle of a burst of ADDs (round %i): nothing acknowledged is lost, nothing is held twice", async (round) => {
    const ids = Array.from({ length: 150 }, (_x, i) => `r${round}c${i}`);
    const acked = new Map<string, string>();
    let killed = false;
    const burst = Promise.all(ids.map(async (id, i) => {
      await new Promise((r) => setTimeout(r, i * 2)); // a stream of pod starts, not one instant
      const out = await add(id);
      if (out.exit === 0) acked.set(id, resultIp(out).split("/")[0]!);
      else expect(out.json?.["code"], out.stdout).toBe(11); // the agent went away: "try again later"
    }));
    const killer = (async () => {
      while (acked.size < 20 * round) await new Promise((r) => setTimeout(r, 2));
      await c.stopAgent(0, "SIGKILL");
      killed = true;
    })();
    await Promise.all([burst, killer]);
    expect(killed).toBe(true);
    expect(acked.size).toBeLessThan(150); // the kill really landed mid-burst
    c.startAgent(0);
    await c.waitReady(0);
    const after = await allocations();
    for (const [id, ip] of acked) expect(after.get(id), id).toBe(ip);
    // The runtime retries what failed; what was acknowledged comes back unchanged (ADD is idempotent).
    const retry = await Promise.all(ids.map(async (id) => [id, resultIp(await add(id)).split("/")[0]!] as const));
    for (const [id, ip] of retry) if (acked.has(id)) expect(ip, id).toBe(acked.get(id));
    expect(new Set(retry.map(([, ip]) => ip)).size).toBe(150);
    expect((await allocations()).size).toBe(150 * round);
  });

  it("without a lease ADD answers 11 and STATUS 50; once the lease is back ADD works", async () => {
    await c.etcd.stop();
    try {
      const end = Date.now() + 20_000;
      let out = await add("nolease");
      while (out.exit === 0 && Date.now() < end) {
        await execPlugin(join(plugins.binDir, "weft-ipam"), { command: "DEL", containerId: "nolease", ifname: "eth0", conf }, { cniPath: plugins.cniPath, socket: c.files(0).socket });
        await new Promise((r) => setTimeout(r, 300));
        out = await add("nolease");
      }
      expect(out.json).toMatchObject({ code: 11, msg: expect.stringContaining("no subnet lease") });
      const st = await execPlugin(join(plugins.binDir, "weft-ipam"), { command: "STATUS", conf }, { cniPath: plugins.cniPath, socket: c.files(0).socket });
      expect(st.json).toMatchObject({ code: 50 });
    } finally {
      await c.etcd.run();
    }
    await c.waitReady(0, 30_000);
    const out = await add("nolease");
    expect(out.exit, out.stdout).toBe(0);
    expect(c.agentLog(0)).toMatch(/expired/);
  });

  it("a damaged journal line: the agent runs, ADD answers 5 naming the line, DEL and STATUS answer, nothing is written; repaired, ADD works", async () => {
    const call = (command: string, id?: string): Promise<CniOut> =>
      execPlugin(join(plugins.binDir, "weft-ipam"), { command, ...(id ? { containerId: id, ifname: "eth0", netns: "/proc/self/ns/net" } : {}), conf }, { cniPath: plugins.cniPath, socket: c.files(0).socket });
    const metrics = (): Promise<string> => c.node(0).ns.exec([process.execPath, "-e", 'fetch("http://127.0.0.1:9099/metrics").then(async (r) => console.log(await r.text()))']);
    const held0 = await allocations();
    await c.stopAgent(0, "SIGTERM");
    const journal = join(c.files(0).stateDir, "ipam", "journal");
    const good = readFileSync(journal, "utf8");
    const [first, ...rest] = good.split("\n");
    expect(rest.length).toBeGreaterThan(10);
    const damaged = [first, '{"s":2,"op":"add","a":{"ip":"198.18.0.9"\u0000\u0000', ...rest].join("\n");
    writeFileSync(journal, damaged);
    c.startAgent(0);
    await c.waitReady(0, 30_000);
    const add = await call("ADD", "after-damage");
    expect(add.json, add.stdout).toMatchObject({ code: 5, msg: expect.stringMatching(/journal line 2 \(byte \d+\) cannot be used: not JSON.*left as they are/) });
    expect(add.json?.["msg"]).toContain(journal);
    const before = await allocations();
    expect(before.size).toBe(1); // what could be read: the first line
    const kept = [...before.keys()][0]!;
    expect((await call("DEL", kept)).exit).toBe(0); // DEL answers, so the runtime can finish; the address stays held
    expect((await allocations()).has(kept)).toBe(true);
    const st = await call("STATUS");
    expect(st.json).toMatchObject({ code: 50, msg: expect.stringContaining("line 2") });
    const m = await metrics();
    expect(m).toMatch(/weft_ipam_state_unreadable 1/);
    expect(m).toMatch(/weft_ipam_state_refusals_total\{op="add"\} 1/);
    expect(m).toMatch(/weft_ipam_state_refusals_total\{op="del"\} 1/);
    expect(c.agentLog(0)).toContain("the IPAM state cannot be trusted");
    expect(readFileSync(journal, "utf8")).toBe(damaged);
    // The operator repairs it (here: the line removed) and restarts the agent.
    await c.stopAgent(0, "SIGTERM");
    writeFileSync(journal, good);
    c.startAgent(0);
    await c.waitReady(0, 30_000);
    expect((await call("ADD", "after-repair")).exit).toBe(0);
    const after = await allocations();
    for (const [id, ip] of held0) expect(after.get(id), id).toBe(ip);
    expect(after.has("after-repair")).toBe(true);
    expect(after.has("after-damage")).toBe(false);
    expect(after.size).toBe(held0.size + 1);
  });
});
