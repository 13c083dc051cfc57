import { formatIpv4, parseMac } from "../common/ipv4.js";
import type { Grant } from "../ipam/ipam.js";
import type { Allocation } from "../ipam/table.js";
import { hostIfName, linkExists, linkMac, podMac } from "./links.js";
import type { CniRequest } from "./request.js";
import { CNI_CODE, CniError, type CniResult } from "./spec.js";
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
    const { subnet, gateway } = grant.plan;
    const mac = podMac(a.ip);

    await host.links.ensureBridge(req.bridge, gateway, subnet.len, mtu);
    if (!linkExists(hostIf)) {
      await host.links.createVeth(hostIf, req.ifname, req.netns, mtu, mac, req.bridge);
      undo.push(() => host.links.deleteVeth(hostIf));
    }
    await host.links.configurePod(req.netns, req.ifname, `${formatIpv4(a.ip)}/${subnet.len}`, gateway);
    await host.addEndpoint({ ip: a.ip, ifname: hostIf, mac: parseMac(mac) });
    return result(req, grant, hostIf, mtu);
  } catch (e) {
    for (const u of undo.reverse()) await u().catch((err: Error) => host.log.warn({ err: err.message }, "cni: undoing part of a failed ADD failed"));
    throw e;
  }
}

function result(req: CniRequest, grant: Grant, hostIf: string, mtu: number): CniResult {
  const a = grant.allocation;
  const gw = formatIpv4(grant.plan.gateway);
  return {
    interfaces: [
      { name: req.bridge, mac: linkMac(req.bridge) },
      { name: hostIf, mac: linkMac(hostIf) },
      { name: req.ifname, mac: podMac(a.ip), mtu, sandbox: req.netns },
    ],
    ips: [{ address: `${formatIpv4(a.ip)}/${grant.plan.subnet.len}`, gateway: gw, interface: 2 }],
    routes: [{ dst: "0.0.0.0/0", gw }, ...grant.plan.routes.filter((r) => r.dst !== "0.0.0.0/0")],
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
  if (a) await host.removeEndpoint({ ip: a.ip });
  await host.links.deleteVeth(a?.hostIf || hostIfName(req.network, req.containerId, req.ifname));
  await host.ipam.release(req.network, req.containerId, req.ifname, "del");
}

/** Cleans up after an address released by GC or the reconciler (no DEL came). */
export async function cleanupReleased(host: CniHost, a: Allocation): Promise<void> {
  if (!a.hostIf) return;
  await host.removeEndpoint({ ip: a.ip });
  await host.links.deleteVeth(a.hostIf);
}

/** CHECK: the address is held, and the interfaces are as ADD left them. */
export async function cmdCheck(host: CniHost, req: CniRequest): Promise<void> {
  const a = checkAllocation(host, req);
  const fail = (why: string): never => {
    throw new CniError(CNI_CODE.CHECK_FAILED, `CHECK of ${req.containerId}/${req.ifname}: ${why}`);
  };
  const plan = host.ipam.boundSubnet;
  if (!plan) throw new CniError(CNI_CODE.TRY_AGAIN_LATER, "this node holds no subnet lease right now");
  const got = await host.links.inspect(a.hostIf, req.netns, req.ifname);
  if (!linkExists(a.hostIf)) fail(`the host end ${a.hostIf} is gone`);
  if (got.master !== req.bridge) fail(`the host end ${a.hostIf} is not on bridge ${req.bridge} (${got.master ?? "no bridge"})`);
  const want = `${formatIpv4(a.ip)}/${plan.len}`;
  if (!got.addrs.includes(want)) fail(`${req.ifname} in ${req.netns} does not carry ${want} (has ${got.addrs.join(", ") || "none"})`);
  const gw = formatIpv4(plan.addr + 1);
  if (got.defaultVia !== gw) fail(`the default route in ${req.netns} is not via ${gw} (${got.defaultVia ?? "none"})`);
}

/** The address for an ADD (both plugins): the request as IPAM takes it; `hostIf` is "" for weft-ipam. */
export function allocateFor(host: CniHost, req: CniRequest, hostIf: string): Promise<Grant> {
  return host.ipam.allocate({
    network: req.network, containerId: req.containerId, ifname: req.ifname, netns: req.netns, hostIf,
    pod: { namespace: req.podNamespace, name: req.podName, labels: req.labels }, requested: req.requested, spec: req.ipam,
  }, req.ipamKey);
}

/** The attachment's allocation, matching prevResult when there is one. Shared by both plugins' CHECK. */
export function checkAllocation(host: CniHost, req: CniRequest): Allocation {
  const a = host.ipam.find(req.network, req.containerId, req.ifname);
  if (!a) throw new CniError(CNI_CODE.UNKNOWN_CONTAINER, `no address is allocated to ${req.containerId}/${req.ifname} on network ${req.network}`);
  const prev = req.prevResult?.ips ?? [];
  if (prev.length > 0 && !prev.includes(formatIpv4(a.ip))) {
    throw new CniError(CNI_CODE.CHECK_FAILED, `prevResult says ${prev.join(", ")} but ${req.containerId}/${req.ifname} holds ${formatIpv4(a.ip)}`);
  }
  return a;
}
