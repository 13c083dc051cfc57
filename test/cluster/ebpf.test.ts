import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatIpv4 } from "../../src/common/ipv4.js";
import { Cluster } from "../../src/harness/cluster.js";
import { start } from "../../src/common/exec.js";
import { PingProbe } from "../../src/harness/probe.js";
import { MAP_NAMES } from "../../src/backend/ebpf/maps.js";

/**
 * A 3-node cluster on the ebpf backend: pod traffic moved by the tc
 * programs (pod veth -> collect_md VXLAN device -> wire -> straight into the
 * destination pod), host traffic through the device's egress program.
 */
let c: Cluster;
beforeAll(async () => {
  c = await Cluster.create({ nodes: 3, podsPerNode: 2, backend: "ebpf" });
}, 120_000);
afterAll(async () => {
  await c?.destroy();
});

const counter = async (i: number, name: string): Promise<number> => (await c.status(i)).counters[`bpf_${name}`] ?? 0;

describe("ebpf backend cluster", () => {
  it("runs the ebpf backend on every node and every pod pings every other pod", async () => {
    for (const i of [0, 1, 2]) {
      const st = await c.status(i);
      expect(st.backend).toBe("ebpf");
      // This kernel has tcx: the default (auto) attaches with tcx links, not the tc fallback.
      expect(st.paths, `node ${i}`).toEqual({ attach: "tcx" });
      expect(c.agentLog(i)).not.toMatch(/tc filters, not tcx links/);
      const metrics = await c.node(i).ns.exec([process.execPath, "-e", 'fetch("http://127.0.0.1:9099/metrics").then(async (r) => console.log(await r.text()))']);
      expect(metrics).toMatch(/^weft_datapath_variant\{path="attach",variant="tcx"\} 1$/m);
    }
    const fwd = await counter(0, "forwarded");
    expect(await c.pingAll()).toEqual([]);
    // The programs carried it: pods' packets were forwarded into the overlay and delivered into pods.
    expect(await counter(0, "forwarded")).toBeGreaterThan(fwd);
    expect(await counter(0, "delivered")).toBeGreaterThan(0);
    expect(await counter(0, "spoofed")).toBe(0);
  });

  it("the node itself reaches remote pods (egress program on the device)", async () => {
    const remote = c.node(1).pods[0]!;
    await c.node(0).ns.exec(["ping", "-c", "2", "-W", "2", "-q", formatIpv4(remote.addr)]);
    expect(await counter(0, "to_overlay")).toBeGreaterThan(0);
  });

  it("iperf3 runs across nodes", async () => {
    const srv = c.node(2).pods[0]!;
    const cli = c.node(0).pods[1]!;
    const s = start(["ip", "netns", "exec", srv.ns.name, "iperf3", "-s", "-1"]);
    try {
      await new Promise((r) => setTimeout(r, 300));
      const out = JSON.parse(await cli.ns.exec(["iperf3", "-c", formatIpv4(srv.addr), "-t", "2", "-J"], { timeoutMs: 30_000 })) as {
        end: { sum_received: { bytes: number; bits_per_second: number } };
      };
      expect(out.end.sum_received.bytes).toBeGreaterThan(10_000_000);
    } finally {
      s.kill();
    }
  });

  it("an agent restart keeps programs attached and maps pinned: a ping every 10 ms loses nothing from kill to ready", async () => {
    const from = c.node(0).pods[0]!;
    const to = c.node(1).pods[1]!;
    const probe = await PingProbe.start(from.ns, to.addr, { intervalSec: 0.01, deadlineSec: 40 });
    try {
      await new Promise((r) => setTimeout(r, 300));
      const w = await probe.across(async () => {
        await c.stopAgent(1, "SIGKILL"); // not even a clean exit
        await new Promise((r) => setTimeout(r, 1000)); // traffic flows with no agent at all
      }, async () => {
        c.startAgent(1);
        await c.waitReady(1);
      });
      // The window held the second without an agent and the new agent's start: ~100 requests at least.
      expect(w.sent, JSON.stringify(w)).toBeGreaterThan(80);
      expect(w.lost, `${JSON.stringify(w)}\n${probe.output.slice(-400)}`).toEqual([]);
    } finally {
      await probe.stop();
    }
    // Every map reused (none migrated): the whole list, in the loader's order.
    expect(c.agentLog(1)).toContain(`"reused":${JSON.stringify(MAP_NAMES)}`);
  }, 60_000);

  it("a deleted overlay device is recreated with its programs", async () => {
    await c.node(2).ns.ip("link", "del", "weft.1");
    const end = Date.now() + 15_000;
    while ((await c.pingAll()).length > 0) {
      if (Date.now() > end) throw new Error("not recovered");
      await new Promise((r) => setTimeout(r, 300));
    }
    expect((await c.status(2)).counters["device_recreated"]).toBeGreaterThanOrEqual(1);
  }, 30_000);

  it("a removed endpoint is no longer delivered to; the programs answer for it no more", async () => {
    const n = c.node(0);
    const pod = n.pods[1]!;
    const { requestEndpoint } = await import("../../src/agent/control.js");
    await requestEndpoint(c.files(0).socket, "endpoint-del", { ip: formatIpv4(pod.addr) });
    expect((await c.status(0)).counters["endpoints"]).toBe(1);
    await c.registerPod(0, 1);
    expect((await c.status(0)).counters["endpoints"]).toBe(2);
    expect(await c.pingAll()).toEqual([]);
  });
});

describe("ebpf backend with tc filters (kernels without tcx)", () => {
  let t: Cluster;
  beforeAll(async () => {
    t = await Cluster.create({ nodes: 2, podsPerNode: 1, backend: "ebpf", agentArgs: ["--bpf-attach", "tc"] });
  }, 120_000);
  afterAll(async () => {
    await t?.destroy();
  });

  it("attaches with clsact filters, says so (status, warning with the reason), carries traffic, and survives an agent restart", async () => {
    expect((await t.status(0)).paths).toEqual({ attach: "tc" });
    expect(t.agentLog(0)).toMatch(/"attach":"tc","why":"--bpf-attach tc asks for tc filters".*"msg":"attaching BPF programs with tc filters, not tcx links"/);
    const filters = await t.node(0).ns.exec(["tc", "filter", "show", "dev", "p0", "ingress"]);
    expect(filters).toMatch(/weft_from_pod/);
    expect(await t.pingAll()).toEqual([]);
    await t.stopAgent(0, "SIGKILL");
    expect(await t.pingAll()).toEqual([]); // no agent: the filters still hold the programs
    t.startAgent(0);
    await t.waitReady(0);
    expect(await t.pingAll()).toEqual([]);
    // Replaced in place: still one filter, now holding the new agent's program.
    const egress = JSON.parse(await t.node(0).ns.exec(["tc", "-json", "filter", "show", "dev", "weft.1", "egress"])) as { options?: { prog?: { name?: string } } }[];
    expect(egress.filter((f) => f.options?.prog?.name?.startsWith("weft_to_overl"))).toHaveLength(1);
  }, 60_000);
});
