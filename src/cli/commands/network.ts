import type { Command } from "commander";
import { ConfigError } from "../../common/errors.js";
import { parseCidr, parseIpv4 } from "../../common/ipv4.js";
import { formatNetworkConfig, parseNetworkConfig } from "../../subnet/network-config.js";
import { addEtcdOptions, etcdClientOptions, explainEtcdErrors, type EtcdFlagValues } from "../etcd-flags.js";

function intArg(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new ConfigError(`${name} must be a whole number, got "${v}"`);
  return Number(v);
}

interface InitFlags extends EtcdFlagValues {
  readonly etcdPrefix: string;
  readonly network: string;
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
    .requiredOption("--network <cidr>", "the pod network, e.g. 198.18.0.0/16")
    .option("--subnet-len <n>", "per-node subnet length (default as flannel: 24, or network length + 2)")
    .option("--subnet-min <addr>", "first subnet that may be leased")
    .option("--subnet-max <addr>", "last subnet that may be leased")
    .option("--vni <n>", "VXLAN network identifier", "1")
    .option("--port <n>", "VXLAN UDP port", "8472")
    .option("--mtu <n>", "underlay MTU to assume instead of the interface's")
    .option("--direct-routing", "route directly (no encapsulation) to nodes on the same L2 segment")
    .option("--force", "overwrite an existing config")
    .action(async (o: InitFlags) => {
      const text = formatNetworkConfig({
        network: parseCidr(o.network),
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
        console.log(JSON.stringify(parseNetworkConfig(text), (_k, v: unknown) => v));
      } finally {
        reg.close();
      }
    });
}
