/**
 * The weft DNS server as `bench:dns` runs it: a child process with the
 * agent's DNS part (registry watcher on a real etcd, cluster zone, cache,
 * forwarder) listening on 127.0.0.1. argv: <etcd endpoint> <registry prefix>
 * <upstream host:port> <port>. Prints "ready <port>" when it answers.
 */
import { createLogger } from "../src/common/log.js";
import { parseUpstream } from "../src/dns/forward/upstreams.js";
import { DnsService } from "../src/dns/service.js";
import { ServiceRegistry } from "../src/registry/store.js";
import { RegistryWatcher } from "../src/registry/watch.js";

const [endpoint = "", prefix = "/weft/registry", upstream = "", port = "0"] = process.argv.slice(2);
const log = createLogger("weft-dns-bench");
const registry = new ServiceRegistry({ endpoints: [endpoint], prefix }, log);
const watcher = new RegistryWatcher(registry, log);
await watcher.start();
const dns = new DnsService({
  listen: [{ host: "127.0.0.1", port: Number(port) }],
  zone: { domain: "cluster.local", ttl: 30, pods: "disabled" },
  upstreams: upstream ? [parseUpstream(upstream)] : [],
  policy: "random",
  allow: [],
}, watcher, log);
await dns.start();
console.log(`ready ${dns.addresses()[0]?.port ?? 0}`);
process.on("SIGTERM", () => {
  void dns.close().then(() => watcher.close()).finally(() => process.exit(0));
});
