import { isIPv4 } from "node:net";
import { ConfigError } from "../../common/errors.js";
import { formatCidr, parseCidr, parseIpv4, type Ipv4Prefix } from "../../common/ipv4.js";
import { contains6, formatCidr6, parseCidr6, parseIpv6, type Ipv6Prefix } from "../../common/ipv6.js";

/**
 * One allowed client prefix as given (--dns-allow): IPv4 "192.0.2.0/24" or
 * IPv6 "2001:db8:42::/64", host bits set refused; canonical text back.
 * Throws a ConfigError naming the entry and what is wrong with it.
 */
export function parseAllowPrefix(text: string, what = "--dns-allow"): string {
  const t = text.trim();
  try {
    return t.includes(":") ? formatCidr6(parseCidr6(t)) : formatCidr(parseCidr(t));
  } catch (e) {
    throw new ConfigError(`${what} "${text}": ${(e as Error).message}`, { hint: "give prefixes such as 192.0.2.0/24 or 2001:db8:42::/64, comma-separated" });
  }
}

/**
 * Which clients get answers: the cluster network, the node's own addresses,
 * loopback and any extra prefixes (no open resolver), IPv4 and IPv6 alike
 * (an IPv6 client: ::1, the node's own addresses, or an IPv6 prefix given,
 * e.g. the cluster's IPv6 network; "::/0" opens IPv6). Prefix decisions
 * are cached per address string (bounded).
 */
export class ClientAcl {
  private readonly v4: Ipv4Prefix[];
  private readonly v6: Ipv6Prefix[];
  private readonly seen = new Map<string, boolean>();

  constructor(prefixes: readonly string[], private readonly localAddrs: () => ReadonlySet<string>) {
    this.v4 = [parseCidr("127.0.0.0/8"), ...prefixes.filter((p) => !p.includes(":")).map((p) => parseCidr(p))];
    this.v6 = prefixes.filter((p) => p.includes(":")).map((p) => parseCidr6(p, { strict: false }));
  }

  /** An IPv4 client as a host-order number (the batch path). */
  allowsV4(a: number): boolean {
    const v = a >>> 0;
    if (v >>> 24 === 127) return true;
    for (const p of this.v4) if (p.len === 0 || (v >>> (32 - p.len)) === (p.addr >>> (32 - p.len))) return true;
    return this.localAddrs().has(`${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`);
  }

  /**
   * The node's own addresses are asked every time (they change: the set is
   * refreshed by the caller); only the prefix decision is cached.
   */
  allows(raw: string): boolean {
    const addr = raw.startsWith("::ffff:") ? raw.slice(7) : raw;
    if (this.localAddrs().has(addr)) return true;
    const hit = this.seen.get(addr);
    if (hit !== undefined) return hit;
    const ok = this.decide(addr);
    if (this.seen.size > 10_000) this.seen.clear();
    this.seen.set(addr, ok);
    return ok;
  }

  private decide(addr: string): boolean {
    if (!isIPv4(addr)) {
      if (addr === "::1") return true;
      let a: bigint;
      try {
        a = parseIpv6(addr.replace(/%.*$/, "")); // a link-local client's zone says nothing about the prefix
      } catch {
        return false;
      }
      return this.v6.some((p) => contains6(p, a));
    }
    const a = parseIpv4(addr);
    return this.v4.some((p) => p.len === 0 || (a >>> (32 - p.len)) === (p.addr >>> (32 - p.len)));
  }
}
