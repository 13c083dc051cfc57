/**
 * The DNS server on IPv6, with real clients over a veth between two network
 * namespaces: the server (a child process running the built dist/ code, as
 * the agent runs it) in one, the real `dig -6` and a real unbound — the
 * IPv6 upstream — in the other.
 *
 *   server ns  s0: 2001:db8:53::1/64, 2001:db8:53::2/64, 198.51.100.1/24, 198.51.100.4/24, its fe80:: address
 *   client ns  c0: 2001:db8:53::10 (allowed), 2001:db8:53::11 (refused), 2001:db8:53::53 (unbound), 198.51.100.2
 *
 * One server ("batch") listens on [2001:db8:53::1]:53 and 198.51.100.1:53,
 * and on [::]:5353 and 0.0.0.0:5353 (both families on one port), all on the
 * recvmmsg/sendmmsg batch path; a second ("dgram") on [2001:db8:53::1]:54
 * with the batch path turned off. Both forward to unbound at
 * [2001:db8:53::53]:53. Answers from the cluster zone (sent in the batch),
 * answers from the upstream (sent on their own later), TCP, the ACL, the
 * source address of answers on a wildcard socket (dig drops an answer from
 * an address it did not ask) and a link-local client's scope are checked.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Netns, uniqueTag, veth } from "../../src/harness/netns.js";
import { UnboundServer } from "../../src/harness/unbound.js";
import { parseDig, repoRoot, rr, type DigResult } from "../helpers/dns.js";

const S1 = "2001:db8:53::1";
const S2 = "2001:db8:53::2";
const S4 = "198.51.100.1";
const S4B = "198.51.100.4";
const ALLOWED = "2001:db8:53::10";
const REFUSED = "2001:db8:53::11";
const UPSTREAM = "2001:db8:53::53";
const C4 = "198.51.100.2";
const uz = UnboundServer.testZone();

let srv: Netns;
let cli: Netns;
let child: ChildProcess;
let unbound: ChildProcess;
let dir: string;
let lines: string[] = [];
let serverLinkLocal = "";
let stderr = "";

/** Two DnsServices from dist/; each stdin line prints their counters and paths as JSON. */
const script = `
import { EventEmitter } from "node:events";
import { DnsService } from "${repoRoot}dist/src/dns/service.js";
import { parseUpstream } from "${repoRoot}dist/src/dns/forward/upstreams.js";
import { silentLogger } from "${repoRoot}dist/src/common/log.js";
const svc = (name, ips) => ({ namespace: "default", name, type: "ClusterIP", clusterIPs: ips, ports: [], publishNotReadyAddresses: false });
const all = [svc("web6", ["2001:db8:5::a"]), svc("dual", ["198.18.255.20", "2001:db8:5::14"])];
const view = Object.assign(new EventEmitter(), { isSynced: true, services: () => new Map(all.map((s) => ["default/" + s.name, s])), endpointsOf: () => [] });
const common = { zone: { domain: "cluster.local", ttl: 30, pods: "insecure" }, upstreams: [parseUpstream("[${UPSTREAM}]:53")], policy: "random",
  allow: ["${ALLOWED}/128", "198.51.100.0/24", "fe80::/10"] };
const batch = new DnsService({ ...common, listen: [{ host: "${S1}", port: 53 }, { host: "${S4}", port: 53 }, { host: "::", port: 5353 }, { host: "0.0.0.0", port: 5353 }] }, view, silentLogger);
const dgram = new DnsService({ ...common, listen: [{ host: "${S1}", port: 54 }], udpBatch: false }, view, silentLogger);
// The upstream written as a person might: upper case, zeros spelled out.
const spelled = new DnsService({ ...common, upstreams: [parseUpstream("[2001:DB8:53:0:0::0053]:53")], listen: [{ host: "${S1}", port: 55 }] }, view, silentLogger);
await batch.start();
await dgram.start();
await spelled.start();
const show = (d) => ({ udp: d.udpPaths(), refused: d.counters.refusedClients, zone: d.counters.zoneAnswers, upstreamQueries: d.forwarder.upstreamQueries,
  upstreams: d.forwarder.upstreamStates(), dropped: d.counters.dropped, invalid: d.counters.invalidNames, tcpAcl: d.counters.tcpClosed.acl });
console.log("ready");
process.stdin.on("data", () => console.log(JSON.stringify({ batch: show(batch), dgram: show(dgram), spelled: show(spelled) })));
`;

