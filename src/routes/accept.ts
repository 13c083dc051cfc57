import { contains, formatCidr, formatIpv4, maskOf, type Ipv4Prefix } from "../common/ipv4.js";
import type { Lease, LeaseDecodeReason } from "../subnet/lease.js";
import type { NetworkConfig } from "../subnet/network-config.js";

/**
 * Which leases of other nodes weft uses. Anyone who can write under the
 * subnets prefix can write a lease; flannel routes whatever it finds, weft
 * only what fits the cluster's network config. Checks of a lease on its own
 * live here (checkLease); checks against other leases — overlap and a
 * PublicIP used twice, where the older key by create revision wins — live in
 * the route table, which sees them all.
 */
export type LeaseRejectReason =
  | LeaseDecodeReason
  | "vni_mismatch"
  | "vtep_mac_not_unicast"
  | "subnet_outside_network"
  | "subnet_outside_range"
  | "subnet_length"
  | "subnet_host_bits"
  | "public_ip_not_unicast"
  | "public_ip_in_cluster"
  | "overlaps_own_subnet"
  | "public_ip_is_ours"
  | "overlaps_lease"
  | "public_ip_taken";

/** Every reason, for metrics (a zero series per reason) and documentation. */
export const LEASE_REJECT_REASONS: readonly LeaseRejectReason[] = [
  "bad_key", "bad_value", "foreign_backend", "vni_mismatch", "vtep_mac_not_unicast", "subnet_outside_network",
  "subnet_outside_range", "subnet_length", "subnet_host_bits", "public_ip_not_unicast", "public_ip_in_cluster",
  "overlaps_own_subnet", "public_ip_is_ours", "overlaps_lease", "public_ip_taken",
];

export interface Rejection {
  readonly key: string;
  readonly reason: LeaseRejectReason;
  /** What was wrong, in words, with how to fix it where that is not obvious. */
  readonly detail: string;
}

/** What the cluster's network config allows, and who we are. */
export interface LeasePolicy {
  readonly network: Ipv4Prefix;
  readonly subnetLen: number;
  /** Set only when the config names them. */
  readonly subnetMin: number | undefined;
  readonly subnetMax: number | undefined;
  readonly vni: number;
}

export function policyOf(c: NetworkConfig): LeasePolicy {
  return {
    network: c.network,
    subnetLen: c.subnetLen,
    subnetMin: c.rangeSet?.min ? c.subnetMin : undefined,
    subnetMax: c.rangeSet?.max ? c.subnetMax : undefined,
    vni: c.backend.vni,
  };
}

/** Our own lease: a lease overlapping our subnet, or naming our PublicIP, is someone else's mistake or an attack. */
export interface SelfLease {
  readonly subnet: Ipv4Prefix;
  readonly publicIp: number;
}

/** True for unicast IPv4 a VTEP can have: not 0/8, loopback, multicast, reserved or broadcast. */
export function isUnicastIpv4(a: number): boolean {
  const first = a >>> 24;
  return first !== 0 && first !== 127 && first < 224;
}

/** Why a lease, on its own, must not be used; undefined when it may be. */
export function checkLease(l: Lease, p: LeasePolicy, self: SelfLease | undefined): Rejection | undefined {
  const r = (reason: LeaseRejectReason, detail: string): Rejection => ({ key: l.key, reason, detail });
  const s = l.subnet;
  const net = formatCidr(p.network);
  if (((s.addr & maskOf(s.len)) >>> 0) !== s.addr) return r("subnet_host_bits", `subnet ${formatIpv4(s.addr)}/${s.len} has host bits set`);
  if (s.len < p.network.len || !contains(p.network, s.addr)) return r("subnet_outside_network", `subnet ${formatCidr(s)} is not inside the cluster network ${net}`);
  if (s.len !== p.subnetLen) return r("subnet_length", `subnet ${formatCidr(s)} is not a /${p.subnetLen} (the network config's SubnetLen)`);
  if ((p.subnetMin !== undefined && s.addr < p.subnetMin) || (p.subnetMax !== undefined && s.addr > p.subnetMax)) {
    const lo = p.subnetMin === undefined ? "" : formatIpv4(p.subnetMin);
    const hi = p.subnetMax === undefined ? "" : formatIpv4(p.subnetMax);
    return r("subnet_outside_range", `subnet ${formatCidr(s)} is outside SubnetMin-SubnetMax ${lo}-${hi}`);
  }
  if (l.attrs.vni !== p.vni) return r("vni_mismatch", `VNI ${l.attrs.vni} is not the cluster's VNI ${p.vni}`);
  const mac = l.attrs.vtepMac;
  if (((mac[0] ?? 1) & 1) !== 0 || mac.every((b) => b === 0)) return r("vtep_mac_not_unicast", "VtepMAC is a multicast, broadcast or all-zero address");
  const ip = l.attrs.publicIp;
  if (!isUnicastIpv4(ip)) return r("public_ip_not_unicast", `PublicIP ${formatIpv4(ip)} is not a unicast address`);
  if (contains(p.network, ip)) return r("public_ip_in_cluster", `PublicIP ${formatIpv4(ip)} lies inside the cluster network ${net}: traffic to it would loop into the overlay`);
  if (self) {
    const len = Math.min(s.len, self.subnet.len);
    if (((s.addr & maskOf(len)) >>> 0) === ((self.subnet.addr & maskOf(len)) >>> 0)) {
      return r("overlaps_own_subnet", `subnet ${formatCidr(s)} overlaps this node's subnet ${formatCidr(self.subnet)}`);
    }
    if (ip === self.publicIp) return r("public_ip_is_ours", `PublicIP ${formatIpv4(ip)} is this node's own address`);
  }
  return undefined;
}

/** Our own key: our subnet and our PublicIP. Neither a route nor a rejection. */
export function isOwnLease(l: Lease, self: SelfLease | undefined): boolean {
  return self !== undefined && l.subnet.addr === self.subnet.addr && l.subnet.len === self.subnet.len && l.attrs.publicIp === self.publicIp;
}
