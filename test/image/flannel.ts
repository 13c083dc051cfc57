import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseIpv4 } from "../../src/common/ipv4.js";
import type { Cluster, Pod } from "../../src/harness/cluster.js";
import { Netns } from "../../src/harness/netns.js";
import { FLANNEL_SUBNET, programFlannelNode } from "../helpers/flannel-node.js";

/**
 * A node that runs no weft, programmed by hand as flanneld programs a vxlan
 * node (test/helpers/flannel-node.ts, shared with the interop tests). Its pods come from Debian's `bridge` plugin with
 * `host-local` IPAM, the delegation flannel's CNI plugin makes.
 */
export { programFlannelNode };
export { FLANNEL_SUBNET };

/** A pod on the flannel node: Debian's bridge + host-local, as flannel's CNI plugin delegates. */
export async function addFlannelPod(c: Cluster, i: number, name: string): Promise<Pod> {
  const n = c.node(i);
  const ns = await Netns.create(`n${i}${name}`, c.tag);
  const dataDir = join(n.dir, "host-local");
  mkdirSync(dataDir, { recursive: true });
  const conf = {
    cniVersion: "1.0.0", name: "cbr0", type: "bridge", bridge: "cni0", mtu: 1450, isDefaultGateway: true, hairpinMode: true,
    ipam: { type: "host-local", ranges: [[{ subnet: FLANNEL_SUBNET }]], dataDir },
  };
  const env = {
    PATH: process.env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin", CNI_COMMAND: "ADD", CNI_CONTAINERID: `${c.tag}-${name}`,
    CNI_NETNS: `/run/netns/${ns.name}`, CNI_IFNAME: "eth0", CNI_PATH: "/usr/lib/cni",
  };
  const out = await new Promise<string>((resolve, reject) => {
    const p = spawn("ip", ["netns", "exec", n.ns.name, "/usr/lib/cni/bridge"], { env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    p.on("error", reject);
    p.on("close", (code) => (code === 0 ? resolve(stdout) : reject(new Error(`bridge ADD failed (exit ${code}): ${stdout} ${stderr}`))));
    p.stdin.end(JSON.stringify(conf));
  });
  const addr = (JSON.parse(out) as { ips: { address: string }[] }).ips[0]?.address ?? "";
  const pod = { ns, node: i, addr: parseIpv4(addr.split("/")[0]!) };
  n.pods.push(pod);
  return pod;
}