interface Shown {
  udp: { listen: string; path: string; why?: string }[]; refused: number; zone: number; upstreamQueries: number; upstreams: { upstream: string; state: string }[];
  dropped: number; invalid: { pod: number; ip6_arpa: number }; tcpAcl: number;
}
async function stats(): Promise<{ batch: Shown; dgram: Shown; spelled: Shown }> {
  const n = lines.length;
  child.stdin?.write("stats\n");
  for (let i = 0; i < 200 && lines.length === n; i++) await new Promise((r) => setTimeout(r, 10));
  return JSON.parse(lines[lines.length - 1] ?? "{}") as { batch: Shown; dgram: Shown; spelled: Shown };
}

/** dig in the client namespace, from `from`. */
function dig(server: string, port: number, from: string, ...args: string[]): Promise<DigResult> {
  return new Promise((resolve) => {
    execFile("ip", ["netns", "exec", cli.name, "dig", `@${server}`, "-p", String(port), "-b", from, "+time=2", "+tries=1", ...args], { timeout: 15_000 },
      (_e, stdout, err) => resolve(parseDig(`${stdout}${err}`)));
  });
}

async function waitFor(what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !ok(); i++) await new Promise((r) => setTimeout(r, 20));
  if (!ok()) throw new Error(`${what} did not start: ${stderr}`);
}

