import { formatIpv4, parseCidr } from "../common/ipv4.js";
import { formatIpv6, parseCidr6 } from "../common/ipv6.js";
import type { Cluster } from "./cluster.js";

/**
 * A node that runs no weft, programmed by hand exactly as flanneld programs a
 * vxlan node: device flannel.1, the subnet's /32, its lease in etcd in
 * flannel's JSON (a 24 h etcd lease, created only if absent), and per peer —
 * read with plain JSON.parse and flannel's field names — a permanent
 * neighbour, FDB entry and onlink route. With `ipv6`, as flanneld programs a
 * dual-stack node: also flannel-v6.1 over the IPv6 underlay (MTU underlay -
 * 70), the IPv6 subnet's /128, a key `<v4>-<len>&<v6>-<len>` with PublicIPv6
 * and BackendV6Data, and per peer with IPv6 the same three entries for IPv6.
 * With `ipv6Only`, only the IPv6 half (key 0.0.0.0-0&…, PublicIP 0.0.0.0, no
 * BackendData). Used by the interop, dual-stack and image tests and the soak; the caller
 * adds the node's pods.
 */
export const FLANNEL_MAC = "02:f1:a0:00:00:03";
export const FLANNEL_MAC6 = "02:f1:a0:00:00:06";
export const FLANNEL_SUBNET = "198.18.200.0/24";
export const FLANNEL_SUBNET6 = "2001:db8:1:c8::/64";

interface PeerAttrs {
  PublicIP: string;
  PublicIPv6: string | null;
  BackendType: string;
  BackendData?: { VNI: number; VtepMAC: string };
  BackendV6Data?: { VNI: number; VtepMAC: string };
}

export async function programFlannelNode(c: Cluster, i: number, opts: { ipv6?: boolean; ipv6Only?: boolean } = {}): Promise<void> {
  const reg = c.registry();
  const v4 = !opts.ipv6Only;
  const v6 = opts.ipv6 === true || opts.ipv6Only === true;
  try {
    const n = c.node(i);
    const pub = v4 ? formatIpv4(n.underlay) : "0.0.0.0";
    const pub6 = n.underlay6 === undefined ? null : formatIpv6(n.underlay6);
    if (v6 && !pub6) throw new Error(`node ${i} has no IPv6 underlay address (Cluster option ipv6)`);
    if (v4) {
      await n.ns.ip("link", "add", "flannel.1", "address", FLANNEL_MAC, "type", "vxlan", "id", "1", "local", pub, "dev", "eth0", "dstport", "8472", "nolearning");
      await n.ns.ip("link", "set", "flannel.1", "mtu", "1450", "up");
      await n.ns.ip("addr", "add", "198.18.200.0/32", "dev", "flannel.1");
    }
    if (v6 && pub6) {
      await n.ns.ip("link", "add", "flannel-v6.1", "address", FLANNEL_MAC6, "type", "vxlan", "id", "1", "local", pub6, "dev", "eth0", "dstport", "8472", "nolearning");
      await n.ns.ip("link", "set", "flannel-v6.1", "mtu", "1430", "up");
      await n.ns.ip("-6", "addr", "add", "2001:db8:1:c8::/128", "dev", "flannel-v6.1", "nodad");
    }
    const lease = await reg.grant(86400);
    const key = `/coreos.com/network/subnets/${v4 ? "198.18.200.0-24" : "0.0.0.0-0"}${v6 ? "&2001:db8:1:c8::-64" : ""}`;
    // Field for field as flannel's LeaseAttrs marshals (BackendData / BackendV6Data omitted when empty).
    const value = JSON.stringify({
      PublicIP: pub, PublicIPv6: v6 ? pub6 : null, BackendType: "vxlan",
      ...(v4 ? { BackendData: { VNI: 1, VtepMAC: FLANNEL_MAC } } : {}),
      ...(v6 ? { BackendV6Data: { VNI: 1, VtepMAC: FLANNEL_MAC6 } } : {}),
    });
    const txn = await reg.client.if(key, "Version", "==", 0).then(reg.client.put(key).value(value).lease(lease)).commit();
    if (!txn.succeeded) throw new Error(`${key} exists already`);
    const all = await reg.client.getAll().prefix("/coreos.com/network/subnets/").strings();
    for (const [k, val] of Object.entries(all)) {
      // flannel's subnetRegex: (\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$
      const m = /(\d+\.\d+\.\d+\.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$/.exec(k);
      const attrs = JSON.parse(val) as PeerAttrs;
      if (!m || k === key) continue;
      if (attrs.BackendType !== "vxlan") throw new Error(`${k}: backend ${attrs.BackendType}; a flannel vxlan node expects vxlan`);
      if (v4 && attrs.BackendData) {
        // What a flannel vxlan node needs of each peer's lease, as weft nodes write it.
        if (attrs.BackendData.VNI !== 1) throw new Error(`${k}: VNI ${attrs.BackendData.VNI}; a flannel vxlan node expects VNI 1`);
        await n.ns.ip("neigh", "replace", m[1]!, "lladdr", attrs.BackendData.VtepMAC, "dev", "flannel.1", "nud", "permanent");
        await n.ns.exec(["bridge", "fdb", "replace", attrs.BackendData.VtepMAC, "dev", "flannel.1", "dst", attrs.PublicIP, "self", "permanent"]);
        await n.ns.ip("route", "replace", `${m[1]}/${m[2]}`, "via", m[1]!, "dev", "flannel.1", "onlink");
      }
      if (v6 && m[3] && attrs.BackendV6Data && attrs.PublicIPv6) {
        if (attrs.BackendV6Data.VNI !== 1) throw new Error(`${k}: BackendV6Data.VNI ${attrs.BackendV6Data.VNI}; expected 1`);
        await n.ns.ip("-6", "neigh", "replace", m[3], "lladdr", attrs.BackendV6Data.VtepMAC, "dev", "flannel-v6.1", "nud", "permanent");
        await n.ns.exec(["bridge", "fdb", "replace", attrs.BackendV6Data.VtepMAC, "dev", "flannel-v6.1", "dst", attrs.PublicIPv6, "self", "permanent"]);
        await n.ns.ip("-6", "route", "replace", `${m[3]}/${m[4]}`, "via", m[3], "dev", "flannel-v6.1", "onlink");
      }
    }
    n.subnet = v4 ? parseCidr(FLANNEL_SUBNET) : undefined;
    n.subnet6 = v6 ? parseCidr6(FLANNEL_SUBNET6) : undefined;
  } finally {
    reg.close();
  }
}
