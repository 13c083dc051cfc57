import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** The agent's own counts: kept once, here; `weft status` and /metrics both read them. */
export interface AgentCounts {
  /** Route-table diffs applied to the data path. */
  diffs: number;
  /** Times our lease was lost and acquired again. */
  reacquired: number;
  /** Kernel objects (or map entries) the periodic reconcile had to fix. */
  reconcileFixes: number;
  /** Failed etcd requests. */
  etcdErrors: number;
}

/** What the scrape-time gauges read from the agent. */
export interface MetricsView {
  ready(): boolean;
  /** Seconds until our lease expires; undefined without a lease, Infinity for a reservation. */
  leaseSecondsLeft(): number | undefined;
  peers(): { programmed: number; failed: number } | undefined;
  routes(): number;
  /** Watches abandoned after staying disconnected (a silent etcd member), by watch. */
  watchStalls(): { lease: number; registry: number };
}

/**
 * The agent's Prometheus metrics (served on /metrics). One registry per agent.
 * Gauges and the agent's counts are computed when scraped, from the agent's
 * state, so a scrape costs what the numbers cost, not a status document.
 */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly counts: AgentCounts = { diffs: 0, reacquired: 0, reconcileFixes: 0, etcdErrors: 0 };
  private view: MetricsView | undefined;

  readonly applySeconds = new Histogram({
    name: "weft_route_apply_seconds", help: "Time to apply one route-table diff to the data path",
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [this.registry],
  });
  readonly leasesRejected = new Counter({
    name: "weft_leases_rejected_total", help: "Lease keys not used, once per key and reason (see weft status for the current list)", labelNames: ["reason"], registers: [this.registry],
  });
  readonly controlRefused = new Counter({
    name: "weft_control_requests_refused_total", help: "Control-socket requests refused before handling, by reason", labelNames: ["reason"], registers: [this.registry],
  });
  readonly internalErrors = new Counter({
    name: "weft_internal_errors_total", help: "Errors caught at the top of a background task (logged; the agent carries on)", labelNames: ["task"], registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "weft_" });
    const self = this;
    const gauge = (name: string, help: string, read: (g: Gauge) => void, labelNames: string[] = []): void =>
      void new Gauge({ name, help, labelNames, registers: [this.registry], collect() { if (self.view) read(this); } });
    gauge("weft_ready", "1 when the agent is ready (lease, data path, subnet file, etcd, route sync)", (g) => g.set(self.view?.ready() ? 1 : 0));
    gauge("weft_lease_seconds_left", "Seconds until our subnet lease expires", (g) => {
      const left = self.view?.leaseSecondsLeft();
      if (left !== undefined && Number.isFinite(left)) g.set(left);
    });
    gauge("weft_peers", "Remote nodes by programming state", (g) => {
      const p = self.view?.peers();
      if (!p) return;
      g.set({ state: "programmed" }, p.programmed);
      g.set({ state: "failed" }, p.failed);
    }, ["state"]);
    gauge("weft_routes", "Routes in the desired route table", (g) => g.set(self.view?.routes() ?? 0));
    const counter = (name: string, help: string, read: () => number): void =>
      void new Counter({ name, help, registers: [this.registry], collect() { this.reset(); this.inc(read()); } });
    counter("weft_route_diffs_applied_total", "Route-table diffs applied to the data path", () => this.counts.diffs);
    counter("weft_etcd_errors_total", "Failed etcd requests", () => this.counts.etcdErrors);
    counter("weft_lease_reacquired_total", "Times our lease was lost and acquired again", () => this.counts.reacquired);
    counter("weft_reconcile_fixes_total", "Kernel objects the periodic reconcile had to fix", () => this.counts.reconcileFixes);
    void new Counter({
      name: "weft_etcd_watch_stalls_total", help: "etcd watches abandoned after staying disconnected past their limit (stuck on a member that does not answer), then listed and started anew",
      labelNames: ["watch"], registers: [this.registry],
      collect() {
        this.reset();
        const s = self.view?.watchStalls() ?? { lease: 0, registry: 0 };
        this.inc({ watch: "lease" }, s.lease);
        this.inc({ watch: "registry" }, s.registry);
      },
    });
  }

  /** Where the scrape-time gauges read from (the agent, once constructed). */
  observe(view: MetricsView): void {
    this.view = view;
  }
}
