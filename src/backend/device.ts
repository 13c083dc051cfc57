import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { run } from "../common/exec.js";
import { writeFileAtomic } from "../common/fs-atomic.js";
import { formatIpv4, formatMac, maskOf, parseIpv4, parseMac, type Ipv4Prefix } from "../common/ipv4.js";
import { ipJson } from "../common/iproute.js";
import { contains6, formatIpv6, parseIpv6, type Ipv6Prefix } from "../common/ipv6.js";
import type { NetworkConfig } from "../subnet/network-config.js";
import type { ExternalInterface } from "./types.js";

/**
 * What every backend's overlay device shares: the VXLAN overhead that sets
 * the pod MTU, the VTEP MAC kept in the state dir (one file per VNI, whichever
 * backend runs, so switching backends keeps the MAC other nodes know), and
 * the device as the kernel reports it, with our subnet's address on it.
 */

/** VXLAN header overhead on IPv4: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14. */
export const VXLAN_OVERHEAD = 50;
/** On an IPv6 underlay: outer IPv6 40 + UDP 8 + VXLAN 8 + inner Ethernet 14 (flannel's flannel-v6 MTU). */
export const VXLAN6_OVERHEAD = 70;

export interface LinkJson {
  ifindex: number;
  ifname: string;
  address?: string;
  mtu?: number;
  flags?: string[];
  linkinfo?: { info_kind?: string; info_data?: { id?: number; local?: string; local6?: string; link?: string; port?: number; learning?: boolean; external?: boolean } };
}

/** The device as the kernel has it, or undefined. */
export async function readDevice(name: string): Promise<LinkJson | undefined> {
  try {
    return (await ipJson<LinkJson>(["-details", "link", "show", "dev", name]))[0];
  } catch {
    return undefined;
  }
}

/** The VTEP MAC a backend kept in the state dir, if any. */
export function storedMac(path: string): Uint8Array | undefined {
  try {
    return parseMac(readFileSync(path, "utf8"));
  } catch {
    return undefined;
  }
}

/** A random locally administered unicast MAC. */
export function randomMac(): Uint8Array {
  const m = randomBytes(6);
  m[0] = ((m[0] ?? 0) & 0xfe) | 0x02;
  return new Uint8Array(m);
}

/** The file that keeps the VTEP MAC of VNI `vni` across restarts and backends (the IPv6 device's: `vtep-mac6.<vni>`). */
export function vtepMacFile(stateDir: string, vni: number, family: 4 | 6 = 4): string {
  return join(stateDir, `vtep-mac${family === 6 ? "6" : ""}.${vni}`);
}

/** The VTEP MAC this node used before for `vni`, else a new random one. */
export function knownVtepMac(stateDir: string, vni: number, family: 4 | 6 = 4): Uint8Array {
  return storedMac(vtepMacFile(stateDir, vni, family)) ?? randomMac();
}

/** The overlay device's MTU: the underlay's (or Backend.MTU) minus the VXLAN overhead of the underlay's family. */
export function deviceMtu(config: NetworkConfig, iface: ExternalInterface, family: 4 | 6 = 4): number {
  return (config.backend.mtu ?? iface.mtu) - (family === 6 ? VXLAN6_OVERHEAD : VXLAN_OVERHEAD);
}

/** Records the MAC the device got, for the next start. */
export function keepVtepMac(stateDir: string, vni: number, mac: Uint8Array, family: 4 | 6 = 4): void {
  writeFileAtomic(vtepMacFile(stateDir, vni, family), `${formatMac(mac)}\n`);
}

/**
 * Puts `<subnet network>/32` on the device, then removes other addresses of
 * the cluster network from it. In that order: removing a device's last
 * address makes the kernel flush the routes through it.
 */
export async function setDeviceAddress(name: string, subnet: Ipv4Prefix, network: Ipv4Prefix): Promise<void> {
  const want = formatIpv4(subnet.addr);
  await run(["ip", "addr", "replace", `${want}/32`, "dev", name]);
  const addrs = await ipJson<{ addr_info?: { family: string; local: string; prefixlen: number }[] }>(["addr", "show", "dev", name]);
  for (const a of addrs[0]?.addr_info ?? []) {
    if (a.family !== "inet" || (a.local === want && a.prefixlen === 32)) continue;
    const ip = parseIpv4(a.local);
    if (((ip & maskOf(network.len)) >>> 0) === network.addr) await run(["ip", "addr", "del", `${a.local}/${a.prefixlen}`, "dev", name]);
  }
}

/**
 * Puts `<IPv6 subnet network>/128` on the device (as flannel does on
 * flannel-v6.<VNI>, without duplicate address detection so it is usable at
 * once), then removes other addresses of the cluster's IPv6 network from it.
 */
export async function setDeviceAddress6(name: string, subnet: Ipv6Prefix, network: Ipv6Prefix): Promise<void> {
  const want = formatIpv6(subnet.addr);
  await run(["ip", "-6", "addr", "replace", `${want}/128`, "dev", name, "nodad"]);
  const addrs = await ipJson<{ addr_info?: { family: string; local: string; prefixlen: number }[] }>(["-6", "addr", "show", "dev", name]);
  for (const a of addrs[0]?.addr_info ?? []) {
    if (a.family !== "inet6" || (a.local === want && a.prefixlen === 128)) continue;
    let ip: bigint;
    try {
      ip = parseIpv6(a.local);
    } catch {
      continue;
    }
    if (contains6(network, ip)) await run(["ip", "-6", "addr", "del", `${a.local}/${a.prefixlen}`, "dev", name]);
  }
}
