import { ConfigError } from "../common/errors.js";
import { formatCidr, formatIpv4, formatMac } from "../common/ipv4.js";
import type { Logger } from "../common/log.js";
import { applyMasq, masqPresent } from "../backend/masq.js";
import { backendCandidates, registerFirst } from "../backend/select.js";
import type { Backend, EndpointSpec, ExternalInterface, Network } from "../backend/types.js";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { RouteCache } from "../routes/cache.js";
import { policyOf, type Rejection } from "../routes/accept.js";
import { RouteTable, isEmpty, type RouteDiff } from "../routes/table.js";
import type { Lease } from "../subnet/lease.js";
import { SubnetManager, SubnetRangeFullError } from "../subnet/manager.js";
import { parseNetworkConfig, type NetworkConfig } from "../subnet/network-config.js";
import { RegistryUnavailableError } from "../subnet/errors.js";
import type { SubnetRegistry } from "../subnet/registry.js";
import { readPreviousSubnet, writeSubnetFile } from "../subnet/subnet-file.js";
import { writeFileAtomic } from "../common/fs-atomic.js";
import { LeaseWatcher } from "../subnet/watcher.js";
import { probeEndpoints } from "../common/etcd-probe.js";
import { chooseInterface } from "./iface.js";
import { Waits, type Wait } from "./waits.js";
import { AgentMetrics } from "./metrics.js";
import type { DnsSummary } from "../dns/service.js";
import { NodeDns } from "./dns.js";
import { PodService } from "./pods.js";
import type { AgentOptions } from "./options.js";

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
  readonly leaseSecondsLeft: number | undefined;
  readonly publicIp: string | undefined;
  readonly vtepMac: string | undefined;
  readonly backend: string | undefined;
  readonly backendChoice: string;
  readonly device: string | undefined;
  readonly mtu: number | undefined;
  readonly peers: { subnet: string; publicIp: string; vtepMac: string }[];
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
}

/**
 * The node agent: network config → data path → lease → subnet file → route
 * table → backend, kept current by a lease watch and a periodic reconcile.
 * Stopping it leaves the data path in place; starting again adopts it.
 */
export class Agent {
  readonly metrics = new AgentMetrics();
  private registry: SubnetRegistry | undefined;
  private config: NetworkConfig | undefined;
  private network: Network | undefined;
  private manager: SubnetManager | undefined;
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
  private applying: Promise<void> = Promise.resolve();
  private cache: RouteCache | undefined;
  private readonly count = { diffs: 0, reacquired: 0, reconcileFixes: 0, etcdErrors: 0 };
  /** What the agent is waiting for (etcd, the network config, a free subnet), with the last error. */
  private readonly waits: Waits;
  /** IPAM and the CNI handlers (open from the start, so DEL works before etcd answers). */
  pods: PodService | undefined;
  /** The service registry and the node-local DNS server (undefined with --dns-listen off). */
  dns: NodeDns | undefined;

  constructor(readonly opts: AgentOptions, private readonly log: Logger) {
    this.waits = new Waits(log);
  }

