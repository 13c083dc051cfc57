import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatCidr } from "../../src/common/ipv4.js";
import { projectRoot } from "../../src/common/paths.js";
import { Cluster } from "../../src/harness/cluster.js";

/**
 * A cluster whose etcd speaks only TLS on https://192.0.2.254:2379 and wants
 * a client certificate (--client-cert-auth): each agent has its own (CN
 * node-<i>), made by openssl. Agents, `weft svc` and `weft network` work over
 * it; wrong files are said in the agent's "waiting for etcd"; and with etcd's
 * RBAC on, an agent works as a node user that may only write leases.
 */
let c: Cluster;
const WEFT = join(projectRoot(), "bin", "weft.js");
const PROBE = 2; // the node whose agent each failure case starts with wrong files

beforeAll(async () => {
  // Short leases, so that a renewal happens while the test looks (every ~3 s).
  c = await Cluster.create({
    nodes: 3, podsPerNode: 1, etcdTls: true, manualNodes: [PROBE],
    agentArgs: ["--subnet-lease-ttl", "6", "--subnet-lease-renew-margin", "3"],
  });
}, 120_000);
afterAll(async () => {
  await c?.destroy();
});

/** `weft <args>` in node i's namespace (where 192.0.2.254 is reachable), with the given certificate files. */
async function weft(i: number, tls: { caFile: string; certFile: string; keyFile: string }, ...args: string[]): Promise<{ ok: boolean; out: string }> {
  const argv = [process.execPath, WEFT, ...args, "--etcd-endpoints", c.etcd.endpoint, "--etcd-cafile", tls.caFile, "--etcd-certfile", tls.certFile, "--etcd-keyfile", tls.keyFile];
  return c.node(i).ns.exec(argv, { timeoutMs: 20_000 }).then((out) => ({ ok: true, out }), (e: Error) => ({ ok: false, out: e.message }));
}

/** etcdctl in the hub namespace as `user` (its certificate's CN). */
async function etcdctl(user: string, ...args: string[]): Promise<string> {
  const pki = c.pki!;
  return c.hub.exec(["etcdctl", "--endpoints", c.etcd.endpoint, "--cacert", pki.ca.cert, "--cert", join(pki.dir, `${user}.pem`), "--key", join(pki.dir, `${user}.key`), ...args]);
}

async function dig(pod: number, name: string): Promise<string> {
  return (await c.pods[pod]!.ns.exec(["dig", "@169.254.20.10", "+short", "+time=2", "+tries=1", name], { timeoutMs: 10_000 })).trim();
}

