import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { DnsCache } from "./cache/cache.js";
import type { ForwardMetrics } from "./forward/forwarder.js";
import { RCODE_NAME } from "./wire/constants.js";
import { DnsCounters } from "./server/counters.js";

/**
 * DNS metrics modelled on CoreDNS's (coredns_dns_requests_total,
 * coredns_dns_responses_total, coredns_cache_*, coredns_forward_*): the hot
 * path bumps plain counters, read here at scrape time.
 */
export function registerDnsMetrics(registry: Registry, counters: DnsCounters, cache: DnsCache): ForwardMetrics {
  const registers = [registry];
  new Counter({
    name: "weft_dns_requests_total", help: "DNS requests by transport and query type", labelNames: ["proto", "type"], registers,
    collect() {
      this.reset();
      counters.requests.forEach((arr, p) => arr.forEach((v, i) => v && this.inc({ proto: p ? "tcp" : "udp", type: DnsCounters.typeLabel(i) }, v)));
    },
  });
  new Counter({
    name: "weft_dns_responses_total", help: "DNS responses by rcode", labelNames: ["rcode"], registers,
    collect() {
      this.reset();
      counters.responses.forEach((v, r) => v && this.inc({ rcode: RCODE_NAME[r] ?? String(r) }, v));
    },
  });
  new Counter({
    name: "weft_dns_dropped_total", help: "Datagrams dropped without an answer (not a query, shorter than a header)", registers,
    collect() { this.reset(); this.inc(counters.dropped); },
  });
  new Counter({
    name: "weft_dns_refused_clients_total", help: "Queries refused because the client is not in the allowed networks", registers,
    collect() { this.reset(); this.inc(counters.refusedClients); },
  });
  new Counter({
    name: "weft_dns_cluster_answers_total", help: "Answers from the cluster zone (registry)", registers,
    collect() { this.reset(); this.inc(counters.zoneAnswers); },
  });
  new Counter({ name: "weft_dns_cache_hits_total", help: "Cache hits", registers, collect() { this.reset(); this.inc(cache.hits); } });
  new Counter({ name: "weft_dns_cache_misses_total", help: "Cache misses", registers, collect() { this.reset(); this.inc(cache.misses); } });
  new Counter({ name: "weft_dns_cache_stale_served_total", help: "Expired entries served while upstreams failed (RFC 8767)", registers, collect() { this.reset(); this.inc(cache.staleServed); } });
  new Counter({ name: "weft_dns_cache_prefetch_total", help: "Popular entries refreshed before expiry", registers, collect() { this.reset(); this.inc(counters.prefetches); } });
  new Counter({ name: "weft_dns_cache_evictions_total", help: "Entries evicted for capacity", registers, collect() { this.reset(); this.inc(cache.evictions); } });
  new Gauge({ name: "weft_dns_cache_entries", help: "Entries in the cache", registers, collect() { this.set(cache.size); } });
  const upstream = new Histogram({
    name: "weft_dns_upstream_request_seconds", help: "Upstream query time by upstream and rcode (timeout included)", labelNames: ["upstream", "rcode"],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2], registers,
  });
  const health = new Counter({ name: "weft_dns_upstream_healthcheck_failures_total", help: "Failed health checks by upstream", labelNames: ["upstream"], registers });
  const rejected = new Counter({ name: "weft_dns_upstream_rejected_replies_total", help: "Upstream replies dropped (unknown ID, wrong source, question mismatch, malformed)", labelNames: ["reason"], registers });
  return {
    upstreamSeconds: (u, rcode, s) => upstream.observe({ upstream: u, rcode: RCODE_NAME[Number(rcode)] ?? rcode }, s),
    healthCheckFailed: (u) => health.inc({ upstream: u }),
    rejectedReply: (reason) => rejected.inc({ reason }),
  };
}
