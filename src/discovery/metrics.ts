import { Counter, Gauge, type Registry } from "prom-client";
import type { DiscoveryCounters } from "./counters.js";
import { REFUSALS } from "./errors.js";

/** What the scrape-time metrics read. */
export interface DiscoveryMetricsView {
  readonly counters: DiscoveryCounters;
  subscribers(): { tcp: number; unix: number };
  /** "ns/name" of each pod with publications → how many. */
  publicationsPerPod(): ReadonlyMap<string, number>;
  replay(): { entries: number; bytes: number };
}

/**
 * The discovery API's Prometheus metrics, computed at scrape time from the
 * counters (so /metrics and `weft status` cannot disagree). Label values are
 * fixed vocabularies, except `pod`: the node's own pods, by the namespace
 * and name their runtime gave at CNI ADD.
 */
export function registerDiscoveryMetrics(registry: Registry, view: DiscoveryMetricsView): void {
  const c = view.counters;
  const counter = (name: string, help: string, read: (m: Counter) => void, labelNames: string[] = []): void =>
    void new Counter({ name, help, labelNames, registers: [registry], collect() { this.reset(); read(this); } });
  const gauge = (name: string, help: string, read: (g: Gauge) => void, labelNames: string[] = []): void =>
    void new Gauge({ name, help, labelNames, registers: [registry], collect() { this.reset(); read(this); } });
  gauge("weft_discovery_subscribers", "Open discovery event streams, by transport", (g) => {
    const s = view.subscribers();
    g.set({ transport: "tcp" }, s.tcp);
    g.set({ transport: "unix" }, s.unix);
  }, ["transport"]);
  counter("weft_discovery_events_sent_total", "Change events written to discovery streams (one per stream that got it)", (m) => m.inc(c.eventsSent));
  counter("weft_discovery_snapshots_sent_total", "Discovery streams that began with a full snapshot, by reason", (m) => {
    for (const [k, v] of Object.entries(c.snapshots)) m.inc({ reason: k }, v);
  }, ["reason"]);
  counter("weft_discovery_resumed_total", "Discovery streams resumed from Last-Event-ID without a snapshot", (m) => m.inc(c.resumed));
  counter("weft_discovery_replayed_events_total", "Events replayed to resumed discovery streams", (m) => m.inc(c.replayed));
  counter("weft_discovery_streams_ended_total", "Discovery streams ended, by why (slow: dropped as too far behind)", (m) => {
    for (const [k, v] of Object.entries(c.ended)) m.inc({ why: k }, v);
  }, ["why"]);
  counter("weft_discovery_requests_refused_total", "Discovery API requests refused, by reason", (m) => {
    for (const r of REFUSALS) m.inc({ reason: r }, c.refused.get(r) ?? 0);
  }, ["reason"]);
  counter("weft_discovery_publications_total", "Endpoints published through the discovery API (replacements included)", (m) => m.inc(c.published));
  counter("weft_discovery_unpublished_total", "Published endpoints removed, by why (pod: the pod asked; released: the pod's address was released)", (m) => {
    m.inc({ why: "pod" }, c.unpublished);
    m.inc({ why: "released" }, c.releasedWithPod);
  }, ["why"]);
  gauge("weft_discovery_publications", "Endpoints published through this agent, per pod", (g) => {
    for (const [pod, n] of view.publicationsPerPod()) g.set({ pod }, n);
  }, ["pod"]);
  gauge("weft_discovery_replay_entries", "Changes kept for resuming discovery streams", (g) => g.set(view.replay().entries));
}