beforeAll(async () => {
  const tag = uniqueTag();
  srv = await Netns.create("d6s", tag);
  cli = await Netns.create("d6c", tag);
  // No duplicate address detection: the addresses are usable at once.
  for (const ns of [srv, cli]) for (const k of ["all", "default"]) await ns.exec(["sysctl", "-qw", `net.ipv6.conf.${k}.accept_dad=0`]);
  await veth(srv, "s0", cli, "c0");
  for (const a of [S1, S2]) await srv.ip("addr", "add", `${a}/64`, "dev", "s0", "nodad");
  await srv.ip("addr", "add", `${S4}/24`, "dev", "s0");
  await srv.ip("addr", "add", `${S4B}/24`, "dev", "s0"); // a second address: on 0.0.0.0 its answers must leave from it too
  for (const a of [ALLOWED, REFUSED, UPSTREAM]) await cli.ip("addr", "add", `${a}/64`, "dev", "c0", "nodad");
  await cli.ip("addr", "add", `${C4}/24`, "dev", "c0");
  for (let i = 0; i < 100 && !serverLinkLocal; i++) {
    serverLinkLocal = /inet6 (fe80::[0-9a-f:]+)\/64 scope link(?! tentative)/.exec(await srv.ip("-6", "addr", "show", "dev", "s0"))?.[1] ?? "";
    if (!serverLinkLocal) await new Promise((r) => setTimeout(r, 50));
  }
  // The IPv6 upstream: a real unbound in the client namespace, serving the test zone.
  dir = mkdtempSync(join(tmpdir(), "weft-dns6-"));
  // A wildcard beside the test zone: every case asks a name of its own, never in the cache, always forwarded.
  writeFileSync(join(dir, "upstream.zone"), `${uz.text.trimEnd()}\n*.wild.${uz.name} 300 IN AAAA 2001:db8::77\n`);
  writeFileSync(join(dir, "unbound.conf"), [
    "server:", `  interface: ${UPSTREAM}`, "  port: 53", "  do-ip4: no", "  do-ip6: yes", "  num-threads: 1", '  chroot: ""', '  username: ""',
    `  directory: "${dir}"`, `  pidfile: "${join(dir, "unbound.pid")}"`, "  use-syslog: no", "  verbosity: 0", '  module-config: "iterator"',
    "  access-control: 2001:db8:53::/64 allow", '  auto-trust-anchor-file: ""', '  local-zone: "." refuse', `  local-zone: "${uz.name}" transparent`,
    '  local-zone: "test." nodefault', "remote-control:", "  control-enable: no",
    "auth-zone:", `  name: "${uz.name}"`, `  zonefile: "${join(dir, "upstream.zone")}"`, "  for-downstream: yes", "  for-upstream: yes", "  fallback-enabled: no", "",
  ].join("\n"));
  unbound = spawn("ip", ["netns", "exec", cli.name, "unbound", "-d", "-c", join(dir, "unbound.conf")], { stdio: ["ignore", "ignore", "pipe"] });
  unbound.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  child = spawn("ip", ["netns", "exec", srv.name, process.execPath, "--input-type=module", "-e", script], { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
    const parts = out.split("\n");
    out = parts.pop() ?? "";
    lines.push(...parts);
  });
  await waitFor("DNS server", () => lines.includes("ready") || child.exitCode !== null);
  if (child.exitCode !== null) throw new Error(`DNS server exited: ${stderr}`);
  let up: DigResult | undefined;
  for (let i = 0; i < 100; i++) {
    up = await dig(UPSTREAM, 53, ALLOWED, uz.a.name, "A");
    if (up.status === "NOERROR") break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (up?.status !== "NOERROR") throw new Error(`unbound did not answer on [${UPSTREAM}]:53: ${up?.text} ${stderr}`);
  lines = [];
});

afterAll(async () => {
  child?.kill("SIGKILL");
  unbound?.kill("SIGKILL");
  await srv?.destroy();
  await cli?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const WEB6 = "web6.default.svc.cluster.local.";
const POD = "2001-db8-7--9.default.pod.cluster.local.";

describe("listening on IPv6", () => {
  it("every listen address of the batch server is on the batch path, the dgram one says why not", async () => {
    const s = await stats();
    expect(s.batch.udp).toEqual([
      { listen: `[${S1}]:53`, path: "batch" }, { listen: `${S4}:53`, path: "batch" }, { listen: "[::]:5353", path: "batch" }, { listen: "0.0.0.0:5353", path: "batch" },
    ]);
    expect(s.dgram.udp).toEqual([{ listen: `[${S1}]:54`, path: "dgram", why: expect.stringMatching(/turned off/) }]);
  });

  describe.each([
    { path: "batch", server: S1, port: 53 },
    { path: "dgram", server: S1, port: 54 },
    { path: "batch, wildcard [::]", server: S1, port: 5353 },
    { path: "batch, wildcard [::], the other address", server: S2, port: 5353 },
  ])("$path: @$server port $port", ({ server, port }) => {
    it("a cluster name over UDP (dig -6)", async () => {
      const r = await dig(server, port, ALLOWED, "-6", WEB6, "AAAA");
      expect(r.status, r.text).toBe("NOERROR");
      expect(r.answer.map(rr)).toEqual([`${WEB6} 30 AAAA 2001:db8:5::a`]);
      expect(r.text).toContain(`SERVER: ${server}#${port}(${server})`);
    });

    it("an IPv6 pod name over UDP", async () => {
      const r = await dig(server, port, ALLOWED, "-6", POD, "AAAA");
      expect(r.answer.map(rr), r.text).toEqual([`${POD} 30 AAAA 2001:db8:7::9`]);
    });

    it("a name from the IPv6 upstream (not cached: the answer sent on its own, later)", async () => {
      const name = `n${uniqueTag()}.wild.${uz.name}`;
      const r = await dig(server, port, ALLOWED, "-6", name, "AAAA");
      expect(r.status, r.text).toBe("NOERROR");
      expect(r.answer.map(rr)).toEqual([`${name} 300 AAAA 2001:db8::77`]);
    });

    it("a cluster name over TCP", async () => {
      const r = await dig(server, port, ALLOWED, "-6", "+tcp", "dual.default.svc.cluster.local.", "AAAA");
      expect(r.status, r.text).toBe("NOERROR");
      expect(r.answer.map(rr)).toEqual(["dual.default.svc.cluster.local. 30 AAAA 2001:db8:5::14"]);
    });

    it("an upstream name over TCP", async () => {
      const name = `t${uniqueTag()}.wild.${uz.name}`;
      const r = await dig(server, port, ALLOWED, "-6", "+tcp", name, "AAAA");
      expect(r.answer.map(rr), r.text).toEqual([`${name} 300 AAAA 2001:db8::77`]);
    });

    it("names that cannot exist: NXDOMAIN, counted (a bad pod label, a bad ip6.arpa nibble)", async () => {
      const kind = port === 54 ? "dgram" : "batch";
      const before = (await stats())[kind].invalid;
      const pod = await dig(server, port, ALLOWED, "-6", "2001-db8---9.default.pod.cluster.local.", "AAAA");
      expect(pod.status, pod.text).toBe("NXDOMAIN");
      const arpa = await dig(server, port, ALLOWED, "-6", "z.8.b.d.0.1.0.0.2.ip6.arpa.", "PTR");
      expect(arpa.status, arpa.text).toBe("NXDOMAIN");
      expect((await stats())[kind].invalid).toEqual({ pod: before.pod + 1, ip6_arpa: before.ip6_arpa + 1 });
    });

    it("a client outside the ACL's IPv6 prefixes is REFUSED", async () => {
      const kind = port === 54 ? "dgram" : "batch";
      const before = (await stats())[kind].refused;
      const r = await dig(server, port, REFUSED, "-6", WEB6, "AAAA");
      expect(r.status, r.text).toBe("REFUSED");
      expect((await stats())[kind].refused).toBe(before + 1);
    });
  });

  it.each([{ port: 53, kind: "batch" }, { port: 54, kind: "dgram" }] as const)("TCP over IPv6 from a client outside the ACL: closed at accept, counted (port $port)", async ({ port, kind }) => {
    const before = (await stats())[kind].tcpAcl;
    const r = await dig(S1, port, REFUSED, "-6", "+tcp", WEB6, "AAAA");
    expect(r.status, r.text).toBe("NO_REPLY");
    expect(r.answer).toEqual([]);
    expect((await stats())[kind].tcpAcl).toBe(before + 1);
  });

  it("an upstream written non-canonically ([2001:DB8:53:0:0::0053]) is matched with its replies' source", async () => {
    const name = `s${uniqueTag()}.wild.${uz.name}`;
    const r = await dig(S1, 55, ALLOWED, "-6", name, "AAAA");
    expect(r.status, r.text).toBe("NOERROR");
    expect(r.answer.map(rr)).toEqual([`${name} 300 AAAA 2001:db8::77`]);
    expect((await stats()).spelled.upstreams).toEqual([{ upstream: `[${UPSTREAM}]:53`, state: "up" }]);
  });

  it("hostile datagrams over IPv6 on the batch path: dropped or answered, counted, and the server still answers", async () => {
    const before = (await stats()).batch;
    // 2,000 datagrams from the client namespace: empty, shorter than a header, random bytes, a header claiming 60,000 questions.
    const sender = `
      import dgram from "node:dgram";
      import { randomBytes } from "node:crypto";
      const s = dgram.createSocket("udp6");
      s.bind(0, "${ALLOWED}", async () => {
        for (let i = 0; i < 2000; i++) {
          const k = i % 4;
          const b = k === 0 ? Buffer.alloc(0) : k === 1 ? randomBytes(1 + (i % 11)) : k === 2 ? randomBytes(12 + (i % 500)) : Buffer.from([i & 255, 1, 1, 0, 0xea, 0x60, 0, 0, 0, 0, 0, 0]);
          await new Promise((r) => s.send(b, 53, "${S1}", r));
        }
        s.close();
      });`;
    await new Promise<void>((resolve, reject) => execFile("ip", ["netns", "exec", cli.name, process.execPath, "--input-type=module", "-e", sender], { timeout: 30_000 },
      (e) => (e ? reject(e) : resolve())));
    const r = await dig(S1, 53, ALLOWED, "-6", WEB6, "AAAA");
    expect(r.answer.map(rr), r.text).toEqual([`${WEB6} 30 AAAA 2001:db8:5::a`]);
    const after = (await stats()).batch;
    expect(after.dropped - before.dropped, "empty and short datagrams dropped").toBeGreaterThanOrEqual(1000);
  });

  it("the IPv6 upstream was asked (and is up)", async () => {
    const s = await stats();
    expect(s.batch.upstreamQueries).toBeGreaterThan(0);
    expect(s.batch.upstreams).toEqual([{ upstream: `[${UPSTREAM}]:53`, state: "up" }]);
  });

  it.each([
    { server: S4, port: 53, what: "its own IPv4 listen address" },
    { server: S4, port: 5353, what: "0.0.0.0 beside [::] on one port" },
    { server: S4B, port: 5353, what: "0.0.0.0, the interface's second address (answers leave from it: IP_PKTINFO)" },
  ])("IPv4 clients are served on $what", async ({ server, port }) => {
    const r = await dig(server, port, C4, "-4", "dual.default.svc.cluster.local.", "A");
    expect(r.status, r.text).toBe("NOERROR");
    expect(r.answer.map(rr)).toEqual(["dual.default.svc.cluster.local. 30 A 198.18.255.20"]);
    const name = `v${uniqueTag()}.wild.${uz.name}`;
    const up = await dig(server, port, C4, "-4", name, "AAAA");
    expect(up.answer.map(rr), up.text).toEqual([`${name} 300 AAAA 2001:db8::77`]);
  });

  it("a link-local client (scope id) through the wildcard batch socket", async () => {
    expect(serverLinkLocal, "the server's link-local address").not.toBe("");
    const r = await new Promise<DigResult>((resolve) => {
      execFile("ip", ["netns", "exec", cli.name, "dig", `@${serverLinkLocal}%c0`, "-p", "5353", "+time=2", "+tries=1", WEB6, "AAAA"], { timeout: 15_000 },
        (_e, stdout, err) => resolve(parseDig(`${stdout}${err}`)));
    });
    expect(r.status, r.text).toBe("NOERROR");
    expect(r.answer.map(rr)).toEqual([`${WEB6} 30 AAAA 2001:db8:5::a`]);
  });
});
