import { formatIpv4, parseMac } from "../common/ipv4.js";
import { formatIpv6 } from "../common/ipv6.js";
import type { Route } from "../ipam/config.js";
import type { Grant } from "../ipam/ipam.js";
import type { Allocation } from "../ipam/table.js";
import { addressText } from "../ipam/table.js";
import { hostIfName, linkExists, linkMac, podMac, type PodAddresses } from "./links.js";
import type { CniRequest } from "./request.js";
import { CNI_CODE, CniError, type CniIpConfig, type CniResult, type CniRoute } from "./spec.js";
import type { CniHost } from "./types.js";

/**
 * The weft main plugin: the pod's interface, address and routes, and its
 * registration with the data path. cmdAdd reads top to bottom; each step
 * that creates something pushes its undo, and a failure runs them in
 * reverse, so a failed ADD leaves nothing behind (not even the address).
 */

export async function cmdAdd(host: CniHost, req: CniRequest): Promise<CniResult> {
  if (req.prevResult) throw new CniError(CNI_CODE.INVALID_CONFIG, "the weft plugin creates the pod's interface: put it first in the plugin list (it got a prevResult)", undefined, "config");
  const why = host.notReady();
  if (why) throw new CniError(CNI_CODE.TRY_AGAIN_LATER, `the node's data path is not ready: ${why}`);
  const mtu = req.mtu ?? host.podMtu();
  if (!mtu) throw new CniError(CNI_CODE.TRY_AGAIN_LATER, "the node's subnet file has no MTU yet (the agent has not finished starting)");
  host.links.checkPodNetns(req.netns);
  const hostIf = hostIfName(req.network, req.containerId, req.ifname);
  const undo: (() => Promise<unknown>)[] = [];
  try {
    const grant = await allocateFor(host, req, hostIf);
    const a = grant.allocation;
    if (!grant.existed) undo.push(() => host.ipam.release(req.network, req.containerId, req.ifname, "rollback"));
    const addrs = podAddresses(grant);
    const mac = allocationMac(a);

    await host.links.ensureBridge(req.bridge, addrs, mtu);
    if (!linkExists(hostIf)) {
      await host.links.createVeth(hostIf, req.ifname, req.netns, mtu, mac, req.bridge);
      undo.push(() => host.links.deleteVeth(hostIf));
    }
    await host.links.configurePod(req.netns, req.ifname, addrs);
    await host.addEndpoint({ ip: a.ip, ...(a.ip6 === undefined ? {} : { ip6: a.ip6 }), ifname: hostIf, mac: parseMac(mac) });
    return result(req, grant, hostIf, mtu);
  } catch (e) {
    for (const u of undo.reverse()) await u().catch((err: Error) => host.log.warn({ err: err.message }, "cni: undoing part of a failed ADD failed"));
    throw e;
  }
}

/** The pod's addresses and gateways, per family the grant holds, as the kernel objects take them. */
export function podAddresses(grant: Grant): PodAddresses {
  const a = grant.allocation;
  const { plan, plan6 } = grant;
  return {
    v4: plan && a.ip !== undefined ? { ip: a.ip, len: plan.subnet.len, gateway: plan.gateway } : undefined,
    v6: plan6 && a.ip6 !== undefined ? { ip: a.ip6, len: plan6.subnet.len, gateway: plan6.gateway } : undefined,
  };
}

/** The pod end's MAC, from its IPv4 address (or the low 32 bits of its IPv6 one on an IPv6-only node). */
export function allocationMac(a: Pick<Allocation, "ip" | "ip6">): string {
  return podMac(a.ip ?? Number((a.ip6 ?? 0n) & 0xffffffffn));
}

/** The result's ips (IPv4 first) and routes: a default route per family via its gateway, then the ipam section's routes. */
export function resultAddresses(grant: Grant, iface: number | undefined): { ips: CniIpConfig[]; routes: CniRoute[] } {
  const { v4, v6 } = podAddresses(grant);
  const at = iface === undefined ? {} : { interface: iface };
  const ips: CniIpConfig[] = [];
  const routes: CniRoute[] = [];
  const extra = (rs: readonly Route[], dflt: string): CniRoute[] => rs.filter((r) => iface === undefined || r.dst !== dflt).map((r) => (r.gw === undefined ? { dst: r.dst } : { dst: r.dst, gw: r.gw }));
  if (v4) {
    const gw = formatIpv4(v4.gateway);
    ips.push({ address: `${formatIpv4(v4.ip)}/${v4.len}`, gateway: gw, ...at });
    if (iface !== undefined) routes.push({ dst: "0.0.0.0/0", gw });
    routes.push(...extra(grant.plan?.routes ?? [], "0.0.0.0/0"));
  }
  if (v6) {
    const gw = formatIpv6(v6.gateway);
    ips.push({ address: `${formatIpv6(v6.ip)}/${v6.len}`, gateway: gw, ...at });
    if (iface !== undefined) routes.push({ dst: "::/0", gw });
    routes.push(...extra(grant.plan6?.routes ?? [], "::/0"));
  }
  return { ips, routes };
}

