import { TYPE } from "../wire/constants.js";

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
  prefetches = 0;

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
