import type { Registry } from "prom-client";
import { formatCidr } from "../common/ipv4.js";
import type { Logger } from "../common/log.js";
import { parseUpstream, upstreamsFromResolvConf, type Upstream } from "../dns/forward/upstreams.js";
import { splitHostPort } from "../dns/hostport.js";
import type { ListenAddr } from "../dns/server/server.js";
import { DnsService, localAddresses } from "../dns/service.js";
import type { NetworkConfig } from "../subnet/network-config.js";
import { run } from "../common/exec.js";
import type { SharedEtcdClient } from "../common/etcd-client.js";
import type { AgentOptions } from "./options.js";

/** The dummy device holding the node-local DNS address, as NodeLocal DNSCache's nodelocaldns (lo when there is no dummy driver). */
export const DNS_DEVICE = "weft-dns";

/**
 * The agent's DNS part: the service registry watched from etcd, and the DNS
 * server on the node-local address. A link-local listen address that no
 * interface has is put on a dummy device first.
 */
export class NodeDns {
  private constructor(readonly service: DnsService, private readonly close_: () => Promise<void>) {}

  /** `etcd`: the agent's one client, shared with the subnet leases (closed by the agent, not here). */
  static async start(o: AgentOptions, config: NetworkConfig, etcd: SharedEtcdClient, metrics: Registry, log: Logger): Promise<NodeDns | undefined> {
    if (o.dnsListen === "off") return undefined;
    const listen = o.dnsListen.map((a) => splitHostPort(a));
    await ensureLocalAddresses(listen, log);
    const upstreams: Upstream[] = o.dnsUpstream === "none" ? [] : o.dnsUpstream === "resolv.conf" ? upstreamsFromResolvConf() : o.dnsUpstream.map(parseUpstream);
    // etcd's client loads slowly; this runs after the subnet part has it loaded.
    const { ServiceRegistry } = await import("../registry/store.js");
    const { RegistryWatcher } = await import("../registry/watch.js");
    const registry = new ServiceRegistry({ ...etcd, prefix: o.registryPrefix }, log);
    const watcher = new RegistryWatcher(registry, log);
    const service = new DnsService({
      listen, upstreams, policy: o.dnsPolicy,
      zone: { domain: o.clusterDomain, ttl: o.dnsTtl, pods: o.dnsPods },
      allow: [formatCidr(config.network), ...o.dnsAllow],
      cache: { capacity: o.dnsCacheSize, maxBytes: o.dnsCacheBytes },
      maxWaiting: o.dnsMaxWaiting,
      tcp: {
        maxConnections: o.dnsTcpMaxConnections, maxPerClient: o.dnsTcpMaxPerClient, idleMs: o.dnsTcpIdleTimeout * 1000,
        readTimeoutMs: o.dnsTcpReadTimeout * 1000, maxPendingBytes: o.dnsTcpMaxPending,
      },
    }, watcher, log, metrics);
    await service.start();
    void watcher.start().catch((e: unknown) => log.error({ err: (e as Error).message }, "service registry watch failed"));
    return new NodeDns(service, async () => {
      await service.close();
      await watcher.close();
      registry.close();
    });
  }

  get synced(): boolean {
    return this.service.ready;
  }

  close(): Promise<void> {
    return this.close_();
  }
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
