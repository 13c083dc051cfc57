import { Option, type Command } from "commander";
import { AGENT_DEFAULTS } from "../agent/options.js";
import type { EtcdClientOptions } from "../common/etcd-client.js";
import { EtcdUnreachableError, probeEndpoints } from "../common/etcd-probe.js";
import { RegistryUnavailableError as ServiceRegistryUnavailable } from "../registry/errors.js";
import { RegistryUnavailableError as SubnetRegistryUnavailable } from "../subnet/errors.js";

/** A flag that also reads WEFT_<NAME> from the environment (--etcd-endpoints: WEFT_ETCD_ENDPOINTS); the flag wins. */
export function envOption(spec: string, help: string, def?: string): Option {
  const long = /--([a-z0-9-]+)/.exec(spec)?.[1] ?? ""; // digits too: --public-ipv6 reads WEFT_PUBLIC_IPV6, --v8-heap WEFT_V8_HEAP
  const o = new Option(spec, help).env(`WEFT_${long.toUpperCase().replace(/-/g, "_")}`);
  return def === undefined ? o : o.default(def);
}

/** The values of the etcd flags, as commander hands them over. */
export interface EtcdFlagValues {
  readonly etcdEndpoints: string;
  readonly etcdCafile?: string | undefined;
  readonly etcdCertfile?: string | undefined;
  readonly etcdKeyfile?: string | undefined;
  readonly etcdPrefix?: string | undefined;
  readonly registryPrefix?: string | undefined;
}

/**
 * The etcd flags, one definition for every command that talks to etcd
 * (`agent`, `network`, `svc`): endpoints, the TLS files, and the prefix
 * flags the command uses (`subnets`: --etcd-prefix, flannel's; `registry`:
 * --registry-prefix). Each also reads WEFT_<NAME>.
 */
export function addEtcdOptions(c: Command, prefixes: { readonly subnets?: boolean; readonly registry?: boolean }): Command {
  c.addOption(envOption("--etcd-endpoints <urls>", "comma-separated etcd client URLs (https:// for TLS)", AGENT_DEFAULTS.etcdEndpoints));
  if (prefixes.subnets) c.addOption(envOption("--etcd-prefix <prefix>", "etcd key prefix of the network config and leases (flannel's)", AGENT_DEFAULTS.etcdPrefix));
  if (prefixes.registry) c.addOption(envOption("--registry-prefix <prefix>", "etcd key prefix of the service registry", AGENT_DEFAULTS.registryPrefix));
  return c
    .addOption(envOption("--etcd-cafile <file>", "CA certificate(s) that sign etcd's server certificate (TLS; default: the system's)"))
    .addOption(envOption("--etcd-certfile <file>", "client certificate for etcd TLS (with --etcd-keyfile; etcd --client-cert-auth takes the user from its CN)"))
    .addOption(envOption("--etcd-keyfile <file>", "the client certificate's private key (unencrypted PEM)"));
}

/** The client options the flags give (the endpoints list split). */
export function etcdClientOptions(o: EtcdFlagValues): EtcdClientOptions {
  return {
    endpoints: o.etcdEndpoints.split(",").map((s) => s.trim()).filter(Boolean),
    caFile: o.etcdCafile, certFile: o.etcdCertfile, keyFile: o.etcdKeyfile,
  };
}

/**
 * Runs `fn`; when etcd fails (unreachable, TLS refused), the error that comes
 * out says why for each endpoint, in words naming the flag to fix (the probe
 * of src/common/etcd-probe.ts, as the agent's "waiting for etcd" says it).
 */
export async function explainEtcdErrors<T>(o: EtcdFlagValues, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (!(e instanceof SubnetRegistryUnavailable || e instanceof ServiceRegistryUnavailable)) throw e;
    const why = await probeEndpoints(etcdClientOptions(o));
    throw new EtcdUnreachableError(`${e.message}\nwhy, per endpoint:\n  ${why.join("\n  ")}`, e);
  }
}
