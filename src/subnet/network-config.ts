import { ConfigError } from "../common/errors.js";
import { contains, formatCidr, formatIpv4, parseCidr, parseIpv4, type Ipv4Prefix } from "../common/ipv4.js";

/**
 * The cluster network config, stored as flannel stores it at
 * `<prefix>/config`: {"Network", "SubnetLen", "SubnetMin", "SubnetMax",
 * "Backend": {"Type", "VNI", "Port", "MTU", "DirectRouting", ...}}.
 * Parsing follows flannel's rules (keys match case-insensitively, SubnetLen
 * and the range default the same way) so both agents read one config alike.
 */
export interface VxlanBackendConfig {
  readonly type: "vxlan";
  readonly vni: number;
  /** UDP port; flannel's 0 means the kernel default, 8472. */
  readonly port: number;
  /** Underlay MTU to use instead of the interface's (the device gets this - 50). */
  readonly mtu: number | undefined;
  readonly directRouting: boolean;
}

export interface NetworkConfig {
  readonly network: Ipv4Prefix;
  readonly subnetLen: number;
  /** First and last subnet addresses that may be leased (inclusive). */
  readonly subnetMin: number;
  readonly subnetMax: number;
  /** Whether SubnetMin / SubnetMax were written in the config (other nodes' leases are held to them only then). */
  readonly rangeSet?: { readonly min: boolean; readonly max: boolean };
  readonly backend: VxlanBackendConfig;
}

type Json = Record<string, unknown>;

function field(obj: Json, name: string): unknown {
  const key = Object.keys(obj).find((k) => k.toLowerCase() === name.toLowerCase());
  return key === undefined ? undefined : obj[key];
}

function int(obj: Json, name: string, where: string): number | undefined {
  const v = field(obj, name);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    throw new ConfigError(`${where}${name} must be a non-negative integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

function addr(obj: Json, name: string): number | undefined {
  const v = field(obj, name);
  if (v === undefined || v === null || v === "") return undefined;
  if (typeof v !== "string") throw new ConfigError(`${name} must be an IPv4 address string, got ${JSON.stringify(v)}`);
  return parseIpv4(v);
}

/** Parses and validates the config JSON. Errors say which field is wrong and how to fix it. */
export function parseNetworkConfig(text: string): NetworkConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`the network config is not valid JSON: ${(e as Error).message}`, {
      hint: 'write it as e.g. {"Network":"198.18.0.0/16","Backend":{"Type":"vxlan"}}',
    });
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new ConfigError("the network config must be a JSON object");
  const obj = raw as Json;

  const netText = field(obj, "Network");
  if (typeof netText !== "string" || netText === "") {
    throw new ConfigError("please define a correct Network parameter in the network config", { hint: 'e.g. "Network": "198.18.0.0/16"' });
  }
  const network = parseCidr(netText, { strict: false }); // flannel masks host bits too

  let subnetLen = int(obj, "SubnetLen", "") ?? 0;
  if (subnetLen > 0) {
    if (subnetLen > 30) throw new ConfigError(`SubnetLen must be less than /31, got ${subnetLen}`);
    if (subnetLen < network.len + 2) {
      throw new ConfigError(`SubnetLen /${subnetLen}: the network /${network.len} must be able to accommodate at least four subnets`, {
        hint: `use a SubnetLen of at least ${network.len + 2}`,
      });
    }
  } else {
    if (network.len > 28) throw new ConfigError(`network ${formatCidr(network)} is too small: the minimum useful prefix is /28`);
    subnetLen = network.len <= 22 ? 24 : network.len + 2;
  }
  const size = 2 ** (32 - subnetLen);
  const last = network.addr + 2 ** (32 - network.len) - size;

  const minSet = addr(obj, "SubnetMin");
  const maxSet = addr(obj, "SubnetMax");
  const subnetMin = minSet ?? network.addr + size;
  const subnetMax = maxSet ?? last;
  for (const [name, v] of [["SubnetMin", subnetMin], ["SubnetMax", subnetMax]] as const) {
    if (!contains(network, v)) throw new ConfigError(`${name} ${formatIpv4(v)} is not in the range of the Network ${formatCidr(network)}`);
    if ((v - network.addr) % size !== 0) throw new ConfigError(`${name} ${formatIpv4(v)} is not on a SubnetLen (/${subnetLen}) boundary`);
  }
  if (subnetMin > subnetMax) throw new ConfigError(`SubnetMin ${formatIpv4(subnetMin)} is above SubnetMax ${formatIpv4(subnetMax)}`);

  return {
    network, subnetLen, subnetMin, subnetMax, rangeSet: { min: minSet !== undefined, max: maxSet !== undefined }, backend: parseBackend(field(obj, "Backend")),
  };
}

function parseBackend(v: unknown): VxlanBackendConfig {
  if (v === undefined || v === null) {
    throw new ConfigError('the network config has no Backend; flannel would default to "udp", which weft does not speak', {
      hint: 'add "Backend": {"Type": "vxlan"}',
    });
  }
  if (typeof v !== "object" || Array.isArray(v)) throw new ConfigError("Backend must be a JSON object");
  const b = v as Json;
  const type = field(b, "Type");
  if (typeof type !== "string" || type.toLowerCase() !== "vxlan") {
    throw new ConfigError(`Backend.Type ${JSON.stringify(type)} is not supported: weft speaks "vxlan" on the wire`, {
      hint: 'set "Backend": {"Type": "vxlan"} (every weft backend, kernel, eBPF or TUN, is VXLAN on the wire)',
    });
  }
  const vni = int(b, "VNI", "Backend.") ?? 1;
  if (vni > 0xffffff) throw new ConfigError(`Backend.VNI must be at most 16777215, got ${vni}`);
  const port = int(b, "Port", "Backend.") ?? 0;
  if (port > 65535) throw new ConfigError(`Backend.Port must be at most 65535, got ${port}`);
  const mtu = int(b, "MTU", "Backend.");
  if (mtu !== undefined && mtu !== 0 && (mtu < 1280 || mtu > 65535)) throw new ConfigError(`Backend.MTU ${mtu} is outside 1280..65535`);
  const dr = field(b, "DirectRouting");
  if (dr !== undefined && typeof dr !== "boolean") throw new ConfigError(`Backend.DirectRouting must be true or false, got ${JSON.stringify(dr)}`);
  return { type: "vxlan", vni, port: port === 0 ? 8472 : port, mtu: mtu || undefined, directRouting: dr === true };
}

/** The JSON `weft network init` writes: what flannel writes, with weft's explicit defaults. */
export function formatNetworkConfig(opts: {
  network: Ipv4Prefix; subnetLen?: number; subnetMin?: number; subnetMax?: number;
  vni?: number; port?: number; mtu?: number; directRouting?: boolean;
}): string {
  const doc: Json = { Network: formatCidr(opts.network) };
  if (opts.subnetLen !== undefined) doc["SubnetLen"] = opts.subnetLen;
  if (opts.subnetMin !== undefined) doc["SubnetMin"] = formatIpv4(opts.subnetMin);
  if (opts.subnetMax !== undefined) doc["SubnetMax"] = formatIpv4(opts.subnetMax);
  const backend: Json = { Type: "vxlan", VNI: opts.vni ?? 1, Port: opts.port ?? 8472 };
  if (opts.mtu !== undefined) backend["MTU"] = opts.mtu;
  if (opts.directRouting !== undefined) backend["DirectRouting"] = opts.directRouting;
  doc["Backend"] = backend;
  const text = JSON.stringify(doc);
  parseNetworkConfig(text); // refuse to write what would not parse back
  return text;
}
