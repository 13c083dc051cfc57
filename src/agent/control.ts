import { chmodSync, mkdirSync, rmSync } from "node:fs";
import { createConnection, createServer, type Server } from "node:net";
import { dirname } from "node:path";
import { ConfigError, WeftError } from "../common/errors.js";
import { parseIpv4, parseMac } from "../common/ipv4.js";
import type { Agent, AgentCounters, AgentStatus } from "./agent.js";

/** The agent answered, but refused the request. */
export class AgentRequestError extends WeftError {
  readonly code = "WEFT_AGENT_REFUSED";
}

/** The agent's local control socket is missing or does not answer. */
export class AgentUnreachableError extends WeftError {
  readonly code = "WEFT_AGENT_UNREACHABLE";
}

/**
 * A unix socket (mode 0600: root only) on which the agent answers one JSON
 * line per request line. Requests: "status" (everything, peers included) and
 * "counters" (small: readiness and counters, for frequent polling).
 */
export async function startControlSocket(agent: Agent, path: string): Promise<Server> {
  mkdirSync(dirname(path), { recursive: true });
  rmSync(path, { force: true }); // a stale socket from a killed agent
  const server = createServer((sock) => {
    let buf = "";
    sock.on("data", (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        void handle(agent, line).then((reply) => sock.write(`${JSON.stringify(reply)}\n`));
      }
    });
    sock.on("error", () => undefined);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o600);
  return server;
}

/**
 * One request line: `status`, `counters`, `endpoint-add {"ip","ifname","mac"}`,
 * `endpoint-del {"ip"}`. Replies {ok: true, ...} or {ok: false, error}.
 */
async function handle(agent: Agent, line: string): Promise<Record<string, unknown>> {
  const sp = line.indexOf(" ");
  const verb = sp < 0 ? line : line.slice(0, sp);
  try {
    switch (verb) {
      case "status":
        return { ok: true, status: agent.status() };
      case "counters":
        return { ok: true, counters: agent.counters() };
      case "endpoint-add":
      case "endpoint-del": {
        const arg = JSON.parse(line.slice(sp + 1)) as { ip?: string; ifname?: string; mac?: string };
        const ip = parseIpv4(String(arg.ip));
        if (verb === "endpoint-del") return { ok: true, removed: await agent.removeEndpoint(ip) };
        if (!arg.ifname || !arg.mac) throw new ConfigError("endpoint-add needs ip, ifname and mac");
        await agent.addEndpoint({ ip, ifname: arg.ifname, mac: parseMac(arg.mac) });
        return { ok: true };
      }
      default:
        return { ok: false, error: `unknown request "${verb}"; try status, counters, endpoint-add, endpoint-del` };
    }
  } catch (e) {
    return { ok: false, error: (e as Error).message };
  }
}

/** Registers or removes a local pod with a running agent. */
export async function requestEndpoint(path: string, verb: "endpoint-add" | "endpoint-del", arg: { ip: string; ifname?: string; mac?: string }): Promise<void> {
  await query<Record<string, unknown>>(path, `${verb} ${JSON.stringify(arg)}`, 10_000);
}

/** Asks a running agent for its status. */
export async function queryStatus(path: string, timeoutMs = 3000): Promise<AgentStatus> {
  return (await query<{ status: AgentStatus }>(path, "status", timeoutMs)).status;
}

/** Asks a running agent for its readiness and counters only. */
export async function queryCounters(path: string, timeoutMs = 3000): Promise<AgentCounters> {
  return (await query<{ counters: AgentCounters }>(path, "counters", timeoutMs)).counters;
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
