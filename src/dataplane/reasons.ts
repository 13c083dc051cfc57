/**
 * The one vocabulary of per-packet reasons, shared by every data path: the
 * WASM core (asm/abi.ts R_*, counter slot -r), the eBPF programs (enum
 * weft_reason in bpf/lib/common.h, counter slot = the enum value), `weft
 * status` (bpf_<reason>, tun_tx_<reason>, tun_rx_<reason>) and the tests. A
 * concept has one name on every path: a packet from an underlay address that
 * is no node is `unknown_node` whether WASM or eBPF saw it.
 * test/structure/reasons.test.ts checks both lists against their C and
 * AssemblyScript sources.
 */
export const PACKET_REASONS = {
  // taken
  ok: "taken: encapsulated, or decapsulated for a known node",
  forwarded: "a pod's packet sent into the overlay",
  delivered: "redirected straight into a local pod",
  passed: "handed to the kernel stack",
  to_overlay: "a host packet given a tunnel key at the overlay device's egress",
  // refused
  bad_desc: "a descriptor points outside the packet region, or has no headroom",
  truncated: "shorter than the headers it must hold",
  not_ipv4: "neither IPv4 nor IPv6 (inner EtherType or IP version; the name predates IPv6)",
  malformed: "an IPv4, IPv6, TCP or UDP header whose lengths do not add up",
  no_route: "no node owns the destination",
  local: "the destination is this node's own subnet (not encapsulated)",
  too_big: "the packet or its segments would not fit (65535 bytes, the device MTU)",
  bad_flags: "VXLAN I flag clear, or a reserved bit set (as Linux vxlan)",
  bad_vni: "another VNI",
  bad_dst_mac: "an inner frame not addressed to our VTEP MAC",
  looped: "an inner frame from our own VTEP MAC (as Linux vxlan)",
  bad_csum: "a wrong inner IPv4 header checksum",
  unknown_node: "the outer source address is no node of the cluster",
  spoofed: "the inner source is outside the sending node's subnet",
  pod_spoofed: "a pod sent from an address that is not its own",
  ecn: "outer CE on a not-ECT inner packet (RFC 6040)",
  bad_l4_csum: "a wrong inner TCP/UDP checksum the sender did not leave partial",
  bad_vnet: "a virtio_net_hdr that does not fit its packet",
  no_tunnel: "an overlay packet without tunnel metadata",
  redirect_failed: "a redirect or tunnel-key helper failed",
} as const;

export type PacketReason = keyof typeof PACKET_REASONS;

/** The WASM core's counter slots: index i counts result -i (slot 0: taken). In asm/abi.ts R_* order. */
export const WASM_REASONS = [
  "ok", "bad_desc", "truncated", "not_ipv4", "malformed", "no_route", "local", "too_big", "bad_flags", "bad_vni",
  "bad_dst_mac", "looped", "bad_csum", "unknown_node", "spoofed", "ecn", "bad_l4_csum", "bad_vnet",
] as const satisfies readonly PacketReason[];

/** The eBPF programs' counter slots, index = enum weft_reason (bpf/lib/common.h). */
export const BPF_REASONS = [
  "forwarded", "delivered", "passed", "to_overlay", "malformed", "bad_vni", "bad_dst_mac",
  "unknown_node", "spoofed", "pod_spoofed", "no_route", "no_tunnel", "redirect_failed",
] as const satisfies readonly PacketReason[];
