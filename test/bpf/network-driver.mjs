// Runs the ebpf backend's Network (built, from dist/) inside the network
// namespace it is started in, through a script of steps on stdin, and prints
// one JSON line: each step's result and the dumps it asked for. Started by
// test/bpf/network6.test.ts with `ip netns exec`; argv: <stateDir> <bpffs>.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(fileURLToPath(import.meta.url), "..", "..", "..", "dist", "src");
const { ebpfBackend } = await import(join(root, "backend", "ebpf", "index.js"));
const { parseNetworkConfig } = await import(join(root, "subnet", "network-config.js"));
const { parseCidr, parseIpv4, formatIpv4, formatCidr, parseMac, formatMac } = await import(join(root, "common", "ipv4.js"));
const { parseCidr6, parseIpv6, formatIpv6, formatCidr6 } = await import(join(root, "common", "ipv6.js"));
const { silentLogger } = await import(join(root, "common", "log.js"));
const { run } = await import(join(root, "common", "exec.js"));

const [stateDir, bpffs] = process.argv.slice(2);
const script = JSON.parse(readFileSync(0, "utf8"));

const lease = (s) => ({
  key: s.key, subnet: s.subnet ? parseCidr(s.subnet) : { addr: 0, len: 0 }, ...(s.subnet6 ? { subnet6: parseCidr6(s.subnet6) } : {}),
  attrs: {
    publicIp: parseIpv4(s.publicIp ?? "0.0.0.0"), backendType: "vxlan", vni: 1, vtepMac: parseMac(s.mac),
    ...(s.publicIpv6 ? { publicIpv6: parseIpv6(s.publicIpv6), v6: { vni: 1, vtepMac: parseMac(s.mac6 ?? s.mac) } } : {}),
  },
  leaseId: "1", modRevision: "1", createRevision: s.rev ?? "1",
});
const node = (n) => ({
  underlay: formatIpv4(n.underlay), mac: formatMac(n.vtepMac), subnet: n.subnet === undefined ? null : formatCidr({ addr: n.subnet, len: n.prefixLen }),
  underlay6: n.underlay6 === undefined ? null : formatIpv6(n.underlay6), mac6: formatMac(n.vtepMac6), subnet6: n.subnet6 ? formatCidr6(n.subnet6) : null,
});

const net = await ebpfBackend.register({
  config: parseNetworkConfig(JSON.stringify({ Network: "198.18.0.0/16", SubnetLen: 24, Backend: { Type: "vxlan", VNI: 1, Port: 8472 } })),
  iface: { name: "lo", index: 1, addr: parseIpv4(script.iface.publicIp), prefixLen: 24, publicIp: parseIpv4(script.iface.publicIp), mtu: script.iface.mtu ?? 1500,
    ...(script.iface.publicIpv6 ? { addr6: parseIpv6(script.iface.publicIpv6), publicIpv6: parseIpv6(script.iface.publicIpv6) } : {}) },
  stateDir, bpffs, bpfAttach: "auto", tunBusyPollUs: 0, log: silentLogger,
});
// The Datapath's maps (the network keeps it private; the test reads through it as the programs would).
const maps = net.dp.maps;

async function dump() {
  const dev = "weft.1";
  const addrs = JSON.parse(await run(["ip", "-6", "-json", "addr", "show", "dev", dev]))[0]?.addr_info ?? [];
  const routes6 = JSON.parse(await run(["ip", "-6", "-json", "route", "show", "dev", dev]));
  const ep = (e) => e && { ifindex: e.ifindex, mac: formatMac(e.mac) };
  return {
    routes: Object.fromEntries(maps.routes().map(([a, len]) => [formatCidr({ addr: a, len }), null])),
    routes6: Object.fromEntries(maps.routes6().map((p) => [formatCidr6(p), node(maps.route6(p))])),
    nodes: Object.fromEntries(maps.nodeAddrs().map((a) => [formatIpv4(a), node(maps.node(a))])),
    nodes6: Object.fromEntries(maps.nodeAddrs6().map((a) => [formatIpv6(a), node(maps.node6(a))])),
    endpoints: Object.fromEntries(maps.endpointAddrs().map((a) => [formatIpv4(a), ep(maps.endpoint(a))])),
    endpoints6: Object.fromEntries(maps.endpointAddrs6().map((a) => [formatIpv6(a), ep(maps.endpoint6(a))])),
    hostRoutes6: routes6.filter((r) => (r.protocol ?? "boot") === "boot").map((r) => r.dst).sort(),
    deviceAddrs6: addrs.filter((a) => a.scope === "global").map((a) => `${a.local}/${a.prefixlen}`),
    leaseAttrs: { mac: formatMac(net.leaseAttrs.vtepMac), publicIpv6: net.leaseAttrs.publicIpv6 === undefined ? null : formatIpv6(net.leaseAttrs.publicIpv6), v6: net.leaseAttrs.v6 ? { vni: net.leaseAttrs.v6.vni, mac: formatMac(net.leaseAttrs.v6.vtepMac) } : null },
    attached: net.dp.links().map(([p, i]) => `${p}@${i}`).sort(),
  };
}

const results = [];
for (const s of script.steps) {
  try {
    switch (s.op) {
      case "configureLocal": await net.configureLocal(lease(s.lease)); results.push(null); break;
      case "apply":
        await net.apply({ added: (s.added ?? []).map(lease), removed: (s.removed ?? []).map(lease), changed: (s.changed ?? []).map((c) => ({ before: lease(c.before), after: lease(c.after) })) });
        results.push(null);
        break;
      case "addEndpoint":
        await net.addEndpoint({ ip: s.ip === undefined ? undefined : parseIpv4(s.ip), ...(s.ip6 ? { ip6: parseIpv6(s.ip6) } : {}), ifname: s.ifname, mac: parseMac(s.mac) });
        results.push(null);
        break;
      case "removeEndpoint": results.push(await net.removeEndpoint({ ip: s.ip === undefined ? undefined : parseIpv4(s.ip), ip6: s.ip6 === undefined ? undefined : parseIpv6(s.ip6) })); break;
      case "reconcile": results.push(await net.reconcile(s.routes.map(lease))); break;
      case "deleteEndpoint6": results.push(maps.deleteEndpoint6(parseIpv6(s.ip6))); break;
      case "deleteRoute6": results.push(maps.deleteRoute6(parseCidr6(s.prefix))); break;
      case "setRoute6": maps.setRoute6(parseCidr6(s.prefix), { underlay: 0, vtepMac: parseMac("02:00:00:00:00:01"), underlay6: parseIpv6("2001:db8:ff::99") }); results.push(null); break;
      case "status": results.push({ ...net.status().counters, mtu: net.mtu }); break;
      case "ip": results.push(await run(["ip", ...s.args])); break;
      case "dump": results.push(await dump()); break;
      default: throw new Error(`unknown step ${s.op}`);
    }
  } catch (e) {
    results.push({ error: e.message, code: e.code });
  }
}
await net.close();
console.log(JSON.stringify(results));
