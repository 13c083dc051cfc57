import { z } from "zod";
import { ConfigError } from "../common/errors.js";
import type { EtcdClientOptions } from "../common/etcd-client.js";

/**
 * The agent's options. Names follow flanneld's flags where flannel has one;
 * each flag can also be given as WEFT_<NAME> in the environment (the CLI
 * wires both). Validation errors name the flag and say what it takes.
 */
const hostPort = z.string().regex(/^[^:\s]+:\d{1,5}$/, "must be host:port, e.g. 127.0.0.1:9099");

export const agentOptionsSchema = z.object({
  etcdEndpoints: z.array(z.string().regex(/^https?:\/\/[^/\s]+$/, "each endpoint must be a URL like http://host:2379")).min(1),
  etcdPrefix: z.string().regex(/^\/\S*$/, "must start with /"),
  etcdCafile: z.string().optional(),
  etcdCertfile: z.string().optional(),
  etcdKeyfile: z.string().optional(),
  iface: z.string().optional(),
  publicIp: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}$/, "must be an IPv4 address").optional(),
  publicIpv6: z.string().regex(/^[0-9a-fA-F:.]{2,45}$/, "must be an IPv6 address").optional(),
  backend: z.enum(["auto", "ebpf", "vxlan", "tun"]),
  subnetFile: z.string().min(1),
  ipMasq: z.boolean(),
  stateDir: z.string().min(1),
  bpffs: z.string().min(1),
  bpfAttach: z.enum(["auto", "tcx", "tc"]),
  tunBusyPoll: z.number().int("must be a whole number of microseconds").min(0).max(1000, "must be at most 1000 µs"),
  v8Heap: z.enum(["compact", "default"]),
  healthListen: z.union([hostPort, z.literal("off")]),
  controlSocket: z.string().min(1),
  subnetLeaseTtl: z.number().int().min(5, "must be at least 5 seconds").max(30 * 86400),
  subnetLeaseRenewMargin: z.number().int().min(1),
  reconcileInterval: z.number().min(0.2).max(3600),
  ipamReconcileInterval: z.number().min(0.2).max(86400),
  ipamReleaseGrace: z.number().min(0).max(30 * 86400),
  ipamReclaimThreshold: z.number().gt(0, "must be above 0").max(1, "must be at most 1 (a share of the pool)"),
  ipamPressureGrace: z.number().min(0).max(30 * 86400),
  registryPrefix: z.string().regex(/^\/\S*$/, "must start with /"),
  dnsListen: z.union([z.literal("off"), z.array(z.string().regex(/^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\])(:\d{1,5})?$/, "each must be an address with an optional port, e.g. 169.254.20.10:53 or [::1]:53")).min(1)]),
  clusterDomain: z.string().regex(/^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, "must be a lower-case DNS name such as cluster.local"),
  dnsTtl: z.number().int().min(0).max(3600),
  dnsPods: z.enum(["disabled", "insecure", "verified"]),
  dnsUpstream: z.union([z.literal("resolv.conf"), z.literal("none"), z.array(z.string().regex(
    /^((\d{1,3}(\.\d{1,3}){3})(:\d{1,5})?|\[[0-9a-fA-F:]+\](:\d{1,5})?|[0-9a-fA-F]*:[0-9a-fA-F:]+)$/,
    "must be resolv.conf, none, or comma-separated addresses with an optional port (198.51.100.1, 198.51.100.1:5353, [2001:db8::1]:53)",
  )).min(1)]),
  dnsPolicy: z.enum(["random", "round_robin", "sequential"]),
  dnsAllow: z.array(z.string().regex(/^(\d{1,3}(\.\d{1,3}){3}\/\d{1,2}|[0-9a-fA-F:]*:[0-9a-fA-F:]*\/\d{1,3})$/, "each must be an IPv4 prefix like 192.0.2.0/24 or an IPv6 prefix like 2001:db8:42::/64")),
  dnsCacheSize: z.number().int().min(0).max(10_000_000),
  dnsCacheBytes: z.number().int().min(0, "must be 0 or more bytes").max(2 ** 34),
  dnsMaxWaiting: z.number().int().min(1).max(1_000_000),
  dnsTcpMaxConnections: z.number().int().min(1).max(65_535),
  dnsTcpMaxPerClient: z.number().int().min(1).max(65_535),
  dnsTcpIdleTimeout: z.number().min(0.1, "must be at least 0.1 seconds").max(3600),
  dnsTcpReadTimeout: z.number().min(0.1, "must be at least 0.1 seconds").max(60),
  dnsTcpMaxPending: z.number().int().min(1024, "must be at least 1024 bytes").max(64 * 2 ** 20),
  discoveryListen: z.union([z.literal("off"), z.array(z.string().regex(/^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):\d{1,5}$/, "each must be an address and port, e.g. 169.254.20.10:8053")).min(1)]),
  discoverySocket: z.union([z.literal("off"), z.string().regex(/^\/[^\s]*$/, "must be an absolute path, or off")]),
  discoveryLeaseTtl: z.number().int("must be whole seconds").min(2, "must be at least 2 seconds").max(86400),
  discoveryMaxSubscribers: z.number().int().min(1).max(1_000_000),
  discoveryMaxPerClient: z.number().int().min(1).max(1_000_000),
  discoveryMaxPending: z.number().int().min(4096, "must be at least 4096 bytes").max(2 ** 30),
  discoveryReplay: z.number().int().min(1).max(10_000_000),
  discoveryMaxPublications: z.number().int().min(1).max(10_000),
}).strict().refine((o) => o.subnetLeaseRenewMargin < o.subnetLeaseTtl, {
  message: "must be shorter than --subnet-lease-ttl", path: ["subnetLeaseRenewMargin"],
});

