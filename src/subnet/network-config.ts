import { ConfigError } from "../common/errors.js";
import { contains, formatCidr, formatIpv4, parseCidr, parseIpv4, type Ipv4Prefix } from "../common/ipv4.js";
import { contains6, formatCidr6, formatIpv6, maskOf6, parseCidr6, parseIpv6, type Ipv6Prefix } from "../common/ipv6.js";

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

/** The IPv6 half of a network config (flannel's IPv6Network, IPv6SubnetLen, IPv6SubnetMin, IPv6SubnetMax). */
export interface Ipv6NetworkConfig {
  readonly network: Ipv6Prefix;
  readonly subnetLen: number;
  readonly subnetMin: bigint;
  readonly subnetMax: bigint;
  readonly rangeSet: { readonly min: boolean; readonly max: boolean };
}

export interface NetworkConfig {
  /** EnableIPv4 (default true). When false, `network` is 0.0.0.0/0 and means nothing. */
  readonly enableIpv4: boolean;
  /** The IPv6 network when EnableIPv6 is true; undefined otherwise. */
  readonly ipv6?: Ipv6NetworkConfig | undefined;
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

  const enableIpv4 = bool(obj, "EnableIPv4") ?? true;
  const enableIpv6 = bool(obj, "EnableIPv6") ?? false;
  if (!enableIpv4 && !enableIpv6) throw new ConfigError("EnableIPv4 and EnableIPv6 are both false: the network has no address family", { hint: "set EnableIPv4 or EnableIPv6 to true" });
  const ipv6 = enableIpv6 ? parseIpv6Part(obj) : undefined;
  const backend = parseBackend(field(obj, "Backend"));
  if (!enableIpv4) {
    return { enableIpv4, ipv6, network: { addr: 0, len: 0 }, subnetLen: 0, subnetMin: 0, subnetMax: 0, rangeSet: { min: false, max: false }, backend };
  }

  const netText = field(obj, "Network");
  if (typeof netText !== "string" || netText === "") {
    throw new ConfigError("please define a correct Network parameter in the network config", { hint: 'e.g. "Network": "198.18.0.0/16", or "EnableIPv4": false for an IPv6-only network' });
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
    enableIpv4, ipv6, network, subnetLen, subnetMin, subnetMax, rangeSet: { min: minSet !== undefined, max: maxSet !== undefined }, backend,
  };
}

function bool(obj: Json, name: string): boolean | undefined {
  const v = field(obj, name);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw new ConfigError(`${name} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function addr6(obj: Json, name: string): bigint | undefined {
  const v = field(obj, name);
  if (v === undefined || v === null || v === "") return undefined;
  if (typeof v !== "string") throw new ConfigError(`${name} must be an IPv6 address string, got ${JSON.stringify(v)}`);
  return parseIpv6(v);
}

/** flannel's CheckNetworkConfig for the IPv6 half: the same rules, at 128 bits. */
function parseIpv6Part(obj: Json): Ipv6NetworkConfig {
  const netText = field(obj, "IPv6Network");
  if (typeof netText !== "string" || netText === "") {
    throw new ConfigError("EnableIPv6 is true: please define a correct IPv6Network parameter in the network config", { hint: 'e.g. "IPv6Network": "2001:db8:1::/56"' });
  }
  const network = parseCidr6(netText, { strict: false });
  let subnetLen = int(obj, "IPv6SubnetLen", "") ?? 0;
  if (subnetLen > 0) {
    if (subnetLen > 126) throw new ConfigError(`IPv6SubnetLen must be less than /127, got ${subnetLen}`);
    if (subnetLen < network.len + 2) {
      throw new ConfigError(`IPv6SubnetLen /${subnetLen}: the IPv6Network /${network.len} must be able to accommodate at least four subnets`, {
        hint: `use an IPv6SubnetLen of at least ${network.len + 2}`,
      });
    }
  } else {
    if (network.len > 124) throw new ConfigError(`IPv6Network ${formatCidr6(network)} is too small: the minimum useful prefix is /124`);
    subnetLen = network.len <= 62 ? 64 : network.len + 2;
  }
  const size = 1n << BigInt(128 - subnetLen);
  const last = network.addr + (1n << BigInt(128 - network.len)) - size;
  const minSet = addr6(obj, "IPv6SubnetMin");
  const maxSet = addr6(obj, "IPv6SubnetMax");
  const subnetMin = minSet ?? network.addr + size;
  const subnetMax = maxSet ?? last;
  for (const [name, v] of [["IPv6SubnetMin", subnetMin], ["IPv6SubnetMax", subnetMax]] as const) {
    if (!contains6(network, v)) throw new ConfigError(`${name} ${formatIpv6(v)} is not in the range of the IPv6Network ${formatCidr6(network)}`);
    if ((v & ~maskOf6(subnetLen)) !== 0n) throw new ConfigError(`${name} ${formatIpv6(v)} is not on an IPv6SubnetLen (/${subnetLen}) boundary`);
  }
  if (subnetMin > subnetMax) throw new ConfigError(`IPv6SubnetMin ${formatIpv6(subnetMin)} is above IPv6SubnetMax ${formatIpv6(subnetMax)}`);
  return { network, subnetLen, subnetMin, subnetMax, rangeSet: { min: minSet !== undefined, max: maxSet !== undefined } };
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
  network?: Ipv4Prefix | undefined; subnetLen?: number; subnetMin?: number; subnetMax?: number;
  ipv6Network?: Ipv6Prefix | undefined; ipv6SubnetLen?: number; ipv6SubnetMin?: bigint; ipv6SubnetMax?: bigint;
  vni?: number; port?: number; mtu?: number; directRouting?: boolean;
}): string {
  const doc: Json = {};
  if (opts.network !== undefined) doc["Network"] = formatCidr(opts.network);
  else doc["EnableIPv4"] = false;
  if (opts.subnetLen !== undefined) doc["SubnetLen"] = opts.subnetLen;
  if (opts.subnetMin !== undefined) doc["SubnetMin"] = formatIpv4(opts.subnetMin);
  if (opts.subnetMax !== undefined) doc["SubnetMax"] = formatIpv4(opts.subnetMax);
  if (opts.ipv6Network !== undefined) {
    doc["EnableIPv6"] = true;
    doc["IPv6Network"] = formatCidr6(opts.ipv6Network);
    if (opts.ipv6SubnetLen !== undefined) doc["IPv6SubnetLen"] = opts.ipv6SubnetLen;
    if (opts.ipv6SubnetMin !== undefined) doc["IPv6SubnetMin"] = formatIpv6(opts.ipv6SubnetMin);
    if (opts.ipv6SubnetMax !== undefined) doc["IPv6SubnetMax"] = formatIpv6(opts.ipv6SubnetMax);
  }
  const backend: Json = { Type: "vxlan", VNI: opts.vni ?? 1, Port: opts.port ?? 8472 };
  if (opts.mtu !== undefined) backend["MTU"] = opts.mtu;
  if (opts.directRouting !== undefined) backend["DirectRouting"] = opts.directRouting;
  doc["Backend"] = backend;
  const text = JSON.stringify(doc);
  parseNetworkConfig(text); // refuse to write what would not parse back
  return text;
}
