import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { encodeLeaseAttrs } from "../../src/subnet/lease.js";
import { Cluster } from "../../src/harness/cluster.js";

/**
 * No silent waits: an agent that cannot get going says what it waits for,
 * why, and since when — in its log (a warning at once, then with backoff),
 * in `weft status` and in /readyz.
 */
let c: Cluster;
beforeAll(async () => {
  // Node 0 gets no agent from the harness: each test starts it with its own flags.
  c = await Cluster.create({ nodes: 1, podsPerNode: 0, manualNodes: [0] });
}, 120_000);
afterEach(async () => {
  await c.stopAgent(0, "SIGKILL");
});
afterAll(async () => {
  await c?.destroy();
});

async function waitFor<T>(get: () => Promise<T>, ok: (v: T) => boolean, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  let last: T | undefined;
  for (;;) {
    try {
      last = await get();
      if (ok(last)) return last;
    } catch {
      // not up yet
    }
    if (Date.now() > end) throw new Error(`not in time; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function readyz(): Promise<{ ready: boolean; etcd: boolean; waiting?: { what: string; error: string; since: string }[] }> {
  const out = await c.node(0).ns.exec([process.execPath, "-e", 'fetch("http://127.0.0.1:9099/readyz").then(async (r) => console.log(await r.text()))']);
  return JSON.parse(out) as Awaited<ReturnType<typeof readyz>>;
}

const warnings = (what: string): string[] => c.agentLog(0).split("\n").filter((l) => l.includes('"level":40') && l.includes(`"waitingFor":"${what}"`));

describe("what the agent waits for is said, not kept silent", () => {
  it("a mistyped etcd endpoint: a warning naming the endpoint and the error at once; status and /readyz say it too", async () => {
    c.startAgent(0, ["--etcd-endpoints", "http://192.0.2.254:2999", "--state-dir", `${c.files(0).stateDir}-etcd`]);
    await waitFor(async () => warnings("etcd"), (w) => w.length > 0, 10_000);
    expect(warnings("etcd")[0]).toMatch(/http:\/\/192\.0\.2\.254:2999: connection refused/);
    const st = await waitFor(() => c.status(0), (s) => s.waiting.some((w) => w.what === "etcd"));
    const w = st.waiting.find((x) => x.what === "etcd")!;
    expect(w.error).toMatch(/connection refused/);
    expect(Date.parse(w.since)).toBeLessThanOrEqual(Date.now());
    const r = await readyz();
    expect(r.ready).toBe(false);
    expect(r.waiting?.map((x) => x.what)).toEqual(["etcd"]);
    // Backoff: after a few seconds of one attempt per second, a handful of warnings, not one per attempt.
    await new Promise((res) => setTimeout(res, 5000));
    const n = warnings("etcd").length;
    expect(n).toBeGreaterThanOrEqual(2);
    expect(n).toBeLessThanOrEqual(5);
  }, 40_000);

  it("no network config under the prefix: the key and the command that creates it", async () => {
    c.startAgent(0, ["--etcd-prefix", "/nothing-here/network", "--state-dir", `${c.files(0).stateDir}-config`]);
    const st = await waitFor(() => c.status(0), (s) => s.waiting.some((w) => w.what === "network-config"));
    expect(st.waiting.find((w) => w.what === "network-config")?.error).toMatch(/\/nothing-here\/network\/config does not exist.*weft network init/);
    expect(warnings("network-config")).toHaveLength(1);
    expect((await readyz()).etcd).toBe(true); // etcd itself answers
  }, 30_000);

  it("a full subnet range says full, and etcd stays ready", async () => {
    const reg = c.registry();
    const prefix = "/full/network";
    try {
      await reg.client.put(`${prefix}/config`).value('{"Network":"198.18.0.0/28","SubnetLen":30,"Backend":{"Type":"vxlan"}}');
      for (const [i, s] of ["198.18.0.4-30", "198.18.0.8-30", "198.18.0.12-30"].entries()) {
        await reg.client.put(`${prefix}/subnets/${s}`).value(encodeLeaseAttrs({ publicIp: 0xc0000264 + i, backendType: "vxlan", vni: 1, vtepMac: Uint8Array.of(2, 0, 0, 0, 0, i + 1) }));
      }
    } finally {
      reg.close();
    }
    c.startAgent(0, ["--etcd-prefix", prefix, "--state-dir", `${c.files(0).stateDir}-full`]);
    const st = await waitFor(() => c.status(0), (s) => s.waiting.some((w) => w.what === "subnet"));
    expect(st.waiting.find((w) => w.what === "subnet")?.error).toMatch(/subnet range is full: no free \/30 subnet.*0 leased, 3 reserved/);
    const r = await readyz();
    expect(r.etcd).toBe(true);
    expect(r.waiting?.map((x) => x.what)).toEqual(["subnet"]);
  }, 30_000);
});