export type AgentOptions = z.infer<typeof agentOptionsSchema>;

/** The etcd client options the agent's flags give (endpoints and TLS files), for the client and the probe alike. */
export function etcdClientOptions(o: AgentOptions): EtcdClientOptions {
  return { endpoints: o.etcdEndpoints, caFile: o.etcdCafile, certFile: o.etcdCertfile, keyFile: o.etcdKeyfile };
}

export const AGENT_DEFAULTS = {
  etcdEndpoints: "http://127.0.0.1:2379",
  etcdPrefix: "/coreos.com/network",
  backend: "auto",
  subnetFile: "/run/weft/subnet.env",
  stateDir: "/var/lib/weft",
  bpffs: "/sys/fs/bpf",
  bpfAttach: "auto",
  tunBusyPoll: "50",
  v8Heap: "compact",
  healthListen: "127.0.0.1:9099",
  controlSocket: "/run/weft/agent.sock",
  subnetLeaseTtl: "86400",
  subnetLeaseRenewMargin: "3600",
  reconcileInterval: "10",
  ipamReconcileInterval: "60",
  ipamReleaseGrace: "600",
  ipamReclaimThreshold: "0.9",
  ipamPressureGrace: "10",
  registryPrefix: "/weft/registry",
  dnsListen: "169.254.20.10:53",
  clusterDomain: "cluster.local",
  dnsTtl: "5",
  dnsPods: "insecure",
  dnsUpstream: "resolv.conf",
  dnsPolicy: "random",
  dnsAllow: "",
  dnsCacheSize: "10000",
  dnsCacheBytes: String(32 * 2 ** 20),
  dnsMaxWaiting: "10000",
  dnsTcpMaxConnections: "256",
  dnsTcpMaxPerClient: "16",
  dnsTcpIdleTimeout: "10",
  dnsTcpReadTimeout: "2",
  dnsTcpMaxPending: "65536",
  discoveryListen: "169.254.20.10:8053",
  discoverySocket: "/run/weft/discovery.sock",
  discoveryLeaseTtl: "30",
  discoveryMaxSubscribers: "10000",
  discoveryMaxPerClient: "1024",
  discoveryMaxPending: String(2 ** 20),
  discoveryReplay: "10000",
  discoveryMaxPublications: "16",
} as const;

const FLAG: Record<string, string> = {
  etcdEndpoints: "--etcd-endpoints", etcdPrefix: "--etcd-prefix", etcdCafile: "--etcd-cafile", etcdCertfile: "--etcd-certfile",
  etcdKeyfile: "--etcd-keyfile", iface: "--iface", publicIp: "--public-ip", publicIpv6: "--public-ipv6", backend: "--backend", subnetFile: "--subnet-file",
  ipMasq: "--ip-masq", stateDir: "--state-dir", bpffs: "--bpffs", bpfAttach: "--bpf-attach", tunBusyPoll: "--tun-busy-poll", v8Heap: "--v8-heap", healthListen: "--health-listen", controlSocket: "--control-socket",
  subnetLeaseTtl: "--subnet-lease-ttl", subnetLeaseRenewMargin: "--subnet-lease-renew-margin", reconcileInterval: "--reconcile-interval",
  ipamReconcileInterval: "--ipam-reconcile-interval", ipamReleaseGrace: "--ipam-release-grace",
  ipamReclaimThreshold: "--ipam-reclaim-threshold", ipamPressureGrace: "--ipam-pressure-grace",
  registryPrefix: "--registry-prefix", dnsListen: "--dns-listen", clusterDomain: "--cluster-domain", dnsTtl: "--dns-ttl", dnsPods: "--dns-pods",
  dnsUpstream: "--dns-upstream", dnsPolicy: "--dns-policy", dnsAllow: "--dns-allow", dnsCacheSize: "--dns-cache-size",
  dnsCacheBytes: "--dns-cache-bytes", dnsMaxWaiting: "--dns-max-waiting", dnsTcpMaxConnections: "--dns-tcp-max-connections",
  dnsTcpMaxPerClient: "--dns-tcp-max-per-client", dnsTcpIdleTimeout: "--dns-tcp-idle-timeout", dnsTcpReadTimeout: "--dns-tcp-read-timeout",
  dnsTcpMaxPending: "--dns-tcp-max-pending", discoveryListen: "--discovery-listen", discoverySocket: "--discovery-socket",
  discoveryLeaseTtl: "--discovery-lease-ttl", discoveryMaxSubscribers: "--discovery-max-subscribers", discoveryMaxPerClient: "--discovery-max-per-client",
  discoveryMaxPending: "--discovery-max-pending", discoveryReplay: "--discovery-replay", discoveryMaxPublications: "--discovery-max-publications",
};

