import { formatIpv4, formatMac, parseIpv4, parseMac, type Ipv4Prefix } from "../common/ipv4.js";
import { WeftError } from "../common/errors.js";
import { formatIpv6, parseIpv6, type Ipv6Prefix } from "../common/ipv6.js";

/**
 * Subnet leases in flannel's format. Key: `<prefix>/subnets/a.b.c.d-len`,
 * and for a dual-stack lease `a.b.c.d-len&<v6>-<len>` (flannel's
 * MakeSubnetKey; the v6 address as Go prints it). An IPv6-only lease keeps
 * an empty IPv4 part, `0.0.0.0-0&<v6>-<len>`, as flannel writes it. Value:
 * {"PublicIP":"…","PublicIPv6":null|"…","BackendType":"vxlan",
 *  "BackendData":{"VNI":1,"VtepMAC":"…"},"BackendV6Data":{"VNI":1,"VtepMAC":"…"}}
 * (BackendData only when the lease has IPv4, BackendV6Data only with IPv6).
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

/** The key of a lease: the IPv4 part (0.0.0.0-0 on an IPv6-only network) and, with IPv6, `&<v6>-<len>`. */
export function subnetKey(p: Ipv4Prefix, p6?: Ipv6Prefix): string {
  const v4 = `${formatIpv4(p.addr)}-${p.len}`;
  return p6 === undefined ? v4 : `${v4}&${formatIpv6(p6.addr)}-${p6.len}`;
}

/** The IPv4 part of an IPv6-only lease's key. */
export const NO_IPV4: Ipv4Prefix = { addr: 0, len: 0 };

/** True for the empty IPv4 part of an IPv6-only lease (0.0.0.0-0). */
export function isNoIpv4(p: Ipv4Prefix): boolean {
  return p.addr === 0 && p.len === 0;
}

/** Both subnets a key names, or undefined when the key is not a subnet key. */
export function parseLeaseKey(key: string): { subnet: Ipv4Prefix; subnet6: Ipv6Prefix | undefined } | undefined {
  const subnet = parseSubnetKey(key);
  if (!subnet) return undefined;
  const m = KEY.exec(key);
  if (m?.[3] === undefined) return { subnet, subnet6: undefined };
  try {
    return { subnet, subnet6: { addr: parseIpv6(m[3]), len: Number(m[4]) } };
  } catch {
    return undefined;
  }
}

/** The subnet a key names, or undefined when the key is not a subnet key. */
export function parseSubnetKey(key: string): Ipv4Prefix | undefined {
  const m = KEY.exec(key);
  if (!m) return undefined;
  const len = Number(m[2]);
  if (len > 32 || (m[2] ?? "").startsWith("0") && len !== 0) return undefined;
  if (m[4] !== undefined && (Number(m[4]) > 128 || (m[4].startsWith("0") && m[4] !== "0"))) return undefined;
  try {
    return { addr: parseIpv4(m[1] ?? ""), len };
  } catch {
    return undefined;
  }
}

/**
 * The lease value, field for field as flannel's LeaseAttrs marshals:
 * PublicIP always; PublicIPv6 null without IPv6; BackendData only when the
 * lease has IPv4 (an IPv6-only lease has publicIp 0); BackendV6Data only
 * with IPv6.
 */
export function encodeLeaseAttrs(a: LeaseAttrs): string {
  const doc: Record<string, unknown> = {
    PublicIP: formatIpv4(a.publicIp),
    PublicIPv6: a.publicIpv6 === undefined ? null : formatIpv6(a.publicIpv6),
    BackendType: a.backendType,
  };
  if (a.publicIp !== 0 || a.v6 === undefined) doc["BackendData"] = { VNI: a.vni, VtepMAC: formatMac(a.vtepMac) };
  if (a.v6 !== undefined) doc["BackendV6Data"] = { VNI: a.v6.vni, VtepMAC: formatMac(a.v6.vtepMac) };
  return JSON.stringify(doc);
}

/** VNI and VtepMAC of a BackendData / BackendV6Data object. */
function backendData(bd: unknown, field: string): { vni: number; vtepMac: Uint8Array } {
  if (typeof bd !== "object" || bd === null || Array.isArray(bd)) throw new LeaseFormatError("bad_value", `vxlan lease has no ${field} object`);
  const d = bd as Record<string, unknown>;
  const vni = d["VNI"] ?? 1;
  if (typeof vni !== "number" || !Number.isInteger(vni) || vni < 0 || vni > 0xffffff) throw new LeaseFormatError("bad_value", `lease ${field}.VNI ${JSON.stringify(vni)} is not valid`);
  if (typeof d["VtepMAC"] !== "string") throw new LeaseFormatError("bad_value", `vxlan lease has no ${field}.VtepMAC`);
  try {
    return { vni, vtepMac: parseMac(d["VtepMAC"]) };
  } catch (e) {
    throw new LeaseFormatError("bad_value", `lease ${field}.VtepMAC: ${(e as Error).message}`);
  }
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
  let publicIpv6: bigint | undefined;
  const p6 = o["PublicIPv6"];
  if (p6 !== undefined && p6 !== null) {
    if (typeof p6 !== "string") throw new LeaseFormatError("bad_value", `lease PublicIPv6 ${JSON.stringify(p6)} is not a string`);
    try {
      publicIpv6 = parseIpv6(p6);
    } catch (e) {
      throw new LeaseFormatError("bad_value", `lease PublicIPv6: ${(e as Error).message}`);
    }
  }
  const v6 = o["BackendV6Data"] === undefined || o["BackendV6Data"] === null ? undefined : backendData(o["BackendV6Data"], "BackendV6Data");
  if (v6 !== undefined && publicIpv6 === undefined) throw new LeaseFormatError("bad_value", "lease has BackendV6Data but no PublicIPv6");
  // An IPv6-only lease (PublicIP 0.0.0.0) carries no BackendData; its v4 fields mirror the v6 device's.
  const v4 = o["BackendData"] === undefined && publicIp === 0 && v6 !== undefined ? v6 : backendData(o["BackendData"], "BackendData");
  return { publicIp, backendType, vni: v4.vni, vtepMac: v4.vtepMac, ...(publicIpv6 !== undefined ? { publicIpv6 } : {}), ...(v6 ? { v6 } : {}) };
}

export function sameAttrs(a: LeaseAttrs, b: LeaseAttrs): boolean {
  return a.publicIp === b.publicIp && a.backendType === b.backendType && a.vni === b.vni &&
    formatMac(a.vtepMac) === formatMac(b.vtepMac) && a.publicIpv6 === b.publicIpv6 &&
    a.v6?.vni === b.v6?.vni && (a.v6 === undefined ? "" : formatMac(a.v6.vtepMac)) === (b.v6 === undefined ? "" : formatMac(b.v6.vtepMac));
}
