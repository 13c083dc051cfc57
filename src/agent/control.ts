import { chmodSync, mkdirSync, rmSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { dirname } from "node:path";
import { ConfigError, WeftError } from "../common/errors.js";
import { contains, formatCidr, parseIpv4, parseMac } from "../common/ipv4.js";
import { contains6, formatCidr6, parseIpv6 } from "../common/ipv6.js";
import { versionOf, type Invocation } from "../cni/request.js";
import { CNI_CODE, CniError } from "../cni/spec.js";
import type { CniReply } from "../cni/types.js";
import { isDead } from "../ipam/reconciler.js";
import { addressText, encodeAllocation, type Allocation } from "../ipam/table.js";
import type { Agent } from "./agent.js";
import type { AgentCounters, AgentStatus } from "./status.js";

/** The agent answered, but refused the request. */
export class AgentRequestError extends WeftError {
  readonly code = "WEFT_AGENT_REFUSED";
}

/** The agent's local control socket is missing or does not answer. */
export class AgentUnreachableError extends WeftError {
  readonly code = "WEFT_AGENT_UNREACHABLE";
}

/** Longest request line: a CNI request carries the plugin's stdin (the C client takes at most 4 MiB) and env, JSON-escaped. */
export const MAX_REQUEST_BYTES = 16 << 20;
/** Bytes of unfinished request lines held across all connections; past it, the connection that grows is closed. */
export const MAX_BUFFERED_BYTES = 64 << 20;
/** Unanswered bytes a connection may have queued before the agent stops reading from it. */
const MAX_UNSENT_BYTES = 1 << 20;
export const MAX_CONNECTIONS = 256;

export interface ControlSocketHooks {
  /** A request refused before it was handled (too long, over the memory budget, too many connections). */
  readonly onRefused?: (reason: "too_long" | "busy" | "too_many_connections") => void;
}

/**
 * A unix socket (mode 0600: root only) on which the agent answers one JSON
 * line per request line. Requests: "status" (everything, peers included) and
 * "counters" (small: readiness and counters, for frequent polling).
 *
 * The socket is created with umask 0177, so it is never reachable by others,
 * not even between bind and chmod. Each connection's requests are answered
 * one at a time, in order; a client that sends faster than it reads stops
 * being read, a line longer than MAX_REQUEST_BYTES closes its connection, and
 * all connections together hold at most MAX_BUFFERED_BYTES of partial lines.
 */
export async function startControlSocket(agent: Agent, path: string, hooks: ControlSocketHooks = {}): Promise<Server> {
  mkdirSync(dirname(path), { recursive: true });
  rmSync(path, { force: true }); // a stale socket from a killed agent
  let buffered = 0;
  const server = createServer((sock) => {
    const parts: Buffer[] = [];
    let partLen = 0;
    const lines: string[] = [];
    let busy = false;
    const refuse = (reason: "too_long" | "busy", msg: string): void => {
      hooks.onRefused?.(reason);
      buffered -= partLen;
      partLen = 0;
      parts.length = 0;
      sock.end(`${JSON.stringify({ ok: false, error: msg })}\n`);
      sock.destroy();
    };
    const pump = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      try {
        for (let line = lines.shift(); line !== undefined && !sock.destroyed; line = lines.shift()) {
          const reply = line.startsWith("cni ") ? await handleCniLine(agent, line.slice(4)) : `${JSON.stringify(await handle(agent, line))}\n`;
          if (!sock.destroyed) sock.write(reply);
          if (sock.writableLength > MAX_UNSENT_BYTES) await drained(sock);
        }
      } catch {
        sock.destroy(); // a reply that cannot be written: the client asks again
      } finally {
        busy = false;
        if (!sock.destroyed && sock.isPaused()) sock.resume();
      }
    };
    sock.on("data", (d: Buffer) => {
      let start = 0;
      for (let nl = d.indexOf(10); nl >= 0; nl = d.indexOf(10, start)) {
        parts.push(d.subarray(start, nl));
        lines.push(Buffer.concat(parts).toString().trim());
        buffered -= partLen;
        partLen = 0;
        parts.length = 0;
        start = nl + 1;
      }
      const rest = d.length - start;
      if (rest > 0) {
        if (partLen + rest > MAX_REQUEST_BYTES) return refuse("too_long", `request longer than ${MAX_REQUEST_BYTES} bytes without a newline; refused`);
        if (buffered + rest > MAX_BUFFERED_BYTES) return refuse("busy", "the agent holds too many unfinished requests; try again");
        parts.push(d.subarray(start));
        partLen += rest;
        buffered += rest;
      }
      if (lines.length > 0) {
        if (lines.length > 64) sock.pause(); // a client far ahead of its answers waits
        void pump();
      }
    });
    sock.on("close", () => {
      buffered -= partLen;
      partLen = 0;
    });
    sock.on("error", () => undefined);
  });
  server.maxConnections = MAX_CONNECTIONS;
  server.on("drop", () => hooks.onRefused?.("too_many_connections"));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    const mask = process.umask(0o177);
    try {
      server.listen(path, () => resolve()); // bind(2) happens inside listen(), under the umask
    } finally {
      process.umask(mask);
    }
  });
  chmodSync(path, 0o600);
  return server;
}

