import { contains, formatCidr, formatIpv4, maskOf, overlaps, type Ipv4Prefix } from "../common/ipv4.js";
import { contains6, formatCidr6, formatIpv6, isUnicastIpv6, maskOf6, overlaps6, type Ipv6Prefix } from "../common/ipv6.js";
import { isNoIpv4, type Lease, type LeaseDecodeReason } from "../subnet/lease.js";
import type { Ipv6NetworkConfig, NetworkConfig } from "../subnet/network-config.js";

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
  | "public_ip_taken"
  | "family_mismatch"
  | "subnet6_outside_network"
  | "subnet6_outside_range"
  | "subnet6_length"
  | "subnet6_host_bits"
  | "public_ipv6_not_unicast"
  | "public_ipv6_in_cluster";

/** Every reason, for metrics (a zero series per reason) and documentation. */
export const LEASE_REJECT_REASONS: readonly LeaseRejectReason[] = [
  "bad_key", "bad_value", "foreign_backend", "vni_mismatch", "vtep_mac_not_unicast", "subnet_outside_network",
  "subnet_outside_range", "subnet_length", "subnet_host_bits", "public_ip_not_unicast", "public_ip_in_cluster",
  "overlaps_own_subnet", "public_ip_is_ours", "overlaps_lease", "public_ip_taken", "family_mismatch",
  "subnet6_outside_network", "subnet6_outside_range", "subnet6_length", "subnet6_host_bits", "public_ipv6_not_unicast", "public_ipv6_in_cluster",
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
  /** The network runs IPv4 (EnableIPv4). Absent means true. */
  readonly enableIpv4?: boolean;
  /** The network's IPv6 half (EnableIPv6), with SubnetMin/Max only when the config names them. */
  readonly ipv6?: Ipv6NetworkConfig | undefined;
}

export function policyOf(c: NetworkConfig): LeasePolicy {
  return {
    enableIpv4: c.enableIpv4,
    ipv6: c.ipv6,
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
  readonly subnet6?: Ipv6Prefix | undefined;
  readonly publicIpv6?: bigint | undefined;
}

/** True for unicast IPv4 a VTEP can have: not 0/8, loopback, multicast, reserved or broadcast. */
export function isUnicastIpv4(a: number): boolean {
  const first = a >>> 24;
  return first !== 0 && first !== 127 && first < 224;
}

/** Why a lease, on its own, must not be used; undefined when it may be. */
export function checkLease(l: Lease, p: LeasePolicy, self: SelfLease | undefined): Rejection | undefined {
  const r = (reason: LeaseRejectReason, detail: string): Rejection => ({ key: l.key, reason, detail });
  if (p.enableIpv4 === false) {
    // An IPv6-only network: the key's IPv4 part is flannel's empty 0.0.0.0-0, and the lease must carry IPv6.
    if (!isNoIpv4(l.subnet) || !l.subnet6) return r("family_mismatch", `an IPv6-only network takes keys 0.0.0.0-0&<ipv6>-<len>, not ${l.key}`);
    return checkV6(l, p, self, r);
  }
  const v4 = checkV4(l, p, self, r);
  if (v4) return v4;
  // A dual-stack network routes a peer's IPv6 when its lease has it; an IPv4-only lease (an older or IPv4-only node) is routed over IPv4 alone.
  return p.ipv6 && l.subnet6 ? checkV6(l, p, self, r) : undefined;
}

type Reject = (reason: LeaseRejectReason, detail: string) => Rejection;

/** The IPv6 half of a lease: its subnet, PublicIPv6 and BackendV6Data. */
function checkV6(l: Lease, p: LeasePolicy, self: SelfLease | undefined, r: Reject): Rejection | undefined {
  const c = p.ipv6;
  const s = l.subnet6;
  if (!c || !s) return undefined;
  const net = formatCidr6(c.network);
  const text = formatCidr6(s);
  if ((s.addr & maskOf6(s.len)) !== s.addr) return r("subnet6_host_bits", `IPv6 subnet ${formatIpv6(s.addr)}/${s.len} has host bits set`);
  if (s.len < c.network.len || !contains6(c.network, s.addr)) return r("subnet6_outside_network", `IPv6 subnet ${text} is not inside the cluster's IPv6Network ${net}`);
  if (s.len !== c.subnetLen) return r("subnet6_length", `IPv6 subnet ${text} is not a /${c.subnetLen} (the network config's IPv6SubnetLen)`);
  if ((c.rangeSet.min && s.addr < c.subnetMin) || (c.rangeSet.max && s.addr > c.subnetMax)) {
    return r("subnet6_outside_range", `IPv6 subnet ${text} is outside IPv6SubnetMin-IPv6SubnetMax ${formatIpv6(c.subnetMin)}-${formatIpv6(c.subnetMax)}`);
  }
  const ip = l.attrs.publicIpv6;
  if (ip === undefined || !l.attrs.v6) return r("family_mismatch", `the key names IPv6 subnet ${text} but the value has no PublicIPv6 and BackendV6Data to reach it`);
  if (l.attrs.v6.vni !== p.vni) return r("vni_mismatch", `BackendV6Data.VNI ${l.attrs.v6.vni} is not the cluster's VNI ${p.vni}`);
  const mac = l.attrs.v6.vtepMac;
  if (((mac[0] ?? 1) & 1) !== 0 || mac.every((b) => b === 0)) return r("vtep_mac_not_unicast", "BackendV6Data.VtepMAC is a multicast, broadcast or all-zero address");
  if (!isUnicastIpv6(ip)) return r("public_ipv6_not_unicast", `PublicIPv6 ${formatIpv6(ip)} is not a global or unique-local unicast address`);
  if (contains6(c.network, ip)) return r("public_ipv6_in_cluster", `PublicIPv6 ${formatIpv6(ip)} lies inside the cluster's IPv6Network ${net}: traffic to it would loop into the overlay`);
  if (self?.subnet6 && overlaps6(s, self.subnet6)) return r("overlaps_own_subnet", `IPv6 subnet ${text} overlaps this node's ${formatCidr6(self.subnet6)}`);
  if (self?.publicIpv6 !== undefined && ip === self.publicIpv6) return r("public_ip_is_ours", `PublicIPv6 ${formatIpv6(ip)} is this node's own address`);
  return undefined;
}

/** The IPv4 half: everything weft checked before IPv6. */
function checkV4(l: Lease, p: LeasePolicy, self: SelfLease | undefined, r: Reject): Rejection | undefined {
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
    if (overlaps(s, self.subnet)) {
      return r("overlaps_own_subnet", `subnet ${formatCidr(s)} overlaps this node's subnet ${formatCidr(self.subnet)}`);
    }
    if (ip === self.publicIp) return r("public_ip_is_ours", `PublicIP ${formatIpv4(ip)} is this node's own address`);
  }
  return undefined;
}

/** Our own key: our subnet(s) and our public address(es). Neither a route nor a rejection. */
export function isOwnLease(l: Lease, self: SelfLease | undefined): boolean {
  return self !== undefined && l.subnet.addr === self.subnet.addr && l.subnet.len === self.subnet.len && l.attrs.publicIp === self.publicIp &&
    l.subnet6?.addr === self.subnet6?.addr && l.subnet6?.len === self.subnet6?.len && l.attrs.publicIpv6 === self.publicIpv6;
}
