import { ConfigError } from "../common/errors.js";
import { formatCidr, formatIpv4 } from "../common/ipv4.js";
import { formatIpv6 } from "../common/ipv6.js";
import type { Logger } from "../common/log.js";
import { applyMasq, masqPresent, masqScope } from "../backend/masq.js";
import { registerDatapathVariants } from "../backend/paths-metric.js";
import { backendCandidates, registerFirst } from "../backend/select.js";
import type { Backend, EndpointKey, EndpointSpec, ExternalInterface, Network } from "../backend/types.js";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { RouteCache } from "../routes/cache.js";
import { policyOf } from "../routes/accept.js";
import { RouteTable } from "../routes/table.js";
import type { Lease } from "../subnet/lease.js";
import { SubnetManager, SubnetRangeFullError } from "../subnet/manager.js";
import { parseNetworkConfig, type NetworkConfig } from "../subnet/network-config.js";
import { RegistryUnavailableError } from "../subnet/errors.js";
import type { SubnetRegistry } from "../subnet/registry.js";
import { readPreviousSubnet, readPreviousSubnet6, writeSubnetFile } from "../subnet/subnet-file.js";
import { writeFileAtomic } from "../common/fs-atomic.js";
import { LeaseWatcher } from "../subnet/watcher.js";
import { probeEndpoints } from "../common/etcd-probe.js";
import type { SharedEtcdClient } from "../common/etcd-client.js";
import { chooseInterface, forwardingProblems, requireFamilies } from "./iface.js";
import { ApplyQueue } from "./apply-queue.js";
import { explainBreaker, Waits } from "./waits.js";
import { AgentMetrics } from "./metrics.js";
import { agentCounters, agentStatus, isReady, type AgentCounters, type AgentStatus, type PeerWindow, type Readiness, type StatusParts } from "./status.js";
import { NodeDns } from "./dns.js";
import { PodService } from "./pods.js";
import { etcdClientOptions, type AgentOptions } from "./options.js";

/** What the agent runs on once the network config is known and the data path is up. */
interface Running {
  readonly registry: SubnetRegistry;
  readonly config: NetworkConfig;
  readonly network: Network;
  readonly manager: SubnetManager;
}

/**
 * The node agent: network config → data path → lease → subnet file → route
 * table → backend, kept current by a lease watch and a periodic reconcile.
 * Stopping it leaves the data path in place; starting again adopts it.
 */
export class Agent {
  readonly metrics = new AgentMetrics();
  /** The agent's one etcd client: the subnet leases and the service registry share it. */
  private etcd: SharedEtcdClient | undefined;
  private registry: SubnetRegistry | undefined;
  private config: NetworkConfig | undefined;
  private network: Network | undefined;
  /** Set once the lease manager exists: everything after start-up works from here. */
  private running: Running | undefined;
  private watcher: LeaseWatcher | undefined;
  private readonly table = new RouteTable({
    onReject: (r) => {
      this.metrics.leasesRejected.inc({ reason: r.reason });
      this.log.warn({ key: r.key, reason: r.reason, detail: r.detail }, "not using a lease: it fails validation (weft status lists it)");
    },
  });
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private backendChoice = "";
  private readonly ready = { lease: false, dataPath: false, subnetFile: false, etcd: false };
  private readonly cache: RouteCache;
  /** Table changes and reconciles reach the data path through this queue, one at a time. */
  private readonly queue: ApplyQueue;
  /** What the agent is waiting for (etcd, the network config, a free subnet), with the last error. */
  private readonly waits: Waits;
  /** IPAM and the CNI handlers (open from the start, so DEL works before etcd answers). */
  pods: PodService | undefined;
  /** The service registry and the node-local DNS server (undefined with --dns-listen off). */
  dns: NodeDns | undefined;

