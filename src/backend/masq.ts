import { formatCidr, type Ipv4Prefix } from "../common/ipv4.js";
import { formatCidr6, type Ipv6Prefix } from "../common/ipv6.js";
import { run } from "../common/exec.js";
import type { Lease } from "../subnet/lease.js";
import type { NetworkConfig } from "../subnet/network-config.js";

/**
 * --ip-masq: masquerade pod traffic that leaves the cluster network, with
 * flannel's rule set (pkg/trafficmngr, "flanneld masq") written as one
 * nftables table per family (`ip weft` and, on a network that runs IPv6,
 * `ip6 weft`, as flannel's ip6tables rules), replaced atomically in a
 * single `nft -f` transaction.
 */
export const MASQ_TABLE = "weft";

/** One family's table: `ip` with 224.0.0.0/4 as multicast, `ip6` with ff00::/8. */
function familyRuleset(family: "ip" | "ip6", c: string, p: string): string[] {
  const multicast = family === "ip" ? "224.0.0.0/4" : "ff00::/8";
  const f = family;
  return [
    // Declaring then deleting makes the replacement work whether or not the table exists.
    `table ${f} ${MASQ_TABLE} {}`,
    `delete table ${f} ${MASQ_TABLE}`,
    `table ${f} ${MASQ_TABLE} {`,
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    "    meta mark & 0x4000 == 0x4000 return comment \"kube-proxy masquerades this\"",
    `    ${f} saddr ${p} ${f} daddr ${c} return comment "pod to cluster: no NAT"`,
    `    ${f} saddr ${c} ${f} daddr ${p} return comment "cluster to pod: no NAT"`,
    `    ${f} saddr != ${c} ${f} daddr ${p} return comment "outside to pod: no NAT"`,
    `    ${f} saddr ${c} ${f} daddr != ${multicast} masquerade fully-random comment "cluster to outside"`,
    `    ${f} saddr != ${c} ${f} daddr ${c} masquerade fully-random comment "outside to cluster"`,
    "  }",
    "}",
  ];
}

export interface MasqScope {
  /** The IPv4 cluster network and this node's subnet; undefined on an IPv6-only network. */
  readonly v4?: { readonly cluster: Ipv4Prefix; readonly pod: Ipv4Prefix } | undefined;
  readonly v6?: { readonly cluster: Ipv6Prefix; readonly pod: Ipv6Prefix } | undefined;
}

export function masqRuleset(s: MasqScope): string {
  const lines: string[] = [];
  if (s.v4) lines.push(...familyRuleset("ip", formatCidr(s.v4.cluster), formatCidr(s.v4.pod)));
  if (s.v6) lines.push(...familyRuleset("ip6", formatCidr6(s.v6.cluster), formatCidr6(s.v6.pod)));
  return [...lines, ""].join("\n");
}

export async function applyMasq(s: MasqScope): Promise<void> {
  await run(["nft", "-f", "-"], { input: masqRuleset(s) });
}

/** Whether the table of `family` is in place. */
export async function masqPresent(family: "ip" | "ip6" = "ip"): Promise<boolean> {
  try {
    await run(["nft", "list", "table", family, MASQ_TABLE]);
    return true;
  } catch {
    return false;
  }
}

export async function removeMasq(): Promise<void> {
  await run(["nft", "delete", "table", "ip", MASQ_TABLE]).catch(() => undefined);
  await run(["nft", "delete", "table", "ip6", MASQ_TABLE]).catch(() => undefined);
}

/** What --ip-masq covers: each family the network runs, with this node's subnet of it. */
export function masqScope(cfg: NetworkConfig, l: Lease): MasqScope {
  return {
    v4: cfg.enableIpv4 ? { cluster: cfg.network, pod: l.subnet } : undefined,
    v6: cfg.ipv6 && l.subnet6 ? { cluster: cfg.ipv6.network, pod: l.subnet6 } : undefined,
  };
}