function result(req: CniRequest, grant: Grant, hostIf: string, mtu: number): CniResult {
  return {
    interfaces: [
      { name: req.bridge, mac: linkMac(req.bridge) },
      { name: hostIf, mac: linkMac(hostIf) },
      { name: req.ifname, mac: allocationMac(grant.allocation), mtu, sandbox: req.netns },
    ],
    ...resultAddresses(grant, 2),
    ...(req.dns ? { dns: req.dns } : {}),
  };
}

/**
 * Removes the pod from the data path, deletes its veth, then releases the
 * address (in that order, so an address is free only once nothing uses it).
 * Every step tolerates what is already gone; the namespace may be too.
 */
export async function cmdDel(host: CniHost, req: CniRequest): Promise<void> {
  const a = host.ipam.find(req.network, req.containerId, req.ifname);
  if (a) await host.removeEndpoint(endpointKey(a));
  await host.links.deleteVeth(a?.hostIf || hostIfName(req.network, req.containerId, req.ifname));
  await host.ipam.release(req.network, req.containerId, req.ifname, "del");
}

function endpointKey(a: Allocation): { ip?: number; ip6?: bigint } {
  return { ...(a.ip === undefined ? {} : { ip: a.ip }), ...(a.ip6 === undefined ? {} : { ip6: a.ip6 }) };
}

/** Cleans up after an address released by GC or the reconciler (no DEL came). */
export async function cleanupReleased(host: CniHost, a: Allocation): Promise<void> {
  if (!a.hostIf) return;
  await host.removeEndpoint(endpointKey(a));
  await host.links.deleteVeth(a.hostIf);
}

/** CHECK: the address is held, and the interfaces are as ADD left them. */
export async function cmdCheck(host: CniHost, req: CniRequest): Promise<void> {
  const a = checkAllocation(host, req);
  const fail = (why: string): never => {
    throw new CniError(CNI_CODE.CHECK_FAILED, `CHECK of ${req.containerId}/${req.ifname}: ${why}`);
  };
  const plan = host.ipam.boundSubnet;
  const plan6 = host.ipam.boundSubnet6;
  if (!plan && !plan6) throw new CniError(CNI_CODE.TRY_AGAIN_LATER, "this node holds no subnet lease right now");
  const got = await host.links.inspect(a.hostIf, req.netns, req.ifname);
  if (!linkExists(a.hostIf)) fail(`the host end ${a.hostIf} is gone`);
  if (got.master !== req.bridge) fail(`the host end ${a.hostIf} is not on bridge ${req.bridge} (${got.master ?? "no bridge"})`);
  if (plan && a.ip !== undefined) {
    const want = `${formatIpv4(a.ip)}/${plan.len}`;
    if (!got.addrs.includes(want)) fail(`${req.ifname} in ${req.netns} does not carry ${want} (has ${got.addrs.join(", ") || "none"})`);
    const gw = formatIpv4(plan.addr + 1);
    if (got.defaultVia !== gw) fail(`the default route in ${req.netns} is not via ${gw} (${got.defaultVia ?? "none"})`);
  }
  if (plan6 && a.ip6 !== undefined) {
    const want = `${formatIpv6(a.ip6)}/${plan6.len}`;
    if (!got.addrs6.includes(want)) fail(`${req.ifname} in ${req.netns} does not carry ${want} (has ${got.addrs6.join(", ") || "no IPv6 address"})`);
    const gw = formatIpv6(plan6.addr + 1n);
    if (got.defaultVia6 !== gw) fail(`the IPv6 default route in ${req.netns} is not via ${gw} (${got.defaultVia6 ?? "none"})`);
  }
}

/** The address for an ADD (both plugins): the request as IPAM takes it; `hostIf` is "" for weft-ipam. */
export function allocateFor(host: CniHost, req: CniRequest, hostIf: string): Promise<Grant> {
  return host.ipam.allocate({
    network: req.network, containerId: req.containerId, ifname: req.ifname, netns: req.netns, hostIf,
    pod: { namespace: req.podNamespace, name: req.podName, labels: req.labels }, requested: req.requested, requested6: req.requested6, spec: req.ipam,
  }, req.ipamKey);
}

/** The attachment's allocation, matching prevResult when there is one. Shared by both plugins' CHECK. */
export function checkAllocation(host: CniHost, req: CniRequest): Allocation {
  const a = host.ipam.find(req.network, req.containerId, req.ifname);
  if (!a) throw new CniError(CNI_CODE.UNKNOWN_CONTAINER, `no address is allocated to ${req.containerId}/${req.ifname} on network ${req.network}`);
  const prev = req.prevResult?.ips ?? [];
  const holds = [a.ip === undefined ? "" : formatIpv4(a.ip), a.ip6 === undefined ? "" : formatIpv6(a.ip6)].filter(Boolean);
  if (prev.length > 0 && (holds.some((h) => !prev.includes(h)) || prev.some((p) => !holds.includes(p)))) {
    throw new CniError(CNI_CODE.CHECK_FAILED, `prevResult says ${prev.join(", ")} but ${req.containerId}/${req.ifname} holds ${addressText(a).replace(",", ", ")}`);
  }
  return a;
}