/** Resolves when `sock` can take more, or is gone. */
function drained(sock: Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      sock.off("drain", done).off("close", done);
      resolve();
    };
    sock.on("drain", done).on("close", done);
  });
}

/**
 * A CNI invocation from the plugin binary (native/weft_cni.c or `weft cni`):
 * `cni {"role","env","stdin"}`. The reply is framed for a small C client
 * rather than JSON: `cni-reply <exit code> <byte count>\n` and then exactly
 * that many bytes, the plugin's stdout.
 */
async function handleCniLine(agent: Agent, json: string): Promise<string> {
  let out: CniReply;
  try {
    const inv = JSON.parse(json) as Invocation;
    if ((inv.role !== "weft" && inv.role !== "weft-ipam") || typeof inv.env !== "object" || typeof inv.stdin !== "string") {
      throw new Error("the request needs role (weft or weft-ipam), env and stdin");
    }
    if (!agent.pods) {
      out = { exit: 1, stdout: JSON.stringify(new CniError(CNI_CODE.TRY_AGAIN_LATER, "the weft agent is starting").toJSON(versionOf(inv.stdin))) };
    } else {
      out = await agent.pods.handle(inv);
    }
  } catch (e) {
    out = { exit: 1, stdout: JSON.stringify(new CniError(CNI_CODE.DECODE, `bad request from the plugin binary: ${(e as Error).message}`).toJSON("1.1.0")) };
  }
  return `cni-reply ${out.exit} ${Buffer.byteLength(out.stdout)}\n${out.stdout}`;
}

/**
 * One request line: `status [{"peerOffset","peerLimit"}]`, `counters`, `endpoint-add {"ip","ifname","mac"}`,
 * `endpoint-del {"ip"}`, `ipam-ls`, `ipam-show <address|container>`,
 * `ipam-gc {"deadNow"}`. Replies {ok: true, ...} or {ok: false, error}.
 */
async function handle(agent: Agent, line: string): Promise<Record<string, unknown>> {
  const sp = line.indexOf(" ");
  const verb = sp < 0 ? line : line.slice(0, sp);
  try {
    switch (verb) {
      case "status": {
        // `status` lists every peer; `status {"peerOffset":N,"peerLimit":M}` a window of them (weft status shows the first few).
        const text = sp < 0 ? "" : line.slice(sp + 1).trim();
        const parsed: unknown = text === "" ? {} : JSON.parse(text);
        if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new ConfigError(`status: the argument must be a JSON object such as {"peerLimit":20}, got ${text.slice(0, 60)}`);
        const arg = parsed as { peerOffset?: unknown; peerLimit?: unknown };
        const n = (v: unknown, what: string, dflt: number): number => {
          if (v === undefined) return dflt;
          if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw new ConfigError(`status: ${what} must be a whole number of 0 or more, got ${JSON.stringify(v)}`);
          return v;
        };
        return { ok: true, status: agent.status({ offset: n(arg.peerOffset, "peerOffset", 0), limit: n(arg.peerLimit, "peerLimit", Infinity) }) };
      }
      case "counters":
        return { ok: true, counters: agent.counters() };
      case "endpoint-add":
      case "endpoint-del": {
        const arg = JSON.parse(line.slice(sp + 1)) as { ip?: unknown; ip6?: unknown; ifname?: string; mac?: string };
        if (arg.ip === undefined && arg.ip6 === undefined) throw new ConfigError(`${verb} needs ip, ip6 or both`);
        const ip = arg.ip === undefined ? undefined : parseIpv4(String(arg.ip));
        const ip6 = arg.ip6 === undefined ? undefined : parseIpv6(String(arg.ip6));
        if (verb === "endpoint-del") return { ok: true, removed: await agent.removeEndpoint({ ip, ip6 }) };
        if (!arg.ifname || !arg.mac) throw new ConfigError("endpoint-add needs ip (or ip6), ifname and mac");
        await agent.addEndpoint({ ip, ip6, ifname: arg.ifname, mac: parseMac(arg.mac) });
        return { ok: true };
      }
      case "ipam-ls":
      case "ipam-show": {
        const pods = agent.pods;
        if (!pods) throw new ConfigError("the agent has not opened its IPAM state yet");
        const subnet = pods.ipam.boundSubnet;
        const q = sp < 0 ? "" : line.slice(sp + 1).trim();
        const subnet6 = pods.ipam.boundSubnet6;
        const list = pods.ipam.list().filter((a) => verb === "ipam-ls" || addressText(a).split(",").includes(q) || a.containerId.startsWith(q) || a.podName === q);
        const stale = (a: Allocation): boolean => (a.ip !== undefined && (!subnet || !contains(subnet, a.ip))) || (a.ip6 !== undefined && (!subnet6 || !contains6(subnet6, a.ip6)));
        return {
          ok: true, subnet: subnet ? formatCidr(subnet) : null, ...(subnet6 ? { subnet6: formatCidr6(subnet6) } : {}), usage: pods.ipam.usage(), waitingForGrace: pods.reconciler.waiting,
          allocations: list.map((a) => ({ ...encodeAllocation(a), dead: isDead(a), stale: stale(a) })),
        };
      }
      case "ipam-gc": {
        const pods = agent.pods;
        if (!pods) throw new ConfigError("the agent has not opened its IPAM state yet");
        const arg = (sp < 0 ? {} : JSON.parse(line.slice(sp + 1))) as { deadNow?: boolean };
        const released = await pods.reconciler.pass(Date.now(), arg.deadNow ? 0 : pods.reconciler.opts.graceMs);
        return { ok: true, released, waitingForGrace: pods.reconciler.waiting };
      }
      default:
        return { ok: false, error: `unknown request "${verb}"; try status, counters, endpoint-add, endpoint-del, ipam-ls, ipam-show, ipam-gc, cni` };
    }
  } catch (e) {
    return { ok: false, error: (e as Error).message };
  }
}

