import { parseCidr, parseIpv4, parseMac } from "../../src/common/ipv4.js";
import { WasmCore } from "../../src/dataplane/core/wasm-core.js";
import { DEFAULT_TUNNEL, type CoreLimits, type PeerEntry, type TunnelConfig } from "../../src/dataplane/core/types.js";
import { RefTunnel } from "../../src/dataplane/reference/tunnel.js";

/** Three test nodes on the documentation underlay, pods in 198.18.0.0/15. */
export const NODES = [
  { underlay: parseIpv4("192.0.2.1"), vtepMac: parseMac("02:00:c0:00:02:01"), subnet: parseCidr("198.18.1.0/24") },
  { underlay: parseIpv4("192.0.2.2"), vtepMac: parseMac("02:00:c0:00:02:02"), subnet: parseCidr("198.18.2.0/24") },
  { underlay: parseIpv4("192.0.2.3"), vtepMac: parseMac("02:00:c0:00:02:03"), subnet: parseCidr("198.18.3.0/24") },
] as const;

export function tunnelFor(node: number, extra: Partial<TunnelConfig> = {}): TunnelConfig {
  const n = NODES[node];
  if (!n) throw new Error(`no test node ${node}`);
  return { ...DEFAULT_TUNNEL, localIp: n.underlay, localMac: n.vtepMac, ...extra };
}

/** Peer table as node `self` sees the cluster: index i = node i, its own entry local. */
export function peersFor(self: number): PeerEntry[] {
  return NODES.map((n, i) => ({ ...n, local: i === self }));
}

/** A WASM core set up as node `self`: tunnel, peers, one route per node subnet. */
export function coreAs(self: number, limits: Partial<CoreLimits> = {}, extra: Partial<TunnelConfig> = {}): WasmCore {
  const core = WasmCore.create({ maxPeers: 16, maxRules: 64, slots: 64, slotSize: 2048, headroom: 64, maxBatch: 64, ...limits });
  core.configure(tunnelFor(self, extra));
  peersFor(self).forEach((p, i) => {
    core.setPeer(i, p);
    core.lpmInsert(p.subnet, i);
  });
  return core;
}

/** The reference, set up like `coreAs(self)`, over a copy of the core's memory right now. */
export function refMirror(core: WasmCore, self: number, extra: Partial<TunnelConfig> = {}): RefTunnel {
  const ref = new RefTunnel(core.bytes().slice(), { pktBase: core.pktBase, pktSize: core.pktSize, descBase: core.descBase }, tunnelFor(self, extra));
  peersFor(self).forEach((p, i) => {
    ref.setPeer(i, p);
    ref.lpm.insert(p.subnet.addr, p.subnet.len, i);
  });
  return ref;
}
