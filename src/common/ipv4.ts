import { AddressError } from "./errors.js";

/**
 * IPv4 addresses are carried as host-order unsigned integers
 * (a.b.c.d = a<<24 | b<<16 | c<<8 | d), the form the WASM core and the BPF
 * maps' control side use. These helpers parse and format them.
 */
export interface Ipv4Prefix {
  /** Network address, host bits cleared. */
  readonly addr: number;
  /** Prefix length, 0..32. */
  readonly len: number;
}

const DOTTED = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** Parses dotted-quad IPv4. Throws AddressError naming the bad input. */
export function parseIpv4(text: string): number {
  const m = DOTTED.exec(text.trim());
  if (!m) throw new AddressError(`"${text}" is not an IPv4 address`, { hint: "write it as four numbers 0-255 separated by dots, e.g. 192.0.2.1" });
  let v = 0;
  for (let i = 1; i <= 4; i++) {
    const part = m[i] ?? "";
    const n = Number(part);
    if (n > 255 || (part.length > 1 && part.startsWith("0"))) {
      throw new AddressError(`"${text}" is not an IPv4 address: "${part}" is not a number 0-255 without leading zeros`);
    }
    v = v * 256 + n;
  }
  return v >>> 0;
}

/**
 * Dotted text. Built with join, as the other formatters here: V8 keeps a
 * string of 13 or more characters made by `+` or a template literal as a
 * tree of pieces (32 bytes a node on top of them), and the agent keeps some
 * of these texts per lease (map keys at 20,000 leases); join makes one flat
 * string, about half the size.
 */
export function formatIpv4(addr: number): string {
  return formatIpv4With(addr, "");
}

/** formatIpv4 followed by `suffix`, as one flat string. */
function formatIpv4With(addr: number, suffix: string): string {
  return [addr >>> 24, (addr >>> 16) & 255, (addr >>> 8) & 255, `${addr & 255}${suffix}`].join(".");
}

/** Netmask of a prefix length as an unsigned integer. */
export function maskOf(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

/**
 * Parses "a.b.c.d/len". With `strict` (the default) host bits must be zero,
 * as a network configuration requires; otherwise they are cleared.
 */
export function parseCidr(text: string, opts: { strict?: boolean } = {}): Ipv4Prefix {
  const slash = text.indexOf("/");
  if (slash < 0) throw new AddressError(`"${text}" is not a prefix`, { hint: "write it as address/length, e.g. 198.18.0.0/16" });
  const addr = parseIpv4(text.slice(0, slash));
  const lenText = text.slice(slash + 1);
  if (!/^\d{1,2}$/.test(lenText) || Number(lenText) > 32) {
    throw new AddressError(`"${text}": prefix length "${lenText}" is not a number 0-32`);
  }
  const len = Number(lenText);
  const net = (addr & maskOf(len)) >>> 0;
  if ((opts.strict ?? true) && net !== addr) {
    throw new AddressError(`"${text}" has host bits set`, { hint: `did you mean ${formatIpv4(net)}/${len}?` });
  }
  return { addr: net, len };
}

export function formatCidr(p: Ipv4Prefix): string {
  return formatIpv4With(p.addr, `/${p.len}`);
}

/** True when `addr` lies inside prefix `p`. */
export function contains(p: Ipv4Prefix, addr: number): boolean {
  return ((addr & maskOf(p.len)) >>> 0) === p.addr;
}

/** True when two prefixes share any address (overlaps6 is the IPv6 twin). */
export function overlaps(a: Ipv4Prefix, b: Ipv4Prefix): boolean {
  const len = Math.min(a.len, b.len);
  return ((a.addr & maskOf(len)) >>> 0) === ((b.addr & maskOf(len)) >>> 0);
}

/** Parses "aa:bb:cc:dd:ee:ff" (or with dashes) into 6 bytes. */
export function parseMac(text: string): Uint8Array {
  const parts = text.trim().split(/[:-]/);
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new AddressError(`"${text}" is not a MAC address`, { hint: "write six two-digit hex bytes separated by colons, e.g. 02:42:c6:12:01:00" });
  }
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
}

export function formatMac(mac: Uint8Array): string {
  // By table and concatenation: the route cache and `weft status` write one or two per lease (20,000 at scale).
  const h = (i: number): string => HEX2[mac[i] ?? 0] ?? "00";
  return `${h(0)}:${h(1)}:${h(2)}:${h(3)}:${h(4)}:${h(5)}`;
}

/** Two lower-case hex digits per byte value. */
const HEX2: readonly string[] = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));
