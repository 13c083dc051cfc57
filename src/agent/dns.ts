import { join } from "node:path";
import type { Registry } from "prom-client";
import { formatCidr } from "../common/ipv4.js";
import { formatCidr6, type Ipv6Prefix } from "../common/ipv6.js";
import type { Logger } from "../common/log.js";
import { parseUpstream, upstreamsFromResolvConf, type Upstream } from "../dns/forward/upstreams.js";
import { parseHostPort, splitHostPort } from "../dns/hostport.js";
import type { ListenAddr } from "../dns/server/server.js";
import { DnsService, localAddresses } from "../dns/service.js";
import { ClientAcl, parseAllowPrefix } from "../dns/server/acl.js";
import type { PodDirectory } from "../discovery/pods.js";
import type { NodeDiscovery } from "../discovery/service.js";
import type { RegistryWatcher } from "../registry/watch.js";
import type { ServiceRegistry } from "../registry/store.js";
import type { NetworkConfig } from "../subnet/network-config.js";
import { run } from "../common/exec.js";
import type { SharedEtcdClient } from "../common/etcd-client.js";
import type { AgentOptions } from "./options.js";

/** The dummy device holding the node-local DNS address, as NodeLocal DNSCache's nodelocaldns (lo when there is no dummy driver). */
export const DNS_DEVICE = "weft-dns";

/**
 * The agent's DNS part: the service registry watched from etcd, the DNS
 * server on the node-local address, and the discovery API (streams of the
 * same registry view, and pods' own publications) on the node-local address
 * and a Unix socket. A link-local listen address that no interface has is
 * put on a dummy device first.
 */
export class NodeDns {
  private constructor(
    readonly service: DnsService,
    /** The discovery API (undefined with --discovery-listen and --discovery-socket off). */
    readonly discovery: NodeDiscovery | undefined,
    private readonly close_: () => Promise<void>,
    private readonly watcher: RegistryWatcher,
  ) {}

  /** Registry watches abandoned after staying disconnected, then started anew. */
  get watchStalls(): number {
    return this.watcher.stalls;
  }

  /**
   * `etcd`: the agent's one client, shared with the subnet leases (closed by
   * the agent, not here). `pods`: the node's pods, for publication through the
   * discovery API (without it the API is read-only). `network6`: the
   * cluster's IPv6 network (dual-stack / IPv6 clusters), whose pods the
   * DNS client ACL lets in as it does the IPv4 network's.
   */
  static async start(o: AgentOptions, config: NetworkConfig, etcd: SharedEtcdClient, metrics: Registry, log: Logger, pods?: PodDirectory, network6?: Ipv6Prefix): Promise<NodeDns | undefined> {
    if (o.dnsListen === "off") return undefined;
    // Both families at once: list an IPv4 and an IPv6 address (an IPv6 one serves IPv6 only).
    const listen = o.dnsListen.map((a) => parseHostPort(a, { what: "--dns-listen", role: "listen" }));
    const discoveryListen = o.discoveryListen === "off" ? [] : o.discoveryListen.map((a) => splitHostPort(a));
    // An IPv6-only network's IPv4 half is 0.0.0.0/0, which must not open the ACL to every IPv4 client.
    const allow = dnsAllowList(config.enableIpv4 ? formatCidr(config.network) : undefined, network6, o.dnsAllow);
    await ensureLocalAddresses([...listen, ...discoveryListen], log);
    const upstreams: Upstream[] = o.dnsUpstream === "none" ? []
      : o.dnsUpstream === "resolv.conf" ? upstreamsFromResolvConf(undefined, (nameserver, why) => log.warn({ nameserver, why }, "a resolv.conf nameserver left out of the DNS upstreams"))
      : o.dnsUpstream.map(parseUpstream);
    // etcd's client loads slowly; this runs after the subnet part has it loaded.
    const { ServiceRegistry } = await import("../registry/store.js");
    const { RegistryWatcher } = await import("../registry/watch.js");
    const registry = new ServiceRegistry({ ...etcd, prefix: o.registryPrefix }, log);
    const watcher = new RegistryWatcher(registry, log);
    const service = new DnsService({
      listen, upstreams, policy: o.dnsPolicy,
      zone: { domain: o.clusterDomain, ttl: o.dnsTtl, pods: o.dnsPods },
      allow,
      cache: { capacity: o.dnsCacheSize, maxBytes: o.dnsCacheBytes },
      maxWaiting: o.dnsMaxWaiting,
      tcp: {
        maxConnections: o.dnsTcpMaxConnections, maxPerClient: o.dnsTcpMaxPerClient, idleMs: o.dnsTcpIdleTimeout * 1000,
        readTimeoutMs: o.dnsTcpReadTimeout * 1000, maxPendingBytes: o.dnsTcpMaxPending,
      },
    }, watcher, log, metrics);
    await service.start();
    let local = localAddresses();
    const refresh = setInterval(() => (local = localAddresses()), 30_000);
    refresh.unref();
    let discovery: NodeDiscovery | undefined;
    try {
      const acl = new ClientAcl(allow, () => local);
      discovery = await startDiscovery(o, (addr) => acl.allows(addr), registry, watcher, pods, metrics, log.child({ part: "discovery" }));
    } catch (e) {
      clearInterval(refresh);
      await service.close();
      throw e;
    }
    void watcher.start().catch((e: unknown) => log.error({ err: (e as Error).message }, "service registry watch failed"));
    return new NodeDns(service, discovery, async () => {
      clearInterval(refresh);
      discovery?.close();
      await service.close();
      await watcher.close();
      registry.close();
    }, watcher);
  }

