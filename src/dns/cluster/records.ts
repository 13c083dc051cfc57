import { isIPv4 } from "node:net";
import { ipv6Bytes, type Record_ } from "../wire/writer.js";
import { TYPE } from "../wire/constants.js";

/** What the cluster zone is built from (structurally the registry's Service and Endpoint). */
export interface ZonePort {
  readonly name?: string | undefined;
  readonly protocol: string;
  readonly port: number;
}
export interface ZoneService {
  readonly namespace: string;
  readonly name: string;
  readonly type: "ClusterIP" | "Headless" | "ExternalName";
  readonly clusterIPs: readonly string[];
  readonly externalName?: string | undefined;
  readonly ports: readonly ZonePort[];
  readonly publishNotReadyAddresses: boolean;
}
export interface ZoneEndpoint {
  readonly namespace: string;
  readonly service: string;
  readonly id: string;
  readonly addresses: readonly string[];
  readonly hostname?: string | undefined;
  readonly ready: boolean;
  readonly ports: readonly ZonePort[];
}

/** An address record for `name`: A or AAAA by the address family. */
export function addressRecord(name: string, ip: string, ttl: number): Record_ {
  return isIPv4(ip) ? { name, type: TYPE.A, ttl, data: { a: ip } } : { name, type: TYPE.AAAA, ttl, data: { aaaa: ip } };
}

/** The reverse-lookup name of an address (in-addr.arpa, or ip6.arpa nibbles). */
export function reverseName(ip: string): string {
  if (isIPv4(ip)) return `${ip.split(".").reverse().join(".")}.in-addr.arpa`;
  const bytes = ipv6Bytes(ip);
  const nibbles: string[] = [];
  for (let i = 15; i >= 0; i--) {
    nibbles.push((bytes[i]! & 0xf).toString(16), (bytes[i]! >> 4).toString(16));
  }
  return `${nibbles.join(".")}.ip6.arpa`;
}

/** A DNS label for an address, as CoreDNS names endpoints without a hostname: 198-18-1-5, or the IPv6 form with dashes. */
export function dashed(ip: string): string {
  return isIPv4(ip) ? ip.replace(/\./g, "-") : ip.replace(/:/g, "-");
}
