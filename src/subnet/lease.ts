import { formatIpv4, formatMac, parseIpv4, parseMac, type Ipv4Prefix } from "../common/ipv4.js";
import { WeftError } from "../common/errors.js";
import type { Ipv6Prefix } from "../common/ipv6.js";

/**
 * Subnet leases in flannel's format. Key: `<prefix>/subnets/a.b.c.d-len`
 * (a dual-stack key adds `&<v6>-<len>`; weft reads its IPv4 part). Value:
 * {"PublicIP":"…","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"…"}}
 */
export interface LeaseAttrs {
  /** IPv4 underlay address (PublicIP); 0 ("0.0.0.0") on an IPv6-only network. */
  readonly publicIp: number;
  readonly backendType: string;
  /** For vxlan leases: the VNI and VTEP MAC from BackendData (the IPv4 device's). */
  readonly vni: number;
  readonly vtepMac: Uint8Array;
  /** IPv6 underlay address (PublicIPv6), when the node runs IPv6. */
  readonly publicIpv6?: bigint | undefined;
  /** BackendV6Data: the IPv6 device's VNI and VTEP MAC, when the node runs IPv6. */
  readonly v6?: { readonly vni: number; readonly vtepMac: Uint8Array } | undefined;
}

export interface Lease {
  /** The etcd key, relative to the subnets prefix (`198.18.5.0-24`, or flannel's dual-stack `…&<v6>-<len>`). */
  readonly key: string;
  /** The IPv4 subnet; 0.0.0.0/0 on an IPv6-only network (flannel's key has an empty IPv4 part then). */
  readonly subnet: Ipv4Prefix;
  /** The IPv6 subnet of a dual-stack or IPv6-only lease. */
  readonly subnet6?: Ipv6Prefix | undefined;
  readonly attrs: LeaseAttrs;
  /** etcd lease ID as a decimal string; "0" for a reservation (a key without a lease). */
  readonly leaseId: string;
  readonly modRevision: string;
  /** The key's etcd create revision: between two conflicting leases the older one wins. "0" when unknown. */
  readonly createRevision: string;
}

/** Why a lease key or value is not used (the `reason` label of weft_leases_rejected_total). */
export type LeaseDecodeReason = "bad_key" | "bad_value" | "foreign_backend";

/** A lease value that cannot be used (garbage JSON, a foreign backend). Skipped, never fatal. */
export class LeaseFormatError extends WeftError {
  readonly code = "WEFT_LEASE_INVALID";
  constructor(readonly reason: LeaseDecodeReason, message: string) {
    super(message);
  }
}

/**
 * A subnet key relative to the subnets prefix, whole: `a.b.c.d-len`, or
 * flannel's dual-stack form `a.b.c.d-len&<v6>-<len>` (weft reads the IPv4
 * part). flannel's own pattern is not anchored; weft's is, so a key such as
 * `x/198.18.1.0-24` or `198.18.1.0-24junk` names nothing.
 */
const KEY = /^(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})-(\d{1,2})(?:&([a-f\d:]{2,39})-(\d{1,3}))?$/;

export function subnetKey(p: Ipv4Prefix): string {
  return `${formatIpv4(p.addr)}-${p.len}`;
}

/** The subnet a key names, or undefined when the key is not a subnet key. */
export function parseSubnetKey(key: string): Ipv4Prefix | undefined {
  const m = KEY.exec(key);
  if (!m) return undefined;
  const len = Number(m[2]);
  if (len > 32 || (m[2] ?? "").startsWith("0") && len !== 0) return undefined;
  if (m[4] !== undefined && Number(m[4]) > 128) return undefined;
  try {
    return { addr: parseIpv4(m[1] ?? ""), len };
  } catch {
    return undefined;
  }
}

export function encodeLeaseAttrs(a: LeaseAttrs): string {
  return JSON.stringify({
    PublicIP: formatIpv4(a.publicIp),
    PublicIPv6: null,
    BackendType: a.backendType,
    BackendData: { VNI: a.vni, VtepMAC: formatMac(a.vtepMac) },
  });
}

/** Parses a lease value; throws LeaseFormatError saying what is wrong. */
export function parseLeaseAttrs(text: string): LeaseAttrs {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new LeaseFormatError("bad_value", `lease value is not JSON: ${(e as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null) throw new LeaseFormatError("bad_value", "lease value is not a JSON object");
  const o = raw as Record<string, unknown>;
  if (typeof o["PublicIP"] !== "string") throw new LeaseFormatError("bad_value", "lease has no PublicIP");
  let publicIp: number;
  try {
    publicIp = parseIpv4(o["PublicIP"]);
  } catch (e) {
    throw new LeaseFormatError("bad_value", `lease PublicIP: ${(e as Error).message}`);
  }
  const backendType = typeof o["BackendType"] === "string" ? o["BackendType"] : "";
  if (backendType !== "vxlan") throw new LeaseFormatError("foreign_backend", `lease backend type is ${JSON.stringify(o["BackendType"])}, not "vxlan"`);
  const bd = o["BackendData"];
  if (typeof bd !== "object" || bd === null) throw new LeaseFormatError("bad_value", "vxlan lease has no BackendData");
  const d = bd as Record<string, unknown>;
  const vni = d["VNI"] ?? 1;
  if (typeof vni !== "number" || !Number.isInteger(vni) || vni < 0 || vni > 0xffffff) throw new LeaseFormatError("bad_value", `lease VNI ${JSON.stringify(vni)} is not valid`);
  if (typeof d["VtepMAC"] !== "string") throw new LeaseFormatError("bad_value", "vxlan lease has no VtepMAC");
  let vtepMac: Uint8Array;
  try {
    vtepMac = parseMac(d["VtepMAC"]);
  } catch (e) {
    throw new LeaseFormatError("bad_value", `lease VtepMAC: ${(e as Error).message}`);
  }
  return { publicIp, backendType, vni, vtepMac };
}

export function sameAttrs(a: LeaseAttrs, b: LeaseAttrs): boolean {
  return a.publicIp === b.publicIp && a.backendType === b.backendType && a.vni === b.vni &&
    formatMac(a.vtepMac) === formatMac(b.vtepMac);
}
