import { isIPv4 } from "node:net";
import { ConfigError } from "../common/errors.js";
import { formatIpv4, parseIpv4 } from "../common/ipv4.js";
import { formatIpv6, parseIpv6 } from "../common/ipv6.js";

/** "198.51.100.1", "198.51.100.1:5353", "[2001:db8::1]:53", "2001:db8::1" → host and port (53 when absent). Not validated here. */
export function splitHostPort(text: string, defaultPort = 53): { host: string; port: number } {
  const t = text.trim();
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(t);
  if (v6) return { host: v6[1]!, port: v6[2] ? Number(v6[2]) : defaultPort };
  const parts = t.split(":");
  if (parts.length === 2) return { host: parts[0]!, port: Number(parts[1]) };
  return { host: t, port: defaultPort }; // an address without a port (IPv6 has more than one ":")
}

/** host:port, IPv6 in brackets. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** What a DNS address is for: the checks and the words of the errors differ. */
export interface HostPortUse {
  /** Names the input in errors, e.g. "DNS upstream" or "--dns-listen". */
  readonly what: string;
  /** "upstream": a unicast address to send to; "listen": an address of this node, :: and 0.0.0.0 allowed, port 0 allowed. */
  readonly role: "upstream" | "listen";
  readonly defaultPort?: number;
}

const EXAMPLES = { upstream: "198.51.100.1, 198.51.100.1:5353, [2001:db8::53]:53 or 2001:db8::53", listen: "169.254.20.10:53, [2001:db8::a]:53, [::]:53 or 0.0.0.0:53" } as const;

/**
 * Parses a DNS address strictly: IPv4 with an optional ":port", IPv6 in
 * brackets with an optional ":port" ("[2001:db8::53]:53"), or a bare IPv6
 * address (no port: every ":" belongs to the address). The host comes back
 * canonical — IPv6 as RFC 5952 text, an IPv4-mapped IPv6 address as its
 * IPv4 address — so it equals what a socket reports as a peer. Throws a
 * ConfigError that says what is wrong with the text and how to write it.
 */
export function parseHostPort(text: string, use: HostPortUse): { host: string; port: number } {
  const bad = (why: string): ConfigError => new ConfigError(`${use.what} "${text}": ${why}`, { hint: `write e.g. ${EXAMPLES[use.role]}` });
  const t = text.trim();
  if (t === "") throw bad("is empty");
  let hostText: string;
  let portText: string | undefined;
  let v6: boolean;
  if (t.startsWith("[")) {
    const close = t.indexOf("]");
    if (close < 0) throw bad('"[" without a closing "]"');
    hostText = t.slice(1, close);
    const rest = t.slice(close + 1);
    if (rest !== "" && !rest.startsWith(":")) throw bad(`"${rest}" after "]": only ":<port>" may follow the address`);
    if (rest !== "") portText = rest.slice(1);
    if (isIPv4(hostText)) throw bad("an IPv4 address in brackets: brackets are for IPv6 only");
    v6 = true;
  } else if (t.includes("]")) {
    throw bad('"]" without an opening "["');
  } else if (t.split(":").length > 2) {
    hostText = t;
    v6 = true;
  } else {
    const colon = t.indexOf(":");
    hostText = colon < 0 ? t : t.slice(0, colon);
    if (colon >= 0) portText = t.slice(colon + 1);
    v6 = false;
  }
  let port = use.defaultPort ?? 53;
  if (portText !== undefined) {
    const min = use.role === "listen" ? 0 : 1;
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < min || Number(portText) > 65535) throw bad(`port "${portText}" is not a number ${min}-65535`);
    port = Number(portText);
  }
  if (!v6) {
    let a: number;
    try {
      a = parseIpv4(hostText);
    } catch {
      throw bad(`"${hostText}" is not an IPv4 address (a host name is not accepted; IPv6 goes in brackets when a port follows)`);
    }
    return { host: checkV4(a, use, bad), port };
  }
  if (hostText.includes("%")) throw bad("a zone (%interface) is not supported: use a global or unique-local IPv6 address");
  let a: bigint;
  try {
    a = parseIpv6(hostText);
  } catch (e) {
    const why = (e as Error).message.replace(/ \(write it.*\)$/, "");
    throw bad(portText === undefined && !t.startsWith("[") ? `${why} (an IPv6 address with a port is written [address]:port)` : why);
  }
  if (a >> 32n === 0xffffn) return { host: checkV4(Number(a & 0xffffffffn), use, bad), port };
  if (a >> 120n === 0xffn) throw bad("a multicast address");
  if (a >> 118n === 0x3fan) throw bad("a link-local address needs an interface, which is not supported here: use a global or unique-local address");
  if (a === 0n && use.role === "upstream") throw bad(":: (unspecified) is not an address to send to");
  return { host: formatIpv6(a), port };
}

function checkV4(a: number, use: HostPortUse, bad: (why: string) => ConfigError): string {
  if (a >>> 28 === 0xe) throw bad("a multicast address");
  if (use.role === "upstream" && (a === 0 || a === 0xffffffff)) throw bad(`${formatIpv4(a)} is not an address to send to`);
  return formatIpv4(a);
}
