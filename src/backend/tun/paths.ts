/**
 * The tun data path's fast and slow variants, in words for `weft status`
 * and the weft_datapath_variant metric (NetworkStatus.paths):
 *   offloads  the TUN_F_* flags the kernel took: "csum,tso4,tso6,uso4,uso6"
 *             (64 KB TCP and UDP super-packets of both families),
 *             "csum,tso4,tso6" (kernels before 6.2: UDP arrives one datagram
 *             per read)
 *   udp_gro   "on": equal datagrams of a flow arrive coalesced in one receive
 *             buffer; "off": one datagram per receive
 *   udp_gso_segs  datagrams one UDP_SEGMENT send carries: "128", or "64" on
 *             kernels whose UDP_MAX_SEGMENTS is 64 (twice the sends for small
 *             segments)
 * UDP_SEGMENT itself has no variant: the shim always uses it.
 */

/** linux/if_tun.h */
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_USO4 = 0x20;
export const TUN_F_USO6 = 0x40;

/** Every variant at its fastest. */
export const TUN_FAST_PATHS: Readonly<Record<string, string>> = { offloads: "csum,tso4,tso6,uso4,uso6", udp_gro: "on", udp_gso_segs: "128" };

export function tunPaths(offloadFlags: number, udpGro: boolean, udpSegs: number): Record<string, string> {
  const on = ([["csum", TUN_F_CSUM], ["tso4", TUN_F_TSO4], ["tso6", TUN_F_TSO6], ["uso4", TUN_F_USO4], ["uso6", TUN_F_USO6]] as const).filter(([, f]) => (offloadFlags & f) !== 0).map(([n]) => n);
  return { offloads: on.length > 0 ? on.join(",") : "none", udp_gro: udpGro ? "on" : "off", udp_gso_segs: String(udpSegs) };
}

/** One warning per variant that is not the fast one, saying why it matters. */
export function slowPathWarnings(paths: Readonly<Record<string, string>>): { path: string; variant: string; why: string }[] {
  const out: { path: string; variant: string; why: string }[] = [];
  if (paths["offloads"] !== TUN_FAST_PATHS["offloads"]) {
    out.push({
      path: "offloads", variant: paths["offloads"] ?? "none",
      why: "the kernel refused some TUN offloads (USO4/USO6 need Linux 6.2): packets without them are read one by one, not as 64 KB super-packets",
    });
  }
  if (paths["udp_gro"] !== "on") {
    out.push({ path: "udp_gro", variant: paths["udp_gro"] ?? "off", why: "the kernel refused UDP_GRO on the VXLAN socket: one datagram per receive, no coalescing into TSO writes" });
  }
  if (paths["udp_gso_segs"] !== TUN_FAST_PATHS["udp_gso_segs"]) {
    out.push({
      path: "udp_gso_segs", variant: paths["udp_gso_segs"] ?? "64",
      why: "this kernel's UDP_SEGMENT sends carry at most 64 datagrams (newer kernels 128): small segments take twice the sends",
    });
  }
  return out;
}
