/**
 * The client ACL is checked when a TCP connection is accepted: a refused
 * client's connection is closed at once (before it can hold a slot or send a
 * byte) and counted. A refused client must be neither loopback nor an address
 * of the server's host, so the server runs in a network namespace of its own
 * (a child process: the built dist/ code, as the agent runs it), and the
 * clients — the real dig — in a second namespace joined to it by veth:
 *   server ns: 198.51.100.1/24      client ns: 198.51.100.2 (refused), 198.51.100.3 (allowed by --dns-allow)
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Netns, uniqueTag, veth } from "../../src/harness/netns.js";
import { parseDig, repoRoot } from "../helpers/dns.js";

const SERVER = "198.51.100.1";
let srv: Netns;
let cli: Netns;
let child: ChildProcess;
let lines: string[] = [];

/** The server: DnsService from dist/, one ClusterIP service, no upstream; prints its TCP close counters on each stdin line. */
const script = `
import { EventEmitter } from "node:events";
import { DnsService } from "${repoRoot}dist/src/dns/service.js";
import { silentLogger } from "${repoRoot}dist/src/common/log.js";
const web = { namespace: "default", name: "web", type: "ClusterIP", clusterIPs: ["198.18.255.10"], ports: [], publishNotReadyAddresses: false };
const view = Object.assign(new EventEmitter(), { isSynced: true, services: () => new Map([["default/web", web]]), endpointsOf: () => [] });
const dns = new DnsService({ listen: [{ host: "${SERVER}", port: 53 }], zone: { domain: "cluster.local", ttl: 30, pods: "disabled" },
  upstreams: [], policy: "random", allow: ["198.51.100.3/32"] }, view, silentLogger);
await dns.start();
console.log("ready");
process.stdin.on("data", () => console.log(JSON.stringify({ closed: dns.counters.tcpClosed, refused: dns.counters.refusedClients, open: dns.tcpConnections })));
`;

async function stats(): Promise<{ closed: Record<string, number>; refused: number; open: number }> {
  const n = lines.length;
  child.stdin?.write("stats\n");
  for (let i = 0; i < 200 && lines.length === n; i++) await new Promise((r) => setTimeout(r, 10));
  return JSON.parse(lines[lines.length - 1] ?? "{}") as { closed: Record<string, number>; refused: number; open: number };
}

const dig = async (from: string, ...args: string[]): Promise<{ r: ReturnType<typeof parseDig>; ms: number }> => {
  const t0 = performance.now();
  const out = await new Promise<string>((resolve) => {
    execFile("ip", ["netns", "exec", cli.name, "dig", `@${SERVER}`, "-b", from, "+time=2", "+tries=1", ...args], { timeout: 10_000 }, (_e, stdout, stderr) => resolve(`${stdout}${stderr}`));
  });
  return { r: parseDig(out), ms: performance.now() - t0 };
};

beforeAll(async () => {
  const tag = uniqueTag();
  srv = await Netns.create("dsrv", tag);
  cli = await Netns.create("dcli", tag);
  await veth(srv, "s0", cli, "c0");
  await srv.ip("addr", "add", `${SERVER}/24`, "dev", "s0");
  await cli.ip("addr", "add", "198.51.100.2/24", "dev", "c0");
  await cli.ip("addr", "add", "198.51.100.3/24", "dev", "c0");
  child = spawn("ip", ["netns", "exec", srv.name, process.execPath, "--input-type=module", "-e", script], { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
    const parts = out.split("\n");
    out = parts.pop() ?? "";
    lines.push(...parts);
  });
  for (let i = 0; i < 500 && !lines.includes("ready"); i++) {
    if (child.exitCode !== null) throw new Error(`DNS server exited: ${err}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  if (!lines.includes("ready")) throw new Error(`DNS server did not start: ${err}`);
  lines = [];
});

afterAll(async () => {
  child?.kill("SIGKILL");
  await srv?.destroy();
  await cli?.destroy();
});

describe("ACL at accept", () => {
  it("an allowed client is answered over TCP", async () => {
    const { r } = await dig("198.51.100.3", "+tcp", "web.default.svc.cluster.local", "A");
    expect([r.status, r.answer.map((a) => a.data)], r.text).toEqual(["NOERROR", ["198.18.255.10"]]);
  });

  it("a refused client's TCP connection is closed at once (no answer, no wait) and counted; over UDP it gets REFUSED", async () => {
    const before = await stats();
    const { r, ms } = await dig("198.51.100.2", "+tcp", "web.default.svc.cluster.local", "A");
    expect(r.status, r.text).toBe("NO_REPLY");
    expect(ms, "closed at once, not after dig's 2 s timeout").toBeLessThan(1500);
    const after = await stats();
    expect((after.closed["acl"] ?? 0) - (before.closed["acl"] ?? 0)).toBe(1);
    expect(after.open).toBe(0);
    const udp = await dig("198.51.100.2", "web.default.svc.cluster.local", "A");
    expect(udp.r.status, udp.r.text).toBe("REFUSED");
  });
});
