import { AddressError } from "./errors.js";

/**
 * IPv6 addresses are carried as unsigned 128-bit bigints (the first byte on
 * the wire is the most significant), the form subnet arithmetic wants;
 * `ipv6Bytes` / `ipv6FromBytes` convert to and from the 16 wire bytes the
 * WASM core, the BPF maps and netlink use. Text is written as Go's
 * net.IP.String() writes it (RFC 5952: lower case, no leading zeros, the
 * longest run of two or more zero groups as "::", the first on a tie), so a
 * key weft writes is byte for byte the key flannel writes.
 */
export interface Ipv6Prefix {
  /** Network address, host bits cleared. */
  readonly addr: bigint;
  /** Prefix length, 0..128. */
  readonly len: number;
}

const MAX = (1n << 128n) - 1n;
const GROUP = /^[0-9a-fA-F]{1,4}$/;
const DOTTED_TAIL = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function bad(text: string, why: string): AddressError {
  return new AddressError(`"${text}" is not an IPv6 address: ${why}`, { hint: "write it as eight groups of up to four hex digits separated by colons, e.g. 2001:db8::1" });
}

/** The 16-bit groups of one side of a "::" (a trailing dotted IPv4 counts as two). */
function groups(text: string, side: string, last: boolean): number[] {
  if (side === "") return [];
  const parts = side.split(":");
  const out: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i] ?? "";
    const m = last && i === parts.length - 1 ? DOTTED_TAIL.exec(p) : null;
    if (m) {
      const b = m.slice(1, 5).map((x) => {
        if (Number(x) > 255 || (x.length > 1 && x.startsWith("0"))) throw bad(text, `"${p}" is not a dotted IPv4 tail`);
        return Number(x);
      });
      out.push(((b[0] ?? 0) << 8) | (b[1] ?? 0), ((b[2] ?? 0) << 8) | (b[3] ?? 0));
      continue;
    }
    if (!GROUP.test(p)) throw bad(text, p === "" ? "an empty group" : `"${p}" is not a group of 1-4 hex digits`);
    out.push(parseInt(p, 16));
  }
  return out;
}

/** Parses IPv6 text (compressed or not, an IPv4 tail allowed, no zone). Throws AddressError naming the bad input. */
export function parseIpv6(text: string): bigint {
  const t = text.trim();
  if (t.length > 45) throw bad(text.slice(0, 48), "too long");
  if (t.includes("%")) throw bad(text, "a zone (%…) is not allowed here");
  const halves = t.split("::");
  if (halves.length > 2) throw bad(text, '"::" appears more than once');
  let all: number[];
  if (halves.length === 2) {
    const head = groups(text, halves[0] ?? "", false);
    const tail = groups(text, halves[1] ?? "", true);
    const missing = 8 - head.length - tail.length;
    if (missing < 1) throw bad(text, '"::" stands for no group');
    all = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    all = groups(text, t, true);
    if (all.length !== 8) throw bad(text, `${all.length} groups, not 8`);
  }
  let v = 0n;
  for (const g of all) v = (v << 16n) | BigInt(g);
  return v;
}

/** True when `text` parses as IPv6. */
export function isIpv6(text: string): boolean {
  try {
    parseIpv6(text);
    return true;
  } catch {
    return false;
  }
}

/** RFC 5952 text, as Go's net.IP.String() writes a non-IPv4-mapped address. */
export function formatIpv6(addr: bigint): string {
  return formatIpv6With(addr, "");
}

/** formatIpv6 followed by `suffix`, as one flat string (see formatGroups). */
function formatIpv6With(addr: bigint, suffix: string): string {
  const hi = BigInt.asUintN(64, addr >> 64n);
  const lo = BigInt.asUintN(64, addr);
  const a = Number(hi >> 32n);
  const b = Number(BigInt.asUintN(32, hi));
  const c = Number(lo >> 32n);
  const d = Number(BigInt.asUintN(32, lo));
  return formatGroups([a >>> 16, a & 0xffff, b >>> 16, b & 0xffff, c >>> 16, c & 0xffff, d >>> 16, d & 0xffff], suffix);
}

