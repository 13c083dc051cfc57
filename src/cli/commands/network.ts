import type { Command } from "commander";
import { ConfigError } from "../../common/errors.js";
import { parseCidr, parseIpv4 } from "../../common/ipv4.js";
import { formatIpv6, parseCidr6, parseIpv6 } from "../../common/ipv6.js";
import { formatNetworkConfig, parseNetworkConfig } from "../../subnet/network-config.js";
import { addEtcdOptions, etcdClientOptions, explainEtcdErrors, type EtcdFlagValues } from "../etcd-flags.js";

function intArg(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new ConfigError(`${name} must be a whole number, got "${v}"`);
  return Number(v);
}

interface InitFlags extends EtcdFlagValues {
  readonly etcdPrefix: string;
  readonly network?: string;
  readonly ipv6Network?: string;
  readonly ipv6SubnetLen?: string;
  readonly ipv6SubnetMin?: string;
  readonly ipv6SubnetMax?: string;
  readonly subnetLen?: string;
  readonly subnetMin?: string;
  readonly subnetMax?: string;
  readonly vni: string;
  readonly port: string;
  readonly mtu?: string;
  readonly directRouting?: boolean;
  readonly force?: boolean;
}

export function registerNetwork(program: Command): void {
  const net = program.command("network").description("the cluster network config in etcd (flannel's <prefix>/config)");
  const common = (c: Command): Command => addEtcdOptions(c, { subnets: true });

  common(net.command("init").description("write the network config (refuses to overwrite without --force)"))
    .option("--network <cidr>", "the IPv4 pod network, e.g. 198.18.0.0/16 (leave out for an IPv6-only network)")
    .option("--ipv6-network <cidr>", "the IPv6 pod network (sets EnableIPv6), e.g. 2001:db8:1::/48")
    .option("--ipv6-subnet-len <n>", "per-node IPv6 subnet length (default as flannel: 64, or network length + 2)")
    .option("--ipv6-subnet-min <addr>", "first IPv6 subnet that may be leased")
    .option("--ipv6-subnet-max <addr>", "last IPv6 subnet that may be leased")
    .option("--subnet-len <n>", "per-node subnet length (default as flannel: 24, or network length + 2)")
    .option("--subnet-min <addr>", "first subnet that may be leased")
    .option("--subnet-max <addr>", "last subnet that may be leased")
    .option("--vni <n>", "VXLAN network identifier", "1")
    .option("--port <n>", "VXLAN UDP port", "8472")
    .option("--mtu <n>", "underlay MTU to assume instead of the interface's")
    .option("--direct-routing", "route directly (no encapsulation) to nodes on the same L2 segment")
    .option("--force", "overwrite an existing config")
    .action(async (o: InitFlags) => {
      if (o.network === undefined && o.ipv6Network === undefined) {
        throw new ConfigError("give --network (IPv4), --ipv6-network, or both", { hint: "e.g. --network 198.18.0.0/16 --ipv6-network 2001:db8:1::/48" });
      }
      const text = formatNetworkConfig({
        network: o.network === undefined ? undefined : parseCidr(o.network),
        ipv6Network: o.ipv6Network === undefined ? undefined : parseCidr6(o.ipv6Network),
        ...(o.ipv6SubnetLen !== undefined ? { ipv6SubnetLen: intArg(o.ipv6SubnetLen, "--ipv6-subnet-len") } : {}),
        ...(o.ipv6SubnetMin !== undefined ? { ipv6SubnetMin: parseIpv6(o.ipv6SubnetMin) } : {}),
        ...(o.ipv6SubnetMax !== undefined ? { ipv6SubnetMax: parseIpv6(o.ipv6SubnetMax) } : {}),
        subnetLen: intArg(o.subnetLen, "--subnet-len"),
        subnetMin: o.subnetMin ? parseIpv4(o.subnetMin) : undefined,
        subnetMax: o.subnetMax ? parseIpv4(o.subnetMax) : undefined,
        vni: intArg(o.vni, "--vni"),
        port: intArg(o.port, "--port"),
        mtu: intArg(o.mtu, "--mtu"),
        directRouting: o.directRouting === true ? true : undefined,
      });
      const { SubnetRegistry } = await import("../../subnet/registry.js");
      const reg = new SubnetRegistry({ ...etcdClientOptions(o), prefix: o.etcdPrefix });
      try {
        const wrote = await explainEtcdErrors(o, () => reg.putNetworkConfig(text, o.force === true));
        if (!wrote) {
          const cur = await explainEtcdErrors(o, () => reg.getNetworkConfig());
          throw new ConfigError(`${reg.configKey} already holds a config: ${cur ?? "?"}`, { hint: "pass --force to overwrite it (nodes keep their leases only if they still fit)" });
        }
        console.log(`${reg.configKey} = ${text}`);
      } finally {
        reg.close();
      }
    });

  common(net.command("show").description("print the network config and how it is read"))
    .action(async (o: EtcdFlagValues & { etcdPrefix: string }) => {
      const { SubnetRegistry } = await import("../../subnet/registry.js");
      const reg = new SubnetRegistry({ ...etcdClientOptions(o), prefix: o.etcdPrefix });
      try {
        const text = await explainEtcdErrors(o, () => reg.getNetworkConfig());
        if (text === undefined) throw new ConfigError(`${reg.configKey} does not exist`, { hint: "create it with `weft network init --network <cidr>`" });
        console.log(text);
        // IPv6 addresses are bigints in memory: printed as their text.
        console.log(JSON.stringify(parseNetworkConfig(text), (_k, v: unknown) => (typeof v === "bigint" ? formatIpv6(v) : v)));
      } finally {
        reg.close();
      }
    });
}
