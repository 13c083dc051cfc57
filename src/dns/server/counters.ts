import { TYPE } from "../wire/constants.js";

/** Why the server closed a TCP connection (weft_dns_tcp_closed_total{reason}). */
export const TCP_CLOSE_REASONS = ["deadline", "idle", "client_cap", "total_cap", "acl", "backpressure", "partial", "malformed"] as const;
export type TcpCloseReason = (typeof TCP_CLOSE_REASONS)[number];

/** What kind of impossible name was asked (weft_dns_invalid_names_total{kind}). */
export const INVALID_NAME_KINDS = ["pod", "ip6_arpa"] as const;
export type InvalidNameKind = (typeof INVALID_NAME_KINDS)[number];

const TYPES = ["A", "AAAA", "SRV", "PTR", "TXT", "CNAME", "NS", "SOA", "MX", "ANY"] as const;
const TYPE_INDEX = new Map<number, number>(TYPES.map((t, i) => [TYPE[t], i]));

/**
 * Plain counters the hot path bumps (no label hashing per query); the
 * metrics module reads them when scraped.
 */
export class DnsCounters {
  /** [proto udp=0 tcp=1][type index, last = other] */
  readonly requests = [new Float64Array(TYPES.length + 1), new Float64Array(TYPES.length + 1)];
  /** by rcode 0-16 (16: BADVERS, an extended rcode) */
  readonly responses = new Float64Array(17);
  dropped = 0;
  refusedClients = 0;
  notSynced = 0;
  zoneAnswers = 0;
  /**
   * Names answered NXDOMAIN because they cannot be what they claim: a pod
   * name whose first label spells no address (pod), a name under ip6.arpa
   * that is not nibbles (ip6_arpa, answered here, not forwarded).
   */
  readonly invalidNames: Record<InvalidNameKind, number> = { pod: 0, ip6_arpa: 0 };
  prefetches = 0;
  /** Requests answered at once (SERVFAIL, or stale) because too many already waited for upstream answers. */
  shed = 0;
  /** Requests waiting for an upstream answer now. */
  waiting = 0;
  /** Cache entries being refreshed in the background now (prefetch, or behind a stale answer). */
  refreshing = 0;
  /**
   * TCP connections closed by the server, by reason: a message not complete
   * within the read timeout of its first byte, idle, evicted at the
   * per-client or the total cap, refused by the ACL at accept, stuck with
   * unsent answers (backpressure), the client closed in the middle of a
   * message (partial), or a frame too short to be a DNS message (malformed).
   */
  readonly tcpClosed: Record<TcpCloseReason, number> = { deadline: 0, idle: 0, client_cap: 0, total_cap: 0, acl: 0, backpressure: 0, partial: 0, malformed: 0 };

  request(tcp: boolean, qtype: number): void {
    this.requests[tcp ? 1 : 0]![TYPE_INDEX.get(qtype) ?? TYPES.length]!++;
  }

  response(rcode: number): void {
    if (rcode >= 0 && rcode < this.responses.length) this.responses[rcode]!++;
  }

  static typeLabel(i: number): string {
    return TYPES[i] ?? "other";
  }
}
