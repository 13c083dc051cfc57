import { z } from "zod";
import { formatCidr, formatIpv4, maskOf, parseCidr, parseIpv4, type Ipv4Prefix } from "../common/ipv4.js";
import { formatCidr6, formatIpv6, parseCidr6, parseIpv6 } from "../common/ipv6.js";
import { IpamConfigError } from "./errors.js";

/**
 * The `ipam` section of a CNI config, for "weft-ipam" (and the "weft" main
 * plugin, which allocates the same way). One config is installed on every
 * node while each node leases its own subnet, so addresses may be written
 * relative to the node subnet: "+10" is the subnet address plus 10, "+64/27"
 * the /27 block at offset 64, "+2-+9" a range. Absolute forms (a.b.c.d,
 * a.b.c.d-e.f.g.h, a.b.c.d/n) work too. Exclusions and reservations that lie
 * on another node's subnet are ignored here; a pool must lie on this node's.
 *
 * IPv6 (a node with an IPv6 subnet, alone or beside its IPv4 one): absolute
 * IPv6 forms (2001:db8::10, 2001:db8::10-2001:db8::20, 2001:db8::40/122)
 * apply to the IPv6 subnet only, absolute IPv4 forms to the IPv4 subnet
 * only, and relative forms to both: "+10" is offset 10 into each subnet (a
 * reservation "+10" gives its pod +10 of both), "+64/27" the 32 offsets
 * 64..95 of each (the length counts addresses as an IPv4 /27 does). Routes
 * may be IPv6 ({"dst": "::/0"}); each goes into the result with its family.
 *
 *   "ipam": {
 *     "type": "weft-ipam",
 *     "pools": [{"name": "db", "range": "+64/27", "namespaces": ["db"], "podLabels": {"tier": "db"}}],
 *     "exclude": ["+2-+9"],
 *     "reservations": ["+10", {"ip": "+11", "podNamespace": "dns", "podName": "coredns-0"}],
 *     "routes": [{"dst": "0.0.0.0/0"}],
 *     "gcMinAgeSeconds": 5
 *   }
 */

/** A range as written: absolute addresses, or offsets into the node subnet. */
export interface RangeRef {
  readonly text: string;
  readonly relative: boolean;
  /** The family an absolute range is written in; undefined for a relative one (it applies to both). */
  readonly family: 4 | 6 | undefined;
  /** Inclusive; IPv4 addresses when absolute IPv4, offsets when relative, 0 when IPv6. */
  readonly first: number;
  readonly last: number;
  /** Inclusive IPv6 addresses when absolute IPv6. */
  readonly v6?: { readonly first: bigint; readonly last: bigint } | undefined;
  /** Written as a prefix (a.b.c.d/n or +N/n). */
  readonly prefixLen: number | undefined;
}

const OFFSET = /^\+(\d{1,10})$/;

/** Parses one range string. Throws IpamConfigError saying what is wrong with it. */
export function parseRange(text: string, what: string): RangeRef {
  const bad = (why: string): never => {
    throw new IpamConfigError(`${what} "${text}": ${why}`, {
      hint: 'write an address (198.18.1.10 or 2001:db8::10), a range (198.18.1.10-198.18.1.20), a prefix (198.18.1.64/27 or 2001:db8::40/122), or offsets into the node subnet ("+10", "+10-+20", "+64/27")',
    });
  };
  const t = text.trim();
  if (t.includes(":")) return parseRange6(t, bad);
  const slash = t.indexOf("/");
  if (slash >= 0) {
    const lenText = t.slice(slash + 1);
    if (!/^\d{1,2}$/.test(lenText) || Number(lenText) > 32) bad(`prefix length "${lenText}" is not a number 0-32`);
    const len = Number(lenText);
    const size = 2 ** (32 - len);
    const head = t.slice(0, slash);
    const rel = OFFSET.exec(head);
    const start = rel ? Number(rel[1]) : parseAddr(head, bad);
    if (start % size !== 0) {
      const fixed = start - (start % size);
      bad(`host bits set (a /${len} starts at a multiple of ${size}; did you mean ${rel ? `+${fixed}` : formatIpv4(fixed)}/${len}?)`);
    }
    return { text: t, relative: !!rel, family: rel ? undefined : 4, first: start, last: start + size - 1, prefixLen: len };
  }
  const parts = t.split("-");
  if (parts.length > 2 || parts.some((p) => p.trim() === "")) bad("not an address, range or prefix");
  const a = (parts[0] ?? "").trim();
  const b = (parts[1] ?? a).trim();
  const relA = OFFSET.exec(a);
  if (relA) {
    const relB = OFFSET.exec(b) ?? (/^\d{1,10}$/.test(b) ? [b, b] : null);
    if (!relB) bad(`both ends must be offsets when the first is ("+10-+20")`);
    const first = Number(relA[1]);
    const last = Number((relB as string[])[1]);
    if (last < first) bad("the range ends before it starts");
    return { text: t, relative: true, family: undefined, first, last, prefixLen: undefined };
  }
  const first = parseAddr(a, bad);
  const last = parseAddr(b, bad);
  if (last < first) bad("the range ends before it starts");
  return { text: t, relative: false, family: 4, first, last, prefixLen: undefined };
}