async function waitFor<T>(get: () => Promise<T>, ok: (v: T) => boolean, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  let last: T | undefined;
  let err = "";
  for (;;) {
    try {
      last = await get();
      if (ok(last)) return last;
    } catch (e) {
      err = (e as Error).message;
    }
    if (Date.now() > end) throw new Error(`not in time; last: ${JSON.stringify(last)} ${err}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe("agents, weft svc and weft network against an etcd that requires TLS and client certificates", () => {
  it("agents hold leases and pods on different nodes reach each other", async () => {
    expect(c.etcd.endpoint).toBe("https://192.0.2.254:2379");
    expect(await c.pingAll()).toEqual([]);
    const keys = (await etcdctl("node-0", "get", "--prefix", "--keys-only", "/coreos.com/network/subnets/")).split("\n").filter(Boolean);
    expect(keys).toHaveLength(2);
  });

  it("each agent holds one connection to etcd: one client for the leases and the registry", async () => {
    for (const i of [0, 1]) {
      await waitFor(() => c.status(i), (s) => s.readiness.registrySynced === true);
      const conns = await c.node(i).ns.exec(["ss", "-Htn", "state", "established", "dst", "192.0.2.254:2379"]);
      expect(conns.split("\n").filter(Boolean)).toHaveLength(1);
    }
  });

  it("`weft network show` and `weft svc put` over TLS; the agents' registry watch serves the service to pods", async () => {
    const show = await weft(0, c.tlsFiles(0), "network", "show");
    expect(show.out).toMatch(/"Network":"198\.18\.0\.0\/16"/);
    const put = await weft(0, c.tlsFiles(0), "svc", "put", "service", "default/web", "--cluster-ip", "198.19.0.10");
    expect(put.ok).toBe(true);
    for (const p of [0, 1]) await expect.poll(() => dig(p, "web.default.svc.cluster.local"), { timeout: 5000 }).toBe("198.19.0.10");
  });
});

describe("wrong TLS files: the agent says which and why while it waits for etcd", () => {
  const cases: [string, () => Promise<string[]>, RegExp][] = [
    ["a wrong CA", async () => ["--etcd-cafile", (await c.pki!.newCa("wrong-ca")).cert],
      /is not signed by the CA in --etcd-cafile \S+\/wrong-ca\.pem \(CN=weft-test-wrong-ca\): unable to verify the first certificate \(wrong --etcd-cafile\?\)/],
    ["an expired client certificate", async () => {
      const f = await c.pki!.issue("expired", { usage: "client", cn: "node-2", expired: true });
      return ["--etcd-certfile", f.cert, "--etcd-keyfile", f.key];
    }, /refused the client certificate --etcd-certfile \S+expired\.pem: it expired on \S+ \(certificate has expired\); renew it/],
    ["no client certificate", async () => ["--etcd-certfile", "", "--etcd-keyfile", ""], /the server requires a client certificate: give --etcd-certfile and --etcd-keyfile/],
  ];
  it.each(cases)("%s", async (name, args, why) => {
    c.startAgent(PROBE, [...(await args()), "--state-dir", `${c.files(PROBE).stateDir}-${name.replace(/\W+/g, "-")}`]);
    try {
      const st = await waitFor(() => c.status(PROBE), (s) => s.waiting.some((w) => w.what === "etcd"));
      const w = st.waiting.find((x) => x.what === "etcd");
      expect(w?.error).toMatch(why);
      expect(w?.error).toContain("https://192.0.2.254:2379: ");
      expect(st.ready).toBe(false);
    } finally {
      await c.stopAgent(PROBE, "SIGKILL");
    }
  }, 30_000);

  it("a key that does not match its certificate: the agent stops at once, naming both files", async () => {
    const t = c.tlsFiles(PROBE);
    const child = c.startAgent(PROBE, ["--etcd-keyfile", c.tlsFiles(0).keyFile]);
    const code = await new Promise<number | null>((r) => child.once("exit", (n) => r(n)));
    expect(code).toBe(1);
    expect(c.agentLog(PROBE)).toContain(`weft: --etcd-keyfile ${c.tlsFiles(0).keyFile} does not match --etcd-certfile ${t.certFile} (CN=node-${PROBE}`);
  }, 30_000);
});

describe("etcd RBAC: the CN of each certificate is its user, and a node user may only write leases", () => {
  it("agents keep renewing, watching and acquiring as node users; writes to the config and the registry are refused", async () => {
    await Promise.all(["root", "publisher"].map((u) => c.pki!.issue(u, { usage: "client", cn: u })));
    const setup = [
      ["role", "add", "weft-node"],
      ["role", "grant-permission", "weft-node", "read", "/coreos.com/network/config"],
      ["role", "grant-permission", "weft-node", "--prefix=true", "readwrite", "/coreos.com/network/subnets/"],
      ["role", "grant-permission", "weft-node", "--prefix=true", "read", "/weft/registry/"],
      ["role", "add", "weft-publisher"],
      ["role", "grant-permission", "weft-publisher", "--prefix=true", "readwrite", "/weft/registry/"],
      ["user", "add", "root", "--no-password"], ["user", "grant-role", "root", "root"],
      ["user", "add", "publisher", "--no-password"], ["user", "grant-role", "publisher", "weft-publisher"],
      ...[0, 1].flatMap((i) => [["user", "add", `node-${i}`, "--no-password"], ["user", "grant-role", `node-${i}`, "weft-node"]]),
      ["auth", "enable"],
    ];
    for (const a of setup) await etcdctl("root", ...a);

    // Refused: a node user writing the config or the registry (the same command works as root/publisher below).
    const asNode = c.tlsFiles(0);
    const init = await weft(0, asNode, "network", "init", "--network", "198.18.0.0/16", "--force");
    expect(init.ok).toBe(false);
    expect(init.out).toMatch(/writing \/coreos\.com\/network\/config failed: .*permission denied/);
    const put = await weft(0, asNode, "svc", "put", "service", "default/api", "--cluster-ip", "198.19.0.11");
    expect(put.ok).toBe(false);
    expect(put.out).toMatch(/permission denied/);
    const asPublisher = { ...asNode, certFile: join(c.pki!.dir, "publisher.pem"), keyFile: join(c.pki!.dir, "publisher.key") };
    expect((await weft(0, asPublisher, "svc", "put", "service", "default/api", "--cluster-ip", "198.19.0.11")).ok).toBe(true);

    // Renewal: node 0's lease TTL goes back up as the agent (user node-0) keeps it alive.
    const keyOf = (i: number): string => `/coreos.com/network/subnets/${formatCidr(c.node(i).subnet!).replace("/", "-")}`;
    // (Lease IDs are 64-bit: read from the JSON text, not through a double.)
    const leaseOf = async (i: number): Promise<string> => BigInt(/"lease":(\d+)/.exec(await etcdctl("root", "get", "-w", "json", keyOf(i)))?.[1] ?? 0).toString(16);
    const ttl = async (id: string): Promise<number> => Number(/remaining\((\d+)s\)/.exec(await etcdctl("root", "lease", "timetolive", id))?.[1] ?? -1);
    const id0 = await leaseOf(0);
    // A renewal shows as the TTL going up between two reads (the first read may come right after one: never wait for "above it").
    let prev = await ttl(id0);
    let renewed = false;
    for (const end = Date.now() + 12_000; !renewed && Date.now() < end;) {
      await new Promise((r) => setTimeout(r, 300));
      const t = await ttl(id0);
      renewed = t > prev;
      prev = t;
    }
    expect(renewed, "node 0's lease was never renewed").toBe(true);

    // Acquisition and the own-key check: node 1's key deleted by an administrator; its agent notices and acquires again.
    const id1 = await leaseOf(1);
    expect(await etcdctl("root", "del", keyOf(1))).toBe("1\n");
    await waitFor(() => leaseOf(1), (id) => id !== "0" && id !== id1);
    expect(await leaseOf(0)).toBe(id0);
    await waitFor(() => c.status(1), (s) => s.ready);
    expect(await c.pingAll()).toEqual([]);
    // The registry watch as node users: the service the publisher wrote resolves.
    await expect.poll(() => dig(1, "api.default.svc.cluster.local"), { timeout: 5000 }).toBe("198.19.0.11");
    for (const i of [0, 1]) expect((await c.status(i)).waiting).toEqual([]);
  }, 60_000);
});
