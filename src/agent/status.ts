import { formatCidr, formatIpv4, formatMac } from "../common/ipv4.js";
import { formatCidr6, formatIpv6 } from "../common/ipv6.js";
import type { Network } from "../backend/types.js";
import type { DiscoverySummary } from "../discovery/service.js";
import type { DnsSummary } from "../dns/service.js";
import type { Rejection } from "../routes/accept.js";
import type { RouteTable } from "../routes/table.js";
import type { Lease } from "../subnet/lease.js";
import type { NetworkConfig } from "../subnet/network-config.js";
import type { AgentCounts } from "./metrics.js";
import type { Wait } from "./waits.js";

/**
 * What `weft status` and /readyz show: readiness by condition, the node's
 * lease and data path, its peers and rejected leases, counters, the data-path
 * variants in use, and what the agent waits for.
 */
export interface Readiness {
  readonly lease: boolean;
  readonly dataPath: boolean;
  readonly subnetFile: boolean;
  readonly etcd: boolean;
  readonly routesSynced: boolean;
  /** The service registry has been listed (DNS answers the cluster zone); absent with --dns-listen off. */
  readonly registrySynced?: boolean;
}

export interface AgentCounters {
  readonly ready: boolean;
  readonly readiness: Readiness;
  readonly routes: number;
  readonly counters: Record<string, number>;
  readonly waiting: Wait[];
}

export interface AgentStatus {
  readonly ready: boolean;
  readonly readiness: Readiness;
  readonly network: string | undefined;
  readonly subnet: string | undefined;
  /** The IPv6 half, when the network runs IPv6. */
  readonly network6?: string | undefined;
  readonly subnet6?: string | undefined;
  readonly publicIpv6?: string | undefined;
  readonly leaseSecondsLeft: number | undefined;
  readonly publicIp: string | undefined;
  readonly vtepMac: string | undefined;
  readonly backend: string | undefined;
  readonly backendChoice: string;
  readonly device: string | undefined;
  readonly mtu: number | undefined;
  /** The peers asked for (all of them unless the request gave a window), sorted by subnet. */
  readonly peers: { subnet: string; publicIp: string; vtepMac: string; subnet6?: string; publicIpv6?: string }[];
  /** How many peers there are, and where `peers` starts among them. */
  readonly peerCount: number;
  readonly peersFrom: number;
  /** Lease keys not used, with the reason (at most 200; `rejectedLeaseCount` has the total). */
  readonly rejectedLeases: Rejection[];
  readonly rejectedLeaseCount: number;
  readonly counters: Record<string, number>;
  /** Which variant of each fast/slow data path is in use (backend's NetworkStatus.paths). */
  readonly paths: Readonly<Record<string, string>>;
  /** What the agent waits for, with the last error and since when (empty when nothing). */
  readonly waiting: Wait[];
  /** The node-local DNS server (absent with --dns-listen off). */
  readonly dns?: DnsSummary | undefined;
  /** The discovery API (absent when off). */
  readonly discovery?: DiscoverySummary | undefined;
}

/** The agent's state a status document is made from. */
export interface StatusParts {
  readonly readiness: Readiness;
  readonly config: NetworkConfig | undefined;
  readonly lease: Lease | undefined;
  /** Seconds until our lease expires (Infinity for a reservation). */
  readonly secondsLeft: number | undefined;
  readonly network: Network | undefined;
  readonly backendChoice: string;
  readonly table: RouteTable;
  readonly counts: AgentCounts;
  readonly waiting: Wait[];
  readonly dns: DnsSummary | undefined;
  readonly discovery?: DiscoverySummary | undefined;
}

const REJECTIONS_SHOWN = 200;

export function isReady(r: Readiness): boolean {
  return Object.values(r).every(Boolean);
}

/** Readiness and counters without the peer list (cheap enough to poll). */
export function agentCounters(p: StatusParts): AgentCounters {
  const ns = p.network?.status();
  return {
    ready: isReady(p.readiness),
    readiness: p.readiness,
    routes: p.table.size,
    waiting: p.waiting,
    counters: {
      ...p.counts, leasesRejected: p.table.rejectedCount, peersProgrammed: ns?.peers.programmed ?? 0, peersFailed: ns?.peers.failed ?? 0, ...(ns?.counters ?? {}),
    },
  };
}

/** Which peers a status answer lists: `limit` of them from `offset` (sorted by subnet); all by default. */
export interface PeerWindow {
  readonly offset: number;
  readonly limit: number;
}

/** Everything, peers included (or the window of them asked for). */
export function agentStatus(p: StatusParts, window: PeerWindow = { offset: 0, limit: Infinity }): AgentStatus {
  const ns = p.network?.status();
  const v6 = (l: Lease): bigint => l.subnet6?.addr ?? 0n;
  const all = p.table.all().sort((a, b) => a.subnet.addr - b.subnet.addr || (v6(a) < v6(b) ? -1 : v6(a) > v6(b) ? 1 : 0));
  const from = Math.min(window.offset, all.length);
  const rejected = p.table.rejections();
  const left = p.secondsLeft;
  return {
    ready: isReady(p.readiness),
    readiness: p.readiness,
    network: p.config?.enableIpv4 ? formatCidr(p.config.network) : undefined,
    subnet: p.lease && p.config?.enableIpv4 !== false ? formatCidr(p.lease.subnet) : undefined,
    ...(p.config?.ipv6 ? {
      network6: formatCidr6(p.config.ipv6.network),
      subnet6: p.lease?.subnet6 ? formatCidr6(p.lease.subnet6) : undefined,
      publicIpv6: p.network?.leaseAttrs.publicIpv6 === undefined ? undefined : formatIpv6(p.network.leaseAttrs.publicIpv6),
    } : {}),
    leaseSecondsLeft: left === undefined ? undefined : Number.isFinite(left) ? Math.round(left) : -1,
    publicIp: p.network ? formatIpv4(p.network.leaseAttrs.publicIp) : undefined,
    vtepMac: p.network ? formatMac(p.network.leaseAttrs.vtepMac) : undefined,
    backend: ns?.backend,
    backendChoice: p.backendChoice,
    device: ns?.device,
    mtu: ns?.mtu,
    peers: all.slice(from, from + window.limit).map((l) => ({
      subnet: formatCidr(l.subnet), publicIp: formatIpv4(l.attrs.publicIp), vtepMac: formatMac(l.attrs.vtepMac),
      ...(l.subnet6 && l.attrs.publicIpv6 !== undefined ? { subnet6: formatCidr6(l.subnet6), publicIpv6: formatIpv6(l.attrs.publicIpv6) } : {}),
    })),
    peerCount: all.length,
    peersFrom: from,
    rejectedLeases: rejected.slice(0, REJECTIONS_SHOWN),
    rejectedLeaseCount: rejected.length,
    counters: agentCounters(p).counters,
    paths: ns?.paths ?? {},
    waiting: p.waiting,
    dns: p.dns,
    discovery: p.discovery,
  };
}
