import { readFileSync } from "node:fs";
import { writeFileAtomic } from "../common/fs-atomic.js";
import { formatCidr, formatIpv4, parseCidr, type Ipv4Prefix } from "../common/ipv4.js";

/**
 * flannel's subnet.env, which CNI configs and scripts read:
 *   FLANNEL_NETWORK=198.18.0.0/16
 *   FLANNEL_SUBNET=198.18.5.1/24   (first usable address / subnet length)
 *   FLANNEL_MTU=1450
 *   FLANNEL_IPMASQ=false
 * Written atomically: a temporary file in the same directory, fsync, rename,
 * fsync of the directory, so a reader never sees half a file.
 */
export interface SubnetFile {
  readonly network: Ipv4Prefix;
  readonly subnet: Ipv4Prefix;
  readonly mtu: number;
  readonly ipMasq: boolean;
}

export function formatSubnetFile(f: SubnetFile): string {
  return [
    `FLANNEL_NETWORK=${formatCidr(f.network)}`,
    `FLANNEL_SUBNET=${formatIpv4(f.subnet.addr + 1)}/${f.subnet.len}`,
    `FLANNEL_MTU=${f.mtu}`,
    `FLANNEL_IPMASQ=${f.ipMasq}`,
    "",
  ].join("\n");
}

export function writeSubnetFile(path: string, f: SubnetFile): void {
  writeFileAtomic(path, formatSubnetFile(f));
}

/** The subnet recorded in an existing file (FLANNEL_SUBNET), or undefined. */
export function readPreviousSubnet(path: string): Ipv4Prefix | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
  const m = /^FLANNEL_SUBNET=(\S+)$/m.exec(text);
  if (!m?.[1]) return undefined;
  try {
    return parseCidr(m[1], { strict: false });
  } catch {
    return undefined;
  }
}