/** An absolute IPv6 address, range or prefix. */
function parseRange6(t: string, bad: (why: string) => never): RangeRef {
  const addr = (s: string): bigint => {
    try {
      return parseIpv6(s);
    } catch (e) {
      return bad(`"${s.slice(0, 48)}" is not an IPv6 address (${(e as Error).message})`);
    }
  };
  const slash = t.indexOf("/");
  if (slash >= 0) {
    const lenText = t.slice(slash + 1);
    if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > 128) bad(`prefix length "${lenText}" is not a number 0-128`);
    addr(t.slice(0, slash));
    let p;
    try {
      p = parseCidr6(t);
    } catch (e) {
      return bad((e as Error).message);
    }
    const last = p.addr | ((1n << BigInt(128 - p.len)) - 1n);
    return { text: t, relative: false, family: 6, first: 0, last: 0, v6: { first: p.addr, last }, prefixLen: p.len };
  }
  const parts = t.split("-");
  if (parts.length > 2 || parts.some((p) => p.trim() === "")) bad("not an address, range or prefix");
  const first = addr((parts[0] ?? "").trim());
  const last = addr((parts[1] ?? parts[0] ?? "").trim());
  if (last < first) bad("the range ends before it starts");
  return { text: t, relative: false, family: 6, first: 0, last: 0, v6: { first, last }, prefixLen: undefined };
}

function parseAddr(s: string, bad: (why: string) => never): number {
  try {
    return parseIpv4(s);
  } catch {
    return bad(`"${s}" is not an IPv4 address or a "+offset"`);
  }
}

/**
 * Limits that keep what one config costs the agent bounded (every ADD scans
 * pools, exclusions and reservations per address): far above what a real
 * network needs; Kubernetes names are at most 253 characters, label keys 317.
 */
const text = (max: number) => z.string().max(max, `must be at most ${max} characters`);
const list = <T extends z.ZodTypeAny>(item: T, max: number) => z.array(item).max(max, `must hold at most ${max} entries`);
const RANGE = text(96);
const K8S_NAME = text(253);

const name = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, "must be lowercase letters, digits and dashes (like a Kubernetes name)");
const route = z.object({ dst: RANGE, gw: RANGE.optional() }).strict();
const reservation = z.union([
  RANGE,
  z.object({ ip: RANGE, podNamespace: K8S_NAME.optional(), podName: K8S_NAME }).strict(),
]);

const schema = z.object({
  type: text(256).optional(),
  /** Read by the plugin binary (which agent to ask), not here. */
  controlSocket: text(4096).optional(),
  pools: list(z.object({
    name,
    range: RANGE,
    namespaces: list(K8S_NAME.min(1), 256).optional(),
    podLabels: z.record(text(317), text(253)).refine((r) => Object.keys(r).length <= 64, "must hold at most 64 labels").optional(),
  }).strict(), 64).default([]),
  exclude: list(RANGE, 256).default([]),
  reservations: list(reservation, 1024).default([]),
  routes: list(route, 64).default([]),
  gcMinAgeSeconds: z.number().min(0).max(86400).default(5),
}).strict();

