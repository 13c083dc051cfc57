// The contract between the agent and a data-path backend, after flannel's
// pkg/backend: a Backend registers once and yields a Network; the Network
// receives route-table diffs. Types only: every backend (kernel vxlan, eBPF,
// TUN) implements these and plugs into the same place in the agent.
import type { Logger } from "../common/log.js";
import type { RouteDiff } from "../routes/table.js";
import type { Lease, LeaseAttrs } from "../subnet/lease.js";
import type { NetworkConfig } from "../subnet/network-config.js";

export type BackendName = "vxlan" | "ebpf" | "tun";

/** The node's underlay interface, as the agent chose it. */
export interface ExternalInterface {
  readonly name: string;
  readonly index: number;
  /** The interface's IPv4 address and prefix length (the VXLAN source address). */
  readonly addr: number;
  readonly prefixLen: number;
  /** Address other nodes send to (--public-ip, else addr). */
  readonly publicIp: number;
  /** The interface's global IPv6 address, when it has one (the IPv6 VXLAN source address). */
  readonly addr6?: bigint | undefined;
  /** IPv6 address other nodes send to (--public-ipv6, else addr6); set when the cluster runs IPv6. */
  readonly publicIpv6?: bigint | undefined;
  readonly mtu: number;
}

/** A local pod, as the CNI side (or the harness) reports it. */
export interface EndpointSpec {
  /** The pod's IPv4 address; undefined in an IPv6-only cluster. */
  readonly ip: number | undefined;
  /** The pod's IPv6 address, when the cluster runs IPv6. */
  readonly ip6?: bigint | undefined;
  /** Host-side interface of the pod's veth pair. */
  readonly ifname: string;
  /** The pod's own MAC. */
  readonly mac: Uint8Array;
}

/** Which pod an endpoint removal names: its addresses, one per family it has. */
export interface EndpointKey {
  readonly ip?: number | undefined;
  readonly ip6?: bigint | undefined;
}

export interface RegisterContext {
  readonly config: NetworkConfig;
  readonly iface: ExternalInterface;
  /** Where a backend keeps what must survive restarts (e.g. its VTEP MAC). */
  readonly stateDir: string;
  /** A bpffs directory for pins that outlive the agent (ebpf backend). */
  readonly bpffs: string;
  /** How the ebpf backend attaches programs: tcx links, tc filters, or tcx when the kernel has it. */
  readonly bpfAttach: "auto" | "tcx" | "tc";
  /** The tun backend's busy polling after a packet, µs (0: off). */
  readonly tunBusyPollUs: number;
  readonly log: Logger;
}

export interface Backend {
  readonly name: BackendName;
  /**
   * Creates or adopts the node-level kernel objects and returns the Network.
   * Work done before a failure is undone.
   */
  register(ctx: RegisterContext): Promise<Network>;
}

export interface PeerCounts {
  readonly programmed: number;
  readonly failed: number;
}

export interface NetworkStatus {
  readonly backend: BackendName;
  readonly device: string;
  readonly mtu: number;
  readonly peers: PeerCounts;
  /** Backend-specific counters (e.g. per-reason packet counters). */
  readonly counters: Readonly<Record<string, number>>;
  /**
   * Which variant of each path that has a fast and a slow one is in use, in
   * words (e.g. {"attach": "tcx"}, {"offloads": "csum,tso4,tso6,uso4,uso6"}): never a
   * silent fallback.
   */
  readonly paths?: Readonly<Record<string, string>>;
}

export interface Network {
  readonly backend: BackendName;
  /** MTU for pods (underlay MTU minus the encapsulation). */
  readonly mtu: number;
  /** What this node publishes in its lease (BackendType, VNI, VTEP MAC). */
  readonly leaseAttrs: LeaseAttrs;
  /** Configures the node's own subnet on the data path (after the lease is acquired or changed). */
  configureLocal(lease: Lease): Promise<void>;
  /** Applies a diff of the other nodes' leases. */
  apply(diff: RouteDiff): Promise<void>;
  /**
   * A local pod appeared / went away. Backends whose pods sit on a bridge
   * the kernel routes for (vxlan) need nothing and leave these out.
   */
  addEndpoint?(e: EndpointSpec): Promise<void>;
  removeEndpoint?(e: EndpointKey): Promise<boolean>;
  /**
   * Optional: reads the data path for the next reconcile ahead of it and
   * compares it with `routes` (the table when the read begins), outside the
   * agent's apply queue, so that route changes do not wait behind a long
   * read (3 x 20,000 kernel objects for vxlan at scale). The reading goes to
   * that reconcile, which keeps only the fixes the routes of its own turn
   * still call for, and none for peers applied since the read began.
   */
  readForReconcile?(routes: readonly Lease[]): Promise<unknown>;
  /**
   * Makes the data path match `routes` exactly: recreates a deleted device,
   * adds what is missing, removes what is stale. Returns what it fixed.
   * `reading`: what readForReconcile returned (a backend ignores what it
   * does not recognize and reads for itself).
   */
  reconcile(routes: readonly Lease[], reading?: unknown): Promise<number>;
  status(): NetworkStatus;
  /** Stops background work; the data path stays in place so traffic flows while the agent restarts. */
  close(): Promise<void>;
}
