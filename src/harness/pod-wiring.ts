import { formatIpv4, type Ipv4Prefix } from "../common/ipv4.js";
import { formatIpv6, type Ipv6Prefix } from "../common/ipv6.js";
import { Netns, veth } from "./netns.js";

/**
 * How the harness wires a test pod to its node, for each family the node
 * has a subnet of (the CNI plugin does this for real pods): pods hang off a
 * cni0 bridge holding each family's gateway (the subnet's first address), or
 * ("routed") each pod has its addresses as /32 and /128 with the gateways on
 * the host side of its veth. IPv6 addresses go on without duplicate address
 * detection, so they are usable at once. Pod j of a node gets the subnet's
 * address + 2 + j in each family.
 */
export interface Pod {
  readonly ns: Netns;
  readonly node: number;
  /** IPv4 address; 0 in an IPv6-only cluster. */
  readonly addr: number;
  /** IPv6 address, when the cluster runs IPv6. */
  readonly addr6?: bigint | undefined;
}

export interface PodSubnets {
  readonly v4: Ipv4Prefix | undefined;
  readonly v6: Ipv6Prefix | undefined;
}

/** The node's cni0 bridge with the gateway of each family. */
export async function makeBridge(node: Netns, s: PodSubnets, mtu: number): Promise<void> {
  // A fixed MAC (as weft's CNI plugin gives its bridge): the lowest port's would change as pods come and go.
  await node.ip("link", "add", "cni0", "address", "02:00:c6:12:00:01", "type", "bridge");
  if (s.v4) await node.ip("addr", "add", `${formatIpv4(s.v4.addr + 1)}/${s.v4.len}`, "dev", "cni0");
  if (s.v6) await node.ip("-6", "addr", "add", `${formatIpv6(s.v6.addr + 1n)}/${s.v6.len}`, "dev", "cni0", "nodad");
  await node.ip("link", "set", "cni0", "mtu", String(mtu), "up");
}

/** Pod j on the bridge. */
export async function bridgedPod(node: Netns, index: number, j: number, tag: string, s: PodSubnets, mtu: number): Promise<Pod> {
  const ns = await Netns.create(`n${index}p${j}`, tag);
  await veth(ns, "eth0", node, `p${j}`);
  await node.ip("link", "set", `p${j}`, "master", "cni0", "mtu", String(mtu));
  await ns.ip("link", "set", "eth0", "mtu", String(mtu));
  const addr = s.v4 ? s.v4.addr + 2 + j : 0;
  if (s.v4) {
    await ns.ip("addr", "add", `${formatIpv4(addr)}/${s.v4.len}`, "dev", "eth0");
    await ns.ip("route", "add", "default", "via", formatIpv4(s.v4.addr + 1));
  }
  const addr6 = s.v6 ? s.v6.addr + 2n + BigInt(j) : undefined;
  if (s.v6 && addr6 !== undefined) {
    await ns.ip("-6", "addr", "add", `${formatIpv6(addr6)}/${s.v6.len}`, "dev", "eth0", "nodad");
    await ns.ip("-6", "route", "add", "default", "via", formatIpv6(s.v6.addr + 1n));
  }
  return { ns, node: index, addr, addr6 };
}

/** Pod j without a bridge: a host route per address, the gateways on the host side of its veth. */
export async function routedPod(node: Netns, index: number, j: number, tag: string, s: PodSubnets, mtu: number): Promise<Pod> {
  const ns = await Netns.create(`n${index}p${j}`, tag);
  await veth(ns, "eth0", node, `p${j}`);
  await node.ip("link", "set", `p${j}`, "mtu", String(mtu));
  await ns.ip("link", "set", "eth0", "mtu", String(mtu));
  const addr = s.v4 ? s.v4.addr + 2 + j : 0;
  if (s.v4) {
    const gw = formatIpv4(s.v4.addr + 1);
    await node.ip("addr", "add", `${gw}/32`, "dev", `p${j}`);
    await node.ip("route", "add", `${formatIpv4(addr)}/32`, "dev", `p${j}`, "src", gw);
    await ns.ip("addr", "add", `${formatIpv4(addr)}/32`, "dev", "eth0");
    await ns.ip("route", "add", gw, "dev", "eth0", "scope", "link");
    await ns.ip("route", "add", "default", "via", gw, "dev", "eth0");
  }
  const addr6 = s.v6 ? s.v6.addr + 2n + BigInt(j) : undefined;
  if (s.v6 && addr6 !== undefined) {
    const gw = formatIpv6(s.v6.addr + 1n);
    await node.ip("-6", "addr", "add", `${gw}/128`, "dev", `p${j}`, "nodad");
    await node.ip("-6", "route", "add", `${formatIpv6(addr6)}/128`, "dev", `p${j}`, "src", gw);
    await ns.ip("-6", "addr", "add", `${formatIpv6(addr6)}/128`, "dev", "eth0", "nodad");
    await ns.ip("-6", "route", "add", gw, "dev", "eth0");
    await ns.ip("-6", "route", "add", "default", "via", gw, "dev", "eth0");
  }
  return { ns, node: index, addr, addr6 };
}

/** An address of a pod in one family, as text (undefined when it has none). */
export function podAddress(p: Pod, family: 4 | 6): string | undefined {
  if (family === 6) return p.addr6 === undefined ? undefined : formatIpv6(p.addr6);
  return p.addr === 0 ? undefined : formatIpv4(p.addr);
}

/** One ping from a pod to `to` (either family's text); true when answered. */
export async function pingFrom(from: Pod, to: string, opts: { count?: number; waitSec?: number } = {}): Promise<boolean> {
  try {
    await from.ns.exec(["ping", "-c", String(opts.count ?? 1), "-W", String(opts.waitSec ?? 2), "-q", to]);
    return true;
  } catch {
    return false;
  }
}

/**
 * Every pod with an address of `family` pings every other one; the pairs
 * that failed, sorted. Throws with fewer than two such pods: there would be
 * no pair, and an empty list would pass.
 */
export async function pingPairs(all: readonly Pod[], family: 4 | 6): Promise<string[]> {
  const pods = all.filter((p) => podAddress(p, family) !== undefined);
  if (pods.length < 2) throw new Error(`pingAll: the cluster has ${pods.length} pod(s) with IPv${family}; at least two are needed for a pair`);
  const failed: string[] = [];
  const jobs: Promise<void>[] = [];
  for (const a of pods) {
    for (const b of pods) {
      if (a === b) continue;
      const from = podAddress(a, family) ?? "";
      const to = podAddress(b, family) ?? "";
      jobs.push(pingFrom(a, to).then((ok) => {
        if (!ok) failed.push(`${from} -> ${to}`);
      }));
    }
  }
  await Promise.all(jobs);
  return failed.sort();
}
