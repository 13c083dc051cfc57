import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Cluster } from "../../src/harness/cluster.js";
import { PodmanDaemonSet } from "../../src/harness/podman.js";
import { ensureImage, MANIFEST } from "./image.js";

/**
 * The DaemonSet against a TLS etcd that requires client certificates, set up
 * as the manifest's header tells an operator: the Secret weft-etcd-tls
 * (ca.crt, tls.crt, tls.key; mounted at /etc/weft/etcd, mode 0400) and the
 * etcd-cafile/-certfile/-keyfile keys of weft-config.
 */
let c: Cluster;
let ds: PodmanDaemonSet;

beforeAll(async () => {
  const image = ensureImage();
  ds = new PodmanDaemonSet({
    manifest: MANIFEST, daemonSet: "weft-agent", image,
    config: (cl) => ({
      "weft-config": {
        "etcd-endpoints": cl.etcd.endpoint, backend: "vxlan", iface: "eth0", "dns-upstream": "none",
        "etcd-cafile": "/etc/weft/etcd/ca.crt", "etcd-certfile": "/etc/weft/etcd/tls.crt", "etcd-keyfile": "/etc/weft/etcd/tls.key",
      },
    }),
    // Node 2: the operator forgot the Secret (the volume is optional, so the pod starts without the files).
    secrets: (cl, i): Record<string, Record<string, string>> => {
      if (i === 2) return {};
      const f = cl.tlsFiles(i);
      return { "weft-etcd-tls": { "ca.crt": readFileSync(f.caFile, "utf8"), "tls.crt": readFileSync(f.certFile, "utf8"), "tls.key": readFileSync(f.keyFile, "utf8") } };
    },
  });
  c = await Cluster.create({ nodes: 3, podsPerNode: 0, etcdTls: true, manualNodes: [2], agentLauncher: ds });
}, 900_000);
afterAll(async () => {
  await c?.destroy();
});

describe("the DaemonSet with a TLS etcd", () => {
  it("agents read the Secret's files and hold leases over TLS with client certificates", async () => {
    expect(c.etcd.endpoint).toMatch(/^https:/);
    for (const i of [0, 1]) {
      const st = await c.status(i);
      expect(st.ready).toBe(true);
      expect(st.peers).toHaveLength(1);
    }
    expect(await ds.logs(c, 0)).toMatch(/agent ready/);
  });

  it("without the Secret, the agent exits saying which file it cannot read and which key names it", async () => {
    await ds.prepare(c, 2);
    const child = c.startAgent(2);
    const code = await new Promise<number | null>((r) => child.once("exit", r));
    const log = await ds.logs(c, 2);
    expect(code, log).toBe(1);
    expect(log).toMatch(/--etcd-cafile \/etc\/weft\/etcd\/ca\.crt cannot be read: ENOENT/);
  });
});
