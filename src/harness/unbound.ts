/**
 * A real unbound (NLnet Labs) for tests and benchmarks: the upstream that
 * weft's DNS server forwards to, and the baseline it is measured against.
 *
 * It runs in the foreground (`unbound -d -c <dir>/unbound.conf`) as the
 * current user, without chroot, remote control, trust anchors or DNSSEC
 * validation (module-config "iterator"), listening on 127.0.0.1:<port> over
 * UDP and TCP only. It never queries anything but loopback: unless a
 * forward-zone for "." is given, the root is a `refuse` local zone, so a name
 * outside the zones it serves gets REFUSED instead of sending the iterator to
 * the Internet's root servers.
 *
 * Zones it can serve: authoritative zones from zonefiles (`authZones`,
 * unbound's auth-zone with for-downstream; see `UnboundServer.testZone()`),
 * local-data records (`localZones` + `localData`) and forward zones to other
 * loopback servers (`forwardTo`).
 */
import type { ChildProcess } from "node:child_process";
import { createSocket } from "node:dgram";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { query } from "./dnswire.js";
import { start } from "../common/exec.js";

export interface UnboundOptions {
  /** Directory for the config, the pidfile, the log and zonefiles; the caller owns (and removes) it. */
  readonly dir: string;
  /** Port on 127.0.0.1 (UDP and TCP); a free one is picked when absent. */
  readonly port?: number;
  /** num-threads (default 1). */
  readonly threads?: number;
  /** local-zone lines, e.g. { name: "cluster.local.", type: "static" }. */
  readonly localZones?: readonly { readonly name: string; readonly type: string }[];
  /** local-data records in zone-file syntax, e.g. "web.default.svc.cluster.local. 30 IN A 10.96.0.1". */
  readonly localData?: readonly string[];
  /** auth-zone clauses; `zonefile` is the zone's text (written to dir) or an absolute path to an existing file. */
  readonly authZones?: readonly { readonly name: string; readonly zonefile: string }[];
  /** forward-zone clauses to loopback servers (zone "." forwards everything not served here). */
  readonly forwardTo?: readonly { readonly zone?: string; readonly servers: readonly { readonly host: string; readonly port: number }[] }[];
  /** Lines appended to the server: clause verbatim (may also open further clauses). */
  readonly extraConfig?: string;
}

/** The facts about `UnboundServer.testZone()` that tests assert. Names are absolute, lower case. */
export interface TestZone {
  readonly name: string;
  readonly text: string;
  readonly soaMinimum: number;
  readonly a: { readonly name: string; readonly address: string; readonly ttl: number };
  readonly aaaa: { readonly name: string; readonly address: string; readonly ttl: number };
  readonly multiA: { readonly name: string; readonly addresses: readonly string[]; readonly ttl: number };
  readonly txt: { readonly name: string; readonly text: string; readonly ttl: number };
  readonly cname: { readonly name: string; readonly target: string; readonly ttl: number };
  readonly shortTtl: { readonly name: string; readonly address: string; readonly ttl: number };
  /** An RRset too big for 512 bytes: TC=1 over UDP without EDNS, complete over TCP. */
  readonly bigTxt: { readonly name: string; readonly strings: readonly string[]; readonly ttl: number };
  /** Names that do not exist (NXDOMAIN). */
  readonly nxdomain: readonly string[];
  /** A name that exists without the given type (NOERROR, no answer). */
  readonly nodata: { readonly name: string; readonly type: string };
}

const READY_TIMEOUT_MS = 10_000;

export class UnboundServer {
  private child: ChildProcess | undefined;
  private stderr = "";
  private exited: Promise<void> = Promise.resolve();
  readonly conf: string;
  readonly log: string;

  private constructor(private readonly opts: UnboundOptions, readonly port: number) {
    this.conf = join(opts.dir, "unbound.conf");
    this.log = join(opts.dir, "unbound.log");
  }

  /** Writes the config and starts unbound; resolves once it answers a query. */
  static async start(opts: UnboundOptions): Promise<UnboundServer> {
    for (const f of opts.forwardTo ?? []) for (const s of f.servers) assertLoopback(s.host);
    // A picked port can be taken between the probe and unbound's bind: retry with another.
    for (let attempt = 0; ; attempt++) {
      const s = new UnboundServer(opts, opts.port ?? (await freeUdpTcpPort()));
      s.writeConfig();
      try {
        await s.run();
        return s;
      } catch (e) {
        if (opts.port !== undefined || attempt >= 2 || !/bind|address already in use/i.test(String(e))) throw e;
      }
    }
  }

