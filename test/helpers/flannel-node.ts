import { formatIpv4, parseCidr } from "../../src/common/ipv4.js";
import type { Cluster } from "../../src/harness/cluster.js";

/**
 * A node that runs no weft, programmed by hand exactly as flanneld programs a
 * vxlan node: device flannel.1, the subnet's /32, its lease in etcd in
 * flannel's JSON (a 24 h etcd lease, created only if absent), and per peer —
 * read with plain JSON.parse and flannel's field names — a permanent
 * neighbour, FDB entry and onlink route. Used by the interop tests and the
 * image tests; the caller adds the node's pods.
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
      const attrs = JSON.parse(v) as { PublicIP: string; BackendType: string; BackendData: { VNI: number; VtepMAC: string } };
      if (!m || attrs.PublicIP === pub) continue;
      // What a flannel vxlan node needs of each peer's lease, as weft nodes write it.
      if (attrs.BackendType !== "vxlan" || attrs.BackendData.VNI !== 1) throw new Error(`${k}: backend ${attrs.BackendType}, VNI ${attrs.BackendData.VNI}; a flannel vxlan node expects vxlan and VNI 1`);
      await n.ns.ip("neigh", "replace", m[1]!, "lladdr", attrs.BackendData.VtepMAC, "dev", "flannel.1", "nud", "permanent");
      await n.ns.exec(["bridge", "fdb", "replace", attrs.BackendData.VtepMAC, "dev", "flannel.1", "dst", attrs.PublicIP, "self", "permanent"]);
      await n.ns.ip("route", "replace", `${m[1]}/${m[2]}`, "via", m[1]!, "dev", "flannel.1", "onlink");
    }
    n.subnet = parseCidr(FLANNEL_SUBNET);
  } finally {
    reg.close();
  }
}