  /** Brings the node up. Resolves once the agent is ready; throws ConfigError for a configuration that cannot work. */
  async start(): Promise<void> {
    const o = this.opts;
    const candidates = backendCandidates(o.backend, o.bpffs, this.log);
    const iface = await chooseInterface({ iface: o.iface, publicIp: o.publicIp });
    this.log.info({ iface: iface.name, addr: formatIpv4(iface.addr), publicIp: formatIpv4(iface.publicIp), mtu: iface.mtu }, "underlay interface");
    // A restart: the data path comes back from the state dir (network config and routes of the last
    // run) before etcd is even asked, so a data path that lives in this process (tun) forwards again
    // within a second. etcd then confirms or corrects both.
    this.cache = new RouteCache(join(o.stateDir, "routes.json"), this.log);
    this.pods = await PodService.open({
      stateDir: o.stateDir, subnetFile: o.subnetFile, registry: this.metrics.registry, log: this.log.child({ part: "pods" }),
      reconcileIntervalSec: o.ipamReconcileInterval, releaseGraceSec: o.ipamReleaseGrace,
      dataPath: {
        notReady: () => this.podsNotReady(),
        leaseProblem: () => this.leaseProblem(),
        addEndpoint: (e) => this.addEndpoint(e),
        removeEndpoint: (ip) => this.removeEndpoint(ip),
      },
    });
    const lastConfig = readCachedConfig(join(o.stateDir, "network.json"));
    if (lastConfig) {
      this.config = lastConfig.config;
      this.table.setPolicy(policyOf(lastConfig.config));
      await this.register(candidates, iface);
      await this.applyCachedRoutes();
    }
    // etcd's client (gRPC, protobuf) is the slowest module to load: load it only now.
    const { SubnetRegistry } = await import("../subnet/registry.js");
    this.registry = new SubnetRegistry({
      endpoints: o.etcdEndpoints, prefix: o.etcdPrefix, caFile: o.etcdCafile, certFile: o.etcdCertfile, keyFile: o.etcdKeyfile,
    });
    const fresh = await this.waitForConfig();
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
    this.enqueue(() => this.table.setPolicy(policyOf(fresh.config)));
    this.dns = await NodeDns.start(o, fresh.config, this.metrics.registry, this.log.child({ part: "dns" }));
    const network = this.network ?? (await this.register(candidates, iface));
    if (restarted) await network.apply({ added: this.table.all(), removed: [], changed: [] });
    if (!lastConfig) await this.applyCachedRoutes();

    this.manager = new SubnetManager(this.registry, fresh.config, network.leaseAttrs, {
      ttlSec: o.subnetLeaseTtl,
      renewMarginSec: o.subnetLeaseRenewMargin,
      retrySec: Math.min(60, Math.max(1, Math.floor(o.subnetLeaseRenewMargin / 4))),
      previousSubnet: readPreviousSubnet(o.subnetFile),
    }, this.log);
    this.manager.on("lost", () => {
      this.ready.lease = false;
      this.pods?.bind(undefined);
      this.count.reacquired++;
      this.metrics.leaseReacquired.inc();
    });
    const lease = await this.acquireWithRetry();
    await this.onAcquired(lease);
    this.manager.on("acquired", (l) => void this.retryAcquired(l)); // later re-acquisitions

    this.watcher = new LeaseWatcher(this.registry, this.log);
    this.watcher.on("snapshot", (snap) => {
      this.manager?.onSnapshot(snap);
      this.enqueue(() => this.table.replaceAll(snap.leases, snap.skipped));
    });
    this.watcher.on("put", (l) => {
      this.manager?.onKeyPut(l);
      this.enqueue(() => this.table.put(l));
    });
    this.watcher.on("skip", (k) => {
      this.manager?.onKeySkipped(k.key);
      this.enqueue(() => this.table.skip(k));
    });
    this.watcher.on("delete", (key) => {
      this.manager?.onKeyDeleted(key);
      this.enqueue(() => this.table.delete(key));
    });
    await this.watcher.start();
    await this.applying;
    this.ready.etcd = true;
    this.scheduleReconcile();
    this.pods.startReconciler();
    this.log.info({ subnet: formatCidr(lease.subnet), backend: network.backend, peers: this.table.size }, "agent ready");
  }

  /** Starts the data path: the first candidate backend that works. */
  private async register(candidates: Backend[], iface: ExternalInterface): Promise<Network> {
    const o = this.opts;
    const r = await registerFirst(candidates, o.backend, { config: this.config as NetworkConfig, iface, stateDir: o.stateDir, bpffs: o.bpffs, bpfAttach: o.bpfAttach }, this.log);
    this.backendChoice = r.choice;
    this.network = r.network;
    return r.network;
  }

  private async applyCachedRoutes(): Promise<void> {
    const cached = this.cache?.load() ?? [];
    if (cached.length === 0) return;
    this.enqueue(() => this.table.replaceAll(cached));
    await this.applying;
    this.log.info({ routes: cached.length }, "applied the cached route table; etcd will correct it");
  }

