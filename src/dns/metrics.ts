import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { DnsCache } from "./cache/cache.js";
import type { ForwardMetrics } from "./forward/forwarder.js";
import { RCODE_NAME } from "./wire/constants.js";
import { DnsCounters, INVALID_NAME_KINDS, TCP_CLOSE_REASONS } from "./server/counters.js";
import type { UdpPath } from "./server/server.js";

/**
 * DNS metrics modelled on CoreDNS's (coredns_dns_requests_total,
 * coredns_dns_responses_total, coredns_cache_*, coredns_forward_*): the hot
 * path bumps plain counters, read here at scrape time.
 */
export function registerDnsMetrics(
  registry: Registry, counters: DnsCounters, cache: DnsCache, tcpConnections: () => number = () => 0, udpPaths: () => readonly UdpPath[] = () => [],
): ForwardMetrics {
  const registers = [registry];
  new Gauge({
    name: "weft_dns_udp_path", help: "1 for the UDP path each listen address is served by: batch (recvmmsg/sendmmsg, the fast path) or dgram (Node's socket, the fallback)",
    labelNames: ["listen", "path"], registers,
    collect() {
      this.reset();
      for (const p of udpPaths()) this.set({ listen: p.listen, path: p.path }, 1);
    },
  });
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
  new Counter({
    name: "weft_dns_invalid_names_total", labelNames: ["kind"], registers,
    help: "Names answered NXDOMAIN because they cannot exist: pod (<label>.<ns>.pod.<zone> whose label spells no IPv4 or IPv6 address), ip6_arpa (a name under ip6.arpa with a label that is not one hex nibble, or more than 32 of them; not forwarded)",
    collect() {
      this.reset();
      for (const k of INVALID_NAME_KINDS) this.inc({ kind: k }, counters.invalidNames[k]);
    },
  });
  new Counter({
    name: "weft_dns_tcp_closed_total", labelNames: ["reason"], registers,
    help: "TCP connections the server closed: deadline (message not complete within the read timeout of its first byte), idle, client_cap / total_cap (evicted for a new connection), acl (refused at accept), backpressure (unsent answers stuck), partial (client closed mid-message), malformed (frame shorter than a DNS header)",
    collect() {
      this.reset();
      for (const r of TCP_CLOSE_REASONS) this.inc({ reason: r }, counters.tcpClosed[r]);
    },
  });
  new Gauge({ name: "weft_dns_tcp_connections", help: "Open DNS-over-TCP connections", registers, collect() { this.set(tcpConnections()); } });
  new Counter({
    name: "weft_dns_shed_total", help: "Requests answered at once (SERVFAIL, or stale) because the bound of requests waiting for upstream answers was reached", registers,
    collect() { this.reset(); this.inc(counters.shed); },
  });
  new Gauge({ name: "weft_dns_waiting_requests", help: "Requests waiting for an upstream answer", registers, collect() { this.set(counters.waiting); } });
  new Gauge({ name: "weft_dns_cache_refreshing", help: "Cache entries being refreshed in the background (prefetch, or behind a stale answer)", registers, collect() { this.set(counters.refreshing); } });
  new Counter({ name: "weft_dns_cache_hits_total", help: "Cache hits", registers, collect() { this.reset(); this.inc(cache.hits); } });
  new Counter({ name: "weft_dns_cache_misses_total", help: "Cache misses", registers, collect() { this.reset(); this.inc(cache.misses); } });
  new Counter({ name: "weft_dns_cache_stale_served_total", help: "Expired entries served while upstreams failed (RFC 8767)", registers, collect() { this.reset(); this.inc(cache.staleServed); } });
  new Counter({ name: "weft_dns_cache_prefetch_total", help: "Popular entries refreshed before expiry", registers, collect() { this.reset(); this.inc(counters.prefetches); } });
  new Counter({ name: "weft_dns_cache_evictions_total", help: "Entries evicted for capacity", registers, collect() { this.reset(); this.inc(cache.evictions); } });
  new Gauge({ name: "weft_dns_cache_entries", help: "Entries in the cache", registers, collect() { this.set(cache.size); } });
  new Gauge({ name: "weft_dns_cache_bytes", help: "Bytes the cache holds (answers, keys and a fixed overhead per entry)", registers, collect() { this.set(cache.bytes); } });
  const upstream = new Histogram({
    name: "weft_dns_upstream_request_seconds", help: "Upstream query time by upstream and rcode (timeout included)", labelNames: ["upstream", "rcode"],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2], registers,
  });
  const health = new Counter({ name: "weft_dns_upstream_healthcheck_failures_total", help: "Failed health checks by upstream", labelNames: ["upstream"], registers });
  const rejected = new Counter({ name: "weft_dns_upstream_rejected_replies_total", help: "Upstream replies dropped (unknown ID, wrong source, question mismatch, malformed)", labelNames: ["reason"], registers });
  return {
    // An upstream's rcode is a label only when it is one we name: 4,096 extended rcodes would be 4,096 series.
    upstreamSeconds: (u, rcode, s) => upstream.observe({ upstream: u, rcode: /^\d+$/.test(rcode) ? RCODE_NAME[Number(rcode)] ?? "other" : rcode }, s),
    healthCheckFailed: (u) => health.inc({ upstream: u }),
    rejectedReply: (reason) => rejected.inc({ reason }),
  };
}