  constructor(readonly opts: AgentOptions, private readonly log: Logger) {
    this.waits = new Waits(log);
    this.cache = new RouteCache(join(opts.stateDir, "routes.json"), log);
    this.queue = new ApplyQueue(this.table, () => this.network, this.metrics, log, this.cache);
    registerDatapathVariants(this.metrics.registry, () => this.network?.status().paths);
    this.metrics.observe({
      ready: () => this.isReady(),
      leaseSecondsLeft: () => this.running?.manager.secondsLeft,
      peers: () => this.network?.status().peers,
      routes: () => this.table.size,
      watchStalls: () => ({ lease: this.watcher?.stalls ?? 0, registry: this.dns?.watchStalls ?? 0 }),
    });
  }

  /** Brings the node up. Resolves once the agent is ready; throws ConfigError for a configuration that cannot work. */
  async start(): Promise<void> {
    const o = this.opts;
    const candidates = backendCandidates(o.backend, o.bpffs, this.log);
    const iface = await chooseInterface({ iface: o.iface, publicIp: o.publicIp, publicIpv6: o.publicIpv6 });
    this.log.info({
      iface: iface.name, addr: formatIpv4(iface.addr), publicIp: formatIpv4(iface.publicIp), mtu: iface.mtu,
      ...(iface.addr6 !== undefined ? { addr6: formatIpv6(iface.addr6), publicIpv6: formatIpv6(iface.publicIpv6 ?? iface.addr6) } : {}),
    }, "underlay interface");
    // A restart: the data path comes back from the state dir (network config and routes of the last
    // run) before etcd is even asked, so a data path that lives in this process (tun) forwards again
    // within a second. etcd then confirms or corrects both.
    this.pods = await PodService.open({
      stateDir: o.stateDir, subnetFile: o.subnetFile, registry: this.metrics.registry, log: this.log.child({ part: "pods" }),
      reconcileIntervalSec: o.ipamReconcileInterval, releaseGraceSec: o.ipamReleaseGrace,
      reclaimThreshold: o.ipamReclaimThreshold, pressureGraceSec: o.ipamPressureGrace,
      dataPath: {
        notReady: () => this.podsNotReady(),
        leaseProblem: () => this.leaseProblem(),
        addEndpoint: (e) => this.addEndpoint(e),
        removeEndpoint: (e) => this.removeEndpoint(e),
      },
    });
    const lastConfig = readCachedConfig(join(o.stateDir, "network.json"));
    if (lastConfig) {
      this.config = lastConfig.config;
      this.table.setPolicy(policyOf(lastConfig.config));
      await this.register(candidates, iface, lastConfig.config);
      await this.applyCachedRoutes();
    }
    // etcd's client (gRPC, protobuf) is the slowest module to load: load it only now.
    const { createEtcdClient } = await import("../common/etcd-client.js");
    const { SubnetRegistry } = await import("../subnet/registry.js");
    // Throws ConfigError at once for TLS files that cannot work (a key that is not the certificate's).
    const etcd: SharedEtcdClient = { client: createEtcdClient(etcdClientOptions(o)), endpoints: o.etcdEndpoints };
    this.etcd = etcd;
    const registry = new SubnetRegistry({ ...etcd, prefix: o.etcdPrefix });
    this.registry = registry;
    const fresh = await this.waitForConfig(registry);
    let restarted = false;
    if (!lastConfig || fresh.text !== lastConfig.text) {
      if (this.network) {
        this.log.warn("the network config changed while the agent was away; starting the data path again with the new one");
        await this.network.close();
        this.network = undefined;
        restarted = true;
      }
      writeFileAtomic(join(o.stateDir, "network.json"), fresh.text, 0o600);
    }
    this.config = fresh.config;
    this.queue.change(() => this.table.setPolicy(policyOf(fresh.config)));
    this.dns = await NodeDns.start(o, fresh.config, etcd, this.metrics.registry, this.log.child({ part: "dns" }), this.pods, fresh.config.ipv6?.network);
    const network = this.network ?? (await this.register(candidates, iface, fresh.config));
    if (restarted) await network.apply({ added: this.table.all(), removed: [], changed: [] });
    if (!lastConfig) await this.applyCachedRoutes();

    const manager = new SubnetManager(registry, fresh.config, network.leaseAttrs, {
      ttlSec: o.subnetLeaseTtl,
      renewMarginSec: o.subnetLeaseRenewMargin,
      retrySec: Math.min(60, Math.max(1, Math.floor(o.subnetLeaseRenewMargin / 4))),
      previousSubnet: readPreviousSubnet(o.subnetFile),
      previousSubnet6: readPreviousSubnet6(o.subnetFile),
    }, this.log);
    const run: Running = { registry, config: fresh.config, network, manager };
    this.running = run;
    manager.on("lost", () => {
      this.ready.lease = false;
      this.pods?.bind(undefined);
      this.metrics.counts.reacquired++;
    });
    const lease = await this.acquireWithRetry(manager);
    await this.onAcquired(run, lease);
    manager.on("acquired", (l) => void this.retryAcquired(run, l)); // later re-acquisitions

    const watcher = new LeaseWatcher(registry, this.log);
    this.watcher = watcher;
    watcher.on("snapshot", (snap) => {
      manager.onSnapshot(snap);
      this.queue.change(() => this.table.replaceAll(snap.leases, snap.skipped));
    });
    watcher.on("put", (l) => {
      manager.onKeyPut(l);
      this.queue.change(() => this.table.put(l));
    });
    watcher.on("skip", (k) => {
      manager.onKeySkipped(k.key);
      this.queue.change(() => this.table.skip(k));
    });
    watcher.on("delete", (key) => {
      manager.onKeyDeleted(key);
      this.queue.change(() => this.table.delete(key));
    });
    await watcher.start();
    await this.queue.idle();
    this.ready.etcd = true;
    this.scheduleReconcile();
    this.pods.startReconciler();
    this.log.info({ subnet: formatCidr(lease.subnet), backend: network.backend, peers: this.table.size }, "agent ready");
  }

