// Test helper: the agent's pod side (PodService: IPAM + the CNI handlers) on
// its own, bound to an IPv4 and/or IPv6 subnet given on the command line,
// serving the plugin binary's framed protocol on a Unix socket. Run it inside
// a node's network namespace (ip netns exec), so the bridge and the host
// ends of the veths are made there.
//   node pod-host.mjs <state-dir> <socket> <subnet-file> <v4 cidr | -> <v6 cidr | ->
// Prints "ready" once it listens. "endpoints" on the socket answers the
// data-path registrations so far (JSON), so a test can see what ADD told it;
// "bind <v4 | -> <v6 | ->" binds other subnets (as a new lease would).
import { rmSync } from "node:fs";
import { createServer } from "node:net";
import { Registry } from "prom-client";
import { PodService } from "../../dist/src/agent/pods.js";
import { parseCidr } from "../../dist/src/common/ipv4.js";
import { formatIpv6, parseCidr6 } from "../../dist/src/common/ipv6.js";
import { formatIpv4 } from "../../dist/src/common/ipv4.js";
import { silentLogger } from "../../dist/src/common/log.js";

const [stateDir, socket, subnetFile, v4, v6] = process.argv.slice(2);
const endpoints = [];
const pods = await PodService.open({
  stateDir, subnetFile, registry: new Registry(), reconcileIntervalSec: 3600, releaseGraceSec: 3600, reclaimThreshold: 0.95, pressureGraceSec: 60,
  log: silentLogger,
  dataPath: {
    notReady: () => undefined,
    leaseProblem: () => undefined,
    addEndpoint: async (e) => void endpoints.push({ op: "add", ip: e.ip === undefined ? null : formatIpv4(e.ip), ip6: e.ip6 === undefined ? null : formatIpv6(e.ip6), ifname: e.ifname }),
    removeEndpoint: async (e) => {
      endpoints.push({ op: "del", ip: e.ip === undefined ? null : formatIpv4(e.ip), ip6: e.ip6 === undefined ? null : formatIpv6(e.ip6) });
      return true;
    },
  },
});
pods.bind(v4 === "-" ? undefined : parseCidr(v4), v6 === "-" ? undefined : parseCidr6(v6));
rmSync(socket, { force: true });
const server = createServer((sock) => {
  let buf = "";
  sock.on("data", async (d) => {
    buf += d.toString();
    const nl = buf.indexOf("\n");
    if (nl < 0) return;
    const line = buf.slice(0, nl);
    buf = "";
    if (line.startsWith("bind ")) {
      const [, b4, b6] = line.split(" ");
      pods.bind(b4 === "-" ? undefined : parseCidr(b4), b6 === "-" ? undefined : parseCidr6(b6));
      sock.end("ok\n");
      return;
    }
    if (line === "endpoints") {
      sock.end(`${JSON.stringify(endpoints)}\n`);
      return;
    }
    const out = await pods.handle(JSON.parse(line.slice(4)));
    sock.end(`cni-reply ${out.exit} ${Buffer.byteLength(out.stdout)}\n${out.stdout}`);
  });
  sock.on("error", () => undefined);
});
server.listen(socket, () => process.stdout.write("ready\n"));
process.on("SIGTERM", async () => {
  server.close();
  await pods.close();
  process.exit(0);
});
