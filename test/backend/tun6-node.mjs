// One node of the tun backend over a dual-stack underlay, run inside a test
// namespace: registers the real backend (TUN device, IPv4 and IPv6 sockets,
// workers), programs itself and the other node from hand-made leases (IPv4
// and IPv6 subnets, both underlay addresses, BackendV6Data), prints "ready",
// on SIGUSR1 prints its counters as JSON, on SIGTERM closes.
// usage: node tun6-node.mjs <self: 0|1> <state dir> [ipv6]   (ipv6: an IPv6-only underlay)
import { tunBackend } from "../../dist/src/backend/tun/index.js";
import { keepVtepMac } from "../../dist/src/backend/device.js";
import { silentLogger } from "../../dist/src/common/log.js";
import { parseCidr, parseIpv4, parseMac } from "../../dist/src/common/ipv4.js";
import { parseCidr6, parseIpv6 } from "../../dist/src/common/ipv6.js";

const [selfArg, stateDir, mode] = process.argv.slice(2);
const self = Number(selfArg);
const only6 = mode === "ipv6";
const nodes = [0, 1].map((i) => ({
  addr: only6 ? 0 : parseIpv4(`192.0.2.${i + 1}`),
  addr6: parseIpv6(`2001:db8:ff00::${i + 1}`),
  subnet: only6 ? parseCidr("0.0.0.0/0") : parseCidr(`198.18.${i + 1}.0/24`),
  subnet6: parseCidr6(`2001:db8:${i + 1}::/64`),
  mac: parseMac(`02:00:00:00:01:0${i + 1}`),
}));
const n = nodes[self];
keepVtepMac(stateDir, 1, n.mac);
// The network config as parseNetworkConfig makes it: dual stack, or IPv6 only (EnableIPv4 false).
const config = {
  enableIpv4: !only6, network: only6 ? parseCidr("0.0.0.0/0") : parseCidr("198.18.0.0/15"), subnetLen: 24, subnetMin: 0, subnetMax: 0,
  backend: { type: "vxlan", vni: 1, port: 8472, mtu: undefined, directRouting: false },
  ipv6: { network: parseCidr6("2001:db8::/40"), subnetLen: 64, subnetMin: 0n, subnetMax: 0n, rangeSet: { min: false, max: false } },
};
const iface = { name: "u0", index: 0, addr: n.addr, prefixLen: 24, publicIp: n.addr, addr6: n.addr6, publicIpv6: n.addr6, mtu: 1500 };
const net = await tunBackend.register({ config, iface, stateDir, bpffs: "/sys/fs/bpf", bpfAttach: "auto", tunBusyPollUs: 0, log: silentLogger });
const lease = (i) => ({
  key: `k${i}`, subnet: nodes[i].subnet, subnet6: nodes[i].subnet6, leaseId: "1", modRevision: "1", createRevision: "1",
  attrs: { publicIp: nodes[i].addr, backendType: "vxlan", vni: 1, vtepMac: nodes[i].mac, publicIpv6: nodes[i].addr6, v6: { vni: 1, vtepMac: nodes[i].mac } },
});
await net.configureLocal(lease(self));
await net.apply({ added: [lease(1 - self)], removed: [], changed: [] });
console.log(JSON.stringify({ ready: true, underlay: net.status().paths, mtu: net.mtu }));
process.on("SIGUSR1", () => {
  setTimeout(() => console.log(JSON.stringify(net.status().counters)), 600); // after the workers' next report (every 500 ms)
});
process.on("SIGTERM", () => {
  void net.close().then(() => process.exit(0));
});
