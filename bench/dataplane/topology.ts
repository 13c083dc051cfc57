/**
 * The dataplane benchmark's clusters: two nodes in network namespaces on one
 * bridge, one pod each, per backend:
 *   direct:       plain routing, no overlay, no agent (each node routes the other's pod subnet via its underlay address)
 *   vxlan:        two weft agents, kernel vxlan backend, pods on a cni0 bridge (flannel's data path)
 *   vxlan-routed: kernel vxlan with bridge-less pods (a /32 route per pod, the gateway on the host side of its veth, as the ptp plugin wires them):
 *                 the best the kernel does, the bar for ebpf
 *   ebpf:         two weft agents, ebpf backend (tc programs, collect_md VXLAN device)
 *   tun:          two weft agents, tun backend (userspace: TUN device, WASM encap/decap, UDP sockets)
 */
import { formatIpv4, parseCidr } from "../../src/common/ipv4.js";
import { formatIpv6, parseCidr6 } from "../../src/common/ipv6.js";
import { Cluster } from "../../src/harness/cluster.js";

export const BACKENDS = ["direct", "vxlan", "vxlan-routed", "ebpf", "tun"] as const;
export type BenchBackend = (typeof BACKENDS)[number];
/** The kernel's own overlay paths: the baselines. */
export const KERNEL: readonly BenchBackend[] = ["vxlan", "vxlan-routed"];

/** The weft backend a bench backend runs (undefined: no agent). */
export function agentBackend(b: BenchBackend): string | undefined {
  return b === "direct" ? undefined : b === "vxlan-routed" ? "vxlan" : b;
}

/**
 * `agentArgs`: extra `weft agent` flags for the backend's agents (e.g.
 * --tun-busy-poll for tun). `ipv6`: a dual-stack cluster (IPv6 underlay and
 * pods too), so one cluster measures both families.
 */
export async function topology(backend: BenchBackend, agentArgs: readonly string[] = [], ipv6 = false): Promise<Cluster> {
  if (backend === "vxlan-routed") return Cluster.create({ nodes: 2, podsPerNode: 1, backend: "vxlan", podWiring: "routed", agentArgs, ipv6 });
  if (backend !== "direct") return Cluster.create({ nodes: 2, podsPerNode: 1, backend, agentArgs, ipv6 });
  // direct: no agent; routes and pods by hand.
  const c = await Cluster.create({ nodes: 2, podsPerNode: 1, manualNodes: [0, 1], ipv6 });
  for (const i of [0, 1]) {
    const n = c.node(i);
    n.subnet = parseCidr(`198.18.${i + 1}.0/24`);
    n.subnet6 = ipv6 ? parseCidr6(`2001:db8:1:${i + 1}::/64`) : undefined;
    await c.addPods(n, n.subnet, 1500, n.subnet6);
    const other = c.node(1 - i);
    await n.ns.ip("route", "add", `198.18.${2 - i}.0/24`, "via", formatIpv4(other.underlay), "dev", "eth0");
    if (ipv6 && other.underlay6 !== undefined) await n.ns.ip("-6", "route", "add", `2001:db8:1:${2 - i}::/64`, "via", formatIpv6(other.underlay6), "dev", "eth0");
  }
  return c;
}

/**
 * What a backend's run silently lacks, read from its agents: the backend each
 * node actually runs (a different one fails the run: the figures would carry
 * the wrong name), ebpf programs attached with tc filters instead of tcx
 * links, tun offloads the kernel refused, and any warning the agents logged.
 * Each becomes a note printed with the results and listed in the JSON.
 */
export async function fallbacks(c: Cluster, backend: BenchBackend): Promise<string[]> {
  const notes: string[] = [];
  const want = agentBackend(backend);
  for (const n of c.nodes) {
    if (!n.agent) continue;
    const st = await c.status(n.index);
    if (st.backend !== want) throw new Error(`bench:dataplane: node ${n.index} runs the ${st.backend} backend, not ${want} (${st.backendChoice})`);
    for (const line of c.agentLog(n.index).split("\n")) {
      if (!line.startsWith("{")) continue;
      const o = JSON.parse(line) as { level?: number; msg?: string; offloads?: Record<string, boolean> };
      if (o.msg === "tun data path ready" && o.offloads) {
        const off = Object.entries(o.offloads).filter(([, on]) => !on).map(([k]) => k);
        if (off.length > 0) notes.push(`${backend}: node ${n.index} runs without the ${off.join(", ")} offload(s) (the slow path)`);
      } else if ((o.level ?? 0) >= 40) {
        notes.push(`${backend}: node ${n.index}'s agent warned: ${o.msg}`);
      }
    }
  }
  return [...new Set(notes)];
}
