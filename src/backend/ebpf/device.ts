// Kernel objects of the ebpf backend: one collect_md ("external") VXLAN
// device that encapsulates with whatever tunnel key the programs set (over
// IPv4 or IPv6: it listens on both), the subnet's network address on it (the
// source of host traffic into the overlay, as on flannel's device), and one
// route for the whole IPv4 cluster network through it, one per remote IPv6
// pod subnet (host traffic; the egress program picks the node).
import { formatCidr, formatIpv4, formatMac, parseMac, type Ipv4Prefix } from "../../common/ipv4.js";
import { formatCidr6, formatIpv6, parseCidr6, type Ipv6Prefix } from "../../common/ipv6.js";
import { run } from "../../common/exec.js";
import { batch, ipJson } from "../../common/iproute.js";

export async function deleteDevice(name: string): Promise<void> {
  await run(["ip", "link", "del", "dev", name]).catch(() => undefined);
}
import { readDevice, type LinkJson } from "../device.js";

export interface ExternalDeviceSpec {
  readonly name: string;
  readonly port: number;
  readonly mtu: number;
}

/** Why an existing device cannot be reused, or undefined. */
function unfit(link: LinkJson, spec: ExternalDeviceSpec): string | undefined {
  const d = link.linkinfo?.info_data;
  if (link.linkinfo?.info_kind !== "vxlan") return `it is a ${link.linkinfo?.info_kind ?? "non-vxlan"} device`;
  if (!d?.external) return "it is not a collect_md (external) device (the kernel vxlan backend made it)";
  if (d.port !== spec.port) return `its port is ${d.port}, not ${spec.port}`;
  return undefined;
}

/** Creates (or adopts, keeping its MAC) the device, ARP off, up. Returns its MAC, ifindex and whether it was created. */
export async function ensureExternalDevice(spec: ExternalDeviceSpec, mac: Uint8Array, onRecreate: (why: string) => void): Promise<{ mac: Uint8Array; ifindex: number; created: boolean }> {
  const existing = await readDevice(spec.name);
  const why = existing ? unfit(existing, spec) : "missing";
  if (existing && why) {
    onRecreate(why);
    await run(["ip", "link", "del", "dev", spec.name]);
  }
  let created = false;
  if (why) {
    await run(["ip", "link", "add", spec.name, "address", formatMac(mac), "mtu", String(spec.mtu), "type", "vxlan", "external", "dstport", String(spec.port)]);
    created = true;
  }
  try {
    // No ARP: the egress program writes the inner MACs; a host route through the device needs no neighbour.
    await run(["ip", "link", "set", "dev", spec.name, "mtu", String(spec.mtu), "arp", "off", "up"]);
    const now = await readDevice(spec.name);
    if (!now?.address) throw new Error(`${spec.name} vanished while it was being set up`);
    return { mac: parseMac(now.address), ifindex: now.ifindex, created };
  } catch (e) {
    if (created) await run(["ip", "link", "del", "dev", spec.name]).catch(() => undefined);
    throw e;
  }
}

/** The route that sends host traffic for other nodes' pods into the device. */
export async function setClusterRoute(dev: string, network: Ipv4Prefix, src: number): Promise<void> {
  await run(["ip", "route", "replace", formatCidr(network), "dev", dev, "src", formatIpv4(src)]);
}

/**
 * Puts `<subnet6 network>/128` on the device (as flannel's IPv6 device
 * has it; no DAD: the device does no neighbour discovery), then removes its
 * other global IPv6 addresses (a former lease's).
 */
export async function setDeviceAddress6(dev: string, subnet6: Ipv6Prefix): Promise<void> {
  const want = formatIpv6(subnet6.addr);
  await run(["ip", "-6", "addr", "replace", `${want}/128`, "dev", dev, "nodad"]);
  const addrs = await ipJson<{ addr_info?: { family: string; local: string; prefixlen: number; scope?: string }[] }>(["-6", "addr", "show", "dev", dev]);
  for (const a of addrs[0]?.addr_info ?? []) {
    if (a.family !== "inet6" || a.scope !== "global" || (a.local === want && a.prefixlen === 128)) continue;
    await run(["ip", "-6", "addr", "del", `${a.local}/${a.prefixlen}`, "dev", dev]);
  }
}

/** The IPv6 routes weft put through the device (protocol boot, `ip route replace`'s, which `ip -json` leaves out), not the kernel's own. */
export async function hostRoutes6(dev: string): Promise<Ipv6Prefix[]> {
  const routes = await ipJson<{ dst: string; protocol?: string }>(["-6", "route", "show", "dev", dev]);
  return routes.filter((r) => (r.protocol ?? "boot") === "boot" && r.dst.includes("/")).map((r) => parseCidr6(r.dst));
}

/** Routes host traffic for remote IPv6 pod subnets into the device (`add`) or stops (`del`), in one ip process. */
export async function setHostRoutes6(dev: string, add: readonly Ipv6Prefix[], del: readonly Ipv6Prefix[]): Promise<void> {
  const lines = [
    ...del.map((p) => `route del ${formatCidr6(p)} dev ${dev}`),
    ...add.map((p) => `route replace ${formatCidr6(p)} dev ${dev}`),
  ];
  const r = await batch("ip", lines);
  // A route already gone is what `del` wanted; any other failure is real.
  const real = r.failed.filter((f) => !(f.line < del.length && /No such process|No such file/.test(f.error)));
  if (real.length > 0) throw new Error(`routing IPv6 pod subnets into ${dev}: ${real.map((f) => `${lines[f.line] ?? "?"}: ${f.error}`).join("; ")}`);
}
