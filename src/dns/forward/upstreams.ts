import { readFileSync } from "node:fs";
import { isIPv4 } from "node:net";
import { ConfigError } from "../../common/errors.js";
import { formatHostPort, parseHostPort } from "../hostport.js";

export interface Upstream {
  readonly host: string;
  readonly port: number;
  /** "host:port" (IPv6 in brackets). */
  readonly label: string;
  /** Consecutive failures; two or more mark it down until a health check succeeds. */
  fails: number;
  /** A loop was detected through it: never used again. */
  loop: boolean;
}

export type Policy = "random" | "round_robin" | "sequential";

/**
 * Parses "198.51.100.1", "198.51.100.1:5353", "[2001:db8::53]:53" or a bare
 * "2001:db8::53" (see parseHostPort): the host is kept canonical, so that a
 * reply's source (as the socket reports it) is compared with the same text
 * however the address was written. Throws a ConfigError saying what is
 * wrong (an unclosed bracket, a bad port, a zone, multicast, ...).
 */
export function parseUpstream(text: string): Upstream {
  const { host, port } = parseHostPort(text, { what: "DNS upstream", role: "upstream" });
  return { host, port, label: formatHostPort(host, port), fails: 0, loop: false };
}

/**
 * Nameservers of a resolv.conf (what the node itself uses). A nameserver
 * that cannot be used (a link-local address with a zone, a name, garbage)
 * is left out and reported to `skipped` with the reason.
 */
export function upstreamsFromResolvConf(path = "/etc/resolv.conf", skipped: (nameserver: string, why: string) => void = () => undefined): Upstream[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(`cannot read ${path} for DNS upstreams: ${(e as Error).message}`, { hint: "give --dns-upstream" });
  }
  const out: Upstream[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!m) continue;
    try {
      // One address, no port (resolv.conf has none): brackets or a port are not resolv.conf syntax.
      if (/[[\]]/.test(m[1]!) || (m[1]!.split(":").length === 2)) throw new ConfigError(`"${m[1]!}" is not an address as resolv.conf writes one`);
      out.push(parseUpstream(m[1]!));
    } catch (e) {
      skipped(m[1]!, (e as Error).message);
    }
  }
  return out;
}

/**
 * Drops upstreams that are this server itself (a listen address, or any
 * address when we listen on 0.0.0.0 and the upstream is local): forwarding to
 * ourselves is a loop. Returns the kept ones and the dropped labels.
 */
export function withoutSelf(ups: Upstream[], listens: readonly { host: string; port: number }[], localAddrs: ReadonlySet<string>): { kept: Upstream[]; dropped: string[] } {
  const kept: Upstream[] = [];
  const dropped: string[] = [];
  for (const u of ups) {
    // A wildcard listen address takes its own family only (IPv6 sockets are IPv6-only).
    const self = listens.some((l) => l.port === u.port && (l.host === u.host
      || (l.host === "0.0.0.0" && isIPv4(u.host) && (localAddrs.has(u.host) || u.host.startsWith("127.")))
      || (l.host === "::" && !isIPv4(u.host) && (localAddrs.has(u.host) || u.host === "::1"))));
    if (self) dropped.push(u.label);
    else kept.push(u);
  }
  return { kept, dropped };
}

/** Picks upstreams in policy order: healthy ones first, then the rest (never loops). */
export class UpstreamSet {
  private rr = 0;

  constructor(readonly list: Upstream[], readonly policy: Policy) {}

  order(): Upstream[] {
    const usable = this.list.filter((u) => !u.loop);
    let base: Upstream[];
    if (this.policy === "sequential") base = usable;
    else if (this.policy === "round_robin") {
      const i = this.rr++ % Math.max(1, usable.length);
      base = [...usable.slice(i), ...usable.slice(0, i)];
    } else {
      base = [...usable];
      for (let i = base.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [base[i], base[j]] = [base[j]!, base[i]!];
      }
    }
    return [...base.filter((u) => u.fails < 2), ...base.filter((u) => u.fails >= 2)];
  }

  get healthy(): number {
    return this.list.filter((u) => !u.loop && u.fails < 2).length;
  }
}
