import { readFileSync } from "node:fs";
import { join } from "node:path";
import { formatIpv4, parseIpv4 } from "../../src/common/ipv4.js";
import type { Cluster, Pod } from "../../src/harness/cluster.js";
import { Netns } from "../../src/harness/netns.js";
import { ServiceRegistry } from "../../src/registry/store.js";
import { spawnJson, type CniOut } from "../helpers/cni.js";

/**
 * The container runtime's side of CNI on a node of an image cluster: it reads
 * the conflist the DaemonSet's init container installed into the node's
 * /etc/cni/net.d, and execs the plugin it names from the node's /opt/cni/bin,
 * inside the node's namespace, with the node's /run/weft in place (so the
 * plugin finds the agent's socket where the conflist says), as CNI 1.1 says:
 * CNI_* in the environment, the plugin's config (with the list's cniVersion
 * and name) on stdin.
 */
export interface CniNode {
  /** The node's /etc/cni/net.d, /opt/cni/bin and /run/weft on this machine. */
  readonly confDir: string;
  readonly binDir: string;
  readonly runDir: string;
  readonly nodeNs: string;
}

export type CniResult = CniOut;

const NODE_EXEC = join(import.meta.dirname, "node-exec.mjs");

/** The installed conflist (the file the init container wrote). */
export function conflist(n: CniNode, file = "10-weft.conflist"): { cniVersion: string; name: string; plugins: Record<string, unknown>[] } {
  return JSON.parse(readFileSync(join(n.confDir, file), "utf8")) as { cniVersion: string; name: string; plugins: Record<string, unknown>[] };
}

/** Execs the conflist's (only) plugin with `command` for a container. */
export function execCni(n: CniNode, command: string, containerId: string, netns: string, ifname = "eth0"): Promise<CniResult> {
  const list = conflist(n);
  const plugin = list.plugins[0];
  if (!plugin || list.plugins.length !== 1) throw new Error(`${n.confDir}: expected one plugin in the conflist, found ${list.plugins.length}`);
  const conf = { ...plugin, cniVersion: list.cniVersion, name: list.name };
  const env = {
    PATH: process.env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin", CNI_COMMAND: command, CNI_CONTAINERID: containerId, CNI_NETNS: netns,
    CNI_IFNAME: ifname, CNI_PATH: n.binDir, CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + containerId,
  };
  const argv = ["ip", "netns", "exec", n.nodeNs, process.execPath, NODE_EXEC, `${n.runDir}:/run/weft`, "--", join(n.binDir, String(plugin["type"]))];
  return spawnJson(argv, env, JSON.stringify(conf));
}

/** A pod on node i through the installed plugin: a fresh namespace, CNI ADD; added to the node's pods. */
export async function addPod(c: Cluster, n: CniNode, i: number, name: string): Promise<Pod> {
  const ns = await Netns.create(`n${i}${name}`, c.tag);
  const r = await execCni(n, "ADD", `${c.tag}-${name}`, `/run/netns/${ns.name}`);
  const ips = (r.json?.["ips"] ?? []) as { address: string }[];
  const addr = ips[0]?.address;
  if (r.exit !== 0 || !addr) {
    await ns.destroy();
    throw new Error(`CNI ADD of ${name} on node ${i} failed (exit ${r.exit}): ${r.stdout} ${r.stderr}`);
  }
  const pod = { ns, node: i, addr: parseIpv4(addr.split("/")[0]!) };
  c.node(i).pods.push(pod);
  return pod;
}

/** Every pod of the cluster as an endpoint `pod-<k>` of the headless service default/pods, so each resolves by name. */
export async function publishPods(c: Cluster): Promise<void> {
  const reg = new ServiceRegistry({ endpoints: [c.etcd.localEndpoint] });
  try {
    await reg.putService("default", "pods", { type: "Headless", clusterIPs: [], ports: [], publishNotReadyAddresses: false });
    for (const [k, p] of c.pods.entries()) {
      await reg.putEndpoint("default", "pods", `pod-${k}`, { addresses: [formatIpv4(p.addr)], hostname: `pod-${k}`, ready: true, nodeName: `n${p.node}`, ports: [] });
    }
  } finally {
    reg.close();
  }
}
