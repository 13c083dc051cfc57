import { readFileSync } from "node:fs";
import { ConfigError } from "../common/errors.js";
import { formatIpv4, parseIpv4 } from "../common/ipv4.js";
import { isUnicastIpv6, parseIpv6 } from "../common/ipv6.js";
import type { ExternalInterface } from "../backend/types.js";
import { ipJson } from "../common/iproute.js";

interface AddrJson {
  ifindex: number;
  ifname: string;
  mtu: number;
  addr_info?: { family: string; local: string; prefixlen: number; scope?: string; tentative?: boolean; deprecated?: boolean; dadfailed?: boolean }[];
}

/**
 * The underlay interface, chosen as flanneld does: --iface by name or by
 * address; else the interface of the default route; else the one holding
 * --public-ip. The VXLAN source address is the address --iface named, else
 * --public-ip if the interface has it, else its first global IPv4 address;
 * --public-ip (if given) is what other nodes send to. IPv6 alike: the
 * IPv6 address --iface named, else --public-ipv6 when the interface has it,
 * else its first global one (neither deprecated nor failed DAD);
 * --public-ipv6 (if given) is what other nodes send to over IPv6. An
 * interface without IPv4 is accepted here (addr 0): whether the network
 * needs each family is known only once its config is read (requireFamilies).
 */
export async function chooseInterface(opts: { iface?: string | undefined; publicIp?: string | undefined; publicIpv6?: string | undefined }): Promise<ExternalInterface> {
  const links = await ipJson<AddrJson>(["addr", "show"]);
  const v4 = (l: AddrJson) => (l.addr_info ?? []).filter((a) => a.family === "inet" && a.scope !== "host");
  const v6 = (l: AddrJson) => (l.addr_info ?? []).filter((a) => a.family === "inet6" && a.scope === "global" && !a.deprecated && !a.dadfailed);
  const has = (l: AddrJson, want: string): boolean => [...v4(l), ...v6(l)].some((a) => a.local === want || sameIpv6(a.local, want));
  let link: AddrJson | undefined;
  if (opts.iface) {
    const want = opts.iface;
    link = links.find((l) => l.ifname === want) ?? links.find((l) => has(l, want));
    if (!link) {
      throw new ConfigError(`--iface ${want}: no interface has that name or address`, {
        hint: `interfaces here: ${links.map((l) => l.ifname).join(", ")}`,
      });
    }
  } else {
    const routes = await ipJson<{ dev?: string }>(["route", "show", "default"]);
    const routes6 = routes[0]?.dev ? [] : await ipJson<{ dev?: string }>(["-6", "route", "show", "default"]);
    const dev = routes[0]?.dev ?? routes6[0]?.dev;
    link = links.find((l) => l.ifname === dev);
    for (const p of [opts.publicIp, opts.publicIpv6]) if (!link && p) link = links.find((l) => has(l, p));
    if (!link) throw new ConfigError("no default route to pick the underlay interface from", { hint: "pass --iface <name or address>" });
  }
  // The VXLAN source address: the one --iface named, else --public-ip when the interface has it (as
  // flanneld does: peers that check the outer source, as the ebpf backend does, see the lease's
  // address), else the interface's first.
  const addrs = v4(link);
  const a = addrs.find((x) => x.local === opts.iface) ?? addrs.find((x) => x.local === opts.publicIp) ?? addrs[0];
  const addr = a ? parseIpv4(a.local) : 0;
  const publicIp = opts.publicIp ? parseIpv4(opts.publicIp) : addr;
  if (opts.publicIp && publicIp === 0) throw new ConfigError(`--public-ip ${formatIpv4(publicIp)} is not usable`);
  const addrs6 = v6(link);
  const a6 = addrs6.find((x) => opts.iface !== undefined && sameIpv6(x.local, opts.iface)) ??
    addrs6.find((x) => opts.publicIpv6 !== undefined && sameIpv6(x.local, opts.publicIpv6)) ?? addrs6[0];
  const addr6 = a6 ? parseIpv6(a6.local) : undefined;
  let publicIpv6 = addr6;
  if (opts.publicIpv6 !== undefined) {
    publicIpv6 = parseIpv6(opts.publicIpv6);
    if (!isUnicastIpv6(publicIpv6)) throw new ConfigError(`--public-ipv6 ${opts.publicIpv6} is not a global or unique-local unicast address`);
  }
  return { name: link.ifname, index: link.ifindex, addr, prefixLen: a?.prefixlen ?? 0, publicIp, addr6, publicIpv6, mtu: link.mtu };
}

/** Whether the interface has what the network needs: an IPv4 address when it runs IPv4, an IPv6 one when it runs IPv6. */
export function requireFamilies(iface: ExternalInterface, c: { enableIpv4: boolean; ipv6?: unknown }): void {
  if (c.enableIpv4 && iface.publicIp === 0) {
    throw new ConfigError(`the network runs IPv4 but interface ${iface.name} has no IPv4 address`, { hint: "give it one, pass --public-ip, or choose another interface with --iface" });
  }
  if (c.ipv6 !== undefined && (iface.addr6 === undefined || iface.publicIpv6 === undefined)) {
    throw new ConfigError(`the network runs IPv6 (EnableIPv6) but interface ${iface.name} has no global IPv6 address`, {
      hint: "give it one (and --public-ipv6 if peers must reach another), or choose another interface with --iface",
    });
  }
}

/** Two IPv6 texts naming the same address (false when either is not IPv6). */
function sameIpv6(a: string, b: string): boolean {
  try {
    return parseIpv6(a) === parseIpv6(b);
  } catch {
    return false;
  }
}

/**
 * Forwarding the node must do for its pods, as the kernel has it (flannel
 * leaves it to the administrator too): one entry per family the network runs
 * whose forwarding is off, with the fix.
 */
export function forwardingProblems(c: { enableIpv4: boolean; ipv6?: unknown }, read: (path: string) => string = (p) => readFileSync(p, "utf8")): { problem: string; fix: string }[] {
  const out: { problem: string; fix: string }[] = [];
  const off = (path: string): boolean => {
    try {
      return read(path).trim() === "0";
    } catch {
      return false; // no such file: not Linux, or no IPv6 at all (then the device set-up says so)
    }
  };
  if (c.enableIpv4 && off("/proc/sys/net/ipv4/ip_forward")) out.push({ problem: "IPv4 forwarding is off: pods cannot reach other nodes", fix: "sysctl -w net.ipv4.ip_forward=1" });
  if (c.ipv6 !== undefined && off("/proc/sys/net/ipv6/conf/all/forwarding")) {
    out.push({ problem: "IPv6 forwarding is off: pods cannot reach other nodes over IPv6", fix: "sysctl -w net.ipv6.conf.all.forwarding=1" });
  }
  return out;
}
