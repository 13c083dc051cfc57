import type { ChildProcess } from "node:child_process";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { projectRoot } from "../../src/common/paths.js";
import { Cluster } from "../../src/harness/cluster.js";

/**
 * The default `--dns-upstream resolv.conf`, for real: each node namespace has
 * its own /etc/resolv.conf (`ip netns exec` binds /etc/netns/<name>/resolv.conf
 * over it) naming a resolver in the hub namespace, and the agents run without
 * --dns-upstream. A pod resolves an external name through its node's DNS, and
 * each node asks the resolver its own resolv.conf names (the host's names
 * neither, and is unreachable from the namespaces anyway).
 */
const RESPONDER = join(projectRoot(), "dist", "src", "harness", "dns-responder.js");
let c: Cluster;
let responder: ChildProcess;
let queries: { at: string; from: string; name: string }[] = [];

beforeAll(async () => {
  c = await Cluster.create({ nodes: 2, podsPerNode: 1, dnsUpstream: "default", manualNodes: [0, 1] });
  for (const a of ["192.0.2.252", "192.0.2.253"]) await c.hub.ip("addr", "add", `${a}/24`, "dev", "br0");
  // One resolver process, two addresses, a different answer on each.
  responder = c.hub.spawn([process.execPath, RESPONDER, "192.0.2.252=198.51.100.1", "192.0.2.253=198.51.100.2"]);
  await new Promise<void>((resolve, reject) => {
    let buf = "";
    responder.stdout!.on("data", (d: Buffer) => {
      buf += d.toString();
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const line = JSON.parse(buf.slice(0, nl)) as { ready?: boolean } & (typeof queries)[number];
        buf = buf.slice(nl + 1);
        if (line.ready) resolve();
        else queries.push(line);
      }
    });
    responder.once("exit", (code) => reject(new Error(`the DNS responder exited (${code})`)));
  });
  c.setResolvConf(0, "# weft test: node 0's upstream\nnameserver 192.0.2.252\n");
  c.setResolvConf(1, "nameserver 192.0.2.253\noptions ndots:1\n");
  for (const i of [0, 1]) c.startAgent(i);
  for (const i of [0, 1]) await c.waitReady(i);
  for (const i of [0, 1]) await c.addPods(c.node(i));
}, 120_000);
afterAll(async () => {
  responder?.kill("SIGKILL");
  await c?.destroy();
});

async function dig(pod: number, ...q: string[]): Promise<string> {
  return c.pods[pod]!.ns.exec(["dig", "@169.254.20.10", "+time=2", "+tries=1", ...q], { timeoutMs: 10_000 });
}

describe("the node's resolv.conf as the DNS upstream (the default)", () => {
  it("a pod resolves an external name through its node's DNS, forwarded to the resolver its node's resolv.conf names", async () => {
    queries = [];
    expect((await dig(0, "+short", "www.example.test")).trim()).toBe("198.51.100.1");
    expect((await dig(1, "+short", "www.example.test")).trim()).toBe("198.51.100.2");
    // Asked by the node (its underlay address), not by the pod, and each node its own resolver.
    expect(queries.filter((q) => q.name === "www.example.test").map((q) => `${q.at} <- ${q.from}`).sort())
      .toEqual(["192.0.2.252 <- 192.0.2.1", "192.0.2.253 <- 192.0.2.2"]);
    // The upstream's NXDOMAIN comes through; and the answer is cached (no second query upstream).
    expect(await dig(0, "nothing.invalid")).toMatch(/status: NXDOMAIN/);
    expect((await dig(0, "+short", "www.example.test")).trim()).toBe("198.51.100.1");
    expect(queries.filter((q) => q.name === "www.example.test" && q.at === "192.0.2.252")).toHaveLength(1);
    expect(queries.some((q) => q.name === "nothing.invalid")).toBe(true);
  });

  it("weft status names the upstream it read from the namespace's resolv.conf", async () => {
    const st = await c.status(0);
    expect(JSON.stringify(st.dns)).toContain("192.0.2.252");
    expect(JSON.stringify(st.dns)).not.toContain("192.0.2.253");
  });
});