  /** Starts the data path: the first candidate backend that works. */
  private async register(candidates: Backend[], iface: ExternalInterface, config: NetworkConfig): Promise<Network> {
    const o = this.opts;
    requireFamilies(iface, config);
    for (const w of forwardingProblems(config)) this.log.warn({ fix: w.fix }, w.problem);
    // A backend sees the interface's IPv6 address only when the network runs IPv6 (else it would publish PublicIPv6).
    const ifaceFor: ExternalInterface = config.ipv6 ? iface : { ...iface, addr6: undefined, publicIpv6: undefined };
    const r = await registerFirst(candidates, o.backend, { config, iface: ifaceFor, stateDir: o.stateDir, bpffs: o.bpffs, bpfAttach: o.bpfAttach, tunBusyPollUs: o.tunBusyPoll }, this.log);
    this.backendChoice = r.choice;
    this.network = r.network;
    return r.network;
  }

  private async applyCachedRoutes(): Promise<void> {
    const cached = this.cache.load();
    if (cached.length === 0) return;
    this.queue.change(() => this.table.replaceAll(cached));
    await this.queue.idle();
    this.log.info({ routes: cached.length }, "applied the cached route table; etcd will correct it");
  }

  private async waitForConfig(reg: SubnetRegistry): Promise<{ config: NetworkConfig; text: string }> {
    while (!this.stopped) {
      try {
        const text = await reg.getNetworkConfig();
        this.etcdAnswered();
        if (text !== undefined) {
          this.waits.clear("network-config");
          return { config: parseNetworkConfig(text), text }; // a bad config is fatal: ConfigError
        }
        this.waits.report("network-config", `the key ${reg.configKey} does not exist in etcd (create it with \`weft network init\`, or check --etcd-prefix)`);
      } catch (e) {
        if (!(e instanceof RegistryUnavailableError)) throw e;
        await this.etcdError(e);
      }
      await sleep(1000);
    }
    throw new ConfigError("stopped while waiting for the network config");
  }

