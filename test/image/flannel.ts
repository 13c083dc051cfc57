import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { formatIpv4, parseCidr, parseIpv4 } from "../../src/common/ipv4.js";
import type { Cluster, Pod } from "../../src/harness/cluster.js";
import { Netns } from "../../src/harness/netns.js";

/**
 * A node that runs no weft, programmed by hand as flanneld programs a vxlan
 * node (as test/cluster/interop.test.ts does): device flannel.1, the subnet's
 * /32, its lease in flannel's JSON, and per peer a permanent neighbour, FDB
 * entry and onlink route. Its pods come from Debian's `bridge` plugin with
 * `host-local` IPAM, the delegation flannel's CNI plugin makes.
 */
export const FLANNEL_MAC = "02:f1:a0:00:00:03";
export const FLANNEL_SUBNET = "198.18.200.0/24";

export async function programFlannelNode(c: Cluster, i: number): Promise<void> {
  const reg = c.registry();
  try {
    const n = c.node(i);
    const pub = formatIpv4(n.underlay);
    await n.ns.ip("link", "add", "flannel.1", "address", FLANNEL_MAC, "type", "vxlan", "id", "1", "local", pub, "dev", "eth0", "dstport", "8472", "nolearning");
    await n.ns.ip("link", "set", "flannel.1", "mtu", "1450", "up");
    await n.ns.ip("addr", "add", "198.18.200.0/32", "dev", "flannel.1");
    const lease = await reg.grant(86400);
    const key = "/coreos.com/network/subnets/198.18.200.0-24";
    const value = JSON.stringify({ PublicIP: pub, PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: FLANNEL_MAC } });
    const txn = await reg.client.if(key, "Version", "==", 0).then(reg.client.put(key).value(value).lease(lease)).commit();
    if (!txn.succeeded) throw new Error(`${key} exists already`);
    const all = await reg.client.getAll().prefix("/coreos.com/network/subnets/").strings();
    for (const [k, v] of Object.entries(all)) {
      const m = /(\d+\.\d+\.\d+\.\d+)-(\d+)$/.exec(k);
      const attrs = JSON.parse(v) as { PublicIP: string; BackendData: { VtepMAC: string } };
      if (!m || attrs.PublicIP === pub) continue;
      await n.ns.ip("neigh", "replace", m[1]!, "lladdr", attrs.BackendData.VtepMAC, "dev", "flannel.1", "nud", "permanent");
      await n.ns.exec(["bridge", "fdb", "replace", attrs.BackendData.VtepMAC, "dev", "flannel.1", "dst", attrs.PublicIP, "self", "permanent"]);
      await n.ns.ip("route", "replace", `${m[1]}/${m[2]}`, "via", m[1]!, "dev", "flannel.1", "onlink");
    }
    n.subnet = parseCidr(FLANNEL_SUBNET);
  } finally {
    reg.close();
  }
}

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
