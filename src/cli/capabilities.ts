/**
 * What weft can do today. The README's status table is checked against this
 * list by test/cli.test.ts, and `weft status --capabilities` prints it, so the
 * two cannot drift apart. Keep it true: "done" only with tests in CI.
 */
export type Status = "done" | "partial" | "not yet";

export interface Capability {
  readonly area: string;
  readonly name: string;
  readonly status: Status;
  readonly note: string;
}

export const CAPABILITIES: readonly Capability[] = [
  { area: "skeleton", name: "CLI, build, CI", status: "done", note: "`npm run setup`, `npm test`, `.ci/run`, `npx weft --help`" },
  { area: "wasm", name: "IPv4 longest-prefix match", status: "done", note: "DIR-16-8-8 with group folding; batch lookups" },
  { area: "wasm", name: "VXLAN encap (payload and frame mode)", status: "done", note: "flow-hash source port, outer IPv4/UDP, tshark-verified" },
  { area: "wasm", name: "VXLAN decap with anti-spoofing", status: "done", note: "Linux vxlan_rcv checks + subnet check per sending node" },
  { area: "wasm", name: "Internet checksum, incremental update", status: "done", note: "RFC 1071 / RFC 1624" },
  { area: "control", name: "flannel-compatible subnet leases in etcd", status: "done", note: "acquire/renew/re-acquire, reservations, watch with compaction recovery" },
  { area: "control", name: "route table + kernel vxlan backend", status: "done", note: "flanneld's objects; DirectRouting; reconcile; ip-masq (nftables)" },
  { area: "control", name: "weft agent, health, metrics, status", status: "done", note: "/healthz /readyz /metrics; `weft status` over a unix socket" },
  { area: "control", name: "netns cluster harness + `npm start` demo", status: "done", note: "hub bridge, real etcd, agents per node, pods; live table" },
  { area: "ebpf", name: "tc fast path (from-pod, from-overlay, to-overlay)", status: "done", note: "collect_md VXLAN device, anti-spoofing, pinned maps + tcx links survive restarts; bulk TCP on par with kernel vxlan, lower RTT" },
  { area: "tun", name: "userspace TUN fallback", status: "done", note: "WASM encap/decap with TSO/GRO offloads, sendmmsg/UDP_SEGMENT, recvmmsg/UDP_GRO; 0.6x kernel vxlan" },
  { area: "ipam", name: "per-node IPAM + CNI plugins", status: "done", note: "crash-safe journal, pools by namespace/labels, GC + netns reconciler; `weft`, `weft-ipam` (CNI 1.1, C client); ADD p50 1.5x faster than host-local" },
  { area: "dns", name: "service registry + node-local DNS", status: "done", note: "etcd registry + `weft svc` (put/rm/ls/watch); Kubernetes DNS spec zone, forwarder, cache with serve-stale; recvmmsg/sendmmsg batches, faster than unbound" },
];

/** Renders the table as Markdown (the README embeds exactly this). */
export function capabilityTable(): string {
  const rows = CAPABILITIES.map((c) => `| ${c.area} | ${c.name} | ${c.status} | ${c.note} |`);
  return ["| area | capability | status | note |", "| --- | --- | --- | --- |", ...rows].join("\n");
}