  private async acquireWithRetry(manager: SubnetManager): Promise<Lease> {
    for (;;) {
      try {
        const l = await manager.acquire();
        this.waits.clear("subnet");
        return l;
      } catch (e) {
        if (!(e instanceof RegistryUnavailableError || e instanceof SubnetRangeFullError) || this.stopped) throw e;
        if (e instanceof RegistryUnavailableError) await this.etcdError(e);
        else {
          this.etcdAnswered(); // etcd is fine: the range is full
          this.waits.report("subnet", `the subnet range is full: ${e.message}`);
        }
        await sleep(e instanceof SubnetRangeFullError ? 10_000 : 1000);
      }
    }
  }

  /** Our lease (first, or again after a loss): data path, route table, masquerading, then the subnet file. */
  private async onAcquired(run: Running, l: Lease): Promise<void> {
    const { network: net, config: cfg } = run;
    this.ready.lease = true;
    // Ready again only once every step below is done for this lease.
    this.ready.dataPath = false;
    this.ready.subnetFile = false;
    await net.configureLocal(l);
    this.queue.change(() => this.table.setSelf({ subnet: l.subnet, publicIp: net.leaseAttrs.publicIp, subnet6: l.subnet6, publicIpv6: net.leaseAttrs.publicIpv6 }));
    await this.queue.idle();
    this.ready.dataPath = true;
    if (this.opts.ipMasq) await applyMasq(masqScope(cfg, l));
    const v4 = cfg.enableIpv4 ? { network: cfg.network, subnet: l.subnet } : { network: undefined, subnet: undefined };
    writeSubnetFile(this.opts.subnetFile, { ...v4, network6: cfg.ipv6?.network, subnet6: cfg.ipv6 ? l.subnet6 : undefined, mtu: net.mtu, ipMasq: this.opts.ipMasq });
    this.ready.subnetFile = true;
    this.pods?.bind(v4.subnet, cfg.ipv6 ? l.subnet6 : undefined);
  }

  /**
   * onAcquired for a lease acquired again in the background: a failure (the
   * subnet file cannot be written, the device cannot take the address) is
   * logged and counted and the step retried while the lease is still ours,
   * instead of an unhandled rejection ending the process.
   */
  private async retryAcquired(run: Running, l: Lease): Promise<void> {
    for (let delay = 1000; !this.stopped && run.manager.lease?.key === l.key; delay = Math.min(delay * 2, 30_000)) {
      try {
        await this.onAcquired(run, l);
        return;
      } catch (e) {
        this.metrics.internalErrors.inc({ task: "lease-acquired" });
        this.log.error({ err: (e as Error).message, retryInMs: delay }, "setting up the data path for the new lease failed; retrying");
        await sleep(delay);
      }
    }
  }

  /** Why a pod cannot be wired now, or undefined. */
  private podsNotReady(): string | undefined {
    if (!this.network) return "no data path yet";
    const lease = this.leaseProblem();
    if (lease) return `this node holds no subnet lease right now (${lease})`;
    if (!this.ready.dataPath || !this.ready.subnetFile) return "the data path is still being set up";
    return undefined;
  }

  /**
   * Why our subnet may not be handed out now. While etcd is unreachable the
   * lease is still ours until it would have expired; after that another node
   * may get the subnet, so not one more address comes from it.
   */
  private leaseProblem(): string | undefined {
    const manager = this.running?.manager;
    if (!this.ready.lease || !manager?.lease) return "it was lost and is being acquired again";
    if (manager.secondsLeft < 1) return "it expired while etcd was unreachable";
    return undefined;
  }

