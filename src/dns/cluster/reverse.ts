import { nameToKey } from "../wire/query.js";

/** The wire-form key of ip6.arpa. */
export const IP6_ARPA_KEY = nameToKey("ip6.arpa");

/**
 * Why a name under ip6.arpa (its wire-form key, lower-cased) cannot exist,
 * or undefined when it can. RFC 3596 §2.5: every label below ip6.arpa is
 * one hex nibble, at most 32 of them (a whole address); a shorter run is a
 * prefix (a delegation point upstream), not a malformed name. Names that
 * cannot exist are answered NXDOMAIN here instead of being sent upstream.
 * A key not under ip6.arpa is not checked (undefined).
 */
export function ip6ArpaProblem(key: string): string | undefined {
  if (!key.endsWith(IP6_ARPA_KEY)) return undefined;
  const end = key.length - IP6_ARPA_KEY.length;
  let nibbles = 0;
  let p = 0;
  while (p < end) {
    const l = key.charCodeAt(p);
    if (p + l + 1 > end) return undefined; // the key only ends like ip6.arpa inside a longer label: not under it
    if (l !== 1) return `label ${nibbles + 1} ("${key.slice(p + 1, p + 1 + l)}") is not one hex digit`;
    const c = key.charCodeAt(p + 1);
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return `label ${nibbles + 1} ("${key[p + 1] ?? ""}") is not a hex digit`;
    if (++nibbles > 32) return "more than 32 nibbles (an IPv6 address has 32)";
    p += 2;
  }
  return undefined;
}