/**
 * Eight 16-bit groups as RFC 5952 text: lower case, no leading zeros, the
 * longest run of two or more zero groups as "::" (the first on a tie).
 */
export function formatGroups(g: readonly number[], suffix = ""): string {
  let bestAt = -1;
  let bestLen = 1; // a single zero group is not compressed
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  // One join over the groups, "::" as empty elements: a flat string (a `+` or a template literal of 13
  // characters or more makes V8 keep a tree of pieces, about twice the size, and these texts are map keys).
  const parts: string[] = [];
  const end = bestAt < 0 ? 8 : bestAt;
  for (let i = 0; i < end; i++) parts.push((g[i] ?? 0).toString(16));
  if (bestAt >= 0) {
    if (bestAt === 0) parts.push("");
    parts.push("");
    if (bestAt + bestLen === 8) parts.push("");
    for (let i = bestAt + bestLen; i < 8; i++) parts.push((g[i] ?? 0).toString(16));
  }
  if (suffix !== "") parts[parts.length - 1] = `${parts[parts.length - 1] ?? ""}${suffix}`;
  return parts.join(":");
}

/** Netmask of a prefix length as a 128-bit bigint. */
export function maskOf6(len: number): bigint {
  return len === 0 ? 0n : (MAX << BigInt(128 - len)) & MAX;
}

/** Parses "addr/len". With `strict` (the default) host bits must be zero; otherwise they are cleared. */
export function parseCidr6(text: string, opts: { strict?: boolean } = {}): Ipv6Prefix {
  const slash = text.indexOf("/");
  if (slash < 0) throw new AddressError(`"${text}" is not an IPv6 prefix`, { hint: "write it as address/length, e.g. 2001:db8:1::/64" });
  const addr = parseIpv6(text.slice(0, slash));
  const lenText = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > 128 || (lenText.length > 1 && lenText.startsWith("0"))) {
    throw new AddressError(`"${text}": prefix length "${lenText}" is not a number 0-128`);
  }
  const len = Number(lenText);
  const net = addr & maskOf6(len);
  if ((opts.strict ?? true) && net !== addr) {
    throw new AddressError(`"${text}" has host bits set`, { hint: `did you mean ${formatIpv6(net)}/${len}?` });
  }
  return { addr: net, len };
}

export function formatCidr6(p: Ipv6Prefix): string {
  return formatIpv6With(p.addr, `/${p.len}`);
}

/** True when `addr` lies inside prefix `p`. */
export function contains6(p: Ipv6Prefix, addr: bigint): boolean {
  return (addr & maskOf6(p.len)) === p.addr;
}

/** True when two prefixes share any address. */
export function overlaps6(a: Ipv6Prefix, b: Ipv6Prefix): boolean {
  const len = Math.min(a.len, b.len);
  return (a.addr & maskOf6(len)) === (b.addr & maskOf6(len));
}

/** The 16 wire bytes of an address. */
export function ipv6Bytes(addr: bigint): Uint8Array {
  const out = new Uint8Array(16);
  let v = addr;
  for (let i = 15; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** An address from 16 wire bytes (from `offset`). */
export function ipv6FromBytes(b: Uint8Array, offset = 0): bigint {
  if (b.length < offset + 16) throw new AddressError(`an IPv6 address needs 16 bytes, ${b.length - offset} given`);
  let v = 0n;
  for (let i = 0; i < 16; i++) v = (v << 8n) | BigInt(b[offset + i] ?? 0);
  return v;
}

/**
 * True for a global or unique-local unicast address a VTEP or pod can have:
 * not unspecified, loopback, multicast, link-local or IPv4-mapped.
 */
export function isUnicastIpv6(a: bigint): boolean {
  if (a === 0n || a === 1n) return false;
  const top8 = Number(a >> 120n);
  if (top8 === 0xff) return false; // multicast
  const top10 = Number(a >> 118n);
  if (top10 === 0x3fa) return false; // fe80::/10 link-local
  if (a >> 32n === 0xffffn) return false; // ::ffff:0:0/96 IPv4-mapped
  return true;
}
