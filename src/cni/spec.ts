/**
 * The parts of the CNI specification (SPEC.md, 0.3.1 to 1.1.0) that weft's
 * plugins speak: versions, well-known error codes, and results encoded for
 * the version the runtime asked for.
 */

/** Versions whose configs weft accepts. */
export const SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] as const;
export type CniVersion = (typeof SUPPORTED_VERSIONS)[number];
export const LATEST_VERSION: CniVersion = "1.1.0";

import { CNI_CODE, type CniCode } from "../common/cni-codes.js";

export { CNI_CODE, type CniCode };

/**
 * Which input of an invocation a refusal was about: the `reason` label of
 * weft_cni_refusals_total. A fixed set, so a hostile runtime cannot grow
 * the metric's series.
 */
export type CniInput =
  | "command" | "invocation" | "stdin" | "version" | "config" | "ipam" | "bridge" | "mtu" | "dns" | "prevResult"
  | "args" | "requested" | "containerid" | "ifname" | "netns" | "attachments";

/** An error a plugin reports: printed as the spec's error JSON on stdout, with a non-zero exit. */
export class CniError extends Error {
  readonly code = "WEFT_CNI_ERROR";
  /** `input`: set when the request was refused for a bad input (counted by reason). */
  constructor(readonly cniCode: CniCode, message: string, readonly details?: string, readonly input?: CniInput) {
    super(message);
    this.name = "CniError";
  }

  toJSON(version: string): Record<string, unknown> {
    return { cniVersion: version, code: this.cniCode, msg: this.message, ...(this.details ? { details: this.details } : {}) };
  }
}

export function isSupportedVersion(v: unknown): v is CniVersion {
  return typeof v === "string" && (SUPPORTED_VERSIONS as readonly string[]).includes(v);
}

/** a < b for the dotted versions above. */
export function versionBefore(a: string, b: string): boolean {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < 3; i++) {
    const x = pa[i] ?? 0;
    const y = pb[i] ?? 0;
    if (x !== y) return x < y;
  }
  return false;
}

export interface CniInterface {
  readonly name: string;
  readonly mac?: string;
  readonly mtu?: number;
  readonly sandbox?: string;
}

export interface CniIpConfig {
  /** "a.b.c.d/len" */
  readonly address: string;
  readonly gateway?: string;
  /** Index into interfaces. */
  readonly interface?: number;
}

export interface CniRoute {
  readonly dst: string;
  readonly gw?: string;
}

export interface CniDns {
  readonly nameservers?: readonly string[];
  readonly domain?: string;
  readonly search?: readonly string[];
  readonly options?: readonly string[];
}

export interface CniResult {
  readonly interfaces?: readonly CniInterface[];
  readonly ips: readonly CniIpConfig[];
  readonly routes?: readonly CniRoute[];
  readonly dns?: CniDns;
}

/**
 * A result in the shape `version` prescribes: 0.3.x and 0.4.0 carry
 * "version": "4" or "6" in each IP entry, 1.x dropped it; interface mtu is 1.1.0's.
 */
export function encodeResult(r: CniResult, version: CniVersion): Record<string, unknown> {
  const v1 = !versionBefore(version, "1.0.0");
  const v11 = !versionBefore(version, "1.1.0");
  const out: Record<string, unknown> = { cniVersion: version };
  if (r.interfaces && r.interfaces.length > 0) {
    out["interfaces"] = r.interfaces.map((i) => {
      const e: Record<string, unknown> = { name: i.name };
      if (i.mac) e["mac"] = i.mac;
      if (v11 && i.mtu) e["mtu"] = i.mtu;
      if (i.sandbox) e["sandbox"] = i.sandbox;
      return e;
    });
  }
  out["ips"] = r.ips.map((ip) => ({ ...(v1 ? {} : { version: ip.address.includes(":") ? "6" : "4" }), ...ip }));
  if (r.routes && r.routes.length > 0) out["routes"] = r.routes;
  out["dns"] = r.dns ?? {};
  return out;
}

/** The VERSION command's answer. */
export function versionInfo(version: string = LATEST_VERSION): Record<string, unknown> {
  return { cniVersion: version, supportedVersions: [...SUPPORTED_VERSIONS] };
}
