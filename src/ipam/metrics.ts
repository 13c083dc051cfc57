import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { usageRatio } from "./allocator.js";
import type { IpamService } from "./ipam.js";

/** IPAM metrics on the agent's registry; pool usage is computed when scraped. */
export class IpamMetrics {
  readonly allocated: Counter<"pool">;
  readonly released: Counter<"reason">;
  readonly exhausted: Counter<"pool">;
  readonly cniSeconds: Histogram<"command" | "plugin" | "result">;
  readonly cniRefused: Counter<"reason">;
  readonly stateRefused: Counter<"op">;
  private service: IpamService | undefined;

  constructor(registry: Registry) {
    const registers = [registry];
    this.allocated = new Counter({ name: "weft_ipam_allocations_total", help: "Addresses handed out, by pool", labelNames: ["pool"], registers });
    this.released = new Counter({ name: "weft_ipam_releases_total", help: "Addresses released, by reason (del, gc, reconcile, rollback, replaced)", labelNames: ["reason"], registers });
    this.exhausted = new Counter({ name: "weft_ipam_exhausted_total", help: "ADDs refused because the pool had no free address", labelNames: ["pool"], registers });
    this.cniSeconds = new Histogram({
      name: "weft_cni_request_seconds", help: "Time the agent spent on one CNI request",
      labelNames: ["command", "plugin", "result"], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers,
    });
    this.cniRefused = new Counter({
      name: "weft_cni_refusals_total", help: "CNI requests refused for a bad input, by the input (command, stdin, config, ipam, bridge, ifname, netns, containerid, args, ...)",
      labelNames: ["reason"], registers,
    });
    this.stateRefused = new Counter({
      name: "weft_ipam_state_refusals_total", help: "IPAM changes refused or deferred because the state on disk cannot be trusted, by operation (add, del, gc, reconcile)",
      labelNames: ["op"], registers,
    });
    const self = this;
    new Gauge({
      name: "weft_ipam_state_unreadable", help: "1 while the IPAM state on disk cannot be trusted (no address is handed out until it is repaired; see the agent's log)", registers,
      collect() {
        this.set(self.service?.store.problem ? 1 : 0);
      },
    });
    new Gauge({
      name: "weft_ipam_pool_addresses", help: "Addresses of each pool by state (capacity, used, reserved, free), per address family (4, 6: an IPv6 /64 holds about 1.8e19)",
      labelNames: ["network", "pool", "family", "state"], registers,
      collect() {
        this.reset();
        for (const u of self.service?.usage() ?? []) {
          const l = { network: u.network, pool: u.pool, family: String(u.family ?? 4) };
          this.set({ ...l, state: "capacity" }, u.capacity);
          this.set({ ...l, state: "used" }, u.used);
          this.set({ ...l, state: "reserved" }, u.reserved);
          this.set({ ...l, state: "free" }, u.capacity - u.used - u.reserved);
        }
      },
    });
    new Gauge({
      name: "weft_ipam_pool_usage_ratio", help: "Addresses in use over those that can be handed out (capacity less unused reservations), per pool and address family; reclaiming starts at --ipam-reclaim-threshold",
      labelNames: ["network", "pool", "family"], registers,
      collect() {
        this.reset();
        for (const u of self.service?.usage() ?? []) this.set({ network: u.network, pool: u.pool, family: String(u.family ?? 4) }, usageRatio(u));
      },
    });
    new Gauge({
      name: "weft_ipam_pressure_events", help: "Times since start a pool's usage reached --ipam-reclaim-threshold (or it was full) and addresses of vanished pods were reclaimed early", registers,
      collect() {
        this.set(self.service?.pressure?.events ?? 0);
      },
    });
    new Gauge({
      name: "weft_ipam_allocations", help: "Addresses held right now", registers,
      collect() {
        this.set(self.service?.store.table.size ?? 0);
      },
    });
  }

  attach(s: IpamService): void {
    this.service = s;
  }
}