/** Registers or removes a local pod with a running agent. */
export async function requestEndpoint(path: string, verb: "endpoint-add" | "endpoint-del", arg: { ip?: string; ip6?: string; ifname?: string; mac?: string }): Promise<void> {
  await query<Record<string, unknown>>(path, `${verb} ${JSON.stringify(arg)}`, 10_000);
}

/** Asks a running agent for its status: every peer, or `peers` (a window of them). */
export async function queryStatus(path: string, timeoutMs = 3000, peers?: { offset: number; limit: number }): Promise<AgentStatus> {
  const req = peers ? `status ${JSON.stringify({ peerOffset: peers.offset, peerLimit: peers.limit })}` : "status";
  return (await query<{ status: AgentStatus }>(path, req, timeoutMs)).status;
}

/** Asks a running agent for its readiness and counters only. */
export async function queryCounters(path: string, timeoutMs = 3000): Promise<AgentCounters> {
  return (await query<{ counters: AgentCounters }>(path, "counters", timeoutMs)).counters;
}

/** Asks a running agent's IPAM (ipam-ls, ipam-show <q>, ipam-gc {...}). */
export async function queryIpam<T>(path: string, request: string, timeoutMs = 10_000): Promise<T> {
  return query<T>(path, request, timeoutMs);
}

/**
 * The first framed reply in `buf` (`cni-reply <exit> <len>\n` + len bytes):
 * the reply and the bytes it took, undefined when it is not all there yet,
 * or "malformed".
 */
export function takeCniReply(buf: Buffer): { reply: CniReply; used: number } | "malformed" | undefined {
  const nl = buf.indexOf(10);
  if (nl < 0) return undefined;
  const m = /^cni-reply (\d+) (\d+)$/.exec(buf.subarray(0, nl).toString());
  if (!m) return "malformed";
  const end = nl + 1 + Number(m[2]);
  if (buf.length < end) return undefined;
  return { reply: { exit: Number(m[1]), stdout: buf.subarray(nl + 1, end).toString() }, used: end };
}

/** Forwards a CNI invocation as the plugin binary does; resolves with the plugin's exit code and stdout. */
export function requestCni(path: string, inv: Invocation, timeoutMs = 60_000): Promise<CniReply> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let buf = Buffer.alloc(0);
    const fail = (why: string): void => {
      sock.destroy();
      reject(new AgentUnreachableError(`no agent answers on ${path}: ${why}`, { hint: "is `weft agent` running?" }));
    };
    const t = setTimeout(() => fail("timed out"), timeoutMs);
    sock.on("connect", () => sock.write(`cni ${JSON.stringify(inv)}\n`));
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const r = takeCniReply(buf);
      if (r === "malformed") return fail("a malformed reply");
      if (!r) return;
      clearTimeout(t);
      sock.end();
      resolve(r.reply);
    });
    sock.on("error", (e) => {
      clearTimeout(t);
      fail(e.message);
    });
  });
}

function query<T>(path: string, request: string, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let buf = "";
    const fail = (why: string): void => {
      sock.destroy();
      reject(new AgentUnreachableError(`no agent answers on ${path}: ${why}`, { hint: "is `weft agent` running? pass --control-socket if it uses another path" }));
    };
    const t = setTimeout(() => fail("timed out"), timeoutMs);
    sock.on("connect", () => sock.write(`${request}\n`));
    sock.on("data", (d) => {
      buf += d.toString();
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      clearTimeout(t);
      sock.end();
      const reply = JSON.parse(buf.slice(0, nl)) as { ok: boolean; error?: string } & T;
      if (reply.ok) resolve(reply);
      else reject(new AgentRequestError(`the agent refused "${request.split(" ")[0]}": ${reply.error ?? "no reason"}`));
    });
    sock.on("error", (e) => {
      clearTimeout(t);
      fail(e.message);
    });
  });
}