export interface PoolSpec {
  readonly name: string;
  readonly range: RangeRef;
  readonly namespaces: readonly string[] | undefined;
  readonly podLabels: Readonly<Record<string, string>> | undefined;
}

export interface ReservationSpec {
  readonly range: RangeRef;
  /** Reserved for one pod, which gets it without asking; otherwise only an explicit request gets it. */
  readonly pod: { readonly namespace: string | undefined; readonly name: string } | undefined;
}

/** The ipam section, parsed; not yet tied to a subnet. */
export interface IpamSpec {
  readonly pools: readonly PoolSpec[];
  readonly exclude: readonly RangeRef[];
  readonly reservations: readonly ReservationSpec[];
  readonly routes: readonly Route[];
  readonly gcMinAgeSeconds: number;
}

/** A route for the result; `family` says which of the node's subnets it goes with. */
export interface Route {
  readonly dst: string;
  readonly gw?: string;
  readonly family: 4 | 6;
}

/** Parses the ipam section (undefined: all defaults). Unknown keys are errors, so typos do not pass silently. */
export function parseIpamSpec(raw: unknown): IpamSpec {
  const r = schema.safeParse(raw ?? {});
  if (!r.success) {
    const msgs = r.error.issues.map((i) => {
      if (i.code === "unrecognized_keys") {
        const hint = i.keys.some((k) => k === "subnet" || k === "ranges" || k === "rangeStart")
          ? " (weft-ipam takes addresses from the node's leased subnet: use pools, exclude and reservations instead)" : "";
        return `unknown field(s) ${i.keys.map((k) => `ipam.${[...i.path, k].join(".")}`).join(", ")}${hint}`;
      }
      return `ipam.${i.path.join(".")}: ${i.message}`;
    });
    throw new IpamConfigError(`bad ipam config: ${msgs.join("; ")}`);
  }
  const c = r.data;
  const pools = c.pools.map((p, i): PoolSpec => {
    const range = parseRange(p.range, `ipam.pools[${i}].range`);
    const size = range.v6 ? Number(range.v6.last - range.v6.first + 1n) : range.last - range.first + 1;
    if (size < 4) {
      throw new IpamConfigError(`ipam.pools[${i}] "${p.name}": ${range.text} holds ${size} address(es); a pool needs at least 4 (a /30)`, {
        hint: "to pin single addresses use reservations",
      });
    }
    if (!p.namespaces?.length && !p.podLabels) {
      throw new IpamConfigError(`ipam.pools[${i}] "${p.name}" has neither namespaces nor podLabels, so no pod would ever be given one of its addresses`);
    }
    return { name: p.name, range, namespaces: p.namespaces, podLabels: p.podLabels };
  });
  const seen = new Set<string>(["default"]);
  for (const p of pools) {
    if (seen.has(p.name)) {
      throw new IpamConfigError(`ipam.pools: the name "${p.name}" is ${p.name === "default" ? "the implicit pool of all other addresses" : "used twice"}; pick another`);
    }
    seen.add(p.name);
  }
  // Routes go into the result the runtime (and a main plugin such as bridge) acts on: only well-formed IPv4 or IPv6, re-formatted by weft.
  const routes = c.routes.map((route, i): Route => {
    const v6 = route.dst.includes(":");
    const fam = v6 ? "IPv6" : "IPv4";
    let dst: string;
    let gw: string | undefined;
    try {
      dst = v6 ? formatCidr6(parseCidr6(route.dst)) : formatCidr(parseCidr(route.dst));
    } catch (e) {
      throw new IpamConfigError(`ipam.routes[${i}].dst ${JSON.stringify(route.dst).slice(0, 64)} is not an ${fam} prefix: ${(e as Error).message}`, { hint: 'e.g. {"dst": "0.0.0.0/0"} or {"dst": "::/0"}' });
    }
    try {
      if (route.gw !== undefined && route.gw.includes(":") !== v6) throw new Error(`the route's dst is ${fam}, its gw must be too`);
      gw = route.gw === undefined ? undefined : v6 ? formatIpv6(parseIpv6(route.gw)) : formatIpv4(parseIpv4(route.gw));
    } catch (e) {
      throw new IpamConfigError(`ipam.routes[${i}].gw ${JSON.stringify(route.gw).slice(0, 64)} is not an ${fam} address: ${(e as Error).message}`, { hint: "leave gw out to route via the node's gateway" });
    }
    return { dst, ...(gw === undefined ? {} : { gw }), family: v6 ? 6 : 4 };
  });
  return {
    pools,
    exclude: c.exclude.map((e, i) => parseRange(e, `ipam.exclude[${i}]`)),
    reservations: c.reservations.map((r, i) => typeof r === "string"
      ? { range: parseRange(r, `ipam.reservations[${i}]`), pod: undefined }
      : { range: parseRange(r.ip, `ipam.reservations[${i}].ip`), pod: { namespace: r.podNamespace, name: r.podName } }),
    routes,
    gcMinAgeSeconds: c.gcMinAgeSeconds,
  };
}