  get synced(): boolean {
    return this.service.ready;
  }

  close(): Promise<void> {
    return this.close_();
  }
}

/** The DNS client ACL's prefixes: the cluster network(s) and --dns-allow (each checked: ConfigError naming a bad one). */
export function dnsAllowList(network: string | undefined, network6: Ipv6Prefix | undefined, extra: readonly string[]): string[] {
  return [...(network !== undefined ? [network] : []), ...(network6 ? [formatCidr6(network6)] : []), ...extra.map((p) => parseAllowPrefix(p))];
}

/** The discovery API on the registry view, with the DNS server's client ACL (`allows`). */
async function startDiscovery(o: AgentOptions, allows: (addr: string) => boolean, registry: ServiceRegistry, watcher: RegistryWatcher, pods: PodDirectory | undefined,
  metrics: Registry, log: Logger): Promise<NodeDiscovery | undefined> {
  if (o.discoveryListen === "off" && o.discoverySocket === "off") return undefined;
  const { NodeDiscovery } = await import("../discovery/service.js");
  const { HUB_DEFAULTS } = await import("../discovery/hub.js");
  return NodeDiscovery.start(registry, watcher, pods, {
    listen: o.discoveryListen === "off" ? [] : o.discoveryListen.map((a) => splitHostPort(a)),
    socket: o.discoverySocket === "off" ? undefined : o.discoverySocket,
    allows,
    limits: {
      ...HUB_DEFAULTS, replayEntries: o.discoveryReplay, maxPendingBytes: o.discoveryMaxPending,
      maxSubscribers: o.discoveryMaxSubscribers, maxPerClient: o.discoveryMaxPerClient,
    },
    publication: { ttlSec: o.discoveryLeaseTtl, maxPerPod: o.discoveryMaxPublications, stateFile: join(o.stateDir, "discovery.json") },
  }, metrics, log);
}

async function ensureLocalAddresses(listen: readonly ListenAddr[], log: Logger): Promise<void> {
  const have = localAddresses();
  const missing = listen.filter((l) => l.host.startsWith("169.254.") && !have.has(l.host));
  if (missing.length === 0) return;
  // A dummy device as NodeLocal DNSCache does; kernels without the dummy
  // driver get the address on lo (as local either way).
  let dev = DNS_DEVICE;
  const exists = await run(["ip", "link", "show", DNS_DEVICE]).then(() => true, () => false);
  if (!exists && !(await run(["ip", "link", "add", DNS_DEVICE, "type", "dummy"]).then(() => true, () => false))) dev = "lo";
  for (const l of missing) await run(["ip", "addr", "replace", `${l.host}/32`, "dev", dev]);
  await run(["ip", "link", "set", dev, "up"]);
  log.info({ device: dev, addresses: missing.map((l) => l.host) },
    dev === "lo" ? "node-local DNS address put on lo (this kernel has no dummy driver)" : "node-local DNS address put on a dummy device");
}
