import { isIPv4 } from "node:net";
import { formatIpv4 } from "../../common/ipv4.js";
import { formatIpv6, parseIpv6 } from "../../common/ipv6.js";

/** What the first label of `<label>.<ns>.pod.<zone>` stands for. */
export type PodLabel =
  /** `text`: the address as the label spells it (dashes back to dots or colons): what verified mode compares. */
  | { readonly ok: true; readonly family: 4 | 6; readonly address: string; readonly text: string }
  | { readonly ok: false; readonly why: string };

/**
 * The address a pod label spells, by the rules of CoreDNS's kubernetes
 * plugin (findPods): exactly three dashes and no "--" is IPv4 (dashes back
 * to dots), anything else is IPv6 (dashes back to colons, so "::" is "--":
 * 2001-db8--1 → 2001:db8::1). An IPv4-mapped IPv6 address (--ffff-c000-201)
 * is an IPv4 address as Go's net.IP.To4 sees it: an A record, 192.0.2.1.
 * `address` is canonical (RFC 5952 for IPv6); a label that spells no
 * address says why.
 */
export function podLabelAddress(label: string): PodLabel {
  const dashes = label.split("-").length - 1;
  if (dashes === 3 && !label.includes("--")) {
    const text = label.replace(/-/g, ".");
    if (!isIPv4(text)) return { ok: false, why: `"${label}" has three dashes but "${text}" is not an IPv4 address` };
    return { ok: true, family: 4, address: text, text };
  }
  if (dashes < 2) return { ok: false, why: `"${label}" is not an address with dashes for dots (198-18-1-5) or for colons (2001-db8--1)` };
  const text = label.replace(/-/g, ":");
  let v: bigint;
  try {
    v = parseIpv6(text);
  } catch (e) {
    return { ok: false, why: `"${label}" as IPv6 "${text}": ${(e as Error).message.replace(/ \(write it.*\)$/, "")}` };
  }
  if (v >> 32n === 0xffffn) return { ok: true, family: 4, address: formatIpv4(Number(v & 0xffffffffn)), text };
  return { ok: true, family: 6, address: formatIpv6(v), text };
}