/** An inclusive address range: IPv4 addresses as numbers, IPv6 as bigints (plan6.ts). */
export interface Span<A extends number | bigint = number> {
  readonly first: A;
  readonly last: A;
}

export interface Pool<A extends number | bigint = number> extends Span<A> {
  readonly name: string;
  readonly namespaces: readonly string[] | undefined;
  readonly podLabels: Readonly<Record<string, string>> | undefined;
}

/** The spec applied to one node subnet: absolute addresses, checked. */
export interface IpamPlan {
  readonly subnet: Ipv4Prefix;
  readonly gateway: number;
  readonly broadcast: number;
  /** Named pools; the default pool is every other usable address. */
  readonly pools: readonly Pool[];
  readonly exclude: readonly Span[];
  readonly reserved: readonly (Span & { readonly pod: ReservationSpec["pod"] })[];
  readonly routes: IpamSpec["routes"];
  readonly gcMinAgeSeconds: number;
}

/** Places `spec` on the node subnet. Throws IpamConfigError for a pool that does not fit or overlaps another. */
export function planFor(spec: IpamSpec, subnet: Ipv4Prefix): IpamPlan {
  if (subnet.len > 30) {
    throw new IpamConfigError(`the node subnet ${formatCidr(subnet)} leaves no address for pods (network, gateway and broadcast take a /31's)`, {
      hint: "use a SubnetLen of 30 or less in the network config",
    });
  }
  const base = subnet.addr;
  const broadcast = (base | ~maskOf(subnet.len)) >>> 0;
  const abs = (r: RangeRef): Span => (r.relative ? { first: base + r.first, last: base + r.last } : { first: r.first, last: r.last });
  const inside = (s: Span): boolean => s.first >= base && s.last <= broadcast;
  const mine = (r: RangeRef): boolean => r.family !== 6;
  const pools: Pool[] = spec.pools.filter((p) => mine(p.range)).map((p) => {
    const s = abs(p.range);
    if (!inside(s)) {
      throw new IpamConfigError(`pool "${p.name}" (${p.range.text}) does not lie inside this node's subnet ${formatCidr(subnet)}`, {
        hint: 'every node leases a different subnet: write pools relative to it, e.g. "+64/27"',
      });
    }
    return { ...s, name: p.name, namespaces: p.namespaces, podLabels: p.podLabels };
  });
  const sorted = [...pools].sort((a, b) => a.first - b.first);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1] as Pool;
    const b = sorted[i] as Pool;
    if (b.first <= a.last) throw new IpamConfigError(`pools "${a.name}" and "${b.name}" overlap (${formatIpv4(b.first)} is in both); an address belongs to one pool`);
  }
  // Exclusions and reservations are clipped to this subnet: the rest belongs to other nodes.
  const clip = (s: Span): Span | undefined => {
    const first = Math.max(s.first, base);
    const last = Math.min(s.last, broadcast);
    return first <= last ? { first, last } : undefined;
  };
  const exclude = spec.exclude.filter(mine).map(abs).map(clip).filter((s): s is Span => s !== undefined);
  const reserved = spec.reservations.filter((r) => mine(r.range)).flatMap((r) => {
    const s = clip(abs(r.range));
    return s ? [{ ...s, pod: r.pod }] : [];
  });
  const routes = spec.routes.filter((r) => r.family === 4);
  return { subnet, gateway: base + 1, broadcast, pools, exclude, reserved, routes, gcMinAgeSeconds: spec.gcMinAgeSeconds };
}
