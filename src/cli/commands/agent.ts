import type { Command } from "commander";
import type { Server } from "node:http";
import type { Server as NetServer } from "node:net";
import { Agent } from "../../agent/agent.js";
import { compactHeap } from "../../agent/heap.js";
import { startControlSocket } from "../../agent/control.js";
import { startHealthServer } from "../../agent/health.js";
import { AGENT_DEFAULTS, parseAgentOptions } from "../../agent/options.js";
import { ConfigError } from "../../common/errors.js";
import { createLogger } from "../../common/log.js";

import { addEtcdOptions, envOption as flag } from "../etcd-flags.js";

export function registerAgent(program: Command): void {
  // Every flag also reads WEFT_<NAME> (e.g. WEFT_ETCD_ENDPOINTS); the etcd ones are every etcd command's.
  addEtcdOptions(program.command("agent"), { subnets: true, registry: true })
    .description("run the node agent: subnet lease in etcd, route table, data path, health and status")
    .addOption(flag("--iface <name|addr>", "underlay interface (default: the default route's)"))
    .addOption(flag("--public-ip <addr>", "address other nodes send to (default: the interface's)"))
    .addOption(flag("--public-ipv6 <addr>", "IPv6 address other nodes send to when the network runs IPv6 (default: the interface's global IPv6 address)"))
    .addOption(flag("--backend <name>", "auto | ebpf | vxlan | tun", AGENT_DEFAULTS.backend))
    .addOption(flag("--subnet-file <file>", "flannel-format subnet.env to write", AGENT_DEFAULTS.subnetFile))
    .addOption(flag("--ip-masq", "masquerade pod traffic leaving the cluster network"))
    .addOption(flag("--state-dir <dir>", "state kept across restarts", AGENT_DEFAULTS.stateDir))
    .addOption(flag("--bpffs <dir>", "bpffs for the ebpf backend's pins (must outlive the agent)", AGENT_DEFAULTS.bpffs))
    .addOption(flag("--bpf-attach <how>", "auto | tcx | tc: how the ebpf backend attaches its programs", AGENT_DEFAULTS.bpfAttach))
    .addOption(flag("--tun-busy-poll <µs>", "tun backend: after a packet, how long each worker looks for the next before it sleeps (latency against CPU; 0: off)", AGENT_DEFAULTS.tunBusyPoll))
    .addOption(flag("--v8-heap <mode>", "compact | default: compact keeps the JavaScript heap near its live size (RSS at 20,000 peers about 165 → 135 MB)", AGENT_DEFAULTS.v8Heap))
    .addOption(flag("--health-listen <host:port>", "serve /healthz, /readyz, /metrics (off to disable)", AGENT_DEFAULTS.healthListen))
    .addOption(flag("--control-socket <path>", "unix socket `weft status` asks", AGENT_DEFAULTS.controlSocket))
    .addOption(flag("--subnet-lease-ttl <seconds>", "TTL of the etcd lease under our subnet key", AGENT_DEFAULTS.subnetLeaseTtl))
    .addOption(flag("--subnet-lease-renew-margin <seconds>", "renew this long before the lease expires", AGENT_DEFAULTS.subnetLeaseRenewMargin))
    .addOption(flag("--reconcile-interval <seconds>", "how often the kernel state is checked and repaired", AGENT_DEFAULTS.reconcileInterval))
    .addOption(flag("--ipam-reconcile-interval <seconds>", "how often pod addresses are checked for a vanished network namespace", AGENT_DEFAULTS.ipamReconcileInterval))
    .addOption(flag("--ipam-release-grace <seconds>", "how long a namespace must stay gone before its address is released", AGENT_DEFAULTS.ipamReleaseGrace))
    .addOption(flag("--ipam-reclaim-threshold <share>", "when a pool's usage reaches this share (0-1], free the addresses of pods whose network namespace is gone at once, after --ipam-pressure-grace", AGENT_DEFAULTS.ipamReclaimThreshold))
    .addOption(flag("--ipam-pressure-grace <seconds>", "under pressure, how long a pod's network namespace must look gone before its address is freed", AGENT_DEFAULTS.ipamPressureGrace))
    .addOption(flag("--dns-listen <addrs>", "node-local DNS addresses (comma-separated host[:port]; off to disable)", AGENT_DEFAULTS.dnsListen))
    .addOption(flag("--cluster-domain <name>", "the cluster DNS zone", AGENT_DEFAULTS.clusterDomain))
    .addOption(flag("--dns-ttl <seconds>", "TTL of cluster-zone answers", AGENT_DEFAULTS.dnsTtl))
    .addOption(flag("--dns-pods <mode>", "pod records a-b-c-d.<ns>.pod.<zone>: disabled | insecure | verified", AGENT_DEFAULTS.dnsPods))
    .addOption(flag("--dns-upstream <addrs>", "upstream resolvers (comma-separated ip[:port]), resolv.conf, or none", AGENT_DEFAULTS.dnsUpstream))
    .addOption(flag("--dns-policy <policy>", "upstream choice: random | round_robin | sequential", AGENT_DEFAULTS.dnsPolicy))
    .addOption(flag("--dns-allow <prefixes>", "extra client prefixes the DNS server answers (besides the cluster network, node addresses, loopback)", AGENT_DEFAULTS.dnsAllow))
    .addOption(flag("--dns-cache-size <entries>", "DNS cache capacity", AGENT_DEFAULTS.dnsCacheSize))
    .addOption(flag("--dns-cache-bytes <bytes>", "DNS cache capacity in bytes (least recently used first, with --dns-cache-size)", AGENT_DEFAULTS.dnsCacheBytes))
    .addOption(flag("--dns-max-waiting <requests>", "requests that may wait for upstream answers at once (beyond: SERVFAIL or stale at once)", AGENT_DEFAULTS.dnsMaxWaiting))
    .addOption(flag("--dns-tcp-max-connections <n>", "DNS-over-TCP connections at most (the longest-idle one goes for a new one)", AGENT_DEFAULTS.dnsTcpMaxConnections))
    .addOption(flag("--dns-tcp-max-per-client <n>", "DNS-over-TCP connections per client address", AGENT_DEFAULTS.dnsTcpMaxPerClient))
    .addOption(flag("--dns-tcp-idle-timeout <seconds>", "close a DNS-over-TCP connection with nothing to do after this long", AGENT_DEFAULTS.dnsTcpIdleTimeout))
    .addOption(flag("--dns-tcp-read-timeout <seconds>", "a DNS-over-TCP message must be complete this long after its first byte", AGENT_DEFAULTS.dnsTcpReadTimeout))
    .addOption(flag("--dns-tcp-max-pending <bytes>", "unsent answer bytes after which a DNS-over-TCP connection is not read", AGENT_DEFAULTS.dnsTcpMaxPending))
    .addOption(flag("--discovery-listen <addrs>", "discovery API (HTTP, SSE) addresses, comma-separated host:port (off to disable)", AGENT_DEFAULTS.discoveryListen))
    .addOption(flag("--discovery-socket <path>", "discovery API Unix socket, to mount into pods (off to disable)", AGENT_DEFAULTS.discoverySocket))
    .addOption(flag("--discovery-lease-ttl <seconds>", "TTL of the etcd lease under pods' published endpoints (the node dies: they go after it)", AGENT_DEFAULTS.discoveryLeaseTtl))
    .addOption(flag("--discovery-max-subscribers <n>", "discovery streams at most (beyond: 429)", AGENT_DEFAULTS.discoveryMaxSubscribers))
    .addOption(flag("--discovery-max-per-client <n>", "discovery streams per TCP client address", AGENT_DEFAULTS.discoveryMaxPerClient))
    .addOption(flag("--discovery-max-pending <bytes>", "unread bytes held for one stream before it is dropped as too slow", AGENT_DEFAULTS.discoveryMaxPending))
    .addOption(flag("--discovery-replay <changes>", "registry changes kept so a reconnecting stream gets only what it missed", AGENT_DEFAULTS.discoveryReplay))
    .addOption(flag("--discovery-max-publications <n>", "endpoints one pod may publish", AGENT_DEFAULTS.discoveryMaxPublications))
    .action(async (raw: Record<string, unknown>) => {
      const opts = parseAgentOptions(raw);
      if (opts.v8Heap === "compact") compactHeap();
      const log = createLogger("weft-agent");
      const agent = new Agent(opts, log);
      const servers: (Server | NetServer)[] = [];
      try {
        if (opts.healthListen !== "off") servers.push(await startHealthServer(agent, opts.healthListen));
        servers.push(await startControlSocket(agent, opts.controlSocket, { onRefused: (reason) => agent.metrics.controlRefused.inc({ reason }) }).catch((e: NodeJS.ErrnoException) => {
          throw new ConfigError(`--control-socket ${opts.controlSocket}: cannot create the socket (${e.code ?? e.message})`, {
            hint: "its directory must exist and be writable by the agent (in the DaemonSet: the run volume, hostPath /run/weft, mounted read-write)",
          });
        }));
      } catch (e) {
        // A server that started would keep the process alive (and /healthz answering) with no agent behind it.
        servers.forEach((s) => s.close());
        throw e;
      }
      let stopping = false;
      const stop = (sig: string): void => {
        if (stopping) return;
        stopping = true;
        log.info({ signal: sig }, "stopping; the data path stays in place");
        void agent.stop().finally(() => {
          servers.forEach((s) => s.close());
          process.exit(0);
        });
      };
      // Every background task catches its own errors; this is the net below them. The data path and the
      // state are reconciled periodically, so the agent logs loudly, counts, and carries on.
      process.on("unhandledRejection", (e) => {
        agent.metrics.internalErrors.inc({ task: "unhandled" });
        log.error({ err: e instanceof Error ? e.stack ?? e.message : String(e) }, "unhandled rejection in a background task (a bug: please report it)");
      });
      process.on("SIGTERM", () => stop("SIGTERM"));
      process.on("SIGINT", () => stop("SIGINT"));
      try {
        await agent.start();
      } catch (e) {
        if (stopping) return;
        await agent.stop().catch(() => undefined);
        servers.forEach((s) => s.close());
        throw e;
      }
      await new Promise(() => undefined); // runs until a signal
    });
}
