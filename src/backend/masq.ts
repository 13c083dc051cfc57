import { formatCidr, type Ipv4Prefix } from "../common/ipv4.js";
import { run } from "../common/exec.js";

/**
 * --ip-masq: masquerade pod traffic that leaves the cluster network, with
 * flannel's rule set (pkg/trafficmngr, "flanneld masq") written as one
 * nftables table, replaced atomically in a single `nft -f` transaction.
 */
export const MASQ_TABLE = "weft";

export function masqRuleset(cluster: Ipv4Prefix, pod: Ipv4Prefix): string {
  const c = formatCidr(cluster);
  const p = formatCidr(pod);
  return [
    // Declaring then deleting makes the replacement work whether or not the table exists.
    `table ip ${MASQ_TABLE} {}`,
    `delete table ip ${MASQ_TABLE}`,
    `table ip ${MASQ_TABLE} {`,
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    "    meta mark & 0x4000 == 0x4000 return comment \"kube-proxy masquerades this\"",
    `    ip saddr ${p} ip daddr ${c} return comment "pod to cluster: no NAT"`,
    `    ip saddr ${c} ip daddr ${p} return comment "cluster to pod: no NAT"`,
    `    ip saddr != ${c} ip daddr ${p} return comment "outside to pod: no NAT"`,
    `    ip saddr ${c} ip daddr != 224.0.0.0/4 masquerade fully-random comment "cluster to outside"`,
    `    ip saddr != ${c} ip daddr ${c} masquerade fully-random comment "outside to cluster"`,
    "  }",
    "}",
    "",
  ].join("\n");
}

export async function applyMasq(cluster: Ipv4Prefix, pod: Ipv4Prefix): Promise<void> {
  await run(["nft", "-f", "-"], { input: masqRuleset(cluster, pod) });
}

export async function masqPresent(): Promise<boolean> {
  try {
    await run(["nft", "list", "table", "ip", MASQ_TABLE]);
    return true;
  } catch {
    return false;
  }
}

export async function removeMasq(): Promise<void> {
  await run(["nft", "delete", "table", "ip", MASQ_TABLE]).catch(() => undefined);
}