  private scheduleReconcile(): void {
    this.timer = setTimeout(() => void this.reconcile().finally(() => !this.stopped && this.scheduleReconcile()),
      this.opts.reconcileInterval * 1000);
    this.timer.unref();
  }

  /** Periodic: kernel objects match the table, masquerading is in place, etcd answers. */
  async reconcile(): Promise<void> {
    const run = this.running;
    if (!run) return;
    try {
      this.metrics.counts.reconcileFixes += await this.queue.reconcile();
      const l = run.manager.lease;
      const scope = l ? masqScope(run.config, l) : undefined;
      if (this.opts.ipMasq && scope && (!(await masqPresent(scope.v4 ? "ip" : "ip6")) || (scope.v4 && scope.v6 && !(await masqPresent("ip6"))))) {
        this.log.warn("masquerade rules were removed; restoring them");
        await applyMasq(scope);
      }
    } catch (e) {
      this.log.error({ err: (e as Error).message }, "reconcile failed");
    }
    try {
      await run.registry.getNetworkConfig();
      await run.manager.check(); // our key, in case a watch missed its deletion
      this.etcdAnswered();
    } catch (e) {
      await this.etcdError(e);
    }
  }

  private etcdAnswered(): void {
    this.ready.etcd = true;
    this.waits.clear("etcd");
  }

  /** etcd failed: readiness drops, and the wait says which endpoint fails and how. */
  private async etcdError(e: unknown): Promise<void> {
    this.ready.etcd = false;
    this.metrics.counts.etcdErrors++;
    const probes = await probeEndpoints(etcdClientOptions(this.opts));
    this.waits.report("etcd", `${explainBreaker((e as Error).message, this.etcdFailures)}; ${probes.join("; ")} (the data path keeps working)`);
  }

  /** The last etcd failures that were not the client's circuit breaker, so a paused client still says why it paused. */
  private readonly etcdFailures: string[] = [];

  readiness(): Readiness {
    const r = { ...this.ready, routesSynced: this.watcher?.synced ?? false };
    return this.opts.dnsListen === "off" ? r : { ...r, registrySynced: this.dns?.synced ?? false };
  }

  isReady(): boolean {
    return isReady(this.readiness());
  }

  /** A local pod (from the CNI plugin or the harness). Backends that need nothing accept it silently. */
  async addEndpoint(e: EndpointSpec): Promise<void> {
    if (!this.network) throw new ConfigError("the agent is not ready for endpoints yet", { recoverable: true });
    await this.network.addEndpoint?.(e);
  }

  async removeEndpoint(e: EndpointKey): Promise<boolean> {
    return (await this.network?.removeEndpoint?.(e)) ?? false;
  }

  private parts(): StatusParts {
    return {
      readiness: this.readiness(), config: this.config, lease: this.running?.manager.lease, secondsLeft: this.running?.manager.secondsLeft,
      network: this.network, backendChoice: this.backendChoice, table: this.table, counts: this.metrics.counts,
      waiting: this.waits.list(), dns: this.dns?.service.summary(), discovery: this.dns?.discovery?.summary(),
    };
  }

  /** Readiness and counters without the peer list (cheap enough to poll). */
  counters(): AgentCounters {
    return agentCounters(this.parts());
  }

  status(window?: PeerWindow): AgentStatus {
    return agentStatus(this.parts(), window);
  }

  /** Stops the agent; the data path, the lease and the subnet file stay. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.running?.manager.close();
    await this.watcher?.close();
    await this.queue.idle();
    await this.network?.close();
    await this.pods?.close();
    await this.dns?.close();
    this.cache.flush();
    this.registry?.close();
    this.etcd?.client.close(); // after every user of it
  }
}

/** The network config of the last run, if the state dir has a readable one. */
function readCachedConfig(path: string): { config: NetworkConfig; text: string } | undefined {
  try {
    const text = readFileSync(path, "utf8");
    return { config: parseNetworkConfig(text), text };
  } catch {
    return undefined;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