  get address(): { host: string; port: number } {
    return { host: "127.0.0.1", port: this.port };
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts the process (again, after stop(): same config, same port). */
  async run(): Promise<void> {
    if (this.running) return;
    const { dir } = this.opts;
    mkdirSync(dir, { recursive: true });
    this.stderr = "";
    const child = start(["unbound", "-d", "-c", this.conf], { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
    this.child = child;
    this.exited = new Promise((r) => child.once("exit", () => r()));
    child.stderr?.on("data", (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-4000)));
    let spawnError: Error | undefined;
    child.once("error", (e) => (spawnError = e));
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (spawnError) throw new Error(`cannot run unbound: ${spawnError.message} (apt-get install unbound)`);
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`unbound exited (${child.exitCode ?? child.signalCode}) at start on port ${this.port}:\n${this.tail()}`);
      }
      // Any reply (even REFUSED) means both sockets are bound and the worker runs.
      if (await query("127.0.0.1", this.port, "ready.probe.invalid.", "A", { timeoutMs: 200 }).then(() => true, () => false)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    await this.stop();
    throw new Error(`unbound did not answer on 127.0.0.1:${this.port} within ${READY_TIMEOUT_MS / 1000} s:\n${this.tail()}`);
  }

  /** SIGTERM, then waits for the exit (SIGKILL after 5 s). */
  async stop(): Promise<void> {
    const c = this.child;
    if (!c || !this.running) return;
    c.kill("SIGTERM");
    const killed = setTimeout(() => c.kill("SIGKILL"), 5000);
    await this.exited;
    clearTimeout(killed);
  }

  /** Stops the server; the directory is left to the caller. */
  async close(): Promise<void> {
    await this.stop();
  }

  /** The last lines of unbound's log file and stderr, for error messages. */
  tail(lines = 20): string {
    const log = existsSync(this.log) ? readFileSync(this.log, "utf8") : "";
    const all = `${log}${this.stderr}`.trimEnd().split("\n");
    return all.slice(-lines).join("\n") || "(no output)";
  }

  private writeConfig(): void {
    const { dir, threads = 1, localZones = [], localData = [], authZones = [], forwardTo = [], extraConfig } = this.opts;
    mkdirSync(dir, { recursive: true });
    const q = (s: string): string => JSON.stringify(s);
    const abs = (n: string): string => (n.endsWith(".") ? n : `${n}.`);
    const lines = [
      "server:",
      "  interface: 127.0.0.1",
      `  port: ${this.port}`,
      "  do-ip4: yes",
      "  do-ip6: yes",
      "  do-udp: yes",
      "  do-tcp: yes",
      `  num-threads: ${threads}`,
      ...(threads > 1 ? ["  so-reuseport: yes"] : []),
      '  chroot: ""',
      '  username: ""',
      `  directory: ${q(dir)}`,
      `  pidfile: ${q(join(dir, "unbound.pid"))}`,
      `  logfile: ${q(this.log)}`,
      "  use-syslog: no",
      "  verbosity: 1",
      '  module-config: "iterator"',
      "  do-not-query-localhost: no",
      "  access-control: 127.0.0.0/8 allow",
      "  access-control: ::1 allow",
      '  auto-trust-anchor-file: ""',
      '  trust-anchor-file: ""',
      "  harden-referral-path: no",
      "  qname-minimisation: no",
    ];
    const explicit = new Set(localZones.map((z) => abs(z.name).toLowerCase()));
    const served = [...authZones.map((z) => z.name), ...forwardTo.map((f) => f.zone ?? ".")].map(abs);
    // Keep the iterator off the Internet: "." refuses unless it is forwarded.
    if (!served.includes(".") && !explicit.has(".")) lines.push('  local-zone: "." refuse');
    // unbound answers "test." (RFC 6761) itself by default; test zones live there.
    if (!explicit.has("test.")) lines.push('  local-zone: "test." nodefault');
    // A transparent local zone lets queries reach the auth/forward zone beneath a default
    // local zone (e.g. unbound's "test." static zone, RFC 6761) or the "." refuse above.
    for (const n of served) if (n !== "." && !explicit.has(n.toLowerCase())) lines.push(`  local-zone: ${q(n)} transparent`);
    for (const z of localZones) lines.push(`  local-zone: ${q(abs(z.name))} ${z.type}`);
    for (const d of localData) lines.push(`  local-data: ${q(d)}`);
    if (extraConfig) lines.push(...extraConfig.split("\n").map((l) => (l.trim() ? `  ${l.trim()}` : "")));
    lines.push("remote-control:", "  control-enable: no");
    authZones.forEach((z, i) => {
      let file = z.zonefile;
      if (!(file.startsWith("/") && !file.includes("\n"))) {
        file = join(dir, `zone-${i}.${abs(z.name).replace(/\.$/, "") || "root"}.zone`);
        writeFileSync(file, z.zonefile);
      }
      lines.push("auth-zone:", `  name: ${q(abs(z.name))}`, `  zonefile: ${q(file)}`, "  for-downstream: yes", "  for-upstream: yes", "  fallback-enabled: no");
    });
    for (const f of forwardTo) {
      lines.push("forward-zone:", `  name: ${q(abs(f.zone ?? "."))}`);
      for (const s of f.servers) lines.push(`  forward-addr: ${s.host}@${s.port}`);
    }
    writeFileSync(this.conf, `${lines.join("\n")}\n`);
  }

  /**
   * The test zone `upstream.test.` (RFC 6761 reserved; documentation addresses
   * 192.0.2.0/24 and 2001:db8::/32) as zonefile text, with the facts tests assert.
   */
  static testZone(): TestZone {
    const name = "upstream.test.";
    const bigStrings = Array.from({ length: 16 }, (_, i) => `chunk-${String(i).padStart(2, "0")}-${"x".repeat(40)}`);
    const z: Omit<TestZone, "text"> = {
      name,
      soaMinimum: 60,
      a: { name: `www.${name}`, address: "192.0.2.10", ttl: 300 },
      aaaa: { name: `www.${name}`, address: "2001:db8::10", ttl: 300 },
      multiA: { name: `multi.${name}`, addresses: ["192.0.2.21", "192.0.2.22", "192.0.2.23"], ttl: 300 },
      txt: { name: `txt.${name}`, text: "hello from upstream", ttl: 300 },
      cname: { name: `alias.${name}`, target: `www.${name}`, ttl: 300 },
      shortTtl: { name: `short.${name}`, address: "192.0.2.30", ttl: 30 },
      bigTxt: { name: `big.${name}`, strings: bigStrings, ttl: 300 },
      nxdomain: [`nope.${name}`, `missing.${name}`, `deep.missing.${name}`],
      nodata: { name: `www.${name}`, type: "MX" },
    };
    const text = [
      `$ORIGIN ${name}`,
      "$TTL 300",
      `@ 3600 IN SOA ns.${name} hostmaster.${name} 1 3600 600 86400 ${z.soaMinimum}`,
      `@ 3600 IN NS ns.${name}`,
      "ns 300 IN A 127.0.0.1",
      `${z.a.name} ${z.a.ttl} IN A ${z.a.address}`,
      `${z.aaaa.name} ${z.aaaa.ttl} IN AAAA ${z.aaaa.address}`,
      ...z.multiA.addresses.map((a) => `${z.multiA.name} ${z.multiA.ttl} IN A ${a}`),
      `${z.txt.name} ${z.txt.ttl} IN TXT "${z.txt.text}"`,
      `${z.cname.name} ${z.cname.ttl} IN CNAME ${z.cname.target}`,
      `${z.shortTtl.name} ${z.shortTtl.ttl} IN A ${z.shortTtl.address}`,
      ...z.bigTxt.strings.map((s) => `${z.bigTxt.name} ${z.bigTxt.ttl} IN TXT "${s}"`),
      "",
    ].join("\n");
    return { ...z, text };
  }
}

function assertLoopback(host: string): void {
  if (!/^127\./.test(host) && host !== "::1") throw new Error(`unbound harness: forward address ${host} is not loopback`);
}

/** A port free for both TCP and UDP on 127.0.0.1 at the time of the call. */
export async function freeUdpTcpPort(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
    const port = (srv.address() as AddressInfo).port;
    const udp = createSocket("udp4");
    const ok = await new Promise<boolean>((r) => {
      udp.once("error", () => r(false));
      udp.bind(port, "127.0.0.1", () => r(true));
    });
    if (ok) udp.close();
    await new Promise((r) => srv.close(r));
    if (ok) return port;
  }
  throw new Error("no port free for both TCP and UDP on 127.0.0.1");
}
