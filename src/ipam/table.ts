import { formatIpv4, parseIpv4 } from "../common/ipv4.js";

/** One address held by one attachment (network + container + interface). */
export interface Allocation {
  readonly ip: number;
  /** CNI network name (the config's "name"). */
  readonly network: string;
  readonly containerId: string;
  readonly ifname: string;
  /** The pool it came from ("default" for the rest of the subnet). */
  readonly pool: string;
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

/** JSON form of an allocation: the address dotted, for people reading the state files. */
export function encodeAllocation(a: Allocation): Record<string, unknown> {
  return { ...a, ip: formatIpv4(a.ip) };
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
  return {
    ip: parseIpv4(str("ip")), network: str("network"), containerId: str("containerId"), ifname: str("ifname"), pool: str("pool"),
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
  /** `${network}/${pool}` → the address last picked there. */
  readonly cursors = new Map<string, number>();

  get size(): number {
    return this.byKey.size;
  }

  get(key: string): Allocation | undefined {
    return this.byKey.get(key);
  }

  holder(ip: number): Allocation | undefined {
    return this.byIp.get(ip);
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
      const byIp = this.byIp.get(c.a.ip);
      if (byIp && keyOf(byIp) !== k) return false;
      const old = this.byKey.get(k);
      if (old && old.ip !== c.a.ip) this.byIp.delete(old.ip);
      this.byKey.set(k, c.a);
      this.byIp.set(c.a.ip, c.a);
      if (!c.a.requested) this.cursors.set(`${c.a.network}/${c.a.pool}`, c.a.ip);
      return true;
    }
    const a = this.byKey.get(c.key);
    if (!a) return false;
    this.byKey.delete(c.key);
    if (this.byIp.get(a.ip) === a) this.byIp.delete(a.ip);
    return true;
  }

  /** The inverse of a change that apply() accepted, given the state before it. */
  static inverse(c: Change, before: Allocation | undefined): Change {
    if (c.op === "add") return before ? { op: "add", a: before } : { op: "del", key: keyOf(c.a) };
    return before ? { op: "add", a: before } : { op: "del", key: c.key };
  }
}
