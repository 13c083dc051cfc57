// Kernel objects of the ebpf backend: one collect_md ("external") VXLAN
// device that encapsulates with whatever tunnel key the programs set, the
// subnet's network address on it (the source of host traffic into the
// overlay, as on flannel's device), and one route for the whole cluster
// network through it (host traffic; the egress program picks the node).
import { formatCidr, formatIpv4, formatMac, parseMac, type Ipv4Prefix } from "../../common/ipv4.js";
import { run } from "../../common/exec.js";

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