  private async waitForConfig(): Promise<{ config: NetworkConfig; text: string }> {
    const reg = this.registry as SubnetRegistry;
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

  private async acquireWithRetry(): Promise<Lease> {
    for (;;) {
      try {
        const l = await (this.manager as SubnetManager).acquire();
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
  private async onAcquired(l: Lease): Promise<void> {
    const net = this.network as Network;
    const cfg = this.config as NetworkConfig;
    this.ready.lease = true;
    // Ready again only once every step below is done for this lease.
    this.ready.dataPath = false;
    this.ready.subnetFile = false;
    await net.configureLocal(l);
    this.enqueue(() => this.table.setSelf({ subnet: l.subnet, publicIp: net.leaseAttrs.publicIp }));
    await this.applying;
    this.ready.dataPath = true;
    if (this.opts.ipMasq) await applyMasq(cfg.network, l.subnet);
    writeSubnetFile(this.opts.subnetFile, { network: cfg.network, subnet: l.subnet, mtu: net.mtu, ipMasq: this.opts.ipMasq });
    this.ready.subnetFile = true;
    this.pods?.bind(l.subnet);
  }

  /**
   * onAcquired for a lease acquired again in the background: a failure (the
   * subnet file cannot be written, the device cannot take the address) is
   * logged and counted and the step retried while the lease is still ours,
   * instead of an unhandled rejection ending the process.
   */
  private async retryAcquired(l: Lease): Promise<void> {
    for (let delay = 1000; !this.stopped && this.manager?.lease?.key === l.key; delay = Math.min(delay * 2, 30_000)) {
      try {
        await this.onAcquired(l);
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
    if (!this.ready.lease || !this.manager?.lease) return "it was lost and is being acquired again";
    if (this.manager.secondsLeft < 1) return "it expired while etcd was unreachable";
    return undefined;
  }

  /** Applies table changes to the data path in order, one at a time. */
  private enqueue(change: () => RouteDiff): void {
    const diff = change();
    this.metrics.routes.set(this.table.size);
    if (isEmpty(diff)) return;
    this.cache?.save(this.table.all());
    this.applying = this.applying.then(async () => {
      const end = this.metrics.applySeconds.startTimer();
      try {
        await this.network?.apply(diff);
        this.count.diffs++;
        this.metrics.diffsApplied.inc();
      } catch (e) {
        this.log.error({ err: (e as Error).message }, "applying a route change failed; the next reconcile retries");
      } finally {
        end();
      }
    });
  }

  private scheduleReconcile(): void {
    this.timer = setTimeout(() => void this.reconcile().finally(() => !this.stopped && this.scheduleReconcile()),
      this.opts.reconcileInterval * 1000);
    this.timer.unref();
  }

  /** Periodic: kernel objects match the table, masquerading is in place, etcd answers. */
  async reconcile(): Promise<void> {
    try {
      await this.applying;
      const fixed = await (this.network as Network).reconcile(this.table.all());
      this.count.reconcileFixes += fixed;
      this.metrics.reconcileFixes.inc(fixed);
      const l = this.manager?.lease;
      if (this.opts.ipMasq && l && !(await masqPresent())) {
        this.log.warn("masquerade rules were removed; restoring them");
        await applyMasq((this.config as NetworkConfig).network, l.subnet);
      }
    } catch (e) {
      this.log.error({ err: (e as Error).message }, "reconcile failed");
    }
    try {
      await (this.registry as SubnetRegistry).getNetworkConfig();
      await this.manager?.check(); // our key, in case a watch missed its deletion
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
    this.count.etcdErrors++;
    this.metrics.etcdErrors.inc();
    const probes = await probeEndpoints(this.opts.etcdEndpoints);
    this.waits.report("etcd", `${(e as Error).message}; ${probes.join("; ")} (the data path keeps working)`);
  }

  readiness(): Readiness {
    const r = { ...this.ready, routesSynced: this.watcher?.synced ?? false };
    return this.opts.dnsListen === "off" ? r : { ...r, registrySynced: this.dns?.synced ?? false };
  }

  isReady(): boolean {
    return Object.values(this.readiness()).every(Boolean);
  }

  /** A local pod (from the CNI plugin or the harness). Backends that need nothing accept it silently. */
  async addEndpoint(e: EndpointSpec): Promise<void> {
    if (!this.network) throw new ConfigError("the agent is not ready for endpoints yet", { recoverable: true });
    await this.network.addEndpoint?.(e);
  }

  async removeEndpoint(ip: number): Promise<boolean> {
    return (await this.network?.removeEndpoint?.(ip)) ?? false;
  }

  /** Readiness and counters without the peer list (cheap enough to poll). */
  counters(): AgentCounters {
    const ns = this.network?.status();
    return {
      ready: this.isReady(),
      readiness: this.readiness(),
      routes: this.table.size,
      waiting: this.waits.list(),
      counters: { ...this.count, leasesRejected: this.table.rejectedCount, peersProgrammed: ns?.peers.programmed ?? 0, peersFailed: ns?.peers.failed ?? 0, ...(ns?.counters ?? {}) },
    };
  }

  status(): AgentStatus {
    const l = this.manager?.lease;
    const ns = this.network?.status();
    const left = this.manager?.secondsLeft;
    const rejected = this.table.rejections();
    this.metrics.ready.set(this.isReady() ? 1 : 0);
    if (left !== undefined && Number.isFinite(left)) this.metrics.leaseSecondsLeft.set(left);
    if (ns) {
      this.metrics.peers.set({ state: "programmed" }, ns.peers.programmed);
      this.metrics.peers.set({ state: "failed" }, ns.peers.failed);
    }
    return {
      ready: this.isReady(),
      readiness: this.readiness(),
      network: this.config ? formatCidr(this.config.network) : undefined,
      subnet: l ? formatCidr(l.subnet) : undefined,
      leaseSecondsLeft: left === undefined ? undefined : Number.isFinite(left) ? Math.round(left) : -1,
      publicIp: this.network ? formatIpv4(this.network.leaseAttrs.publicIp) : undefined,
      vtepMac: this.network ? formatMac(this.network.leaseAttrs.vtepMac) : undefined,
      backend: ns?.backend,
      backendChoice: this.backendChoice,
      device: ns?.device,
      mtu: ns?.mtu,
      peers: this.table.all().map((p) => ({ subnet: formatCidr(p.subnet), publicIp: formatIpv4(p.attrs.publicIp), vtepMac: formatMac(p.attrs.vtepMac) })),
      rejectedLeases: rejected.slice(0, 200),
      rejectedLeaseCount: rejected.length,
      counters: this.counters().counters,
      paths: ns?.paths ?? {},
      waiting: this.waits.list(),
      dns: this.dns?.service.summary(),
    };
  }

  /** Stops the agent; the data path, the lease and the subnet file stay. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.manager?.close();
    await this.watcher?.close();
    await this.applying.catch(() => undefined);
    await this.network?.close();
    await this.pods?.close();
    await this.dns?.close();
    this.cache?.flush();
    this.registry?.close();
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
