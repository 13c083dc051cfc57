import { readFileSync } from "node:fs";
import { writeFileAtomic } from "../common/fs-atomic.js";
import { formatCidr, formatIpv4, parseCidr, type Ipv4Prefix } from "../common/ipv4.js";
import { formatCidr6, formatIpv6, parseCidr6, type Ipv6Prefix } from "../common/ipv6.js";

/**
 * flannel's subnet.env, which CNI configs and scripts read, line for line as
 * flannel's WriteSubnetFile writes it:
 *   FLANNEL_NETWORK=198.18.0.0/16           (when the network runs IPv4)
 *   FLANNEL_SUBNET=198.18.5.1/24            (first usable address / subnet length)
 *   FLANNEL_IPV6_NETWORK=2001:db8:1::/56    (when it runs IPv6)
 *   FLANNEL_IPV6_SUBNET=2001:db8:1:5::1/64
 *   FLANNEL_MTU=1450
 *   FLANNEL_IPMASQ=false
 * Written atomically: a temporary file in the same directory, fsync, rename,
 * fsync of the directory, so a reader never sees half a file.
 */
export interface SubnetFile {
  /** The IPv4 half; undefined on an IPv6-only network. */
  readonly network: Ipv4Prefix | undefined;
  readonly subnet: Ipv4Prefix | undefined;
  /** The IPv6 half; undefined unless the network runs IPv6. */
  readonly network6?: Ipv6Prefix | undefined;
  readonly subnet6?: Ipv6Prefix | undefined;
  readonly mtu: number;
  readonly ipMasq: boolean;
}

export function formatSubnetFile(f: SubnetFile): string {
  const lines: string[] = [];
  if (f.network && f.subnet) lines.push(`FLANNEL_NETWORK=${formatCidr(f.network)}`, `FLANNEL_SUBNET=${formatIpv4(f.subnet.addr + 1)}/${f.subnet.len}`);
  if (f.network6 && f.subnet6) lines.push(`FLANNEL_IPV6_NETWORK=${formatCidr6(f.network6)}`, `FLANNEL_IPV6_SUBNET=${formatIpv6(f.subnet6.addr + 1n)}/${f.subnet6.len}`);
  lines.push(`FLANNEL_MTU=${f.mtu}`, `FLANNEL_IPMASQ=${f.ipMasq}`, "");
  return lines.join("\n");
}

export function writeSubnetFile(path: string, f: SubnetFile): void {
  writeFileAtomic(path, formatSubnetFile(f));
}

function read(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/** The subnet recorded in an existing file (FLANNEL_SUBNET), or undefined. */
export function readPreviousSubnet(path: string): Ipv4Prefix | undefined {
  const m = /^FLANNEL_SUBNET=(\S+)$/m.exec(read(path) ?? "");
  if (!m?.[1]) return undefined;
  try {
    return parseCidr(m[1], { strict: false });
  } catch {
    return undefined;
  }
}

/** The IPv6 subnet recorded in an existing file (FLANNEL_IPV6_SUBNET), or undefined. */
export function readPreviousSubnet6(path: string): Ipv6Prefix | undefined {
  const m = /^FLANNEL_IPV6_SUBNET=(\S+)$/m.exec(read(path) ?? "");
  if (!m?.[1]) return undefined;
  try {
    return parseCidr6(m[1], { strict: false });
  } catch {
    return undefined;
  }
}
