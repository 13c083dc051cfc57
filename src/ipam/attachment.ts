import { statfsSync, statSync } from "node:fs";
import type { Ipv4Prefix } from "../common/ipv4.js";
import { contains6 } from "../common/ipv6.js";
import type { PoolUsage } from "./allocator.js";
import type { IpamPlan } from "./config.js";
import type { PoolExhaustedError } from "./errors.js";
import type { IpamPlan6 } from "./plan6.js";
import type { Allocation } from "./table.js";

/**
 * What IpamService (ipam.ts) asks of an attachment's allocation against
 * the subnets bound now, and of its network namespace.
 */

/** A pool with no free address, met while choosing (IpamService.relieve decides what follows). */
export class FullPool extends Error {
  constructor(readonly error: PoolExhaustedError, readonly network: string, readonly pool: string, readonly subnet: string, readonly usage: () => PoolUsage) {
    super(error.message);
  }
}

/** The allocation has an address in each bound subnet and none of a family not bound. */
export function fits(a: Allocation, plan: IpamPlan | undefined, plan6: IpamPlan6 | undefined): boolean {
  const ok4 = plan ? a.ip !== undefined && inSubnet(plan.subnet, a.ip) : a.ip === undefined;
  const ok6 = plan6 ? a.ip6 !== undefined && contains6(plan6.subnet, a.ip6) : a.ip6 === undefined;
  return ok4 && ok6;
}

/** Every address the allocation holds lies in a subnet bound now (it may lack one of a bound family). */
export function onBound(a: Allocation, plan: IpamPlan | undefined, plan6: IpamPlan6 | undefined): boolean {
  return (a.ip === undefined || (plan !== undefined && inSubnet(plan.subnet, a.ip))) && (a.ip6 === undefined || (plan6 !== undefined && contains6(plan6.subnet, a.ip6)));
}

export function inSubnet(s: Ipv4Prefix, ip: number): boolean {
  const size = 2 ** (32 - s.len);
  return ip >= s.addr && ip < s.addr + size;
}

/** statfs(2) f_type of the namespace filesystem (linux/magic.h NSFS_MAGIC). */
const NSFS_MAGIC = 0x6e736673;

/**
 * The identity of the network namespace at `path` as this process sees it:
 * the inode of a file of the namespace filesystem. 0 (identity unknown)
 * when the path is empty, cannot be read from here (e.g. the plugin ran in
 * another mount namespace) or is not a namespace file: the reconciler never
 * frees such an allocation (reconciler.ts).
 */
export function inodeOf(path: string): number {
  if (!path) return 0;
  try {
    if (statfsSync(path).type !== NSFS_MAGIC) return 0;
    return statSync(path).ino;
  } catch {
    return 0;
  }
}
