import { ConfigError } from "../common/errors.js";
import { formatIpv4, parseIpv4 } from "../common/ipv4.js";
import type { ExternalInterface } from "../backend/types.js";
import { ipJson } from "../common/iproute.js";

interface AddrJson {
  ifindex: number;
  ifname: string;
  mtu: number;
  addr_info?: { family: string; local: string; prefixlen: number; scope?: string }[];
}

/**
 * The underlay interface, chosen as flanneld does: --iface by name or by
 * address; else the interface of the default route; else the one holding
 * --public-ip. The VXLAN source address is the address --iface named, else
 * --public-ip if the interface has it, else its first global IPv4 address;
 * --public-ip (if given) is what other nodes send to.
 */
export async function chooseInterface(opts: { iface?: string | undefined; publicIp?: string | undefined }): Promise<ExternalInterface> {
  const links = await ipJson<AddrJson>(["addr", "show"]);
  const v4 = (l: AddrJson) => (l.addr_info ?? []).filter((a) => a.family === "inet" && a.scope !== "host");
  let link: AddrJson | undefined;
  if (opts.iface) {
    const want = opts.iface;
    link = links.find((l) => l.ifname === want) ?? links.find((l) => v4(l).some((a) => a.local === want));
    if (!link) {
      throw new ConfigError(`--iface ${want}: no interface has that name or address`, {
        hint: `interfaces here: ${links.map((l) => l.ifname).join(", ")}`,
      });
    }
  } else {
    const routes = await ipJson<{ dev?: string }>(["route", "show", "default"]);
    const dev = routes[0]?.dev;
    link = links.find((l) => l.ifname === dev);
    if (!link && opts.publicIp) link = links.find((l) => v4(l).some((a) => a.local === opts.publicIp));
    if (!link) throw new ConfigError("no default route to pick the underlay interface from", { hint: "pass --iface <name or address>" });
  }
  // The VXLAN source address: the one --iface named, else --public-ip when the interface has it (as
  // flanneld does: peers that check the outer source, as the ebpf backend does, see the lease's
  // address), else the interface's first.
  const addrs = v4(link);
  const a = addrs.find((x) => x.local === opts.iface) ?? addrs.find((x) => x.local === opts.publicIp) ?? addrs[0];
  if (!a) throw new ConfigError(`interface ${link.ifname} has no IPv4 address`, { hint: "give it one, or choose another with --iface" });
  const addr = parseIpv4(a.local);
  const publicIp = opts.publicIp ? parseIpv4(opts.publicIp) : addr;
  if (publicIp === 0) throw new ConfigError(`--public-ip ${formatIpv4(publicIp)} is not usable`);
  return { name: link.ifname, index: link.ifindex, addr, prefixLen: a.prefixlen, publicIp, mtu: link.mtu };
}
