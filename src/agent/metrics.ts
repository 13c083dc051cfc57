import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** The agent's Prometheus metrics (served on /metrics). One registry per agent. */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly ready = new Gauge({ name: "weft_ready", help: "1 when the agent is ready (lease, data path, subnet file, etcd)", registers: [this.registry] });
  readonly leaseSecondsLeft = new Gauge({ name: "weft_lease_seconds_left", help: "Seconds until our subnet lease expires", registers: [this.registry] });
  readonly peers = new Gauge({ name: "weft_peers", help: "Remote nodes by programming state", labelNames: ["state"], registers: [this.registry] });
  readonly routes = new Gauge({ name: "weft_routes", help: "Routes in the desired route table", registers: [this.registry] });
  readonly diffsApplied = new Counter({ name: "weft_route_diffs_applied_total", help: "Route-table diffs applied to the data path", registers: [this.registry] });
  readonly applySeconds = new Histogram({
    name: "weft_route_apply_seconds", help: "Time to apply one route-table diff to the data path",
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [this.registry],
  });
  readonly etcdErrors = new Counter({ name: "weft_etcd_errors_total", help: "Failed etcd requests", registers: [this.registry] });
  readonly leaseReacquired = new Counter({ name: "weft_lease_reacquired_total", help: "Times our lease was lost and acquired again", registers: [this.registry] });
  readonly reconcileFixes = new Counter({ name: "weft_reconcile_fixes_total", help: "Kernel objects the periodic reconcile had to fix", registers: [this.registry] });
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
  }
}
