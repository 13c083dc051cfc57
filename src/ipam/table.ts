import { formatIpv4, parseIpv4 } from "../common/ipv4.js";
import { formatIpv6, parseIpv6 } from "../common/ipv6.js";

/**
 * The addresses held by one attachment (network + container + interface):
 * one per family the node has a subnet of (an IPv4-only node: ip; an
 * IPv6-only node: ip6; dual-stack: both). At least one is set.
 */
export interface Allocation {
  /** IPv4 address, or undefined on a node without an IPv4 subnet. */
  readonly ip: number | undefined;
  /** IPv6 address, or undefined on a node without an IPv6 subnet (and in every allocation written before IPv6). */
  readonly ip6?: bigint | undefined;
  /** CNI network name (the config's "name"). */
  readonly network: string;
  readonly containerId: string;
  readonly ifname: string;
  /** The pool it came from ("default" for the rest of the subnet). */
  readonly pool: string;
  /** The pool the IPv6 address came from, when it differs from `pool` (a pool written for one family only). */
  readonly pool6?: string | undefined;
  /** CNI_NETNS at ADD, and that namespace's inode (0 when unknown): the reconciler's evidence of life. */
  readonly netns: string;
  readonly netnsInode: number;
  readonly podNamespace: string;
  readonly podName: string;
  /** Host side of the pod's veth ("" when another plugin made the interface). */
  readonly hostIf: string;
  /** ms since the epoch. */
  readonly created: number;
  /** Asked for by address (CNI_ARGS IP=, args, runtimeConfig) rather than picked. */
  readonly requested: boolean;
}

export function allocationKey(network: string, containerId: string, ifname: string): string {
  return `${network}/${containerId}/${ifname}`;
}

export function keyOf(a: Allocation): string {
  return allocationKey(a.network, a.containerId, a.ifname);
}

/** A change to the table, as the journal stores it (one JSON line each). */
export type Change =
  | { readonly op: "add"; readonly a: Allocation }
  | { readonly op: "del"; readonly key: string };

/** The allocation's addresses as text, IPv4 first ("198.18.0.5", "2001:db8::5", or both joined by a comma). */
export function addressText(a: Pick<Allocation, "ip" | "ip6">): string {
  return [a.ip === undefined ? "" : formatIpv4(a.ip), a.ip6 === undefined ? "" : formatIpv6(a.ip6)].filter(Boolean).join(",");
}

/**
 * JSON form of an allocation: the addresses as text, for people reading the
 * state files. "ip" is left out when there is no IPv4 address, "ip6" when
 * there is no IPv6 one (so an IPv4 allocation is written as before IPv6).
 */
export function encodeAllocation(a: Allocation): Record<string, unknown> {
  const { ip, ip6, ...rest } = a;
  return { ...(ip === undefined ? {} : { ip: formatIpv4(ip) }), ...(ip6 === undefined ? {} : { ip6: formatIpv6(ip6) }), ...rest };
}

/** Reads an allocation back; throws on anything malformed. */
export function decodeAllocation(raw: unknown): Allocation {
  const o = raw as Record<string, unknown>;
  const str = (k: string): string => {
    const v = o[k];
    if (typeof v !== "string") throw new Error(`field ${k} is not a string`);
    return v;
  };
  const num = (k: string): number => {
    const v = o[k];
    if (typeof v !== "number" || !Number.isFinite(v)) throw new Error(`field ${k} is not a number`);
    return v;
  };
  if (typeof o !== "object" || o === null) throw new Error("not an object");
  const ip = o["ip"] === undefined ? undefined : parseIpv4(str("ip"));
  const ip6 = o["ip6"] === undefined ? undefined : parseIpv6(str("ip6"));
  if (ip === undefined && ip6 === undefined) throw new Error("it has neither ip nor ip6");
  return {
    ip, ...(ip6 === undefined ? {} : { ip6 }), network: str("network"), containerId: str("containerId"), ifname: str("ifname"), pool: str("pool"), ...(typeof o["pool6"] === "string" ? { pool6: o["pool6"] } : {}),
    netns: str("netns"), netnsInode: num("netnsInode"), podNamespace: str("podNamespace"), podName: str("podName"),
    hostIf: str("hostIf"), created: num("created"), requested: o["requested"] === true,
  };
}

/**
 * The allocations, indexed by attachment key and by address, plus the
 * round-robin cursor of each (network, pool). Changes go through apply() so
 * that memory, the journal and a replay agree.
 */
export class AllocationTable {
  private readonly byKey = new Map<string, Allocation>();
  private readonly byIp = new Map<number, Allocation>();
  private readonly byIp6 = new Map<bigint, Allocation>();
  /** `${network}/${pool}` → the IPv4 address last picked there. */
  readonly cursors = new Map<string, number>();
  /** `${network}/${pool}` → the IPv6 address last picked there. */
  readonly cursors6 = new Map<string, bigint>();

  get size(): number {
    return this.byKey.size;
  }

  get(key: string): Allocation | undefined {
    return this.byKey.get(key);
  }

  holder(ip: number): Allocation | undefined {
    return this.byIp.get(ip);
  }

  holder6(ip: bigint): Allocation | undefined {
    return this.byIp6.get(ip);
  }

  /** The IPv6 addresses held, in no particular order (usage counts). */
  held6(): IterableIterator<bigint> {
    return this.byIp6.keys();
  }

  all(): Allocation[] {
    return [...this.byKey.values()];
  }

  /**
   * Applies a change. An add whose address or key is already held by a
   * different attachment is refused (returns false): the table never holds
   * an address twice, whatever a journal says.
   */
  apply(c: Change): boolean {
    if (c.op === "add") {
      const k = keyOf(c.a);
      const byIp = c.a.ip === undefined ? undefined : this.byIp.get(c.a.ip);
      if (byIp && keyOf(byIp) !== k) return false;
      const byIp6 = c.a.ip6 === undefined ? undefined : this.byIp6.get(c.a.ip6);
      if (byIp6 && keyOf(byIp6) !== k) return false;
      const old = this.byKey.get(k);
      if (old) this.unindex(old);
      this.byKey.set(k, c.a);
      if (c.a.ip !== undefined) this.byIp.set(c.a.ip, c.a);
      if (c.a.ip6 !== undefined) this.byIp6.set(c.a.ip6, c.a);
      if (!c.a.requested) {
        if (c.a.ip !== undefined) this.cursors.set(`${c.a.network}/${c.a.pool}`, c.a.ip);
        if (c.a.ip6 !== undefined) this.cursors6.set(`${c.a.network}/${c.a.pool6 ?? c.a.pool}`, c.a.ip6);
      }
      return true;
    }
    const a = this.byKey.get(c.key);
    if (!a) return false;
    this.byKey.delete(c.key);
    this.unindex(a);
    return true;
  }

  private unindex(a: Allocation): void {
    if (a.ip !== undefined && this.byIp.get(a.ip) === a) this.byIp.delete(a.ip);
    if (a.ip6 !== undefined && this.byIp6.get(a.ip6) === a) this.byIp6.delete(a.ip6);
  }

  /** The inverse of a change that apply() accepted, given the state before it. */
  static inverse(c: Change, before: Allocation | undefined): Change {
    if (c.op === "add") return before ? { op: "add", a: before } : { op: "del", key: keyOf(c.a) };
    return before ? { op: "add", a: before } : { op: "del", key: c.key };
  }
}
