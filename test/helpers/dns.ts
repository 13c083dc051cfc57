/**
 * Helpers for the DNS server tests (test/dns/): the real `dig` with a parser
 * for its output, the `weft` CLI, raw UDP exchanges, a fixed ServiceView and
 * small waits. Everything talks to 127.0.0.1 only.
 */
import { execFile, spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import { EventEmitter } from "node:events";
import { fileURLToPath } from "node:url";
import type { ZoneEndpoint, ZoneService } from "../../src/dns/cluster/records.js";
import type { ServiceView } from "../../src/dns/service.js";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

export interface DigRecord {
  readonly name: string;
  readonly ttl: number;
  readonly class: string;
  readonly type: string;
  /** The rdata fields as dig prints them, joined by single spaces. */
  readonly data: string;
}

export interface DigResult {
  /** NOERROR, NXDOMAIN, BADVERS, ...; "NO_REPLY" when dig got no answer. */
  readonly status: string;
  readonly opcode: string;
  readonly id: number;
  /** Header flags: qr, aa, tc, rd, ra, ad, cd. */
  readonly flags: readonly string[];
  readonly counts: { readonly query: number; readonly answer: number; readonly authority: number; readonly additional: number };
  readonly question: readonly { readonly name: string; readonly type: string }[];
  readonly answer: readonly DigRecord[];
  readonly authority: readonly DigRecord[];
  readonly additional: readonly DigRecord[];
  /** The OPT pseudo-section, when the reply had one. */
  readonly edns: { readonly version: number; readonly flags: string; readonly udp: number } | undefined;
  /** dig printed "Transfer failed" (AXFR/IXFR refused). */
  readonly transferFailed: boolean;
  /** dig got TC=1 over UDP and asked again over TCP. */
  readonly retriedTcp: boolean;
  readonly text: string;
}

/** Parses dig's default output (one query). */
export function parseDig(text: string): DigResult {
  let status = "NO_REPLY";
  let opcode = "";
  let id = -1;
  let flags: string[] = [];
  let counts = { query: 0, answer: 0, authority: 0, additional: 0 };
  let edns: DigResult["edns"];
  const question: { name: string; type: string }[] = [];
  const sections: Record<string, DigRecord[]> = { ANSWER: [], AUTHORITY: [], ADDITIONAL: [] };
  let section: string | undefined;
  for (const line of text.split("\n")) {
    let m = /->>HEADER<<- opcode: (\w+), status: (\w+), id: (\d+)/.exec(line);
    if (m) {
      [opcode, status, id] = [m[1] ?? "", m[2] ?? "", Number(m[3])];
      continue;
    }
    m = /^;; flags:([^;]*); QUERY: (\d+), ANSWER: (\d+), AUTHORITY: (\d+), ADDITIONAL: (\d+)/.exec(line);
    if (m) {
      flags = (m[1] ?? "").trim().split(/\s+/).filter(Boolean);
      counts = { query: Number(m[2]), answer: Number(m[3]), authority: Number(m[4]), additional: Number(m[5]) };
      continue;
    }
    m = /^; EDNS: version: (\d+), flags:([^;]*); udp: (\d+)/.exec(line);
    if (m) {
      edns = { version: Number(m[1]), flags: (m[2] ?? "").trim(), udp: Number(m[3]) };
      continue;
    }
    m = /^;; (QUESTION|ANSWER|AUTHORITY|ADDITIONAL) SECTION:/.exec(line);
    if (m) {
      section = m[1];
      continue;
    }
    if (line.trim() === "") {
      section = undefined;
      continue;
    }
    if (section === "QUESTION" && line.startsWith(";")) {
      const t = line.slice(1).trim().split(/\s+/);
      question.push({ name: t[0] ?? "", type: t[t.length - 1] ?? "" });
    } else if (section && section !== "QUESTION" && !line.startsWith(";")) {
      const t = line.trim().split(/\s+/);
      sections[section]?.push({ name: t[0] ?? "", ttl: Number(t[1]), class: t[2] ?? "", type: t[3] ?? "", data: t.slice(4).join(" ") });
    }
  }
  return {
    status, opcode, id, flags, counts, question, edns,
    answer: sections["ANSWER"] ?? [], authority: sections["AUTHORITY"] ?? [], additional: sections["ADDITIONAL"] ?? [],
    transferFailed: /Transfer failed/.test(text), retriedTcp: /Truncated, retrying in TCP mode/.test(text), text,
  };
}

/** Runs `dig @127.0.0.1 -p <port> +time=2 +tries=1 <args>` and parses what it printed (also when it exits non-zero). */
export function dig(port: number, ...args: string[]): Promise<DigResult> {
  return digServer("127.0.0.1", port, ...args);
}

/** The same against another loopback address (::1). */
export function digServer(server: string, port: number, ...args: string[]): Promise<DigResult> {
  return new Promise((resolve) => {
    execFile("dig", [`@${server}`, "-p", String(port), "+time=2", "+tries=1", ...args], { timeout: 20_000 }, (_err, stdout, stderr) => {
      resolve(parseDig(`${stdout}${stderr}`));
    });
  });
}

/** "name ttl TYPE data", the form test tables compare. */
export const rr = (r: DigRecord): string => `${r.name} ${r.ttl} ${r.type} ${r.data}`;

/** Runs `node bin/weft.js <args>` (async: an in-process etcd forwarder must keep running). */
export function weft(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["bin/weft.js", ...args], { cwd: repoRoot });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

/** Sends one datagram to 127.0.0.1:port; resolves with the first reply, or undefined after `timeoutMs`. */
export function udpExchange(port: number, packet: Buffer, timeoutMs = 1000): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const s = createSocket("udp4");
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    const finish = (b: Buffer | undefined): void => {
      clearTimeout(timer);
      s.close();
      resolve(b);
    };
    s.on("message", (m) => finish(m));
    s.on("error", () => finish(undefined));
    s.send(packet, port, "127.0.0.1");
  });
}

/** Waits until `cond` holds (polling every `stepMs`); throws after `ms`. */
export async function until(cond: () => boolean | Promise<boolean>, ms = 10_000, stepMs = 20, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * A fixed, already-synced ServiceView (for tests about the wire and the
 * forwarder, where the registry is not the subject; the registry path is
 * covered by cluster-zone.test.ts and freshness.test.ts).
 */
export class StaticView extends EventEmitter implements ServiceView {
  readonly isSynced = true;
  private readonly svcs: Map<string, ZoneService>;

  constructor(services: readonly ZoneService[], private readonly eps: readonly ZoneEndpoint[] = []) {
    super();
    this.svcs = new Map(services.map((s) => [`${s.namespace}/${s.name}`, s]));
  }

  services(): ReadonlyMap<string, ZoneService> {
    return this.svcs;
  }

  endpointsOf(namespace: string, name: string): readonly ZoneEndpoint[] {
    return this.eps.filter((e) => e.namespace === namespace && e.service === name);
  }
}

/** default/web, ClusterIP 198.18.255.10, port http:TCP:80: the service the static-view tests ask for. */
export const WEB_SERVICE: ZoneService = {
  namespace: "default", name: "web", type: "ClusterIP", clusterIPs: ["198.18.255.10"],
  ports: [{ name: "http", protocol: "TCP", port: 80 }], publishNotReadyAddresses: false,
};