/** DNS limits the command line may not pass yet: their defaults apply. */
const DNS_LIMITS = ["dnsCacheBytes", "dnsMaxWaiting", "dnsTcpMaxConnections", "dnsTcpMaxPerClient", "dnsTcpIdleTimeout", "dnsTcpReadTimeout", "dnsTcpMaxPending"] as const;
/** Numeric discovery options: their defaults apply when a caller passes none. */
const DISCOVERY_NUMBERS = ["discoveryLeaseTtl", "discoveryMaxSubscribers", "discoveryMaxPerClient", "discoveryMaxPending", "discoveryReplay", "discoveryMaxPublications"] as const;

/** Raw CLI values (strings) to validated options; ConfigError names each bad flag. */
export function parseAgentOptions(raw: Record<string, unknown>): AgentOptions {
  /** A comma-separated list (or one of the keywords as is). */
  const list = (v: unknown, ...keywords: string[]): unknown =>
    typeof v === "string" ? (keywords.includes(v) ? v : v.split(",").map((x) => x.trim()).filter(Boolean)) : v;
  const num = (v: unknown): unknown => (typeof v === "string" && v.trim() !== "" && !Number.isNaN(Number(v)) ? Number(v) : v);
  const input = {
    ...raw,
    etcdEndpoints: typeof raw["etcdEndpoints"] === "string" ? raw["etcdEndpoints"].split(",").map((s) => s.trim()).filter(Boolean) : raw["etcdEndpoints"],
    ipMasq: raw["ipMasq"] === true || raw["ipMasq"] === "true" || raw["ipMasq"] === "1",
    subnetLeaseTtl: num(raw["subnetLeaseTtl"]),
    subnetLeaseRenewMargin: num(raw["subnetLeaseRenewMargin"]),
    reconcileInterval: num(raw["reconcileInterval"]),
    ipamReconcileInterval: num(raw["ipamReconcileInterval"]),
    ipamReleaseGrace: num(raw["ipamReleaseGrace"]),
    ipamReclaimThreshold: num(raw["ipamReclaimThreshold"] ?? AGENT_DEFAULTS.ipamReclaimThreshold),
    ipamPressureGrace: num(raw["ipamPressureGrace"] ?? AGENT_DEFAULTS.ipamPressureGrace),
    tunBusyPoll: num(raw["tunBusyPoll"] ?? AGENT_DEFAULTS.tunBusyPoll),
    v8Heap: raw["v8Heap"] ?? AGENT_DEFAULTS.v8Heap,
    dnsListen: list(raw["dnsListen"], "off"),
    dnsUpstream: list(raw["dnsUpstream"], "resolv.conf", "none"),
    dnsAllow: list(raw["dnsAllow"]) ?? [],
    dnsTtl: num(raw["dnsTtl"]),
    dnsCacheSize: num(raw["dnsCacheSize"]),
    ...Object.fromEntries(DNS_LIMITS.map((k) => [k, num(raw[k] ?? AGENT_DEFAULTS[k])])),
    discoveryListen: list(raw["discoveryListen"] ?? AGENT_DEFAULTS.discoveryListen, "off"),
    discoverySocket: raw["discoverySocket"] ?? AGENT_DEFAULTS.discoverySocket,
    ...Object.fromEntries(DISCOVERY_NUMBERS.map((k) => [k, num(raw[k] ?? AGENT_DEFAULTS[k])])),
  };
  const r = agentOptionsSchema.safeParse(input);
  if (!r.success) {
    const msgs = r.error.issues.map((i) => {
      if (i.code === "unrecognized_keys") return `unknown option(s) ${i.keys.map((k) => FLAG[k] ?? `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(", ")}`;
      const key = String(i.path[0] ?? "");
      return `${FLAG[key] ?? key} ${JSON.stringify(raw[key])}: ${i.message}`;
    });
    throw new ConfigError(`bad agent options: ${msgs.join("; ")}`, { hint: "see `weft agent --help`" });
  }
  return r.data;
}
