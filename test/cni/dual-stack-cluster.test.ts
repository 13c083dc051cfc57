import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseIpv4 } from "../../src/common/ipv4.js";
import { parseIpv6 } from "../../src/common/ipv6.js";
import { Cluster } from "../../src/harness/cluster.js";
import { Netns } from "../../src/harness/netns.js";
import { execPlugin, installPlugins } from "../helpers/cni.js";

/**
 * The whole pod path on a dual-stack cluster, one node per backend: the
 * agent binds IPAM to both subnets of its lease, the weft plugin's ADD gives
 * each pod one address per family, and pods on different nodes reach each
 * other over IPv4 and IPv6, through every backend (the ebpf and tun nodes
 * learn the pods from the plugin's endpoint registration).
 */
let c: Cluster;
let plugins: ReturnType<typeof installPlugins>;
const extra: Netns[] = [];
const conf = { cniVersion: "1.1.0", name: "weft", type: "weft", bridge: "cni0" };
const BACKENDS = ["vxlan", "ebpf", "tun"];

beforeAll(async () => {
  c = await Cluster.create({ nodes: BACKENDS.length, podsPerNode: 0, backend: BACKENDS, ipv6: true });
  plugins = installPlugins();
}, 120_000);
afterAll(async () => {
  for (const p of extra) await p.destroy();
  await c?.destroy();
});

describe("the weft plugin on a dual-stack cluster, one node per backend", () => {
  it("ADD gives every pod an address of each family from its node's subnets; pods reach each other over both", async () => {
    for (const n of c.nodes) {
      const st = await c.status(n.index);
      expect(st.subnet6).toBeDefined();
      for (let j = 0; j < 2; j++) {
        const ns = await Netns.create(`n${n.index}d${j}`, c.tag);
        extra.push(ns);
        const id = `n${n.index}d${j}`;
        const out = await execPlugin(join(plugins.binDir, "weft"), { command: "ADD", containerId: id, netns: `/run/netns/${ns.name}`, ifname: "eth0", conf },
          { cniPath: plugins.cniPath, socket: c.files(n.index).socket, nodeNs: n.ns.name });
        expect(out.exit, out.stdout + out.stderr + c.agentLog(n.index).slice(-1500)).toBe(0);
        const ips = (out.json?.["ips"] ?? []) as { address: string; gateway: string }[];
        const v4 = ips.find((i) => !i.address.includes(":"));
        const v6 = ips.find((i) => i.address.includes(":"));
        expect(v4?.address.startsWith(st.subnet!.split(".").slice(0, 3).join("."))).toBe(true);
        expect(v6?.address.startsWith(st.subnet6!.split("::")[0]!)).toBe(true);
        expect(out.json?.["routes"]).toEqual(expect.arrayContaining([expect.objectContaining({ dst: "0.0.0.0/0" }), expect.objectContaining({ dst: "::/0" })]));
        n.pods.push({ ns, node: n.index, addr: parseIpv4(v4!.address.split("/")[0]!), addr6: parseIpv6(v6!.address.split("/")[0]!) });
      }
    }
    expect(await c.pingAll(4)).toEqual([]);
    expect(await c.pingAll(6)).toEqual([]);
  }, 120_000);
});
