import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { ConfigError } from "../../common/errors.js";
import { formatHostPort, splitHostPort } from "../hostport.js";

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

/** Parses "198.51.100.1", "198.51.100.1:5353", "[2001:db8::1]:53". */
export function parseUpstream(text: string): Upstream {
  const { host, port } = splitHostPort(text);
  if (!isIP(host)) throw new ConfigError(`DNS upstream "${text}": "${host}" is not an IP address`, { hint: "write 198.51.100.1, 198.51.100.1:5353 or [2001:db8::1]:53" });
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigError(`DNS upstream "${text}": port must be 1-65535`);
  return { host, port, label: formatHostPort(host, port), fails: 0, loop: false };
}

/** Nameservers of a resolv.conf (what the node itself uses). */
export function upstreamsFromResolvConf(path = "/etc/resolv.conf"): Upstream[] {
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
    const host = m[1]!.replace(/%.*$/, ""); // a zone index (fe80::1%eth0) is not usable here
    if (isIP(host)) out.push(parseUpstream(host));
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
    const self = listens.some((l) => l.port === u.port && (l.host === u.host || ((l.host === "0.0.0.0" || l.host === "::") && (localAddrs.has(u.host) || u.host.startsWith("127.")))));
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
